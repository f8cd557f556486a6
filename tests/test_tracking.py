"""Tracking: plots, a local store round trip, and a real MLflow server that goes away mid-run."""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from pathlib import Path

import pytest

from rlsd.config import RLSDConfig, TrackingConfig, load_config
from rlsd.tracking import (
    TAG_CODE_VERSION,
    TAG_DATA_SNAPSHOT,
    Tracker,
    TrackingWarning,
    plot_training,
    track_run,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rows(n: int) -> list[dict]:
    return [{"step": s, "loss": 1.0 / s, "reward_mean": 0.1 * s, "accuracy": 0.05 * s, "entropy": 2.0 - 0.1 * s,
             "clip_low_frac": 0.01 * s, "clip_high_frac": 0.02 * s, "lambda": 0.5 * (1 - s / n)} for s in range(1, n + 1)]


def _write_jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------


def test_plot_training_writes_one_png_per_curve(tmp_path):
    jsonl = _write_jsonl(_rows(6), tmp_path / "metrics.jsonl")
    paths = plot_training(jsonl, tmp_path / "plots")
    assert [p.name for p in paths] == ["reward.png", "accuracy.png", "entropy.png", "clip_fractions.png", "lambda.png"]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000  # a drawn figure, not an empty file


def test_plot_training_skips_absent_curves_and_names_bad_lines(tmp_path):
    jsonl = _write_jsonl([{"step": 1, "accuracy": 0.5}, {"step": 2, "accuracy": 0.75}], tmp_path / "m.jsonl")
    assert [p.name for p in plot_training(jsonl, tmp_path / "p")] == ["accuracy.png"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1}\n{oops\n{"step": 3}\n')  # a torn *last* line is skipped (test_tracking_torn_log)
    with pytest.raises(ValueError, match=r"bad.jsonl:2 is not JSON"):
        plot_training(bad, tmp_path / "p2")
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        plot_training(tmp_path / "missing.jsonl", tmp_path / "p3")


# ----------------------------------------------------------------------------------------------
# The embedded default: a local SQLite store, no server
# ----------------------------------------------------------------------------------------------


def test_local_store_round_trip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default URI and artifact location are relative to the cwd
    cfg = load_config(overrides=["train.steps=3", "rollout.group_size=8"])
    assert cfg.tracking.uri == "sqlite:///artifacts/mlflow/mlflow.db"
    rows = _rows(3)
    with Tracker(cfg.tracking, run_name="local", tags={"team": "support"}) as t:
        t.start(cfg.flat(), cfg.to_yaml())
        assert t.run_id is not None
        t.set_tags({TAG_DATA_SNAPSHOT: "snap-0123"})
        for r in rows:
            t.log_metrics({k: v for k, v in r.items() if k != "step"}, step=r["step"])
    assert t.report["undelivered"] == 0 and t.report["delivered_metrics"] == 3 * 7
    db = tmp_path / "artifacts" / "mlflow" / "mlflow.db"
    assert db.is_file()
    client = _client(f"sqlite:///{db}")
    run = client.get_run(t.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "local"
    assert run.data.params["rollout.group_size"] == "8" and run.data.params["train.steps"] == "3"
    assert set(run.data.params) == set(cfg.flat())
    assert run.data.tags[TAG_DATA_SNAPSHOT] == "snap-0123" and run.data.tags["team"] == "support"
    assert run.data.tags[TAG_CODE_VERSION]  # a git commit here, or rlsd==<version>
    assert _history(client, t.run_id, "accuracy") == [(1, 0.05), (2, 0.1), (3, pytest.approx(0.15))]
    assert _history(client, t.run_id, "lambda")[-1] == (3, 0.0)
    # artifacts live under tracking.artifact_location
    art = Path(client.download_artifacts(t.run_id, "config.yaml", str(tmp_path / "dl")))
    assert load_config(art) == cfg
    plots = sorted(f.path for f in client.list_artifacts(t.run_id, "plots"))
    assert plots == ["plots/accuracy.png", "plots/clip_fractions.png", "plots/entropy.png", "plots/lambda.png",
                     "plots/reward.png"]
    assert any((tmp_path / "artifacts" / "mlflow" / "artifacts").rglob("config.yaml"))


def test_disabled_tracker_is_a_no_op(tmp_path):
    t = Tracker(TrackingConfig(enabled=False, uri=f"sqlite:///{tmp_path}/x.db"))
    with t:
        t.start({"a": 1}, "a: 1\n")
        t.log_metrics({"loss": 1.0}, step=1)
    assert t.run_id is None and not (tmp_path / "x.db").exists()


def test_non_numbers_are_named_not_logged(tmp_path):
    cfg = TrackingConfig(uri=f"sqlite:///{tmp_path}/m.db", artifact_location=str(tmp_path / "art"), plots=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Tracker(cfg) as t:
            t.start({}, "")
            t.log_metrics({"loss": 0.5, "note": "hello", "n": None}, step=1)
            t.log_metrics({"loss": 0.25, "note": "again"}, step=2)  # warned once per key
    msgs = [str(w.message) for w in caught if issubclass(w.category, TrackingWarning)]
    assert sum("'note'" in m for m in msgs) == 1 and sum("'n'" in m for m in msgs) == 1
    assert _history(_client(cfg.uri), t.run_id, "loss") == [(1, 0.5), (2, 0.25)]


# ----------------------------------------------------------------------------------------------
# A real tracking server that goes away
# ----------------------------------------------------------------------------------------------


def _server_cfg(url: str, **kw) -> TrackingConfig:
    return TrackingConfig(uri=url, experiment="outage", http_retries=0, http_timeout_s=5, max_backoff_s=1.0,
                          plots=False, **kw)


@pytest.mark.integration
def test_server_stopped_mid_run_and_restarted_gets_every_metric(mlflow_server):
    cfg = _server_cfg(mlflow_server.url, flush_timeout_s=60.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = Tracker(cfg, run_name="outage-recovers")
        t.start({"train.steps": 9}, "train:\n  steps: 9\n")
        run_id = t.run_id
        assert run_id is not None
        for step in range(1, 4):
            t.log_metrics({"loss": 1.0 / step}, step=step)
        deadline = time.monotonic() + 20
        while t.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        assert t.pending == 0
        mlflow_server.stop()
        try:
            slowest = 0.0
            for step in range(4, 10):  # training goes on while the server is away
                t0 = time.perf_counter()
                t.log_metrics({"loss": 1.0 / step}, step=step)
                slowest = max(slowest, time.perf_counter() - t0)
                time.sleep(0.2)
            assert slowest < 0.05, f"log_metrics blocked {slowest:.3f}s while the server was down"
            assert t.pending > 0
        finally:
            mlflow_server.start()
        report = t.finish()
    assert report["undelivered"] == 0 and report["delivered_metrics"] == 9
    msgs = [str(w.message) for w in caught if issubclass(w.category, TrackingWarning)]
    assert any("cannot reach MLflow" in m for m in msgs) and any("is back after" in m for m in msgs)
    client = _client(mlflow_server.url)
    assert _history(client, run_id, "loss") == [(s, pytest.approx(1.0 / s)) for s in range(1, 10)]
    assert client.get_run(run_id).info.status == "FINISHED"


@pytest.mark.integration
def test_server_that_never_returns_costs_a_warning_not_the_training(mlflow_server):
    cfg = _server_cfg(mlflow_server.url, flush_timeout_s=2.0)
    t = Tracker(cfg, run_name="outage-forever")
    t.start({}, "")
    run_id = t.run_id
    t.log_metrics({"loss": 1.0}, step=1)
    deadline = time.monotonic() + 20
    while t.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    mlflow_server.stop()
    try:
        t.log_metrics({"loss": 0.5}, step=2)
        t.log_metrics({"loss": 0.25}, step=3)
        t0 = time.monotonic()
        with pytest.warns(TrackingWarning, match=r"did not take .* \(2 metric values\)"):
            report = t.finish()
        waited = time.monotonic() - t0
        assert 1.5 < waited < 2.0 + cfg.http_timeout_s + 3  # flush_timeout_s, plus at most one request
        assert report["undelivered_metrics"] == 2 and report["delivered_metrics"] == 1
        # (finish() returned within the bound above instead of raising or hanging: the training carries on)
    finally:
        mlflow_server.start()
    client = _client(mlflow_server.url)
    assert _history(client, run_id, "loss") == [(1, 1.0)]
    assert client.get_run(run_id).info.status == "RUNNING"  # the end was never delivered: nothing faked


@pytest.mark.integration
def test_track_run_logs_a_finished_output_folder(mlflow_server, tmp_path):
    out = tmp_path / "run-7"
    out.mkdir()
    run_cfg = load_config(overrides=["train.steps=4", "algorithm.name=grpo"])
    (out / "config.yaml").write_text(run_cfg.to_yaml())
    _write_jsonl(_rows(4), out / "metrics.jsonl")
    cfg = RLSDConfig().replace(tracking=dataclasses.replace(RLSDConfig().tracking, uri=mlflow_server.url,
                                                             experiment="offline"))
    run_id = track_run(cfg, out, tags={TAG_DATA_SNAPSHOT: "snap-7"})
    client = _client(mlflow_server.url)
    run = client.get_run(run_id)
    assert run.info.run_name == "run-7" and run.info.status == "FINISHED"
    assert run.data.params["algorithm.name"] == "grpo" and run.data.params["train.steps"] == "4"
    assert run.data.tags[TAG_DATA_SNAPSHOT] == "snap-7"
    assert _history(client, run_id, "reward_mean") == [(s, pytest.approx(0.1 * s)) for s in range(1, 5)]
    names = {f.path for f in client.list_artifacts(run_id)} | {f.path for f in client.list_artifacts(run_id, "plots")}
    assert {"config.yaml", "metrics.jsonl", "plots/reward.png", "plots/lambda.png"} <= names
    # the artifacts went through the server's proxy to its --artifacts-destination folder
    assert any(Path(mlflow_server.artifacts_destination).rglob("metrics.jsonl"))


def test_model_uploads_get_their_own_timeout_and_the_short_one_comes_back(monkeypatch):
    """A model upload runs under tracking.upload_timeout_s (the server answers a shard's PUT only after storing
    it: 10 s timed out on a 500 MB SmolLM2 shard under load), and the short metric timeout is restored after,
    also when the upload fails."""
    from rlsd.tracking import upload_timeout

    cfg = TrackingConfig(http_timeout_s=10, upload_timeout_s=900)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    with upload_timeout(cfg):
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "900"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "10"
    with pytest.raises(RuntimeError), upload_timeout(cfg):
        raise RuntimeError("upload failed")
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "10"
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT")
    with upload_timeout(TrackingConfig(http_timeout_s=60, upload_timeout_s=30)):  # never shorter than the usual
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "60"
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ


def test_register_uploads_the_model_under_the_upload_timeout(tmp_path, monkeypatch):
    """The wiring: the real register_model (embedded store) logs the model while the upload timeout is in effect."""
    import mlflow

    from rlsd.config import RLSDConfig
    from rlsd.models import build_tiny_model
    from rlsd.registry import register_model

    monkeypatch.chdir(tmp_path)
    build_tiny_model(tmp_path / "m", hidden_size=32, num_layers=1, num_heads=1, seed=0)
    seen = []
    real = mlflow.transformers.log_model

    def recording(*a, **kw):
        seen.append(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT"))
        return real(*a, **kw)

    monkeypatch.setattr(mlflow.transformers, "log_model", recording)
    cfg = RLSDConfig()
    r = register_model(cfg, tmp_path / "m")
    assert r["version"] == 1 and seen == [str(cfg.tracking.upload_timeout_s)]
    assert os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT") == str(cfg.tracking.http_timeout_s)


def test_a_record_the_store_refuses_is_dropped_and_named_not_retried_ahead_of_the_rest(tmp_path):
    """Review (reg): a record MLflow refuses for what it is (INVALID_PARAMETER_VALUE: a tag or metric name it does
    not take) was retried until finish's deadline, holding every later record behind it: the run lost all its
    later metrics, stayed RUNNING, and the warning said the server could not be reached. Now the refused record
    is dropped with a warning naming it, and the rest arrives."""
    cfg = TrackingConfig(uri=f"sqlite:///{tmp_path}/m.db", artifact_location=str(tmp_path / "art"), plots=False,
                         flush_timeout_s=20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Tracker(cfg) as t:
            t.start({}, "")
            t.log_metrics({"loss": 1.0}, step=1)
            t.set_tags({"bad?tag": "x"})                     # the store refuses this tag name
            t.log_metrics({"loss": 0.5, "what?": 3.0}, step=2)  # ... and this metric name
            t.log_metrics({"loss": 0.25}, step=3)
    msgs = [str(w.message) for w in caught if issubclass(w.category, TrackingWarning)]
    assert t.report["undelivered"] == 0, msgs
    client = _client(cfg.uri)
    assert _history(client, t.run_id, "loss") == [(1, 1.0), (2, 0.5), (3, 0.25)]
    assert client.get_run(t.run_id).info.status == "FINISHED"
    assert any("refused a tags record" in m and "dropped, not retried" in m for m in msgs), msgs
    assert any("'what?'" in m and "not logged" in m for m in msgs), msgs
    assert not any("cannot reach" in m for m in msgs), msgs


def test_a_refused_step_in_a_merged_batch_costs_only_that_step(tmp_path, monkeypatch):
    """Consecutive steps go to the server as one batch; when the server refuses that batch, the steps are sent one
    by one and only the refused one is dropped (counted in dropped_metrics)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
    from mlflow.tracking import MlflowClient

    real = MlflowClient.log_batch

    def picky(self, run_id, metrics=(), params=(), tags=(), **kw):
        if any(m.step == 2 for m in metrics):
            raise MlflowException("step 2 is refused", error_code=INVALID_PARAMETER_VALUE)
        return real(self, run_id, metrics=metrics, params=params, tags=tags, **kw)

    monkeypatch.setattr(MlflowClient, "log_batch", picky)
    cfg = TrackingConfig(uri=f"sqlite:///{tmp_path}/m.db", artifact_location=str(tmp_path / "art"), plots=False)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        t = Tracker(cfg)
        t.start({}, "", wait_s=60)
        with t._cond:  # hold delivery so that the three steps merge into one batch
            for s in (1, 2, 3):
                t.log_metrics({"loss": 1.0 / s, "acc": 0.1 * s}, step=s)
        t.finish()
    assert _history(_client(cfg.uri), t.run_id, "loss") == [(1, 1.0), (3, pytest.approx(1 / 3))]
    assert (t.report["dropped_metrics"], t.report["delivered_metrics"], t.report["undelivered"]) == (2, 4, 0)
