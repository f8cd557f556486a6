"""Secrets never leak: plant unique secret values (S3 credentials and an MLflow password in the environment,
an API key and a password inside ticket text), run the whole local pipeline (kfp.local, the committed
compiled graph, real SeaweedFS S3 + a real MLflow server, tiny model, one training step), then scan every
output for the planted values: the run folder (every task's outputs, reports, the pipeline copy), the
compiled pipeline YAML, everything printed (logs), every object in the bucket, and MLflow (the tracking
database and artifact folder byte for byte, plus every run's params and tags and every model version's tags).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

import pytest
from tests.helpers import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _scan_files(root: Path, planted: dict[str, str]) -> tuple[int, list[str]]:
    n, hits = 0, []
    for f in root.rglob("*"):
        if f.is_file():
            n += 1
            data = f.read_bytes()
            hits += [f"{name} in {f}" for name, v in planted.items() if v.encode() in data]
    return n, hits


def test_planted_secrets_appear_in_no_output(tmp_path, monkeypatch, capfd):
    pytest.importorskip("kfp")
    from tests.mlflow_server import MlflowServer
    from tests.s3server import S3Server

    planted = {
        "S3 access key": "AKPLANT" + secrets.token_hex(8).upper(),
        "S3 secret key": "s3secret-" + secrets.token_hex(16),
        "MLflow password": "mlpass-" + secrets.token_hex(16),
        "ticket API key": "sk-live-" + secrets.token_hex(16),
        "ticket password": "Hunter2-" + secrets.token_hex(6),
    }
    # inputs: the sample corpus plus one verified ticket that carries two secrets in its text
    tickets = tmp_path / "tickets"
    shutil.copytree(ROOT / "data" / "sample" / "tickets", tickets)
    (tickets / "leaky.jsonl").write_text(json.dumps({
        "id": "HD-SECRET-1", "created": "2024-12-01T10:00:00Z", "updated": "2024-12-01T11:00:00Z",
        "title": "Gateway API rejects calls",
        "body": f"Our integration uses api_key: {planted['ticket API key']} and the admin password={planted['ticket password']}. "
                "How many months of hardware warranty does the Kestrel Backup Appliance come with?",
        "status": "resolved", "resolution": "12 months from shipment.", "resolution_verified": True,
        "links": ["kestrel-backup-appliance-guide/8-warranty"], "answer": 12, "answer_type": "numeric"}) + "\n")

    from rlsd.models import build_tiny_model
    from rlsd.pipeline_local import run_local

    monkeypatch.chdir(tmp_path)
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):  # set by in-process training
        monkeypatch.delenv(k, raising=False)  # earlier in this session; the train step must pick its own port
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    build_tiny_model(str(tmp_path / "tiny-model"))
    s3 = S3Server(tmp_path / "weed", access_key=planted["S3 access key"], secret_key=planted["S3 secret key"])
    with s3:
        for k, v in s3.env().items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "rlsd")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", planted["MLflow password"])
        ml = MlflowServer(tmp_path / "mlflow").start()
        try:
            r = run_local(None, ["train.steps=1", "rollout.group_size=2", "rollout.prompts_per_step=2",
                                 "rollout.max_new_tokens=8", "eval.max_new_tokens=8", "eval.bootstrap_samples=100",
                                 "model.path=tiny-model", "store.backend=s3", f"store.endpoint={s3.endpoint}",
                                 "store.bucket=rlsd", f"tracking.uri={ml.url}"],
                          str(tmp_path / "runs"), arguments={"tickets": [str(tickets)]})
            assert r["trained"] and r["registered"], r
            # MLflow through its API: every run's params and tags, every model version's tags
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=ml.url, registry_uri=ml.url)
            api_text = []
            for exp in client.search_experiments():
                for run in client.search_runs([exp.experiment_id]):
                    api_text += [json.dumps(run.data.params), json.dumps(run.data.tags)]
            for mv in client.search_model_versions(""):
                api_text += [json.dumps(mv.tags), mv.description or ""]
            assert api_text
        finally:
            ml.stop()
        # every object of the store, read back through S3
        from minio import Minio

        mc = Minio(s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=False)
        objects = [mc.get_object("rlsd", o.object_name).read() for o in mc.list_objects("rlsd", recursive=True)]
    out, err = capfd.readouterr()

    # the ticket really went through ingest (redacted), so the scan below is not vacuous
    store_text = b"\n".join(objects)
    assert b"HD-SECRET-1" in store_text and b"[SECRET]" in store_text
    hits: list[str] = []
    scanned = {"store objects": len(objects), "MLflow API records": len(api_text)}
    for name, v in planted.items():
        hits += [f"{name} in a store object" for o in objects if v.encode() in o]
        hits += [f"{name} in MLflow params/tags/descriptions" for t in api_text if v in t]
        hits += [f"{name} in the printed logs" for t in (out, err) if v in t]
    for label, root in (("run folder", tmp_path / "runs"), ("MLflow database and artifacts", tmp_path / "mlflow"),
                        ("compiled pipelines", ROOT / "pipelines")):
        n, h = _scan_files(root, planted)
        scanned[label] = n
        hits += h
    assert scanned["run folder"] > 20 and scanned["MLflow database and artifacts"] > 5, scanned
    assert not hits, "\n".join(hits)
    print(f"secrets scan: {len(planted)} planted values, scanned {scanned}, {len(out) + len(err)} chars of logs")
