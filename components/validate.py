"""Validate a snapshot with the Great Expectations suite (wraps rlsd.data.validate); fails the run on a bad snapshot."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Output

from components._image import RLSD_IMAGE


@dsl.component(base_image=RLSD_IMAGE, install_kfp_package=False)
def validate(config_yaml: str, ingested: Input[Dataset], snapshot: str, store_endpoint: str, store_bucket: str,
             report: Output[Artifact], metrics: Output[Metrics], report_html: Output[HTML],
             report_md: Output[Markdown], connections: Output[Artifact]):
    """Args: ingested: the ingest report; snapshot: an id, or "latest" for the one just ingested
    (the id, not the word, reaches the library, so the step is keyed on the snapshot).
    report: folder with the validation report (report.md, report.html, ...)."""
    import os
    import shutil

    from rlsd.data.validate import validate as run_validate
    from rlsd.kfp_outputs import numeric_metrics
    from rlsd.perimeter import step

    params = {"store.endpoint": store_endpoint, "store.bucket": store_bucket}
    os.makedirs(report.path, exist_ok=True)
    chosen = ingested.metadata["snapshot_id"] if snapshot == "latest" else snapshot
    with step(config_yaml, params, log_path=connections.path) as cfg:
        result = run_validate(cfg, snapshot=chosen, out_dir=report.path)
    shutil.copyfile(os.path.join(report.path, "report.html"), report_html.path)
    shutil.copyfile(os.path.join(report.path, "report.md"), report_md.path)
    for key, value in numeric_metrics(result).items():
        metrics.log_metric(key, value)
