"""Exact behaviour of the ticket readers (rlsd.data.readers) where the earlier reader tests left it open: replaced
bytes summed over a whole export, reading that goes on after a refused line (too long, nested too deeply, a CSV
record the csv module refuses), the raw text of a JSONL line that loses only its line end, the id told for a CSV
record the csv module refuses, the reason of a header the csv module refuses, and times that stay UTC whatever
the local time zone. Every expected value was worked out by hand."""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import time

import pytest

from rlsd.config import IngestConfig
from rlsd.data.readers import (
    SourceReport,
    _iter_raw_tickets,
    format_time,
    normalise_ticket,
    parse_tickets,
    parse_time,
)
from rlsd.data.redact import Redactor

RED = Redactor.from_config(IngestConfig())


def _raw(data: bytes, fmt: str, limit: int = 1024):
    rep = SourceReport(path="p", kind="tickets", format=fmt)
    return list(_iter_raw_tickets(io.BytesIO(data), fmt, limit, rep)), rep


def _csv_error(lines: list[str]) -> str:
    """The csv module's own message for lines it refuses (its wording differs between Python versions)."""
    with pytest.raises(csv.Error) as e:
        list(csv.reader(lines))
    msg = str(e.value)
    assert msg.startswith("new-line character seen in unquoted field")
    return msg


# ----------------------------------------------------------------------------------------------
# replaced bytes: summed over every line of the export
# ----------------------------------------------------------------------------------------------


def test_replaced_bytes_are_summed_over_every_line_of_a_jsonl_export(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_bytes(b'{"id": "1", "updated": "2024-01-01", "body": "a\xff\xfeb"}\n'
                  b'{"id": "2", "updated": "2024-01-01", "body": "\xff"}\n'
                  b'{"id": "3", "updated": "2024-01-01", "body": "clean"}\n')
    tickets, q, rep = parse_tickets(p, cfg=IngestConfig(), redactor=RED)
    assert q == []
    assert [(t["id"], t["body"], w) for t, w in tickets] == [
        ("1", "a\ufffd\ufffdb", "line 1"), ("2", "\ufffd", "line 2"), ("3", "clean", "line 3")]
    assert rep.replaced_bytes == 3  # 2 + 1 + 0, not the last line's 0


def test_replaced_bytes_are_summed_over_every_line_of_a_csv_export():
    got, rep = _raw(b"id,body\n1,\xff\n2,\xfe\xff\n3,ok\n", "csv")
    assert [(w, r) for w, r, *_ in got] == [
        ("line 2", {"id": "1", "body": "\ufffd"}), ("line 3", {"id": "2", "body": "\ufffd\ufffd"}),
        ("line 4", {"id": "3", "body": "ok"})]
    assert rep.replaced_bytes == 3


# ----------------------------------------------------------------------------------------------
# JSONL: a refused line does not end the reading; the raw text loses its line end only
# ----------------------------------------------------------------------------------------------


def test_jsonl_line_too_long_is_refused_and_the_next_line_is_read():
    got, _ = _raw(b"x" * 1100 + b"\n" + b'{"id": 2}\n', "jsonl", 1024)
    assert got == [
        ("line 1", None, "", "line too long: line 1 has 1101 bytes > ingest.max_ticket_line_bytes=1024 "
         "(fix the export, or raise ingest.max_ticket_line_bytes)", ""),
        ("line 2", {"id": 2}, '{"id": 2}', "", ""),
    ]


def test_jsonl_raw_text_loses_its_line_end_and_nothing_else():
    got, _ = _raw(b"nope  \r\nX\n" + b'{"id": 3} \t\n', "jsonl")
    assert got == [
        ("line 1", None, "nope  ", "invalid JSON: Expecting value at column 1", ""),
        ("line 2", None, "X", "invalid JSON: Expecting value at column 1", ""),
        ("line 3", {"id": 3}, '{"id": 3} \t', "", ""),
    ]


def test_jsonl_nested_too_deeply_is_refused_with_its_reason_and_the_next_line_is_read(tmp_path):
    deep = b"[" * 100_000
    got, _ = _raw(deep + b'\n{"id": 2}\n', "jsonl", 1 << 20)
    assert got == [
        ("line 1", None, deep.decode(), "invalid JSON: nested too deeply", ""),
        ("line 2", {"id": 2}, '{"id": 2}', "", ""),
    ]
    # what the user sees: a quarantine entry without id, counted under its reason
    p = tmp_path / "t.jsonl"
    p.write_bytes(deep + b'\n{"id": "2", "updated": "2024-01-01"}\n')
    tickets, q, rep = parse_tickets(p, cfg=IngestConfig(max_ticket_line_bytes=1 << 20), redactor=RED)
    assert [(t["id"], w) for t, w in tickets] == [("2", "line 2")]
    assert [(x["where"], x["id"], x["reason"]) for x in q] == [("line 1", "", "invalid JSON: nested too deeply")]
    assert rep.reasons == {"invalid JSON": 1}


# ----------------------------------------------------------------------------------------------
# CSV: a record or a header that the csv module refuses
# ----------------------------------------------------------------------------------------------


def test_csv_record_refused_by_the_csv_module_names_the_error_and_its_id_and_reading_goes_on(tmp_path):
    # a lone carriage return inside an unquoted field ("c\rd"): the splitter keeps lines 2-3 as one record (the
    # quotes close cleanly, 3 fields as the header), the csv module refuses it
    msg = _csv_error(['7,"a\n', 'b",c\rd\n'])
    data = b'id,body,x\n7,"a\nb",c\rd\n8,y,z\n'
    got, _ = _raw(data, "csv")
    assert got == [
        ("lines 2-3", None, '7,"a\nb",c\rd\n', f"malformed CSV: {msg}", "7"),
        ("line 4", {"id": "8", "body": "y", "x": "z"}, "8,y,z\n", "", ""),
    ]
    p = tmp_path / "t.csv"
    p.write_bytes(b"id,updated,x\n7,\"2024-01-01\n\",c\rd\n8,2024-01-02,z\n")
    tickets, q, rep = parse_tickets(p, cfg=IngestConfig(), redactor=RED)
    assert [(t["id"], w) for t, w in tickets] == [("8", "line 4")]
    assert [(x["where"], x["id"], x["reason"]) for x in q] == [("lines 2-3", "7", f"malformed CSV: {msg}")]
    assert (rep.read, rep.quarantined, rep.reasons) == (2, 1, {"malformed CSV": 1})


def test_csv_header_refused_by_the_csv_module_names_the_error_in_every_record_it_refuses():
    msg = _csv_error(["id,bo\rdy\n"])
    got, _ = _raw(b"id,bo\rdy\n1,x\n2,y\n", "csv")
    why = f"no usable CSV header: the header at line 1 is unreadable (malformed CSV: {msg})"
    assert got == [("line 2", None, "1,x\n", why, ""), ("line 3", None, "2,y\n", why, "")]


# ----------------------------------------------------------------------------------------------
# parse_time: aware UTC whatever the local time zone
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def jst_time_zone():
    """Local time 9 hours ahead of UTC (a POSIX TZ string: no tz database needed)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "JST-9"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def test_parse_time_is_utc_in_a_local_time_zone_ahead_of_utc(jst_time_zone):
    assert time.localtime(0).tm_hour == 9  # the zone is in effect
    want = dt.datetime(2024, 3, 1, 10, 0, tzinfo=dt.UTC)
    for value in ("2024-03-01T10:00:00Z", "2024-03-01 10:00:00 UTC", "2024-03-01T19:00:00+09:00",
                  "2024-03-01T10:00:00", "2024-03-01 10:00"):
        t = parse_time(value)
        # naive means UTC, not local time; an aware time is converted to UTC, not to local time
        assert (t, t.utcoffset(), format_time(t)) == (want, dt.timedelta(0), "2024-03-01T10:00:00Z"), value


def test_ticket_times_are_written_in_utc_in_a_local_time_zone_ahead_of_utc(jst_time_zone):
    t, _, _ = normalise_ticket({"id": "1", "created": "2024-03-01T10:00:00", "updated": "2024-03-02T08:30:00+02:00"},
                               cfg=IngestConfig(), redactor=RED)
    assert (t["created"], t["updated"]) == ("2024-03-01T10:00:00Z", "2024-03-02T06:30:00Z")
