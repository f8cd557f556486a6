"""The acceptance run: the committed compiled pipeline, through kfp.local, with the REAL step
functions (ingest, validate, build tasks, train, evaluate, register/promote) on the sample corpus
and a tiny model: embedded defaults, then a real S3 server (SeaweedFS) and a real MLflow server.
Both run the network guard in strict mode and must record zero refusals.

Skipped where the step modules are not present yet (they are built on other branches).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FAST = ["train.steps=2", "rollout.group_size=2", "rollout.prompts_per_step=2", "rollout.max_new_tokens=8",
        "eval.max_new_tokens=8", "eval.bootstrap_samples=200", "model.path=tiny-model"]


def _prepare(tmp_path, monkeypatch):
    for mod in ("rlsd.data.ingest", "rlsd.data.validate", "rlsd.data.build", "rlsd.train", "rlsd.evaluate",
                "rlsd.registry"):
        pytest.importorskip(mod)
    if not (REPO / "data" / "sample" / "tickets").is_dir():
        pytest.skip("data/sample is not in this checkout")
    from rlsd.models import build_tiny_model

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "src"), str(REPO)]))
    build_tiny_model(str(tmp_path / "tiny-model"))


def _check(r):
    assert r["trained"] and r["untrained_verified_tickets"] > 0
    assert Path(r["report_html"]).stat().st_size > 0 and Path(r["validation_report"]).stat().st_size > 0
    assert json.loads((Path(r["evaluation"]) / "evaluation.json").read_text())["baseline"] is not None  # base vs trained
    # a fresh registry has no @champion, and the random tiny model cannot copy the sample tickets' contexts
    # (leakage measured and 0 <= registry.max_leakage_rate): the first version must be promoted, nothing else
    reg = r["registered"]
    assert (reg["decision"], reg["alias"], str(reg["version"])) == ("promoted", "champion", "1"), reg
    assert reg["uri"] == f"models:/{reg['name']}/1" and reg["alias_uri"] == f"models:/{reg['name']}@champion"
    assert r["connections"]["modes"] == ["strict"] and r["connections"]["refused"] == 0
    assert r["connections"]["outside_allow_list"] == 0


@pytest.mark.slow
def test_local_pipeline_on_the_embedded_defaults(tmp_path, monkeypatch):
    _prepare(tmp_path, monkeypatch)
    from rlsd.pipeline_local import run_local

    r = run_local(None, FAST, str(tmp_path / "runs"))
    _check(r)
    assert r["connections"]["attempts"] == 0  # local folder store, local MLflow store: no sockets at all


@pytest.mark.slow
@pytest.mark.integration
def test_local_pipeline_against_s3_and_mlflow_servers(tmp_path, monkeypatch):
    _prepare(tmp_path, monkeypatch)
    s3server = pytest.importorskip("tests.s3server")
    mlflow_server = pytest.importorskip("tests.mlflow_server")
    from rlsd.pipeline_local import run_local

    with s3server.S3Server(tmp_path / "weed") as s3:
        for k, v in s3.env().items():
            monkeypatch.setenv(k, v)
        ml = mlflow_server.MlflowServer(tmp_path / "mlflow").start()
        try:
            r = run_local(None, FAST + ["store.backend=s3", f"store.endpoint={s3.endpoint}", "store.bucket=rlsd",
                                        f"tracking.uri={ml.url}"], str(tmp_path / "runs"))
        finally:
            ml.stop()
    _check(r)
    assert r["connections"]["attempts"] > 0  # the steps really talked to both servers, all inside the allow-list
