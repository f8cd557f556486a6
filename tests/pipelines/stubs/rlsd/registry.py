from rlsd._record import record


def register_model(cfg, model_dir, *, run_id=None, evaluation=None, **lineage):
    record("register", model_dir=model_dir, evaluation=evaluation, kfp_run=lineage.get("kfp_run"))
    return {"name": cfg.registry.model_name, "version": 1, "uri": f"models:/{cfg.registry.model_name}/1"}


def promote(cfg, *, version, evaluation):
    record("promote", version=version, margin=cfg.registry.margin)
    return {"decision": "promoted", "reasons": ["no champion yet"]}


def current_champion(cfg):
    record("resolve", model_path=cfg.model.path, continue_from=cfg.model.continue_from)
    return None
