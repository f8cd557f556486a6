"""Register the trained model in MLflow and promote it by alias if it passes the gates (wraps rlsd.registry)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Model, Output

from components._image import RLSD_IMAGE


@dsl.component(base_image=RLSD_IMAGE, install_kfp_package=False)
def register_and_promote(config_yaml: str, model: Input[Model], evaluation: Input[Artifact],
                         promotion_margin: float, decision: Output[Markdown], connections: Output[Artifact],
                         kfp_run_id: str = ""
                         ) -> NamedTuple("Registered", [("name", str), ("version", str), ("uri", str), ("decision", str)]):
    """Args: promotion_margin: registry.margin (pass@1 points over the champion); kfp_run_id: the run's id
    (the pipeline passes dsl.PIPELINE_JOB_ID_PLACEHOLDER). Returns name, version, uri, decision.
    The version is tagged with its lineage (training run, snapshot, KFP run, image code version); a retry of
    this step reuses the version registered for the same training run and model artifact. The version's source is
    the store folder the train step pushed (store://models/<name>@<id>) when there is one, so a later run that
    continues from this version fetches those files hash-checked. Registered (promoted or not), the run's training
    is complete: the store's refs/trained/<model name> is set to the snapshot it learned from, where ingest's
    retraining gate starts counting."""
    import json
    import os
    from collections import namedtuple

    from rlsd.perimeter import step
    from rlsd.registry import promote, register_model

    with open(os.path.join(evaluation.path, "evaluation.json"), encoding="utf-8") as f:
        ev = json.load(f)
    with step(config_yaml, {"registry.margin": promotion_margin}, log_path=connections.path) as cfg:
        reg = register_model(cfg, os.path.join(model.path, model.metadata.get("final_model", "final")), evaluation=ev,
                             training_run_id=model.metadata.get("mlflow_run_id", ""), training_output_dir=model.path,
                             kfp_run=kfp_run_id, source=model.metadata.get("store_ref") or model.uri or model.path)
        verdict = promote(cfg, version=reg["version"], evaluation=ev)
        if ev.get("data_snapshot_id"):  # this training completed: the retraining gate counts from its snapshot
            from rlsd.data.store import open_store

            open_store(cfg.store).set_trained(cfg.registry.model_name, ev["data_snapshot_id"])
    with open(decision.path, "w", encoding="utf-8") as f:
        f.write(f"# {reg['name']} v{reg['version']}: {verdict['decision']}\n\n"
                + "".join(f"- {r}\n" for r in verdict["reasons"]))
    return namedtuple("Registered", "name version uri decision")(reg["name"], str(reg["version"]), reg["uri"],
                                                                 str(verdict["decision"]))
