"""Turn a validated snapshot into train/eval task files (wraps rlsd.data.build.build_tasks)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components._image import RLSD_IMAGE


@dsl.component(base_image=RLSD_IMAGE, install_kfp_package=False)
def build_tasks(config_yaml: str, ingested: Input[Dataset], snapshot: str, store_endpoint: str, store_bucket: str,
                tasks: Output[Dataset], connections: Output[Artifact]):
    """Args: ingested: the ingest report; snapshot: an id, or "latest" for the one just ingested
    (the id, not the word, reaches the library, so the step is keyed on the snapshot).
    tasks: folder holding the train and eval JSONL files."""
    import os

    from rlsd.data.build import build_tasks as run_build
    from rlsd.perimeter import step

    params = {"store.endpoint": store_endpoint, "store.bucket": store_bucket}
    os.makedirs(tasks.path, exist_ok=True)
    chosen = ingested.metadata["snapshot_id"] if snapshot == "latest" else snapshot
    with step(config_yaml, params, log_path=connections.path) as cfg:
        result = run_build(cfg, snapshot=chosen, out_dir=tasks.path)
    tasks.metadata["train_file"] = os.path.relpath(result["train_path"], tasks.path)
    tasks.metadata["eval_file"] = os.path.relpath(result["eval_path"], tasks.path)
    tasks.metadata["counts"] = result["counts"]
