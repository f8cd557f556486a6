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

from rlsd.config import load_config

REPO = Path(__file__).resolve().parents[2]
STUBS = Path(__file__).parent / "stubs"


def test_compiled_pipeline_is_current(tmp_path):
    fresh = compile_pipeline(tmp_path / "rlsd_pipeline.yaml").read_text()
    assert fresh == COMPILED.read_text(), (
        "pipelines/rlsd_pipeline.yaml is stale: run `python -m pipelines.rlsd_pipeline` and commit the result")


def _docs():
    spec, platform = yaml.safe_load_all(COMPILED.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _routes(spec):
    """{"single-pod": dag tasks, "multi-node": dag tasks} found by their branch conditions."""
    branches = spec["components"]["comp-condition-branches-2"]["dag"]["tasks"]
    out = {}
    for task in branches.values():
        cond = task["triggerPolicy"]["condition"]
        key = "multi-node" if cond.startswith("!(") else "single-pod"
        assert "pipelinechannel--nodes" in cond and "== 1" in cond, cond
        out[key] = spec["components"][task["componentRef"]["name"]]["dag"]["tasks"]
    assert set(out) == {"single-pod", "multi-node"}
    return out


def _executor(spec, tasks, name):
    comp = next(t["componentRef"]["name"] for n, t in tasks.items() if n.startswith(name))
    return spec["components"][comp]["executorLabel"]


def test_compiled_pipeline_sets_the_cluster_details():
    spec, k8s = _docs()
    root = spec["root"]["dag"]["tasks"]
    gate = spec["components"]["comp-condition-1"]["dag"]["tasks"]
    assert set(root) == {"ingest", "validate", "build-tasks", "condition-1"}
    assert set(gate) == {"resolve-models", "condition-branches-2"}
    routes = _routes(spec)
    assert set(routes["single-pod"]) == {"train", "evaluate", "register-and-promote"}  # the names kfp.local reads
    assert {n.rsplit("-", 1)[0] for n in routes["multi-node"]} == {"train", "evaluate", "register-and-promote"}
    # the retraining gate
    assert root["condition-1"]["triggerPolicy"]["condition"] == (
        "int(inputs.parameter_values['pipelinechannel--ingest-Output']) >= "
        "int(inputs.parameter_values['pipelinechannel--min_new_tickets'])")
    # caching off for ingest only; retries with back-off on the I/O steps, not on train
    assert root["ingest"]["cachingOptions"] == {} and root["validate"]["cachingOptions"] == {"enableCache": True}
    retry = {"maxRetryCount": 3, "backoffDuration": "30s", "backoffFactor": 2.0, "backoffMaxDuration": "600s"}
    for name, tasks in [("ingest", root), ("validate", root), ("build-tasks", root), ("resolve-models", gate)]:
        assert tasks[name]["retryPolicy"] == retry, name
    for tasks in routes.values():
        for name, task in tasks.items():
            assert ("retryPolicy" in task) == name.startswith("register"), name
    # secrets as env: MinIO keys everywhere the store is touched, MLflow's user where tracking is
    executors = spec["deploymentSpec"]["executors"]
    for ex in executors:
        envs = {k["envVar"]: s["secretName"] for s in k8s[ex]["secretAsEnv"] for k in s["keyToEnv"]}
        assert envs["AWS_ACCESS_KEY_ID"] == envs["AWS_SECRET_ACCESS_KEY"] == "rlsd-minio", ex
        tracked = ex.startswith(("exec-resolve-models", "exec-train", "exec-evaluate", "exec-register"))
        assert (envs.get("MLFLOW_TRACKING_USERNAME") == envs.get("MLFLOW_TRACKING_PASSWORD") == "rlsd-mlflow") == tracked
    # no component installs packages at run time (the perimeter has no PyPI)
    for ex in executors.values():
        assert "pip install" not in " ".join(ex["container"]["command"])
    # the operator's knobs
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {"config_yaml", "store_endpoint", "store_bucket", "snapshot", "algorithm", "base_model", "steps",
            "promotion_margin", "min_new_tickets", "manuals", "tickets", "nodes", "gpus_per_node"} == set(params)
    assert params["snapshot"]["defaultValue"] == "latest"
    assert yaml.safe_load(params["config_yaml"]["defaultValue"])["store"]["backend"] == "s3"


def test_steps_after_ingest_are_keyed_on_the_snapshot_id_parameter_not_its_artifact():
    """KFP keys a step's cache on its input parameters and input artifact ids; ingest never caches, so a step fed
    one of its artifacts would never hit the cache. validate and build-tasks take the snapshot id as a string."""
    spec, _ = _docs()
    root = spec["root"]["dag"]["tasks"]
    ingest_out = spec["components"]["comp-ingest"]["outputDefinitions"]["parameters"]
    assert ingest_out == {"Output": {"parameterType": "NUMBER_INTEGER"}, "snapshot_id": {"parameterType": "STRING"}}
    for name in ("validate", "build-tasks"):
        task = root[name]
        assert "artifacts" not in task["inputs"], name  # nothing of ingest's (or anyone's) artifacts
        assert "artifacts" not in spec["components"][task["componentRef"]["name"]].get("inputDefinitions", {}), name
        assert task["inputs"]["parameters"]["snapshot_id"] == {
            "taskOutputParameter": {"outputParameterKey": "snapshot_id", "producerTask": "ingest"}}, name
        assert task["inputs"]["parameters"]["snapshot"] == {"componentInputParameter": "snapshot"}, name
        assert task["cachingOptions"] == {"enableCache": True}, name
    assert root["ingest"]["cachingOptions"] == {}
    # train and evaluate see only build-tasks' (cache-stable) tasks artifact and parameters, never ingest's outputs
    for tasks in _routes(spec).values():
        for name, task in tasks.items():
            producers = {a.get("taskOutputArtifact", {}).get("producerTask")
                         for a in task["inputs"].get("artifacts", {}).values()}
            assert "ingest" not in producers, name
            assert not any("ingest" in str(v) for v in task["inputs"].get("parameters", {}).values()), name
            if name.startswith(("train", "evaluate")):
                assert task["cachingOptions"] == {"enableCache": True}, name
    # the inputs default to the configured inbox (empty), not to paths inside an image
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["manuals"].get("defaultValue") == [] and params["tickets"].get("defaultValue") == []


def test_train_and_evaluate_are_keyed_on_cache_stable_inputs_and_the_pinned_models():
    """Issue 15 item 6: no run id reaches train or evaluate (a new one every run would defeat the cache); their
    parameters are pipeline parameters or the outputs of resolve-models (the pinned base and champion), their
    artifacts build-tasks' tasks and train's model. resolve-models and register are never cached."""
    spec, _ = _docs()
    root_params = set(spec["root"]["inputDefinitions"]["parameters"])
    gate = spec["components"]["comp-condition-1"]["dag"]["tasks"]
    assert gate["resolve-models"]["cachingOptions"] == {}  # never cached: it reads the registry and the store now
    assert gate["resolve-models"]["inputs"]["parameters"] == {
        "base_model": {"componentInputParameter": "pipelinechannel--base_model"},
        "config_yaml": {"componentInputParameter": "pipelinechannel--config_yaml"}}
    resolve_out = spec["components"][gate["resolve-models"]["componentRef"]["name"]]["outputDefinitions"]["parameters"]
    assert set(resolve_out) == {"base_model", "champion"}
    # the branches receive resolve-models' outputs as channels
    channels = gate["condition-branches-2"]["inputs"]["parameters"]
    for out in ("base_model", "champion"):
        assert channels[f"pipelinechannel--resolve-models-{out}"] == {
            "taskOutputParameter": {"outputParameterKey": out, "producerTask": "resolve-models"}}
    allowed = {f"pipelinechannel--{p}" for p in root_params} | {
        "pipelinechannel--resolve-models-base_model", "pipelinechannel--resolve-models-champion"}
    for route, tasks in _routes(spec).items():
        for name, task in tasks.items():
            comp = spec["components"][task["componentRef"]["name"]]
            if name.startswith("register"):
                assert task["cachingOptions"] == {}, (route, name)  # side effects: never cached
                continue
            assert name.startswith(("train", "evaluate")), name
            assert task["cachingOptions"] == {"enableCache": True}, (route, name)
            assert "kfp_run_id" not in comp["inputDefinitions"]["parameters"], (route, name)
            assert "pipeline_job" not in json.dumps(task["inputs"]), (route, name)  # no run id, uuid or name
            for key, src in task["inputs"]["parameters"].items():
                if key == "accelerator_count":  # the GPU count placeholder of the single-pod route
                    assert src == {"runtimeValue": {"constant": "{{$.inputs.parameters['pipelinechannel--gpus_per_node']}}"}}
                    continue
                assert set(src) == {"componentInputParameter"} and src["componentInputParameter"] in allowed, (
                    route, name, key, src)
            producers = {a.get("taskOutputArtifact", {}).get("producerTask") or a.get("componentInputArtifact")
                         for a in task["inputs"]["artifacts"].values()}
            assert producers <= {"pipelinechannel--build-tasks-tasks", "train"} | {
                n for n in tasks if n.startswith("train")}, (route, name, producers)
            if name.startswith("train"):
                assert task["inputs"]["parameters"]["base_model"] == {
                    "componentInputParameter": "pipelinechannel--resolve-models-base_model"}
            else:
                assert task["inputs"]["parameters"]["base_model"] == {
                    "componentInputParameter": "pipelinechannel--resolve-models-base_model"}
                assert task["inputs"]["parameters"]["champion"] == {
                    "componentInputParameter": "pipelinechannel--resolve-models-champion"}


def test_run_local_accepts_store_and_registry_references(tmp_path, monkeypatch):
    """`rlsd pipeline` no longer refuses a model.path that is not a local folder: resolve-models and train
    resolve store:// and models:/ references (here the gate skips training, so nothing resolves them)."""
    from rlsd.pipeline_local import run_local

    _local_env(monkeypatch, tmp_path)
    for ref in ("store://models/smollm2", "models:/rlsd-model@champion"):
        r = run_local(None, [f"model.path={ref}"], str(tmp_path / "runs"), inbox=True, quiet=True)
        assert not r["trained"]


def test_run_local_with_inbox_defaults_passes_no_inputs_and_the_gate_skips(tmp_path, monkeypatch):
    from rlsd.pipeline_local import run_local

    _local_env(monkeypatch, tmp_path)
    r = run_local(None, ["model.path=model"], str(tmp_path / "runs"), inbox=True, quiet=True)
    calls = _calls(tmp_path)
    assert (calls["ingest"]["manuals"], calls["ingest"]["tickets"]) == ([], [])
    assert list(calls) == ["ingest", "validate", "build_tasks"]  # 0 new tickets: training skipped
    assert calls["validate"]["snapshot"] == calls["build_tasks"]["snapshot"] == "snap-0001"
    assert r["untrained_verified_tickets"] == 0 and not r["trained"]


def test_single_pod_route_holds_the_gpus_with_shm_limits_and_a_timeout():
    spec, k8s = _docs()
    ex = _executor(spec, _routes(spec)["single-pod"], "train")
    res = spec["deploymentSpec"]["executors"][ex]["container"]["resources"]
    assert res["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert res["accelerator"]["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--gpus_per_node']}}"
    assert res["resourceCpuLimit"] and res["resourceMemoryLimit"]
    assert k8s[ex]["emptyDirMounts"] == [{"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": "16Gi",
                                          "volumeName": "dshm"}]
    assert int(k8s[ex]["activeDeadlineSeconds"]) > load_config(REPO / "configs" / "kubeflow.yaml").platform.job_timeout_s
    assert k8s[ex]["nodeSelector"] == {"labels": {"nvidia.com/gpu.present": "true"}}
    assert k8s[ex]["tolerations"] == [{"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}]
    assert k8s[ex]["pvcMount"][0]["mountPath"] == "/workspace"


def test_multi_node_route_launches_the_trainjob_without_gpus():
    spec, k8s = _docs()
    ex = _executor(spec, _routes(spec)["multi-node"], "train")
    container = spec["deploymentSpec"]["executors"][ex]["container"]
    assert "accelerator" not in container["resources"]
    assert not any("gpu" in str(v).lower() for v in container["resources"].values())
    assert "nodeSelector" not in k8s[ex] and "tolerations" not in k8s[ex]
    assert container["resources"]["resourceMemoryLimit"] and int(k8s[ex]["activeDeadlineSeconds"]) > 0
    assert k8s[ex]["pvcMount"][0]["mountPath"] == "/workspace"  # where the TrainJob reads and writes


def test_images_come_from_the_configuration(tmp_path, monkeypatch):
    spec, _ = _docs()
    cfg = load_config(REPO / "configs" / "kubeflow.yaml").platform
    images = {ex: e["container"]["image"] for ex, e in spec["deploymentSpec"]["executors"].items()}
    assert {i for ex, i in images.items() if ex.startswith("exec-train")} == {cfg.train_image}
    assert {i for ex, i in images.items() if not ex.startswith("exec-train")} == {cfg.image}
    # another installation's registry without editing code: recompile with the values set
    import subprocess
    import sys

    out = tmp_path / "p.yaml"
    env = {**os.environ, "RLSD_IMAGE": "reg.example/ml/rlsd-cpu:9", "RLSD_TRAIN_IMAGE": "reg.example/ml/rlsd-train:9",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")])}
    code = f"from pipelines.rlsd_pipeline import compile_pipeline; compile_pipeline({str(out)!r})"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=REPO, timeout=120)
    other, _ = yaml.safe_load_all(out.read_text())
    got = {ex: e["container"]["image"] for ex, e in other["deploymentSpec"]["executors"].items()}
    assert {i for ex, i in got.items() if ex.startswith("exec-train")} == {"reg.example/ml/rlsd-train:9"}
    assert {i for ex, i in got.items() if not ex.startswith("exec-train")} == {"reg.example/ml/rlsd-cpu:9"}
    # ... and the run's default recipe names the same images: the multi-node TrainJob's pods take theirs from it
    recipe = load_config(text=other["root"]["inputDefinitions"]["parameters"]["config_yaml"]["defaultValue"])
    assert (recipe.platform.image, recipe.platform.train_image) == ("reg.example/ml/rlsd-cpu:9",
                                                                    "reg.example/ml/rlsd-train:9")


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
    assert list(calls) == ["ingest", "validate", "build_tasks", "resolve", "train", "evaluate_champion", "evaluate",
                           "register", "promote"]
    assert len({c["pid"] for c in calls.values()}) == 7  # one subprocess per step (register+promote share one)
    # resolve-models pinned the base (no champion in the stub registry) and evaluate got the pinned champion ""
    assert calls["resolve"]["model_path"] == "model" and calls["evaluate_champion"]["champion"] == ""
    assert calls["ingest"]["tickets"] == tickets and calls["ingest"]["perimeter"] == "strict"
    assert calls["validate"]["snapshot"] == calls["build_tasks"]["snapshot"] == "snap-0001"  # "latest" resolved
    assert calls["train"]["tasks_exist"] and calls["train"]["train_tasks"].startswith(calls["build_tasks"]["out_dir"])
    assert (calls["train"]["steps"], calls["train"]["algorithm"]) == (3, "grpo")
    assert calls["evaluate"]["candidate_exists"] and calls["evaluate"]["baseline"] == "model"
    assert calls["register"]["evaluation"] == {"candidate_pass_at_1": 0.5, "baseline_pass_at_1": 0.25}
    # lineage: the run's id reaches register resolved (kfp.local fills the pipeline-job uuid placeholder)
    assert calls["register"]["kfp_run"] and "{{" not in calls["register"]["kfp_run"]
    assert r["untrained_verified_tickets"] == 3 and r["trained"]
    assert Path(r["report_html"]).read_text() == "<h1>base vs trained</h1>"
    assert Path(r["validation_report"]).read_text() == "<h1>valid</h1>"
    assert r["registered"] == {"name": "rlsd-model", "version": "1", "uri": "models:/rlsd-model/1",
                               "decision": "promoted", "alias": "champion", "alias_uri": "models:/rlsd-model@champion"}
    assert len(r["connection_logs"]) == 7 and r["connections"]["refused"] == 0 and r["connections"]["modes"] == ["strict"]
    out = capsys.readouterr().out
    assert f"report: {r['report_html']}" in out and "alias: models:/rlsd-model@champion" in out
    print(f"local pipeline, 7 steps with stand-ins: {elapsed:.1f} s")


def test_run_local_skips_training_below_min_new_tickets(tmp_path, monkeypatch):
    from rlsd.pipeline_local import run_local

    tickets = _local_env(monkeypatch, tmp_path)
    r = run_local(None, ["model.path=model", "platform.min_new_tickets=4"], str(tmp_path / "runs"),
                  arguments={"tickets": tickets}, quiet=True)
    assert list(_calls(tmp_path)) == ["ingest", "validate", "build_tasks"]
    assert r["untrained_verified_tickets"] == 3 and not r["trained"] and r["registered"] is None


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
