"""Ingest manuals and resolved tickets into a new privileged-context snapshot (wraps rlsd.data.ingest)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Output

from components._image import RLSD_IMAGE


@dsl.component(base_image=RLSD_IMAGE, install_kfp_package=False)
def ingest(config_yaml: str, manuals: list, tickets: list, store_endpoint: str, store_bucket: str,
           snapshot: Output[Dataset], connections: Output[Artifact]) -> int:
    """Returns the number of new verified tickets (the retraining gate); the report is ``snapshot``.

    Args:
        config_yaml: the RLSD recipe text. manuals, tickets: source files or folders.
        store_endpoint, store_bucket: override the recipe's store ("" keeps it).
    """
    import json

    from rlsd.data.ingest import ingest as run_ingest
    from rlsd.perimeter import step

    params = {"store.endpoint": store_endpoint, "store.bucket": store_bucket}
    with step(config_yaml, params, log_path=connections.path) as cfg:
        report = run_ingest(cfg, manuals=list(manuals), tickets=list(tickets))
    with open(snapshot.path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, default=str)
    snapshot.metadata["snapshot_id"] = report["snapshot_id"]
    return int(report["new_verified_tickets"])
