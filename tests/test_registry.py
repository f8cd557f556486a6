"""Registry: gates (pure), then register / alias / promote / refuse / concurrent promotions / load by
alias against a real ``mlflow server`` with artifacts on a local folder and on S3 (SeaweedFS)."""

from __future__ import annotations

import dataclasses
import threading
from types import SimpleNamespace

import pytest
import torch

from rlsd import registry
from rlsd.config import RegistryConfig, RLSDConfig
from rlsd.registry import check_gates, load_champion, load_champion_pyfunc, promote, register_model

PROMPT = "Q:12+34=?\nA:"


def ev(pass1: float, *, diff: float | None = None, ci_low: float = 0.01, ci_high: float = 0.3,
       leak: float = 0.0, baseline: float | None = None, vs: tuple[str, int] | None = None) -> dict:
    """An evaluation dict in the shape `rlsd evaluate` writes; ``vs`` (name, version): the champion it was
    compared with (the gate promotes over a champion only an evaluation against that champion)."""
    comparison = None if diff is None else {"diff_pass1": diff, "ci_low": ci_low, "ci_high": ci_high, "n_tasks": 64}
    named = {} if vs is None else {"kind": "champion", "name": vs[0], "version": str(vs[1]),
                                   "uri": f"models:/{vs[0]}/{vs[1]}"}
    return {"candidate": {"model": "cand", "pass@1": pass1, "pass@k": min(1.0, pass1 + 0.2), "greedy_pass@1": pass1,
                          "k": 4, "per_type": {"numeric": pass1}, "teacher_greedy_pass@1": 0.9},
            "baseline": None if baseline is None and vs is None else {"model": "base", "pass@1": baseline, **named},
            "comparison": comparison,
            "leakage": {"rate": leak, "examples": [], "teacher_student_gap": 0.1}}


# ----------------------------------------------------------------------------------------------
# Gates and the alias choice (no server)
# ----------------------------------------------------------------------------------------------

REG = RegistryConfig(margin=0.02, require_ci_above_zero=True, max_leakage_rate=0.05)


@pytest.mark.parametrize("evaluation, has_champion, passed, failing", [
    (ev(0.6, diff=0.10, ci_low=0.03), True, True, None),
    (ev(0.6, diff=0.02, ci_low=0.001), True, True, None),                     # margin reached exactly
    (ev(0.6, diff=0.01, ci_low=0.03), True, False, "pass@1 difference +0.0100 < registry.margin"),
    (ev(0.6, diff=0.10, ci_low=0.0), True, False, "includes or is below zero"),
    (ev(0.6, diff=0.10, ci_low=-0.02), True, False, "includes or is below zero"),
    (ev(0.6, diff=0.10, ci_low=0.03, leak=0.06), True, False, "leakage rate 0.0600 >"),
    (ev(0.6, diff=0.10, ci_low=0.03, leak=0.05), True, True, None),           # bound is inclusive
    (ev(0.6), True, False, "no comparison with a baseline"),
    (ev(0.1), False, True, None),                                              # first champion: leakage only
    (ev(0.1, leak=0.5), False, False, "leakage rate 0.5000 >"),
])
def test_gates(evaluation, has_champion, passed, failing):
    ok, reasons = check_gates(REG, evaluation, has_champion=has_champion)
    assert ok is passed
    fails = [r for r in reasons if r.startswith("FAIL")]
    if failing is None:
        assert not fails
    else:
        assert any(failing in r for r in fails), reasons


def test_gates_without_interval_requirement_and_bad_input():
    lax = dataclasses.replace(REG, require_ci_above_zero=False)
    assert check_gates(lax, ev(0.6, diff=0.10, ci_low=-0.5), has_champion=True)[0] is True
    with pytest.raises(ValueError, match=r"evaluation\['leakage'\]\['rate'\] is missing"):
        check_gates(REG, {"candidate": {"pass@1": 0.5}, "leakage": {}}, has_champion=False)
    with pytest.raises(ValueError, match=r"evaluation\['comparison'\]\['diff_pass1'\] must be a finite number"):
        check_gates(REG, {**ev(0.5, diff=0.1), "comparison": {"diff_pass1": "big", "ci_low": 0.1}}, has_champion=True)


@pytest.mark.parametrize("has_champion", [False, True])
def test_leakage_measured_on_no_output_is_no_measurement(has_champion):
    """0 of 0 outputs checked is not a rate of 0: refused unless the operator allows it; then the other
    gates still decide. A rate of 0 on 40 checked outputs passes as before."""
    unmeasured = ev(0.7, diff=0.2, ci_low=0.05)
    unmeasured["leakage"] = {"rate": None, "n_checked": 0, "n_leaks": 0, "examples": [], "teacher_student_gap": 0.1}
    ok, reasons = check_gates(REG, unmeasured, has_champion=has_champion)
    assert ok is False and any("FAIL: leakage not measured" in r for r in reasons)
    allow = dataclasses.replace(REG, allow_unmeasured_leakage=True)
    ok, reasons = check_gates(allow, unmeasured, has_champion=has_champion)
    assert ok is True and any("leakage not measured" in r and r.startswith("ok") for r in reasons)
    worse = {**unmeasured, "comparison": {"diff_pass1": -0.1, "ci_low": -0.2, "ci_high": 0.0, "n_tasks": 64}}
    assert check_gates(allow, worse, has_champion=True)[0] is False
    measured = ev(0.7, diff=0.2, ci_low=0.05)
    measured["leakage"].update(n_checked=40, n_leaks=0)
    ok, reasons = check_gates(REG, measured, has_champion=has_champion)
    assert ok is True and any("(0 of 40 outputs)" in r for r in reasons)


def _mv(version: int, pass1: float | None) -> SimpleNamespace:
    return SimpleNamespace(version=str(version), tags={} if pass1 is None else {registry.TAG_PASS1: str(pass1)})


def test_choose_prefers_best_candidate_and_keeps_champion_on_ties():
    champ = _mv(1, 0.50)
    assert registry._choose(champ, [_mv(2, 0.55), _mv(3, 0.60)], 0.02).version == "3"
    assert registry._choose(champ, [_mv(2, 0.51)], 0.02).version == "1"       # below the margin
    assert registry._choose(champ, [_mv(2, 0.50)], 0.0).version == "1"        # a tie keeps the champion
    assert registry._choose(None, [_mv(2, 0.4), _mv(3, 0.4)], 0.0).version == "3"
    assert registry._choose(_mv(1, None), [_mv(2, 0.1)], 0.5).version == "2"  # unscored champion
    assert registry._choose(champ, [], 0.0) is champ


# ----------------------------------------------------------------------------------------------
# Against real servers
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Four tiny models with different weights (so a load can tell which one it got)."""
    from rlsd.models import build_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    paths = [root / f"m{i}" for i in range(4)]
    for i, path in enumerate(paths):
        build_tiny_model(path, hidden_size=32, num_layers=1, num_heads=1, seed=i)
    return paths


@pytest.fixture(params=["local", "s3"])
def server(request):
    return request.param, request.getfixturevalue("mlflow_server" if request.param == "local" else "mlflow_server_s3")


def _cfg(url: str, model_name: str, **reg) -> RLSDConfig:
    base = RLSDConfig()
    return base.replace(
        tracking=dataclasses.replace(base.tracking, uri=url, experiment="registry-tests", http_retries=1),
        registry=dataclasses.replace(base.registry, model_name=model_name, margin=0.02, max_leakage_rate=0.05, **reg))


def _client(url: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=url, registry_uri=url)


def _greedy(model, tok, n: int = 8) -> list[int]:
    enc = tok(PROMPT, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return out[0, enc["input_ids"].shape[1]:].tolist()


@pytest.mark.integration
def test_register_promote_refuse_and_load_by_alias(server, tiny_models, tmp_path):
    kind, srv = server
    name = f"rlsd-{kind}-flow"
    cfg = _cfg(srv.url, name)
    client = _client(srv.url)

    # register: a new version, @challenger on it, evaluation numbers as tags
    r1 = register_model(cfg, tiny_models[0], evaluation=ev(0.30, leak=0.01))
    assert (r1["name"], r1["version"], r1["uri"]) == (name, 1, f"models:/{name}/1")
    assert client.get_model_version_by_alias(name, "challenger").version == "1"
    tags = client.get_model_version(name, "1").tags
    assert tags["rlsd.eval.pass_at_1"] == "0.3" and tags["rlsd.eval.leakage_rate"] == "0.01"
    assert tags["rlsd.source_dir"] == str(tiny_models[0].resolve())
    reqs = client.download_artifacts(r1["run_id"], "evaluation.json", str(tmp_path))
    assert '"pass@1": 0.3' in open(reqs).read()

    # the weights are stored in full where the server keeps artifacts (no hub reference)
    if kind == "local":
        from pathlib import Path

        assert any(Path(srv.artifacts_destination).rglob("model.safetensors"))
    else:
        import boto3

        env = srv.extra_env
        s3 = boto3.client("s3", endpoint_url=env["MLFLOW_S3_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow", Prefix="mlflow/").get("Contents", [])]
        assert any(k.endswith("model.safetensors") for k in keys), keys

    # no champion yet: the first version within the leakage bound becomes champion, and says so
    d1 = promote(cfg, version=1, evaluation=ev(0.30, leak=0.01))
    assert d1["decision"] == "promoted" and d1["champion_before"] is None and d1["champion_after"] == 1
    assert any("no @champion exists yet" in r for r in d1["reasons"])
    assert client.get_model_version_by_alias(name, "champion").version == "1"

    # refused: better pass@1 but the interval includes zero; the reason is on the version
    register_model(cfg, tiny_models[1])
    d2 = promote(cfg, version=2, evaluation=ev(0.40, diff=0.10, ci_low=-0.01, baseline=0.30))
    assert d2["decision"] == "refused" and d2["champion_after"] == 1
    v2 = client.get_model_version(name, "2")
    assert v2.tags["rlsd.promotion.decision"] == "refused"
    assert "includes or is below zero" in v2.tags["rlsd.promotion.reasons"]
    assert "REFUSED" in v2.description and "includes or is below zero" in v2.description
    assert v2.tags["rlsd.eval.ci_low"] == "-0.01"

    # refused for leakage although it wins clearly
    register_model(cfg, tiny_models[3])
    d4 = promote(cfg, version=3, evaluation=ev(0.90, diff=0.60, ci_low=0.4, leak=0.2, baseline=0.30))
    assert d4["decision"] == "refused" and any("leakage rate 0.2000 >" in r for r in d4["reasons"])

    # passes every gate: @champion moves, the evidence is recorded
    register_model(cfg, tiny_models[2])
    d3 = promote(cfg, version=4, evaluation=ev(0.50, diff=0.20, ci_low=0.05, baseline=0.30, vs=(name, 1)))
    assert d3["decision"] == "promoted" and (d3["champion_before"], d3["champion_after"]) == (1, 4)
    assert client.get_model_version_by_alias(name, "champion").version == "4"
    v4 = client.get_model_version(name, "4")
    assert v4.tags["rlsd.promotion.decision"] == "promoted" and v4.tags["rlsd.promotion.champion_before"] == "1"
    assert "PROMOTED" in v4.description
    assert client.get_model_version_by_alias(name, "challenger").version == "4"

    # models:/<name>@champion loads the promoted weights and generates text
    model, tok = load_champion(cfg)
    from rlsd.models import load_model, load_tokenizer

    src = load_model(tiny_models[2])
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), src.state_dict().values()))
    new = _greedy(model, tok)
    assert len(new) == 8 and new == _greedy(src, load_tokenizer(tiny_models[2]))
    text = tok.decode(new)
    assert isinstance(text, str) and len(text) > 0
    if kind == "local":  # the pyfunc flavour too (once is enough)
        out = load_champion_pyfunc(cfg).predict([PROMPT], params={"max_new_tokens": 6})
        assert isinstance(out[0], str) and len(out[0]) > 0


def test_embedded_sqlite_registry(tiny_models, tmp_path, monkeypatch):
    """The embedded default (a local SQLite store, no server): register, first champion, re-promote."""
    monkeypatch.chdir(tmp_path)
    cfg = RLSDConfig()
    assert cfg.tracking.uri.startswith("sqlite:///")
    r = register_model(cfg, tiny_models[0], evaluation=ev(0.4))
    assert r["version"] == 1
    d = promote(cfg, version=1, evaluation=ev(0.4))
    assert (d["decision"], d["champion_before"], d["champion_after"]) == ("promoted", None, 1)
    again = promote(cfg, version=1, evaluation=ev(0.4))
    assert again["decision"] == "already_champion"
    mv = _client(f"sqlite:///{tmp_path}/artifacts/mlflow/mlflow.db").get_model_version(cfg.registry.model_name, "1")
    assert mv.description.count("promotion to @champion") == 2  # both decisions kept, newest first
    assert mv.description.startswith("[") and "ALREADY_CHAMPION" in mv.description.splitlines()[0]
    model, tok = load_champion(cfg)
    # the loaded champion is the registered version's model: same weights, same greedy tokens
    from rlsd.models import load_model, load_tokenizer

    src = load_model(tiny_models[0])
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), src.state_dict().values()))
    got = _greedy(model, tok, 4)
    assert len(got) == 4 and got == _greedy(src, load_tokenizer(tiny_models[0]), 4)
    enc = tok(PROMPT, return_tensors="pt")
    with torch.no_grad():
        logits = [m(**enc).logits for m in (model, src, load_model(tiny_models[1]))]
    assert torch.equal(logits[0], logits[1])  # the registered version's output, exactly
    assert not torch.allclose(logits[0], logits[2])  # and not another model's (the check can fail)
    assert any((tmp_path / "artifacts" / "mlflow" / "artifacts").rglob("model.safetensors"))


@pytest.mark.integration
def test_load_champion_without_one_is_a_clear_error(mlflow_server):
    with pytest.raises(LookupError, match="has no @champion"):
        load_champion(_cfg(mlflow_server.url, "rlsd-never-registered"))


@pytest.mark.integration
def test_concurrent_promotions_end_on_the_better_model(mlflow_server, tiny_models, monkeypatch):
    name = "rlsd-concurrent"
    cfg = _cfg(mlflow_server.url, name)
    client = _client(mlflow_server.url)
    for i in range(5):
        register_model(cfg, tiny_models[i % len(tiny_models)])
    assert promote(cfg, version=1, evaluation=ev(0.30))["decision"] == "promoted"

    # 1) two promotions released together
    results: dict[int, dict] = {}
    barrier = threading.Barrier(2)

    def run(version: int, pass1: float) -> None:
        barrier.wait()
        results[version] = promote(cfg, version=version, evaluation=ev(pass1, diff=pass1 - 0.30, ci_low=0.05,
                                                                       vs=(name, 1)))

    threads = [threading.Thread(target=run, args=a) for a in ((2, 0.50), (3, 0.60))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert client.get_model_version_by_alias(name, "champion").version == "3"
    assert results[3]["decision"] == "promoted"
    assert results[2]["decision"] in ("promoted", "superseded")  # promoted first, or lost to v3 at once
    for v in ("2", "3"):  # no decision lost
        assert client.get_model_version(name, v).tags["rlsd.promotion.decision"] == results[int(v)]["decision"]

    # 2) the bad interleaving, forced: v4 (worse) reads, stalls before its alias write while v5
    # (better) promotes completely, then v4 writes last. v4's re-read must hand the alias back to v5.
    at_write, v5_done = threading.Event(), threading.Event()
    real_set = registry._set_champion

    def slow_set(client_, name_, version):
        if str(version) == "4" and not at_write.is_set():
            at_write.set()
            assert v5_done.wait(120)
        real_set(client_, name_, version)

    monkeypatch.setattr(registry, "_set_champion", slow_set)
    t4 = threading.Thread(target=lambda: results.__setitem__(4, promote(
        cfg, version=4, evaluation=ev(0.70, diff=0.10, ci_low=0.05, vs=(name, 3)))))
    t4.start()
    assert at_write.wait(120)
    results[5] = promote(cfg, version=5, evaluation=ev(0.80, diff=0.20, ci_low=0.05, vs=(name, 3)))
    v5_done.set()
    t4.join(120)
    assert results[5]["decision"] == "promoted"
    assert results[4]["decision"] == "superseded" and results[4]["champion_after"] == 5
    assert client.get_model_version_by_alias(name, "champion").version == "5"
    assert "a concurrent promotion" in client.get_model_version(name, "4").tags["rlsd.promotion.reasons"]
