"""The promotion protocol, the evidence it records and its error paths, against an in-memory MLflow client
(no server: fast enough to run once per mutant; issue 21). tests/test_registry.py runs the same flows
against real MLflow servers."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from types import SimpleNamespace

import pytest

from rlsd import registry
from rlsd.config import RegistryConfig, RLSDConfig
from tests.test_registry import ev

# ---------------------------------------------------------------------------------------------- fake client


def _mlflow_missing(what: str):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    return MlflowException(f"{what} not found", error_code=RESOURCE_DOES_NOT_EXIST)


class FakeClient:
    """The MlflowClient calls registry.promote makes, on dicts. ``fail`` maps a method name to an exception
    raised on its ``fail_at``-th call (1-based)."""

    def __init__(self, name: str):
        self.name, self.versions, self.aliases, self.calls = name, {}, {}, []
        self.fail: dict[str, tuple[int, BaseException]] = {}

    def _hit(self, method: str, name: str | None = "") -> None:
        if name != "":  # every call that names the model must name this one (None included)
            assert name == self.name, (method, name)
        self.calls.append(method)
        if method in self.fail:
            n, exc = self.fail[method]
            if self.calls.count(method) == n:
                raise exc

    def add(self, version: int, **tags) -> SimpleNamespace:
        mv = SimpleNamespace(version=str(version), tags={k: str(v) for k, v in tags.items()}, description=None)
        self.versions[str(version)] = mv
        return mv

    def get_model_version(self, name, version):
        self._hit("get_model_version", name)
        if str(version) not in self.versions:
            raise _mlflow_missing(f"version {version}")
        return self.versions[str(version)]

    def get_model_version_by_alias(self, name, alias):
        self._hit("get_model_version_by_alias", name)
        if alias not in self.aliases:
            raise _mlflow_missing(f"alias {alias}")
        return self.versions[self.aliases[alias]]

    def set_model_version_tag(self, name, version, key, value):
        self._hit("set_model_version_tag", name)
        assert isinstance(key, str) and isinstance(value, str), (key, value)  # MLflow's tags are strings
        self.versions[str(version)].tags[key] = str(value)

    def search_model_versions(self, filter_string):
        self._hit("search_model_versions")
        assert filter_string == f"name='{self.name}'"
        return list(self.versions.values())

    def set_registered_model_alias(self, name, alias, version):
        self._hit("set_registered_model_alias", name)
        self.aliases[alias] = str(version)

    def update_model_version(self, name, version, description):
        self._hit("update_model_version", name)
        self.versions[str(version)].description = description


NAME = "rlsd-fake"


@pytest.fixture
def fake(monkeypatch):
    client = FakeClient(NAME)
    def connect(cfg):
        assert isinstance(cfg, RLSDConfig) and cfg.registry.model_name == NAME
        return client

    monkeypatch.setattr(registry, "_client", connect)
    return client


def _cfg(**reg) -> RLSDConfig:
    base = RLSDConfig()
    return base.replace(
        tracking=dataclasses.replace(base.tracking, uri="http://fake:5000"),
        registry=dataclasses.replace(base.registry, model_name=NAME, margin=0.02, max_leakage_rate=0.05,
                                     require_ci_above_zero=True, **reg))


def _measured(e: dict, n: int = 40, leaks: int = 0) -> dict:
    e["leakage"].update(n_checked=n, n_leaks=leaks)
    return e


# ---------------------------------------------------------------------------------------------- promote


def test_first_champion_is_promoted_and_everything_is_recorded(fake):
    fake.add(1)
    t0 = time.time()
    d = registry.promote(_cfg(), version=1, evaluation=_measured(ev(0.3, leak=0.01)))
    assert (d["decision"], d["version"], d["champion_before"], d["champion_after"]) == ("promoted", 1, None, 1)
    assert d["name"] == NAME and fake.aliases == {"champion": "1"}
    assert d["reasons"] == [
        "ok: leakage rate 0.0100 <= registry.max_leakage_rate 0.0500 (0 of 40 outputs)",
        "ok: no @champion exists yet, so the first version within the leakage bound becomes champion (margin and "
        "interval gates need a champion to compare with)",
        "ok: @champion moved to v1 (first champion)"]
    tags = fake.versions["1"].tags
    assert tags[registry.TAG_DECISION] == "promoted" and tags[registry.TAG_STATE] == "promoted"
    assert tags[registry.TAG_PASS1] == "0.3" and tags["rlsd.eval.leakage_rate"] == "0.01"
    assert tags["rlsd.promotion.champion_before"] == "None" and tags["rlsd.promotion.champion_after"] == "1"
    assert tags[registry.TAG_REASONS] == "; ".join(d["reasons"])
    assert t0 - 1 <= float(tags[registry.TAG_DECIDED_TS]) <= time.time() + 1
    assert t0 - 1 <= float(tags[registry.TAG_PENDING_SINCE]) <= time.time() + 1
    assert "T" in tags["rlsd.promotion.decided_at"] and tags["rlsd.promotion.decided_at"].endswith("+00:00")
    assert d["evidence"] == {**registry.evaluation_tags(_measured(ev(0.3, leak=0.01))),
                             "rlsd.promotion.champion_before": "None"}
    desc = fake.versions["1"].description
    first = desc.splitlines()[0]
    assert first.startswith("[") and first.endswith("] promotion to @champion: PROMOTED (champion before: none, after: v1)")
    assert desc.splitlines()[1:] == [f"  - {r}" for r in d["reasons"]]


def test_a_better_version_takes_the_champion_and_the_history_is_kept(fake):
    fake.add(1, **{registry.TAG_PASS1: 0.3})
    fake.aliases["champion"] = "1"
    fake.add(2).description = "older text"
    d = registry.promote(_cfg(), version=2, evaluation=_measured(ev(0.5, diff=0.2, ci_low=0.05, baseline=0.3, vs=(NAME, 1))))
    assert (d["decision"], d["champion_before"], d["champion_after"]) == ("promoted", 1, 2)
    assert d["reasons"][-1] == "ok: @champion moved to v2 from v1"
    assert d["reasons"][1] == "ok: pass@1 difference +0.2000 >= registry.margin 0.0200"
    assert d["reasons"][2] == "ok: paired-bootstrap interval of the difference [+0.0500, +0.3000] is above zero"
    assert fake.aliases["champion"] == "2"
    desc = fake.versions["2"].description
    assert "(champion before: v1, after: v2)" in desc.splitlines()[0] and desc.endswith("\n\nolder text")
    assert fake.versions["2"].tags["rlsd.promotion.champion_before"] == "1"


def test_refused_version_leaves_the_alias_and_says_why(fake):
    fake.add(1, **{registry.TAG_PASS1: 0.3})
    fake.aliases["champion"] = "1"
    fake.add(2)
    d = registry.promote(_cfg(), version=2, evaluation=_measured(ev(0.4, diff=0.1, ci_low=-0.01, vs=(NAME, 1))))
    assert (d["decision"], d["champion_before"], d["champion_after"]) == ("refused", 1, 1)
    assert fake.aliases == {"champion": "1"} and "set_registered_model_alias" not in fake.calls
    assert d["reasons"][2] == ("FAIL: paired-bootstrap interval of the difference [-0.0100, +0.3000] includes or is "
                               "below zero")
    tags = fake.versions["2"].tags
    assert tags[registry.TAG_STATE] == "refused" and registry.TAG_PENDING_SINCE not in tags
    assert "REFUSED" in fake.versions["2"].description.splitlines()[0]
    assert d["evidence"]["rlsd.eval.ci_low"] == "-0.01" and d["evidence"]["rlsd.promotion.champion_before"] == "1"


def test_already_champion_changes_nothing_but_the_record(fake):
    fake.add(1, **{registry.TAG_PASS1: 0.3})
    fake.aliases["champion"] = "1"
    d = registry.promote(_cfg(), version="1", evaluation=_measured(ev(0.3)))
    assert (d["decision"], d["champion_before"], d["champion_after"]) == ("already_champion", 1, 1)
    assert d["reasons"] == ["ok: v1 already holds @champion; nothing to do"]
    assert d["evidence"] == {**registry.evaluation_tags(_measured(ev(0.3))), "rlsd.promotion.champion_before": "1"}
    assert "set_registered_model_alias" not in fake.calls


def test_a_better_pending_candidate_supersedes(fake):
    now = time.time()
    fake.add(1, **{registry.TAG_PASS1: 0.3})
    fake.aliases["champion"] = "1"
    fake.add(2)
    fake.add(3, **{registry.TAG_PASS1: 0.9, registry.TAG_STATE: "pending", registry.TAG_PENDING_SINCE: now - 5})
    d = registry.promote(_cfg(), version=2, evaluation=_measured(ev(0.5, diff=0.2, ci_low=0.05, vs=(NAME, 1))))
    assert (d["decision"], d["champion_before"], d["champion_after"]) == ("superseded", 1, 3)
    assert fake.aliases["champion"] == "3"
    assert d["reasons"][-1] == ("FAIL: @champion is on v3 (recorded pass@1 0.9000), not beaten by this version's "
                                "0.5000 by registry.margin 0.0200 (a concurrent promotion)")
    assert fake.versions["2"].tags[registry.TAG_STATE] == "superseded"


@pytest.mark.parametrize("state, age_tag, age, counts", [
    ("pending", registry.TAG_PENDING_SINCE, 5, True),
    ("pending", registry.TAG_PENDING_SINCE, registry.PENDING_TTL_S + 5, False),  # a crashed promoter's mark
    ("pending", registry.TAG_PENDING_SINCE, registry.PENDING_TTL_S - 5, True),
    ("promoted", registry.TAG_DECIDED_TS, 5, True),                             # promoted moments ago
    ("promoted", registry.TAG_DECIDED_TS, registry.RECENT_S + 5, False),
    ("promoted", registry.TAG_DECIDED_TS, registry.RECENT_S - 5, True),
    ("refused", registry.TAG_DECIDED_TS, 5, False),
    ("pending", registry.TAG_DECIDED_TS, 5, False),                             # pending without its own time
])
def test_read_state_counts_fresh_pending_and_recently_promoted_versions(fake, state, age_tag, age, counts):
    fake.add(1, **{registry.TAG_PASS1: 0.3})
    fake.aliases["champion"] = "1"
    fake.add(2, **{registry.TAG_PASS1: 0.8, registry.TAG_STATE: state, age_tag: time.time() - age})
    fake.add(3, **{registry.TAG_STATE: "pending", registry.TAG_PENDING_SINCE: time.time()})  # no pass@1: never
    champion, candidates = registry._read_state(fake, NAME)
    assert champion.version == "1"
    assert [c.version for c in candidates] == (["2"] if counts else [])


def test_the_alias_is_re_read_until_it_stands_on_the_best(fake, monkeypatch):
    """A concurrent promoter moves the alias back to a worse version right after our move: the re-read
    moves it again (at most 10 moves)."""
    fake.add(1, **{registry.TAG_PASS1: 0.3})
    fake.aliases["champion"] = "1"
    fake.add(2)
    real = fake.set_registered_model_alias
    moves = []

    def interfering(name, alias, version):
        moves.append(str(version))
        real(name, alias, version)
        if len(moves) == 1:
            real(name, alias, "1")  # the other promoter's write lands after ours

    monkeypatch.setattr(fake, "set_registered_model_alias", interfering)
    d = registry.promote(_cfg(), version=2, evaluation=_measured(ev(0.5, diff=0.2, ci_low=0.05, vs=(NAME, 1))))
    assert moves == ["2", "2"] and d["decision"] == "promoted" and fake.aliases["champion"] == "2"


def test_unreachable_server_says_whether_the_alias_moved(fake):
    fake.add(1)
    fake.fail["get_model_version"] = (1, ConnectionError("refused"))
    with pytest.raises(registry.RegistryUnavailable, match="no alias was changed") as e:
        registry.promote(_cfg(), version=1, evaluation=_measured(ev(0.3)))
    assert "MLflow at http://fake:5000 did not answer during promote v1 (refused)" in str(e.value)
    assert isinstance(e.value.__cause__, ConnectionError)

    fake.calls.clear()
    fake.fail = {"update_model_version": (1, TimeoutError("slow"))}  # after the alias moved, while recording
    with pytest.raises(registry.RegistryUnavailable, match=r"@champion was moved to v1 before the failure"):
        registry.promote(_cfg(), version=1, evaluation=_measured(ev(0.3)))
    assert fake.aliases["champion"] == "1"


def test_a_failure_while_moving_the_alias_marks_the_version_failed(fake):
    fake.add(1)
    fake.fail["set_registered_model_alias"] = (1, RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):  # not a transport failure: raised as it is
        registry.promote(_cfg(), version=1, evaluation=_measured(ev(0.3)))
    assert fake.versions["1"].tags[registry.TAG_STATE] == "failed"


def test_promote_checks_the_version_and_the_evaluation_first(fake):
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="version 7 not found"):
        registry.promote(_cfg(), version=7, evaluation=ev(0.3))
    fake.add(1)
    with pytest.raises(ValueError, match=r"evaluation\['candidate'\] is missing"):
        registry.promote(_cfg(), version=1, evaluation={"leakage": {"rate": 0.0}})
    assert not fake.versions["1"].tags  # nothing written before the evaluation was read


def test_description_is_capped_and_the_newest_decision_first(fake):
    fake.add(1).description = "x" * (registry.MAX_DESCRIPTION_CHARS + 100)
    registry.promote(_cfg(), version=1, evaluation=_measured(ev(0.3)))
    desc = fake.versions["1"].description
    assert len(desc) == registry.MAX_DESCRIPTION_CHARS and desc.startswith("[")


# ---------------------------------------------------------------------------------------------- evidence


def test_evaluation_tags_exact():
    e = ev(0.5, diff=0.2, ci_low=0.05, leak=0.01, baseline=0.3, vs=("m", 2))
    e["leakage"]["n_checked"] = 40
    assert registry.evaluation_tags(e) == {
        "rlsd.eval.pass_at_1": "0.5", "rlsd.eval.pass_at_k": "0.7", "rlsd.eval.k": "4",
        "rlsd.eval.greedy_pass_at_1": "0.5", "rlsd.eval.teacher_greedy_pass_at_1": "0.9",
        "rlsd.eval.candidate_model": "cand", "rlsd.eval.per_type": '{"numeric": 0.5}',
        "rlsd.eval.baseline_model": "base", "rlsd.eval.baseline_kind": "champion", "rlsd.eval.baseline_version": "2",
        "rlsd.eval.baseline_uri": "models:/m/2", "rlsd.eval.baseline_pass_at_1": "0.3", "rlsd.eval.diff_pass1": "0.2",
        "rlsd.eval.ci_low": "0.05", "rlsd.eval.ci_high": "0.3", "rlsd.eval.n_tasks": "64",
        "rlsd.eval.leakage_rate": "0.01", "rlsd.eval.leakage_checked": "40", "rlsd.eval.teacher_student_gap": "0.1"}
    assert registry.evaluation_tags({}) == {}


def test_tag_values_are_json_and_capped():
    assert registry._tag_value({"b": 1, "a": [1, 2]}) == '{"a": [1, 2], "b": 1}'
    assert registry._tag_value([0.5]) == "[0.5]" and registry._tag_value(3) == "3"
    s = "y" * registry.MAX_TAG_CHARS
    assert registry._tag_value(s) == s
    long = registry._tag_value("z" * (registry.MAX_TAG_CHARS + 1))
    assert len(long) == registry.MAX_TAG_CHARS - 1 and long.endswith("z[truncated]")


def test_numbers_in_the_evaluation(tmp_path):
    assert registry._num({"a": {"b": 2}}, "a", "b") == 2.0
    assert registry._num({"a": {}}, "a", "b", required=False) is None
    assert registry._num({"a": {"b": None}}, "a", "b", required=False) is None
    for bad in (True, "1", float("nan"), math.inf):
        with pytest.raises(ValueError, match=r"evaluation\['a'\]\['b'\] must be a finite number"):
            registry._num({"a": {"b": bad}}, "a", "b")
    with pytest.raises(ValueError) as e:
        registry._num({}, "a", "b")
    assert str(e.value) == ("evaluation['a'] is missing; pass the JSON written by `rlsd evaluate` (candidate.pass@1, "
                            "leakage.rate, and comparison when a champion exists)")
    with pytest.raises(ValueError, match=r"^evaluation\['a'\]\['b'\] is missing"):
        registry._num({"a": 1}, "a", "b")


def test_load_evaluation_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        registry.load_evaluation(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not JSON"):
        registry.load_evaluation(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(ValueError, match="must hold a JSON object, got list"):
        registry.load_evaluation(tmp_path / "list.json")
    (tmp_path / "ok.json").write_text(json.dumps(ev(0.5)))
    assert registry.load_evaluation(tmp_path / "ok.json") == ev(0.5)


def test_small_readers():
    now = 1000.0
    mv = SimpleNamespace(version="1", tags={registry.TAG_PASS1: "0.25", "t": "990", "bad": "x"})
    assert registry._pass1(mv) == 0.25 and registry._pass1(SimpleNamespace(tags={})) is None
    assert registry._pass1(SimpleNamespace(tags={registry.TAG_PASS1: "x"})) is None
    assert registry._age(mv, "t", now) == 10.0
    assert registry._age(mv, "missing", now) == math.inf and registry._age(mv, "bad", now) == math.inf
    assert registry._unreachable(ConnectionError()) and registry._unreachable(TimeoutError())
    assert registry._unreachable(RuntimeError("API request to /x failed with exception boom"))
    assert not registry._unreachable(RuntimeError("bad request"))


def test_get_alias_absent_or_error(fake):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

    assert registry._get_alias(fake, NAME, "champion") is None
    fake.add(4)
    fake.aliases["champion"] = "4"
    assert registry._get_alias(fake, NAME, "champion").version == "4"
    for exc, absent in ((MlflowException("no such alias", error_code=INVALID_PARAMETER_VALUE), True),
                        (MlflowException("Registered model alias x does not exist", error_code=INTERNAL_ERROR), True),
                        (MlflowException("Alias Not Found", error_code=INTERNAL_ERROR), True),
                        (MlflowException("database is locked", error_code=INTERNAL_ERROR), False)):
        fake.fail = {"get_model_version_by_alias": (len([c for c in fake.calls if c == "get_model_version_by_alias"]) + 1,
                                                    exc)}
        if absent:
            assert registry._get_alias(fake, NAME, "champion") is None
        else:
            with pytest.raises(MlflowException, match="locked"):
                registry._get_alias(fake, NAME, "champion")


def test_gate_reasons_exact():
    reg = RegistryConfig(margin=0.02, require_ci_above_zero=False, max_leakage_rate=0.05)
    ok, reasons = registry.check_gates(reg, ev(0.6, diff=0.01, ci_low=-0.5, leak=0.1), has_champion=True)
    assert ok is False and reasons == [
        "FAIL: leakage rate 0.1000 > registry.max_leakage_rate 0.0500",
        "FAIL: pass@1 difference +0.0100 < registry.margin 0.0200",
        "ok: interval [-0.5000, +0.3000] not gated (registry.require_ci_above_zero is false)",
        "ok: 64 paired tasks >= registry.min_paired_tasks 20"]
    e = ev(0.6, diff=0.03, ci_low=0.01)
    del e["comparison"]["ci_high"]
    ok, reasons = registry.check_gates(dataclasses.replace(reg, require_ci_above_zero=True), e, has_champion=True)
    assert ok is True and reasons[-2] == "ok: paired-bootstrap interval of the difference low end +0.0100 is above zero"
    ok, reasons = registry.check_gates(reg, ev(0.1, leak=0.5), has_champion=False)
    assert ok is False and reasons[-1] == ("FAIL: no @champion exists yet; the first version within the leakage bound "
                                           "would become champion")


def test_set_champion_moves_the_alias(fake):
    fake.add(3)
    registry._set_champion(fake, NAME, 3)
    assert fake.aliases == {"champion": "3"}


def test_choose_at_the_margin_exactly():
    champ = SimpleNamespace(version="1", tags={registry.TAG_PASS1: "0.25"})
    best = SimpleNamespace(version="2", tags={registry.TAG_PASS1: "0.5"})
    assert registry._choose(champ, [best], 0.25) is best  # a gain of exactly the margin is enough
    assert registry._choose(champ, [best], 0.26) is champ


def test_refused_first_version_records_no_champion(fake):
    fake.add(1)
    d = registry.promote(_cfg(), version=1, evaluation=_measured(ev(0.3, leak=0.5), leaks=20))
    assert (d["decision"], d["champion_before"], d["champion_after"]) == ("refused", None, None)
    assert fake.versions["1"].tags["rlsd.promotion.champion_after"] == "None" and fake.aliases == {}
    assert "(champion before: none, after: none)" in fake.versions["1"].description.splitlines()[0]


def test_load_evaluation_errors_name_the_file(tmp_path):
    for name, text, msg in (("none.json", None, "does not exist"), ("bad.json", "{not json", "is not JSON"),
                            ("list.json", "[1]", "must hold a JSON object")):
        p = tmp_path / name
        if text is not None:
            p.write_text(text)
        with pytest.raises((FileNotFoundError, ValueError), match=rf"evaluation file '{p}' {msg}"):
            registry.load_evaluation(p)


def test_exact_messages_of_the_gates_that_are_recorded_on_the_version():
    reg = RegistryConfig(margin=0.02, require_ci_above_zero=True, max_leakage_rate=0.05)
    e = ev(0.6, diff=0.1, ci_low=0.05)
    e["leakage"] = {"rate": None, "n_checked": 0}
    assert registry.check_gates(reg, e, has_champion=True)[1][0] == (
        "FAIL: leakage not measured (0 outputs checked: no task's privileged context has 3 words beside its answer); "
        "set registry.allow_unmeasured_leakage: true to promote anyway")
    ok, reasons = registry.check_gates(reg, _measured(ev(0.6)), has_champion=True)
    assert ok is False and reasons[-1] == (
        "FAIL: the evaluation has no comparison with a baseline (comparison is null): evaluate the candidate against "
        "the current champion (`rlsd evaluate` with a baseline)")
    with pytest.raises(ValueError, match=r"evaluation\['leakage'\] is missing"):  # not an AttributeError
        registry.check_gates(reg, {**ev(0.6), "leakage": None}, has_champion=False)


def test_tag_values_keep_python_spelling_for_scalars():
    assert registry._tag_value(True) == "True" and registry._tag_value(None) == "None"
    assert registry._tag_value(0.5) == "0.5"


def test_get_alias_absent_by_error_code_alone(fake):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    fake.fail = {"get_model_version_by_alias": (1, MlflowException("gone", error_code=RESOURCE_DOES_NOT_EXIST))}
    assert registry._get_alias(fake, NAME, "champion") is None


@pytest.mark.parametrize("state, tag, ttl", [("pending", registry.TAG_PENDING_SINCE, registry.PENDING_TTL_S),
                                             ("promoted", registry.TAG_DECIDED_TS, registry.RECENT_S)])
def test_read_state_windows_are_open_at_their_end(fake, monkeypatch, state, tag, ttl):
    import types

    monkeypatch.setattr(registry, "time", types.SimpleNamespace(time=lambda: 10_000.0))
    fake.add(2, **{registry.TAG_PASS1: 0.8, registry.TAG_STATE: state, tag: 10_000.0 - ttl})
    assert registry._read_state(fake, NAME)[1] == []  # exactly the window's length old: out
    fake.versions["2"].tags[tag] = str(10_000.0 - ttl + 0.5)
    assert [c.version for c in registry._read_state(fake, NAME)[1]] == ["2"]


def test_an_alias_that_never_stands_stops_after_ten_moves(fake, monkeypatch):
    fake.add(1, **{registry.TAG_PASS1: 0.3})
    fake.aliases["champion"] = "1"
    fake.add(2)
    real = fake.set_registered_model_alias
    moves = []

    def always_overwritten(name, alias, version):
        moves.append(version)
        real(name, alias, "1")

    monkeypatch.setattr(fake, "set_registered_model_alias", always_overwritten)
    d = registry.promote(_cfg(), version=2, evaluation=_measured(ev(0.5, diff=0.2, ci_low=0.05, vs=(NAME, 1))))
    assert len(moves) == 10 and d["decision"] == "superseded" and d["champion_after"] == 1, (d, moves)


def test_unreachable_message_exact_and_the_first_error_kept(fake, monkeypatch):
    fake.add(1)
    fake.fail["get_model_version"] = (1, ConnectionError("x" * 200))
    with pytest.raises(registry.RegistryUnavailable) as e:
        registry.promote(_cfg(), version=1, evaluation=_measured(ev(0.3)))
    assert str(e.value) == (
        f"MLflow at http://fake:5000 did not answer during promote v1 ({'x' * 160}); no alias was changed; start or "
        "reach the server (check tracking.uri, raise tracking.http_retries to wait longer) and run the promotion again")

    # the alias move fails, and so does marking the version failed: the first error is the one reported
    fake.fail = {"set_registered_model_alias": (1, ConnectionError("alias write refused"))}
    real_tag = fake.set_model_version_tag

    def tag(name, version, key, value):
        if value == "failed":
            raise ConnectionError("tag write refused")
        real_tag(name, version, key, value)

    monkeypatch.setattr(fake, "set_model_version_tag", tag)
    with pytest.raises(registry.RegistryUnavailable, match=r"\(alias write refused\); no alias was changed"):
        registry.promote(_cfg(), version=1, evaluation=_measured(ev(0.3)))


def test_paired_task_gate_and_champion_gate_messages():
    reg = RegistryConfig(margin=0.02, require_ci_above_zero=True, max_leakage_rate=0.05, model_name=NAME)
    e = _measured(ev(0.6, diff=0.1, ci_low=0.05, vs=(NAME, 1)))
    e["comparison"]["n_tasks"] = 20
    ok, reasons = registry.check_gates(reg, e, has_champion=True, champion_version=1)
    assert ok is True and reasons[-2:] == ["ok: 20 paired tasks >= registry.min_paired_tasks 20",
                                           f"ok: compared with the current champion {NAME} v1"]
    e["comparison"]["n_tasks"] = 19
    ok, reasons = registry.check_gates(reg, e, has_champion=True, champion_version="1")
    assert ok is False and reasons[-2] == ("FAIL: 19 paired tasks < registry.min_paired_tasks 20 (too few for the "
                                           "interval to mean anything)")
    del e["comparison"]["n_tasks"]
    ok, reasons = registry.check_gates(reg, e, has_champion=True)
    assert ok is False and reasons[-1] == ("FAIL: unknown paired tasks < registry.min_paired_tasks 20 (too few for the "
                                           "interval to mean anything)")
    e = _measured(ev(0.6, diff=0.1, ci_low=0.05))  # compared with something unnamed
    ok, reasons = registry.check_gates(reg, e, has_champion=True, champion_version=1)
    assert ok is False and reasons[-1] == (
        f"FAIL: compared with an unnamed baseline (the evaluation does not record which model it compared with), not "
        f"with the current champion {NAME} v1: evaluate the candidate against models:/{NAME}@champion")


def test_promote_refuses_a_comparison_that_is_not_with_the_champion(fake):
    fake.add(1, **{registry.TAG_PASS1: 0.3})
    fake.aliases["champion"] = "1"
    fake.add(2)
    d = registry.promote(_cfg(), version=2, evaluation=_measured(ev(0.5, diff=0.2, ci_low=0.05)))
    assert d["decision"] == "refused" and fake.aliases["champion"] == "1"
    assert d["reasons"][-1].startswith("FAIL: compared with an unnamed baseline")


def test_a_champion_with_a_better_record_keeps_the_alias(fake):
    """The candidate beat the champion on its own evaluation, but the champion's recorded pass@1 is higher than
    the candidate's by more than the margin (evaluations on different sets): the alias stays."""
    fake.add(1, **{registry.TAG_PASS1: 0.9})
    fake.aliases["champion"] = "1"
    fake.add(2)
    d = registry.promote(_cfg(), version=2, evaluation=_measured(ev(0.5, diff=0.2, ci_low=0.05, vs=(NAME, 1))))
    assert (d["decision"], d["champion_after"]) == ("superseded", 1) and fake.aliases["champion"] == "1"


def test_the_champion_is_judged_by_what_this_evaluation_measured_not_by_an_old_record(fake):
    """Review (reg): v1 became champion as the first version with pass@1 0.9 on an easier, older held-out set.
    v2, evaluated against v1 on today's set, scores 0.5 against v1's 0.3 there (+0.2, interval above zero): it
    beats the champion on the evaluation set, so it is promoted; no promotion runs beside it, so it must not be
    'superseded (a concurrent promotion)' by v1's stale record."""
    fake.add(1, **{registry.TAG_PASS1: 0.9, registry.TAG_STATE: "promoted", registry.TAG_DECIDED_TS: time.time() - 9e5})
    fake.aliases["champion"] = "1"
    fake.add(2)
    e = _measured(ev(0.5, diff=0.2, ci_low=0.05, baseline=0.3, vs=(NAME, 1)))
    d = registry.promote(_cfg(), version=2, evaluation=e)
    assert (d["decision"], d["champion_after"]) == ("promoted", 2) and fake.aliases["champion"] == "2"
    # a better pending candidate beside it still wins; the measured number is only the champion's
    fake.aliases["champion"] = "1"
    fake.add(3, **{registry.TAG_PASS1: 0.7, registry.TAG_STATE: "pending", registry.TAG_PENDING_SINCE: time.time()})
    fake.add(4)
    d = registry.promote(_cfg(), version=4, evaluation=_measured(ev(0.5, diff=0.2, ci_low=0.05, baseline=0.3,
                                                                      vs=(NAME, 1))))
    assert (d["decision"], d["champion_after"]) == ("superseded", 3) and fake.aliases["champion"] == "3"
