"""Distributed training on Kubernetes: the train step's three routes, and the Kubeflow Trainer TrainJob.

``run_training(cfg, output_dir=...)`` picks the route from ``cfg.platform``:

* ``nodes == 1, gpus_per_node <= 1``: ``rlsd.train.train`` in this process (CPU demo, one GPU).
* ``nodes == 1, gpus_per_node > 1``: the DeepSpeed launcher in this pod
  (``deepspeed --num_gpus N --module rlsd train --config <resolved.yaml> --output <dir>``).
* ``nodes > 1``: a Kubeflow Trainer v2 ``TrainJob`` (trainer.kubeflow.org/v1alpha1) on the
  ``torch-distributed`` runtime: torchrun on every node reads the ``PET_*`` variables the
  controller injects and starts ``python -m rlsd train``; DeepSpeed initialises inside torchrun
  (RANK / WORLD_SIZE / MASTER_ADDR come from torchrun). The job reads its config and tasks from,
  and writes its model to, the shared workspace volume (``platform.shared_pvc`` mounted at
  ``WORKSPACE``), which the train step's pod mounts too; the final model is copied into the step's
  output artifact. ``wait()`` streams condition changes, fails with the controller's reason on
  ``Failed``, and gives up after ``platform.job_timeout_s`` (the job is left for inspection).

Departures from the Trainer docs' examples: secrets reach the job as ``secretKeyRef`` env vars
(never in the spec's values), the offline switches are set in the job's env, and the spec is
checked against the vendored CRD schema (manifests/crds/) with unknown fields rejected before it
is submitted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from rlsd import offline
from rlsd.config import RLSDConfig

GROUP, VERSION, PLURAL, KIND = "trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"
WORKSPACE = "/workspace"
GPU_RESOURCE = "nvidia.com/gpu"
CRD_FILE = "trainer.kubeflow.org_trainjobs.yaml"


class TrainJobFailed(RuntimeError):
    """The TrainJob reached the Failed condition."""


class TrainJobTimeout(TimeoutError):
    """The TrainJob did not finish within platform.job_timeout_s."""


# ----------------------------------------------------------------------------------------------
# The TrainJob spec
# ----------------------------------------------------------------------------------------------


def job_name(cfg: RLSDConfig, salt: str = "") -> str:
    """A DNS-1035 name, stable for one config and salt (the tasks' hash), so a retried step finds its own job."""
    digest = hashlib.sha256((cfg.to_yaml() + salt).encode()).hexdigest()[:10]
    return f"rlsd-{cfg.algorithm.name.replace('_', '-')}-{digest}"


def _secret_env(name: str, secret: str, key: str, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def trainjob_spec(cfg: RLSDConfig, *, name: str, config_path: str, output_dir: str) -> dict[str, Any]:
    """The TrainJob object for ``cfg`` (plain dict, ready for CustomObjectsApi).

    ``config_path`` / ``output_dir`` are paths inside the job's pods (under ``WORKSPACE``).
    """
    p = cfg.platform
    env = [{"name": k, "value": v} for k, v in sorted(offline.SWITCHES.items())]
    env += [
        _secret_env("AWS_ACCESS_KEY_ID", p.store_secret, "accesskey"),
        _secret_env("AWS_SECRET_ACCESS_KEY", p.store_secret, "secretkey"),
        _secret_env("MLFLOW_TRACKING_TOKEN", p.tracking_secret, "token", optional=True),
        {"name": "OMP_NUM_THREADS", "value": "1"},
    ]
    trainer: dict[str, Any] = {
        "image": p.train_image,
        "command": ["torchrun", "--module", "rlsd", "train", "--config", config_path, "--output", output_dir],
        "env": env,
        "numNodes": p.nodes,
    }
    if p.gpus_per_node > 0:
        trainer["numProcPerNode"] = p.gpus_per_node
        gpus = str(p.gpus_per_node)  # a resource.Quantity is a string in the API
        trainer["resourcesPerNode"] = {"limits": {GPU_RESOURCE: gpus}, "requests": {GPU_RESOURCE: gpus}}
    pod_patch: dict[str, Any] = {
        "volumes": [{"name": "workspace", "persistentVolumeClaim": {"claimName": p.shared_pvc}}],
        "containers": [{"name": "node", "volumeMounts": [{"name": "workspace", "mountPath": WORKSPACE}]}],
    }
    if p.gpus_per_node > 0:
        pod_patch["nodeSelector"] = {"nvidia.com/gpu.present": "true"}
        pod_patch["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": p.namespace,
                     "labels": {"app.kubernetes.io/part-of": "rlsd", "rlsd/algorithm": cfg.algorithm.name}},
        "spec": {
            "runtimeRef": {"name": p.runtime, "kind": p.runtime_kind, "apiGroup": GROUP},
            "trainer": trainer,
            "runtimePatches": [{"manager": "rlsd", "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [
                {"name": "node", "template": {"spec": {"template": {"spec": pod_patch}}}}]}}}}],
            "activeDeadlineSeconds": p.job_timeout_s,
        },
    }


# ----------------------------------------------------------------------------------------------
# Offline validation against the vendored CRD
# ----------------------------------------------------------------------------------------------


def find_crd(filename: str = CRD_FILE) -> Path:
    """manifests/crds/<filename> from $RLSD_CRD_DIR, the source checkout, or the working directory."""
    candidates = [Path(os.environ["RLSD_CRD_DIR"]) / filename] if os.environ.get("RLSD_CRD_DIR") else []
    candidates += [Path(__file__).resolve().parents[2] / "manifests" / "crds" / filename,
                   Path.cwd() / "manifests" / "crds" / filename]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"CRD {filename} not found in {', '.join(map(str, candidates))}; "
                            "set RLSD_CRD_DIR to the folder holding manifests/crds")


def _close(schema: Any) -> Any:
    """Reject unknown fields like the API server's strict field validation (structural schemas prune them)."""
    if isinstance(schema, dict):
        out = {k: _close(v) for k, v in schema.items()}
        if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_close(v) for v in schema]
    return schema


def crd_validator(crd_path: str | Path, version: str = VERSION) -> Any:
    """A jsonschema validator for one version of a vendored CRD (unknown fields rejected)."""
    import jsonschema

    crd = yaml.safe_load(Path(crd_path).read_text(encoding="utf-8"))
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    if version not in versions:
        raise ValueError(f"{crd_path} has no version {version!r}; it has {sorted(versions)}")
    schema = _close(dict(versions[version]["schema"]["openAPIV3Schema"]))
    schema["definitions"] = _close(crd.get("definitions", {}))
    return jsonschema.Draft7Validator(schema)


def validate_trainjob(obj: dict[str, Any], crd_path: str | Path | None = None) -> None:
    """Raise ValueError listing every schema violation of ``obj`` (a TrainJob dict)."""
    errors = sorted(crd_validator(crd_path or find_crd()).iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]
        raise ValueError("TrainJob spec does not match the TrainJob CRD schema:\n" + "\n".join(lines))


# ----------------------------------------------------------------------------------------------
# Submit and wait
# ----------------------------------------------------------------------------------------------


def submit(api: Any, obj: dict[str, Any]) -> dict[str, Any]:
    """Create the TrainJob; if one with this name exists (a retried step), reuse it."""
    from kubernetes.client.exceptions import ApiException

    ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    try:
        return api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, obj)
    except ApiException as e:
        if e.status == 409:
            return api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        raise RuntimeError(f"creating TrainJob {ns}/{name} failed: HTTP {e.status} {e.reason}: {e.body}") from e


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def wait(api: Any, *, name: str, namespace: str, timeout_s: float, poll_s: float = 10.0,
         log: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Poll the TrainJob until Complete (returns it), Failed (raises) or the timeout (raises)."""
    start, last = clock(), None
    while True:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        conds = _conditions(obj)
        jobs = (obj.get("status") or {}).get("jobsStatus") or []
        state = (tuple(sorted((t, c["status"], c.get("reason", "")) for t, c in conds.items())),
                 tuple((j["name"], j.get("active"), j.get("succeeded"), j.get("failed")) for j in jobs))
        if state != last:
            active = [f"{t}={c['status']} ({c.get('reason', '')}: {c.get('message', '')})" for t, c in conds.items()]
            counts = [f"{j['name']}: active {j.get('active', 0)} ok {j.get('succeeded', 0)} failed {j.get('failed', 0)}"
                      for j in jobs]
            log(f"[trainjob {namespace}/{name} +{clock() - start:.0f}s] "
                + ("; ".join(active + counts) or "created, no status yet"))
            last = state
        if conds.get("Failed", {}).get("status") == "True":
            c = conds["Failed"]
            raise TrainJobFailed(f"TrainJob {namespace}/{name} failed: {c.get('reason', '?')}: {c.get('message', '')}. "
                                 f"Inspect with: kubectl -n {namespace} describe trainjob {name}; "
                                 f"kubectl -n {namespace} logs -l jobset.sigs.k8s.io/jobset-name={name}")
        if conds.get("Complete", {}).get("status") == "True":
            return obj
        if clock() - start >= timeout_s:
            raise TrainJobTimeout(f"TrainJob {namespace}/{name} not finished after {timeout_s:.0f}s "
                                  f"(platform.job_timeout_s); it was left running for inspection: "
                                  f"kubectl -n {namespace} describe trainjob {name}")
        sleep(poll_s)


# ----------------------------------------------------------------------------------------------
# The train step's routes
# ----------------------------------------------------------------------------------------------


def _summary_from(output_dir: Path) -> dict[str, Any]:
    """A trainer run in another process leaves metrics.jsonl (one line per optimizer step) and final/."""
    metrics = output_dir / "metrics.jsonl"
    steps = sum(1 for line in metrics.read_text().splitlines() if line.strip()) if metrics.exists() else 0
    final = output_dir / "final"
    if not final.is_dir():
        raise RuntimeError(f"training finished but {final} is missing: the trainer did not export a model")
    return {"final_model": str(final), "steps": steps}


def deepspeed_command(cfg: RLSDConfig, *, config_path: str, output_dir: str) -> list[str]:
    return ["deepspeed", f"--num_gpus={cfg.platform.gpus_per_node}", "--module", "rlsd", "train",
            "--config", config_path, "--output", output_dir]


def run_training(cfg: RLSDConfig, *, output_dir: str, api: Any = None,
                 runner: Callable[..., Any] = subprocess.run, workspace: str = WORKSPACE,
                 log: Callable[[str], None] = print, poll_s: float = 10.0,
                 sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Train ``cfg`` by the route its ``platform`` section asks for; returns {"final_model", "steps", ...}."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    p = cfg.platform
    if p.nodes == 1 and p.gpus_per_node <= 1:
        from rlsd.train import train

        return train(cfg, output_dir=str(out))

    if p.nodes == 1:  # several GPUs in this pod: the DeepSpeed launcher starts one rank per GPU
        config_path = out / "resolved_config.yaml"
        config_path.write_text(cfg.to_yaml(), encoding="utf-8")
        cmd = deepspeed_command(cfg, config_path=str(config_path), output_dir=str(out))
        log("launching: " + " ".join(cmd))
        proc = runner(cmd, env={**os.environ, **offline.SWITCHES}, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"DeepSpeed launcher exited with {proc.returncode}: {' '.join(cmd)}")
        return _summary_from(out)

    # several nodes: a TrainJob reading from and writing to the shared workspace volume
    name = job_name(cfg, salt=hashlib.sha256(Path(cfg.data.train_tasks).read_bytes()).hexdigest())
    shared = Path(workspace) / name
    tasks_dir = shared / "tasks"
    tasks_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cfg.data.train_tasks, tasks_dir / "train.jsonl")
    if Path(cfg.data.eval_tasks).is_file():
        shutil.copyfile(cfg.data.eval_tasks, tasks_dir / "eval.jsonl")
    job_cfg = cfg.replace(data=type(cfg.data)(**{**cfg.data.__dict__, "train_tasks": str(tasks_dir / "train.jsonl"),
                                                 "eval_tasks": str(tasks_dir / "eval.jsonl")}))
    (shared / "config.yaml").write_text(job_cfg.to_yaml(), encoding="utf-8")
    obj = trainjob_spec(cfg, name=name, config_path=str(shared / "config.yaml"), output_dir=str(shared / "output"))
    try:
        validate_trainjob(obj)
    except FileNotFoundError as e:
        log(f"warning: TrainJob spec not validated offline ({e})")
    if api is None:
        from kubernetes import client
        from kubernetes import config as kube_config

        kube_config.load_incluster_config() if os.environ.get("KUBERNETES_SERVICE_HOST") else kube_config.load_kube_config()
        api = client.CustomObjectsApi()
    submit(api, obj)
    log(f"submitted TrainJob {p.namespace}/{name}: {p.nodes} nodes x {p.gpus_per_node} GPUs, runtime {p.runtime}")
    wait(api, name=name, namespace=p.namespace, timeout_s=p.job_timeout_s, poll_s=poll_s, log=log, sleep=sleep)
    summary = _summary_from(shared / "output")
    shutil.copytree(summary["final_model"], out / "final", dirs_exist_ok=True)
    if (shared / "output" / "metrics.jsonl").exists():
        shutil.copyfile(shared / "output" / "metrics.jsonl", out / "metrics.jsonl")
    return {**summary, "final_model": str(out / "final"), "trainjob": f"{p.namespace}/{name}"}


def render(cfg: RLSDConfig) -> str:
    """The TrainJob YAML ``run_training`` would submit for ``cfg`` (for review or ``kubectl apply``)."""
    name = job_name(cfg)
    shared = f"{WORKSPACE}/{name}"
    obj = trainjob_spec(cfg, name=name, config_path=f"{shared}/config.yaml", output_dir=f"{shared}/output")
    return yaml.safe_dump(json.loads(json.dumps(obj)), sort_keys=False)

