"""Every CLI command fails in one line (issue 18 item 6): the real ``rlsd`` in a subprocess, one row per
expected failure; stderr is exactly one line that names the command and the problem, no traceback, rc != 0.
``--debug`` brings the traceback back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ALIAS_BOMB = "a: &a [x, x]\nb: [*a, *a]\n"
OUTAGE = ["--set", "tracking.http_timeout_s=1", "--set", "tracking.http_retries=0"]
S3_DOWN = ["--set", "store.backend=s3", "--set", "store.endpoint=127.0.0.1:1", "--set", "store.retries=1"]

# (id, argv, expected rc, a fragment of the one line)
CASES = [
    ("config-is-a-directory", ["train", "--config", "adir"], 2, "config 'adir' is a directory"),
    ("config-missing", ["train", "--config", "nope.yaml"], 2, "config file 'nope.yaml' does not exist"),
    ("config-alias-bomb", ["train", "--config", "bomb.yaml"], 2, "anchor or alias"),
    ("config-bad-set", ["trainjob", "--set", "rollout.group_size=1000000000"], 2, "rollout.group_size must be in"),
    ("config-bad-path", ["make-tasks", "--set", "store.root=../../.."], 2, "store.root must stay inside its root"),
    ("train-missing-tasks", ["train", "--set", "data.train_tasks=nope.jsonl"], 2, "data.train_tasks 'nope.jsonl': no such"),
    ("ingest-missing-path", ["ingest", "--tickets", "nope.jsonl"], 2, "--tickets 'nope.jsonl': no such file or folder"),
    ("ingest-missing-manuals", ["ingest", "--manuals", "nope/"], 2, "--manuals 'nope/': no such file or folder"),
    ("ingest-malformed-uri", ["ingest", "--tickets", "s3://Not_A_Bucket/inbox/"], 1, "malformed store URI 's3://Not_A_Bucket"),
    ("ingest-s3-outage", ["ingest", "--tickets", "s3://rlsd/inbox/tickets/", *S3_DOWN], 1, "s3://rlsd/inbox/tickets/"),
    ("inbox-missing-file", ["inbox", "put", "--kind", "tickets", "nope.jsonl"], 2, "--files 'nope.jsonl': no such"),
    ("inbox-store-outage", ["inbox", "put", "--kind", "tickets", "afile", *S3_DOWN], 1, "failed after 1 tries"),
    ("ingest-output-is-a-file", ["ingest", "--manuals", "adir", "--output", "afile"], 2, "--output 'afile' is an existing file"),
    ("make-corpus-output-is-a-file", ["make-corpus", "--output", "afile"], 2, "--output 'afile' is an existing file"),
    ("make-tiny-model-output-is-a-file", ["make-tiny-model", "--output", "afile"], 2, "is an existing file"),
    ("make-tasks-unwritable", ["make-tasks", "--set", "data.train_tasks=afile/x.jsonl"], 1, "'afile"),
    ("build-tasks-unknown-snapshot", ["build-tasks", "--snapshot", "nope"], 1, "snapshot 'nope' does not exist"),
    ("build-tasks-store-outage", ["build-tasks", *S3_DOWN], 1, "127.0.0.1:1"),
    ("push-store-outage", ["push", "--folder", "adir", "--name", "m", *S3_DOWN], 1, "failed after 1 tries"),
    ("push-missing-folder", ["push", "--folder", "nope", "--name", "m"], 2, "--folder 'nope': no such"),
    ("evaluate-missing-candidate", ["evaluate", "--candidate", "nope"], 2, "--candidate 'nope': no such"),
    ("evaluate-tasks-is-a-folder", ["evaluate", "--candidate", "adir", "--tasks", "adir"], 2, "--tasks 'adir' is a folder"),
    ("evaluate-missing-default-tasks", ["evaluate", "--candidate", "adir"], 1, "task file"),
    ("register-model-is-a-file", ["register", "--model", "afile"], 2, "--model 'afile' is a file; give a folder"),
    ("register-missing-evaluation", ["register", "--model", "adir", "--evaluation", "nope.json"], 2, "--evaluation"),
    ("promote-registry-outage", ["promote", "--version", "1", "--evaluation", "ev.json",
                                 "--set", "tracking.uri=http://127.0.0.1:1", *OUTAGE], 1, "did not answer"),
    ("promote-missing-evaluation", ["promote", "--version", "1", "--evaluation", "nope.json"], 2, "--evaluation"),
    ("track-missing-output", ["track", "--output", "nope"], 2, "--output 'nope': no such"),
    ("validate-missing-tasks", ["validate", "--snapshot", "none", "--tasks", "nope"], 2, "--tasks 'nope': no such"),
    ("schedule-kfp-outage", ["schedule", "--cron", "0 0 2 * * *", "--host", "http://127.0.0.1:1", "--set",
                             "platform.gpus_per_node=1"], 1, "cannot reach a server"),
    ("schedule-no-gpu", ["schedule", "--cron", "0 0 2 * * *", "--host", "http://127.0.0.1:1"], 2,
     "platform.gpus_per_node is 0"),
    ("pipeline-bad-config", ["pipeline", "--config", "adir"], 2, "is a directory"),
    ("grade-missing-tasks", ["grade", "--tasks", "nope.jsonl"], 2, "--tasks 'nope.jsonl': no such"),
    ("import-model-missing-folder", ["import-model", "nope"], 2, "'nope': no such file or folder"),
    ("import-model-not-a-model", ["import-model", "adir"], 1, "is not a local model"),
    ("train-unknown-store-model", ["train", "--set", "model.path=store://models/nope", "--set", "data.train_tasks=afile"],
     1, "base model store://models/nope: not in the store"),
    ("train-malformed-model-ref", ["train", "--set", "model.path=models:/nope", "--set", "data.train_tasks=afile"],
     1, "expected models:/<name>@<alias>"),
    ("train-unknown-registry-alias", ["train", "--set", "model.path=models:/nope@champion", "--set",
                                      "data.train_tasks=afile"], 1, "the registry has no alias @champion of model 'nope'"),
]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    (d / "adir").mkdir()
    (d / "afile").write_text("not a folder")
    (d / "bomb.yaml").write_text(ALIAS_BOMB)
    (d / "ev.json").write_text('{"candidate": {"pass@1": 0.5}}')
    return d


def _rlsd(work: Path, argv: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RLSD_DEBUG", "PYTHONWARNINGS")}
    env.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test-secret", OMP_NUM_THREADS="1")
    base = ["--set", f"store.root={work / 'store'}", "--set", f"tracking.uri=sqlite:///{work / 'ml.db'}"]
    cmd = [argv[0], *(base if "--config" not in argv else []), *argv[1:]]
    return subprocess.run([sys.executable, "-m", "rlsd.cli", *cmd], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("argv,rc,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_expected_failure_is_one_line_and_a_nonzero_exit(work, argv, rc, fragment):
    r = _rlsd(work, argv)
    lines = r.stderr.splitlines()
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert len(lines) == 1, r.stderr[-3000:]
    assert r.returncode == rc != 0, (r.returncode, r.stderr)
    assert lines[0].startswith(f"rlsd {argv[0]}: ") and fragment in lines[0], lines[0]


def test_every_command_has_a_row():
    from rlsd.cli import build_parser

    _, handlers = build_parser()
    covered = {c[1][0] for c in CASES} | {"import-smollm2"}  # import-smollm2 needs an optional wheel: below
    assert set(handlers) - covered == set()


def test_import_smollm2_output_is_a_file(work):
    r = _rlsd(work, ["import-smollm2", "--output", "afile"])
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "is an existing file" in r.stderr


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_input_is_one_line(work):
    f = work / "locked.jsonl"
    f.write_text('{"id": 1}\n')
    f.chmod(0)
    try:
        r = _rlsd(work, ["ingest", "--tickets", "locked.jsonl"])
    finally:
        f.chmod(0o600)
    assert r.returncode == 2 and "permission denied" in r.stderr and "Traceback" not in r.stderr


def test_debug_shows_the_traceback(work):
    r = _rlsd(work, ["build-tasks", "--snapshot", "nope", "--debug"])
    assert r.returncode != 0 and "Traceback (most recent call last)" in r.stderr
    assert "snapshot 'nope' does not exist" in r.stderr


def test_an_unreadable_input_is_one_line_even_as_root(work, monkeypatch, capsys):
    """Root reads any file, so the permission check is exercised by making os.access say no."""
    from rlsd import cli

    monkeypatch.chdir(work)
    real = os.access
    monkeypatch.setattr(cli.os, "access", lambda p, mode: False if str(p).endswith("ev.json") else real(p, mode))
    rc = cli.main(["promote", "--version", "1", "--evaluation", "ev.json"])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and err == ["rlsd promote: --evaluation 'ev.json': permission denied"]
