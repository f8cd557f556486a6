"""Free-text tasks (issue 20): build-tasks turns verified resolution-only tickets into ``text`` tasks when a
grader is configured, checks the grader on each before writing anything, and evaluation counts a graded
answer as a pass from the text threshold."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rlsd.config import ConfigError, load_config
from rlsd.data.build import build_tasks
from rlsd.data.ingest import ingest
from rlsd.data.store import LocalStore
from rlsd.evaluate import summarise
from rlsd.tasks import Task, read_tasks

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"


def _tickets(st) -> list[dict]:
    """The ingested ticket records (normalised by ingest; read here, not through build-tasks)."""
    from rlsd.data.ingest import iter_records

    man = st.read_manifest("latest")
    return [t for chunk in iter_records(st, man, "tickets") for t in chunk]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("text")
    st = LocalStore(tmp / "st")
    ingest(load_config(), manuals=[SAMPLE / "manuals"], tickets=[SAMPLE / "tickets"], store=st)
    return st, tmp


def _with_grader(spec) -> object:
    cfg = load_config()
    return dataclasses.replace(cfg, ingest=dataclasses.replace(cfg.ingest, text_grader=spec))


def test_default_makes_no_text_tasks_and_says_how(store):
    st, tmp = store
    out = build_tasks(load_config(), out_dir=tmp / "plain", store=st)
    assert "text" not in out["counts"]["by_answer_type"] and "text_grader" not in out["counts"]
    assert any("ingest.text_grader" in why for why in out["counts"]["skipped"])


def test_resolution_only_tickets_become_graded_text_tasks(store):
    st, tmp = store
    plain = build_tasks(load_config(), out_dir=tmp / "plain2", store=st)["counts"]
    out = build_tasks(_with_grader("rouge_l"), out_dir=tmp / "text", store=st)
    c = out["counts"]
    # independently: verified, resolved or closed tickets without an exact answer but with a resolution
    expected = {t["id"] for t in _tickets(st)
                if t["status"] in ("resolved", "closed") and t["resolution_verified"] is True
                and t["answer_type"] not in ("numeric", "label", "json", "expression")
                and len(t["resolution"].split()) >= 3}
    assert expected and c["by_answer_type"]["text"] == len(expected)
    assert c["tasks"] == plain["tasks"] + len(expected)
    tasks = [t for t in read_tasks(out["train_path"]) + read_tasks(out["eval_path"]) if t.verifier == "text"]
    assert {t.meta["ticket_id"] for t in tasks} == expected
    for t in tasks:
        assert t.verifier_args["grader"] == {"grader": "similarity", "metric": "rouge_l"}
        assert t.privileged_context.startswith(f"Verified resolution: {t.answer}")  # the teacher sees it
        assert t.answer not in t.prompt  # the student does not
    g = c["text_grader"]
    assert g["tasks"] == len(expected) and g["reference_min"] >= 0.5 and g["empty_max"] == 0.0
    assert g["echo_max"] <= 0.2


def test_a_grader_that_does_not_pay_the_reference_is_refused_and_nothing_is_written(store):
    st, tmp = store
    spec = {"grader": "rubric", "items": [{"phrase": "zebra crossing"}]}
    with pytest.raises(ValueError, match=r"ingest.text_grader refused on task ticket-") as e:
        build_tasks(_with_grader(spec), out_dir=tmp / "refused", store=st)
    assert "\n" not in str(e.value)
    assert not (tmp / "refused" / "train.jsonl").exists() and not (tmp / "refused" / "eval.jsonl").exists()


def test_config_validates_the_grader_when_it_loads(tmp_path):
    with pytest.raises(ConfigError, match=r"^ingest.text_grader: unknown grader 'rouge'"):
        _load_yaml(tmp_path)
    p = tmp_path / "judge.yaml"
    p.write_text("ingest:\n  text_grader: {grader: judge, model: /no/such/judge}\n")
    with pytest.raises(ConfigError, match="no model folder at '/no/such/judge'"):
        load_config(p)
    model = tmp_path / "m"
    model.mkdir()
    p.write_text(f"model:\n  path: {model}\ningest:\n  text_grader:\n    grader: min\n    of: [rouge_l, "
                 "{grader: judge, model: base}]\n")
    cfg = load_config(p)
    assert cfg.ingest.text_grader["of"][1]["model"] == "base"  # kept: each step has its own copy of the model
    from rlsd.verifiers.graders import model_folder

    assert model_folder("base") == str(model.resolve())  # which this config's load names
    # a base model held in the store (every pipeline step's case) loads too: the step that grades fetches it
    p.write_text("model:\n  path: store://models/smollm2\ningest:\n  text_grader: {grader: judge, model: base}\n")
    assert load_config(p).ingest.text_grader == {"grader": "judge", "model": "base"}
    with pytest.raises(ValueError, match="not a local folder"):
        model_folder("base")
    p.write_text("ingest:\n  text_grader: {grader: rubric, items: []}\n")
    with pytest.raises(ConfigError, match="non-empty list of items"):
        load_config(p)


def _load_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("ingest:\n  text_grader: {grader: rouge}\n")
    return load_config(p)


def test_evaluation_counts_text_passes_from_the_threshold():
    ref = "Cleared the print spooler queue, then removed and re-added the printer on the print server."
    t = Task(id="x", prompt="Printer stuck. What fixed it?", privileged_context=f"Verified resolution: {ref}",
             answer=ref, verifier="text", verifier_args={"grader": "token_f1"})
    full = f"Answer: {ref}"
    half = "Answer: Cleared the print spooler queue on the server."  # token F1 against ref ~0.6
    poor = "Answer: Rebooted it."
    from rlsd.verifiers.graders import token_f1

    assert 0.5 <= token_f1(half[8:], ref) < 1.0 and token_f1(poor[8:], ref) < 0.5
    out = summarise([t], [half], [full, half, poor, poor], k=2, n=4)
    row = out["per_task"][0] if "per_task" in out else out["tasks"][0]
    assert row["c"] == 2 and row["greedy_pass"] == 1.0  # full and half pass at 0.5, poor does not
    t2 = dataclasses.replace(t, verifier_args={"grader": "token_f1", "pass_threshold": 0.99})
    out2 = summarise([t2], [half], [full, half, poor, poor], k=2, n=4)
    row2 = out2["per_task"][0] if "per_task" in out2 else out2["tasks"][0]
    assert row2["c"] == 1 and row2["greedy_pass"] == 0.0


def test_the_leakage_check_applies_to_text_tasks():
    """The resolution is the answer (masked), but a manual passage in the privileged context that the student
    copies is a leak, and the summary counts the output as checked."""
    ref = "Cleared the print spooler queue, then removed and re-added the printer on the print server."
    manual = ("To clear a stuck queue on the Marlow print server open the admin console, choose Queues, select the "
              "queue and press Purge, then restart the spooler service from the Services page.")
    t = Task(id="x", prompt="Printer stuck. What fixed it?", answer=ref, verifier="text",
             privileged_context=f"Verified resolution: {ref}\n\n[Marlow guide > Queues]\n{manual}",
             verifier_args={"grader": "token_f1"})
    honest = f"Answer: {ref}"
    copied = "Answer: open the admin console, choose Queues, select the queue and press Purge, then restart the spooler"
    out = summarise([t], [honest], [honest, copied], k=1, n=2)
    assert out["leakage"]["n_checked"] == 3 and out["leakage"]["n_leaks"] == 1
