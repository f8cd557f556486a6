"""metrics.jsonl on resume: rewritten atomically (temporary file + os.replace), a torn last line tolerated.

Issue 18: a kill between truncating and rewriting the log lost its earlier steps for good, and a torn
last line made every later resume fail with JSONDecodeError.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rlsd.train import _truncate_log

ROOT = Path(__file__).resolve().parents[2]


def _log(path: Path, steps: range, tail: str = "") -> None:
    path.write_text("".join(json.dumps({"step": s, "loss": s / 10}) + "\n" for s in steps) + tail)


def _steps(path: Path) -> list[int]:
    return [json.loads(ln)["step"] for ln in path.read_text().splitlines()]


def test_resume_keeps_steps_up_to_the_checkpoint(tmp_path):
    p = tmp_path / "metrics.jsonl"
    _log(p, range(1, 9))
    _truncate_log(p, 5)
    assert _steps(p) == [1, 2, 3, 4, 5]
    assert not (tmp_path / "metrics.jsonl.tmp").exists()
    _truncate_log(p, 5)  # idempotent
    assert _steps(p) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("tail", ['{"step": 9, "lo', '{"step": 9, "loss": 0.9}{"st', "\x00\x00\x00", '{"loss": 1}\n',
                                  '[1, 2]\n', '{"step": "x"}\n'])
def test_a_torn_or_foreign_last_line_is_skipped_with_a_warning(tmp_path, tail):
    p = tmp_path / "metrics.jsonl"
    _log(p, range(1, 7), tail)
    with pytest.warns(RuntimeWarning, match="skipped 1 unreadable line"):
        _truncate_log(p, 4)
    assert _steps(p) == [1, 2, 3, 4]
    _truncate_log(p, 4)  # the next resume reads a clean log: no warning, no error
    assert _steps(p) == [1, 2, 3, 4]


def test_a_kill_before_the_rename_leaves_every_earlier_step(tmp_path):
    """The trainer is killed after writing the shortened copy, before renaming it: the old log is whole."""
    p = tmp_path / "metrics.jsonl"
    _log(p, range(1, 11), '{"step": 11, "lo')
    before = p.read_bytes()
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(ROOT / 'src')!r})
        from pathlib import Path
        from rlsd.train import _truncate_log
        _truncate_log(Path({str(p)!r}), 6)
    """)
    env = dict(os.environ, RLSD_FAILPOINT="metrics-before-replace", PYTHONWARNINGS="ignore")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stderr.decode()[-2000:]
    assert p.read_bytes() == before, "a kill mid-rewrite must leave the previous log as it was"
    _truncate_log_quiet(p, 6)  # the next resume finishes the job
    assert _steps(p) == [1, 2, 3, 4, 5, 6]


def _truncate_log_quiet(p: Path, step: int) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _truncate_log(p, step)


def test_the_rewrite_goes_through_a_temporary_file_and_os_replace(tmp_path, monkeypatch):
    p = tmp_path / "metrics.jsonl"
    _log(p, range(1, 5))
    seen = []
    real = os.replace

    def spy(src, dst):
        seen.append((Path(src).name, Path(dst).name, _steps(Path(src)), _steps(Path(dst))))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    _truncate_log(p, 2)
    assert seen == [("metrics.jsonl.tmp", "metrics.jsonl", [1, 2], [1, 2, 3, 4])]


def test_the_trainer_resumes_over_a_torn_log_and_keeps_every_earlier_step(tmp_path):
    """End to end: a run checkpointed at step 2 that logged step 3, then lines past it, the last one torn (a
    kill mid-append). The resumed run warns, drops everything past step 2 and logs 3 and 4 anew."""
    from tests.helpers import warm_tiny_model, write_addition_tasks

    from rlsd.config import load_config
    from rlsd.train import train

    tr, ev = write_addition_tasks(tmp_path / "tasks")
    over = {"model.path": str(warm_tiny_model()), "data.train_tasks": str(tr), "data.eval_tasks": str(ev),
            "data.eval_limit": 0, "rollout.group_size": 2, "rollout.prompts_per_step": 2, "rollout.max_new_tokens": 4,
            "rollout.engine": "generate", "train.checkpoint_every": 2, "train.eval_every": 0,
            "tracking.enabled": False}
    out = tmp_path / "run"
    train(load_config(overrides=[f"{k}={v}" for k, v in {**over, "train.steps": 3}.items()]), output_dir=str(out))
    log = out / "metrics.jsonl"
    assert _steps(log) == [1, 2, 3] and (out / "checkpoints" / "step-2").is_dir()
    with log.open("a") as f:
        f.write(json.dumps({"step": 4, "loss": 123.0}) + "\n" + '{"step": 5, "lo')
    with pytest.warns(RuntimeWarning, match="skipped 1 unreadable line"):
        train(load_config(overrides=[f"{k}={v}" for k, v in {**over, "train.steps": 4}.items()]), output_dir=str(out))
    recs = [json.loads(ln) for ln in log.read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2, 3, 4] and recs[3]["loss"] != 123.0
