"""Exact behaviour of the ingest's format readers (rlsd.data.readers), pinned case by case so that the
data mutation group kills what the broader ingest tests leave alive: the section splitters (markdown, plain,
HTML, PDF), the section cap at its boundaries, slugs, the binary-content test, the manual and ticket reports.
Every expected value below was worked out by hand from the documented rules."""

from __future__ import annotations

import datetime as dt
import io
import json
import pathlib
from collections import Counter

import pytest

from rlsd.config import IngestConfig
from rlsd.data.corpus import _pdf_bytes
from rlsd.data.readers import (
    CsvSpan,
    SourceReport,
    _as_bool,
    _as_links,
    _as_text,
    _canonical_answer,
    _cap_sections,
    _id_hint,
    _iter_lines,
    _iter_raw_tickets,
    _map_keys,
    _pdf_text,
    _reason_key,
    _scan_line,
    _split_html,
    _split_markdown,
    _split_plain,
    _too_long,
    _where,
    binary_reason,
    count_records,
    csv_spans,
    decode_text,
    format_time,
    iter_tickets,
    normalise_ticket,
    parse_manual,
    parse_tickets,
    parse_time,
    quarantine_entry,
    section_id,
    slug,
    ticket_report,
)
from rlsd.data.redact import Redactor
from rlsd.data.store import sha256

RED = Redactor.from_config(IngestConfig())


# ----------------------------------------------------------------------------------------------
# _cap_sections: paragraph, then line, then hard cuts (a mutant can loop forever: a timeout kills it)
# ----------------------------------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_cap_keeps_a_section_of_exactly_max_chars_whole():
    assert _cap_sections([(["A"], "x" * 6)], 6) == [(["A"], "x" * 6)]
    assert _cap_sections([(["A"], "x" * 5)], 6) == [(["A"], "x" * 5)]
    # one over: a hard cut at max_chars, parts numbered from 1
    assert _cap_sections([(["A"], "x" * 7)], 6) == [(["A", "part 1"], "x" * 6), (["A", "part 2"], "x")]


@pytest.mark.timeout(10)
def test_cap_packs_paragraphs_up_to_exactly_max_chars():
    # "aa\n\nbb" is exactly 6 characters: it stays one part; the next separator overflows
    assert _cap_sections([(["A"], "aa\n\nbb\n\ncc")], 6) == [(["A", "part 1"], "aa\n\nbb"), (["A", "part 2"], "cc")]
    # two paragraphs that do not fit together
    assert _cap_sections([(["A"], "aa\n\nbb")], 5) == [(["A", "part 1"], "aa"), (["A", "part 2"], "bb")]


@pytest.mark.timeout(10)
def test_cap_paragraph_of_exactly_max_chars_is_not_cut_at_its_line_end():
    assert _cap_sections([(["A"], "ab\ncd\n\nef")], 5) == [(["A", "part 1"], "ab\ncd"), (["A", "part 2"], "ef")]
    assert _cap_sections([([], "xxxxxx\n\nyy")], 6) == [(["part 1"], "xxxxxx"), (["part 2"], "yy")]


@pytest.mark.timeout(10)
def test_cap_long_paragraph_cut_at_its_last_line_end_before_max_chars():
    # "a\nbcdefg": the last newline before 5 is at 1 -> "a"; then "\nbcdefg" has its only newline at 0,
    # which is no cut point -> hard cut "\nbcde"; "fg" is the rest
    assert _cap_sections([(["A"], "a\nbcdefg")], 5) == [
        (["A", "part 1"], "a"), (["A", "part 2"], "bcde"), (["A", "part 3"], "fg")]
    # two newlines before max_chars: the later one is the cut
    assert _cap_sections([(["S"], "ab\ncd\nefghij")], 8) == [
        (["S", "part 1"], "ab\ncd"), (["S", "part 2"], "efghij")]
    # a newline only after max_chars does not count
    assert _cap_sections([(["S"], "abcdefgh\nij")], 5) == [
        (["S", "part 1"], "abcde"), (["S", "part 2"], "fgh"), (["S", "part 3"], "ij")]
    # the newline at 1 is a cut point (a cut must be > 0, not > 1)
    assert _cap_sections([(["S"], "a\nbcdefgh")], 6) == [
        (["S", "part 1"], "a"), (["S", "part 2"], "bcdef"), (["S", "part 3"], "gh")]


@pytest.mark.timeout(10)
def test_cap_flushes_the_pending_text_before_a_long_paragraph():
    assert _cap_sections([(["A"], "ab\n\nxxxxxxxx")], 5) == [
        (["A", "part 1"], "ab"), (["A", "part 2"], "xxxxx"), (["A", "part 3"], "xxx")]
    assert _cap_sections([(["A"], "ab\n\nxxxxxxxx\n\ncd")], 5) == [
        (["A", "part 1"], "ab"), (["A", "part 2"], "xxxxx"), (["A", "part 3"], "xxx"), (["A", "part 4"], "cd")]


@pytest.mark.timeout(10)
def test_cap_several_sections_and_text_kept_whole():
    body = "first para\nline two\n\nsecond para is longer than the rest\n\nthird"
    parts = [(["Top"], "short"), (["Top", "Sub"], body), (["End"], "z")]
    out = _cap_sections(parts, 20)
    assert out == [
        (["Top"], "short"),
        (["Top", "Sub", "part 1"], "first para\nline two"),
        (["Top", "Sub", "part 2"], "second para is longe"),
        (["Top", "Sub", "part 3"], "r than the rest"),
        (["Top", "Sub", "part 4"], "third"),
        (["End"], "z"),
    ]
    # no text is lost: the parts put together hold every non-blank character of the body
    assert "".join(c for _, c in out[1:5]).replace("\n", "") == body.replace("\n", "")


# ----------------------------------------------------------------------------------------------
# _split_markdown
# ----------------------------------------------------------------------------------------------


def test_markdown_headings_levels_fences_and_untitled():
    text = "\n".join([
        "intro line",
        "# Guide #",
        "g body",
        "## Setup",
        "s body",
        "```",
        "# not a heading",
        "```",
        "### Deep",
        "d body",
        "## ",
        "untitled body",
        "# Other",
        "o body",
    ])
    assert _split_markdown(text) == [
        ([], "intro line"),
        (["Guide"], "g body"),
        (["Guide", "Setup"], "s body\n```\n# not a heading\n```"),
        (["Guide", "Setup", "Deep"], "d body"),
        (["Guide", "untitled"], "untitled body"),
        (["Other"], "o body"),
    ]


def test_markdown_heading_without_body_yields_nothing():
    assert _split_markdown("# A\n\n# B\ntext") == [(["B"], "text")]
    assert _split_markdown("# A\n## B\ntext\n## C\n## D\nmore") == [(["A", "B"], "text"), (["A", "D"], "more")]
    assert _split_markdown("") == []


def test_plain_numbered_list_read_as_headings_loses_no_words():
    # a numbered "heading" that the next one replaces with nothing under it was a list item: its words are kept
    assert _split_plain("Steps:\n1 Open the panel\n2 Click Save\nDone.") == [
        ([], "Steps:"), (["1 Open the panel"], "1 Open the panel"), (["2 Click Save"], "Done.")]
    assert _split_plain("1 A\n2 B\n3 C\nend") == [(["1 A"], "1 A"), (["2 B"], "2 B"), (["3 C"], "end")]
    # a numbered heading followed by its own sub-heading is a parent, not a bare item
    assert _split_plain("1 Intro\n1.1 Scope\ntext") == [(["1 Intro", "1.1 Scope"], "text")]
    # a setext title replaced at once by a numbered heading is a title: no section of its own
    assert _split_plain("Guide\n=====\n1 Intro\ntext") == [(["1 Intro"], "text")]
    # the last numbered heading with nothing under it is a list item too: "3 C" is kept
    assert _split_plain("text\n1 Last") == [([], "text"), (["1 Last"], "1 Last")]
    assert _split_plain("1 A\n2 B\n3 C") == [(["1 A"], "1 A"), (["2 B"], "2 B"), (["3 C"], "3 C")]
    # ... but a last markdown heading with nothing under it stays an empty section
    assert _split_markdown("text\n# Last") == [([], "text")]


# ----------------------------------------------------------------------------------------------
# _split_plain
# ----------------------------------------------------------------------------------------------


def test_plain_setext_levels():
    text = "Top\n===\nA\nSub\n---\nB\nSub2\n---\nC\nOther\n===\nD"
    assert _split_plain(text) == [
        (["Top"], "A"),
        (["Top", "Sub"], "B"),
        (["Top", "Sub2"], "C"),
        (["Other"], "D"),
    ]


def test_plain_setext_underline_needs_three_marks_at_the_line_start():
    # exactly three marks make a heading
    assert _split_plain("Title\n===\nbody") == [(["Title"], "body")]
    assert _split_plain("Title\n---\nbody") == [(["Title"], "body")]
    # two marks do not
    assert _split_plain("Title\n==\nbody") == [([], "Title\n==\nbody")]
    # an indented underline is no underline
    assert _split_plain("Title\n  ===\nbody") == [([], "Title\n  ===\nbody")]
    # trailing blanks after the underline are allowed
    assert _split_plain("Title\n===   \nbody") == [(["Title"], "body")]


def test_plain_setext_heading_on_the_last_two_lines():
    assert _split_plain("Body\nTitle\n===") == [([], "Body")]
    assert _split_plain("Body\nTitle\n===\nafter") == [([], "Body"), (["Title"], "after")]


def test_plain_lines_keep_their_indent_and_lose_trailing_blanks():
    assert _split_plain("Intro\n  indented  \nend") == [([], "Intro\n  indented\nend")]


def test_plain_numbered_headings():
    text = "1 Install\na\n1.1 Download\nb\n1.1.1 Mirror\nc\n2 Use\nd\n1 Install the tool.\ne"
    assert _split_plain(text) == [
        (["1 Install"], "a"),
        (["1 Install", "1.1 Download"], "b"),
        (["1 Install", "1.1 Download", "1.1.1 Mirror"], "c"),
        (["2 Use"], "d\n1 Install the tool.\ne"),
    ]


# ----------------------------------------------------------------------------------------------
# _split_html
# ----------------------------------------------------------------------------------------------


def test_html_heading_pieces_join_without_separator():
    assert _split_html("<h2>Foo<b>Bar</b> baz</h2><p>x</p>") == [(["FooBar baz"], "x")]


def test_html_inline_tag_inside_heading_does_not_close_it():
    assert _split_html("<h1>Title <b>bold</b> rest</h1><p>body</p>") == [(["Title bold rest"], "body")]


def test_html_stray_heading_end_tag_is_ignored():
    assert _split_html("<p>x</h3>y</p>") == [([], "xy")]


def test_html_empty_heading_is_untitled():
    assert _split_html("<h1>T</h1><p>a</p><h2></h2><p>q</p>") == [(["T"], "a"), (["T", "untitled"], "q")]


def test_html_blocks_break_lines_inline_tags_do_not():
    assert _split_html("<p>a</p>b") == [([], "a\nb")]
    assert _split_html("a<p>b") == [([], "a\nb")]
    assert _split_html("<p>x<b>y</b>z</p>") == [([], "xyz")]
    assert _split_html("<div>one<span>two</span></div><div>three</div>") == [([], "onetwo\nthree")]


def test_html_blanks_collapse():
    assert _split_html("<p>a   b\t\tc</p>") == [([], "a b c")]


def test_html_nested_skipped_blocks():
    assert _split_html("<nav><nav>n</nav>m</nav>z") == [([], "z")]
    assert _split_html("<p>k</p><nav>a</nav>b") == [([], "k\nb")]
    # an end tag without its start does not make the skip count negative
    assert _split_html("</nav>v<nav>w</nav>u") == [([], "vu")]


def test_html_levels():
    html = "<h1>A</h1><p>1</p><h2>B</h2><p>2</p><h3>C</h3><p>3</p><h2>D</h2><p>4</p><h1>E</h1><p>5</p>"
    assert _split_html(html) == [
        (["A"], "1"), (["A", "B"], "2"), (["A", "B", "C"], "3"), (["A", "D"], "4"), (["E"], "5")]


# ----------------------------------------------------------------------------------------------
# _pdf_text
# ----------------------------------------------------------------------------------------------


def test_pdf_text_blank_pages_add_nothing_but_their_separator():
    import pypdf

    w = pypdf.PdfWriter()
    w.add_blank_page(100, 100)
    for page in pypdf.PdfReader(io.BytesIO(_pdf_bytes(["Hello PDF", "second line"]))).pages:
        w.add_page(page)
    w.add_blank_page(100, 100)
    buf = io.BytesIO()
    w.write(buf)
    assert _pdf_text(buf.getvalue()) == "\nHello PDF\nsecond line\n\n"


# ----------------------------------------------------------------------------------------------
# slug, binary_reason
# ----------------------------------------------------------------------------------------------


def test_slug_exact():
    assert slug("  Hello, World!  ") == "hello-world"
    assert slug("--Tunnel--") == "tunnel"
    assert slug("!!!") == "section"
    assert slug("") == "section"
    # cut to 60 characters, and a dash left at the cut is dropped
    assert slug("a" * 59 + " bcd") == "a" * 59
    assert slug("a" * 70) == "a" * 60


def test_binary_reason_thresholds():
    # exactly 10% of the bytes not UTF-8: still text; one more is binary
    assert binary_reason(b"abcdefghi\xff", "abcdefghi\ufffd", 1) == ""
    assert binary_reason(b"abcdefgh\xff\xff", "abcdefgh\ufffd\ufffd", 2) == (
        "binary content: 2 of 10 bytes are not UTF-8")
    # one control character in 20: text; exactly 10%: text; more: binary
    assert binary_reason(b"x" * 20, "\x01" + "x" * 19, 0) == ""
    assert binary_reason(b"x" * 10, "\x01" + "x" * 9, 0) == ""
    assert binary_reason(b"x" * 10, "\x01\x02" + "x" * 8, 0) == (
        "binary content: 2 of 10 characters are control characters")
    assert binary_reason(b"a\x00b\x00", "a\x00b\x00", 0) == (
        "binary content: 2 NUL bytes in 4 (a binary file, or UTF-16 text; save it as UTF-8)")


# ----------------------------------------------------------------------------------------------
# parse_manual: the report and the quarantine of a whole file
# ----------------------------------------------------------------------------------------------


def test_parse_manual_report_fields(tmp_path):
    raw = b"# Guide\nsome text\n"
    p = tmp_path / "guide.md"
    p.write_bytes(raw)
    sections, q, rep = parse_manual(p, cfg=IngestConfig(), redactor=RED)
    assert q == []
    assert (rep.kind, rep.format, rep.sha256, rep.bytes) == ("manual", "markdown", sha256(raw), len(raw))
    assert (rep.read, rep.stored, rep.quarantined) == (1, 1, 0)
    assert [(s["id"], s["heading_path"], s["text"]) for s in sections] == [("guide/guide", ["Guide"], "some text")]


def test_parse_manual_file_of_exactly_max_bytes_is_read(tmp_path):
    raw = b"0123456789"
    p = tmp_path / "ten.txt"
    p.write_bytes(raw)
    sections, q, rep = parse_manual(p, cfg=IngestConfig(max_manual_bytes=10), redactor=RED)
    assert q == [] and [s["text"] for s in sections] == ["0123456789"]
    assert rep.sha256 == sha256(raw)


def test_parse_manual_too_big_is_refused_unread(tmp_path, monkeypatch):
    p = tmp_path / "big.txt"
    p.write_bytes(b"0123456789A")

    def no_read(self):
        raise AssertionError(f"{self} read although too big")

    monkeypatch.setattr(pathlib.Path, "read_bytes", no_read)
    sections, q, rep = parse_manual(p, cfg=IngestConfig(max_manual_bytes=10), redactor=RED)
    assert sections == []
    assert q == [{"source": rep.path, "where": "file", "id": "big",
                  "reason": "file too large: 11 bytes > ingest.max_manual_bytes=10 "
                            "(split the manual, or raise ingest.max_manual_bytes)"}]
    assert (rep.kind, rep.format, rep.sha256, rep.bytes) == ("manual", "text", "", 11)
    assert (rep.read, rep.stored, rep.quarantined) == (1, 0, 1)
    assert rep.reasons == {"file too large": 1}


def test_parse_manual_quarantine_counts_redactions_of_the_doc_id(tmp_path):
    p = tmp_path / "m.xyz"
    p.write_bytes(b"text")
    sections, q, rep = parse_manual(p, cfg=IngestConfig(), redactor=RED, doc_id="alice@example.com")
    assert sections == [] and len(q) == 1
    assert q[0]["where"] == "file"
    assert q[0]["id"].startswith("pii-")
    assert q[0]["reason"].startswith("unsupported manual format: suffix '.xyz'")
    assert rep.redactions == {"EMAIL": 1, "ID_HASHED": 1}
    assert rep.reasons == {"unsupported manual format": 1}


def test_parse_manual_quarantine_keeps_the_doc_id(tmp_path):
    p = tmp_path / "empty.md"
    p.write_bytes(b"\n\n")
    sections, q, rep = parse_manual(p, cfg=IngestConfig(), redactor=RED)
    assert sections == []
    assert q == [{"source": rep.path, "where": "file", "id": "empty",
                  "reason": "no text: the file holds no section with text"}]


# ----------------------------------------------------------------------------------------------
# parse_tickets: the report and the independent record count
# ----------------------------------------------------------------------------------------------


def _ticket(i):
    return {"id": f"T-{i}", "created": "2024-03-01T09:00:00Z", "updated": "2024-03-01T10:00:00Z",
            "title": f"q{i}", "body": f"body {i}", "status": "resolved", "resolution": "done",
            "resolution_verified": True, "links": [], "answer": "7", "answer_type": "numeric"}


def test_parse_tickets_counts_records_and_redacts_the_path(tmp_path):
    d = tmp_path / "bob@example.com"
    d.mkdir()
    p = d / "export.jsonl"
    p.write_text(json.dumps(_ticket(1)) + "\n\n" + json.dumps(_ticket(2)) + "\n")
    tickets, q, rep = parse_tickets(p, cfg=IngestConfig(), redactor=RED)
    assert [t["id"] for t, _ in tickets] == ["T-1", "T-2"]
    assert [w for _, w in tickets] == ["line 1", "line 3"]
    assert q == []
    assert rep.records == 2 and rep.read == 2
    assert "bob@example.com" not in rep.path and "[EMAIL]" in rep.path
    assert rep.path == RED.redact(str(p))[0]


def test_parse_tickets_unsupported_format_is_not_counted(tmp_path):
    p = tmp_path / "export.txt"
    p.write_text(json.dumps(_ticket(1)) + "\n")
    tickets, q, rep = parse_tickets(p, cfg=IngestConfig(), redactor=RED)
    assert tickets == []
    assert rep.records == -1
    assert (rep.read, rep.quarantined, rep.format) == (1, 1, "unsupported")
    assert q[0]["reason"] == "unsupported ticket format: suffix '.txt'; use one of ['.csv', '.jsonl', '.ndjson']"


def test_parse_tickets_line_too_long_reason(tmp_path):
    p = tmp_path / "export.jsonl"
    long_line = json.dumps({**_ticket(2), "body": "x" * 2000})
    p.write_text(json.dumps(_ticket(1)) + "\n" + long_line + "\n")
    tickets, q, rep = parse_tickets(p, cfg=IngestConfig(max_ticket_line_bytes=1024), redactor=RED)
    assert [t["id"] for t, _ in tickets] == ["T-1"]
    n = len(long_line) + 1
    assert q == [{"source": rep.path, "where": "line 2", "id": "",
                  "reason": f"line too long: line 2 has {n} bytes > ingest.max_ticket_line_bytes=1024 "
                            "(fix the export, or raise ingest.max_ticket_line_bytes)", "raw": ""}]
    assert rep.records == 2


# ----------------------------------------------------------------------------------------------
# small helpers: reason keys, reports, decoding, time, values
# ----------------------------------------------------------------------------------------------


def test_reason_key():
    assert _reason_key("invalid JSON: x at column 3") == "invalid JSON"
    assert _reason_key("a (b): c") == "a"
    assert _reason_key("no separator") == "no separator"
    assert _reason_key(" padded : x: y") == "padded"


def test_source_report_to_dict_and_reconciled():
    rep = SourceReport(path="p", kind="tickets", format="csv")
    rep.reasons.update({"b": 2, "a": 1})
    rep.redactions.update({"Z": 1, "EMAIL": 3})
    d = rep.to_dict()
    assert list(d["reasons"].items()) == [("a", 1), ("b", 2)]
    assert list(d["redactions"].items()) == [("EMAIL", 3), ("Z", 1)]
    assert type(d["reasons"]) is dict and type(d["redactions"]) is dict
    assert (d["path"], d["kind"], d["format"], d["records"], d["read"]) == ("p", "tickets", "csv", -1, 0)
    assert isinstance(rep.reasons, Counter)  # the report itself is unchanged
    rep.read, rep.stored, rep.quarantined = 3, 2, 1
    assert rep.reconciled
    rep.stored = 1
    assert not rep.reconciled


def test_decode_text():
    assert decode_text(b"\xef\xbb\xbfa\xffb\xef\xbb\xbf") == ("a\ufffdb\ufeff", 1)
    assert decode_text(b"plain") == ("plain", 0)
    assert decode_text(b"\xff\xfe") == ("\ufffd\ufffd", 2)
    assert decode_text("é".encode()) == ("é", 0)


def test_section_id():
    assert section_id("doc", ["Getting Started", "2.1 Limits"]) == "doc/getting-started/2-1-limits"
    assert section_id("doc", []) == "doc"


@pytest.mark.parametrize("value, want", [
    (1700000000, "2023-11-14T22:13:20Z"),
    (1.5, "1970-01-01T00:00:01.500000Z"),
    ("100000000", "1973-03-03T09:46:40Z"),
    ("10000000000", "2286-11-20T17:46:40Z"),
    (" 1700000000.5 ", "2023-11-14T22:13:20.500000Z"),
    ("20240301", "2024-03-01T00:00:00Z"),
    ("2024-03-01 10:00:00 UTC", "2024-03-01T10:00:00Z"),
    ("2024-03-01T10:00:00Z", "2024-03-01T10:00:00Z"),
    ("2024-03-01T10:00:00+02:00", "2024-03-01T08:00:00Z"),
    ("2024-03-01T10:00:00", "2024-03-01T10:00:00Z"),
])
def test_parse_time(value, want):
    t = parse_time(value)
    assert t.tzinfo is not None and t.utcoffset() == dt.timedelta(0)
    assert format_time(t) == want


@pytest.mark.parametrize("value", [True, False, None, "", "   ", [], "170000000000", "12345678", "yesterday"])
def test_parse_time_refuses(value):
    with pytest.raises(ValueError):
        parse_time(value)


def test_parse_time_empty_message():
    with pytest.raises(ValueError, match="^empty$"):
        parse_time("  ")


def test_format_time_keeps_other_offsets():
    t = dt.datetime(2024, 3, 1, 10, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert format_time(t) == "2024-03-01T10:00:00+02:00"


@pytest.mark.parametrize("value, want", [
    (True, True), (False, False), (None, False), (1, True), (0, False), (1.0, True), (0.0, False),
    ("TRUE", True), (" yes ", True), ("y", True), ("1", True), ("Verified", True), ("t", True),
    ("false", False), ("No", False), ("n", False), ("0", False), ("", False), ("unverified", False),
    ("f", False), ("None", False), ("null", False),
])
def test_as_bool(value, want):
    assert _as_bool(value) is want


@pytest.mark.parametrize("value", ["maybe", 2, -1, 0.5, "2"])
def test_as_bool_refuses(value):
    with pytest.raises(ValueError, match=r"^resolution_verified is not a boolean: "):
        _as_bool(value)


def test_as_bool_message():
    with pytest.raises(ValueError) as e:
        _as_bool("maybe")
    assert str(e.value) == "resolution_verified is not a boolean: 'maybe'"


def test_as_links():
    assert _as_links(None) == []
    assert _as_links(["x", 1, " ", " y "]) == ["x", "1", "y"]
    assert _as_links('["a", " b ", ""]') == ["a", "b"]
    assert _as_links(" [a, b") == ["a", "b"]
    assert _as_links("[a|b]") == ["a", "b"]
    assert _as_links("a; b|c,d  e") == ["a", "b", "c", "d", "e"]
    assert _as_links("") == []
    assert _as_links(7) == ["7"]


def test_as_text():
    assert _as_text(None) == ""
    assert _as_text({"b": 1, "a": "é"}) == '{"a": "é", "b": 1}'
    assert _as_text([1, "ü"]) == '[1, "ü"]'
    assert _as_text(3) == "3"
    assert _as_text(" s ") == " s "


def test_canonical_answer():
    assert _canonical_answer('{"b": 1, "a": [1,2]}', "json") == '{"a": [1, 2], "b": 1}'
    assert _canonical_answer({"b": 1, "a": "é"}, "json") == '{"a": "é", "b": 1}'
    assert _canonical_answer(" 1,000 ", "numeric") == "1,000"
    assert _canonical_answer(12.5, "numeric") == "12.5"
    assert _canonical_answer(" (1+2)*3 ", "expression") == "(1+2)*3"
    assert _canonical_answer(" TCP ", "label") == "TCP"
    assert _canonical_answer(5, "") == "5"
    assert _canonical_answer({"k": 1}, "label") == '{"k": 1}'
    for answer, kind in (("abc", "numeric"), ("{", "json"), ("", "numeric"), ("import os", "expression")):
        with pytest.raises(ValueError):
            _canonical_answer(answer, kind)


# ----------------------------------------------------------------------------------------------
# normalise_ticket, _map_keys
# ----------------------------------------------------------------------------------------------


def test_normalise_ticket_full_record():
    rec = {"id": " T-9 ", "created": "2024-03-01T09:00:00Z", "updated": "", "title": " Hi ", "body": "x" * 120,
           "status": " Resolved ", "resolution": " ok ", "resolution_verified": "yes",
           "links": "a; mail bob@example.com", "answer": {"b": 1, "a": 2}, "answer_type": " JSON "}
    ticket, counts, truncated = normalise_ticket(rec, cfg=IngestConfig(max_body_chars=100), redactor=RED)
    assert ticket == {
        "id": "T-9", "created": "2024-03-01T09:00:00Z", "updated": "2024-03-01T09:00:00Z", "title": "Hi",
        "body": "x" * 100, "status": "resolved", "resolution": "ok", "resolution_verified": True,
        "links": ["a", "mail", "[EMAIL]"], "answer": '{"a": 2, "b": 1}', "answer_type": "json",
        "notes": ["body truncated from 120 to 100 chars (ingest.max_body_chars)"]}
    assert counts == {"EMAIL": 1} and truncated is True


def test_normalise_ticket_minimal_record_and_body_of_exactly_max():
    cfg = IngestConfig(max_body_chars=100, long_body="refuse")
    ticket, counts, truncated = normalise_ticket({"id": "x", "updated": "2024-01-01", "body": "y" * 100},
                                                 cfg=cfg, redactor=RED)
    assert ticket == {"id": "x", "created": "2024-01-01T00:00:00Z", "updated": "2024-01-01T00:00:00Z", "title": "",
                      "body": "y" * 100, "status": "", "resolution": "", "resolution_verified": False, "links": [],
                      "answer": "", "answer_type": "", "notes": []}
    assert counts == {} and truncated is False
    ticket, _, truncated = normalise_ticket({"id": "x", "updated": "2024-01-01", "body": "y" * 100},
                                            cfg=IngestConfig(max_body_chars=100), redactor=RED)
    assert ticket["body"] == "y" * 100 and ticket["notes"] == [] and truncated is False


def test_normalise_ticket_created_and_updated():
    t, _, _ = normalise_ticket({"id": "x", "created": "2024-01-01T00:00:00Z", "updated": "2024-02-01T00:00:00Z"},
                               cfg=IngestConfig(), redactor=RED)
    assert (t["created"], t["updated"]) == ("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z")
    t, _, _ = normalise_ticket({"id": "x", "updated": 1700000000}, cfg=IngestConfig(), redactor=RED)
    assert (t["created"], t["updated"]) == ("2023-11-14T22:13:20Z", "2023-11-14T22:13:20Z")


def test_normalise_ticket_redacts_fields_and_hashes_an_id_with_pii():
    rec = {"id": "bob@example.com", "updated": "2024-01-01", "title": "mail bob@example.com",
           "body": "call alice@example.com", "resolution": "told carol@example.com", "status": "Open",
           "answer": "dave@example.com", "answer_type": "label"}
    t, counts, _ = normalise_ticket(rec, cfg=IngestConfig(), redactor=RED)
    assert t["id"].startswith("pii-") and len(t["id"]) == 28
    assert (t["title"], t["body"], t["resolution"], t["answer"], t["status"]) == (
        "mail [EMAIL]", "call [EMAIL]", "told [EMAIL]", "[EMAIL]", "open")
    assert counts == {"EMAIL": 5, "ID_HASHED": 1}


@pytest.mark.parametrize("rec, reason", [
    ({"id": ""}, "missing ticket id"),
    ({"id": "  ", "updated": "2024-01-01"}, "missing ticket id"),
    ({"id": "x"}, "missing updated and created time"),
    ({"id": "x", "created": "junk"}, "bad created time: 'junk' (use ISO-8601, e.g. 2024-03-01T10:00:00Z)"),
    ({"id": "x", "updated": "junk"}, "bad updated time: 'junk' (use ISO-8601, e.g. 2024-03-01T10:00:00Z)"),
    ({"id": "x", "updated": "2024-01-01", "answer_type": "Essay"},
     "unknown answer_type: 'essay' (allowed: numeric, label, json, expression)"),
    ({"id": "x", "updated": "2024-01-01", "answer": "abc", "answer_type": "numeric"},
     "answer does not parse as numeric: could not convert string to float: 'abc'"),
    ({"id": "x", "updated": "2024-01-01", "resolution_verified": "maybe"},
     "resolution_verified is not a boolean: 'maybe'"),
])
def test_normalise_ticket_refusals(rec, reason):
    with pytest.raises(ValueError) as e:
        normalise_ticket(rec, cfg=IngestConfig(), redactor=RED)
    assert str(e.value) == reason


def test_normalise_ticket_long_body_refused():
    with pytest.raises(ValueError) as e:
        normalise_ticket({"id": "x", "updated": "2024-01-01", "body": "y" * 101},
                         cfg=IngestConfig(max_body_chars=100, long_body="refuse"), redactor=RED)
    assert str(e.value) == ("body too long: 101 chars > ingest.max_body_chars=100 "
                            "(set ingest.long_body=truncate to keep it truncated)")


def test_normalise_ticket_answer_kept_empty_when_absent():
    for answer in (None, ""):
        t, _, _ = normalise_ticket({"id": "x", "updated": "2024-01-01", "answer": answer, "answer_type": "numeric"},
                                   cfg=IngestConfig(), redactor=RED)
        assert (t["answer"], t["answer_type"]) == ("", "numeric")
    t, _, _ = normalise_ticket({"id": "x", "updated": "2024-01-01", "answer": 0, "answer_type": "numeric"},
                               cfg=IngestConfig(), redactor=RED)
    assert t["answer"] == "0"


def test_map_keys():
    out, unknown = _map_keys({"\ufeffTicket-ID": "T1", " Subject ": "s", "title": "t2", "Description": "",
                              "body": "b", "foo": 1, "Resolution.Notes": "r", "is verified": "yes", "Bar": 2})
    assert out == {"id": "T1", "title": "s", "body": "b", "resolution": "r", "resolution_verified": "yes"}
    assert unknown == ["foo", "Bar"]
    out, _ = _map_keys({"body": None, "text": "t"})
    assert out == {"body": "t"}


# ----------------------------------------------------------------------------------------------
# lines, CSV record spans, record counts
# ----------------------------------------------------------------------------------------------


def test_iter_lines_and_over_long_lines():
    fh = io.BytesIO(b"ab\n" + b"x" * 30 + b"\ncd")
    assert list(_iter_lines(fh, 10)) == [(1, b"ab\n", 3), (2, None, 31), (3, b"cd", 2)]
    # a line of exactly limit bytes with its newline is kept; limit + 1 without one is over
    assert list(_iter_lines(io.BytesIO(b"123456789\nx"), 10)) == [(1, b"123456789\n", 10), (2, b"x", 1)]
    assert list(_iter_lines(io.BytesIO(b"1234567890\nx"), 10)) == [(1, b"1234567890\n", 11), (2, b"x", 1)]
    assert list(_iter_lines(io.BytesIO(b"12345678901\nx"), 10)) == [(1, None, 12), (2, b"x", 1)]
    assert list(_iter_lines(io.BytesIO(b"123456789012"), 10)) == [(1, None, 12)]
    # exactly limit bytes at the end of the file, without a newline: a line, not an over-long one
    assert list(_iter_lines(io.BytesIO(b"ab\n1234567890"), 10)) == [(1, b"ab\n", 3), (2, b"1234567890", 10)]
    assert list(_iter_lines(io.BytesIO(b""), 10)) == []


def test_too_long_and_where():
    assert _too_long(3, 2000, 1024) == ("line too long: line 3 has 2000 bytes > ingest.max_ticket_line_bytes=1024 "
                                        "(fix the export, or raise ingest.max_ticket_line_bytes)")
    assert _where(4, 4) == "line 4"
    assert _where(4, 6) == "lines 4-6"


def test_csv_span_blank():
    assert CsvSpan(1, 1, ["  \n"]).blank
    assert not CsvSpan(1, 1, ["x\n"]).blank
    assert not CsvSpan(1, 1, None).blank
    assert not CsvSpan(1, 1, ["\n"], "damaged").blank
    assert CsvSpan(1, 1, []).blank


@pytest.mark.parametrize("text, inq, fields, want", [
    ("a,b,c\n", False, 1, (False, 3, False)),
    ('"a,b",c\n', False, 1, (False, 2, False)),
    ('"a""b",c', False, 1, (False, 2, False)),
    ('"abc"def,x', False, 1, (False, 2, True)),
    ('"abc",def', False, 1, (False, 2, False)),
    ('x"y,z', False, 1, (False, 2, False)),
    ('open "q\n', False, 1, (False, 1, False)),
    ('"start\n', False, 1, (True, 1, False)),
    ('a,"start\n', False, 1, (True, 2, False)),
    ('tail",x\n', True, 1, (False, 2, False)),
    ('tail"x\n', True, 1, (False, 1, True)),
    ('tail""x\n', True, 1, (True, 1, False)),
    ('more\n', True, 3, (True, 3, False)),
    ('"a",\r\n', False, 1, (False, 2, False)),
    ('"a"\r\n', False, 1, (False, 1, False)),
    ('', False, 1, (False, 1, False)),
    ('a,b', True, 5, (True, 5, False)),
    ('","', False, 1, (False, 1, False)),
])
def test_scan_line(text, inq, fields, want):
    assert _scan_line(text, inq, fields) == want


def _spans(text, limit=1024):
    out = csv_spans(io.BytesIO(text.encode()), limit, lambda n, b: b.decode())
    return [(s.first, s.last, s.lines, s.damage, s.size) for s in out]


def test_csv_spans_multi_line_record():
    assert _spans('id,body\n1,"multi\nline"\n2,x\n') == [
        (1, 1, ["id,body\n"], "", 8), (2, 3, ['1,"multi\n', 'line"\n'], "", 15), (4, 4, ["2,x\n"], "", 4)]
    assert _spans('id,body\n1,"a\nb\nc"\n') == [
        (1, 1, ["id,body\n"], "", 8), (2, 4, ['1,"a\n', "b\n", 'c"\n'], "", 10)]


def test_csv_spans_quote_never_closes():
    assert _spans('id,body\n1,"never closes\n2,x\n3,y\n') == [
        (1, 1, ["id,body\n"], "", 8),
        (2, 2, ['1,"never closes\n'], "stray quote: a quoted field opened on line 2 does not close cleanly "
         "(end of file); line 2 quarantined, reading resumes at line 3", 16),
        (3, 3, ["2,x\n"], "", 4), (4, 4, ["3,y\n"], "", 4)]
    # on the last line: nothing to read ahead
    assert _spans('id,body\n1,"open\n') == [
        (1, 1, ["id,body\n"], "", 8),
        (2, 2, ['1,"open\n'], "stray quote: a quoted field opened on line 2 never closes (end of file)", 8)]


def test_csv_spans_field_count_and_closing_quote_damage():
    assert _spans('id,body\n1,"a\nb",c\n2,x\n') == [
        (1, 1, ["id,body\n"], "", 8),
        (2, 2, ['1,"a\n'], "stray quote: a quoted field opened on line 2 does not close cleanly "
         "(3 fields where the header has 2); line 2 quarantined, reading resumes at line 3", 5),
        (3, 3, ['b",c\n'], "", 5), (4, 4, ["2,x\n"], "", 4)]
    assert _spans('id,body\n1,"a\nb"x\n2,y\n') == [
        (1, 1, ["id,body\n"], "", 8),
        (2, 2, ['1,"a\n'], "stray quote: a quoted field opened on line 2 does not close cleanly "
         "(a closing quote followed by text); line 2 quarantined, reading resumes at line 3", 5),
        (3, 3, ['b"x\n'], "", 4), (4, 4, ["2,y\n"], "", 4)]
    # a one-line record is never refused for its field count or a stray closing quote
    assert _spans('id,body\n1,"abc"def\n1,2,3\n') == [
        (1, 1, ["id,body\n"], "", 8), (2, 2, ['1,"abc"def\n'], "", 11), (3, 3, ["1,2,3\n"], "", 6)]


def test_csv_spans_blank_line_before_the_header_does_not_set_the_field_count():
    assert _spans('\nid,body\n1,"a\nb"\n') == [
        (1, 1, ["\n"], "", 1), (2, 2, ["id,body\n"], "", 8), (3, 4, ['1,"a\n', 'b"\n'], "", 8)]


def test_csv_spans_long_lines():
    long = "y" * 1100
    assert _spans('id,body\n1,"x\n' + long + '"\n2,z\n', 1024) == [
        (1, 1, ["id,body\n"], "", 8),
        (2, 2, ['1,"x\n'], "stray quote: a quoted field opened on line 2 never closes (line 3 too long)", 5),
        (3, 3, None, _too_long(3, 1102, 1024), 1102),
        (4, 4, ["2,z\n"], "", 4)]
    # a record whose lines together pass the limit
    part = "y" * 600 + "\n"
    assert _spans('id,body\n1,"x\n' + part + part + '"\n', 1024) == [
        (1, 1, ["id,body\n"], "", 8),
        (2, 2, ['1,"x\n'], "stray quote: a quoted field opened on line 2 does not close cleanly "
         "(over ingest.max_ticket_line_bytes=1024 bytes); line 2 quarantined, reading resumes at line 3", 5),
        (3, 3, [part], "", 601), (4, 4, [part], "", 601),
        (5, 5, ['"\n'], "stray quote: a quoted field opened on line 5 never closes (end of file)", 2)]
    assert _spans('id,body\n' + long + "\n1,x\n", 1024) == [
        (1, 1, ["id,body\n"], "", 8), (2, 2, None, _too_long(2, 1101, 1024), 1101), (3, 3, ["1,x\n"], "", 4)]


def test_csv_spans_record_of_exactly_the_limit_is_kept():
    # 6 + 5 bytes = 11: within a limit of 11; one byte more is over
    assert _spans('1,"ab\ncd",\n', 11)[0][:4] == (1, 2, ['1,"ab\n', 'cd",\n'], "")
    assert _spans('1,"ab\ncde",\n', 11)[0][3] == (
        "stray quote: a quoted field opened on line 1 never closes (over ingest.max_ticket_line_bytes=11 bytes)")


def test_count_records_jsonl(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_bytes(b"\xef\xbb\xbf\n{}\n  \n" + b"x" * 2000 + b"\n[1]\n\xef\xbb\xbf\n")
    # {}, the over-long line and [1]: a line that holds only a BOM is blank
    assert count_records(p, "jsonl", 1024) == 3
    assert count_records(p, "other", 1024) == 0


def test_count_records_csv(tmp_path):
    p = tmp_path / "t.csv"
    p.write_bytes(b'\xef\xbb\xbfid,body\n1,"a\nb"\n\n2,"open\n3,x\n')
    # header; 1 (two lines); blank; 2 (stray quote, one line); 3
    assert count_records(p, "csv", 1024) == 3
    q = tmp_path / "h.csv"
    q.write_bytes(b"id,body\n")
    assert count_records(q, "csv", 1024) == 0
    e = tmp_path / "e.csv"
    e.write_bytes(b"")
    assert count_records(e, "csv", 1024) == 0


def test_id_hint():
    assert _id_hint(["Title", "Ticket ID"], ['x,"T-7\n']) == "T-7"
    assert _id_hint(["\ufeffkey", "body"], [' K-1 ,"open\n']) == "K-1"
    assert _id_hint(["title", "body"], ["a,b\n"]) == ""
    assert _id_hint(["title", "id"], ["only\n"]) == ""
    assert _id_hint(["id"], None) == ""
    assert _id_hint(["id"], []) == ""
    assert _id_hint(["id", "body"], ["a\r\n"]) == "a"


# ----------------------------------------------------------------------------------------------
# raw records, quarantine entries, iter_tickets, ticket_report
# ----------------------------------------------------------------------------------------------


def _raw(data: bytes, fmt: str, limit: int = 1024):
    rep = SourceReport(path="p", kind="tickets", format=fmt)
    return list(_iter_raw_tickets(io.BytesIO(data), fmt, limit, rep)), rep


def test_iter_raw_tickets_jsonl():
    data = (b'\xef\xbb\xbf{"id": 1}\r\n\n{not json\n[1]\n' + b"{" * 3000 + b"\n" + b'{"b": "\xff"}\n'
            + b"x" * 5000 + b"\n")
    got, rep = _raw(data, "jsonl", 4096)
    assert got[0] == ("line 1", {"id": 1}, '{"id": 1}', "", "")
    assert got[1] == ("line 3", None, "{not json",
                      "invalid JSON: Expecting property name enclosed in double quotes at column 2", "")
    assert got[2] == ("line 4", None, "[1]", "not a JSON object: list", "")
    assert got[3][0] == "line 5" and got[3][1] is None
    assert got[3][3] in ("invalid JSON: nested too deeply",) or got[3][3].startswith("invalid JSON: ")
    assert got[4] == ("line 6", {"b": "\ufffd"}, '{"b": "\ufffd"}', "", "")
    assert got[5] == ("line 7", None, "", _too_long(7, 5001, 4096), "")
    assert len(got) == 6 and rep.replaced_bytes == 1


def test_iter_raw_tickets_csv_records():
    data = (b'\xef\xbb\xbfid,Title,body\n1,t,"two\nlines"\n\n2,u\n , ,\n3,a,b,c\n6,"a"b,c\n4,"x\n'
            b'5,v,w\n')
    got, rep = _raw(data, "csv")
    assert got == [
        ("lines 2-3", {"id": "1", "Title": "t", "body": "two\nlines"}, '1,t,"two\nlines"\n', "", ""),
        ("line 5", {"id": "2", "Title": "u", "body": ""}, "2,u\n", "", ""),
        ("line 6", None, " , ,\n", "empty row: every field is blank", ""),
        ("line 7", None, "3,a,b,c\n", "row has 4 fields, header has 3", "3"),
        ("line 8", {"id": "6", "Title": "ab", "body": "c"}, '6,"a"b,c\n', "", ""),
        ("line 9", None, '4,"x\n', "stray quote: a quoted field opened on line 9 does not close cleanly (end of "
         "file); line 9 quarantined, reading resumes at line 10", "4"),
        ("line 10", {"id": "5", "Title": "v", "body": "w"}, "5,v,w\n", "", ""),
    ]
    assert rep.replaced_bytes == 0


def test_iter_raw_tickets_csv_unusable_header():
    got, _ = _raw(b'"id,body\n1,x\n', "csv")
    why = ("no usable CSV header: the header at line 1 is unreadable (stray quote: a quoted field opened on line 1 "
           "does not close cleanly (end of file); line 1 quarantined, reading resumes at line 2)")
    assert got == [("line 2", None, "1,x\n", why, "")]
    got, _ = _raw(b"\n\n" + b"x" * 2000 + b"\n1,x\n", "csv")
    assert got == [("line 4", None, "1,x\n", "no usable CSV header: the header at line 3 is unreadable ("
                    + _too_long(3, 2001, 1024) + ")", "")]


def test_iter_raw_tickets_csv_short_row_and_bad_bytes():
    got, rep = _raw(b"id,body\n7\n8,\xff\n", "csv")
    assert got == [("line 2", {"id": "7", "body": ""}, "7\n", "", ""),
                   ("line 3", {"id": "8", "body": "\ufffd"}, "8,\ufffd\n", "", "")]
    assert rep.replaced_bytes == 1


def test_quarantine_entry_cuts_and_redacts():
    reason = "bad value alice@example.com " + "r" * 600
    rec, counts = quarantine_entry(RED, "s" * 1200, "w" * 300, "bob@example.com", reason, "raw carol@example.com "
                                   + "z" * 9000)
    assert rec["source"] == "s" * 1000 and rec["where"] == "w" * 200
    assert rec["reason"] == ("bad value [EMAIL] " + "r" * 600)[:500]
    assert rec["id"].startswith("pii-")
    assert rec["raw"] == ("raw [EMAIL] " + "z" * 9000)[:2000]
    assert counts == {"EMAIL": 3, "ID_HASHED": 1}
    rec, counts = quarantine_entry(RED, "src", "line 1", "", "why")
    assert rec == {"source": "src", "where": "line 1", "reason": "why", "id": ""}
    assert counts == {}
    rec, _ = quarantine_entry(RED, "src", "line 1", "i" * 1500, "why", "")
    assert rec == {"source": "src", "where": "line 1", "reason": "why", "id": "i" * 200, "raw": ""}


def test_quarantine_entry_raw_redacted_before_the_cut():
    raw = "z" * 1990 + " bob@example.com"
    rec, counts = quarantine_entry(RED, "src", "line 1", "", "why", raw)
    assert rec["raw"] == "z" * 1990 + " [EMAIL]" and counts == {"EMAIL": 1}
    # only the first 8,000 characters are looked at
    rec, counts = quarantine_entry(RED, "src", "line 1", "", "why", "z" * 8000 + "bob@example.com")
    assert rec["raw"] == "z" * 2000 and counts == {}


def test_iter_tickets_reports(tmp_path):
    p = tmp_path / "export.csv"
    p.write_text("id,title,body,answer,answer_type,Foo,bob@example.com,updated\n"
                 "1,t,b,7,numeric,x,y,2024-01-01\n"
                 ",t,b,7,numeric,x,y,2024-01-01\n"
                 "2,t," + "b" * 150 + ",seven,numeric,,,2024-01-01\n"
                 "3,t," + "b" * 150 + ",7,numeric,,,2024-01-01\n")
    rep = ticket_report(p, RED)
    q: list = []
    got = list(iter_tickets(p, cfg=IngestConfig(max_body_chars=100), redactor=RED, rep=rep, quarantined=q))
    assert [(t["id"], w) for t, w in got] == [("1", "line 2"), ("3", "line 5")]
    assert (rep.read, rep.quarantined, rep.truncated) == (4, 2, 1)
    assert rep.reasons == {"missing ticket id": 1, "answer does not parse as numeric": 1}
    assert [(x["where"], x["id"], x["reason"]) for x in q] == [
        ("line 3", "", "missing ticket id"),
        ("line 4", "2", "answer does not parse as numeric: could not convert string to float: 'seven'")]
    assert q[1]["raw"] == "2,t," + "b" * 150 + ",seven,numeric,,,2024-01-01\n"
    assert rep.unknown_columns == ["Foo", "[EMAIL]"]
    assert rep.stored == 0 and rep.records == -1


def test_iter_tickets_unsupported(tmp_path):
    p = tmp_path / "export.xml"
    p.write_text("<x/>")
    rep = ticket_report(p, RED)
    q: list = []
    assert list(iter_tickets(p, cfg=IngestConfig(), redactor=RED, rep=rep, quarantined=q)) == []
    assert (rep.read, rep.quarantined, rep.reasons) == (1, 1, {"unsupported ticket format": 1})
    assert q == [{"source": rep.path, "where": "file", "id": "",
                  "reason": "unsupported ticket format: suffix '.xml'; use one of ['.csv', '.jsonl', '.ndjson']"}]


def test_ticket_report(tmp_path):
    p = tmp_path / "a.NDJSON"
    p.write_bytes(b"{}\n")
    rep = ticket_report(p)
    assert (rep.path, rep.kind, rep.format, rep.sha256, rep.bytes) == (str(p), "tickets", "jsonl", sha256(b"{}\n"), 3)
    assert ticket_report(tmp_path / "a.NDJSON", RED).path == RED.redact(str(p))[0]
    c = tmp_path / "b.csv"
    c.write_bytes(b"")
    assert ticket_report(c).format == "csv"
    assert ticket_report(c).bytes == 0


def test_id_hint_quotes_and_line_ends():
    # the quotes are dropped before the split: a quoted comma splits the row
    assert _id_hint(["title", "body", "id"], ['"x,y",K-3\n']) == "K-3"
    assert _id_hint(["id", "body"], ['"K-3",x\n']) == "K-3"
    # only line-end characters are cut from the end
    assert _id_hint(["body", "id"], ["1,ABX\n"]) == "ABX"
    # a carriage return at the line start is a CSV error: no hint
    assert _id_hint(["id", "b"], ["\rK,x\n"]) == ""


def test_parse_manual_recursion_error_is_quarantined(tmp_path, monkeypatch):
    import rlsd.data.readers as readers

    def deep(text):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(readers, "_split_markdown", deep)
    p = tmp_path / "deep.md"
    p.write_bytes(b"# x\ny\n")
    sections, q, rep = parse_manual(p, cfg=IngestConfig(), redactor=RED)
    assert sections == []
    assert q == [{"source": rep.path, "where": "file", "id": "deep",
                  "reason": "unparseable markdown: maximum recursion depth exceeded"}]
    assert rep.reasons == {"unparseable markdown": 1}


def test_parse_manual_sections_redacted_and_numbered(tmp_path):
    p = tmp_path / "Admin Guide.md"
    p.write_bytes(b"intro\n# Setup\nmail bob@example.com\n# Setup\nagain\n# Setup\nthird\n")
    sections, q, rep = parse_manual(p, cfg=IngestConfig(), redactor=RED)
    assert q == []
    assert sections == [
        {"id": "admin-guide/admin-guide", "doc_id": "admin-guide", "heading_path": ["admin-guide"], "text": "intro",
         "checksum": sha256(b"intro")},
        {"id": "admin-guide/setup", "doc_id": "admin-guide", "heading_path": ["Setup"], "text": "mail [EMAIL]",
         "checksum": sha256(b"mail [EMAIL]")},
        {"id": "admin-guide/setup-2", "doc_id": "admin-guide", "heading_path": ["Setup"], "text": "again",
         "checksum": sha256(b"again")},
        {"id": "admin-guide/setup-3", "doc_id": "admin-guide", "heading_path": ["Setup"], "text": "third",
         "checksum": sha256(b"third")},
    ]
    assert rep.redactions == {"EMAIL": 1}
    assert (rep.read, rep.stored, rep.quarantined) == (4, 4, 0)


def test_bom_dropped_once_more_at_the_file_start_only(tmp_path):
    bom = b"\xef\xbb\xbf"
    # JSONL: line 1 loses two BOMs (the file's, then the line's); line 2 only one, so it starts with U+FEFF
    data = bom + bom + b'{"id": 1}\n' + bom + bom + b'{"id": 2}\n'
    got, _ = _raw(data, "jsonl")
    assert got[0] == ("line 1", {"id": 1}, '{"id": 1}', "", "")
    assert got[1][:2] == ("line 2", None) and got[1][3].startswith("invalid JSON: ")
    p = tmp_path / "b.jsonl"
    p.write_bytes(bom + bom + b"\n" + bom + bom + b"\n")
    assert count_records(p, "jsonl", 1024) == 1  # line 1 is blank, line 2 holds U+FEFF
    c = tmp_path / "b.csv"
    c.write_bytes(bom + bom + b"\nid,body\n1,x\n")
    assert count_records(c, "csv", 1024) == 1
    c.write_bytes(b"id,body\n" + bom + bom + b"\n1,x\n")
    assert count_records(c, "csv", 1024) == 2
    got, _ = _raw(bom + bom + b"id,body\n1,x\n", "csv")
    assert got == [("line 2", {"id": "1", "body": "x"}, "1,x\n", "", "")]


def test_normalise_ticket_error_text_cut_to_80_characters():
    with pytest.raises(ValueError) as e:
        normalise_ticket({"id": "x", "updated": "2024-01-01", "answer": "a" * 100, "answer_type": "numeric"},
                         cfg=IngestConfig(), redactor=RED)
    assert str(e.value) == "answer does not parse as numeric: could not convert string to float: '" + "a" * 44


def test_normalise_ticket_redacts_4096_characters_past_the_cut():
    cfg = IngestConfig(max_body_chars=100)
    # an e-mail address that ends at character 4196 (max_body_chars + 4096) is seen and counted
    body = "y" * 100 + " " * (4190 - 100) + "a@b.co"
    t, counts, truncated = normalise_ticket({"id": "x", "updated": "2024-01-01", "body": body}, cfg=cfg, redactor=RED)
    assert (t["body"], counts, truncated) == ("y" * 100, {"EMAIL": 1}, True)
    # one character further it is cut to "a@b.c" before redaction: no longer an address
    body = "y" * 100 + " " * (4191 - 100) + "a@b.co"
    t, counts, truncated = normalise_ticket({"id": "x", "updated": "2024-01-01", "body": body}, cfg=cfg, redactor=RED)
    assert (t["body"], counts, truncated) == ("y" * 100, {}, True)


def test_iter_tickets_counts_add_up(tmp_path):
    long_col = "c" * 250
    p = tmp_path / "export.csv"
    p.write_text(f"id,title,body,answer,answer_type,updated,{long_col}\n"
                 "1,t,b,7,numeric,2024-01-01,x\n"
                 ",t,mail bob@example.com,7,numeric,2024-01-01,\n"
                 ",t,b,7,numeric,2024-01-01,\n"
                 "3,t," + "b" * 150 + ",7,numeric,2024-01-01,\n"
                 "4,t," + "b" * 150 + ",7,numeric,2024-01-01,\n"
                 "5,t,mail carol@example.com,7,numeric,2024-01-01,\n")
    rep = ticket_report(p, RED)
    q: list = []
    got = list(iter_tickets(p, cfg=IngestConfig(max_body_chars=100), redactor=RED, rep=rep, quarantined=q))
    assert [(t["id"], w) for t, w in got] == [("1", "line 2"), ("3", "line 5"), ("4", "line 6"), ("5", "line 7")]
    assert got[3][0]["body"] == "mail [EMAIL]"
    assert (rep.read, rep.quarantined, rep.truncated) == (6, 2, 2)
    assert rep.reasons == {"missing ticket id": 2}
    assert rep.redactions == {"EMAIL": 2}  # one in a quarantined raw record, one in a stored ticket
    assert [x["raw"] for x in q] == [",t,mail [EMAIL],7,numeric,2024-01-01,\n", ",t,b,7,numeric,2024-01-01,\n"]
    assert rep.unknown_columns == ["c" * 200]


def test_iter_tickets_value_nested_too_deeply(tmp_path, monkeypatch):
    import rlsd.data.readers as readers

    def deep(rec, **kw):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(readers, "normalise_ticket", deep)
    p = tmp_path / "export.jsonl"
    p.write_text('{"id": "T-1"}\n')
    rep = ticket_report(p, RED)
    q: list = []
    assert list(iter_tickets(p, cfg=IngestConfig(), redactor=RED, rep=rep, quarantined=q)) == []
    assert q == [{"source": rep.path, "where": "line 1", "id": "T-1", "reason": "value nested too deeply",
                  "raw": '{"id": "T-1"}'}]
    assert (rep.read, rep.quarantined, rep.reasons) == (1, 1, {"value nested too deeply": 1})


def test_a_heading_inside_a_skipped_element_neither_splits_nor_names_a_section():
    html = "<h1>A</h1><p>x</p><nav><h2>Menu</h2><a>Home</a></nav><p>y</p>"
    assert _split_html(html) == [(["A"], "x\ny")]
