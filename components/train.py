"""Train the policy with grpo | rlsd | opsd | grpo_opsd (wraps rlsd.cluster.train_step).

train_step fetches the base model (a local path, store://models/<name>[@id] or models:/<name>@alias, or the
current @champion with model.continue_from: champion) into the step's scratch folder, trains by the route the
config picks (one process, the DeepSpeed launcher in this pod, or a Kubeflow Trainer TrainJob), keeps
checkpoints in train.checkpoint_dir/<key> and writes only the final weights into ``model``. In the pipeline
base_model is the reference the resolve-models step pinned, and the checkpoint key is derived from this step's
inputs (rlsd.cluster.checkpoint_key): the step's cache key and its checkpoint key change together, and a
retried or restarted pod of the same task resumes.
"""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components._image import RLSD_TRAIN_IMAGE


@dsl.component(base_image=RLSD_TRAIN_IMAGE, install_kfp_package=False)
def train(config_yaml: str, tasks: Input[Dataset], base_model: str, algorithm: str, steps: int,
          nodes: int, gpus_per_node: int, model: Output[Model], metrics: Output[Metrics],
          connections: Output[Artifact]):
    """Args: base_model: a model reference, pinned (the pipeline passes resolve-models' output; it is used as
    it is, model.continue_from: base); "" keeps the recipe's model.path and continue_from; steps: 0 keeps the
    recipe's."""
    import os

    from rlsd.cluster import checkpoint_key, train_step
    from rlsd.perimeter import step

    params = {"model.path": base_model, "model.continue_from": "base" if base_model else None,
              "algorithm.name": algorithm, "train.steps": steps or None,
              "platform.nodes": nodes, "platform.gpus_per_node": gpus_per_node,
              "data.train_tasks": os.path.join(tasks.path, tasks.metadata.get("train_file", "train.jsonl")),
              "data.eval_tasks": os.path.join(tasks.path, tasks.metadata.get("eval_file", "eval.jsonl"))}
    key = checkpoint_key(config_yaml=config_yaml, tasks=tasks.uri, base_model=base_model, algorithm=algorithm,
                         steps=steps, nodes=nodes, gpus_per_node=gpus_per_node)
    with step(config_yaml, params, log_path=connections.path) as cfg:
        summary = train_step(cfg, model_dir=model.path, run_key=key)
    model.metadata["final_model"] = os.path.relpath(summary["final_model"], model.path)
    model.metadata["algorithm"] = cfg.algorithm.name
    model.metadata["mlflow_run_id"] = summary.get("run_id") or ""  # lineage: register tags the version with it
    model.metadata["base_model"] = summary.get("base_model") or {}
    model.metadata["store_ref"] = summary.get("store_ref") or ""  # register records it as the version's source
    metrics.log_metric("steps", summary["steps"])
