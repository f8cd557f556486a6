"""Train the policy with grpo | rlsd | opsd | grpo_opsd (wraps rlsd.cluster.run_training).

run_training picks the route from the config: one process, the DeepSpeed launcher in this pod
(platform.gpus_per_node > 1), or a Kubeflow Trainer TrainJob (platform.nodes > 1).
"""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components._image import RLSD_TRAIN_IMAGE


@dsl.component(base_image=RLSD_TRAIN_IMAGE, install_kfp_package=False)
def train(config_yaml: str, tasks: Input[Dataset], base_model: str, algorithm: str, steps: int,
          nodes: int, gpus_per_node: int, model: Output[Model], metrics: Output[Metrics],
          connections: Output[Artifact]):
    """Args: base_model: local model path ("" keeps the recipe's); steps: 0 keeps the recipe's."""
    import os

    from rlsd.cluster import run_training
    from rlsd.perimeter import step

    params = {"model.path": base_model, "algorithm.name": algorithm, "train.steps": steps or None,
              "platform.nodes": nodes, "platform.gpus_per_node": gpus_per_node,
              "data.train_tasks": os.path.join(tasks.path, tasks.metadata.get("train_file", "train.jsonl")),
              "data.eval_tasks": os.path.join(tasks.path, tasks.metadata.get("eval_file", "eval.jsonl"))}
    with step(config_yaml, params, log_path=connections.path) as cfg:
        summary = run_training(cfg, output_dir=model.path)
    model.metadata["final_model"] = os.path.relpath(summary["final_model"], model.path)
    model.metadata["algorithm"] = cfg.algorithm.name
    model.metadata["mlflow_run_id"] = summary.get("run_id") or ""  # lineage: register tags the version with it
    metrics.log_metric("steps", summary["steps"])
