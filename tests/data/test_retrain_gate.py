"""The retraining gate counts the verified tickets not yet trained on, from the snapshot the newest completed
training learned from (refs/trained/<model name>, set by the register step), not the tickets new in this ingest.

The hazard: a scheduled run ingests 30 new verified tickets, then its training (or evaluation, or registration)
fails; the next run's ingest finds nothing new, its gate stays closed, and those tickets are never trained on.
The same when ingest is retried after its snapshot was committed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rlsd.config import load_config
from rlsd.data.ingest import format_report, ingest, untrained_verified_tickets
from rlsd.data.store import LocalStore

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"


def _tickets(path: Path, ids: range, verified: bool = True) -> Path:
    rows = [{"id": f"GATE-{i}", "created": "2026-11-01T00:00:00Z", "updated": "2026-11-02T00:00:00Z",
             "title": f"Fan {i}", "body": f"How many fans does unit {i} have?", "status": "resolved",
             "resolution": "It has 3 fans.", "resolution_verified": verified, "answer": 3, "answer_type": "numeric"}
            for i in ids]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def cfg(tmp_path):
    return load_config(overrides=[f"store.root={tmp_path / 'store'}", "registry.model_name=gate-model"])


def test_a_failed_run_leaves_its_tickets_counted_and_a_completed_one_resets_the_count(cfg, tmp_path):
    st = LocalStore(cfg.store.root)
    first = ingest(cfg, tickets=[_tickets(tmp_path / "a.jsonl", range(30))])
    assert first["new_verified_tickets"] == 30 and first["untrained_verified_tickets"] == 30
    # the run's training failed: nothing marked; the next run's ingest brings nothing new, the gate stays open
    again = ingest(cfg, tickets=[tmp_path / "a.jsonl"])
    assert again["new_verified_tickets"] == 0 and again["untrained_verified_tickets"] == 30
    assert "30 verified tickets not yet trained on" in format_report(again)
    # 5 more arrive (and 2 unverified, which are not retraining material): 35 not yet trained on
    more = ingest(cfg, tickets=[_tickets(tmp_path / "b.jsonl", range(30, 35)),
                                _tickets(tmp_path / "c.jsonl", range(35, 37), verified=False)])
    assert (more["new_verified_tickets"], more["untrained_verified_tickets"]) == (5, 35)
    # a training on the first snapshot completed: only the 5 after it remain
    st.set_trained("gate-model", first["snapshot_id"])
    assert untrained_verified_tickets(st, "gate-model") == 5
    # ... and one on the newest: none; another model's training changes nothing for this one
    st.set_trained("gate-model", more["snapshot_id"])
    st.set_trained("other-model", first["snapshot_id"])
    assert ingest(cfg, tickets=[tmp_path / "b.jsonl"])["untrained_verified_tickets"] == 0
    assert untrained_verified_tickets(st, "other-model") == 5
    # a marker naming a snapshot that is not in the chain (a store rebuilt): every snapshot counts
    st.set_trained("gate-model", "not-a-snapshot")
    assert untrained_verified_tickets(st, "gate-model") == 35


def test_the_register_step_marks_the_snapshot_it_trained_on(cfg, tmp_path, monkeypatch):
    """What the pipeline runs: register-and-promote records the evaluation's data snapshot as trained, promoted
    or refused alike (a refused candidate learned from those tickets too: retraining on them again every
    scheduled run would spend the GPUs for the same result)."""
    import yaml
    from components.register_and_promote import register_and_promote
    from kfp.dsl import Artifact, Markdown, Model

    from rlsd import registry

    first = ingest(cfg, tickets=[_tickets(tmp_path / "a.jsonl", range(4))])
    monkeypatch.setattr(registry, "register_model", lambda cfg, model_dir, **kw: {
        "name": cfg.registry.model_name, "version": 7, "uri": "models:/gate-model/7"})
    monkeypatch.setattr(registry, "promote", lambda cfg, **kw: {"decision": "refused", "reasons": ["no gain"]})
    ev = Artifact(name="ev", uri=str(tmp_path / "ev"), metadata={})
    os.makedirs(ev.path)
    Path(ev.path, "evaluation.json").write_text(json.dumps({"data_snapshot_id": first["snapshot_id"]}))
    recipe = yaml.safe_dump({"store": {"root": str(cfg.store.root)}, "registry": {"model_name": "gate-model"}})
    st = LocalStore(cfg.store.root)
    assert st.trained("gate-model") is None
    out = register_and_promote.python_func(
        config_yaml=recipe, model=Model(name="m", uri=str(tmp_path / "m"), metadata={}), evaluation=ev,
        promotion_margin=0.0, decision=Markdown(name="d", uri=str(tmp_path / "d.md"), metadata={}),
        connections=Artifact(name="c", uri=str(tmp_path / "c"), metadata={}))
    assert out[3] == "refused" and st.trained("gate-model") == first["snapshot_id"]
    assert ingest(cfg, tickets=[tmp_path / "a.jsonl"])["untrained_verified_tickets"] == 0
