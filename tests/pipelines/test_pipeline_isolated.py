"""Proof without a cluster (issue 15 item 8): the committed compiled pipeline run by kfp.local with every
step in pod-isolation emulation (tests/pipelines/isolation.py: bwrap, the checkout hidden, an empty cwd,
HOME elsewhere, only the installed wheel, the step's own artifacts and the Secret stand-in variables),
against a SeaweedFS S3 server and an MLflow server started with the manifest's arguments (basic-auth, the
in-cluster Host allow-list; the steps reach both under their in-cluster Service names).

The isolation is shown to bite by a probe and by a kfp.local step, through the same wrapper, that try to
read the checkout and fail (the same probe outside the box reads it).
"""

import json
import os
from pathlib import Path

import pytest
from tests.pipelines.isolation import CHECKOUT, HOME, WORKDIR, Pod, install_wheel, isolated_steps

SECRET_FILES = ["pyproject.toml", "src/rlsd/__init__.py", ".git/HEAD", "data/sample/tickets/export-2024-h1.jsonl",
                "pipelines/rlsd_pipeline.yaml"]
PROBE = r"""
import json, os, sys
import rlsd
out = {"rlsd": rlsd.__file__, "cwd": os.getcwd(), "cwd_entries": os.listdir("."), "home": os.environ["HOME"],
       "checkout_entries": sorted(os.listdir(sys.argv[1])), "read": {}}
for rel in sys.argv[2:]:
    try:
        with open(os.path.join(sys.argv[1], rel), "rb") as f:
            out["read"][rel] = len(f.read())
    except OSError as e:
        out["read"][rel] = type(e).__name__
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def pod(tmp_path_factory):
    root = tmp_path_factory.mktemp("pod")
    return Pod(site=install_wheel(root / "site"), root=root / "box")


def test_a_probe_in_the_box_cannot_read_the_checkout(pod):
    python = str(CHECKOUT / ".venv" / "bin" / "python")
    args = ["-c", PROBE, str(CHECKOUT), *SECRET_FILES]
    # control: outside the box the very same probe reads every file (so the assertion below can fail)
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(pod.site)}
    outside = json.loads(subprocess.run([python, *args], capture_output=True, text=True, env=env,
                                        check=True).stdout)
    assert all(isinstance(n, int) for n in outside["read"].values()), outside["read"]

    r = pod.run([python, *args])
    assert r.returncode == 0, r.stderr
    inside = json.loads(r.stdout)
    assert inside["read"] == {rel: "FileNotFoundError" for rel in SECRET_FILES}
    assert inside["checkout_entries"] == [".venv"]  # only the image's Python environment is bound back
    assert inside["rlsd"] == str(pod.site / "rlsd" / "__init__.py")  # the installed wheel, not src/
    assert (inside["cwd"], inside["cwd_entries"], inside["home"]) == (WORKDIR, [], HOME)
    # and nothing outside its own folders is writable
    w = pod.run(["sh", "-c", f"touch {CHECKOUT}/.venv/x || touch /etc/x || touch /usr/x || echo refused"])
    assert w.stdout.strip() == "refused", w.stdout + w.stderr


def test_a_kfp_step_run_through_the_wrapper_fails_to_read_the_checkout(pod, tmp_path):
    from kfp import dsl, local

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def peek(path: str) -> int:
        with open(path, "rb") as f:
            return len(f.read())

    target = str(CHECKOUT / "pyproject.toml")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "plain"),
               raise_on_error=True)
    assert peek(path=target).output == len(Path(target).read_bytes())  # control: kfp.local as it comes

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "boxed"),
               raise_on_error=True)
    with isolated_steps(pod), pytest.raises(RuntimeError, match="FAILURE"):
        peek(path=target)
    assert pod.steps[-1]["name"] == "peek" and pod.steps[-1]["rc"] != 0

