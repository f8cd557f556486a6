"""Turn a validated snapshot into train/eval task files (wraps rlsd.data.build.build_tasks)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Output

from components._image import RLSD_IMAGE


@dsl.component(base_image=RLSD_IMAGE, install_kfp_package=False)
def build_tasks(config_yaml: str, snapshot_id: str, snapshot: str, store_endpoint: str, store_bucket: str,
                tasks: Output[Dataset], connections: Output[Artifact]):
    """Args: snapshot_id: the id ingest left as latest (a parameter, not ingest's artifact, so a rerun on an
    unchanged snapshot hits the KFP cache, and so do train and evaluate fed by these tasks);
    snapshot: an id, or "latest" for ``snapshot_id``. tasks: folder holding the train and eval JSONL files."""
    import os

    from rlsd.data.build import build_tasks as run_build
    from rlsd.model_refs import graders_base
    from rlsd.perimeter import step
    from rlsd.verifiers.graders import needs_base

    chosen = snapshot_id if snapshot == "latest" else snapshot
    if not chosen:
        raise ValueError("no snapshot to build tasks from: the store holds none and ingest found nothing new")
    params = {"store.endpoint": store_endpoint, "store.bucket": store_bucket}
    os.makedirs(tasks.path, exist_ok=True)
    with step(config_yaml, params, log_path=connections.path) as cfg:
        with graders_base(cfg, needs_base(cfg.ingest.text_grader)):  # a `model: base` grader is checked here too
            result = run_build(cfg, snapshot=chosen, out_dir=tasks.path)
    tasks.metadata["train_file"] = os.path.relpath(result["train_path"], tasks.path)
    tasks.metadata["eval_file"] = os.path.relpath(result["eval_path"], tasks.path)
    tasks.metadata["counts"] = result["counts"]
