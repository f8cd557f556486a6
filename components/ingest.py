"""Ingest manuals and resolved tickets into a new privileged-context snapshot (wraps rlsd.data.ingest)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Output, OutputPath

from components._image import RLSD_IMAGE


@dsl.component(base_image=RLSD_IMAGE, install_kfp_package=False)
def ingest(config_yaml: str, manuals: list, tickets: list, store_endpoint: str, store_bucket: str,
           snapshot: Output[Dataset], connections: Output[Artifact], snapshot_id: OutputPath(str)) -> int:
    """Returns the verified tickets not yet trained on (the retraining gate: new or updated since the snapshot the
    newest completed training of registry.model_name learned from, so a failed run's tickets still count);
    the report is ``snapshot``.

    Args:
        config_yaml: the RLSD recipe text. manuals, tickets: store prefixes (s3://<bucket>/<prefix>/) or files
            and folders; both empty = what is new in the configured inbox (store.inbox).
        store_endpoint, store_bucket: override the recipe's store ("" keeps it).
        snapshot_id: the id of the latest snapshot after this ingest ("" when the store holds none): a string
            parameter, so the steps keyed on it hit the KFP cache when it is unchanged.
    """
    import json

    from rlsd.data.ingest import ingest as run_ingest
    from rlsd.perimeter import step

    params = {"store.endpoint": store_endpoint, "store.bucket": store_bucket}
    with step(config_yaml, params, log_path=connections.path) as cfg:
        report = run_ingest(cfg, manuals=list(manuals), tickets=list(tickets))
    with open(snapshot.path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, default=str)
    snapshot.metadata["snapshot_id"] = report["snapshot_id"] or ""
    with open(snapshot_id, "w", encoding="utf-8") as f:
        f.write(report["snapshot_id"] or "")
    return int(report["untrained_verified_tickets"])
