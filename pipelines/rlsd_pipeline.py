"""The RLSD pipeline: ingest -> validate -> build tasks -> [enough new tickets?] train -> evaluate -> register.

Wiring only (components/ hold the steps, src/rlsd/ the behaviour). Kubernetes details are set
here: MinIO keys and MLflow's basic-auth user as env from secrets, retries with back-off on the I/O
steps, caching off for ingest (it looks for new tickets; later steps are keyed on the snapshot id
it returns).

Inputs: ``manuals`` / ``tickets`` name store prefixes (``s3://<bucket>/<prefix>/``); left empty (the default)
ingest reads the configured inbox (store.inbox: s3://<store.bucket>/inbox/tickets/ and .../manuals/) and takes
only the files no snapshot has recorded yet (by SHA-256), so a scheduled run with no parameters ingests what is
new and never deletes from the inbox. Local paths work too, for kfp.local (rlsd.pipeline_local passes the sample).

What the KFP cache reuses (KFP keys a step on its input parameters and the ids of its input artifacts):
* ingest: never cached (it looks for new files).
* validate and build-tasks: keyed on the recipe, the store parameters, ``snapshot`` and the snapshot id ingest
  returns as a string parameter (not on ingest's artifact, whose id is new every run): a rerun on an unchanged
  snapshot reuses both, and build-tasks' cached ``tasks`` artifact keeps its id.
* train: not reused across runs: its kfp_run_id parameter (the run's own id, which names its checkpoint folder so a
  restarted pod resumes) is new every run, and its base may be the registry's @champion, which a cache keyed on
  inputs cannot see change. Evaluate, fed train's new Model artifact, runs again too. Within one run a retried
  or restarted train pod resumes from its checkpoints instead.
* register-and-promote: never reused (its kfp_run_id parameter is the run's own id).
A rerun on an unchanged snapshot (nothing new in the inbox) therefore costs ingest plus two cache hits, and the
gate keeps train and the rest from starting.

Train fetches its base model (the recipe's model.path: a store://models/ import, or the @champion with
model.continue_from: champion) hash-checked into its own scratch folder, keeps checkpoints in
train.checkpoint_dir/<run id> on the workspace PVC (a restarted pod resumes there), and outputs only the
final weights (also pushed to the store with train.push_model). Evaluate compares the candidate with the registry's current @champion (the base model
before the first promotion); register tags the version with the KFP run id (the run's uuid placeholder)
and the other lineage ids. Training has two routes, each its own branch:
* single pod (nodes == 1): train requests the GPUs, with node selector, toleration, CPU/memory
  requests and limits, a memory-backed /dev/shm, the shared workspace and a timeout;
* multi-node (nodes > 1): train only launches and follows the Kubeflow Trainer TrainJob, so it
  requests no GPU (holding GPUs while waiting deadlocks a small cluster); same timeout.
The component images are configuration: platform.image / platform.train_image of
configs/kubeflow.yaml (or $RLSD_IMAGE / $RLSD_TRAIN_IMAGE at compile time), applied with
set_container_image. kfp.local ignores the Kubernetes settings and runs the same graph
(rlsd.pipeline_local).

Compile (and commit the result; tests/pipelines checks it is current):
    python -m pipelines.rlsd_pipeline
"""

import json
import os
from pathlib import Path

import yaml
from components.build_tasks import build_tasks
from components.evaluate import evaluate
from components.ingest import ingest
from components.register_and_promote import register_and_promote
from components.train import train
from components.validate import validate
from kfp import compiler, dsl, kubernetes

from rlsd.config import PlatformConfig, RegistryConfig, load_config

HERE = Path(__file__).parent
COMPILED = HERE / "rlsd_pipeline.yaml"
# One line (JSON is YAML): kfp writes parameter defaults into the compiled file's header comment,
# and a multi-line default would break that comment out of YAML.
DEFAULT_CONFIG = json.dumps(yaml.safe_load((HERE.parent / "configs" / "kubeflow.yaml").read_text(encoding="utf-8")))
STORE_SECRET = {"secret_name": PlatformConfig.store_secret,
                "secret_key_to_env": {"accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"}}
TRACKING_SECRET = {"secret_name": PlatformConfig.tracking_secret,
                   "secret_key_to_env": {"username": "MLFLOW_TRACKING_USERNAME", "password": "MLFLOW_TRACKING_PASSWORD"}}
# The egress allow-list every step runs under (rlsd.perimeter): set by the operator in the ConfigMap of
# manifests/base/egress-allow.yaml, never by run parameters.
EGRESS_ALLOW = {"config_map_name": "rlsd-egress-allow", "config_map_key_to_env": {"allow": "RLSD_EGRESS_ALLOW"}}
RETRY = {"num_retries": 3, "backoff_duration": "30s", "backoff_factor": 2.0, "backoff_max_duration": "600s"}
_PLATFORM = load_config(HERE.parent / "configs" / "kubeflow.yaml").platform
IMAGE = os.environ.get("RLSD_IMAGE") or _PLATFORM.image
TRAIN_IMAGE = os.environ.get("RLSD_TRAIN_IMAGE") or _PLATFORM.train_image
TRAIN_TIMEOUT_S = _PLATFORM.job_timeout_s + 3600  # the TrainJob's own deadline plus copying the model back
SHM = {"volume_name": "dshm", "mount_path": "/dev/shm", "medium": "Memory", "size_limit": "16Gi"}


def _train(gpu: bool, **inputs):
    """One training route: the single-pod route holds the GPUs, the multi-node route launches a TrainJob."""
    task = train(**inputs).set_container_image(TRAIN_IMAGE)
    if gpu:
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(inputs["gpus_per_node"])
        task.set_cpu_request("4").set_memory_request("32G").set_cpu_limit("16").set_memory_limit("64G")
        kubernetes.add_node_selector(task, label_key="nvidia.com/gpu.present", label_value="true")
        kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
        kubernetes.empty_dir_mount(task, **SHM)
    else:
        task.set_cpu_request("500m").set_memory_request("1G").set_cpu_limit("2").set_memory_limit("4G")
    kubernetes.mount_pvc(task, pvc_name=PlatformConfig.shared_pvc, mount_path="/workspace")
    kubernetes.set_timeout(task, TRAIN_TIMEOUT_S)
    return task


@dsl.pipeline(name="rlsd-pipeline",
              description="RLSD post-training on the company's own manuals and tickets, inside the perimeter")
def rlsd_pipeline(
    config_yaml: str = DEFAULT_CONFIG,
    store_endpoint: str = "",
    store_bucket: str = "",
    snapshot: str = "latest",
    manuals: list = [],  # noqa: B006 - KFP pipeline defaults are literals; [] (with tickets []) = the inbox
    tickets: list = [],  # noqa: B006
    algorithm: str = "rlsd",
    base_model: str = "",
    steps: int = 0,
    nodes: int = 1,
    gpus_per_node: int = 1,
    promotion_margin: float = RegistryConfig.margin,
    min_new_tickets: int = PlatformConfig.min_new_tickets,
):
    """Empty strings and steps=0 keep the recipe's values; snapshot="latest" trains on what ingest just wrote;
    manuals and tickets both empty read what is new in the configured inbox."""
    store = {"store_endpoint": store_endpoint, "store_bucket": store_bucket}

    ingest_task = ingest(config_yaml=config_yaml, manuals=manuals, tickets=tickets, **store)
    ingest_task.set_caching_options(enable_caching=False)
    # the snapshot id as a string parameter: the cache key of validate / build-tasks (and through the tasks
    # artifact, of train / evaluate) stays the same while the snapshot does
    snapshot_id = ingest_task.outputs["snapshot_id"]
    validate_task = validate(config_yaml=config_yaml, snapshot_id=snapshot_id, snapshot=snapshot, **store)
    tasks_task = build_tasks(config_yaml=config_yaml, snapshot_id=snapshot_id, snapshot=snapshot,
                             **store).after(validate_task)
    io_tasks = [ingest_task, validate_task, tasks_task]

    # ingest's return value (named "Output") is the gate: kfp.local 2.17 resolves a condition's task
    # outputs only under that name, so the snapshot id is a separate output parameter (OutputPath).
    with dsl.If(ingest_task.outputs["Output"] >= min_new_tickets, name="enough-new-tickets"):
        inputs = {"config_yaml": config_yaml, "tasks": tasks_task.outputs["tasks"], "base_model": base_model,
                  "algorithm": algorithm, "steps": steps, "nodes": nodes, "gpus_per_node": gpus_per_node,
                  "kfp_run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER}
        routes = []
        # each route is its own branch with its own evaluate and register (names: train, evaluate,
        # register-and-promote on the single-pod route, which is the one kfp.local runs)
        for gpu, branch in ((True, lambda: dsl.If(nodes == 1, name="single-pod")),
                            (False, lambda: dsl.Else(name="multi-node"))):
            with branch():
                train_task = _train(gpu, **inputs)
                eval_task = evaluate(config_yaml=config_yaml, model=train_task.outputs["model"],
                                     tasks=tasks_task.outputs["tasks"], base_model=base_model)
                register_task = register_and_promote(config_yaml=config_yaml, model=train_task.outputs["model"],
                                                     evaluation=eval_task.outputs["evaluation"],
                                                     promotion_margin=promotion_margin,
                                                     kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
                routes.append((train_task, eval_task, register_task))

    for train_task, eval_task, register_task in routes:
        io_tasks.append(register_task)
        for task in [train_task, eval_task, register_task]:
            kubernetes.use_secret_as_env(task, **TRACKING_SECRET)
    for task in io_tasks:
        task.set_retry(**RETRY)
    for task in io_tasks + [t for route in routes for t in route[:2]]:
        kubernetes.use_secret_as_env(task, **STORE_SECRET)
        kubernetes.use_config_map_as_env(task, **EGRESS_ALLOW)
        if task not in [route[0] for route in routes]:
            task.set_container_image(IMAGE)


def compile_pipeline(path: str | Path = COMPILED) -> Path:
    compiler.Compiler().compile(rlsd_pipeline, str(path))
    return Path(path)


if __name__ == "__main__":
    print(f"compiled to {compile_pipeline()}")
