"""Ingest's invariant under hostile exports (issue 18 items 1, 2, 4): per source file, records read == records
counted by an independent pass == stored + quarantined, or no snapshot at all; a stray CSV quote costs one
quarantined span, not the rest of the file; an edit that keeps its updated time is never dropped; every
quarantine chunk is named by a manifest.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlsd.config import load_config
from rlsd.data import readers
from rlsd.data.ingest import IngestError, ingest, load_snapshot
from rlsd.data.readers import count_records
from rlsd.data.store import LocalStore

SETTINGS = settings(max_examples=int(os.environ.get("RLSD_HYPOTHESIS_EXAMPLES", "60")), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
HEADER = "id,updated,title,body,resolution"
T0 = "2024-03-01T10:00:00Z"


def torn_export(path: Path, n: int = 4000, stray: tuple[int, ...] = (2,), pii: bool = True) -> Path:
    """The issue's export: a header and n rows (4,001 lines of records and header); row ``k`` in ``stray``
    opens a quote in its body that never closes. The torn row carries an e-mail and a password."""
    rows = [HEADER]
    for i in range(1, n + 1):
        body = f"body of ticket {i} with no comma"
        if i in stray:
            body = ('"the customer wrote: it said ""error 5"" and then jane.doe@corp.example said password is '
                    'hunter2' if pii else '"never closed')
        rows.append(f"T-{i},{T0},title {i},{body},fixed")
    path.write_text("\n".join(rows) + "\n")
    return path


def _accounted(rep: dict, store: LocalStore) -> tuple[set[str], set[str]]:
    """(ids in the snapshot, ids in the quarantine: the id field or the raw text of each record)."""
    stored = {t["id"] for t in load_snapshot(store)[2]} if rep["counts"]["tickets"] else set()
    quarantined: set[str] = set()
    for d in rep["quarantine"]:
        for q in json.loads(store.get_object(d)):
            quarantined.add(q["id"])
            quarantined.update(w.split(",")[0] for w in q.get("raw", "").splitlines())
    return stored, quarantined


def test_the_issue_case_a_stray_quote_in_row_2_of_4001_loses_nothing(tmp_path):
    p = torn_export(tmp_path / "export.csv")
    st_ = LocalStore(tmp_path / "st")
    rep = ingest(load_config(), tickets=[p], store=st_)
    s = rep["sources"][0]
    assert (s["read"], s["stored"], s["quarantined"], s["records"]) == (4000, 3999, 1, 4000)
    stored, quarantined = _accounted(rep, st_)
    assert len(stored) == 3999 and {f"T-{i}" for i in range(1, 4001)} == stored | quarantined  # 0 lost
    q = rep["quarantined"][0]
    assert q["id"] == "T-2" and q["where"] == "line 3" and q["reason"].startswith("stray quote")
    assert "line 3 quarantined, reading resumes at line 4" in q["reason"]
    assert q["raw"].startswith("T-2,") and "jane.doe" not in q["raw"] and "hunter2" not in q["raw"]
    assert "[EMAIL]" in q["raw"] and "[PASSWORD]" in q["raw"]


@pytest.mark.parametrize("where", ["first", "middle", "last", "several"])
def test_stray_quotes_anywhere_cost_one_line_each(tmp_path, where):
    n = 300
    stray = {"first": (1,), "middle": (150,), "last": (n,), "several": (5, 6, 100, 299)}[where]
    p = torn_export(tmp_path / "e.csv", n=n, stray=stray, pii=False)
    st_ = LocalStore(tmp_path / "st")
    rep = ingest(load_config(), tickets=[p], store=st_)
    s = rep["sources"][0]
    assert (s["read"], s["stored"], s["quarantined"]) == (n, n - len(stray), len(stray))
    stored, quarantined = _accounted(rep, st_)
    assert stored | quarantined == {f"T-{i}" for i in range(1, n + 1)}
    assert sorted(q["where"] for q in rep["quarantined"]) == sorted(f"line {k + 1}" for k in stray)


def test_a_stray_quote_before_a_real_multiline_field_does_not_eat_it(tmp_path):
    # the stray quote on line 3 must not pair with the quote that opens the real multi-line body of T-5
    lines = [HEADER, f"T-1,{T0},a,plain,x", f'T-2,{T0},b,"stray,x', f"T-3,{T0},c,plain,x", f"T-4,{T0},d,plain,x",
             f'T-5,{T0},e,"two\nlines, with a comma",x', f"T-6,{T0},f,plain,x"]
    p = tmp_path / "e.csv"
    p.write_text("\n".join(lines) + "\n")
    st_ = LocalStore(tmp_path / "st")
    rep = ingest(load_config(), tickets=[p], store=st_)
    tickets = {t["id"]: t for t in load_snapshot(st_)[2]}
    assert sorted(tickets) == ["T-1", "T-3", "T-4", "T-5", "T-6"]
    assert tickets["T-5"]["body"] == "two\nlines, with a comma"
    assert [(q["id"], q["where"]) for q in rep["quarantined"]] == [("T-2", "line 3")]


def test_a_stray_quote_in_an_export_larger_than_the_record_limit(tmp_path):
    # the open quote runs into ingest.max_ticket_line_bytes before the end of the file
    p = torn_export(tmp_path / "e.csv", n=2000, stray=(10,), pii=False)
    cfg = load_config(text="ingest: {max_ticket_line_bytes: 4096}")
    rep = ingest(cfg, tickets=[p], store=LocalStore(tmp_path / "st"))
    s = rep["sources"][0]
    assert (s["read"], s["stored"], s["quarantined"]) == (2000, 1999, 1)
    assert "over ingest.max_ticket_line_bytes=4096" in rep["quarantined"][0]["reason"]


def test_a_torn_header_quarantines_every_row_instead_of_dropping_them(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text('id,"updated,title\n' + "".join(f"T-{i},{T0},t\n" for i in range(50)))
    rep = ingest(load_config(), tickets=[p], store=LocalStore(tmp_path / "st"))
    s = rep["sources"][0]
    assert s["read"] == s["quarantined"] == s["records"] == 50 and s["stored"] == 0
    assert rep["quarantined"][0]["reason"].startswith("no usable CSV header: the header at line 1 is unreadable (stray quote")


# ---------------------------------------------------------------------------------------------- property

row_kinds = st.sampled_from(["plain", "stray_quote", "quoted_comma", "multiline", "escaped", "bad_close", "blank"])


def _row(i: int, kind: str) -> str:
    return {"plain": f"T-{i},{T0},t{i},body {i},r",
            "stray_quote": f'T-{i},{T0},t{i},"body {i} never closed,r',
            "quoted_comma": f'T-{i},{T0},t{i},"a, b",r',
            "multiline": f'T-{i},{T0},t{i},"line one\nline two",r',
            "escaped": f'T-{i},{T0},t{i},"say ""hi""",r',
            "bad_close": f'T-{i},{T0},t{i},"quoted" then text,r',
            "blank": ""}[kind]


@SETTINGS
@given(kinds=st.lists(row_kinds, min_size=1, max_size=40), crlf=st.booleans())
def test_property_every_csv_row_is_stored_or_quarantined(kinds, crlf):
    d = Path(tempfile.mkdtemp(prefix="torn-"))
    text = "\n".join([HEADER] + [_row(i, k) for i, k in enumerate(kinds)]) + "\n"
    (d / "e.csv").write_bytes(text.replace("\n", "\r\n").encode() if crlf else text.encode())
    st_ = LocalStore(d / "st")
    rep = ingest(load_config(), tickets=[d / "e.csv"], store=st_)
    s = rep["sources"][0]
    assert s["read"] == s["records"] == s["stored"] + s["quarantined"]
    stored, quarantined = _accounted(rep, st_)
    want = {f"T-{i}" for i, k in enumerate(kinds) if k != "blank"}
    assert want <= stored | quarantined, want - stored - quarantined
    # rows without a quote problem are stored whatever broke around them, unless a stray quote's own line
    # range is where they sit (a stray quote costs its own line only)
    for i, k in enumerate(kinds):
        if k in ("plain", "quoted_comma", "escaped", "multiline"):
            assert f"T-{i}" in stored, (i, k, rep["quarantined"])


# ---------------------------------------------------------------------------------------------- enforcement

def test_a_reader_that_drops_a_record_fails_the_ingest_and_writes_no_snapshot(tmp_path, monkeypatch):
    p = torn_export(tmp_path / "e.csv", n=50, stray=(), pii=False)
    real = readers._iter_raw_tickets

    def lossy(*a, **kw):  # a parser bug: the 7th record vanishes
        for k, item in enumerate(real(*a, **kw)):
            if k != 6:
                yield item

    monkeypatch.setattr(readers, "_iter_raw_tickets", lossy)
    st_ = LocalStore(tmp_path / "st")
    with pytest.raises(IngestError, match=r"independent count of record boundaries finds 50, the parser read 49"):
        ingest(load_config(), tickets=[p], store=st_)
    assert st_.latest() is None and st_.list_snapshots() == []


def test_a_record_neither_stored_nor_quarantined_fails_the_ingest(tmp_path, monkeypatch):
    from rlsd.data.index import WorkIndex

    p = torn_export(tmp_path / "e.csv", n=20, stray=(), pii=False)
    st_ = LocalStore(tmp_path / "st")
    real = WorkIndex.winners_against_stored

    def forgets_one(self):  # a bookkeeping bug: one record read and parsed is never resolved
        rows = real(self)
        next(rows)
        yield from rows

    monkeypatch.setattr(WorkIndex, "winners_against_stored", forgets_one)
    with pytest.raises(IngestError, match=r"the parser read 20, stored 19 \+ quarantined 0 = 19; no snapshot"):
        ingest(load_config(), tickets=[p], store=st_)
    assert st_.latest() is None and st_.list_snapshots() == []


def test_a_count_that_disagrees_with_the_reader_fails_the_ingest(tmp_path, monkeypatch):
    from rlsd.data import ingest as ingest_mod

    p = torn_export(tmp_path / "e.csv", n=20, stray=(), pii=False)
    st_ = LocalStore(tmp_path / "st")
    monkeypatch.setattr(ingest_mod, "count_records", lambda *a: 21)  # the file holds one record more
    with pytest.raises(IngestError, match="finds 21, the parser read 20"):
        ingest(load_config(), tickets=[p], store=st_)
    assert st_.latest() is None


def test_a_splitter_that_loses_a_line_fails_the_ingest(tmp_path, monkeypatch):
    # reader and count share the CSV splitter; a splitter bug that drops a line (so both would agree on one
    # record fewer) is caught by the count's own check that the spans cover every physical line in order
    p = torn_export(tmp_path / "e.csv", n=30, stray=(), pii=False)
    real = readers.csv_spans

    def skips_line_12(*a, **kw):
        for span in real(*a, **kw):
            if span.first != 12:
                yield span

    monkeypatch.setattr(readers, "csv_spans", skips_line_12)
    st_ = LocalStore(tmp_path / "st")
    with pytest.raises(IngestError, match=r"not contiguous: lines 13-13 after line 11"):
        ingest(load_config(), tickets=[p], store=st_)
    assert st_.latest() is None


def test_independent_count_matches_the_reader_on_messy_files(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_bytes(b"\xef\xbb\xbf{}\n\n  \r\n{\"id\": 1}\n\xff\xfe\nnot json\n" + b"x" * 3000 + b"\n")
    assert count_records(p, "jsonl", 1024) == 5
    q = tmp_path / "m.csv"
    q.write_text('\ufeffid,body\n\n1,"a\nb"\n2,"open\n3,c\n,\n')
    assert count_records(q, "csv", 1024) == 4  # 1 (two lines), 2 (stray: its own line), 3, the row of blanks


# ---------------------------------------------------------------------------------------------- same-time edits

def _ticket(body: str, tid: str = "T-1", updated: str = T0) -> str:
    return json.dumps({"id": tid, "updated": updated, "title": "t", "body": body, "resolution_verified": True}) + "\n"


def test_an_edit_that_keeps_updated_at_becomes_a_new_version_with_lineage(tmp_path):
    st_ = LocalStore(tmp_path / "st")
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(_ticket("first text"))
    b.write_text(_ticket("edited text"))
    r1 = ingest(load_config(), tickets=[a], store=st_)
    old_digest = json.loads(st_.get_object(load_snapshot(st_)[0]["index"]["tickets"]["shards"][""]))["T-1"][0]
    r2 = ingest(load_config(), tickets=[b], store=st_)
    assert not r2["unchanged"] and r2["counts"]["updated_tickets"] == 1 and r2["counts"]["same_time_edits"] == 1
    assert r2["sources"][0]["stored"] == 1 and r2["new_verified_tickets"] == 1
    (t,) = load_snapshot(st_)[2]
    assert t["body"] == "edited text" and t["supersedes"] == old_digest
    assert json.loads(st_.get_object(old_digest))["body"] == "first text"  # the replaced version stays readable
    # the same edit again: nothing new (the stored version is this content plus its lineage)
    r3 = ingest(load_config(), tickets=[b], store=st_)
    assert r3["unchanged"] and not r3["snapshot_written"] and r3["counts"]["same_time_edits"] == 0
    assert r3["objects_written"] == 0
    assert r1["snapshot_id"] != r2["snapshot_id"] == r3["snapshot_id"]


def test_the_old_export_read_again_does_not_undo_a_same_time_edit(tmp_path):
    """The version an edit replaced, read again from yesterday's export, was taken for a new edit of the edit:
    the ticket went back to its old text, and every re-run of the two exports flipped it again (a new object and
    a new snapshot each time, never settling). The stored version's lineage names it: it is older."""
    st_ = LocalStore(tmp_path / "st")
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(_ticket("first text"))
    b.write_text(_ticket("edited text"))
    ingest(load_config(), tickets=[a], store=st_)
    ingest(load_config(), tickets=[b], store=st_)
    edited = load_snapshot(st_)[2][0]
    r3 = ingest(load_config(), tickets=[a], store=st_)
    s = r3["sources"][0]
    assert (s["read"], s["stored"], s["quarantined"]) == (1, 0, 1) and s["reasons"] == {"older than stored version": 1}
    assert r3["unchanged"] and r3["counts"]["same_time_edits"] == 0
    assert load_snapshot(st_)[2][0] == edited
    r4 = ingest(load_config(), tickets=[b], store=st_)  # and the edit read again changes nothing either
    assert r4["unchanged"] and not r4["snapshot_written"] and r4["objects_written"] == 0
    assert load_snapshot(st_)[2][0] == edited


def test_an_edit_that_keeps_updated_at_is_a_conflict_when_configured(tmp_path):
    st_ = LocalStore(tmp_path / "st")
    cfg = load_config(text="ingest: {same_time_edit: conflict}")
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(_ticket("first text"))
    b.write_text(_ticket("edited text"))
    ingest(cfg, tickets=[a], store=st_)
    r2 = ingest(cfg, tickets=[b], store=st_)
    s = r2["sources"][0]
    assert (s["read"], s["stored"], s["quarantined"]) == (1, 0, 1) and s["reasons"] == {"conflict": 1}
    assert "same updated time" in r2["quarantined"][0]["reason"]
    assert load_snapshot(st_)[2][0]["body"] == "first text"
    assert st_.read_manifest()["quarantine"] == r2["quarantine"]  # the conflict is on record


@pytest.mark.parametrize("policy", ["new_version", "conflict"])
def test_same_time_edits_inside_one_ingest(tmp_path, policy):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(_ticket("from a") + _ticket("same", tid="T-2"))
    b.write_text(_ticket("from b") + _ticket("same", tid="T-2"))
    st_ = LocalStore(tmp_path / "st")
    rep = ingest(load_config(text=f"ingest: {{same_time_edit: {policy}}}"), tickets=[a, b], store=st_)
    ra, rb = rep["sources"]
    bodies = {t["id"]: t["body"] for t in load_snapshot(st_)[2]}
    reasons = sorted(q["reason"].split(":")[0] for q in rep["quarantined"])
    if policy == "new_version":
        assert bodies == {"T-1": "from b", "T-2": "same"} and reasons == ["duplicate id", "duplicate id"]
        assert any("other content" in q["reason"] for q in rep["quarantined"])
    else:
        assert bodies == {"T-1": "from a", "T-2": "same"} and reasons == ["conflict", "duplicate id"]
    assert ra["read"] + rb["read"] == ra["stored"] + rb["stored"] + ra["quarantined"] + rb["quarantined"] == 4


# ---------------------------------------------------------------------------------------------- quarantine on record

def test_every_quarantine_chunk_is_named_by_a_manifest(tmp_path):
    st_ = LocalStore(tmp_path / "st")
    good, bad, mixed = tmp_path / "good.jsonl", tmp_path / "bad.jsonl", tmp_path / "mixed.jsonl"
    good.write_text(_ticket("x", "T-1") + _ticket("y", "T-2"))
    bad.write_text("not json\n" + _ticket("z", "", ))
    mixed.write_text(_ticket("x", "T-1") + "{broken\n")
    chunks = []
    for f in (good, bad, bad, mixed, good):
        rep = ingest(load_config(), tickets=[f], store=st_)
        chunks += rep["quarantine"]
        if f is not good:
            assert rep["unchanged"] and rep["snapshot_written"]
    assert len(chunks) == 3
    named = set()
    for sid in st_.list_snapshots():
        named.update(st_.read_manifest(sid)["quarantine"])
    assert set(chunks) <= named
    # and each is reachable from refs/latest through `previous`
    reach, sid = set(), st_.latest()
    while sid:
        man = st_.read_manifest(sid)
        reach.update(man["quarantine"])
        sid = man["previous"]
    assert set(chunks) <= reach


def test_random_exports_reconcile_or_fail_loudly(tmp_path):
    """A seeded fuzz over whole files: random rows of every kind, random CRLF, random junk bytes."""
    rng = random.Random(18)
    for trial in range(30):
        kinds = [rng.choice(["plain", "stray_quote", "quoted_comma", "multiline", "escaped", "bad_close", "blank"])
                 for _ in range(rng.randint(1, 60))]
        text = "\n".join([HEADER] + [_row(i, k) for i, k in enumerate(kinds)]) + "\n"
        raw = text.encode() + bytes(rng.randrange(256) for _ in range(rng.randint(0, 20)))
        p = tmp_path / f"f{trial}.csv"
        p.write_bytes(raw)
        rep = ingest(load_config(), tickets=[p], store=LocalStore(tmp_path / f"st{trial}"))
        s = rep["sources"][0]
        assert s["read"] == s["records"] == s["stored"] + s["quarantined"]


# ---------------------------------------------------------------------------------------------- line ends, short rows

@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_export_with_bare_cr_line_ends_is_read_record_by_record(tmp_path, fmt):
    """Excel's "CSV (Macintosh)" ends lines with a bare CR. Read as one line, a CSV export was its header alone:
    'read 0 = stored 0 + quarantined 0', every record gone without a word; a JSONL export was one invalid record."""
    if fmt == "csv":
        rows = [HEADER] + [f"T-{i},{T0},title {i},\"body {i}\rsecond line\",fixed" for i in range(30)]
    else:
        rows = [json.dumps({"id": f"T-{i}", "updated": T0, "body": f"body {i}"}) for i in range(30)]
    p = tmp_path / f"mac.{fmt}"
    p.write_bytes(("\r".join(rows) + "\r").encode())
    st_ = LocalStore(tmp_path / "st")
    rep = ingest(load_config(), tickets=[p], store=st_)
    s = rep["sources"][0]
    assert (s["read"], s["stored"], s["quarantined"], s["records"]) == (30, 30, 0, 30)
    tickets = load_snapshot(st_)[2]
    assert len(tickets) == 30
    if fmt == "csv":
        assert {t["body"] for t in tickets} == {f"body {i}\rsecond line" for i in range(30)}


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_unicode_export_with_a_byte_order_mark_is_read_as_text(tmp_path, fmt, encoding):
    """A "Unicode" export (UTF-16 with its byte order mark: Excel's and PowerShell's) stores the same tickets as
    its UTF-8 twin. Read as bytes, every CSV row was part of a header with NULs ('no usable CSV header') and every
    JSONL line was invalid JSON: read == quarantined, nothing stored."""
    if fmt == "csv":
        rows = [HEADER] + [f"T-{i},{T0},título {i},\"body {i}\nzweite Zeile: Größe 😀\",fixed" for i in range(20)]
    else:
        rows = [json.dumps({"id": f"T-{i}", "updated": T0, "body": f"Größe {i} 😀"}, ensure_ascii=False)
                for i in range(20)]
    text = "\r\n".join(rows) + "\r\n"
    bom = {"utf-16": "", "utf-16-be": "\ufeff", "utf-32": ""}[encoding]  # utf-16 / utf-32 write their own mark
    wide, narrow = tmp_path / f"wide.{fmt}", tmp_path / f"narrow.{fmt}"
    wide.write_bytes((bom + text).encode(encoding))
    narrow.write_bytes(text.encode("utf-8"))
    got = {}
    for name, path in (("wide", wide), ("narrow", narrow)):
        st_ = LocalStore(tmp_path / f"st-{name}")
        rep = ingest(load_config(), tickets=[path], store=st_)
        s = rep["sources"][0]
        assert (s["read"], s["stored"], s["quarantined"], s["records"], s["replaced_bytes"]) == (20, 20, 0, 20, 0)
        got[name] = sorted((t["id"], t["title"], t["body"]) for t in load_snapshot(st_)[2])
    assert got["wide"] == got["narrow"]
    assert any("Größe" in body and "😀" in body for _, _, body in got["wide"])


def test_a_short_row_with_a_quoted_newline_is_a_record_not_a_stray_quote(tmp_path):
    """A row that leaves its trailing columns out is read on one line (the missing fields are empty); the same row
    with a quoted newline in its body was taken for a stray quote: its first line quarantined, its second line
    read as a record of its own (one record counted twice, neither stored)."""
    p = tmp_path / "short.csv"
    p.write_text(f'{HEADER}\nT-1,{T0},title,"line one\nline two"\nT-2,{T0},title,"one line"\n')
    st_ = LocalStore(tmp_path / "st")
    rep = ingest(load_config(), tickets=[p], store=st_)
    s = rep["sources"][0]
    assert (s["read"], s["stored"], s["quarantined"]) == (2, 2, 0), rep["quarantined"]
    assert {t["id"]: t["body"] for t in load_snapshot(st_)[2]} == {"T-1": "line one\nline two", "T-2": "one line"}


def test_a_stray_quote_that_swallows_whole_records_is_still_damage(tmp_path):
    """The other side of the short-row rule: a quote that opens in a row and closes at the end of a later row has
    taken in whole records (lines with the header's number of fields); that stays a stray quote."""
    p = tmp_path / "swallow.csv"
    p.write_text(f'{HEADER}\nT-1,{T0},"oops,body\nT-2,{T0},title,body,fixed"\nT-3,{T0},title,body,fixed\n')
    st_ = LocalStore(tmp_path / "st")
    rep = ingest(load_config(), tickets=[p], store=st_)
    s = rep["sources"][0]
    assert (s["read"], s["stored"], s["quarantined"]) == (3, 2, 1) and s["reasons"] == {"stray quote": 1}
    assert {t["id"] for t in load_snapshot(st_)[2]} == {"T-2", "T-3"}
