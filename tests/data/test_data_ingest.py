"""Malformed inputs of every kind, with exact counts and reasons; reconciliation per source file."""

import json

import pytest

from rlsd.config import IngestConfig, load_config
from rlsd.data.corpus import _pdf_bytes
from rlsd.data.ingest import ingest, parse_manual, parse_tickets
from rlsd.data.redact import Redactor
from rlsd.data.store import LocalStore

RED = Redactor.from_config(IngestConfig())


def _t(i, updated="2024-03-01T10:00:00Z", **kw):
    rec = {"id": f"T-{i}", "created": "2024-03-01T09:00:00Z", "updated": updated, "title": f"q{i}",
           "body": f"body {i}", "status": "resolved", "resolution": "done", "resolution_verified": True,
           "links": [], "answer": "7", "answer_type": "numeric"}
    rec.update(kw)
    return rec


def test_messy_jsonl_exact_counts_and_reasons(tmp_path):
    lines = [json.dumps(_t(1)),
             "{not json",
             "[1, 2]",
             json.dumps(_t(2, id="")),
             json.dumps(_t(3, updated="yesterday")),
             json.dumps(_t(4, answer_type="essay")),
             json.dumps(_t(5, resolution_verified="maybe")),
             json.dumps(_t(6, answer="many", answer_type="numeric")),
             json.dumps(_t(7, body="x" * 150)),
             json.dumps(_t(1, updated="2024-03-02T10:00:00Z", title="newer")),  # duplicate id, newer
             "",
             json.dumps(_t(8, answer={"port": 1, "protocol": "TCP"}, answer_type="json"))]
    raw = ("\r\n".join(lines) + "\r\n").encode()
    raw = b"\xef\xbb\xbf" + raw.replace(b"body 8", b"body \xff\xfe 8")  # BOM + 2 bytes that are not UTF-8
    p = tmp_path / "export.jsonl"
    p.write_bytes(raw)
    cfg = load_config(text="ingest: {max_body_chars: 100}")
    rep = ingest(cfg, tickets=[p], store=LocalStore(tmp_path / "st"))
    s = rep["sources"][0]
    assert (s["read"], s["stored"], s["quarantined"]) == (11, 3, 8)
    assert s["reasons"] == {"invalid JSON": 1, "not a JSON object": 1, "missing ticket id": 1, "bad updated time": 1,
                            "unknown answer_type": 1, "resolution_verified is not a boolean": 1,
                            "answer does not parse as numeric": 1, "duplicate id": 1}
    assert s["replaced_bytes"] == 2 and s["truncated"] == 1
    by_reason = {q["reason"].split(":")[0]: q for q in rep["quarantined"]}
    assert by_reason["invalid JSON"]["where"] == "line 2"
    assert "superseded by" in by_reason["duplicate id"]["reason"] and by_reason["duplicate id"]["where"] == "line 1"
    from rlsd.data.ingest import load_snapshot

    _, _, tickets = load_snapshot(LocalStore(tmp_path / "st"))
    t = {x["id"]: x for x in tickets}
    assert sorted(t) == ["T-1", "T-7", "T-8"]  # T-1 once (the newer), T-7 truncated, T-8 with bad bytes
    assert t["T-1"]["title"] == "newer"
    assert len(t["T-7"]["body"]) == 100 and "truncated from 150 to 100" in t["T-7"]["notes"][0]
    assert "\ufffd\ufffd" in t["T-8"]["body"]
    assert t["T-8"]["answer"] == '{"port": 1, "protocol": "TCP"}'
    assert rep["counts"]["stored"] + rep["counts"]["quarantined"] == rep["counts"]["read"]


def test_long_body_refused_when_configured(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text(json.dumps(_t(1, body="y" * 500)) + "\n")
    _, q, rep = parse_tickets(p, cfg=IngestConfig(max_body_chars=100, long_body="refuse"), redactor=RED)
    assert (rep.read, rep.quarantined) == (1, 1)
    assert q[0]["reason"].startswith("body too long: 500 chars > ingest.max_body_chars=100")


def test_messy_csv(tmp_path):
    # BOM, CRLF, reordered + aliased columns, an extra column, a quoted newline, a row with too many
    # fields, a short row (missing times), a PII-laden body.
    rows = [
        "Subject,ticket_id,Description,State,Verified,Answer,Answer Type,Updated At,Created At,Linked Sections,Priority",
        'Reset,T-1,"line one\r\nline two, with comma",RESOLVED,yes,15,numeric,2024-01-02T00:00:00Z,2024-01-01T00:00:00Z,doc/a;doc/b,P2',
        'LED,T-2,"mail me at a.b@example.com",Resolved,no,amber,label,2024-01-02 10:00:00,,,P3',
        'Bad,T-3,body,open,no,,,2024-01-02T00:00:00Z,2024-01-01T00:00:00Z,,P3,EXTRA,MORE',
        'Short,T-4,body',
    ]
    p = tmp_path / "export.csv"
    p.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")
    tickets, q, rep = parse_tickets(p, cfg=IngestConfig(), redactor=RED)
    assert (rep.read, len(tickets), rep.quarantined) == (4, 2, 2)
    assert dict(rep.reasons) == {"row has 13 fields, header has 11": 1, "missing updated and created time": 1}
    assert rep.unknown_columns == ["Priority"]
    t1, t2 = tickets[0][0], tickets[1][0]
    assert t1["body"] == "line one\r\nline two, with comma" and t1["links"] == ["doc/a", "doc/b"]
    assert t1["status"] == "resolved" and t1["resolution_verified"] is True and t1["answer"] == "15"
    assert t2["updated"] == "2024-01-02T10:00:00Z" and t2["created"] == "2024-01-02T10:00:00Z"
    assert t2["body"] == "mail me at [EMAIL]" and rep.redactions == {"EMAIL": 1}


def test_duplicates_across_exports_latest_wins_and_store_order(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(json.dumps(_t(1, updated="2024-05-01T00:00:00Z", title="A-new")) + "\n" + json.dumps(_t(2)) + "\n")
    b.write_text(json.dumps(_t(1, updated="2024-04-01T00:00:00Z", title="B-old")) + "\n")
    st = LocalStore(tmp_path / "st")
    cfg = load_config()
    rep = ingest(cfg, tickets=[a, b], store=st)
    ra, rb = rep["sources"]
    assert (ra["read"], ra["stored"], ra["quarantined"]) == (2, 2, 0)
    assert (rb["read"], rb["stored"], rb["quarantined"]) == (1, 0, 1)
    assert "superseded by" in rep["quarantined"][0]["reason"] and str(a) in rep["quarantined"][0]["reason"]
    # A later ingest of an older version of T-1 is quarantined against the stored one.
    rep2 = ingest(cfg, tickets=[b], store=st)
    assert rep2["unchanged"] and rep2["sources"][0]["reasons"] == {"older than stored version": 1}
    # same records, but its quarantine is named by a manifest: a snapshot with the previous index
    assert rep2["snapshot_written"] and rep2["previous"] == rep["snapshot_id"]
    assert st.read_manifest()["quarantine"] == rep2["quarantine"] and rep2["quarantine"]
    # A newer version updates it (one new ticket object + its one new index shard + one new manifest).
    c = tmp_path / "c.jsonl"
    c.write_text(json.dumps(_t(1, updated="2024-06-01T00:00:00Z", title="C")) + "\n")
    rep3 = ingest(cfg, tickets=[c], store=st)
    assert rep3["counts"]["updated_tickets"] == 1 and rep3["objects_written"] == 2 and rep3["previous"] == rep2["snapshot_id"]


MD = """Intro text before any heading.

# Guide
## Install
Plug it in.
```
# not a heading inside code
```
## Install
Second section with the same heading.
### Deep
Deep text.
# Empty top
"""

HTML = """<html><head><title>T</title><script>var x = "<h1>no</h1>";</script></head><body>
<h1>Guide</h1><p>Top &amp; intro.</p><h2>Ports</h2><ul><li>Port 1</li><li>Port 2</li></ul>
<nav>menu</nav><h2>Empty</h2></body></html>"""

TXT = "Guide\r\n=====\r\n\r\nIntro.\r\n\r\nSetup\r\n-----\r\nDo it.\r\n\r\n2.1 Cabling\r\nUse cat6.\r\n1. Not a heading.\r\n"


def test_manual_formats(tmp_path):
    cfg = IngestConfig()
    (tmp_path / "g.md").write_text(MD)
    secs, q, rep = parse_manual(tmp_path / "g.md", cfg=cfg, redactor=RED)
    assert [s["id"] for s in secs] == ["g/g", "g/guide/install", "g/guide/install-2", "g/guide/install/deep"]
    assert "# not a heading inside code" in secs[1]["text"]
    assert (rep.read, rep.stored, rep.quarantined) == (4, 4, 0)

    (tmp_path / "h.html").write_bytes(HTML.encode())
    secs, _, _ = parse_manual(tmp_path / "h.html", cfg=cfg, redactor=RED)
    assert [(s["heading_path"], s["text"]) for s in secs] == [(["Guide"], "Top & intro."),
                                                             (["Guide", "Ports"], "Port 1\nPort 2")]

    (tmp_path / "t.txt").write_bytes(TXT.encode() + b"caf\xe9\r\n")  # latin-1 byte
    secs, _, rep = parse_manual(tmp_path / "t.txt", cfg=cfg, redactor=RED)
    assert [s["heading_path"] for s in secs] == [["Guide"], ["Guide", "Setup"], ["Guide", "2.1 Cabling"]]
    assert secs[2]["text"] == "Use cat6.\n1. Not a heading.\ncaf\ufffd" and rep.replaced_bytes == 1

    (tmp_path / "p.pdf").write_bytes(_pdf_bytes(["1 Intro", "Hello pdf world.", "2 Limits", "At most 48 users."]))
    secs, _, _ = parse_manual(tmp_path / "p.pdf", cfg=cfg, redactor=RED)
    assert [(s["id"], s["text"]) for s in secs] == [("p/1-intro", "Hello pdf world."), ("p/2-limits", "At most 48 users.")]


def test_bad_manuals_are_quarantined_with_reasons(tmp_path):
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not a pdf")
    (tmp_path / "empty.md").write_text("\n\n# Only a heading\n")
    (tmp_path / "notes.docx").write_bytes(b"PK\x03\x04")
    (tmp_path / "big.md").write_text("# Big\n" + "\n\n".join(["word " * 50] * 10))
    st = LocalStore(tmp_path / "st")
    cfg = load_config(text="ingest: {max_section_chars: 600}")
    rep = ingest(cfg, manuals=[tmp_path / "broken.pdf", tmp_path / "empty.md", tmp_path / "notes.docx",
                               tmp_path / "big.md"], store=st)
    reasons = {s["path"].rsplit("/", 1)[-1]: (s["read"], s["stored"], s["quarantined"], s["reasons"]) for s in rep["sources"]}
    assert reasons["broken.pdf"] == (1, 0, 1, {"unreadable PDF": 1})
    assert reasons["empty.md"] == (1, 0, 1, {"no text": 1})
    assert reasons["notes.docx"] == (1, 0, 1, {"unsupported manual format": 1})
    assert reasons["big.md"] == (5, 5, 0, {})  # 10 paragraphs of 250 chars in parts of <= 600 chars
    assert rep["counts"]["sections"] == 5


def test_folder_input_reports_skipped_files(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "a.md").write_text("# A\ntext")
    (d / "image.png").write_bytes(b"\x89PNG")
    rep = ingest(load_config(), manuals=[d], store=LocalStore(tmp_path / "st"))
    assert rep["skipped_files"] == [str(d / "image.png")] and rep["counts"]["sections"] == 1


def test_missing_input_is_a_clear_error(tmp_path):
    from rlsd.data.ingest import IngestError

    with pytest.raises(IngestError, match="does not exist"):
        ingest(load_config(), tickets=[tmp_path / "nope.jsonl"], store=LocalStore(tmp_path / "st"))
