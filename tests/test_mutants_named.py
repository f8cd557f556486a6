"""The one-line mutants named in issue 21, each a slip a tired engineer could make, that the suite used to
let through; each test below fails on its mutant. (Three more are killed where their code is tested:
clip_frac counting ties in tests/core/test_losses.py::test_policy_statistics_by_hand; the teacher's
log-probs with the first prompt token masked out in tests/test_train_helpers.py::
test_logps_pass_gives_each_rows_own_log_probs; the teacher re-synced after step 1 instead of 10 in
tests/test_train_updates.py::test_teacher_snapshot_equals_the_policy_exactly_at_the_tenth_optimizer_step.)"""

from __future__ import annotations

import json

import pytest

from rlsd.config import IngestConfig, load_config
from rlsd.tasks import Task
from rlsd.verifiers import score

AWS_KEY = "AKIA" + "Q7X2M9K4LP3N8RT5"  # the shape of an AWS access key id (built here, never a real one)


# ---------------------------------------------------------------------------------------------- data


def _ticket(i, **kw):
    rec = {"id": f"T-{i}", "created": "2024-03-01T09:00:00Z", "updated": "2024-03-01T10:00:00Z", "title": f"q{i}",
           "body": f"body {i}", "status": "resolved", "resolution": "done", "resolution_verified": True,
           "links": [], "answer": "7", "answer_type": "numeric"}
    rec.update(kw)
    return rec


def test_quarantined_records_are_stored_redacted(tmp_path):
    """Mutant: quarantined records stored with their raw text unredacted (the old secrets test planted
    secrets only in valid tickets, which are stored, never quarantined)."""
    from rlsd.data.ingest import ingest
    from rlsd.data.store import LocalStore

    lines = [json.dumps(_ticket(1, updated="yesterday", body=f"login with password=abc123 then key {AWS_KEY}")),
             "{not json, login with password=abc123 then key " + AWS_KEY,
             json.dumps(_ticket(2))]
    p = tmp_path / "export.jsonl"
    p.write_text("\n".join(lines) + "\n")
    store = LocalStore(tmp_path / "st")
    rep = ingest(load_config(), tickets=[p], store=store)
    assert (rep["counts"]["stored"], rep["counts"]["quarantined"]) == (1, 2)
    stored = [r for d in rep["quarantine"] for r in json.loads(store.get_object(d))]  # chunks of records
    assert len(stored) == 2
    text = json.dumps(stored) + json.dumps(rep, default=str)
    assert "abc123" not in text and AWS_KEY not in text
    assert all("login with" in r.get("raw", "") for r in stored)  # the raw text is there, redacted
    every_file = b"".join(f.read_bytes() for f in (tmp_path / "st").rglob("*") if f.is_file())
    assert b"abc123" not in every_file and AWS_KEY.encode() not in every_file


@pytest.mark.parametrize("text", ["password=abc123", "pwd: x1", "the password is hunter2.", "PASSWORD: 12ab"])
def test_short_passwords_are_redacted(text):
    """Mutant: a minimum length on password values (every planted secret used to be >= 8 characters)."""
    from rlsd.data.redact import Redactor

    out, counts = Redactor.from_config(IngestConfig()).redact(f"Customer says {text} works")
    value = text.split("=")[-1].split(":")[-1].split(" is ")[-1].strip(" .")
    assert value not in out and sum(counts.values()) >= 1, (out, counts)
    assert out.startswith("Customer says ") and out.endswith(" works")


def test_a_tampered_object_is_refused(tmp_path_factory):
    """Mutant: the store's hash check switched off. The old test matched "corrupt", which its temporary
    folder's name (".../test_corruption...") also contained; this folder's name does not, and the match
    is the error's own wording with the object's digest."""
    from rlsd.data.store import LocalStore, StoreError, object_key

    root = tmp_path_factory.mktemp("plain")
    assert "corrupt" not in str(root)
    store = LocalStore(root)
    digest, written = store.put_object(b"the original bytes")
    assert written and store.get_object(digest) == b"the original bytes"
    (root / object_key(digest)).write_bytes(b"the tampered bytes")
    with pytest.raises(StoreError, match=rf"object {digest} is corrupt \(its bytes hash to [0-9a-f]{{64}}\)"):
        store.get_object(digest)


# ---------------------------------------------------------------------------------------------- verifiers


def _label(answer, choices):
    return Task(id="mc", prompt="Which colour?", privileged_context="", answer=answer, verifier="label",
                verifier_args={"choices": choices})


def test_label_choices_are_whole_words_not_substrings():
    """Mutant: choices matched as substrings ("covered" contains "red", "bored" too)."""
    t = _label("red", ["amber", "green", "red"])
    assert score(t, "Answer: red") == 1.0
    assert score(t, "Answer: amber") == 0.0
    assert score(t, "Answer: the LED is covered") == 0.0  # "red" only inside a word: no option named
    assert score(t, "Answer: bored") == 0.0
    a = _label("amber", ["amber", "green", "red"])
    assert score(a, "Answer: amber, the cover was tired") == 1.0  # "red" inside "tired" is not a second option
    assert score(a, "Answer: amber; it hovered") == 1.0


def test_json_true_is_not_the_number_one():
    """Mutant: field values compared with Python's == (True == 1, False == 0)."""
    t = Task(id="j", prompt="Q", privileged_context="", answer=json.dumps({"port": 1, "open": False}), verifier="json",
             verifier_args={"schema": {"type": "object"}, "partial_credit": False})
    assert score(t, '<answer>{"port": 1, "open": false}</answer>') == 1.0
    assert score(t, '<answer>{"port": true, "open": false}</answer>') == 0.0
    assert score(t, '<answer>{"port": 1, "open": 0}</answer>') == 0.0
    b = Task(id="j", prompt="Q", privileged_context="", answer=json.dumps({"flag": True}), verifier="json",
             verifier_args={"schema": {"type": "object"}})
    assert score(b, '<answer>{"flag": 1}</answer>') == 0.0 and score(b, '<answer>{"flag": true}</answer>') == 1.0


def test_a_bare_number_passes_on_a_task_with_a_unit():
    """Mutant: a stated unit made mandatory ("12" refused where the task's unit is km)."""
    t = Task(id="n", prompt="How far?", privileged_context="", answer="12", verifier="numeric",
             verifier_args={"unit": "km"})
    assert score(t, "Answer: 12") == 1.0
    assert score(t, "Answer: 12 km") == 1.0
    assert score(t, "Answer: 12 miles") == 0.0
    assert score(t, "Answer: 13") == 0.0
