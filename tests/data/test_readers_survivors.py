"""Exact behaviour of rlsd.data.readers at the edges the earlier reader tests left open: CSV quoting at a line's
first and last characters, the field count taken from the header only, record counts that must agree with
the parser (BOMs, a first line of one byte, the splitter's own guard), the quarantine entry's cuts, the
reason of an unreadable PDF and links that are not JSON. Every expected value was worked out by hand."""

from __future__ import annotations

import io

import pytest

import rlsd.data.readers as readers
from rlsd.config import IngestConfig
from rlsd.data.readers import (
    SourceReport,
    _as_links,
    _iter_raw_tickets,
    _scan_line,
    count_records,
    csv_spans,
    normalise_ticket,
    parse_manual,
    parse_tickets,
    quarantine_entry,
)
from rlsd.data.redact import Redactor

RED = Redactor.from_config(IngestConfig())
BOM = b"\xef\xbb\xbf"


def _spans(text: str, limit: int = 1024):
    out = csv_spans(io.BytesIO(text.encode()), limit, lambda n, b: b.decode())
    return [(s.first, s.last, s.lines, s.damage, s.size) for s in out]


def _raw(data: bytes, fmt: str = "csv", limit: int = 1024):
    rep = SourceReport(path="p", kind="tickets", format=fmt)
    return list(_iter_raw_tickets(io.BytesIO(data), fmt, limit, rep))


# ----------------------------------------------------------------------------------------------
# CSV quoting: a quote or a comma as the first character of a line, a doubled quote as its last
# ----------------------------------------------------------------------------------------------


def test_a_quote_at_the_start_of_a_continuation_line_closes_the_field():
    assert _scan_line('",x\n', True, 1) == (False, 2, False)
    assert _scan_line('"\n', True, 2) == (False, 2, False)
    assert _spans('id,body\n1,"a\n"\n2,y\n') == [
        (1, 1, ["id,body\n"], "", 8), (2, 3, ['1,"a\n', '"\n'], "", 7), (4, 4, ["2,y\n"], "", 4)]
    assert _raw(b'id,body\n1,"a\n"\n2,y\n') == [
        ("lines 2-3", {"id": "1", "body": "a\n"}, '1,"a\n"\n', "", ""),
        ("line 4", {"id": "2", "body": "y"}, "2,y\n", "", "")]


def test_a_doubled_quote_at_the_end_of_a_line_is_an_escaped_quote_not_a_close():
    assert _scan_line('a""\n', True, 1) == (True, 1, False)
    assert _scan_line('1,"say ""\n', False, 1) == (True, 2, False)
    assert _scan_line('hi"""\n', True, 2) == (False, 2, False)
    data = '1,"say ""\nhi"""\n'
    assert _spans("id,body\n" + data) == [(1, 1, ["id,body\n"], "", 8), (2, 3, ['1,"say ""\n', 'hi"""\n'], "", 16)]
    assert _raw(b"id,body\n" + data.encode()) == [("lines 2-3", {"id": "1", "body": 'say "\nhi"'}, data, "", "")]


def test_an_empty_quoted_field_opens_and_closes_at_once():
    assert _scan_line('"",x\n', False, 1) == (False, 2, False)
    assert _scan_line('a,""\n', False, 1) == (False, 2, False)
    assert _spans('id,body\n"",x\n2,y\n') == [
        (1, 1, ["id,body\n"], "", 8), (2, 2, ['"",x\n'], "", 5), (3, 3, ["2,y\n"], "", 4)]


def test_a_line_starting_with_a_comma_counts_its_empty_first_field():
    assert _scan_line(",b\n", False, 1) == (False, 2, False)
    assert _scan_line(",", False, 1) == (False, 2, False)
    # 2 fields, as the header: the record runs over two lines
    assert _spans('id,body\n,"a\nb"\n') == [(1, 1, ["id,body\n"], "", 8), (2, 3, [',"a\n', 'b"\n'], "", 7)]


def test_the_field_count_of_a_multi_line_record_is_checked_against_the_header_only():
    # a one-line record of 3 fields is kept and does not become the expected count: the two-line record of
    # 2 fields after it matches the header
    assert _spans('id,body\n1,2,3\n2,"a\nb"\n') == [
        (1, 1, ["id,body\n"], "", 8), (2, 2, ["1,2,3\n"], "", 6), (3, 4, ['2,"a\n', 'b"\n'], "", 8)]


# ----------------------------------------------------------------------------------------------
# count_records agrees with what the parser reads
# ----------------------------------------------------------------------------------------------


def _cfg() -> IngestConfig:
    return IngestConfig()


def test_jsonl_count_drops_a_second_bom_on_the_first_line_only(tmp_path):
    p = tmp_path / "t.jsonl"
    # line 1: the file's BOM and the line's BOM are both dropped, so it is blank; line 3 keeps one U+FEFF after
    # decode_text drops its first BOM: it is not blank
    p.write_bytes(BOM + BOM + b"\n" + b'{"id": "1", "updated": "2024-01-01"}\n' + BOM + BOM + b"\n")
    assert count_records(p, "jsonl", 1024) == 2
    q = tmp_path / "u.jsonl"
    q.write_bytes(BOM + BOM + b"\n" + b'{"id": "1", "updated": "2024-01-01"}\n')
    assert count_records(q, "jsonl", 1024) == 1
    tickets, quarantined, rep = parse_tickets(q, cfg=_cfg(), redactor=RED)
    assert [(t["id"], w) for t, w in tickets] == [("1", "line 2")] and quarantined == []
    assert (rep.read, rep.records) == (1, 1)


def test_csv_count_of_a_file_whose_first_line_is_one_byte(tmp_path):
    p = tmp_path / "t.csv"
    p.write_bytes(b"\nid,updated\n1,2024-01-01\n")
    assert count_records(p, "csv", 1024) == 1
    tickets, quarantined, rep = parse_tickets(p, cfg=_cfg(), redactor=RED)
    assert [(t["id"], w) for t, w in tickets] == [("1", "line 3")] and quarantined == []
    assert (rep.read, rep.records) == (1, 1)


def test_csv_count_refuses_spans_that_leave_lines_out(tmp_path, monkeypatch):
    real = readers.csv_spans

    def drops_the_last_span(fh, limit, decode):
        return list(real(fh, limit, decode))[:-1]

    monkeypatch.setattr(readers, "csv_spans", drops_the_last_span)
    p = tmp_path / "t.csv"
    p.write_bytes(b"id,body\n1,x\n2,y\n")
    with pytest.raises(ValueError, match=r"^CSV record spans cover 2 of 3 lines \(a bug in rlsd's CSV splitter\)$"):
        count_records(p, "csv", 1024)


# ----------------------------------------------------------------------------------------------
# quarantine entries: the id and the raw text are read up to their cuts
# ----------------------------------------------------------------------------------------------


def test_quarantine_id_is_read_up_to_its_first_1000_characters():
    rid = "bob@example.com " + "x" * 984
    assert len(rid) == 1000
    want = RED.redact_id(rid)[0]
    assert want.startswith("pii-") and len(want) == 28
    for tail in ("A", "B", "x" * 500):
        rec, counts = quarantine_entry(RED, "src", "line 2", rid + tail, "why")
        assert rec["id"] == want
        assert counts == {"EMAIL": 1, "ID_HASHED": 1}


def test_quarantine_raw_text_is_redacted_up_to_its_first_8000_characters():
    # the address ends at character 8,001: its first 8,000 characters hold "a@b.c", which is not an address
    raw = "z" * 7994 + " a@b.co"
    assert len(raw) == 8001
    rec, counts = quarantine_entry(RED, "src", "line 2", "", "why", raw)
    assert rec["raw"] == "z" * 2000 and counts == {}
    rec, counts = quarantine_entry(RED, "src", "line 2", "", "why", raw[1:])
    assert rec["raw"] == "z" * 2000 and counts == {"EMAIL": 1}


# ----------------------------------------------------------------------------------------------
# manuals: an unreadable PDF names the error
# ----------------------------------------------------------------------------------------------


def test_unreadable_pdf_reason_names_the_error_type(tmp_path, monkeypatch):
    p = tmp_path / "broken.pdf"
    p.write_bytes(b"not a pdf")
    sections, q, rep = parse_manual(p, cfg=_cfg(), redactor=RED)
    assert sections == []
    assert q == [{"source": rep.path, "where": "file", "id": "broken",
                  "reason": "unreadable PDF: PdfStreamError: Stream has ended unexpectedly"}]
    assert rep.reasons == {"unreadable PDF": 1}

    def fails(raw):
        raise KeyError("/Root")

    monkeypatch.setattr(readers, "_pdf_text", fails)
    _, q, _ = parse_manual(p, cfg=_cfg(), redactor=RED)
    assert q[0]["reason"] == "unreadable PDF: KeyError: '/Root'"


# ----------------------------------------------------------------------------------------------
# links that look like a JSON list but are not JSON
# ----------------------------------------------------------------------------------------------


def test_links_that_are_not_json_lose_only_their_brackets():
    assert _as_links("[XA, B]") == ["XA", "B"]
    assert _as_links("[a; bX]") == ["a", "bX"]
    assert _as_links("[X]") == ["X"]
    t, _, _ = normalise_ticket({"id": "1", "updated": "2024-01-01", "links": "[X-1, doc/X]"}, cfg=_cfg(),
                               redactor=RED)
    assert t["links"] == ["X-1", "doc/X"]
