"""The RLSD pipeline: ingest -> validate -> build tasks -> [enough new tickets?] train -> evaluate -> register.

Wiring only (components/ hold the steps, src/rlsd/ the behaviour). Kubernetes details are set
here: MinIO keys and the MLflow token as env from secrets, retries with back-off on the I/O
steps, caching off for ingest (it looks for new tickets; later steps are keyed on the snapshot id
it returns), GPUs + node selector + toleration + the shared workspace volume on train.
kfp.local ignores the Kubernetes settings and runs the same graph (rlsd.pipeline_local).

Compile (and commit the result; tests/pipelines checks it is current):
    python -m pipelines.rlsd_pipeline
"""

import json
from pathlib import Path

import yaml
from components.build_tasks import build_tasks
from components.evaluate import evaluate
from components.ingest import ingest
from components.register_and_promote import register_and_promote
from components.train import train
from components.validate import validate
from kfp import compiler, dsl, kubernetes

from rlsd.config import PlatformConfig, RegistryConfig

HERE = Path(__file__).parent
COMPILED = HERE / "rlsd_pipeline.yaml"
# One line (JSON is YAML): kfp writes parameter defaults into the compiled file's header comment,
# and a multi-line default would break that comment out of YAML.
DEFAULT_CONFIG = json.dumps(yaml.safe_load((HERE.parent / "configs" / "kubeflow.yaml").read_text(encoding="utf-8")))
STORE_SECRET = {"secret_name": PlatformConfig.store_secret,
                "secret_key_to_env": {"accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"}}
TRACKING_SECRET = {"secret_name": PlatformConfig.tracking_secret,
                   "secret_key_to_env": {"token": "MLFLOW_TRACKING_TOKEN"}, "optional": True}
RETRY = {"num_retries": 3, "backoff_duration": "30s", "backoff_factor": 2.0, "backoff_max_duration": "600s"}


@dsl.pipeline(name="rlsd-pipeline",
              description="RLSD post-training on the company's own manuals and tickets, inside the perimeter")
def rlsd_pipeline(
    config_yaml: str = DEFAULT_CONFIG,
    store_endpoint: str = "",
    store_bucket: str = "",
    snapshot: str = "latest",
    manuals: list = ["data/sample/manuals"],  # noqa: B006 - KFP pipeline defaults are literals
    tickets: list = ["data/sample/tickets"],  # noqa: B006
    algorithm: str = "rlsd",
    base_model: str = "",
    steps: int = 0,
    nodes: int = 1,
    gpus_per_node: int = 1,
    promotion_margin: float = RegistryConfig.margin,
    min_new_tickets: int = PlatformConfig.min_new_tickets,
):
    """Empty strings and steps=0 keep the recipe's values; snapshot="latest" trains on what ingest just wrote."""
    store = {"store_endpoint": store_endpoint, "store_bucket": store_bucket}

    ingest_task = ingest(config_yaml=config_yaml, manuals=manuals, tickets=tickets, **store)
    ingest_task.set_caching_options(enable_caching=False)
    validate_task = validate(config_yaml=config_yaml, ingested=ingest_task.outputs["snapshot"], snapshot=snapshot,
                             **store)
    tasks_task = build_tasks(config_yaml=config_yaml, ingested=ingest_task.outputs["snapshot"], snapshot=snapshot,
                             **store).after(validate_task)
    io_tasks = [ingest_task, validate_task, tasks_task]

    # ingest's single return value (named "Output") is the gate: kfp.local 2.17 resolves a
    # condition's task outputs only under that name, so the snapshot id travels as artifact metadata.
    with dsl.If(ingest_task.outputs["Output"] >= min_new_tickets, name="enough-new-tickets"):
        train_task = train(config_yaml=config_yaml, tasks=tasks_task.outputs["tasks"], base_model=base_model,
                           algorithm=algorithm, steps=steps, nodes=nodes, gpus_per_node=gpus_per_node)
        train_task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus_per_node)
        train_task.set_cpu_request("4").set_memory_request("32G")
        kubernetes.add_node_selector(train_task, label_key="nvidia.com/gpu.present", label_value="true")
        kubernetes.add_toleration(train_task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
        kubernetes.mount_pvc(train_task, pvc_name=PlatformConfig.shared_pvc, mount_path="/workspace")

        eval_task = evaluate(config_yaml=config_yaml, model=train_task.outputs["model"],
                             tasks=tasks_task.outputs["tasks"], base_model=base_model)
        register_task = register_and_promote(config_yaml=config_yaml, model=train_task.outputs["model"],
                                             evaluation=eval_task.outputs["evaluation"],
                                             promotion_margin=promotion_margin)
        io_tasks.append(register_task)

    for task in io_tasks:
        task.set_retry(**RETRY)
    for task in io_tasks + [train_task, eval_task]:
        kubernetes.use_secret_as_env(task, **STORE_SECRET)
    for task in [train_task, eval_task, register_task]:
        kubernetes.use_secret_as_env(task, **TRACKING_SECRET)


def compile_pipeline(path: str | Path = COMPILED) -> Path:
    compiler.Compiler().compile(rlsd_pipeline, str(path))
    return Path(path)


if __name__ == "__main__":
    print(f"compiled to {compile_pipeline()}")
