"""Train the policy with grpo | rlsd | opsd | grpo_opsd (wraps rlsd.cluster.train_step).

train_step fetches the base model (a local path, store://models/<name>[@id] or models:/<name>@alias, or the
current @champion with model.continue_from: champion) into the step's scratch folder, trains by the route the
config picks (one process, the DeepSpeed launcher in this pod, or a Kubeflow Trainer TrainJob), keeps
checkpoints in train.checkpoint_dir/<KFP run id> and writes only the final weights into ``model``.
"""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components._image import RLSD_TRAIN_IMAGE


@dsl.component(base_image=RLSD_TRAIN_IMAGE, install_kfp_package=False)
def train(config_yaml: str, tasks: Input[Dataset], base_model: str, algorithm: str, steps: int,
          nodes: int, gpus_per_node: int, model: Output[Model], metrics: Output[Metrics],
          connections: Output[Artifact], kfp_run_id: str = ""):
    """Args: base_model: a model reference ("" keeps the recipe's model.path); steps: 0 keeps the recipe's;
    kfp_run_id: the run's id (dsl.PIPELINE_JOB_ID_PLACEHOLDER): a restarted pod resumes its run's checkpoints."""
    import os

    from rlsd.cluster import train_step
    from rlsd.perimeter import step

    params = {"model.path": base_model, "algorithm.name": algorithm, "train.steps": steps or None,
              "platform.nodes": nodes, "platform.gpus_per_node": gpus_per_node,
              "data.train_tasks": os.path.join(tasks.path, tasks.metadata.get("train_file", "train.jsonl")),
              "data.eval_tasks": os.path.join(tasks.path, tasks.metadata.get("eval_file", "eval.jsonl"))}
    with step(config_yaml, params, log_path=connections.path) as cfg:
        summary = train_step(cfg, model_dir=model.path, run_key=kfp_run_id)
    model.metadata["final_model"] = os.path.relpath(summary["final_model"], model.path)
    model.metadata["algorithm"] = cfg.algorithm.name
    model.metadata["mlflow_run_id"] = summary.get("run_id") or ""  # lineage: register tags the version with it
    model.metadata["base_model"] = summary.get("base_model") or {}
    model.metadata["store_ref"] = summary.get("store_ref") or ""  # register records it as the version's source
    metrics.log_metric("steps", summary["steps"])
