"""Exact behaviour of rlsd.data.ingest that the broader ingest tests leave loose: the report of an ingest that
finds nothing new (same keys as a normal report, every value pinned), the printed summary of hand-built
reports, the quarantine spool, and full reports / manifests of small local ingests whose every number is
derived by hand from the inputs (records, objects, index shards, hashes)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from pathlib import Path

import pytest

import rlsd.data.ingest as ingest_mod
from rlsd.config import load_config
from rlsd.data.index import WorkIndex
from rlsd.data.ingest import (
    QUARANTINE_SAMPLE,
    IngestError,
    QuarantineSpool,
    _ingest_into,
    format_report,
    ingest,
    iter_records,
    load_snapshot,
)
from rlsd.data.redact import Redactor
from rlsd.data.store import LocalStore, canonical_json, sha256

MANUAL = "# Guide\nIntro.\n## Install\nPlug it in.\n"  # two sections: guide, guide/install

REPORT_KEYS = {"snapshot_id", "previous", "unchanged", "snapshot_written", "new_verified_tickets", "store", "sources",
               "skipped_files", "skipped", "counts", "objects_written", "bytes_read", "quarantine", "quarantined",
               "already_ingested", "seconds", "untrained_verified_tickets"}
COUNT_KEYS = {"sections", "tickets", "new_tickets", "updated_tickets", "same_time_edits", "new_verified_tickets",
              "quarantined", "read", "stored", "skipped_files", "redactions", "replaced_bytes", "truncated"}


def _t(i, updated="2024-03-01T10:00:00Z", **kw):
    rec = {"id": f"T-{i}", "created": "2024-03-01T09:00:00Z", "updated": updated, "title": f"q{i}",
           "body": f"body {i}", "status": "resolved", "resolution": "done", "resolution_verified": i < 2,
           "links": [], "answer": "7", "answer_type": "numeric"}
    rec.update(kw)
    return rec


def _jsonl(path: Path, recs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    return path


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _timed(fn, *a, **kw):
    """(result, wall seconds around the call): a report's ``seconds`` lies in [0, that]."""
    t0 = time.perf_counter()
    rep = fn(*a, **kw)
    return rep, time.perf_counter() - t0


def _inbox_store(tmp_path):
    root = tmp_path / "store"
    cfg = load_config(None, [f"store.root={root}"])
    return cfg, root, LocalStore(root)


def _zero_counts(sections: int, tickets: int) -> dict:
    return {"sections": sections, "tickets": tickets, "new_tickets": 0, "updated_tickets": 0, "same_time_edits": 0,
            "new_verified_tickets": 0, "quarantined": 0, "read": 0, "stored": 0, "skipped_files": 0,
            "redactions": {}, "replaced_bytes": 0, "truncated": 0}


# ----------------------------------------------------------------------------------------------
# An incremental ingest that finds nothing new
# ----------------------------------------------------------------------------------------------


def test_nothing_new_report_is_a_full_report_of_the_standing_snapshot(tmp_path):
    cfg, root, st = _inbox_store(tmp_path)
    man = root / "inbox" / "manuals" / "g.md"
    man.parent.mkdir(parents=True)
    man.write_text(MANUAL, encoding="utf-8")
    tick = _jsonl(root / "inbox" / "tickets" / "a.jsonl", [_t(0), _t(1), _t(2)])  # T-0, T-1 verified

    first = ingest(cfg, store=st)
    assert first["snapshot_written"] is True and first["counts"]["new_verified_tickets"] == 2
    sid = first["snapshot_id"]

    again, wall = _timed(ingest, cfg, store=st)
    # the same keys as a normal ingest report, top level and counts
    assert set(first) == REPORT_KEYS and set(again) == REPORT_KEYS
    assert set(first["counts"]) == COUNT_KEYS and set(again["counts"]) == COUNT_KEYS
    seconds = again.pop("seconds")
    assert isinstance(seconds, float) and 0 <= seconds <= wall
    assert again == {
        "snapshot_id": sid, "previous": sid, "unchanged": True, "snapshot_written": False,
        "new_verified_tickets": 0, "store": f"local store {str(root)!r}", "sources": [], "skipped_files": [],
        "skipped": [], "counts": _zero_counts(2, 3), "objects_written": 0, "bytes_read": 0, "quarantine": [],
        "quarantined": [], "untrained_verified_tickets": 2,  # no training completed: the first ingest's still count
        # manuals are looked at before tickets
        "already_ingested": [{"path": str(man), "sha256": _digest(man), "bytes": len(MANUAL)},
                             {"path": str(tick), "sha256": _digest(tick), "bytes": tick.stat().st_size}],
    }
    # nothing written: the pointer still names the first snapshot
    assert st.latest() == sid
    assert format_report({**again, "seconds": seconds}) == (
        f"nothing new to ingest (2 files already ingested); snapshot {sid} in local store {str(root)!r} stands: "
        "2 sections, 3 tickets, 0 new verified tickets; 2 verified tickets not yet trained on (the retraining gate)")


def test_nothing_new_in_an_empty_store(tmp_path):
    cfg, root, st = _inbox_store(tmp_path)
    rep, wall = _timed(ingest, cfg, store=st)
    seconds = rep.pop("seconds")
    assert 0 <= seconds <= wall
    assert rep == {
        "snapshot_id": None, "previous": None, "unchanged": True, "snapshot_written": False,
        "new_verified_tickets": 0, "store": f"local store {str(root)!r}", "sources": [], "skipped_files": [],
        "skipped": [], "counts": _zero_counts(0, 0), "objects_written": 0, "bytes_read": 0, "quarantine": [],
        "quarantined": [], "already_ingested": [], "untrained_verified_tickets": 0,
    }
    assert st.latest() is None
    assert format_report(rep) == (f"nothing new to ingest (0 files already ingested); snapshot (none yet) in "
                                  f"local store {str(root)!r} stands: 0 sections, 0 tickets, 0 new verified tickets; "
                                  "0 verified tickets not yet trained on (the retraining gate)")


def test_nothing_new_counts_sections_and_tickets_of_the_previous_index(tmp_path):
    """Only manuals before: 2 sections, 0 tickets (the ticket index exists with count 0)."""
    cfg, root, st = _inbox_store(tmp_path)
    man = root / "inbox" / "manuals" / "g.md"
    man.parent.mkdir(parents=True)
    man.write_text(MANUAL, encoding="utf-8")
    ingest(cfg, store=st)
    rep = ingest(cfg, store=st)
    assert rep["counts"] == _zero_counts(2, 0)
    assert rep["already_ingested"] == [{"path": str(man), "sha256": _digest(man), "bytes": len(MANUAL)}]


# ----------------------------------------------------------------------------------------------
# format_report of hand-built reports
# ----------------------------------------------------------------------------------------------


def _src(path, read, stored, quarantined, reasons=None, replaced_bytes=0, truncated=0, redactions=None):
    return {"path": path, "read": read, "stored": stored, "quarantined": quarantined, "reasons": reasons or {},
            "replaced_bytes": replaced_bytes, "truncated": truncated, "redactions": redactions or {}}


def _report(**kw):
    rep = {"snapshot_id": "s2", "previous": "s1", "unchanged": False, "snapshot_written": True,
           "store": "local store 'st'", "counts": {"sections": 4, "tickets": 6}, "objects_written": 9,
           "sources": [], "skipped_files": []}
    rep.update(kw)
    return rep


def test_format_report_new_snapshot_every_source_detail():
    rep = _report(
        sources=[_src("a.jsonl", 5, 3, 2, {"duplicate id": 1, "invalid JSON": 1}, replaced_bytes=2, truncated=1,
                      redactions={"EMAIL": 1}),
                 _src("g.md", 2, 2, 0)],
        skipped_files=["m/img.png", "m/notes.docx"],
        already_ingested=[{"path": "x"}, {"path": "y"}, {"path": "z"}])
    assert format_report(rep) == (
        "snapshot s2 (new; previous s1) in local store 'st': 4 sections, 6 tickets, 9 objects written\n"
        "  a.jsonl: read 5 = stored 3 + quarantined 2 [duplicate id x1; invalid JSON x1] replaced_bytes=2 "
        "truncated=1 redactions={'EMAIL': 1}\n"
        "  g.md: read 2 = stored 2 + quarantined 0\n"
        "  skipped (unsupported suffix): m/img.png\n"
        "  skipped (unsupported suffix): m/notes.docx\n"
        "  already ingested (same SHA-256 in an earlier snapshot), not read again: 3 files")


def test_format_report_each_optional_detail_alone():
    only = [
        (_src("r", 1, 0, 1, {"no text": 1}), "  r: read 1 = stored 0 + quarantined 1 [no text x1]"),
        (_src("b", 2, 2, 0, replaced_bytes=3), "  b: read 2 = stored 2 + quarantined 0 replaced_bytes=3"),
        (_src("t", 2, 2, 0, truncated=2), "  t: read 2 = stored 2 + quarantined 0 truncated=2"),
        (_src("p", 2, 2, 0, redactions={"PHONE": 2}), "  p: read 2 = stored 2 + quarantined 0 redactions={'PHONE': 2}"),
    ]
    head = "snapshot s2 (new; previous s1) in local store 'st': 4 sections, 6 tickets, 9 objects written"
    for src, line in only:
        assert format_report(_report(sources=[src])) == head + "\n" + line


def test_format_report_unchanged_and_not_written_with_sources():
    """A re-ingest of a file already stored: sources read, nothing written; not the 'nothing new' text."""
    rep = _report(snapshot_id="s1", previous="s1", unchanged=True, snapshot_written=False, objects_written=0,
                  sources=[_src("a.jsonl", 3, 3, 0)], already_ingested=[])
    assert format_report(rep) == ("snapshot s1 (unchanged; previous s1) in local store 'st': 4 sections, "
                                  "6 tickets, 0 objects written\n  a.jsonl: read 3 = stored 3 + quarantined 0")


def test_format_report_written_without_sources_is_not_nothing_new():
    rep = _report(sources=[], snapshot_written=True, unchanged=True)
    assert format_report(rep) == ("snapshot s2 (unchanged; previous s1) in local store 'st': 4 sections, 6 tickets, "
                                  "9 objects written")


# ----------------------------------------------------------------------------------------------
# QuarantineSpool
# ----------------------------------------------------------------------------------------------


def test_quarantine_spool_extend_keeps_every_record_in_order(tmp_path):
    spool = QuarantineSpool(tmp_path)
    assert spool.path == tmp_path / "quarantine.jsonl" and spool.count == 0 and spool.sample == []
    recs = [{"file": "a", "where": f"line {i}", "id": f"T-{i}", "raw": "café ✓", "reason": "r"} for i in range(3)]
    spool.extend(recs[:2])
    spool.append(recs[2])
    spool.extend([])
    assert spool.count == 3 and spool.sample == recs
    st = LocalStore(tmp_path / "st")
    digests, written = spool.write(st)
    chunk = canonical_json(recs)
    assert digests == [sha256(chunk)] and written == 1
    assert json.loads(st.get_object(digests[0])) == recs
    assert (tmp_path / "quarantine.jsonl").read_text(encoding="utf-8").splitlines() == [
        json.dumps(r, ensure_ascii=False) for r in recs]


def test_quarantine_spool_writes_chunks_of_quarantine_chunk_records(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_mod, "QUARANTINE_CHUNK", 2)
    spool = QuarantineSpool(tmp_path)
    recs = [{"i": i} for i in range(5)]
    spool.extend(recs)
    st = LocalStore(tmp_path / "st")
    chunks = [recs[0:2], recs[2:4], recs[4:]]
    assert spool.write(st) == ([sha256(canonical_json(c)) for c in chunks], 3)
    # the same records again: the same chunks, none written
    again = QuarantineSpool(tmp_path / "st")
    again.extend(recs)
    assert again.write(st) == ([sha256(canonical_json(c)) for c in chunks], 0)


def test_quarantine_spool_sample_is_capped_but_count_is_not(tmp_path):
    spool = QuarantineSpool(tmp_path)
    recs = [{"i": i} for i in range(QUARANTINE_SAMPLE + 2)]
    spool.extend(recs)
    assert spool.count == QUARANTINE_SAMPLE + 2 and spool.sample == recs[:QUARANTINE_SAMPLE]


def test_empty_spool_writes_no_chunk(tmp_path):
    spool = QuarantineSpool(tmp_path)
    assert spool.write(LocalStore(tmp_path / "st")) == ([], 0)


# ----------------------------------------------------------------------------------------------
# Full reports and manifests of small local ingests
# ----------------------------------------------------------------------------------------------

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"


def _rep(path, kind, fmt, f: Path | None, read, stored, quarantined, reasons=None, records=-1):
    """The expected SourceReport.to_dict() of a source with nothing replaced, truncated or redacted."""
    return {"path": str(path), "kind": kind, "format": fmt, "sha256": _digest(f) if f else "",
            "bytes": f.stat().st_size if f else 0, "read": read, "stored": stored, "quarantined": quarantined,
            "reasons": reasons or {}, "replaced_bytes": 0, "truncated": 0, "redactions": {}, "unknown_columns": [],
            "records": records}


def _manifest_source(r: dict) -> dict:
    return {k: r[k] for k in ("path", "kind", "format", "sha256", "bytes", "read", "stored", "quarantined")}


def _shard_digest(entries: dict) -> str:
    """Index shard of a small snapshot: one shard (prefix '') holding every id -> digest (sections) or
    [digest, updated] (tickets), as canonical JSON."""
    return sha256(canonical_json(entries))


def _index(sections: dict, tickets: dict) -> dict:
    return {"sections": {"count": len(sections), "shard_chars": 0,
                         "shards": {"": _shard_digest(sections)} if sections else {}},
            "tickets": {"count": len(tickets), "shard_chars": 0,
                        "shards": {"": _shard_digest(tickets)} if tickets else {}}}


def _content_hash(index: dict) -> str:
    return sha256(canonical_json({k: index[k]["shards"] for k in ("sections", "tickets")}))


def _obj_digest(obj: dict) -> str:
    return sha256(canonical_json(obj))


def test_fresh_ingest_full_report_and_manifest(tmp_path, capsys):
    """A manuals folder (one manual, one unsupported file, one symlink leaving the folder) and one export
    (two tickets, a line that is not JSON, an older duplicate): every field of the report and manifest."""
    m = tmp_path / "m"
    m.mkdir()
    g = m / "g.md"
    g.write_text(MANUAL, encoding="utf-8")
    png = m / "img.png"
    png.write_bytes(b"\x89PNG....")
    outside = tmp_path / "outside.md"
    outside.write_text("# Secret\nnever read\n", encoding="utf-8")
    (m / "b-out.md").symlink_to(outside)  # sorted before the other files of the folder
    a = tmp_path / "a.jsonl"
    a.write_text(json.dumps(_t(0)) + "\n" + json.dumps(_t(1)) + "\n{not json\n"
                 + json.dumps(_t(0, updated="2024-03-01T09:00:00Z", title="old")) + "\n", encoding="utf-8")
    st = LocalStore(tmp_path / "st")

    rep, wall = _timed(ingest, load_config(), manuals=[m], tickets=[a], store=st)
    assert capsys.readouterr().err == ""  # no progress bar unless asked
    seconds = rep.pop("seconds")
    assert 0 <= seconds <= wall

    man = st.read_manifest()
    _, sections, tickets = load_snapshot(st)
    assert [s["id"] for s in sections] == ["g/guide", "g/guide/install"]
    assert [t["id"] for t in tickets] == ["T-0", "T-1"] and tickets[0]["title"] == "q0"  # the newer T-0
    sec_d = {s["id"]: _obj_digest(s) for s in sections}
    tick_d = {t["id"]: [_obj_digest(t), t["updated"]] for t in tickets}
    index = _index(sec_d, tick_d)
    assert man["index"] == index and man["content_hash"] == _content_hash(index)

    symlink_reason = (f"symlink refused: it points outside the folder {str(m)!r} (to {str(outside)!r}); "
                      "copy the file into the folder instead")
    dup_reason = (f"duplicate id: 'T-0' superseded by {a} line 1 "
                  "(updated 2024-03-01T10:00:00Z vs 2024-03-01T09:00:00Z; other content)")
    q = rep["quarantined"]
    assert len(q) == 3
    assert q[0] == {"source": str(m / "b-out.md"), "where": "file", "reason": symlink_reason, "id": ""}
    assert (q[1]["source"], q[1]["where"], q[1]["reason"].split(":")[0]) == (str(a), "line 3", "invalid JSON")
    assert q[2] == {"source": str(a), "where": "line 4", "reason": dup_reason, "id": "T-0"}
    assert rep["quarantine"] == [sha256(canonical_json(q))]
    assert json.loads(st.get_object(rep["quarantine"][0])) == q

    skipped = [{"path": str(png), "kind": "manual", "sha256": _digest(png), "bytes": 8,
                "reason": "unsupported suffix '.png'"}]
    sources = [_rep(m / "b-out.md", "manual", "symlink", None, 1, 0, 1, {"symlink refused": 1}),
               _rep(g, "manual", "markdown", g, 2, 2, 0),
               _rep(a, "tickets", "jsonl", a, 4, 2, 2, {"duplicate id": 1, "invalid JSON": 1}, records=4)]
    counts = {"sections": 2, "tickets": 2, "new_tickets": 2, "updated_tickets": 0, "same_time_edits": 0,
              "new_verified_tickets": 2, "quarantined": 3, "read": 7, "stored": 4, "skipped_files": 1,
              "redactions": {}, "replaced_bytes": 0, "truncated": 0}
    sid = sha256(f"{man['content_hash']}:".encode())[:20]
    assert rep == {
        "snapshot_id": sid, "previous": None, "unchanged": False, "snapshot_written": True,
        "new_verified_tickets": 2, "store": st.description, "sources": sources, "skipped_files": [str(png)],
        "skipped": skipped, "counts": counts,
        # 2 sections + 2 tickets + 1 quarantine chunk + 1 index shard of each kind
        "objects_written": 7,
        "bytes_read": len(MANUAL) + a.stat().st_size, "quarantine": rep["quarantine"], "quarantined": q,
        "already_ingested": [], "untrained_verified_tickets": 2,
    }
    created = man.pop("created")
    assert re.fullmatch(ISO, created)
    assert man == {"format": 2, "snapshot_id": sid, "previous": None, "content_hash": _content_hash(index),
                   "records_unchanged": False, "sources": [_manifest_source(s) for s in sources],
                   "skipped": skipped, "counts": counts, "quarantine": rep["quarantine"], "index": index}
    assert st.latest() == sid
    assert len(list((tmp_path / "st" / "objects").rglob("*"))) - len(list((tmp_path / "st" / "objects").iterdir())) == 7


def test_updates_same_time_edit_and_older_than_stored(tmp_path):
    st = LocalStore(tmp_path / "st")
    cfg = load_config()
    a = _jsonl(tmp_path / "a.jsonl", [_t(0), _t(1), _t(2)])
    first = ingest(cfg, tickets=[a], store=st)
    assert first["counts"]["new_tickets"] == 3 and first["counts"]["new_verified_tickets"] == 2
    _, _, before = load_snapshot(st)
    old = {t["id"]: t for t in before}

    b = _jsonl(tmp_path / "b.jsonl", [_t(0, updated="2024-03-01T11:00:00Z", title="newer"),  # an update
                                      _t(1, title="edited"),  # same updated time, other content
                                      _t(2, updated="2024-03-01T09:00:00Z"),  # older than stored
                                      _t(3)])  # new, not verified
    rep = ingest(cfg, tickets=[b], store=st)
    older = ("older than stored version: 'T-2' updated 2024-03-01T09:00:00Z < stored 2024-03-01T10:00:00Z")
    assert rep["quarantined"] == [{"source": str(b), "where": "line 3", "reason": older, "id": "T-2"}]
    assert rep["sources"] == [_rep(b, "tickets", "jsonl", b, 4, 3, 1, {"older than stored version": 1}, records=4)]
    assert rep["counts"] == {"sections": 0, "tickets": 4, "new_tickets": 1, "updated_tickets": 2, "same_time_edits": 1,
                             "new_verified_tickets": 2, "quarantined": 1, "read": 4, "stored": 3, "skipped_files": 0,
                             "redactions": {}, "replaced_bytes": 0, "truncated": 0}
    assert rep["new_verified_tickets"] == 2 and rep["unchanged"] is False and rep["snapshot_written"] is True
    assert rep["previous"] == first["snapshot_id"]
    # 3 ticket objects (T-0 newer, T-1 edit with its lineage, T-3) + the quarantine chunk + the ticket shard
    assert rep["objects_written"] == 5

    man, _, after = load_snapshot(st)
    now = {t["id"]: t for t in after}
    assert now["T-0"]["title"] == "newer" and now["T-2"] == old["T-2"] and now["T-3"]["title"] == "q3"
    assert now["T-1"]["title"] == "edited" and now["T-1"]["supersedes"] == _obj_digest(old["T-1"])
    assert {k: v for k, v in now["T-1"].items() if k != "supersedes"} == {**old["T-1"], "title": "edited"}
    tick_d = {i: [_obj_digest(t), t["updated"]] for i, t in now.items()}
    assert man["index"] == _index({}, tick_d)
    assert rep["snapshot_id"] == sha256(f"{man['content_hash']}:{first['snapshot_id']}".encode())[:20]

    # the same export again: every record is the version stored (the edit with its lineage included); only the
    # older T-2 is quarantined again, so a snapshot with the same records names that quarantine
    again = ingest(cfg, tickets=[b], store=st)
    assert again["unchanged"] is True and again["snapshot_written"] is True
    assert again["counts"] == {**rep["counts"], "new_tickets": 0, "updated_tickets": 0, "same_time_edits": 0,
                               "new_verified_tickets": 0}
    assert again["quarantine"] == rep["quarantine"]  # the same quarantine record, the same chunk
    assert again["objects_written"] == 0  # that chunk and every record already exist
    extra = sha256(canonical_json([again["quarantine"], []]))
    assert again["snapshot_id"] == sha256(f"{man['content_hash']}:{rep['snapshot_id']}:{extra}".encode())[:20]
    m2 = st.read_manifest()
    assert m2["records_unchanged"] is True and m2["index"] == man["index"] and m2["previous"] == rep["snapshot_id"]
    assert load_snapshot(st)[2] == after


def test_same_time_edit_conflict_mode(tmp_path):
    st = LocalStore(tmp_path / "st")
    cfg = load_config(text="ingest: {same_time_edit: conflict}")
    ingest(cfg, tickets=[_jsonl(tmp_path / "a.jsonl", [_t(1)])], store=st)
    _, _, before = load_snapshot(st)
    b = _jsonl(tmp_path / "b.jsonl", [_t(1, title="edited"), _t(5)])
    c = _jsonl(tmp_path / "c.jsonl", [_t(5, title="other five"), _t(6)])
    rep = ingest(cfg, tickets=[b, c], store=st)
    vs_stored = ("conflict: 'T-1' has the same updated time 2024-03-01T10:00:00Z as the stored version but other "
                 "content (ingest.same_time_edit=conflict; give the edit a newer updated time)")
    vs_file = (f"conflict: 'T-5' has the same updated time 2024-03-01T10:00:00Z as {b} line 2 but other content "
               "(ingest.same_time_edit=conflict; give the edit a newer updated time)")
    assert rep["quarantined"] == [{"source": str(c), "where": "line 1", "reason": vs_file, "id": "T-5"},
                                  {"source": str(b), "where": "line 1", "reason": vs_stored, "id": "T-1"}]
    assert [(s["read"], s["stored"], s["quarantined"], s["reasons"]) for s in rep["sources"]] == [
        (2, 1, 1, {"conflict": 1}), (2, 1, 1, {"conflict": 1})]
    assert (rep["counts"]["new_tickets"], rep["counts"]["updated_tickets"], rep["counts"]["same_time_edits"],
            rep["counts"]["tickets"]) == (2, 0, 0, 3)
    assert rep["objects_written"] == 4  # T-5 of b, T-6, the quarantine chunk, the ticket shard
    _, _, after = load_snapshot(st)
    # the stored T-1 stands, T-5 of the earlier file
    assert after == before + [{**_t(5), "notes": []}, {**_t(6), "notes": []}]


def test_same_time_duplicate_across_files_new_version_mode_later_file_wins(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", [_t(1)])
    b = _jsonl(tmp_path / "b.jsonl", [_t(1, title="later file")])
    st = LocalStore(tmp_path / "st")
    rep = ingest(load_config(), tickets=[a, b], store=st)
    reason = (f"duplicate id: 'T-1' superseded by {b} line 1 "
              "(updated 2024-03-01T10:00:00Z vs 2024-03-01T10:00:00Z; other content)")
    assert rep["quarantined"] == [{"source": str(a), "where": "line 1", "reason": reason, "id": "T-1"}]
    assert [(s["stored"], s["quarantined"]) for s in rep["sources"]] == [(0, 1), (1, 0)]
    assert rep["counts"]["new_tickets"] == 1 and rep["counts"]["same_time_edits"] == 0
    assert rep["objects_written"] == 3  # one ticket (the loser's bytes never written), the chunk, the shard
    assert [t["title"] for t in load_snapshot(st)[2]] == ["later file"]
    # identical content in a later file: 'identical content', still one ticket
    c = _jsonl(tmp_path / "c.jsonl", [_t(2)])
    d = _jsonl(tmp_path / "d.jsonl", [_t(2)])
    rep2 = ingest(load_config(), tickets=[c, d], store=st)
    assert rep2["quarantined"][0]["reason"] == (f"duplicate id: 'T-2' superseded by {d} line 1 "
                                                "(updated 2024-03-01T10:00:00Z vs 2024-03-01T10:00:00Z; "
                                                "identical content)")
    assert rep2["counts"]["new_tickets"] == 1 and rep2["counts"]["tickets"] == 2


def test_duplicate_document_id_in_one_run_and_reingested_manual_replaces_sections(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    g1, g2 = tmp_path / "x" / "g.md", tmp_path / "y" / "g.md"
    g1.write_text(MANUAL, encoding="utf-8")
    g2.write_text(MANUAL.replace("Plug", "Push"), encoding="utf-8")
    st = LocalStore(tmp_path / "st")
    rep = ingest(load_config(), manuals=[g1, g2], store=st)
    reason = f"duplicate document id: 'g' already ingested from {g1} in this run; rename one file"
    assert rep["sources"] == [_rep(g1, "manual", "markdown", g1, 2, 2, 0),
                              _rep(g2, "manual", "markdown", g2, 2, 0, 2, {"duplicate document id": 2})]
    assert rep["quarantined"] == [{"source": str(g2), "where": w, "reason": reason, "id": w}
                                  for w in ("g/guide", "g/guide/install")]
    assert rep["counts"]["sections"] == 2 and rep["objects_written"] == 2 + 1 + 1
    assert [s["text"] for s in load_snapshot(st)[1]] == ["Intro.", "Plug it in."]
    # the same document again with one section: it replaces both
    g1.write_text("# Guide\nOnly this.\n", encoding="utf-8")
    rep2 = ingest(load_config(), manuals=[g1], store=st)
    assert rep2["counts"]["sections"] == 1 and rep2["counts"]["stored"] == 1
    assert [(s["id"], s["text"]) for s in load_snapshot(st)[1]] == [("g/guide", "Only this.")]


def test_reingest_of_the_same_file_writes_nothing(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", [_t(0), _t(1)])
    st = LocalStore(tmp_path / "st")
    first = ingest(load_config(), tickets=[a], store=st)
    again = ingest(load_config(), tickets=[a], store=st)
    assert (again["snapshot_id"], again["previous"], again["unchanged"], again["snapshot_written"]) == (
        first["snapshot_id"], first["snapshot_id"], True, False)
    assert again["objects_written"] == 0 and again["quarantine"] == [] and again["already_ingested"] == []
    assert again["sources"] == [_rep(a, "tickets", "jsonl", a, 2, 2, 0, records=2)]
    assert again["counts"]["new_verified_tickets"] == 0 and again["counts"]["stored"] == 2
    assert format_report(again) == (
        f"snapshot {first['snapshot_id']} (unchanged; previous {first['snapshot_id']}) in {st.description}: "
        f"0 sections, 2 tickets, 0 objects written\n  {a}: read 2 = stored 2 + quarantined 0\n"
        "  2 verified tickets not yet trained on (the retraining gate)")  # nothing trained: the first ingest's count


# ----------------------------------------------------------------------------------------------
# Errors: nothing visible written
# ----------------------------------------------------------------------------------------------


def test_nothing_to_ingest_is_an_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    only_png = tmp_path / "pics"
    only_png.mkdir()
    (only_png / "a.png").write_bytes(b"x")
    st = LocalStore(tmp_path / "st")
    msg = "nothing to ingest: name manual files/folders (--manuals) and/or ticket exports (--tickets)"
    for kw in ({"manuals": [empty]}, {"tickets": [empty]}, {"manuals": [empty], "tickets": [empty]}):
        with pytest.raises(IngestError) as e:
            ingest(load_config(), store=st, **kw)
        assert str(e.value) == msg
    # folders that hold only files of types not read: the error says so and names them, not "name a folder"
    (only_png / "sub").mkdir()
    for name in ("b.PNG", "c.docx", "README"):
        (only_png / "sub" / name).write_bytes(b"x")
    for kw in ({"manuals": [only_png]}, {"tickets": [only_png]}, {"manuals": [empty], "tickets": [only_png]}):
        with pytest.raises(IngestError) as e:
            ingest(load_config(), store=st, **kw)
        assert str(e.value) == (
            "nothing to ingest: the named folders hold 4 file(s), none of a type that is read ((no suffix) x1, "
            f".docx x1, .png x2, e.g. {str(only_png / 'a.png')!r}); manuals are read from .md, .markdown, .html, "
            ".htm, .txt, .text, .pdf, tickets from .jsonl, .ndjson, .csv")
    assert st.latest() is None and not (tmp_path / "st" / "objects").exists()


def test_missing_input_names_the_path(tmp_path):
    with pytest.raises(IngestError) as e:
        ingest(load_config(), manuals=[tmp_path / "nope"], store=LocalStore(tmp_path / "st"))
    assert str(e.value) == f"input {str(tmp_path / 'nope')!r} does not exist"


def test_records_that_do_not_reconcile_fail_the_ingest(tmp_path, monkeypatch):
    a = tmp_path / "a.jsonl"
    a.write_text(json.dumps(_t(0)) + "\n{bad\n" + json.dumps(_t(1)) + "\n", encoding="utf-8")
    st = LocalStore(tmp_path / "st")
    for counted in (4, 0):
        monkeypatch.setattr(ingest_mod, "count_records", lambda path, fmt, limit, n=counted: n)
        with pytest.raises(IngestError) as e:
            ingest(load_config(), tickets=[a], store=st)
        assert str(e.value) == (
            f"{a}: records do not reconcile: an independent count of record boundaries finds {counted}, the parser "
            "read 3, stored 2 + quarantined 1 = 3; no snapshot was written (this is a bug in rlsd's reader: report "
            "it with the file)")
        assert st.latest() is None

    def boom(path, fmt, limit):
        assert (Path(path), fmt, limit) == (a, "jsonl", load_config().ingest.max_ticket_line_bytes)
        raise ValueError("cannot count")

    monkeypatch.setattr(ingest_mod, "count_records", boom)
    with pytest.raises(IngestError) as e:
        ingest(load_config(), tickets=[a], store=st)
    assert str(e.value) == f"{a}: cannot count; no snapshot was written"
    assert st.latest() is None and not (tmp_path / "st" / "objects").exists()


def test_a_manual_that_does_not_reconcile_fails_the_ingest(tmp_path, monkeypatch):
    """Manuals have no independent count ('n/a'): read == stored + quarantined is still checked."""
    g = tmp_path / "g.md"
    g.write_text(MANUAL, encoding="utf-8")
    real = ingest_mod.parse_manual

    def miscounting(*args, **kw):
        secs, q, rep = real(*args, **kw)
        rep.read += 1
        return secs, q, rep

    monkeypatch.setattr(ingest_mod, "parse_manual", miscounting)
    st = LocalStore(tmp_path / "st")
    with pytest.raises(IngestError) as e:
        ingest(load_config(), manuals=[g], store=st)
    assert str(e.value) == (
        f"{g}: records do not reconcile: an independent count of record boundaries finds n/a, the parser read 3, "
        "stored 2 + quarantined 0 = 2; no snapshot was written (this is a bug in rlsd's reader: report it with "
        "the file)")
    assert st.latest() is None


def test_a_parser_that_loses_a_record_fails_the_ingest(tmp_path, monkeypatch):
    """read != stored + quarantined (a record dropped by the reader) is caught too."""
    a = _jsonl(tmp_path / "a.jsonl", [_t(0), _t(1)])
    real = ingest_mod.iter_tickets

    def lossy(*args, **kw):
        for i, item in enumerate(real(*args, **kw)):
            if i == 0:
                continue  # read, but never yielded nor quarantined
            yield item

    monkeypatch.setattr(ingest_mod, "iter_tickets", lossy)
    st = LocalStore(tmp_path / "st")
    with pytest.raises(IngestError) as e:
        ingest(load_config(), tickets=[a], store=st)
    assert str(e.value).startswith(f"{a}: records do not reconcile: an independent count of record boundaries "
                                   "finds 2, the parser read 2, stored 1 + quarantined 0 = 1;")
    assert st.latest() is None


def test_unsupported_ticket_export_is_one_quarantined_record(tmp_path):
    x = tmp_path / "tickets.xml"
    x.write_text("<tickets/>\n<more/>\n", encoding="utf-8")
    rep = ingest(load_config(), tickets=[x], store=LocalStore(tmp_path / "st"))
    (s,) = rep["sources"]
    assert (s["format"], s["read"], s["stored"], s["quarantined"], s["records"]) == ("unsupported", 1, 0, 1, 1)
    assert rep["counts"]["tickets"] == 0 and rep["snapshot_written"] is True


# ----------------------------------------------------------------------------------------------
# Folders, symlinks, progress, id hashing
# ----------------------------------------------------------------------------------------------


def test_folder_walk_symlinks_inside_suffix_case_and_subfolders(tmp_path):
    m = tmp_path / "m"
    (m / "sub").mkdir(parents=True)
    (m / "sub" / "deep.md").write_text("# Deep\ntext\n", encoding="utf-8")
    (m / "UP.MD").write_text("# Up\ntext\n", encoding="utf-8")
    (m / "alias.md").symlink_to(m / "sub" / "deep.md")  # inside: followed
    (m / "dirlink").symlink_to(m / "sub")  # a folder through a symlink: not walked
    (m / "zz.bin").write_bytes(b"\x00")
    rep = ingest(load_config(), manuals=[m], store=LocalStore(tmp_path / "st"))
    assert [s["path"] for s in rep["sources"]] == [str(m / "UP.MD"), str(m / "alias.md"), str(m / "sub" / "deep.md")]
    assert rep["skipped_files"] == [str(m / "zz.bin")] and rep["counts"]["skipped_files"] == 1
    assert rep["quarantined"] == [] and rep["counts"]["sections"] == 3


def test_two_folders_and_a_refused_ticket_symlink(tmp_path):
    m1, m2, t = tmp_path / "m1", tmp_path / "m2", tmp_path / "t"
    for d in (m1, m2, t):
        d.mkdir()
    (m1 / "a.md").write_text("# A\ntext\n", encoding="utf-8")
    (m2 / "b.md").write_text("# B\ntext\n", encoding="utf-8")
    (m2 / "b.doc").write_bytes(b"d")
    _jsonl(tmp_path / "elsewhere.jsonl", [_t(0)])
    (t / "x.jsonl").symlink_to(tmp_path / "elsewhere.jsonl")
    (t / "notes.txt").write_text("n", encoding="utf-8")
    rep = ingest(load_config(), manuals=[m1, m2], tickets=[t], store=LocalStore(tmp_path / "st"))
    reason = (f"symlink refused: it points outside the folder {str(t)!r} (to {str(tmp_path / 'elsewhere.jsonl')!r}); "
              "copy the file into the folder instead")
    assert [(s["path"], s["kind"], s["format"]) for s in rep["sources"]] == [
        (str(t / "x.jsonl"), "tickets", "symlink"), (str(m1 / "a.md"), "manual", "markdown"),
        (str(m2 / "b.md"), "manual", "markdown")]
    assert rep["quarantined"] == [{"source": str(t / "x.jsonl"), "where": "file", "reason": reason, "id": ""}]
    assert [(e["path"], e["kind"], e["reason"]) for e in rep["skipped"]] == [
        (str(m2 / "b.doc"), "manual", "unsupported suffix '.doc'"), (str(t / "notes.txt"), "tickets",
                                                                   "unsupported suffix '.txt'")]
    assert rep["counts"]["tickets"] == 0 and rep["counts"]["sections"] == 2


def test_progress_bar_only_when_asked(tmp_path, capsys):
    a = _jsonl(tmp_path / "a.jsonl", [_t(0)])
    (tmp_path / "g.md").write_text(MANUAL, encoding="utf-8")
    rep = ingest(load_config(), manuals=[tmp_path / "g.md"], tickets=[a], store=LocalStore(tmp_path / "st"),
                 progress=True)
    err = capsys.readouterr().err
    # tqdm: "ingest: 100%|...| 2/2 [00:00<00:00, 61.2file/s]" (or "s/file" when slower than one file a second)
    assert "ingest: 100%" in err and "| 2/2 [" in err and re.search(r"(file/s|s/file)\]", err)
    assert rep["counts"]["stored"] == 3


def test_personal_ids_are_hashed_with_the_store_key(tmp_path, monkeypatch):
    monkeypatch.delenv("RLSD_ID_HASH_KEY", raising=False)
    a = _jsonl(tmp_path / "a.jsonl", [_t(0, id="jane.doe@example.com")])
    st = LocalStore(tmp_path / "st")
    ingest(load_config(), tickets=[a], store=st)
    key = (tmp_path / "st" / "keys" / "id-hash").read_bytes()
    assert len(key) == 32
    expect = "pii-" + hmac.new(key, b"jane.doe@example.com", hashlib.sha256).hexdigest()[:24]
    assert [t["id"] for t in load_snapshot(st)[2]] == [expect]

    monkeypatch.setenv("RLSD_ID_HASH_KEY", "k3y")
    st2 = LocalStore(tmp_path / "st2")
    ingest(load_config(), tickets=[a], store=st2)
    assert [t["id"] for t in load_snapshot(st2)[2]] == [
        "pii-" + hmac.new(b"k3y", b"jane.doe@example.com", hashlib.sha256).hexdigest()[:24]]
    assert not (tmp_path / "st2" / "keys").exists()


def test_redaction_off_keeps_text_and_makes_no_key(tmp_path, monkeypatch):
    monkeypatch.delenv("RLSD_ID_HASH_KEY", raising=False)
    a = _jsonl(tmp_path / "a.jsonl", [_t(0, body="mail jane.doe@example.com")])
    st = LocalStore(tmp_path / "st")
    rep = ingest(load_config(text="ingest: {redact: false}"), tickets=[a], store=st)
    assert rep["counts"]["redactions"] == {}
    assert load_snapshot(st)[2][0]["body"] == "mail jane.doe@example.com"
    assert not (tmp_path / "st" / "keys").exists()


# ----------------------------------------------------------------------------------------------
# Reading a snapshot back
# ----------------------------------------------------------------------------------------------


def test_iter_records_and_load_snapshot_of_an_earlier_snapshot(tmp_path):
    st = LocalStore(tmp_path / "st")
    (tmp_path / "g.md").write_text(MANUAL, encoding="utf-8")
    first = ingest(load_config(), manuals=[tmp_path / "g.md"],
                   tickets=[_jsonl(tmp_path / "a.jsonl", [_t(2), _t(0), _t(1)])], store=st)
    ingest(load_config(), tickets=[_jsonl(tmp_path / "b.jsonl", [_t(3)])], store=st)
    man, sections, tickets = load_snapshot(st)
    assert [t["id"] for t in tickets] == ["T-0", "T-1", "T-2", "T-3"]
    assert [s["id"] for s in sections] == ["g/guide", "g/guide/install"]
    assert [[t["id"] for t in c] for c in iter_records(st, man, "tickets", chunk=3)] == [["T-0", "T-1", "T-2"], ["T-3"]]
    assert [c for c in iter_records(st, man, "tickets", chunk=1)] == [[t] for t in tickets]
    assert [c for c in iter_records(st, man, "sections", chunk=1)] == [[s] for s in sections]
    assert list(iter_records(st, man, "sections")) == [sections]
    old_man, old_secs, old_ticks = load_snapshot(st, first["snapshot_id"])
    assert old_man["snapshot_id"] == first["snapshot_id"] and old_secs == sections
    assert [t["id"] for t in old_ticks] == ["T-0", "T-1", "T-2"] and old_ticks == tickets[:3]


# ----------------------------------------------------------------------------------------------
# Local copies of store objects are recorded by their s3:// URI (the ``names`` of _ingest_into)
# ----------------------------------------------------------------------------------------------


def test_local_copies_are_recorded_by_their_uri(tmp_path):
    scratch = tmp_path / "scratch"
    g = scratch / "0" / "g.md"
    g.parent.mkdir(parents=True)
    g.write_text(MANUAL, encoding="utf-8")
    a = _jsonl(scratch / "1" / "a.jsonl", [_t(0), _t(0, updated="2024-03-01T09:00:00Z")])
    doc = scratch / "2" / "n.docx"
    doc.parent.mkdir()
    doc.write_bytes(b"PK")
    local = _jsonl(tmp_path / "local.jsonl", [_t(1)])  # a local path is recorded as itself
    names = {g: "s3://bkt/in/manuals/g.md", a: "s3://bkt/in/tickets/a.jsonl", doc: "s3://bkt/in/manuals/n.docx"}
    cfg = load_config()
    st = LocalStore(tmp_path / "st")
    with WorkIndex() as work:
        rep = _ingest_into(cfg, st, work, None, None, [g], [a, local], [(doc, "manual")], [],
                           Redactor.from_config(cfg.ingest, id_key=b"k"), False, time.perf_counter(), names)
    assert [(s["path"], s["read"], s["stored"], s["quarantined"]) for s in rep["sources"]] == [
        ("s3://bkt/in/manuals/g.md", 2, 2, 0), ("s3://bkt/in/tickets/a.jsonl", 2, 1, 1), (str(local), 1, 1, 0)]
    assert rep["quarantined"] == [{
        "source": "s3://bkt/in/tickets/a.jsonl", "where": "line 2", "id": "T-0",
        "reason": "duplicate id: 'T-0' superseded by s3://bkt/in/tickets/a.jsonl line 1 "
                  "(updated 2024-03-01T10:00:00Z vs 2024-03-01T09:00:00Z; other content)"}]
    assert rep["skipped"] == [{"path": "s3://bkt/in/manuals/n.docx", "kind": "manual", "sha256": _digest(doc),
                               "bytes": 2, "reason": "unsupported suffix '.docx'"}]
    assert rep["skipped_files"] == ["s3://bkt/in/manuals/n.docx"]
    assert [s["path"] for s in st.read_manifest()["sources"]] == [
        "s3://bkt/in/manuals/g.md", "s3://bkt/in/tickets/a.jsonl", str(local)]
    assert "already_ingested" not in rep  # ingest() adds it


# ----------------------------------------------------------------------------------------------
# Objects are written in batches (bounded memory)
# ----------------------------------------------------------------------------------------------


class _Batches:
    """Records the size of every put_objects batch of a store."""

    def __init__(self, store, monkeypatch):
        self.sizes: list[int] = []
        real = store.put_objects

        def spy(blobs, **kw):
            self.sizes.append(len(blobs))
            return real(blobs, **kw)

        monkeypatch.setattr(store, "put_objects", spy)


def test_objects_are_flushed_when_the_batch_holds_flush_objects(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_mod, "FLUSH_OBJECTS", 2)
    g = tmp_path / "g.md"
    g.write_text(MANUAL, encoding="utf-8")  # 2 sections: a full batch
    h = tmp_path / "h.md"
    h.write_text("# H\none\n", encoding="utf-8")  # 1 section: not yet
    a = _jsonl(tmp_path / "a.jsonl", [_t(0), _t(1), _t(2)])
    st = LocalStore(tmp_path / "st")
    batches = _Batches(st, monkeypatch)
    rep = ingest(load_config(), manuals=[g, h], tickets=[a], store=st)
    # g: 2 blobs -> flush; h: 1 blob; T-0 makes 2 -> flush; T-1; T-2 makes 2 -> flush; the final flush is empty
    assert batches.sizes == [2, 2, 2, 0]
    # written in several batches, counted in full: 3 sections + 3 tickets + 2 index shards
    assert rep["objects_written"] == 8 and rep["counts"]["stored"] == 6


def _object_bytes(tmp_path, name, **inputs) -> tuple[list[int], list[int]]:
    """The canonical-JSON size of every section and ticket an ingest of ``inputs`` stores (a probe run)."""
    probe = LocalStore(tmp_path / name)
    ingest(load_config(), store=probe, **inputs)
    _, secs, ticks = load_snapshot(probe)
    return [len(canonical_json(s)) for s in secs], [len(canonical_json(t)) for t in ticks]


def test_objects_are_flushed_when_the_batch_holds_flush_bytes(tmp_path, monkeypatch):
    g = tmp_path / "g.md"
    g.write_text("# Guide\n" + "x" * 1000 + "\n## Install\n" + "y" * 1000 + "\n", encoding="utf-8")
    a = _jsonl(tmp_path / "a.jsonl", [_t(0), _t(1)])
    (s0, s1), (t0, t1) = _object_bytes(tmp_path, "probe", manuals=[g], tickets=[a])
    assert t0 + t1 < s0 + s1

    monkeypatch.setattr(ingest_mod, "FLUSH_BYTES", s0 + s1 + t0)  # reached exactly with T-0
    st = LocalStore(tmp_path / "st")
    batches = _Batches(st, monkeypatch)
    rep = ingest(load_config(), manuals=[g], tickets=[a], store=st)
    assert batches.sizes == [3, 1] and rep["objects_written"] == 2 + 2 + 2

    monkeypatch.setattr(ingest_mod, "FLUSH_BYTES", s0 + s1)  # reached exactly by the manual
    st2 = LocalStore(tmp_path / "st2")
    batches2 = _Batches(st2, monkeypatch)
    ingest(load_config(), manuals=[g], tickets=[a], store=st2)
    # the manual's 2 sections; then the byte count starts again from 0: T-0 + T-1 stay under it
    assert batches2.sizes == [2, 2]


def test_ticket_bytes_count_from_zero_in_each_batch(tmp_path, monkeypatch):
    a = _jsonl(tmp_path / "a.jsonl", [_t(0, body="b" * 300), _t(1, body="b" * 300), _t(2), _t(3), _t(4)])
    _, (t0, t1, t2, t3, t4) = _object_bytes(tmp_path, "probe", tickets=[a])
    # one byte short with T-0 + T-1: the first batch is written with T-2 (3 objects)
    monkeypatch.setattr(ingest_mod, "FLUSH_BYTES", t0 + t1 + 1)
    assert t2 >= 1 and t3 + t4 < t0 + t1 + 1
    st = LocalStore(tmp_path / "st")
    batches = _Batches(st, monkeypatch)
    ingest(load_config(), tickets=[a], store=st)
    assert batches.sizes == [3, 2]
    # after a batch the count starts again from 0: T-0 and T-1 are each a batch of their own, then T-2 + T-3
    # are one byte short of the limit (T-2 and T-4 have the same size) and T-4 fills the batch
    limit = t3 + t4 + 1
    monkeypatch.setattr(ingest_mod, "FLUSH_BYTES", limit)
    assert t0 >= limit and t1 >= limit and t2 == t4
    st2 = LocalStore(tmp_path / "st2")
    batches2 = _Batches(st2, monkeypatch)
    ingest(load_config(), tickets=[a], store=st2)
    assert batches2.sizes == [1, 1, 3, 0]


class _FakeBucket:
    """Stands in for an S3 prefix: download() streams an object's bytes into the scratch copy."""

    def __init__(self, objects: dict[str, bytes]):
        self.objects = objects
        self.dests: list[Path] = []

    def download(self, key: str, dest: Path) -> str:
        self.dests.append(dest)
        dest.write_bytes(self.objects[key])
        return hashlib.sha256(self.objects[key]).hexdigest()


def test_store_objects_are_read_from_scratch_copies_and_recorded_by_uri(tmp_path, monkeypatch):
    from rlsd.data import inbox

    tickets = "".join(json.dumps(_t(i)) + "\n" for i in range(2)).encode()
    objs = {"in/manuals/g.md": MANUAL.encode(), "in/manuals/n.docx": b"PK", "in/tickets/a.jsonl": tickets}
    bucket = _FakeBucket(objs)

    def sources(cfg, manuals, tickets):
        s = inbox.Sources()
        for key, data in objs.items():
            s.objects[key.split("/")[1]].append(inbox.Listed(uri=f"s3://bkt/{key}", key=key, bytes=len(data),
                                                             bucket=bucket))
        return s

    monkeypatch.setattr(ingest_mod, "resolve_sources", sources)
    st = LocalStore(tmp_path / "st")
    rep = ingest(load_config(), store=st)
    assert [(s["path"], s["kind"], s["read"], s["stored"]) for s in rep["sources"]] == [
        ("s3://bkt/in/manuals/g.md", "manual", 2, 2), ("s3://bkt/in/tickets/a.jsonl", "tickets", 2, 2)]
    assert rep["skipped"] == [{"path": "s3://bkt/in/manuals/n.docx", "kind": "manual",
                               "sha256": hashlib.sha256(b"PK").hexdigest(), "bytes": 2,
                               "reason": "unsupported suffix '.docx'"}]
    assert rep["already_ingested"] == [] and rep["counts"]["new_verified_tickets"] == 2
    # each object went to its own folder of one scratch folder of this ingest, deleted afterwards
    assert [d.name for d in bucket.dests] == ["g.md", "n.docx", "a.jsonl"]
    assert len({d.parents[2] for d in bucket.dests}) == 1 and not bucket.dests[0].parents[2].exists()
    assert [d.parent.parent.name for d in bucket.dests] == ["manuals", "manuals", "tickets"]

    again = ingest(load_config(), store=st)
    assert again["snapshot_written"] is False and again["snapshot_id"] == rep["snapshot_id"]
    assert again["already_ingested"] == [
        {"path": f"s3://bkt/{k}", "sha256": hashlib.sha256(v).hexdigest(), "bytes": len(v)} for k, v in objs.items()]


def test_same_time_edit_whose_bytes_were_already_flushed(tmp_path, monkeypatch):
    """FLUSH_OBJECTS=1: the plain edit is written with its batch before the winners are compared with the store;
    the version with lineage is then built from the stored object (the plain one stays unreferenced)."""
    st = LocalStore(tmp_path / "st")
    ingest(load_config(), tickets=[_jsonl(tmp_path / "a.jsonl", [_t(1)])], store=st)
    (old,) = load_snapshot(st)[2]
    monkeypatch.setattr(ingest_mod, "FLUSH_OBJECTS", 1)
    b = _jsonl(tmp_path / "b.jsonl", [_t(1, title="edited")])
    batches = _Batches(st, monkeypatch)
    rep = ingest(load_config(), tickets=[b], store=st)
    plain = {**old, "title": "edited"}
    assert batches.sizes == [1, 1]  # the plain edit, then the edit with its lineage
    assert rep["counts"]["same_time_edits"] == 1 and rep["counts"]["updated_tickets"] == 1
    assert rep["objects_written"] == 3  # plain edit + edit with lineage + ticket shard
    assert st.get_json_objects([_obj_digest(plain)])  # written, unreferenced
    assert load_snapshot(st)[2] == [{**plain, "supersedes": _obj_digest(old)}]
    # the same edit again: the stored version is this content plus its lineage; nothing new
    again = ingest(load_config(), tickets=[b], store=st)
    assert again["snapshot_written"] is False and again["objects_written"] == 0
    assert again["sources"][0]["stored"] == 1 and again["counts"]["updated_tickets"] == 0


def test_conflict_with_the_stored_version_after_a_flush(tmp_path, monkeypatch):
    st = LocalStore(tmp_path / "st")
    cfg = load_config(text="ingest: {same_time_edit: conflict}")
    ingest(cfg, tickets=[_jsonl(tmp_path / "a.jsonl", [_t(1)])], store=st)
    before = load_snapshot(st)
    monkeypatch.setattr(ingest_mod, "FLUSH_OBJECTS", 1)
    rep = ingest(cfg, tickets=[_jsonl(tmp_path / "b.jsonl", [_t(1, title="edited")])], store=st)
    assert rep["sources"][0]["reasons"] == {"conflict": 1} and rep["unchanged"] is True
    assert load_snapshot(st)[1:] == before[1:]


def test_a_newer_version_after_the_stored_one_in_the_same_file(tmp_path):
    """T-1 as stored, then a newer T-1: the first is superseded (its bytes were never pending)."""
    st = LocalStore(tmp_path / "st")
    ingest(load_config(), tickets=[_jsonl(tmp_path / "a.jsonl", [_t(1)])], store=st)
    b = _jsonl(tmp_path / "b.jsonl", [_t(1), _t(1, updated="2024-03-02T10:00:00Z", title="newer")])
    rep = ingest(load_config(), tickets=[b], store=st)
    assert rep["quarantined"] == [{"source": str(b), "where": "line 1", "id": "T-1", "reason": (
        f"duplicate id: 'T-1' superseded by {b} line 2 (updated 2024-03-02T10:00:00Z vs 2024-03-01T10:00:00Z; "
        "other content)")}]
    assert rep["counts"]["updated_tickets"] == 1 and rep["objects_written"] == 1 + 1 + 1
    assert [t["title"] for t in load_snapshot(st)[2]] == ["newer"]


def test_records_already_stored_are_not_batched_again(tmp_path, monkeypatch):
    st = LocalStore(tmp_path / "st")
    a = _jsonl(tmp_path / "a.jsonl", [_t(0), _t(1)])
    ingest(load_config(), tickets=[a], store=st)
    batches = _Batches(st, monkeypatch)
    rep = ingest(load_config(), tickets=[a], store=st)
    assert batches.sizes == [0] and rep["sources"][0]["stored"] == 2


def test_same_records_with_a_skipped_file_still_write_a_snapshot(tmp_path):
    m = tmp_path / "m"
    m.mkdir()
    (m / "g.md").write_text(MANUAL, encoding="utf-8")
    (m / "img.png").write_bytes(b"png")
    st = LocalStore(tmp_path / "st")
    first = ingest(load_config(), manuals=[m], store=st)
    again = ingest(load_config(), manuals=[m], store=st)
    skipped = [{"path": str(m / "img.png"), "kind": "manual", "sha256": hashlib.sha256(b"png").hexdigest(),
                "bytes": 3, "reason": "unsupported suffix '.png'"}]
    assert again["skipped"] == skipped and again["quarantine"] == []
    assert (again["unchanged"], again["snapshot_written"], again["objects_written"]) == (True, True, 0)
    man = st.read_manifest()
    extra = sha256(canonical_json([[], skipped]))
    assert again["snapshot_id"] == sha256(f"{man['content_hash']}:{first['snapshot_id']}:{extra}".encode())[:20]
    assert man["snapshot_id"] == again["snapshot_id"] and man["records_unchanged"] is True
    assert man["content_hash"] == st.read_manifest(first["snapshot_id"])["content_hash"]


def test_document_ids_come_from_the_redacted_name_and_empty_manuals_are_quarantined(tmp_path):
    """Two manuals whose names are e-mail addresses: both redact to the document id 'email', so the second is a
    duplicate document; a manual with no text is one quarantined record and stores nothing."""
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    m1, m2 = tmp_path / "x" / "jane@example.com.md", tmp_path / "y" / "bob@example.org.md"
    m1.write_text("# Setup\none\n", encoding="utf-8")
    m2.write_text("# Setup\ntwo\n", encoding="utf-8")
    empty = tmp_path / "empty.md"
    empty.write_text("\n\n# Only a heading\n", encoding="utf-8")
    st = LocalStore(tmp_path / "st")
    rep = ingest(load_config(), manuals=[m1, empty, m2], store=st)
    # the path: 'jane@example.com.md' as a whole reads as an address; the stem 'jane@example.com' too
    p1, p2 = str(tmp_path / "x" / "[EMAIL]"), str(tmp_path / "y" / "[EMAIL]")
    assert [(s["path"], s["read"], s["stored"], s["quarantined"], s["reasons"]) for s in rep["sources"]] == [
        (p1, 1, 1, 0, {}), (str(empty), 1, 0, 1, {"no text": 1}), (p2, 1, 0, 1, {"duplicate document id": 1})]
    reason = f"duplicate document id: 'email' already ingested from {p1} in this run; rename one file"
    assert rep["quarantined"][1] == {"source": p2, "where": "email/setup", "reason": reason, "id": "email/setup"}
    assert [(s["id"], s["text"]) for s in load_snapshot(st)[1]] == [("email/setup", "one")]


def test_ticket_export_paths_are_redacted(tmp_path):
    a = _jsonl(tmp_path / "jane@example.com" / "a.jsonl", [_t(0), _t(0)])
    rep = ingest(load_config(), tickets=[a], store=LocalStore(tmp_path / "st"))
    red = str(tmp_path / "[EMAIL]" / "a.jsonl")
    assert [s["path"] for s in rep["sources"]] == [red]
    assert rep["quarantined"] == [{"source": red, "where": "line 1", "id": "T-0", "reason": (
        f"duplicate id: 'T-0' superseded by {red} line 2 (updated 2024-03-01T10:00:00Z vs 2024-03-01T10:00:00Z; "
        "identical content)")}]


def test_an_older_duplicate_in_the_middle_of_a_file(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", [_t(0), _t(0, updated="2024-03-01T09:00:00Z"), _t(1)])
    st = LocalStore(tmp_path / "st")
    rep = ingest(load_config(), tickets=[a], store=st)
    assert rep["sources"] == [_rep(a, "tickets", "jsonl", a, 3, 2, 1, {"duplicate id": 1}, records=3)]
    assert rep["quarantined"][0]["where"] == "line 2"
    assert [(t["id"], t["updated"]) for t in load_snapshot(st)[2]] == [
        ("T-0", "2024-03-01T10:00:00Z"), ("T-1", "2024-03-01T10:00:00Z")]


def test_a_folder_holding_only_a_refused_symlink_is_still_ingested(tmp_path):
    t = tmp_path / "t"
    t.mkdir()
    _jsonl(tmp_path / "elsewhere.jsonl", [_t(0)])
    (t / "x.jsonl").symlink_to(tmp_path / "elsewhere.jsonl")
    st = LocalStore(tmp_path / "st")
    rep = ingest(load_config(), tickets=[t], store=st)
    assert rep["snapshot_written"] is True and st.latest() == rep["snapshot_id"]
    assert [(s["format"], s["read"], s["quarantined"]) for s in rep["sources"]] == [("symlink", 1, 1)]
    assert rep["counts"]["tickets"] == 0 and rep["counts"]["quarantined"] == 1


def test_an_inbox_holding_only_unsupported_files_writes_a_snapshot_naming_them(tmp_path):
    for kind, name in (("manuals", "n.docx"), ("tickets", "x.txt")):
        cfg, root, st = _inbox_store(tmp_path / kind)
        f = root / "inbox" / kind / name
        f.parent.mkdir(parents=True)
        f.write_bytes(b"data")
        rep = ingest(cfg, store=st)
        assert rep["sources"] == [] and rep["snapshot_written"] is True and st.latest() == rep["snapshot_id"]
        assert rep["skipped"] == [{"path": str(f), "kind": "manual" if kind == "manuals" else "tickets",
                                   "sha256": hashlib.sha256(b"data").hexdigest(), "bytes": 4,
                                   "reason": f"unsupported suffix {f.suffix!r}"}]
        # recorded, so the next ingest finds nothing new
        again = ingest(cfg, store=st)
        assert again["snapshot_written"] is False and again["already_ingested"] == [
            {"path": str(f), "sha256": hashlib.sha256(b"data").hexdigest(), "bytes": 4}]


def test_two_same_time_edits_in_one_ingest(tmp_path):
    st = LocalStore(tmp_path / "st")
    ingest(load_config(), tickets=[_jsonl(tmp_path / "a.jsonl", [_t(0), _t(1)])], store=st)
    rep = ingest(load_config(), tickets=[_jsonl(tmp_path / "b.jsonl", [_t(0, title="e0"), _t(1, title="e1")])],
                 store=st)
    assert (rep["counts"]["same_time_edits"], rep["counts"]["updated_tickets"], rep["counts"]["new_tickets"]) == (2, 2, 0)
    assert [t["title"] for t in load_snapshot(st)[2]] == ["e0", "e1"]


def test_reasons_count_every_refusal_of_a_source(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", [_t(0), _t(0, updated="2024-03-01T09:00:00Z"), _t(0, updated="2024-03-01T08:00:00Z")])
    rep = ingest(load_config(), tickets=[a], store=LocalStore(tmp_path / "st"))
    assert rep["sources"] == [_rep(a, "tickets", "jsonl", a, 3, 1, 2, {"duplicate id": 2}, records=3)]


def test_iter_records_default_chunk_is_5000(monkeypatch):
    ids = [f"s{i:05d}" for i in range(5001)]
    monkeypatch.setattr(ingest_mod, "read_index", lambda store, man, kind: {k: f"d{k}" for k in reversed(ids)})

    class Objects:
        def get_json_objects(self, digests):
            return {d: {"id": d[1:]} for d in digests}

    chunks = list(iter_records(Objects(), {}, "sections"))
    assert [len(c) for c in chunks] == [5000, 1]
    assert [r["id"] for c in chunks for r in c] == ids


class _OfferCountingStore(LocalStore):
    """A LocalStore that records the digest of every object offered to put_object (written or not)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.offered: list[str] = []

    def put_object(self, data: bytes) -> tuple[str, bool]:
        self.offered.append(sha256(data))
        return super().put_object(data)


def test_an_incremental_ingest_offers_only_objects_the_store_lacks(tmp_path, monkeypatch):
    """The previous snapshot's record and shard digests are known (index format 2): an ingest that adds one ticket
    offers the store only new objects, never one it already holds (a lost `known` table re-offers every shard).
    SHARD_TARGET 2 spreads 11 tickets over up to 16 shards (9 non-empty), of which the new ticket changes one."""
    import rlsd.data.index as index_mod

    monkeypatch.setattr(index_mod, "SHARD_TARGET", 2)
    rows = [{"id": f"T-{i}", "updated": "2024-03-01T10:00:00Z", "title": f"t{i}", "body": f"question {i}",
             "status": "resolved", "resolution": f"r{i}", "resolution_verified": True, "answer": str(i),
             "answer_type": "numeric"} for i in range(11)]
    st = _OfferCountingStore(tmp_path / "store")
    cfg = load_config()
    first = tmp_path / "a.jsonl"
    first.write_text("".join(json.dumps(r) + "\n" for r in rows[:10]))
    ingest(cfg, tickets=[first], store=st)
    before = {p.name for p in (tmp_path / "store" / "objects").rglob("*") if p.is_file()}
    st.offered.clear()
    second = tmp_path / "b.jsonl"
    second.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rep = ingest(cfg, tickets=[second], store=st)
    assert rep["counts"]["new_tickets"] == 1
    assert len(st.read_manifest()["index"]["tickets"]["shards"]) > 1  # so some shards are unchanged
    assert st.offered and not set(st.offered) & before, sorted(set(st.offered) & before)


def test_redactions_in_a_refused_symlinks_reason_are_counted_in_its_report(tmp_path):
    # a manuals folder named after a person's e-mail address holds a symlink leading out of it: the refusal's
    # reason quotes the folder's path, redacted (one EMAIL), and the symlink's source report counts it
    m = tmp_path / "jane@corp.example"
    m.mkdir()
    (m / "g.md").write_text(MANUAL, encoding="utf-8")
    outside = tmp_path / "outside.md"
    outside.write_text("# Secret\nnever read\n", encoding="utf-8")
    (m / "b-out.md").symlink_to(outside)
    rep = ingest(load_config(), manuals=[m], store=LocalStore(tmp_path / "st"))
    (q,) = rep["quarantined"]
    assert q["reason"].startswith("symlink refused: it points outside the folder ") and "jane@corp.example" not in q["reason"]
    link, manual = rep["sources"]
    assert (link["format"], link["redactions"]) == ("symlink", {"EMAIL": 1})
    assert manual["redactions"] == {}
