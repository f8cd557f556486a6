"""Grader specs (rlsd.verifiers.graders): the one-line errors users read when a config loads (the whole
message, with the lists of known names), the boundaries of what a spec accepts, the normalised spec
validation returns, where ``model: base`` grades, the judge nodes found for batching, what prefetch sends to
the judge, and the probes and thresholds of build-tasks' grader check. No model is loaded: the judge is a
stand-in that records its calls."""

from __future__ import annotations

import pytest

from rlsd.tasks import Task
from rlsd.verifiers import graders as G

W = "rewards.grader"
SIM = {"grader": "similarity", "metric": "bleu"}
F1 = {"grader": "similarity", "metric": "token_f1"}
KNOWN_GRADERS = "similarity, rubric, judge, verifier, gate, min, mean, product, weighted"
KNOWN_METRICS = "rouge_l, bleu, token_f1, fuzzy, embedding"


def _error(spec, where=W) -> str:
    with pytest.raises(ValueError) as e:
        G.validate_spec(spec, where)
    return str(e.value)


# --- the messages users read ---------------------------------------------------------------------


def test_not_a_mapping_names_the_type():
    assert _error(3) == f"{W}: a grader spec is a metric name or a mapping, got int"
    assert _error(["bleu"]) == f"{W}: a grader spec is a metric name or a mapping, got list"


def test_the_default_place_is_grader():
    with pytest.raises(ValueError, match=r"^grader: unknown grader 'rouge'; known: similarity, "):
        G.validate_spec({"grader": "rouge"})


def test_unknown_grader_and_metric_list_the_known_names():
    assert _error({"grader": "rouge"}) == (f"{W}: unknown grader 'rouge'; known: {KNOWN_GRADERS} "
                                           f"(or a metric name: {KNOWN_METRICS})")
    assert _error("meteor") == f"{W}: unknown similarity metric 'meteor'; known: {KNOWN_METRICS}"


def test_unknown_verifier_names_it_and_lists_the_exact_verifiers_without_text():
    known = "code, expression, json, label, numeric, sql"
    assert _error({"grader": "verifier", "name": "astrology"}) == (
        f"{W}: unknown verifier 'astrology'; known: {known}")
    # 'text' is the free-text verifier itself (it would grade with this very spec): refused
    assert _error({"grader": "verifier", "name": "text"}) == f"{W}: unknown verifier 'text'; known: {known}"
    assert G.validate_spec({"grader": "verifier", "name": "json"}, W) == {"grader": "verifier", "name": "json"}


def test_rubric_item_errors_name_the_item():
    both = {"grader": "rubric", "items": [{"phrase": "spooler"}, {"phrase": "queue", "pattern": "q"}]}
    assert _error(both) == f"{W}.items[1]: an item has exactly one of 'phrase' or 'pattern'"
    neither = {"grader": "rubric", "items": [{"weight": 1}]}
    assert _error(neither) == f"{W}.items[0]: an item has exactly one of 'phrase' or 'pattern'"
    assert _error({"grader": "rubric", "items": [{"phrase": "?! -"}]}) == f"{W}.items[0]: the phrase has no words"
    assert _error({"grader": "rubric", "items": [{"phrase": "ok", "weight": "heavy"}]}) == (
        f"{W}.items[0]: weight must be a number")
    assert _error({"grader": "rubric", "items": [{"phrase": "ok", "weight": float("nan")}]}) == (
        f"{W}.items[0]: weight must be a number")


def test_rubric_weights_default_to_one_and_one_positive_item_is_enough():
    spec = {"grader": "rubric", "items": [{"phrase": "spooler"}]}
    assert G.validate_spec(spec, W) == spec
    spec = {"grader": "rubric", "items": [{"pattern": "print(er)?"}, {"phrase": "reboot", "weight": -1}]}
    assert G.validate_spec(spec, W) == spec
    spec = {"grader": "rubric", "items": [{"phrase": "a", "weight": 0.5}, {"phrase": "b", "weight": -2}]}
    assert G.validate_spec(spec, W) == spec


def test_gate_errors():
    assert _error({"grader": "gate", "then": "bleu"}) == f"{W}: a gate needs 'if' and 'then'"
    assert _error({"grader": "gate", "if": "bleu"}) == f"{W}: a gate needs 'if' and 'then'"
    # the nested specs are validated with their own place
    assert _error({"grader": "gate", "if": "meteor", "then": "bleu"}) == (
        f"{W}.if: unknown similarity metric 'meteor'; known: {KNOWN_METRICS}")
    assert _error({"grader": "gate", "if": "bleu", "then": {"grader": "nope"}}).startswith(
        f"{W}.then: unknown grader 'nope'")
    for t in (1.5, -0.1, 2, "high", None):
        assert _error({"grader": "gate", "if": "bleu", "then": "fuzzy", "threshold": t}) == (
            f"{W}.threshold: a number in [0, 1], got {t!r}")


def test_gate_is_returned_normalised_and_accepts_thresholds_0_to_1():
    spec = {"grader": "gate", "if": "bleu", "then": "token_f1"}
    assert G.validate_spec(spec, W) == {"grader": "gate", "if": SIM, "then": F1}
    for t in (0, 0.0, 0.5, 1, 1.0):
        assert G.validate_spec({**spec, "threshold": t}, W) == {"grader": "gate", "if": SIM, "then": F1,
                                                                 "threshold": t}


def test_combinator_errors():
    assert _error({"grader": "min", "of": []}) == f"{W}: 'min' needs a non-empty list 'of' graders"
    assert _error({"grader": "mean", "of": "bleu"}) == f"{W}: 'mean' needs a non-empty list 'of' graders"
    assert _error({"grader": "product"}) == f"{W}: 'product' needs a non-empty list 'of' graders"
    msg = f"{W}.weights: one finite weight >= 0 per grader of 'of', not all 0"
    for w in ([1], [1, 2, 3], [0, 0], [0.0, 0.0], [-1, 2], [float("inf"), 1], [1, "2"], [1, None], (1, 1), None):
        spec = {"grader": "weighted", "of": ["bleu", "fuzzy"]}
        if w is not None:
            spec["weights"] = w
        assert _error(spec) == msg, w


def test_combinators_are_returned_normalised_and_weights_accept_zero_and_fractions():
    assert G.validate_spec({"grader": "min", "of": ["bleu", "token_f1"]}, W) == {"grader": "min", "of": [SIM, F1]}
    for w in ([1, 1], [0, 1], [0.5, 0.25], [1, 0], [3, 1.5]):
        spec = {"grader": "weighted", "of": ["bleu", "token_f1"], "weights": w}
        assert G.validate_spec(spec, W) == {"grader": "weighted", "of": [SIM, F1], "weights": w}


def test_nested_places_in_messages():
    spec = {"grader": "min", "of": ["bleu", {"grader": "gate", "if": "bleu", "then": {"grader": "rubric"}}]}
    assert _error(spec) == f"{W}.of[1].then: a rubric needs a non-empty list of items"


# --- model: base -------------------------------------------------------------------------------


def test_needs_base_finds_base_at_any_depth_and_nowhere_else():
    deep = {"grader": "min", "weights": [1, 2],
            "of": ["bleu", {"grader": "gate", "if": "bleu",
                            "then": {"grader": "similarity", "metric": "embedding", "model": "base"}}]}
    assert G.needs_base(deep)
    assert G.needs_base({"grader": "gate", "if": {"grader": "judge", "model": "base"}, "then": "bleu"})
    assert G.needs_base({"grader": "judge", "model": "base"})
    assert not G.needs_base({"grader": "judge", "model": "/models/other"})
    assert not G.needs_base({"grader": "rubric", "items": [{"phrase": "base"}]})  # the word, not the model
    assert not G.needs_base("rouge_l") and not G.needs_base("") and not G.needs_base(7)


def test_base_stays_symbolic_and_grades_with_the_folder_the_step_names(tmp_path, monkeypatch):
    """``model: base`` is kept as written (a task file is read by pods with their own copies of the model); the
    folder is the one this step named, and a step that named none fails loudly rather than paying 0."""
    spec = {"grader": "judge", "model": "base"}
    assert G.validate_spec(spec, W) == spec  # no folder needed to load a recipe
    monkeypatch.delenv(G.BASE_ENV, raising=False)
    with pytest.raises(ValueError, match=r"^grader model: base names the run's base model.*not a local folder"):
        G.model_folder("base")
    with pytest.raises(ValueError, match="grader model: base"):
        G.grade(spec, "Answer: cleared the queue", _task(spec))
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    G.use_base_model(a)
    assert G.model_folder("base") == str(a.resolve()) and G.model_folder("/models/other") == "/models/other"
    G.use_base_model(b)
    assert G.model_folder("base") == str(b.resolve())
    b.rmdir()  # a fetched copy that is gone is not graded with
    with pytest.raises(ValueError, match="gone: "):
        G.model_folder("base")
    G.use_base_model(None)
    with pytest.raises(ValueError, match="not a local folder"):
        G.model_folder("base")


def test_prefetch_sends_base_to_the_named_folder(tmp_path, monkeypatch):
    log = []
    monkeypatch.setattr(G, "judge_for", lambda path: _Recorder(path, log))
    monkeypatch.setenv(G.BASE_ENV, str(tmp_path))
    spec = {"grader": "judge", "model": "base"}
    G.prefetch([_task(spec)], ["Answer: cleared the queue"])
    assert log == [(str(tmp_path), [("cleared the queue", REF)])]


# --- judge nodes and prefetch ------------------------------------------------------------------


J1 = {"grader": "judge", "model": "/m1"}
J2 = {"grader": "judge", "model": "/m2"}
J3 = {"grader": "judge", "model": "/m3"}


def test_judge_specs_finds_every_judge_node_in_order():
    spec = {"grader": "min", "of": [J1, {"grader": "gate", "if": J2, "then": J3}, "bleu"]}
    assert G.judge_specs(spec) == [J1, J2, J3]
    assert G.judge_specs({"grader": "gate", "if": "bleu", "then": J2}) == [J2]
    assert G.judge_specs({"grader": "gate", "if": J1, "then": "bleu"}) == [J1]
    assert G.judge_specs("rouge_l") == []
    assert G.judge_specs(J3) == [J3]


REF = "Cleared the print spooler queue, then removed and re-added the printer on the print server."
QUESTION = "Ticket: printer stuck on the Marlow print server since this morning. What was done to fix it?"


def _task(spec, answer=REF, prompt=QUESTION, verifier="text") -> Task:
    return Task(id="t", prompt=prompt, privileged_context="", answer=answer, verifier=verifier,
                verifier_args={"grader": spec})


class _Recorder:
    def __init__(self, path, log):
        self.path, self.log = path, log

    def score_many(self, pairs):
        self.log.append((self.path, list(pairs)))
        return [0.5] * len(pairs)


def test_prefetch_sends_each_gradable_answer_to_its_judges(monkeypatch):
    log = []
    monkeypatch.setattr(G, "judge_for", lambda path: _Recorder(path, log))
    spec = {"grader": "mean", "of": [J1, {"grader": "gate", "if": "bleu", "then": J2}]}
    t = _task(spec)
    other = _task(spec, verifier="json")  # not a free-text task: skipped, and the rest still batched
    no_ref = _task(spec, answer="  ")  # cannot be graded: nothing to ask
    G.prefetch([other, t, t, t, no_ref, t],
               ["Answer: x", "", f"Answer: {QUESTION}", "Answer: cleared the queue", "Answer: rebooted",
                "Answer: re-added the printer"])
    # the empty answer and the echoed question are not sent (they score 0 without the judge)
    want = [("cleared the queue", REF), ("re-added the printer", REF)]
    assert log == [("/m1", want), ("/m2", want)]


# --- build-tasks' grader check -------------------------------------------------------------------


def test_check_grader_probes_are_the_empty_answer_and_the_whole_question():
    anything = {"grader": "rubric", "items": [{"pattern": "^"}]}  # pays every non-empty answer in full
    c = G.check_grader(anything, _task(anything))
    assert c == {"reference": 1.0, "empty": 0.0, "echo": 0.0}
    # the echo probe is the question with its own 'Answer:' markers blanked out, after one marker
    q = "Printer question. Answer: in one line"
    t = _task("token_f1", answer="Printer question in one line", prompt=q)
    assert G.check_grader("token_f1", t) == {"reference": 1.0, "empty": 0.0, "echo": 1.0}


def test_grader_ok_thresholds_are_inclusive():
    assert G.grader_ok({"reference": 0.5, "empty": 0.2, "echo": 0.2})
    assert not G.grader_ok({"reference": 0.49, "empty": 0.0, "echo": 0.0})
    assert not G.grader_ok({"reference": 0.5, "empty": 0.21, "echo": 0.0})
    assert not G.grader_ok({"reference": 0.5, "empty": 0.0, "echo": 0.21})
    assert not G.grader_ok({"reference": None, "empty": None, "echo": None})
    assert G.grader_ok({"reference": 1.0, "empty": None, "echo": None})

