"""Validate a snapshot with the Great Expectations suite (wraps rlsd.data.validate); fails the run on a bad snapshot."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Markdown, Metrics, Output

from components._image import RLSD_IMAGE


@dsl.component(base_image=RLSD_IMAGE, install_kfp_package=False)
def validate(config_yaml: str, snapshot_id: str, snapshot: str, store_endpoint: str, store_bucket: str,
             report: Output[Artifact], metrics: Output[Metrics], report_html: Output[HTML],
             report_md: Output[Markdown], connections: Output[Artifact]):
    """Args: snapshot_id: the id ingest left as latest (a parameter, not ingest's artifact, so a rerun on an
    unchanged snapshot hits the KFP cache); snapshot: an id, or "latest" for ``snapshot_id``.
    report: folder with the validation report (report.md, report.html, ...)."""
    import os
    import shutil

    from rlsd.data.validate import validate as run_validate
    from rlsd.kfp_outputs import numeric_metrics
    from rlsd.perimeter import step

    chosen = snapshot_id if snapshot == "latest" else snapshot
    if not chosen:
        raise ValueError("no snapshot to validate: the store holds none and ingest found nothing new in its inputs "
                         "(put ticket exports / manuals in the inbox, or name inputs)")
    params = {"store.endpoint": store_endpoint, "store.bucket": store_bucket}
    os.makedirs(report.path, exist_ok=True)
    with step(config_yaml, params, log_path=connections.path) as cfg:
        result = run_validate(cfg, snapshot=chosen, out_dir=report.path)
    shutil.copyfile(os.path.join(report.path, "report.html"), report_html.path)
    shutil.copyfile(os.path.join(report.path, "report.md"), report_md.path)
    for key, value in numeric_metrics(result).items():
        metrics.log_metric(key, value)
