"""Scheduled retraining: a KFP recurring run of the compiled pipeline.

``schedule(cfg, cron=..., host=...)`` creates the recurring run, or replaces the one of the same
name (the KFP API has no update call for recurring runs, so "update" = create, then delete the old ones: a
new run the server refuses leaves the old one scheduled; the returned dict lists what was replaced). It always runs with ``max_concurrency=1`` (a slow training
run is never overlapped by the next) and ``no_catchup=True`` (after downtime, one run, not one per
missed slot). Each run's ingest picks up tickets newer than the last snapshot and the pipeline's
gate skips training when fewer than ``platform.min_new_tickets`` verified tickets are not yet trained on (a
failed run's tickets still count).

KFP cron expressions have six fields, seconds first: "0 0 2 * * *" is every day at 02:00.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlsd.config import ConfigError, RLSDConfig


def check_cron(cron: str) -> str:
    """KFP's cron has 6 fields (second minute hour day-of-month month day-of-week).

    >>> check_cron("0 0 2 * * *")
    '0 0 2 * * *'
    """
    fields = cron.split()
    if len(fields) != 6:
        hint = f" (did you mean '0 {cron.strip()}'?)" if len(fields) == 5 else ""
        raise ConfigError(f"--cron must have 6 fields (second minute hour day month weekday), got {cron!r}{hint}; "
                          "e.g. '0 0 2 * * *' = every day at 02:00")
    return " ".join(fields)


def pipeline_params(cfg: RLSDConfig) -> dict[str, Any]:
    """The pipeline parameters a scheduled run gets: the resolved recipe plus its promoted values."""
    return {"config_yaml": cfg.to_yaml(), "algorithm": cfg.algorithm.name,
            "promotion_margin": cfg.registry.margin, "min_new_tickets": cfg.platform.min_new_tickets,
            "nodes": cfg.platform.nodes, "gpus_per_node": cfg.platform.gpus_per_node}


def schedule(cfg: RLSDConfig, *, cron: str, name: str = "rlsd-retraining", experiment: str = "rlsd",
             host: str | None = None, pipeline_yaml: str | Path | None = None, client: Any = None,
             service_account: str = "rlsd-pipeline-runner", extra_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create (or replace) the recurring run ``name`` in ``experiment``; returns its id and what it replaced."""
    from rlsd.pipeline_local import find_pipeline

    cron = check_cron(cron)
    if cfg.platform.nodes == 1 and cfg.platform.gpus_per_node < 1:
        raise ConfigError("platform.gpus_per_node is 0: the pipeline's single-pod train step runs on a GPU node "
                         "(nodeSelector nvidia.com/gpu.present=true) and would wait Pending for ever, holding every "
                         "later scheduled run behind it; set platform.gpus_per_node >= 1")
    package = Path(pipeline_yaml) if pipeline_yaml else find_pipeline()
    if client is None:
        import kfp

        client = kfp.Client(host=host, namespace=cfg.platform.namespace)
    exp = client.create_experiment(name=experiment, namespace=cfg.platform.namespace)
    same_name = json.dumps({"predicates": [{"key": "display_name", "operation": "EQUALS", "string_value": name}]})
    existing = client.list_recurring_runs(experiment_id=exp.experiment_id, page_size=100, filter=same_name)
    replaced = [r.recurring_run_id for r in (existing.recurring_runs or []) if r.display_name == name]
    # the new one first: a run the server refuses (a cron it cannot parse, an unknown service account) leaves the
    # old schedule running instead of none
    run = client.create_recurring_run(
        experiment_id=exp.experiment_id, job_name=name, cron_expression=cron, max_concurrency=1, no_catchup=True,
        params={**pipeline_params(cfg), **(extra_params or {})}, pipeline_package_path=str(package),
        service_account=service_account, description=f"RLSD retraining ({cron}); skips training below "
                                                      f"{cfg.platform.min_new_tickets} new verified tickets")
    for rid in replaced:
        client.delete_recurring_run(rid)
    return {"recurring_run_id": run.recurring_run_id, "name": name, "cron": cron,
            "experiment_id": exp.experiment_id, "replaced": replaced}
