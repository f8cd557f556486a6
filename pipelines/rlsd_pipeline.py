"""The RLSD pipeline: ingest -> validate -> build tasks -> [enough new tickets?] resolve models -> train ->
evaluate -> register.

Wiring only (components/ hold the steps, src/rlsd/ the behaviour). Kubernetes details are set
here: MinIO keys and MLflow's basic-auth user as env from secrets, retries with back-off on the I/O
steps, caching off for ingest (it looks for new tickets; later steps are keyed on the snapshot id
it returns), resolve-models (it reads the registry and the store now) and register (side effects).

Inputs: ``manuals`` / ``tickets`` name store prefixes (``s3://<bucket>/<prefix>/``); left empty (the default)
ingest reads the configured inbox (store.inbox: s3://<store.bucket>/inbox/tickets/ and .../manuals/) and takes
only the files no snapshot has recorded yet (by SHA-256), so a scheduled run with no parameters ingests what is
new and never deletes from the inbox. Local paths work too, for kfp.local (rlsd.pipeline_local passes the sample).

What the KFP cache reuses (KFP keys a step on its input parameters and the ids of its input artifacts):
* ingest: never cached (it looks for new files).
* validate and build-tasks: keyed on the recipe, the store parameters, ``snapshot`` and the snapshot id ingest
  returns as a string parameter (not on ingest's artifact, whose id is new every run): a rerun on an unchanged
  snapshot reuses both, and build-tasks' cached ``tasks`` artifact keeps its id.
* resolve-models: never cached. It pins the mutable model references once per run: the base train starts from
  (``models:/<name>/<version>`` of the current champion with ``model.continue_from: champion`` when there is
  one, else the recipe's / ``base_model``'s reference pinned: ``store://models/<name>@<id>``,
  ``models:/<name>/<version>`` or a local path) and the champion evaluate compares with (``models:/<name>/<version>``,
  "" when there is none).
* train: keyed on the recipe, the tasks artifact (so the snapshot), the pinned base and algorithm / steps /
  nodes / gpus_per_node; no run id. Reused when all of these are unchanged; a moved @champion or a new import
  is a new pinned reference, so a new key, never a stale hit. Its checkpoint folder
  (train.checkpoint_dir/<key>, rlsd.cluster.checkpoint_key) is derived from the same inputs, so a retried or
  restarted pod of the same task resumes from its newest complete checkpoint.
* evaluate: keyed on the recipe, train's Model artifact, the tasks artifact, the pinned base and the pinned
  champion: reused exactly when train was and the champion is the same version. It compares with that version,
  not with whatever is @champion when it runs; the promotion gate (rlsd.registry) refuses an evaluation whose
  baseline is no longer the champion at promotion time.
* register-and-promote: never cached (it writes to the registry; a retry is idempotent per training run).
A rerun on an unchanged snapshot (nothing new in the inbox) costs ingest plus two cache hits, and the gate keeps
resolve-models, train and the rest from starting. Run with the gate open on unchanged inputs and models (e.g.
min_new_tickets=0), it costs resolve-models plus cache hits for train and evaluate, and register again
(which finds the version already registered for that training run).

Train fetches its pinned base model hash-checked into its own scratch folder, keeps checkpoints in
train.checkpoint_dir/<key> on the workspace PVC (a restarted pod resumes there), and outputs only the
final weights (also pushed to the store with train.push_model). Evaluate compares the candidate with the pinned
champion (the base model before the first promotion); register tags the version with the KFP run id (the run's uuid placeholder)
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
from components.resolve_models import resolve_models
from components.train import train
from components.validate import validate
from kfp import compiler, dsl, kubernetes

from rlsd.config import PlatformConfig, RegistryConfig, load_config

HERE = Path(__file__).parent
COMPILED = HERE / "rlsd_pipeline.yaml"
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
_RECIPE = yaml.safe_load((HERE.parent / "configs" / "kubeflow.yaml").read_text(encoding="utf-8"))
# The images overridden at compile time go into the default recipe too: the multi-node route's TrainJob takes
# its image from the run's platform.train_image, and would otherwise pull the one the recipe file names.
for _key, _image in (("image", IMAGE), ("train_image", TRAIN_IMAGE)):
    if _image != getattr(_PLATFORM, _key):
        _RECIPE.setdefault("platform", {})[_key] = _image
# One line (JSON is YAML): kfp writes parameter defaults into the compiled file's header comment,
# and a multi-line default would break that comment out of YAML.
DEFAULT_CONFIG = json.dumps(_RECIPE)
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
        # the mutable references (a newest import, @champion, model.continue_from: champion) pinned once, never
        # cached: train and evaluate take the pinned references as parameters, so their cache keys see the models
        resolve_task = resolve_models(config_yaml=config_yaml, base_model=base_model)
        resolve_task.set_caching_options(enable_caching=False)
        io_tasks.append(resolve_task)
        pinned_base, champion = resolve_task.outputs["base_model"], resolve_task.outputs["champion"]
        # only parameters and upstream artifacts, no run id: a rerun with the same inputs hits the cache, and
        # train's checkpoint key (rlsd.cluster.checkpoint_key) is derived from the same inputs
        inputs = {"config_yaml": config_yaml, "tasks": tasks_task.outputs["tasks"], "base_model": pinned_base,
                  "algorithm": algorithm, "steps": steps, "nodes": nodes, "gpus_per_node": gpus_per_node}
        routes = []
        # each route is its own branch with its own evaluate and register (names: train, evaluate,
        # register-and-promote on the single-pod route, which is the one kfp.local runs)
        for gpu, branch in ((True, lambda: dsl.If(nodes == 1, name="single-pod")),
                            (False, lambda: dsl.Else(name="multi-node"))):
            with branch():
                train_task = _train(gpu, **inputs)
                eval_task = evaluate(config_yaml=config_yaml, model=train_task.outputs["model"],
                                     tasks=tasks_task.outputs["tasks"], base_model=pinned_base, champion=champion)
                register_task = register_and_promote(config_yaml=config_yaml, model=train_task.outputs["model"],
                                                     evaluation=eval_task.outputs["evaluation"],
                                                     promotion_margin=promotion_margin,
                                                     kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
                register_task.set_caching_options(enable_caching=False)  # side effects; idempotent per training run
                routes.append((train_task, eval_task, register_task))

    kubernetes.use_secret_as_env(resolve_task, **TRACKING_SECRET)
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
