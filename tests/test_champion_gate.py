"""Evaluation against the champion (issue 15, item 4), against a real ``mlflow server``.

The issue's reproduction: a champion at pass@1 0.60 and a candidate at 0.61 that clearly beats the weaker
base model (0.30). Compared with the base, its paired-bootstrap interval is far above zero, so a gate that
only reads the numbers promotes it; the gate must instead require the comparison to be with the current
champion, against which +0.01 on 100 tasks is no evidence. Also: a comparison with a former champion is
refused, too few paired tasks are refused, and ``evaluate_against_champion`` really evaluates the
champion's weights (fetched from the registry) on the same tasks in the same run.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rlsd import evaluate as evaluate_mod
from rlsd.config import RegistryConfig, RLSDConfig
from rlsd.evaluate import evaluate_against_champion, paired_bootstrap
from rlsd.registry import check_gates, current_champion, promote, register_model
from tests.helpers import registry_cfg, tiny_models

N_TASKS = 100


def _scores(passes: int, n: int = N_TASKS) -> list[float]:
    """Per-task sampled pass@1 of a model that solves the first ``passes`` of the n tasks."""
    return [1.0] * passes + [0.0] * (n - passes)


def _baseline(kind: str, name: str, version: str | None) -> dict:
    uri = f"models:/{name}/{version}" if kind == "champion" else name
    return {"kind": kind, "name": name, "version": version, "uri": uri}


def evaluation(cand: list[float], base: list[float], baseline: dict) -> dict:
    """The evaluation.json run_evaluation writes for these per-task scores (the same paired bootstrap)."""
    boot = paired_bootstrap(base, cand, n_boot=2000, seed=0)
    side = {"pass@k": None, "greedy_pass@1": None, "k": 4, "per_type": {}, "teacher_greedy_pass@1": None}
    return {"candidate": {"model": "candidate", "pass@1": float(np.mean(cand)), **side},
            "baseline": {"model": baseline["uri"], "pass@1": float(np.mean(base)), **side, **baseline},
            "comparison": {"diff_pass1": boot["diff"], "ci_low": boot["ci_low"], "ci_high": boot["ci_high"],
                           "n_tasks": len(cand)},
            "data_snapshot_id": "snap-0001",
            "leakage": {"rate": 0.0, "n_checked": 3 * len(cand), "n_leaks": 0, "examples": [],
                        "teacher_student_gap": None}}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models(tmp_path_factory.mktemp("gate-models"), 4, seed=10)


def _cfg(url: str, name: str) -> RLSDConfig:
    return registry_cfg(url, "champion-gate-tests", model_name=name, margin=0.0, max_leakage_rate=0.05,
                        require_ci_above_zero=True)


def _champion(url: str, name: str) -> str:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=url, registry_uri=url).get_model_version_by_alias(name, "champion").version


# ----------------------------------------------------------------------------------------------
# The example, end to end through promote
# ----------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_a_candidate_that_beats_the_base_but_not_the_champion_is_not_promoted(mlflow_server, models):
    name = "rlsd-issue15-gate"
    cfg = _cfg(mlflow_server.url, name)
    champion, candidate, base = _scores(60), _scores(61), _scores(30)  # the candidate solves the champion's 60 + 1

    register_model(cfg, models[0])  # v1 becomes champion at pass@1 0.60 (evaluated against the base model)
    first = promote(cfg, version=1, evaluation=evaluation(champion, base, _baseline("base", "base-model", None)))
    assert first["decision"] == "promoted" and _champion(mlflow_server.url, name) == "1"

    register_model(cfg, models[1])  # v2: pass@1 0.61
    vs_base = evaluation(candidate, base, _baseline("base", "base-model", None))
    assert vs_base["comparison"]["ci_low"] > 0.2  # against the base it wins clearly...
    assert check_gates(cfg.registry, vs_base, has_champion=True)[0] is True  # ...so the numbers alone would pass
    d = promote(cfg, version=2, evaluation=vs_base)
    assert d["decision"] == "refused" and _champion(mlflow_server.url, name) == "1"
    assert f"FAIL: compared with the base model base-model, not with the current champion {name} v1" in \
        " ".join(d["reasons"])

    # the comparison it should have had: same tasks, against the champion: +0.01, interval touches zero
    vs_champion = evaluation(candidate, champion, _baseline("champion", name, "1"))
    assert vs_champion["comparison"]["diff_pass1"] == pytest.approx(0.01)
    d = promote(cfg, version=2, evaluation=vs_champion)
    assert d["decision"] == "refused" and _champion(mlflow_server.url, name) == "1"
    assert f"ok: compared with the current champion {name} v1" in d["reasons"]
    assert any(r.startswith("FAIL: paired-bootstrap interval") for r in d["reasons"]), d["reasons"]

    # a candidate that really beats the champion on the same tasks is promoted (the gate can pass)
    register_model(cfg, models[2])  # v3: 0.80 against the champion's 0.60
    d = promote(cfg, version=3, evaluation=evaluation(_scores(80), champion, _baseline("champion", name, "1")))
    assert d["decision"] == "promoted" and _champion(mlflow_server.url, name) == "3"


@pytest.mark.integration
def test_a_comparison_with_a_former_champion_is_refused(mlflow_server, models):
    name = "rlsd-issue15-stale"
    cfg = _cfg(mlflow_server.url, name)
    for m in models[:3]:
        register_model(cfg, m)
    promote(cfg, version=1, evaluation=evaluation(_scores(40), _scores(20), _baseline("base", "b", None)))
    assert promote(cfg, version=2, evaluation=evaluation(_scores(60), _scores(40), _baseline("champion", name, "1"))
                   )["decision"] == "promoted"
    # v3 was evaluated against v1, which no longer holds @champion (v2 does): refused, whatever its numbers
    stale = evaluation(_scores(90), _scores(40), _baseline("champion", name, "1"))
    d = promote(cfg, version=3, evaluation=stale)
    assert d["decision"] == "refused" and _champion(mlflow_server.url, name) == "2"
    assert f"FAIL: compared with {name} v1, not with the current champion {name} v2" in " ".join(d["reasons"])
    # another registered model's v2 is not this model's champion either
    other = evaluation(_scores(90), _scores(60), _baseline("champion", "some-other-model", "2"))
    assert promote(cfg, version=3, evaluation=other)["decision"] == "refused"
    # the same numbers against the current champion pass
    d = promote(cfg, version=3, evaluation=evaluation(_scores(90), _scores(60), _baseline("champion", name, "2")))
    assert d["decision"] == "promoted" and _champion(mlflow_server.url, name) == "3"


# ----------------------------------------------------------------------------------------------
# Gates on their own: baseline identity and the paired-sample size
# ----------------------------------------------------------------------------------------------

REG = RegistryConfig(model_name="m", margin=0.0, require_ci_above_zero=True, max_leakage_rate=0.05)


def _winning(n: int, baseline: dict | None = None) -> dict:
    """Candidate solves every task, the champion half: wins by +0.5 whatever n (ci_low > 0 for n >= 2)."""
    return evaluation(_scores(n, n), _scores(n // 2, n), baseline or _baseline("champion", "m", "7"))


def test_min_paired_tasks_default_and_boundary():
    assert RegistryConfig().min_paired_tasks == 20
    ok19, reasons19 = check_gates(REG, _winning(19), has_champion=True, champion_version="7")
    assert ok19 is False and "FAIL: 19 paired tasks < registry.min_paired_tasks 20 (too few for the interval to " \
                             "mean anything)" in reasons19
    assert [r for r in reasons19 if r.startswith("FAIL")] == [r for r in reasons19 if "paired tasks" in r]  # the only one
    ok20, reasons20 = check_gates(REG, _winning(20), has_champion=True, champion_version="7")
    assert ok20 is True and "ok: 20 paired tasks >= registry.min_paired_tasks 20" in reasons20
    assert check_gates(dataclasses.replace(REG, min_paired_tasks=21), _winning(20), has_champion=True,
                       champion_version="7")[0] is False
    unknown = _winning(40)
    del unknown["comparison"]["n_tasks"]
    ok, reasons = check_gates(REG, unknown, has_champion=True, champion_version="7")
    assert ok is False and any(r.startswith("FAIL: unknown paired tasks") for r in reasons)
    # the first champion (nothing to pair with) is not held to it
    assert check_gates(REG, evaluation(_scores(5, 5), _scores(0, 5), _baseline("base", "b", None)),
                       has_champion=False)[0] is True
    with pytest.raises(ValueError, match="registry.min_paired_tasks must be >= 1, got 0"):
        RegistryConfig(min_paired_tasks=0)


@pytest.mark.parametrize("baseline, passes", [
    (_baseline("champion", "m", "7"), True),
    (_baseline("champion", "m", "6"), False),            # a former champion
    (_baseline("champion", "other", "7"), False),        # another model's version 7
    (_baseline("base", "m", None), False),               # the base model
    ({"kind": "path", "name": "/x", "version": None, "uri": "/x"}, False),  # a bare path
    ({}, False),                                          # nothing recorded
])
def test_baseline_must_be_the_current_champion(baseline, passes):
    e = _winning(40, baseline)
    if not baseline:
        e["baseline"] = {"model": "?", "pass@1": 0.5}
    ok, reasons = check_gates(REG, e, has_champion=True, champion_version="7")
    assert ok is passes, reasons
    line = reasons[-1]
    assert line.startswith("ok: compared with the current champion m v7") if passes else \
        line.endswith("not with the current champion m v7: evaluate the candidate against models:/m@champion")


# ----------------------------------------------------------------------------------------------
# evaluate_against_champion: the champion's weights, fetched from the registry, on the same tasks
# ----------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_evaluation_uses_the_current_champion_else_the_base(mlflow_server, models, tmp_path, monkeypatch):
    from rlsd.models import load_model
    from rlsd.tasks import addition_tasks, write_tasks

    name = "rlsd-issue15-evaluate"
    cfg = _cfg(mlflow_server.url, name)
    cfg = cfg.replace(eval=dataclasses.replace(cfg.eval, k=1, max_new_tokens=2, bootstrap_samples=100))
    tasks = write_tasks(addition_tasks(4, seed=5), tmp_path / "eval.jsonl")
    assert tasks == 4
    seen: list[tuple[dict, list[str]]] = []  # (weights, task ids) of every model evaluated
    real = evaluate_mod.evaluate_model

    def spy(path, tasks, **kw):
        seen.append(({k: v.clone() for k, v in load_model(path).state_dict().items()}, [t.id for t in tasks]))
        return real(path, tasks, **kw)

    monkeypatch.setattr(evaluate_mod, "evaluate_model", spy)

    def same(weights, path) -> bool:
        ref = load_model(path).state_dict()
        return all(torch.equal(weights[k], ref[k]) for k in ref)

    # no champion yet: the base model, recorded as such
    assert current_champion(cfg) is None
    r = evaluate_against_champion(cfg, candidate=models[1], base_model=models[3], tasks_path=tmp_path / "eval.jsonl",
                                  out_dir=tmp_path / "e0")
    assert {k: r["baseline"][k] for k in ("kind", "name", "version", "uri")} == \
        {"kind": "base", "name": str(models[3]), "version": None, "uri": str(models[3])}
    assert same(seen[1][0], models[3]) and seen[0][1] == seen[1][1]

    register_model(cfg, models[0])
    promote(cfg, version=1, evaluation=evaluation(_scores(30), _scores(10), _baseline("base", "b", None)))
    register_model(cfg, models[1])
    seen.clear()
    r = evaluate_against_champion(cfg, candidate=models[1], base_model=models[3], tasks_path=tmp_path / "eval.jsonl",
                                  out_dir=tmp_path / "e1")
    assert {k: r["baseline"][k] for k in ("kind", "name", "version", "uri")} == \
        {"kind": "champion", "name": name, "version": "1", "uri": f"models:/{name}/1"}
    cand_w, cand_ids = seen[0]
    base_w, base_ids = seen[1]
    assert same(cand_w, models[1]) and same(base_w, models[0])  # the champion's weights, not the base's
    assert not same(base_w, models[3])
    assert cand_ids == base_ids and r["comparison"]["n_tasks"] == 4  # paired on the same tasks

    # the gate accepts this comparison's baseline; 4 tasks are too few to promote on
    d = promote(cfg, version=2, evaluation=r)
    assert f"ok: compared with the current champion {name} v1" in d["reasons"]
    assert "FAIL: 4 paired tasks < registry.min_paired_tasks 20 (too few for the interval to mean anything)" \
        in d["reasons"]
    assert d["decision"] == "refused" and _champion(mlflow_server.url, name) == "1"
