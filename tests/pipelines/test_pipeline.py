"""The pipeline: the committed compiled YAML is current, it carries the cluster settings, and the
same compiled graph runs end to end through kfp.local (with stand-in step functions, see stubs/).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml
from pipelines.rlsd_pipeline import COMPILED, compile_pipeline

REPO = Path(__file__).resolve().parents[2]
STUBS = Path(__file__).parent / "stubs"


def test_compiled_pipeline_is_current(tmp_path):
    fresh = compile_pipeline(tmp_path / "rlsd_pipeline.yaml").read_text()
    assert fresh == COMPILED.read_text(), (
        "pipelines/rlsd_pipeline.yaml is stale: run `python -m pipelines.rlsd_pipeline` and commit the result")


def _docs():
    spec, platform = yaml.safe_load_all(COMPILED.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_compiled_pipeline_sets_the_cluster_details():
    spec, k8s = _docs()
    root = spec["root"]["dag"]["tasks"]
    inner = spec["components"]["comp-condition-1"]["dag"]["tasks"]
    assert set(root) == {"ingest", "validate", "build-tasks", "condition-1"}
    assert set(inner) == {"train", "evaluate", "register-and-promote"}
    # the retraining gate
    assert root["condition-1"]["triggerPolicy"]["condition"] == (
        "int(inputs.parameter_values['pipelinechannel--ingest-Output']) >= "
        "int(inputs.parameter_values['pipelinechannel--min_new_tickets'])")
    # caching off for ingest only; retries with back-off on the I/O steps, not on train
    assert root["ingest"]["cachingOptions"] == {} and root["validate"]["cachingOptions"] == {"enableCache": True}
    for name, tasks in [("ingest", root), ("validate", root), ("build-tasks", root), ("register-and-promote", inner)]:
        assert tasks[name]["retryPolicy"] == {"maxRetryCount": 3, "backoffDuration": "30s", "backoffFactor": 2.0,
                                              "backoffMaxDuration": "600s"}, name
    assert "retryPolicy" not in inner["train"]
    # GPUs, placement and the shared workspace on train
    train_exec = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert train_exec["image"] == "registry.local/rlsd/rlsd-train:0.1.0"
    assert train_exec["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert k8s["exec-train"]["nodeSelector"] == {"labels": {"nvidia.com/gpu.present": "true"}}
    assert k8s["exec-train"]["tolerations"] == [{"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}]
    assert k8s["exec-train"]["pvcMount"][0]["mountPath"] == "/workspace"
    # secrets as env: MinIO keys everywhere the store is touched, the MLflow token where tracking is
    for ex in ["exec-ingest", "exec-validate", "exec-build-tasks", "exec-train", "exec-evaluate",
               "exec-register-and-promote"]:
        envs = {k["envVar"]: s["secretName"] for s in k8s[ex]["secretAsEnv"] for k in s["keyToEnv"]}
        assert envs["AWS_ACCESS_KEY_ID"] == envs["AWS_SECRET_ACCESS_KEY"] == "rlsd-minio", ex
        assert ("MLFLOW_TRACKING_TOKEN" in envs) == (ex in {"exec-train", "exec-evaluate", "exec-register-and-promote"})
    # no component installs packages at run time (the perimeter has no PyPI)
    for ex in spec["deploymentSpec"]["executors"].values():
        assert "pip install" not in " ".join(ex["container"]["command"])
    # the operator's knobs
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {"config_yaml", "store_endpoint", "store_bucket", "snapshot", "algorithm", "base_model", "steps",
            "promotion_margin", "min_new_tickets", "manuals", "tickets", "nodes", "gpus_per_node"} == set(params)
    assert params["snapshot"]["defaultValue"] == "latest"
    assert yaml.safe_load(params["config_yaml"]["defaultValue"])["store"]["backend"] == "s3"


def _local_env(monkeypatch, tmp_path):
    monkeypatch.setenv("RLSD_STUB_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "src"), str(REPO), str(STUBS)]))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").mkdir()
    for kind in ("manuals", "tickets"):
        (tmp_path / kind).mkdir()
    tickets = []
    for i in range(3):
        (tmp_path / "tickets" / f"t{i}.json").write_text("{}")
        tickets.append(str(tmp_path / "tickets" / f"t{i}.json"))
    return tickets


def _calls(tmp_path):
    return {c["step"]: c for c in map(json.loads, (tmp_path / "calls.jsonl").read_text().splitlines())}


def test_run_local_runs_the_compiled_pipeline_end_to_end(tmp_path, monkeypatch, capsys):
    from rlsd.pipeline_local import run_local

    tickets = _local_env(monkeypatch, tmp_path)
    t0 = time.perf_counter()
    r = run_local(None, ["model.path=model", "train.steps=3", "algorithm.name=grpo"], str(tmp_path / "runs"),
                  arguments={"manuals": [str(tmp_path / "manuals")], "tickets": tickets})
    elapsed = time.perf_counter() - t0
    calls = _calls(tmp_path)
    assert list(calls) == ["ingest", "validate", "build_tasks", "train", "evaluate", "register", "promote"]
    assert len({c["pid"] for c in calls.values()}) == 6  # one subprocess per step (register+promote share one)
    assert calls["ingest"]["tickets"] == tickets and calls["ingest"]["perimeter"] == "strict"
    assert calls["validate"]["snapshot"] == calls["build_tasks"]["snapshot"] == "snap-0001"  # "latest" resolved
    assert calls["train"]["tasks_exist"] and calls["train"]["train_tasks"].startswith(calls["build_tasks"]["out_dir"])
    assert (calls["train"]["steps"], calls["train"]["algorithm"]) == (3, "grpo")
    assert calls["evaluate"]["candidate_exists"] and calls["evaluate"]["baseline"] == "model"
    assert calls["register"]["evaluation"] == {"candidate_pass_at_1": 0.5, "baseline_pass_at_1": 0.25}
    assert r["new_verified_tickets"] == 3 and r["trained"]
    assert Path(r["report_html"]).read_text() == "<h1>base vs trained</h1>"
    assert Path(r["validation_report"]).read_text() == "<h1>valid</h1>"
    assert r["registered"] == {"name": "rlsd-model", "version": "1", "uri": "models:/rlsd-model/1",
                               "decision": "promoted", "alias": "champion", "alias_uri": "models:/rlsd-model@champion"}
    assert len(r["connection_logs"]) == 6 and r["connections"]["refused"] == 0 and r["connections"]["modes"] == ["strict"]
    out = capsys.readouterr().out
    assert f"report: {r['report_html']}" in out and "alias: models:/rlsd-model@champion" in out
    print(f"local pipeline, 6 steps with stand-ins: {elapsed:.1f} s")


def test_run_local_skips_training_below_min_new_tickets(tmp_path, monkeypatch):
    from rlsd.pipeline_local import run_local

    tickets = _local_env(monkeypatch, tmp_path)
    r = run_local(None, ["model.path=model", "platform.min_new_tickets=4"], str(tmp_path / "runs"),
                  arguments={"tickets": tickets}, quiet=True)
    assert list(_calls(tmp_path)) == ["ingest", "validate", "build_tasks"]
    assert r["new_verified_tickets"] == 3 and not r["trained"] and r["registered"] is None


def test_local_copy_drops_only_the_retry_policies(tmp_path):
    from rlsd.pipeline_local import without_retries

    spec, platform = yaml.safe_load_all(without_retries(COMPILED, tmp_path / "p.yaml").read_text())
    orig_spec, orig_platform = yaml.safe_load_all(COMPILED.read_text())
    for dag in [orig_spec["root"]] + [c for c in orig_spec["components"].values() if "dag" in c]:
        for task in dag["dag"]["tasks"].values():
            task.pop("retryPolicy", None)
    assert (spec, platform) == (orig_spec, orig_platform)
    assert "retryPolicy" in COMPILED.read_text() and "retryPolicy" not in (tmp_path / "p.yaml").read_text()


def test_a_failing_step_fails_the_local_run_at_once(tmp_path, monkeypatch):
    from rlsd.pipeline_local import run_local

    _local_env(monkeypatch, tmp_path)
    monkeypatch.setenv("RLSD_STUB_FAIL", "ingest")
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="Inner task failed"):
        run_local(None, ["model.path=model"], str(tmp_path / "runs"), quiet=True)
    assert time.perf_counter() - t0 < 20  # no 30 s + 60 s + 120 s back-off locally


def test_run_local_names_the_missing_model(tmp_path, monkeypatch):
    from rlsd.pipeline_local import run_local

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="make-tiny-model"):
        run_local(None, ["model.path=nowhere"], str(tmp_path / "runs"))


def test_cli_pipeline_command(tmp_path, monkeypatch, capsys):
    from rlsd.cli import main

    _local_env(monkeypatch, tmp_path)
    assert main(["pipeline", "--set", "model.path=model", "--set", "platform.min_new_tickets=1000",
                 "--output", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert f"pipeline run: {tmp_path / 'runs'}" in out and "training skipped" in out
    assert "0 refused (mode strict)" in out
