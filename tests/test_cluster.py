"""TrainJob generation, offline CRD validation, and submit/wait against a scripted CustomObjectsApi.

No API server can run here: the fake is ``create_autospec(kubernetes.client.CustomObjectsApi)`` (so
calls must match the real client's signatures) with scripted TrainJob statuses, each of which is
itself validated against the vendored CRD's status schema.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path
from unittest.mock import create_autospec

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from rlsd import cluster
from rlsd.config import load_config

REPO = Path(__file__).resolve().parents[1]
CRD = REPO / "manifests" / "crds" / "trainer.kubeflow.org_trainjobs.yaml"
GPU_CFG = ("platform: {nodes: 4, gpus_per_node: 8, namespace: ml-prod, train_image: 'reg.corp/rlsd-train:1'}\n"
           "algorithm: {name: grpo_opsd}\n")


def spec(text=GPU_CFG):
    cfg = load_config(text=text)
    return cfg, cluster.trainjob_spec(cfg, name="rlsd-job-1", config_path="/workspace/j/config.yaml",
                                      output_dir="/workspace/j/output")


def test_spec_validates_against_the_vendored_crd_and_carries_the_config():
    cfg, obj = spec()
    cluster.validate_trainjob(obj, CRD)
    t = obj["spec"]["trainer"]
    assert obj["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and obj["kind"] == "TrainJob"
    assert obj["metadata"]["namespace"] == "ml-prod"
    assert obj["spec"]["runtimeRef"] == {"name": "rlsd-torch-distributed", "kind": "TrainingRuntime",
                                         "apiGroup": "trainer.kubeflow.org"}  # the project's own runtime
    assert t["image"] == "reg.corp/rlsd-train:1" and t["numNodes"] == 4 and t["numProcPerNode"] == 8
    assert t["command"] == ["torchrun", "--module", "rlsd", "train", "--config", "/workspace/j/config.yaml",
                            "--output", "/workspace/j/output"]
    assert t["resourcesPerNode"] == {"limits": {"nvidia.com/gpu": "8", "memory": "64Gi"},
                                     "requests": {"nvidia.com/gpu": "8", "cpu": "4", "memory": "32Gi"}}
    env = {e["name"]: e for e in t["env"]}
    assert env["HF_HUB_OFFLINE"]["value"] == "1" and env["GX_ANALYTICS_ENABLED"]["value"] == "false"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "rlsd-minio", "key": "secretkey"}
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "rlsd-mlflow", "key": "password"}
    secrets = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    assert all("value" not in env[k] and "secretKeyRef" in env[k]["valueFrom"] for k in secrets)  # never values


def _pod_patch(obj):
    (patch,) = obj["spec"]["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == "node"
    return node["template"]["spec"]["template"]


def test_every_pod_gets_the_rank_label_a_tokenless_identity_and_shm_whatever_the_runtime():
    _, obj = spec(GPU_CFG.replace("namespace: ml-prod", "namespace: ml-prod, runtime: torch-distributed, "
                                  "runtime_kind: ClusterTrainingRuntime"))
    cluster.validate_trainjob(obj, CRD)
    pod = _pod_patch(obj)
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "rlsd-trainer"  # allow-trainer-ranks selects it
    assert pod["spec"]["serviceAccountName"] == cluster.TRAINER_SERVICE_ACCOUNT
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert vols["dshm"]["emptyDir"]["medium"] == "Memory"
    mounts = {m["mountPath"]: m["name"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts == {"/dev/shm": "dshm", "/workspace": "workspace"}
    assert pod["spec"]["nodeSelector"] == cluster.GPU_NODE_SELECTOR


def test_embedded_core_types_round_trip_through_the_kubernetes_client_models():
    _, obj = spec()
    api = client.ApiClient()
    pod = _pod_patch(obj)["spec"]
    t = obj["spec"]["trainer"]
    for value, model in [(t["env"], "list[V1EnvVar]"), (t["resourcesPerNode"], "V1ResourceRequirements"),
                         (pod["volumes"], "list[V1Volume]"), (pod["tolerations"], "list[V1Toleration]"),
                         (pod["containers"][0]["volumeMounts"], "list[V1VolumeMount]")]:
        typed = api._ApiClient__deserialize(value, model)
        assert api.sanitize_for_serialization(typed) == json.loads(json.dumps(value)), model
    assert api.sanitize_for_serialization(obj) == obj


@pytest.mark.parametrize("algorithm", ["grpo", "rlsd", "opsd", "grpo_opsd"])
@pytest.mark.parametrize("nodes, gpus", [(2, 0), (2, 1), (3, 8), (16, 4)])
@pytest.mark.parametrize("runtime", ["runtime: rlsd-torch-distributed",
                                     "runtime: torch-distributed, runtime_kind: ClusterTrainingRuntime"])
def test_every_generated_trainjob_validates_strictly(algorithm, nodes, gpus, runtime):
    cfg = load_config(text=f"platform: {{nodes: {nodes}, gpus_per_node: {gpus}, {runtime}}}\n"
                           f"algorithm: {{name: {algorithm}}}\n")
    name = cluster.job_name(cfg, salt="tasks")
    cluster.validate_trainjob(cluster.trainjob_spec(cfg, name=name, config_path=f"/workspace/{name}/config.yaml",
                                                    output_dir=f"/workspace/{name}/output"), CRD)
    cluster.validate_trainjob(__import__("yaml").safe_load(cluster.render(cfg)), CRD)


def test_cpu_spec_has_no_gpu_request_and_still_validates():
    _, obj = spec("platform: {nodes: 2}")
    cluster.validate_trainjob(obj, CRD)
    assert "resourcesPerNode" not in obj["spec"]["trainer"] and "numProcPerNode" not in obj["spec"]["trainer"]


@pytest.mark.parametrize("mutate, where", [
    (lambda o: o["spec"]["trainer"].update(numNode=2), "spec.trainer"),              # typo: unknown field
    (lambda o: o["spec"].pop("runtimeRef"), "spec"),                                  # required
    (lambda o: o["spec"].update(managedBy="me"), "spec.managedBy"),
    (lambda o: o["spec"].update(activeDeadlineSeconds=0), "spec.activeDeadlineSeconds"),
    (lambda o: o["spec"]["trainer"]["env"].insert(0, {"value": "x"}), "spec.trainer.env.0"),
    (lambda o: o["spec"]["trainer"]["resourcesPerNode"]["limits"].update(memory="lots"),
     "spec.trainer.resourcesPerNode.limits.memory"),
    # fields that exist only in other Trainer releases
    (lambda o: o["spec"]["trainer"].update(numProcPerNode="auto"), "spec.trainer.numProcPerNode"),
    (lambda o: o["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0][
        "template"]["spec"]["template"]["spec"].update(automountServiceAccountToken=False),
     "spec.runtimePatches.0.trainingRuntimeSpec.template.spec.replicatedJobs.0.template.spec.template.spec"),
    (lambda o: o["spec"].update(podTemplateOverrides=[]), "spec"),
    (lambda o: o["metadata"].update(name="Rlsd_Job"), "<root>"),                      # CEL: DNS-1035 name
    (lambda o: o["metadata"].update(nmae="x"), "metadata"),                          # ObjectMeta is closed too
    (lambda o: o["spec"]["trainer"]["env"].append(dict(o["spec"]["trainer"]["env"][0])), "spec.trainer.env"),
    (lambda o: o["spec"].update(suspend="no"), "spec.suspend"),
])
def test_invalid_specs_are_rejected_naming_the_field(mutate, where):
    _, obj = spec()
    mutate(obj)
    with pytest.raises(ValueError, match=rf"(?m)^  {where.replace('.', '[.]')}: "):
        cluster.validate_trainjob(obj, CRD)


def cond(type_, status="True", reason="r", message=""):
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-01-01T00:00:00Z"}


def fake_api(statuses, on_complete=None):
    api = create_autospec(client.CustomObjectsApi, instance=True)
    created = []
    api.create_namespaced_custom_object.side_effect = lambda group, version, namespace, plural, body: (
        created.append(body) or body)
    seq = iter(statuses)

    def get(group, version, namespace, plural, name):
        if plural != "trainjobs":  # preflight looks the runtime up
            if (plural, name) != ("trainingruntimes", "rlsd-torch-distributed"):
                raise ApiException(status=404, reason="NotFound")
            return {"kind": "TrainingRuntime", "metadata": {"name": name, "namespace": namespace}}
        status = next(seq)
        if status:
            cluster.crd_validator(CRD).validate({"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
                                                 "metadata": {"name": name}, "spec": {"runtimeRef": {"name": "x"}},
                                                 "status": status})
        if status and on_complete and any(c["type"] == "Complete" for c in status.get("conditions", [])):
            on_complete()
        return {"metadata": {"name": name, "namespace": namespace}, "status": status}

    api.get_namespaced_custom_object.side_effect = get
    api.get_cluster_custom_object.side_effect = ApiException(status=404, reason="NotFound")  # no cluster runtimes
    return api, created


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


RUNNING = {"jobsStatus": [{"name": "node", "ready": 4, "succeeded": 0, "failed": 0, "active": 4, "suspended": 0}]}


def test_wait_streams_changes_and_returns_on_complete():
    api, _ = fake_api([{}, RUNNING, RUNNING, {"conditions": [cond("Complete", reason="JobsCompleted")],
                                             **RUNNING}])
    lines, clock = [], Clock()
    obj = cluster.wait(api, name="j", namespace="ns", timeout_s=100, poll_s=5, log=lines.append, clock=clock,
                       sleep=clock.sleep)
    assert obj["status"]["conditions"][0]["type"] == "Complete"
    assert len(lines) == 3 and "created, no status yet" in lines[0]        # the repeated RUNNING is not re-logged
    assert "node: active 4 ok 0 failed 0" in lines[1] and "Complete=True (JobsCompleted" in lines[2]
    assert clock.t == 15 and api.get_namespaced_custom_object.call_count == 4
    api.get_namespaced_custom_object.assert_called_with("trainer.kubeflow.org", "v1alpha1", "ns", "trainjobs", "j")


def test_wait_fails_clearly_on_failed():
    api, _ = fake_api([RUNNING, {"conditions": [cond("Failed", reason="DeadlineExceeded",
                                                      message="TrainJob exceeded its activeDeadlineSeconds")]}])
    clock = Clock()
    with pytest.raises(cluster.TrainJobFailed, match=r"ns/j failed: DeadlineExceeded: TrainJob exceeded.*describe"):
        cluster.wait(api, name="j", namespace="ns", timeout_s=100, log=lambda s: None, clock=clock, sleep=clock.sleep)


def test_wait_times_out():
    api, _ = fake_api([RUNNING] * 10)
    clock = Clock()
    with pytest.raises(cluster.TrainJobTimeout, match="not finished after 30s"):
        cluster.wait(api, name="j", namespace="ns", timeout_s=30, poll_s=10, log=lambda s: None, clock=clock,
                     sleep=clock.sleep)
    assert api.get_namespaced_custom_object.call_count == 4  # t = 0, 10, 20, 30


def test_submit_reuses_an_existing_job_on_conflict():
    api, _ = fake_api([RUNNING])
    api.create_namespaced_custom_object.side_effect = ApiException(status=409, reason="AlreadyExists")
    _, obj = spec()
    got = cluster.submit(api, obj)
    assert got["metadata"]["name"] == "rlsd-job-1"
    api.create_namespaced_custom_object.side_effect = ApiException(status=403, reason="Forbidden")
    with pytest.raises(RuntimeError, match="HTTP 403 Forbidden"):
        cluster.submit(api, obj)


def _tasks(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"id": "t1"}\n')
    (tmp_path / "eval.jsonl").write_text('{"id": "e1"}\n')
    return f"data: {{train_tasks: '{tmp_path}/train.jsonl', eval_tasks: '{tmp_path}/eval.jsonl'}}\n"


def test_run_training_multi_node_submits_waits_and_collects(tmp_path, monkeypatch):
    monkeypatch.setenv("RLSD_CRD_DIR", str(CRD.parent))
    cfg = load_config(text=GPU_CFG + _tasks(tmp_path))
    ws = tmp_path / "workspace"

    def job_finishes():  # what the job's pods would leave on the shared volume
        out = next(ws.iterdir()) / "output"
        (out / "final").mkdir(parents=True)
        (out / "final" / "config.json").write_text("{}")
        (out / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n')

    api, created = fake_api([{}, RUNNING, {"conditions": [cond("Complete")]}], on_complete=job_finishes)
    s = cluster.run_training(cfg, output_dir=str(tmp_path / "model"), api=api, workspace=str(ws), log=lambda s: None,
                               sleep=lambda s: None)
    (body,) = created
    name = body["metadata"]["name"]
    assert s == {"final_model": str(tmp_path / "model" / "final"), "steps": 2, "trainjob": f"ml-prod/{name}"}
    assert (tmp_path / "model" / "final" / "config.json").exists()
    job_cfg = load_config(ws / name / "config.yaml")
    assert job_cfg.data.train_tasks == str(ws / name / "tasks" / "train.jsonl")
    assert (ws / name / "tasks" / "train.jsonl").read_text() == '{"id": "t1"}\n'
    # same config and tasks -> same name (a retried step finds its job); new tasks -> a new job
    assert cluster.job_name(cfg, salt="a") == cluster.job_name(cfg, salt="a") != cluster.job_name(cfg, salt="b")


def test_run_training_multi_gpu_pod_uses_the_deepspeed_launcher(tmp_path):
    cfg = load_config(text="platform: {gpus_per_node: 4}\n" + _tasks(tmp_path))
    calls = []

    def runner(cmd, env, check):
        calls.append((cmd, env))
        out = Path(cmd[cmd.index("--output") + 1])
        (out / "final").mkdir()
        (out / "metrics.jsonl").write_text('{"step": 1}\n')
        return types.SimpleNamespace(returncode=0)

    s = cluster.run_training(cfg, output_dir=str(tmp_path / "m"), runner=runner, log=lambda s: None)
    cmd, env = calls[0]
    assert cmd == ["deepspeed", "--num_gpus=4", "--module", "rlsd", "train", "--config",
                   str(tmp_path / "m" / "resolved_config.yaml"), "--output", str(tmp_path / "m")]
    assert load_config(tmp_path / "m" / "resolved_config.yaml") == cfg and env["HF_HUB_OFFLINE"] == "1"
    assert s == {"final_model": str(tmp_path / "m" / "final"), "steps": 1}
    with pytest.raises(RuntimeError, match="exited with 3"):
        cluster.run_training(cfg, output_dir=str(tmp_path / "m2"), log=lambda s: None,
                             runner=lambda cmd, env, check: types.SimpleNamespace(returncode=3))


def test_run_training_single_process_calls_the_trainer(tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("rlsd.train")
    fake.train = lambda cfg, output_dir=None: calls.append((cfg, output_dir)) or {"final_model": "x", "steps": 1}
    monkeypatch.setitem(sys.modules, "rlsd.train", fake)
    cfg = load_config()
    assert cluster.run_training(cfg, output_dir=str(tmp_path / "o")) == {"final_model": "x", "steps": 1}
    assert calls == [(cfg, str(tmp_path / "o"))]


def test_render_is_valid_yaml_of_a_valid_spec():
    import yaml

    obj = yaml.safe_load(cluster.render(load_config(text=GPU_CFG)))
    cluster.validate_trainjob(obj, CRD)
    assert obj["metadata"]["name"].startswith("rlsd-grpo-opsd-")
    assert os.path.basename(obj["spec"]["trainer"]["command"][5]) == "config.yaml"


def test_cli_trainjob_prints_the_spec(capsys):
    from rlsd.cli import main

    assert main(["trainjob", "--set", "platform.nodes=3", "--set", "platform.gpus_per_node=2"]) == 0
    import yaml

    obj = yaml.safe_load(capsys.readouterr().out)
    cluster.validate_trainjob(obj, CRD)
    assert obj["spec"]["trainer"]["numNodes"] == 3 and obj["spec"]["trainer"]["numProcPerNode"] == 2


def fake_nodes(*allocatable_gpus):
    core = create_autospec(client.CoreV1Api, instance=True)
    core.list_node.return_value = client.V1NodeList(items=[
        client.V1Node(metadata=client.V1ObjectMeta(name=f"gpu-{i}"),
                      status=client.V1NodeStatus(allocatable={"cpu": "64", "nvidia.com/gpu": str(g)}))
        for i, g in enumerate(allocatable_gpus)])
    return core


@pytest.mark.parametrize("text, core, message", [
    ("platform: {nodes: 2, runtime: no-such-runtime}", None,
     r"platform.runtime: TrainingRuntime 'no-such-runtime' does not exist in namespace rlsd"),
    ("platform: {nodes: 2, runtime: torch-distributed, runtime_kind: ClusterTrainingRuntime}", None,
     r"platform.runtime: ClusterTrainingRuntime 'torch-distributed' does not exist \("),
    ("platform: {nodes: 2, gpus_per_node: 8}", (8, 4, 4),
     r"gpus_per_node=8 x platform.nodes=2 does not fit: 1 of 3 nodes matching nvidia.com/gpu.present=true "
     r"can hold 8 nvidia.com/gpu \(the largest has 8\)"),
    ("platform: {nodes: 2, gpus_per_node: 16}", (8, 8), r"0 of 2 nodes .* \(the largest has 8\)"),
    ("platform: {nodes: 2, gpus_per_node: 1}", (), r"0 of 0 nodes"),
])
def test_bad_requests_fail_in_one_line_before_anything_is_created(tmp_path, text, core, message):
    cfg = load_config(text=text + "\n" + _tasks(tmp_path))
    api, created = fake_api([])
    ws = tmp_path / "workspace"
    with pytest.raises(cluster.PreflightError, match=message) as err:
        cluster.run_training(cfg, output_dir=str(tmp_path / "m"), api=api,
                             core_api=fake_nodes(*core) if core is not None else None, workspace=str(ws),
                             log=lambda s: None)
    assert "\n" not in str(err.value)
    assert not created and not api.create_namespaced_custom_object.called and not ws.exists()


def test_preflight_passes_when_the_nodes_hold_the_gpus_and_warns_without_node_access():
    cfg = load_config(text="platform: {nodes: 2, gpus_per_node: 8}")
    api, _ = fake_api([])
    core = fake_nodes(8, 8, 4)
    cluster.preflight(cfg, api, core)
    core.list_node.assert_called_once_with(label_selector="nvidia.com/gpu.present=true")
    core.list_node.side_effect = ApiException(status=403, reason="Forbidden")
    lines = []
    cluster.preflight(cfg, api, core, log=lines.append)
    assert "GPU capacity not checked" in lines[0]


def test_nodes_below_one_are_refused_in_one_line():
    from rlsd.config import ConfigError

    with pytest.raises((ConfigError, ValueError), match=r"^platform.nodes must be >= 1, got 0$"):
        load_config(text="platform: {nodes: 0}")


def test_the_train_step_refuses_a_bad_request_before_fetching_the_base_model(tmp_path, monkeypatch):
    """The pipeline's entry (train_step) fetches the base model into the shared workspace: a runtime that does
    not exist must be refused before that download, not after it (nothing left on the volume)."""
    from rlsd import model_refs

    fetched = []
    monkeypatch.setattr(model_refs, "resolve_base", lambda cfg, scratch: fetched.append(scratch) or (cfg, {}))
    cfg = load_config(text="platform: {nodes: 2, runtime: no-such-runtime}\n" + _tasks(tmp_path))
    api, created = fake_api([])
    ws = tmp_path / "workspace"
    with pytest.raises(cluster.PreflightError, match="'no-such-runtime' does not exist") as err:
        cluster.train_step(cfg, model_dir=str(tmp_path / "model"), run_key="k", api=api, workspace=str(ws),
                           log=lambda s: None)
    assert "\n" not in str(err.value)
    assert not fetched and not created and not ws.exists()


def test_the_node_check_warning_names_the_clusterrole_that_grants_it():
    """Without list on nodes the GPU check is skipped with a warning telling the operator what to bind: the
    ClusterRole it names must be one manifests/ defines, and the one that grants that verb."""
    import re

    import yaml

    cfg = load_config(text="platform: {nodes: 2, gpus_per_node: 8}")
    api, _ = fake_api([])
    core = create_autospec(client.CoreV1Api, instance=True)
    core.list_node.side_effect = ApiException(status=403, reason="Forbidden")
    lines = []
    cluster.preflight(cfg, api, core, log=lines.append)
    (named,) = re.findall(r"bind (?:the )?(rlsd-[a-z-]+)", lines[0])
    roles = {d["metadata"]["name"]: d for d in yaml.safe_load_all(
        (REPO / "manifests" / "base" / "pipeline-runner-rbac.yaml").read_text()) if d and d["kind"] == "ClusterRole"}
    assert named in roles, (named, sorted(roles))
    assert any("nodes" in r["resources"] and "list" in r["verbs"] for r in roles[named]["rules"])
