"""Distributed training on Kubernetes: the train step's three routes, and the Kubeflow Trainer TrainJob.

``run_training(cfg, output_dir=...)`` picks the route from ``cfg.platform``:

* ``nodes == 1, gpus_per_node <= 1``: ``rlsd.train.train`` in this process (CPU demo, one GPU).
* ``nodes == 1, gpus_per_node > 1``: the DeepSpeed launcher in this pod
  (``deepspeed --num_gpus N --module rlsd train --config <resolved.yaml> --output <dir>``).
* ``nodes > 1``: a Kubeflow Trainer v2 ``TrainJob`` (trainer.kubeflow.org/v1alpha1, release
  ``TRAINER_RELEASE``) on the project's own ``rlsd-torch-distributed`` TrainingRuntime
  (manifests/base/training-runtime.yaml; ``platform.runtime`` names another): torchrun on every node
  reads the ``PET_*`` variables the controller injects and starts ``python -m rlsd train``; DeepSpeed
  initialises inside torchrun. The job reads its config and tasks from, and writes its model to, the
  shared workspace volume (``platform.shared_pvc`` mounted at ``WORKSPACE``), which the launching
  step's pod mounts too; the final model is copied into the step's output artifact. ``wait()``
  streams condition changes, fails with the controller's reason on ``Failed``, and gives up after
  ``platform.job_timeout_s`` (the job is left for inspection). The launching step itself holds no
  GPU (pipelines/ gives the multi-node route its own GPU-less branch).

Before anything is written or created, ``preflight`` refuses a runtime that does not exist, fewer
than one node, and a GPU count that no node matching the GPU node selector can hold, each in one line.

Departures from the Trainer docs' examples: secrets reach the job as ``secretKeyRef`` env vars
(never in the spec's values); the offline switches are set in the job's env; ``runtimePatches`` give
every pod, whatever the runtime, the label the rank-to-rank NetworkPolicy selects, a service account
without token or permissions, the workspace and a memory-backed /dev/shm; and the spec is checked
against the release's CRD (manifests/crds/, unmodified) with unknown fields rejected before it is
submitted.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
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
TRAINER_RELEASE = "v2.3.0"  # the Kubeflow Trainer release whose CRDs manifests/crds holds, unmodified
RUNTIME_PLURALS = {"TrainingRuntime": "trainingruntimes", "ClusterTrainingRuntime": "clustertrainingruntimes"}
# What every TrainJob pod carries whatever runtime it runs on (set through runtimePatches): the label
# the rank-to-rank NetworkPolicy selects, and an identity without API token or permissions (the pods
# run model-written code).
TRAINER_LABELS = {"app.kubernetes.io/name": "rlsd-trainer", "app.kubernetes.io/part-of": "rlsd"}
TRAINER_SERVICE_ACCOUNT = "rlsd-trainer"
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
SHM_SIZE = "16Gi"
# CPU and memory of each node's container besides its GPUs (as in manifests/base/training-runtime.yaml).
NODE_REQUESTS = {"cpu": "4", "memory": "32Gi"}
NODE_LIMITS = {"memory": "64Gi"}


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
        _secret_env("MLFLOW_TRACKING_USERNAME", p.tracking_secret, "username"),
        _secret_env("MLFLOW_TRACKING_PASSWORD", p.tracking_secret, "password"),
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
        trainer["resourcesPerNode"] = {"limits": {GPU_RESOURCE: gpus, **NODE_LIMITS},
                                       "requests": {GPU_RESOURCE: gpus, **NODE_REQUESTS}}
    # Whatever runtime is named, its pods get the rank-to-rank label, the tokenless identity, the
    # shared workspace and a memory-backed /dev/shm (NCCL and DataLoader workers need more than 64 MiB).
    pod_patch: dict[str, Any] = {
        "serviceAccountName": TRAINER_SERVICE_ACCOUNT,
        "volumes": [{"name": "workspace", "persistentVolumeClaim": {"claimName": p.shared_pvc}},
                    {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}}],
        "containers": [{"name": "node", "volumeMounts": [{"name": "workspace", "mountPath": WORKSPACE},
                                                         {"name": "dshm", "mountPath": "/dev/shm"}]}],
    }
    if p.gpus_per_node > 0:
        pod_patch["nodeSelector"] = dict(GPU_NODE_SELECTOR)
        pod_patch["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    node_patch = {"name": "node", "template": {"spec": {"template": {"metadata": {"labels": dict(TRAINER_LABELS)},
                                                                     "spec": pod_patch}}}}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": p.namespace,
                     "labels": {"app.kubernetes.io/part-of": "rlsd", "rlsd/algorithm": cfg.algorithm.name}},
        "spec": {
            "runtimeRef": {"name": p.runtime, "kind": p.runtime_kind, "apiGroup": GROUP},
            "trainer": trainer,
            "runtimePatches": [{"manager": "rlsd.dev/train-step",
                                "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [node_patch]}}}}],
            "activeDeadlineSeconds": p.job_timeout_s,
        },
    }


# ----------------------------------------------------------------------------------------------
# Offline validation against the vendored CRDs (Kubeflow Trainer TRAINER_RELEASE, unmodified)
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


def _objectmeta_schema() -> dict[str, Any]:
    """The root ``metadata`` of a custom resource is ObjectMeta (the API server checks it itself, the
    CRD only says ``type: object``): its known fields, each with its JSON type, nothing else."""
    strings = {"type": "object", "additionalProperties": {"type": "string"}}
    props: dict[str, Any] = {k: {"type": "string"} for k in (
        "name", "namespace", "generateName", "uid", "resourceVersion", "selfLink", "creationTimestamp",
        "deletionTimestamp")}
    props.update(labels=strings, annotations=strings, generation={"type": "integer"},
                 deletionGracePeriodSeconds={"type": "integer"}, finalizers={"type": "array", "items": {"type": "string"}},
                 ownerReferences={"type": "array", "items": {"type": "object"}}, managedFields={"type": "array"})
    return {"type": "object", "properties": props, "additionalProperties": False}


def _structural(schema: Any) -> Any:
    """A CRD's structural schema as JSON Schema with the API server's strict-field semantics: an
    object rejects fields its schema does not name unless ``x-kubernetes-preserve-unknown-fields``
    (or ``additionalProperties``) lets them through; ``nullable`` admits null; int-or-string
    fields take either; ``x-kubernetes-embedded-resource`` objects keep apiVersion/kind/metadata."""
    if isinstance(schema, list):
        return [_structural(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: (v if k in ("default", "enum", "example") else _structural(v)) for k, v in schema.items()}
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if out.get("x-kubernetes-embedded-resource"):
        out.setdefault("properties", {})
        for key in ("apiVersion", "kind"):
            out["properties"].setdefault(key, {"type": "string"})
        out["properties"].setdefault("metadata", _objectmeta_schema())
    if out.get("type") == "object" and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if out.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


# The create-time CEL rules (x-kubernetes-validations) of the vendored CRDs, written out in Python.
# Transition rules (those naming oldSelf) only apply to updates and are skipped. A rule not listed
# here fails validation (fail closed): tests/manifests checks that every rule of the vendored CRDs
# is either listed or a transition rule, so a CRD update with new rules cannot pass unnoticed.
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://.+$")
CEL_RULES: dict[str, Callable[[Any], bool]] = {
    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')":
        lambda s: bool(_NAME_RE.match(((s.get("metadata") or {}).get("name")) or "")),
    "size(self.metadata.name) <= 63": lambda s: len((s.get("metadata") or {}).get("name") or "") <= 63,
    "self == '' || self.matches('^[A-Za-z][A-Za-z0-9+.-]*://.+$')": lambda s: s == "" or bool(_URI_RE.match(s)),
    "self in ['trainer.kubeflow.org/trainjob-controller', 'kueue.x-k8s.io/multikueue']":
        lambda s: s in ("trainer.kubeflow.org/trainjob-controller", "kueue.x-k8s.io/multikueue"),
    "has(self.lastUpdatedTime)": lambda s: "lastUpdatedTime" in s,
    "[has(self.torch), has(self.mpi), has(self.jax), has(self.xgboost),has(self.flux)].filter(x, x).size() <= 1":
        lambda s: sum(k in s for k in ("torch", "mpi", "jax", "xgboost", "flux")) <= 1,
    "self >= 1": lambda s: s >= 1,
    "!self.exists(c, c == 'node')": lambda s: "node" not in s,
    "!(has(self.startupPolicy) && self.startupPolicy.startupPolicyOrder == 'InOrder' && "
    "self.replicatedJobs.exists(x, has(x.dependsOn)))":
        lambda s: not ((s.get("startupPolicy") or {}).get("startupPolicyOrder") == "InOrder"
                       and any("dependsOn" in x for x in s.get("replicatedJobs") or [])),
    "self.templates.all(t, !has(t.metadata.namespace) || size(t.metadata.namespace) == 0)":
        lambda s: all(not ((t.get("metadata") or {}).get("namespace")) for t in s.get("templates") or []),
}


def _cel(validator: Any, rules: Any, instance: Any, schema: Any) -> Any:
    import jsonschema

    for r in rules:
        if "oldSelf" in r["rule"]:
            continue
        check = CEL_RULES.get(r["rule"])
        if check is None:
            yield jsonschema.ValidationError(f"CEL rule not implemented offline (fail closed): {r['rule']}")
        else:
            try:
                ok = check(instance)
            except (TypeError, AttributeError):  # a value of the wrong type, reported by its type check too
                ok = False
            if not ok:
                yield jsonschema.ValidationError(f"{r.get('message') or 'failed rule'} ({r['rule']})")


def _list_map_keys(validator: Any, keys: Any, instance: Any, schema: Any) -> Any:
    """listType=map: two items with the same key values are rejected (e.g. two env vars of one name)."""
    import jsonschema

    if isinstance(instance, list):
        seen = set()
        for item in instance:
            key = tuple((item or {}).get(k) for k in keys) if isinstance(item, dict) else None
            if key in seen:
                yield jsonschema.ValidationError(f"duplicate entry for key {dict(zip(keys, key))}")
            seen.add(key)


def crd_validator(crd_path: str | Path, version: str = VERSION) -> Any:
    """A validator for one version of a vendored CRD: strict structural schema, the root metadata
    as ObjectMeta, list-map keys unique, and the create-time CEL rules (see CEL_RULES)."""
    path = Path(crd_path).resolve()
    return _crd_validator(str(path), path.stat().st_mtime_ns, version)


@functools.lru_cache(maxsize=8)
def _crd_validator(crd_path: str, mtime_ns: int, version: str) -> Any:
    import jsonschema

    crd = yaml.safe_load(Path(crd_path).read_text(encoding="utf-8"))
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    if version not in versions:
        raise ValueError(f"{crd_path} has no version {version!r}; it has {sorted(versions)}")
    schema = _structural(versions[version]["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = _objectmeta_schema()
    schema["properties"]["apiVersion"] = {"const": f"{crd['spec']['group']}/{version}"}
    schema["properties"]["kind"] = {"const": crd["spec"]["names"]["kind"]}
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    cls = jsonschema.validators.extend(jsonschema.Draft7Validator, {
        "x-kubernetes-validations": _cel, "x-kubernetes-list-map-keys": _list_map_keys})
    return cls(schema)


def validate_custom_object(obj: dict[str, Any], crd_path: str | Path) -> None:
    """Raise ValueError listing every schema violation of ``obj`` against the CRD at ``crd_path``."""
    errors = sorted(crd_validator(crd_path).iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [f"  {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]
        raise ValueError(f"{obj.get('kind')} does not match the {TRAINER_RELEASE} CRD schema:\n" + "\n".join(lines))


def validate_trainjob(obj: dict[str, Any], crd_path: str | Path | None = None) -> None:
    """Raise ValueError listing every schema violation of ``obj`` (a TrainJob dict)."""
    validate_custom_object(obj, crd_path or find_crd())


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


class PreflightError(ValueError):
    """The request cannot run on this cluster; raised before anything is created (one line)."""


def preflight(cfg: RLSDConfig, api: Any, core_api: Any = None, log: Callable[[str], None] = print) -> None:
    """Refuse, before the workspace or the TrainJob is touched: a runtime that does not exist, fewer
    than one node, a GPU count per node that no node matching GPU_NODE_SELECTOR can hold, or fewer
    such nodes than platform.nodes. The node check needs list on nodes (the rlsd-preflight
    ClusterRole); without it the check is skipped with a warning."""
    from kubernetes.client.exceptions import ApiException

    p = cfg.platform
    if p.nodes < 1:
        raise PreflightError(f"platform.nodes must be >= 1, got {p.nodes}")
    if p.runtime_kind not in RUNTIME_PLURALS:
        raise PreflightError(f"platform.runtime_kind must be one of {sorted(RUNTIME_PLURALS)}, got {p.runtime_kind!r}")
    plural = RUNTIME_PLURALS[p.runtime_kind]
    try:
        if p.runtime_kind == "TrainingRuntime":
            api.get_namespaced_custom_object(GROUP, VERSION, p.namespace, plural, p.runtime)
        else:
            api.get_cluster_custom_object(GROUP, VERSION, plural, p.runtime)
    except ApiException as e:
        if e.status == 404:
            where = f" in namespace {p.namespace}" if p.runtime_kind == "TrainingRuntime" else ""
            raise PreflightError(f"platform.runtime: {p.runtime_kind} {p.runtime!r} does not exist{where} "
                                 f"(apply manifests/overlays/<env> or name an installed runtime)") from None
        raise
    if p.gpus_per_node <= 0 or core_api is None:
        return
    selector = ",".join(f"{k}={v}" for k, v in GPU_NODE_SELECTOR.items())
    try:
        nodes = core_api.list_node(label_selector=selector).items
    except ApiException as e:
        if e.status == 403:
            log(f"warning: cannot list nodes ({selector}); GPU capacity not checked (bind the rlsd-preflight ClusterRole)")
            return
        raise
    gpus = sorted((_quantity(((n.status.allocatable if n.status else None) or {}).get(GPU_RESOURCE, "0"))
                   for n in nodes), reverse=True)
    fitting = sum(g >= p.gpus_per_node for g in gpus)
    if fitting < p.nodes:
        most = gpus[0] if gpus else 0
        raise PreflightError(f"platform.gpus_per_node={p.gpus_per_node} x platform.nodes={p.nodes} does not fit: "
                             f"{fitting} of {len(gpus)} nodes matching {selector} can hold {p.gpus_per_node} "
                             f"{GPU_RESOURCE} (the largest has {most})")


def _quantity(value: Any) -> int:
    """A whole-number resource quantity such as nvidia.com/gpu ("8"); anything else counts as 0."""
    try:
        return int(str(value))
    except ValueError:
        return 0


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


def run_training(cfg: RLSDConfig, *, output_dir: str, api: Any = None, core_api: Any = None,
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
    api, core_api = _kube_apis(api, core_api)
    preflight(cfg, api, core_api, log=log)  # before anything is written or created
    name = job_name(cfg, salt=hashlib.sha256(Path(cfg.data.train_tasks).read_bytes()).hexdigest())
    shared = Path(workspace) / name
    obj = trainjob_spec(cfg, name=name, config_path=str(shared / "config.yaml"), output_dir=str(shared / "output"))
    try:
        validate_trainjob(obj)
    except FileNotFoundError as e:
        log(f"warning: TrainJob spec not validated offline ({e})")
    tasks_dir = shared / "tasks"
    tasks_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cfg.data.train_tasks, tasks_dir / "train.jsonl")
    if Path(cfg.data.eval_tasks).is_file():
        shutil.copyfile(cfg.data.eval_tasks, tasks_dir / "eval.jsonl")
    job_cfg = cfg.replace(data=type(cfg.data)(**{**cfg.data.__dict__, "train_tasks": str(tasks_dir / "train.jsonl"),
                                                 "eval_tasks": str(tasks_dir / "eval.jsonl")}))
    (shared / "config.yaml").write_text(job_cfg.to_yaml(), encoding="utf-8")
    submit(api, obj)
    log(f"submitted TrainJob {p.namespace}/{name}: {p.nodes} nodes x {p.gpus_per_node} GPUs, runtime {p.runtime}")
    wait(api, name=name, namespace=p.namespace, timeout_s=p.job_timeout_s, poll_s=poll_s, log=log, sleep=sleep)
    summary = _summary_from(shared / "output")
    shutil.copytree(summary["final_model"], out / "final", dirs_exist_ok=True)
    if (shared / "output" / "metrics.jsonl").exists():
        shutil.copyfile(shared / "output" / "metrics.jsonl", out / "metrics.jsonl")
    return {**summary, "final_model": str(out / "final"), "trainjob": f"{p.namespace}/{name}"}


def _kube_apis(api: Any = None, core_api: Any = None) -> tuple[Any, Any]:
    """The given clients, or CustomObjectsApi / CoreV1Api from the pod's token (else the kube config)."""
    if api is None:
        from kubernetes import client
        from kubernetes import config as kube_config

        kube_config.load_incluster_config() if os.environ.get("KUBERNETES_SERVICE_HOST") else kube_config.load_kube_config()
        api, core_api = client.CustomObjectsApi(), client.CoreV1Api()
    return api, core_api


def _run_dir_name(key: str) -> str:
    """A folder name for the run key (:func:`checkpoint_key`): letters, digits, '.', '_' and '-' only."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", key).strip(".-") or "run"


def checkpoint_key(*, config_yaml: str, tasks: str, base_model: str, algorithm: str, steps: int, nodes: int,
                   gpus_per_node: int) -> str:
    """The checkpoint folder name of a pipeline train step, derived from the step's own inputs (the recipe text,
    the tasks artifact's identity, the pinned base model and the promoted parameters), the same inputs KFP keys
    its cache on: a retried or restarted pod of the same task gets the same key (and resumes), a changed
    snapshot, recipe, parameter or base model gets another. ``tasks``: the tasks artifact's URI (a cached
    build-tasks keeps it; its snapshot id lives in it)."""
    inputs = {"config_yaml": config_yaml, "tasks": tasks, "base_model": base_model, "algorithm": algorithm,
              "steps": int(steps), "nodes": int(nodes), "gpus_per_node": int(gpus_per_node)}
    return "train-" + hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]


def train_step(cfg: RLSDConfig, *, model_dir: str, run_key: str = "", scratch: str | None = None,
               **route: Any) -> dict[str, Any]:
    """The train step of the pipeline: fetch the base model, train by :func:`run_training`, keep only the final
    weights in ``model_dir``, push them to the store.

    1. The base (``model.path``, or the current @champion with ``model.continue_from: champion``) is fetched by
       rlsd.model_refs into the step's scratch folder (hash-checked; a local path is used in place). For a
       multi-node run the scratch is on the shared workspace, which the TrainJob's pods mount.
    2. Checkpoints go to ``train.checkpoint_dir``/<run_key> when set (durable: the workspace PVC), so a restarted
       pod of the same task (same ``run_key``: the pipeline passes :func:`checkpoint_key` of the step's inputs; a
       fresh empty working directory) resumes from the newest complete checkpoint; otherwise under the scratch
       run folder (lost with the pod, as before). No ``run_key``: a random one (nothing to resume).
    3. ``model_dir`` (the KFP Model artifact) receives the exported model only: weights, tokenizer and config,
       no DeepSpeed checkpoint or optimizer state; evaluate and register download just that.
    4. With ``train.push_model`` the final model is pushed to the store as folder ``registry.model_name``; with
       ``train.checkpoint_store`` every checkpoint is copied to the store too, and a pod whose checkpoint folder
       is empty resumes from the newest copy.
    Returns run_training's summary with final_model = model_dir, base_model (what was fetched: name, version,
    uri, sha256_verified) and store_ref (the pushed folder, or "")."""
    import tempfile
    import uuid

    from rlsd.model_refs import push_model, resolve_base, restore_checkpoint

    if cfg.platform.nodes > 1:  # refuse what the cluster cannot run before the base model lands on the workspace
        api, core_api = _kube_apis(route.get("api"), route.get("core_api"))
        preflight(cfg, api, core_api, log=route.get("log", print))
        route = {**route, "api": api, "core_api": core_api}
    key = _run_dir_name(run_key or uuid.uuid4().hex)  # no key: nothing to resume from another run
    if scratch is None and cfg.platform.nodes > 1:
        scratch = str(Path(route.get("workspace", WORKSPACE)) / f"scratch-{key}")
    own = scratch is None
    root = Path(tempfile.mkdtemp(prefix="rlsd-train-") if own else scratch)
    try:
        if (root / "base-model").exists():  # a retried step: fetch again rather than trust what is there
            shutil.rmtree(root / "base-model")
        run_cfg, base = resolve_base(cfg, root)
        if cfg.train.checkpoint_dir or cfg.train.checkpoint_store:  # one folder (and store copy) per run
            ckpt = Path(cfg.train.checkpoint_dir or root / "checkpoints") / key
            run_cfg = run_cfg.replace(train=type(cfg.train)(**{**run_cfg.train.__dict__, "checkpoint_dir": str(ckpt)}))
        if cfg.train.checkpoint_store:  # a pod without the volume's checkpoints resumes from the store's copy
            restore_checkpoint(run_cfg, run_cfg.train.checkpoint_dir)
        summary = run_training(run_cfg, output_dir=str(root / "run"), **route)
        out = Path(model_dir)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(summary["final_model"], out)
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)
    pushed = push_model(cfg, out, cfg.registry.model_name)["ref"] if cfg.train.push_model else ""
    base = {k: base[k] for k in ("kind", "name", "version", "uri", "sha256_verified")}
    _tag_training_run(cfg, summary.get("run_id"), base)
    return {**summary, "final_model": str(out), "base_model": base, "store_ref": pushed}


def _tag_training_run(cfg: RLSDConfig, run_id: str | None, base: dict[str, Any]) -> None:
    """The training run's tags say which base it started from (never fatal: the model metadata has it too)."""
    if not run_id or not cfg.tracking.enabled:
        return
    try:
        from rlsd.registry import _client

        client = _client(cfg)
        for k, v in base.items():
            client.set_tag(run_id, f"rlsd.base_model.{k}", "" if v is None else str(v))
    except Exception as e:  # noqa: BLE001 - tracking must not fail a finished training
        print(f"warning: could not tag training run {run_id} with its base model ({type(e).__name__}: {e})")


def render(cfg: RLSDConfig) -> str:
    """The TrainJob YAML ``run_training`` would submit for ``cfg`` (for review or ``kubectl apply``)."""
    name = job_name(cfg)
    shared = f"{WORKSPACE}/{name}"
    obj = trainjob_spec(cfg, name=name, config_path=f"{shared}/config.yaml", output_dir=f"{shared}/output")
    return yaml.safe_dump(json.loads(json.dumps(obj)), sort_keys=False)

