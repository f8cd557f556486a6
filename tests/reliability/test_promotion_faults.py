"""Tracking faults during promotion: the MLflow server is unreachable when `promote` starts, or dies in the
middle of it (after the version was marked pending, before the alias moves). Either way: a clear error that
names the server and the fix, and @champion stays where it was.

(tests/test_tracking.py covers the server going away during training; tests/test_registry.py covers two
promotions at once.)
"""

from __future__ import annotations

import dataclasses
import time

import pytest
from tests.helpers import warm_tiny_model
from tests.mlflow_server import free_ports

from rlsd import registry
from rlsd.config import RLSDConfig
from rlsd.registry import promote, register_model

pytestmark = pytest.mark.integration


def _cfg(url: str, name: str) -> RLSDConfig:
    base = RLSDConfig()
    return base.replace(
        tracking=dataclasses.replace(base.tracking, uri=url, experiment="reliability", http_retries=1,
                                     http_timeout_s=5),
        registry=dataclasses.replace(base.registry, model_name=name, margin=0.02, max_leakage_rate=0.05))


def ev(pass1: float, diff: float | None = None, vs: tuple[str, int] | None = None) -> dict:
    """``vs`` (name, version): the champion the candidate was compared with."""
    comparison = None if diff is None else {"diff_pass1": diff, "ci_low": 0.05, "ci_high": 0.3, "n_tasks": 64}
    baseline = None if vs is None else {"model": "b", "kind": "champion", "name": vs[0], "version": str(vs[1])}
    return {"candidate": {"model": "c", "pass@1": pass1, "pass@k": pass1, "greedy_pass@1": pass1, "k": 4},
            "baseline": baseline, "comparison": comparison, "leakage": {"rate": 0.0, "examples": []}}


def test_promote_against_a_server_that_is_down_is_a_clear_error():
    url = f"http://127.0.0.1:{free_ports(1)[0]}"
    t0 = time.monotonic()
    with pytest.raises(registry.RegistryUnavailable) as e:
        promote(_cfg(url, "nobody"), version=1, evaluation=ev(0.5))
    assert time.monotonic() - t0 < 60
    msg = str(e.value)
    assert url in msg and "promote v1" in msg and "no alias was changed" in msg and "tracking.uri" in msg


@pytest.mark.slow
def test_server_dies_in_the_middle_of_a_promotion_and_no_alias_moves(mlflow_server, monkeypatch):
    from mlflow.tracking import MlflowClient

    name = "rlsd-promote-outage"
    cfg = _cfg(mlflow_server.url, name)
    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    model = warm_tiny_model()
    register_model(cfg, model)
    register_model(cfg, model)
    assert promote(cfg, version=1, evaluation=ev(0.30))["decision"] == "promoted"

    real_set = registry._set_champion
    moved: list[str] = []

    def dies_first(client_, name_, version):  # the server goes away right before the alias write
        mlflow_server.stop()
        moved.append(str(version))
        real_set(client_, name_, version)

    monkeypatch.setattr(registry, "_set_champion", dies_first)
    try:
        with pytest.raises(registry.RegistryUnavailable, match=r"promote v2.*no alias was changed"):
            promote(cfg, version=2, evaluation=ev(0.60, diff=0.30, vs=(name, 1)))
    finally:
        mlflow_server.start()
    monkeypatch.setattr(registry, "_set_champion", real_set)
    assert moved == ["2"]  # the failure really hit the alias move
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    tags = client.get_model_version(name, "2").tags
    assert tags.get("rlsd.promotion.state") == "pending"  # marked before the outage; it expires (PENDING_TTL_S)
    assert "rlsd.promotion.decision" not in tags  # no decision was recorded for a promotion that did not happen

    # the server is back: the same promotion goes through, and only now does the alias move
    r = promote(cfg, version=2, evaluation=ev(0.60, diff=0.30, vs=(name, 1)))
    assert r["decision"] == "promoted" and client.get_model_version_by_alias(name, "champion").version == "2"
