"""The resolve-models step's function (rlsd.model_refs.resolve_models) against a real MLflow server: it pins the
mutable references once per run, so train's and evaluate's KFP cache keys see a moved @champion or a new import.
Evaluate then compares with exactly the pinned champion, not whatever @champion is when it runs."""

from __future__ import annotations

import pytest
import torch

from rlsd.config import load_config
from rlsd.model_refs import ModelRefError, import_model, pin_ref, resolve_models
from rlsd.models import load_model
from tests.helpers import tiny_models

IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 11]])


def _logits(path) -> torch.Tensor:
    with torch.no_grad():
        return load_model(path).eval()(input_ids=IDS).logits


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models(tmp_path_factory.mktemp("tiny"), 3, seed=11)


def _cfg(mlflow_server, tmp_path, name, **model):
    sets = [f"tracking.uri={mlflow_server.url}", f"registry.model_name={name}", f"store.root={tmp_path / 'store'}",
            "tracking.http_retries=1"]
    return load_config(overrides=sets + [f"model.{k}={v}" for k, v in model.items()])


def _promote(cfg, folder) -> str:
    from rlsd.registry import CHAMPION, _client, register_model

    v = str(register_model(cfg, folder)["version"])
    _client(cfg).set_registered_model_alias(cfg.registry.model_name, CHAMPION, v)
    return v


def test_the_champion_is_pinned_by_version_and_follows_each_promotion(models, mlflow_server, tmp_path):
    cfg = _cfg(mlflow_server, tmp_path, "resolve-loop", path="store://models/tiny", continue_from="champion")
    ref = import_model(cfg, models[0], "tiny")["ref"]
    # no champion yet: train starts from the recipe's import, pinned to its id; nothing to compare with
    assert resolve_models(cfg) == {"base_model": ref, "champion": ""}
    assert _promote(cfg, models[1]) == "1"
    assert resolve_models(cfg) == {"base_model": "models:/resolve-loop/1", "champion": "models:/resolve-loop/1"}
    assert _promote(cfg, models[2]) == "2"
    assert resolve_models(cfg) == {"base_model": "models:/resolve-loop/2", "champion": "models:/resolve-loop/2"}
    # a recipe that does not continue from the champion keeps its pinned base, and still compares with it
    base = cfg.replace(model=type(cfg.model)(**{**cfg.model.__dict__, "continue_from": "base"}))
    assert resolve_models(base) == {"base_model": ref, "champion": "models:/resolve-loop/2"}


def test_mutable_references_are_pinned_and_unknown_ones_refused_in_one_line(models, mlflow_server, tmp_path):
    cfg = _cfg(mlflow_server, tmp_path, "resolve-pin")
    first = import_model(cfg, models[0], "tiny")["ref"]
    assert pin_ref(cfg, "store://models/tiny") == first
    second = import_model(cfg, models[1], "tiny")["ref"]
    assert second != first and pin_ref(cfg, "store://models/tiny") == second  # the newest import, by its id
    assert pin_ref(cfg, first) == first  # pinned stays pinned
    assert pin_ref(cfg, str(models[2])) == str(models[2])  # a local path is used as it is
    _promote(cfg, models[2])
    assert pin_ref(cfg, "models:/resolve-pin@champion") == "models:/resolve-pin/1"
    assert pin_ref(cfg, "models:/resolve-pin/7") == "models:/resolve-pin/7"  # a version is immutable already
    with pytest.raises(ModelRefError, match=r"^base model models:/resolve-pin@nope: the registry has no alias @nope"):
        pin_ref(cfg, "models:/resolve-pin@nope")
    with pytest.raises(ModelRefError, match=r"^base model store://models/absent: the store holds no model named 'absent'"):
        pin_ref(cfg, "store://models/absent")


def test_evaluate_compares_with_the_pinned_champion_after_the_alias_moved(models, mlflow_server, tmp_path,
                                                                          monkeypatch):
    import rlsd.evaluate as ev

    cfg = _cfg(mlflow_server, tmp_path, "resolve-eval", path=str(models[0]))
    _promote(cfg, models[1])
    pinned = resolve_models(cfg)["champion"]
    assert pinned == "models:/resolve-eval/1"
    _promote(cfg, models[2])  # @champion moves on while the run is under way
    seen = {}

    def fake_run(cfg, *, candidate, baseline=None, baseline_info=None, tasks_path=None, out_dir):
        seen.update(info=baseline_info, logits=_logits(baseline))
        return {}

    monkeypatch.setattr(ev, "run_evaluation", fake_run)
    ev.evaluate_against_champion(cfg, candidate=models[0], out_dir=tmp_path / "e", champion=pinned)
    assert seen["info"] == {"kind": "champion", "name": "resolve-eval", "version": "1", "uri": pinned}
    torch.testing.assert_close(seen["logits"], _logits(models[1]))  # version 1's weights, not version 2's
    # "" = there was no champion when the run resolved: the base, even though one exists now
    ev.evaluate_against_champion(cfg, candidate=models[0], out_dir=tmp_path / "e2", champion="")
    assert seen["info"] == {"kind": "base", "name": str(models[0]), "version": None, "uri": str(models[0])}
    # without a pinned champion (outside the pipeline): the current one
    ev.evaluate_against_champion(cfg, candidate=models[0], out_dir=tmp_path / "e3")
    assert seen["info"]["version"] == "2"
    with pytest.raises(ValueError, match="expected models:/resolve-eval/<version>"):
        ev.evaluate_against_champion(cfg, candidate=models[0], out_dir=tmp_path / "e4", champion="models:/other/1")


def test_the_steps_base_model_parameter_wins_over_continuing_from_the_champion(models, mlflow_server, tmp_path):
    """The pipeline's base_model parameter (a UI run naming a model) is what train starts from, even when the
    recipe continues from the champion; left empty, the champion is (the retraining loop). The train component
    reads the same parameter the same way ("used as it is")."""
    import yaml
    from components.resolve_models import resolve_models as step
    from kfp.dsl import Artifact

    cfg = _cfg(mlflow_server, tmp_path, "resolve-param", path="store://models/tiny", continue_from="champion")
    ref = import_model(cfg, models[0], "tiny")["ref"]
    _promote(cfg, models[1])
    recipe = yaml.safe_dump({"model": {"path": "store://models/tiny", "continue_from": "champion"},
                             "store": {"root": cfg.store.root},
                             "tracking": {"uri": cfg.tracking.uri, "http_retries": 1},
                             "registry": {"model_name": "resolve-param"}, "platform": {"perimeter": "off"}})
    art = lambda n: Artifact(name=n, uri=str(tmp_path / n), metadata={})  # noqa: E731
    named = step.python_func(config_yaml=recipe, base_model="store://models/tiny", connections=art("c1"))
    assert (named.base_model, named.champion) == (ref, "models:/resolve-param/1")
    loop = step.python_func(config_yaml=recipe, base_model="", connections=art("c2"))
    assert (loop.base_model, loop.champion) == ("models:/resolve-param/1", "models:/resolve-param/1")
