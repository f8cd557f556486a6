"""Crash and resume: SIGKILL the trainer at random points and inside a checkpoint write, restart, finish;
the final model equals an uninterrupted run's, and a half-written or corrupt checkpoint is never loaded.

(tests/test_train.py::test_killed_run_resumes_to_the_same_parameters covers one kill right after a
complete checkpoint; this file adds the kills it does not: mid-step, mid-write, corrupt files.)
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.helpers import ROOT, warm_tiny_model, write_addition_tasks

PY = sys.executable
DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "RLSD_FAILPOINT")
STEPS = 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("tasks")
    tr, ev = write_addition_tasks(d)
    return warm_tiny_model(), tr, ev


def _args(model: Path, tr: Path, ev: Path, **extra) -> list[str]:
    base = {
        "model.path": model, "data.train_tasks": tr, "data.eval_tasks": ev, "rollout.group_size": 4,
        "rollout.prompts_per_step": 4, "rollout.max_new_tokens": 12, "rollout.engine": "generate",
        "teacher.template": "'{question}H:{context}\n'", "algorithm.name": "rlsd", "train.lr": 1e-3,
        "train.steps": STEPS, "train.checkpoint_every": 1, "train.keep_checkpoints": 2, "train.eval_every": 0,
        "tracking.enabled": False,
    }
    base.update(extra)
    return [a for k, v in base.items() for a in ("--set", f"{k}={v}")]


def _start(args: list[str], out: Path, **env_extra: str) -> subprocess.Popen:
    env = {**{k: v for k, v in os.environ.items() if k not in DIST_VARS}, "PYTHONUNBUFFERED": "1", **env_extra}
    return subprocess.Popen([PY, "-m", "rlsd", "train", *args, "--output", str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _steps_logged(out: Path) -> int:
    try:
        return sum(1 for ln in (out / "metrics.jsonl").read_text().splitlines() if ln.strip())
    except OSError:
        return 0


def _fresh_steps(out: Path, since: float) -> int:
    """The last step logged by the process started at ``since`` (0 while its log is the previous run's)."""
    f = out / "metrics.jsonl"
    try:
        if f.stat().st_mtime < since:
            return 0
        lines = [ln for ln in f.read_text().splitlines() if ln.strip()]
        return json.loads(lines[-1])["step"] if lines else 0
    except (OSError, ValueError, KeyError):
        return 0


def _half_written(out: Path) -> list[Path]:
    d = out / "checkpoints"
    return [p for p in d.glob("step-*") if not (p / "trainer_state.json").exists()] if d.is_dir() else []


def _kill(p: subprocess.Popen) -> str:
    p.send_signal(signal.SIGKILL)
    log, _ = p.communicate(timeout=60)
    return log


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _losses(out: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]


@pytest.mark.slow
def test_random_kills_and_a_kill_inside_a_checkpoint_write_resume_to_the_same_model(setup, tmp_path):
    model, tr, ev = setup
    args = _args(model, tr, ev)
    ref = _start(args, tmp_path / "ref")
    assert ref.wait(timeout=600) == 0, ref.stdout.read()

    out = tmp_path / "run"
    kills: list[str] = []
    # 1) inside the first checkpoint write: model/optimizer/teacher files on disk, trainer_state.json not yet
    p = _start(args, out, RLSD_FAILPOINT="checkpoint-before-state")
    log, _ = p.communicate(timeout=600)
    assert p.returncode == -signal.SIGKILL, log
    assert [h.name for h in _half_written(out)] == ["step-1"] and any((out / "checkpoints/step-1").iterdir())
    assert not (out / "final").exists()
    kills.append("failpoint: step-1 written without trainer_state.json")

    # 2) a kill caught by polling for a folder without its trainer_state.json (a DeepSpeed write in flight);
    # 3) a kill at a random wall-clock time (imports, model load, resume, training); 4-5) kills right after a
    #    random step past the resumed one was logged (inside the next step, its checkpoint or the export)
    from rlsd.train import latest_checkpoint

    rng = random.Random(1234)
    for attempt in range(4):
        resumed = latest_checkpoint(out / "checkpoints")
        first = int(resumed.name.split("-")[1]) if resumed else 0
        target = min(STEPS, first + rng.randint(1, 3))
        delay = rng.uniform(1.0, 9.0)
        t_start = time.time()
        p = _start(args, out)
        deadline = t_start + 300
        while p.poll() is None and time.time() < deadline:
            if attempt == 0 and any(int(h.name.split("-")[1]) > first + 1 for h in _half_written(out)):
                break
            if attempt == 1 and time.time() - t_start >= delay:
                break
            if attempt >= 2 and _fresh_steps(out, t_start) >= target:
                break
            time.sleep(0.002)
        if p.poll() is not None:
            assert p.returncode == 0, p.stdout.read()[-3000:]
            kills.append(f"attempt {attempt}: the run finished before its kill point (no fault)")
            shutil.rmtree(out / "final")  # keep faulting: the next attempt resumes and re-exports
            continue
        mid_write = [h.name for h in _half_written(out)]
        _kill(p)
        kills.append(f"attempt {attempt}: resumed at step {first}, killed after {time.time() - t_start:.1f} s "
                     f"(target step {target}, delay {delay:.1f} s), half-written={mid_write}")
        if (out / "final").exists():  # killed after the export's atomic rename: the model is whole
            assert _weights(out / "final").keys() == _weights(model).keys()
            shutil.rmtree(out / "final")
    assert sum("killed" in k for k in kills) >= 3, kills

    # 6) the newest complete checkpoint rots on disk: resume falls back to the previous complete one
    newest = latest_checkpoint(out / "checkpoints")
    assert newest is not None
    blob = newest / "mp_rank_00_model_states.pt"
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))

    again = _start(args, out)
    log, _ = again.communicate(timeout=600)
    assert again.returncode == 0, log[-3000:]
    assert f"checkpoint {newest} is not loadable" in log and "mp_rank_00_model_states.pt" in log
    a, b = _weights(tmp_path / "ref" / "final"), _weights(out / "final")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-6)
    assert _losses(out) == pytest.approx(_losses(tmp_path / "ref"), abs=1e-7)
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == list(range(1, STEPS + 1))
    print("\n".join(kills))


# ---------------------------------------------------------------------------------------------- unit level


@pytest.fixture(scope="module")
def checkpoints(setup, tmp_path_factory):
    """Three real checkpoints (steps 1-3) of an in-process run, kept as a pristine copy."""
    from rlsd.config import load_config
    from rlsd.train import train

    model, tr, ev = setup
    out = tmp_path_factory.mktemp("ckpts")
    overrides = _args(model, tr, ev, **{"train.steps": 4, "train.keep_checkpoints": 3})[1::2]
    train(load_config(overrides=overrides), output_dir=out)
    return out / "checkpoints"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_checkpoint_records_a_checksum_of_every_file(checkpoints):
    state = json.loads((checkpoints / "step-3" / "trainer_state.json").read_text())
    files = sorted(p.name for p in (checkpoints / "step-3").iterdir() if p.name != "trainer_state.json")
    assert sorted(state["files"]) == files and {"mp_rank_00_model_states.pt", "teacher.pt", "rng_rank0.pt"} <= set(files)
    import hashlib

    for name, digest in state["files"].items():
        assert hashlib.sha256((checkpoints / "step-3" / name).read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("damage", ["no_state", "flip_byte", "truncate", "delete_file", "bad_json"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(checkpoints, tmp_path, damage):
    from rlsd.train import latest_checkpoint

    d = _copy(checkpoints, tmp_path / "c")
    assert latest_checkpoint(d) == d / "step-3"
    f = d / "step-3" / "teacher.pt"
    if damage == "no_state":
        (d / "step-3" / "trainer_state.json").unlink()
    elif damage == "flip_byte":
        b = bytearray(f.read_bytes())
        b[100] ^= 1
        f.write_bytes(bytes(b))
    elif damage == "truncate":
        f.write_bytes(f.read_bytes()[:-10])
    elif damage == "delete_file":
        f.unlink()
    else:
        (d / "step-3" / "trainer_state.json").write_text('{"step": 3, "fi')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert latest_checkpoint(d) == d / "step-2"
    msgs = [str(w.message) for w in caught]
    if damage == "no_state":
        assert msgs == []  # an unfinished write is simply not a checkpoint
    else:
        assert len(msgs) == 1 and "step-3 is not loadable" in msgs[0] and "falling back" in msgs[0]


def test_every_checkpoint_damaged_means_a_fresh_start(checkpoints, tmp_path):
    from rlsd.train import latest_checkpoint

    d = _copy(checkpoints, tmp_path / "c")
    for step in (1, 2, 3):
        (d / f"step-{step}" / "rng_rank0.pt").write_bytes(b"rot")
    with pytest.warns(RuntimeWarning, match="not loadable"):
        assert latest_checkpoint(d) is None


def test_a_checkpoint_without_recorded_checksums_is_still_loaded(checkpoints, tmp_path):
    """Checkpoints written before checksums existed stay loadable (no forced retraining)."""
    from rlsd.train import latest_checkpoint

    d = _copy(checkpoints, tmp_path / "c")
    sf = d / "step-3" / "trainer_state.json"
    state = json.loads(sf.read_text())
    del state["files"]
    sf.write_text(json.dumps(state))
    assert latest_checkpoint(d) == d / "step-3"
