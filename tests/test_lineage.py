"""Lineage of a registered version and idempotent registration (issue 15, item 5), against a real
``mlflow server``: the version is tagged with its training run, data snapshot, KFP run and the image's
code version; registering the same training run's model again (a retried KFP step) returns the version
already registered instead of creating a second one."""

from __future__ import annotations

import pytest

from rlsd import registry
from rlsd.config import RLSDConfig
from rlsd.registry import find_training_run, image_code_version, kfp_run_id, register_model
from tests.helpers import registry_cfg, tiny_models


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models(tmp_path_factory.mktemp("lineage-models"), 2, seed=20)


def _cfg(url: str, name: str) -> RLSDConfig:
    return registry_cfg(url, "lineage-tests", model_name=name)


def _client(url: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=url, registry_uri=url)


def _training_run(url: str, output_dir) -> str:
    """A run as rlsd.train leaves it: tagged with the folder it trained into."""
    client = _client(url)
    exp = client.get_experiment_by_name("lineage-tests")
    exp_id = exp.experiment_id if exp else client.create_experiment("lineage-tests")
    run = client.create_run(exp_id, tags={"rlsd.output_dir": str(output_dir.resolve())})
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _versions(url: str, name: str) -> list[str]:
    return sorted(mv.version for mv in _client(url).search_model_versions(f"name='{name}'"))


EVAL = {"candidate": {"model": "c", "pass@1": 0.4, "k": 4}, "baseline": None, "comparison": None,
        "data_snapshot_id": "snap-0042", "leakage": {"rate": 0.0, "n_checked": 10, "n_leaks": 0}}


@pytest.mark.integration
def test_version_carries_its_lineage(mlflow_server, models, monkeypatch):
    name = "rlsd-lineage"
    cfg = _cfg(mlflow_server.url, name)
    monkeypatch.setenv("RLSD_CODE_VERSION", "v1.2.3-7-gabc1234")
    train_run = _training_run(mlflow_server.url, models[0].parent)
    assert find_training_run(cfg, models[0].parent) == train_run
    r = register_model(cfg, models[0], evaluation=EVAL, training_output_dir=models[0].parent,
                       kfp_run="3f6c1a52-kfp-run", source="minio://mlpipeline/v2/artifacts/run/train/model")
    tags = _client(mlflow_server.url).get_model_version(name, str(r["version"])).tags
    assert tags[registry.TAG_TRAINING_RUN] == train_run  # found from the folder it trained into
    assert tags[registry.TAG_SNAPSHOT] == "snap-0042"  # from the evaluation (the tasks' snapshot)
    assert tags[registry.TAG_KFP_RUN] == "3f6c1a52-kfp-run"
    assert tags[registry.TAG_CODE_VERSION] == "v1.2.3-7-gabc1234"  # the image's, not the checkout's
    assert tags[registry.TAG_MODEL_SOURCE] == "minio://mlpipeline/v2/artifacts/run/train/model"
    # explicit ids win over the evaluation's and the lookup's
    r2 = register_model(cfg, models[1], evaluation=EVAL, training_run_id="run-given", snapshot_id="snap-given",
                        training_output_dir=models[0].parent)
    tags = _client(mlflow_server.url).get_model_version(name, str(r2["version"])).tags
    assert (tags[registry.TAG_TRAINING_RUN], tags[registry.TAG_SNAPSHOT]) == ("run-given", "snap-given")
    assert r2["version"] == r["version"] + 1


@pytest.mark.integration
def test_a_retried_register_returns_the_same_version(mlflow_server, models, monkeypatch):
    name = "rlsd-lineage-retry"
    cfg = _cfg(mlflow_server.url, name)
    src = "minio://mlpipeline/v2/artifacts/run-1/train/model"
    first = register_model(cfg, models[0], evaluation=EVAL, training_run_id="train-run-1", source=src)
    assert first["reused"] is False
    before = _versions(mlflow_server.url, name)
    assert before == [str(first["version"])]

    # the register step retried (same training run, same model artifact): no second version, no second upload
    import mlflow

    def no_upload(*a, **k):
        raise AssertionError("a retried register must not log the model again")

    monkeypatch.setattr(mlflow.transformers, "log_model", no_upload)
    again = register_model(cfg, models[0], evaluation={**EVAL, "candidate": {"model": "c", "pass@1": 0.45, "k": 4}},
                           training_run_id="train-run-1", source=src)
    assert again["reused"] is True
    assert (again["version"], again["uri"], again["run_id"]) == (first["version"], first["uri"], first["run_id"])
    assert _versions(mlflow_server.url, name) == before
    client = _client(mlflow_server.url)
    assert client.get_model_version_by_alias(name, "challenger").version == str(first["version"])
    assert client.get_model_version(name, str(first["version"])).tags[registry.TAG_PASS1] == "0.45"  # latest numbers
    monkeypatch.undo()

    # another training run (or another model artifact of it) is another version
    other = register_model(cfg, models[1], training_run_id="train-run-2", source=src)
    assert other["reused"] is False and other["version"] == first["version"] + 1
    third = register_model(cfg, models[1], training_run_id="train-run-1", source=src + "-other")
    assert third["reused"] is False and third["version"] == first["version"] + 2
    assert len(_versions(mlflow_server.url, name)) == 3


def test_kfp_run_id_and_code_version_fallbacks(tmp_path, monkeypatch):
    monkeypatch.delenv("KFP_RUN_ID", raising=False)
    assert kfp_run_id("abc-123") == "abc-123"
    assert kfp_run_id("{{$.pipeline_job_uuid}}") == ""  # an unresolved placeholder is no id
    monkeypatch.setenv("KFP_RUN_ID", "from-env")
    assert kfp_run_id("") == "from-env" and kfp_run_id("given") == "given"

    monkeypatch.delenv("RLSD_CODE_VERSION", raising=False)
    stamp = tmp_path / "code-version"
    monkeypatch.setattr(registry, "CODE_VERSION_FILE", str(stamp))
    from rlsd.tracking import code_version

    assert image_code_version() == code_version()[0]  # no stamp: the checkout's commit or the package version
    stamp.write_text("v0.9.0-3-gdeadbee\n")
    assert image_code_version() == "v0.9.0-3-gdeadbee"  # the file written at image build time
    stamp.write_text("unknown\n")  # built without the build argument: not a version
    assert image_code_version() == code_version()[0]
    monkeypatch.setenv("RLSD_CODE_VERSION", "v1.0.0")
    assert image_code_version() == "v1.0.0"


def test_dockerfiles_stamp_the_code_version():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "containers"
    for name in ("Dockerfile.cpu", "Dockerfile.train"):
        text = (root / name).read_text()
        assert "ARG RLSD_CODE_VERSION" in text, name
        assert f'> {registry.CODE_VERSION_FILE}' in text and "ENV RLSD_CODE_VERSION=${RLSD_CODE_VERSION}" in text, name


@pytest.mark.integration
def test_a_retried_register_without_a_training_run_id_returns_the_same_version(mlflow_server, models):
    """MLflow down for the whole training (the tracker never created its run: the train step leaves mlflow_run_id
    "") or tracking off: the register step still gets the model's source (the store folder the train step pushed,
    content-addressed, else the KFP artifact URI), and a retry of the step must not register a second version."""
    name = "rlsd-lineage-no-run"
    cfg = _cfg(mlflow_server.url, name)
    src = "store://models/rlsd-model@0123abcd"
    # as the register component calls it: no run id, the Model artifact's folder (no training run tagged it)
    first = register_model(cfg, models[0], evaluation=EVAL, training_run_id="", training_output_dir=models[0],
                           source=src)
    again = register_model(cfg, models[0], evaluation=EVAL, training_run_id="", training_output_dir=models[0],
                           source=src)
    assert again["reused"] is True and again["version"] == first["version"]
    assert _versions(mlflow_server.url, name) == [str(first["version"])]
    other = register_model(cfg, models[1], evaluation=EVAL, training_run_id="", source=src + "ef")
    assert other["reused"] is False  # another model is another version
    # the CLI registering a folder (no source given: the folder's path, whose content may change) is not deduplicated
    assert register_model(cfg, models[1])["reused"] is False
