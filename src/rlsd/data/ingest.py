"""Ingest manuals and ticket exports into the store as one new immutable snapshot.

Manuals (Markdown, HTML, plain text, PDF through pypdf) become addressable **sections**::

    {"id": "<doc_id>/<heading-slug>/<subheading-slug>", "doc_id", "heading_path": [...], "text", "checksum"}

Tickets (JSONL or CSV exports) become **tickets**::

    {"id", "created", "updated" (ISO-8601 UTC), "title", "body", "status", "resolution",
     "resolution_verified" (bool), "links" ([section ids]), "answer", "answer_type"
     ("numeric" | "label" | "json" | ""), "notes" ([what ingest changed: truncation, bad bytes])}

Every source file reconciles: ``read == stored + quarantined``; each quarantined record carries its
file, line or row, and a reason. Messy exports are expected: a UTF-8 BOM, CRLF, quoted newlines,
extra or reordered columns and header aliases (``ticket_id``, ``subject``, ``description``...),
bytes that are not UTF-8 (replaced by U+FFFD and counted), bodies over ``ingest.max_body_chars``
(truncated with a note, or quarantined with ``long_body: refuse``), and the same ticket id in
several exports or already in the store: the latest ``updated`` wins (ties: the later file), the
others are quarantined as superseded. An update is incremental: a snapshot is the previous one
plus what this ingest adds; a manual that is ingested again replaces all of its sections.

Redaction (rlsd.data.redact) runs on every text field before anything is hashed or stored,
including the quarantined raw records.

Memory is bounded whatever the input size: ticket exports are read one line at a time (a line over
``ingest.max_ticket_line_bytes`` is quarantined, skipped in 1 MiB reads), a manual over
``ingest.max_manual_bytes`` is quarantined unread, and objects are written in batches of
``FLUSH_BYTES`` / ``FLUSH_OBJECTS`` as files are parsed; what stays in memory is one file's sections, one
write batch and the first records of the quarantine (all of them are spooled to a scratch file and stored
in chunks). The record index (id -> object hash, for the store's
previous snapshot and for this ingest's winners) lives in a SQLite file in a temporary folder and is
written as sharded objects (rlsd.data.index), so memory does not grow with the number of records.
The index shards, the manifest and ``refs/latest`` are written last, so an ingest that fails leaves
only unreferenced objects.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import json
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from rlsd.config import IngestConfig, RLSDConfig
from rlsd.data.index import WorkIndex, micros, read_index, write_index
from rlsd.data.redact import Redactor
from rlsd.data.store import Store, canonical_json, file_sha256, open_store, sha256

MANUAL_SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html",
                   ".txt": "text", ".text": "text", ".pdf": "pdf"}
TICKET_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
ANSWER_TYPES = ("numeric", "label", "json", "expression")
FLUSH_BYTES = 16 * 1024 * 1024  # write the object batch when it holds this many bytes ...
FLUSH_OBJECTS = 4096  # ... or this many objects
QUARANTINE_SAMPLE = 1000  # quarantined records listed in the ingest report (all of them go to the store)
QUARANTINE_CHUNK = 2000  # quarantined records per store object

# Header aliases seen in ticketing exports -> our field names.
FIELD_ALIASES = {
    "id": ("id", "ticket_id", "ticket", "key", "ticket_number", "number"),
    "created": ("created", "created_at", "opened", "opened_at", "creation_date", "date_created"),
    "updated": ("updated", "updated_at", "modified", "modified_at", "last_modified", "last_updated"),
    "title": ("title", "subject", "summary"),
    "body": ("body", "description", "question", "text", "content", "message"),
    "status": ("status", "state"),
    "resolution": ("resolution", "resolution_notes", "solution", "resolution_text"),
    "resolution_verified": ("resolution_verified", "verified", "is_verified", "resolution_is_verified"),
    "links": ("links", "linked_sections", "manual_links", "kb_links", "sections", "section_links"),
    "answer": ("answer", "verified_answer", "final_answer"),
    "answer_type": ("answer_type", "answer_kind"),
}
_ALIAS = {alias: name for name, aliases in FIELD_ALIASES.items() for alias in aliases}
_TRUE = {"true", "yes", "y", "1", "verified", "t"}
_FALSE = {"false", "no", "n", "0", "", "unverified", "f", "none", "null"}


# ----------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------


@dataclass
class SourceReport:
    """Reconciliation of one source file: read == stored + quarantined."""

    path: str
    kind: str  # manual | tickets
    format: str
    sha256: str = ""
    bytes: int = 0
    read: int = 0
    stored: int = 0
    quarantined: int = 0
    reasons: Counter = field(default_factory=Counter)
    replaced_bytes: int = 0
    truncated: int = 0
    redactions: Counter = field(default_factory=Counter)
    unknown_columns: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["reasons"] = dict(sorted(self.reasons.items()))
        d["redactions"] = dict(sorted(self.redactions.items()))
        return d

    @property
    def reconciled(self) -> bool:
        return self.read == self.stored + self.quarantined


class IngestError(ValueError):
    pass


class QuarantineSpool:
    """The quarantined records of one ingest, in a JSONL file instead of memory (a wrong-format export of
    millions of lines yields millions of records); the first :data:`QUARANTINE_SAMPLE` are also kept for the
    report. :meth:`write` stores them all as chunk objects of :data:`QUARANTINE_CHUNK` records each."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / "quarantine.jsonl"
        self._fh = self.path.open("w", encoding="utf-8")
        self.count = 0
        self.sample: list[dict[str, Any]] = []

    def append(self, rec: dict[str, Any]) -> None:
        self._fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self.count += 1
        if len(self.sample) < QUARANTINE_SAMPLE:
            self.sample.append(rec)

    def extend(self, recs: Iterable[dict[str, Any]]) -> None:
        for r in recs:
            self.append(r)

    def write(self, store: Store) -> tuple[list[str], int]:
        """Store every record, in order, as canonical-JSON lists of up to QUARANTINE_CHUNK records;
        returns (chunk digests, objects written)."""
        self._fh.close()
        digests, written = [], 0
        with self.path.open(encoding="utf-8") as f:
            records = (json.loads(line) for line in f)
            while chunk := list(itertools.islice(records, QUARANTINE_CHUNK)):
                d, w = store.put_object(canonical_json(chunk))
                digests.append(d)
                written += w
        return digests, written


def _reason_key(reason: str) -> str:
    """The reason without its specifics (for counting): text up to the first ':' or '('."""
    return re.split(r"[:(]", reason, maxsplit=1)[0].strip()


# ----------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------

_SURROGATE = re.compile("[\udc80-\udcff]")


def decode_text(raw: bytes) -> tuple[str, int]:
    """UTF-8 (a BOM is dropped) with every undecodable byte replaced by U+FFFD; returns (text, n_replaced)."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    text = raw.decode("utf-8", errors="surrogateescape")
    n = len(_SURROGATE.findall(text))
    if n:
        text = _SURROGATE.sub("\ufffd", text)
    return text, n


# ----------------------------------------------------------------------------------------------
# Manuals -> sections
# ----------------------------------------------------------------------------------------------


def slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:60].rstrip("-") or "section"


def section_id(doc_id: str, heading_path: Iterable[str]) -> str:
    """The address of a section: ``doc_id/slug(h1)/slug(h2)/...`` (what tickets link to)."""
    return "/".join([doc_id, *(slug(h) for h in heading_path)])


_ATX = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_NUMBERED = re.compile(r"^(\d+(?:\.\d+)*)\s+([A-Z][^\n]{0,80})$")
_SETEXT = re.compile(r"^(=+|-+)\s*$")


def _split_markdown(text: str) -> list[tuple[list[str], str]]:
    out: list[tuple[list[str], str]] = []
    path: list[str] = []
    buf: list[str] = []
    fenced = False

    def flush() -> None:
        body = "\n".join(buf).strip()
        if body:
            out.append((list(path), body))
        buf.clear()

    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        m = None if fenced else _ATX.match(line)
        if m:
            flush()
            level = len(m.group(1))
            path[:] = path[: level - 1] + [m.group(2) or "untitled"]
        else:
            buf.append(line)
    flush()
    return out


def _split_plain(text: str) -> list[tuple[list[str], str]]:
    """Plain text: setext headings (a line underlined with === or ---) and numbered headings
    (``2.1 Tunnel limits``; the depth is the number of parts)."""
    lines = text.splitlines()
    out: list[tuple[list[str], str]] = []
    path: list[str] = []
    buf: list[str] = []

    def flush() -> None:
        body = "\n".join(buf).strip()
        if body:
            out.append((list(path), body))
        buf.clear()

    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        nxt = lines[i + 1].rstrip() if i + 1 < len(lines) else ""
        if line.strip() and _SETEXT.match(nxt) and len(nxt.strip()) >= 3:
            flush()
            level = 1 if nxt.strip()[0] == "=" else 2
            path[:] = path[: level - 1] + [line.strip()]
            i += 2
            continue
        m = _NUMBERED.match(line.strip())
        if m and not line.strip().endswith("."):
            flush()
            level = m.group(1).count(".") + 1
            path[:] = path[: level - 1] + [line.strip()]
            i += 1
            continue
        buf.append(line)
        i += 1
    flush()
    return out


class _HTMLSections(HTMLParser):
    BLOCK = {"p", "div", "li", "tr", "br", "pre", "table", "ul", "ol", "section", "article", "dd", "dt", "blockquote"}
    SKIP = {"script", "style", "head", "nav", "noscript", "template"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[tuple[list[str], str]] = []
        self.path: list[str] = []
        self.buf: list[str] = []
        self.heading: list[str] | None = None
        self.level = 0
        self.skip = 0

    def _flush(self) -> None:
        body = re.sub(r"[ \t]+", " ", "".join(self.buf))
        body = re.sub(r"\s*\n\s*", "\n", body).strip()
        if body:
            self.out.append((list(self.path), body))
        self.buf = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._flush()
            self.heading, self.level = [], int(tag[1])
        elif tag in self.BLOCK:
            self.buf.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif re.fullmatch(r"h[1-6]", tag) and self.heading is not None:
            title = " ".join("".join(self.heading).split()) or "untitled"
            self.path[:] = self.path[: self.level - 1] + [title]
            self.heading = None
        elif tag in self.BLOCK:
            self.buf.append("\n")

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        (self.heading if self.heading is not None else self.buf).append(data)


def _split_html(text: str) -> list[tuple[list[str], str]]:
    p = _HTMLSections()
    p.feed(text)
    p.close()
    p._flush()
    return p.out


def _pdf_text(raw: bytes) -> str:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(raw))
    return "\n".join((page.extract_text() or "") for page in reader.pages)


def _cap_sections(parts: list[tuple[list[str], str]], max_chars: int) -> list[tuple[list[str], str]]:
    """Split sections longer than ``max_chars`` at paragraph (else line, else hard) boundaries into
    ``(part k)`` sections."""
    out = []
    for path, body in parts:
        if len(body) <= max_chars:
            out.append((path, body))
            continue
        chunks, cur = [], ""
        for para in re.split(r"(\n\s*\n)", body):
            while len(para) > max_chars:
                cut = para.rfind("\n", 0, max_chars)
                cut = cut if cut > 0 else max_chars
                if cur:
                    chunks.append(cur)
                    cur = ""
                chunks.append(para[:cut])
                para = para[cut:]
            if len(cur) + len(para) > max_chars:
                chunks.append(cur)
                cur = ""
            cur += para
        if cur.strip():
            chunks.append(cur)
        chunks = [c.strip() for c in chunks if c.strip()]
        out.extend(([*path, f"part {k + 1}"], c) for k, c in enumerate(chunks))
    return out


def parse_manual(path: str | Path, *, cfg: IngestConfig, redactor: Redactor, doc_id: str | None = None
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], SourceReport]:
    """One manual file -> (sections, quarantined, report). A file that yields no text, or a PDF that
    cannot be read, is one quarantined record."""
    p = Path(path)
    fmt = MANUAL_SUFFIXES.get(p.suffix.lower(), "unsupported")
    size = p.stat().st_size
    too_big = size > cfg.max_manual_bytes
    raw = b"" if too_big else p.read_bytes()
    rep = SourceReport(path=str(p), kind="manual", format=fmt, sha256="" if too_big else sha256(raw),
                       bytes=size)
    doc_id = doc_id or slug(p.stem)
    quarantined: list[dict[str, Any]] = []

    def quarantine(reason: str, where: str = "file") -> tuple[list, list, SourceReport]:
        rep.read += 1
        rep.quarantined += 1
        rep.reasons[_reason_key(reason)] += 1
        quarantined.append({"source": str(p), "where": where, "id": doc_id, "reason": reason})
        return [], quarantined, rep

    if too_big:  # refused before reading: never loaded into memory
        return quarantine(f"file too large: {size} bytes > ingest.max_manual_bytes={cfg.max_manual_bytes} "
                          "(split the manual, or raise ingest.max_manual_bytes)")
    try:
        if fmt == "unsupported":
            return quarantine(f"unsupported manual format: suffix {p.suffix!r}; use one of {sorted(MANUAL_SUFFIXES)}")
        if fmt == "pdf":
            try:
                text = _pdf_text(raw)
            except Exception as e:  # pypdf raises many types on broken files
                return quarantine(f"unreadable PDF: {type(e).__name__}: {e}")
            parts = _split_plain(text)
        else:
            text, rep.replaced_bytes = decode_text(raw)
            parts = {"markdown": _split_markdown, "html": _split_html, "text": _split_plain}[fmt](text)
    except RecursionError as e:
        return quarantine(f"unparseable {fmt}: {e}")
    if not parts:
        return quarantine("no text: the file holds no section with text")
    parts = _cap_sections(parts, cfg.max_section_chars)
    sections, seen = [], Counter()
    for heading_path, body in parts:
        body, counts = redactor.redact(body)
        rep.redactions.update(counts)
        heading_path = [redactor.redact(h)[0] for h in heading_path] or [doc_id]
        sid = section_id(doc_id, heading_path)
        seen[sid] += 1
        if seen[sid] > 1:
            sid = f"{sid}-{seen[sid]}"
        sections.append({"id": sid, "doc_id": doc_id, "heading_path": heading_path, "text": body,
                         "checksum": sha256(body.encode("utf-8"))})
    rep.read = rep.stored = len(sections)
    return sections, quarantined, rep


# ----------------------------------------------------------------------------------------------
# Tickets
# ----------------------------------------------------------------------------------------------


def parse_time(value: Any) -> dt.datetime:
    """ISO-8601 (``Z`` allowed; naive means UTC) or Unix seconds -> aware UTC datetime."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(float(value), tz=dt.UTC)
    if not isinstance(value, str) or not value.strip():
        raise ValueError("empty")
    s = value.strip()
    if re.fullmatch(r"\d{9,11}(\.\d+)?", s):
        return dt.datetime.fromtimestamp(float(s), tz=dt.UTC)
    t = dt.datetime.fromisoformat(s.replace(" UTC", "Z"))
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def format_time(t: dt.datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _as_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if v is None:
        return False
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    s = str(v).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ValueError(f"resolution_verified is not a boolean: {v!r}")


def _as_links(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, list):
        items = v
    else:
        s = str(v).strip()
        if s.startswith("["):
            try:
                items = json.loads(s)
            except json.JSONDecodeError:
                items = re.split(r"[;|,\s]+", s.strip("[]"))
        else:
            items = re.split(r"[;|,\s]+", s)
    return [str(x).strip() for x in items if str(x).strip()]


def _as_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, ensure_ascii=False)
    return str(v)


def _canonical_answer(answer: Any, answer_type: str) -> str:
    if answer_type == "json":
        obj = json.loads(answer) if isinstance(answer, str) else answer
        return json.dumps(obj, sort_keys=True, separators=(", ", ": "), ensure_ascii=False)
    if answer_type == "numeric":
        s = _as_text(answer).strip()
        float(s.replace(",", ""))  # raises ValueError when not a number
        return s
    if answer_type == "expression":  # a formula over the numbers of the question, e.g. "(120 - 20) / 4"
        from rlsd.verifiers.expression import evaluate_expression

        s = _as_text(answer).strip()
        evaluate_expression(s)  # raises ValueError when not an arithmetic expression
        return s
    return _as_text(answer).strip()


def normalise_ticket(rec: dict[str, Any], *, cfg: IngestConfig, redactor: Redactor
                     ) -> tuple[dict[str, Any], Counter, bool]:
    """A raw export record (keys already mapped to our names) -> (ticket, redaction counts, truncated).
    Raises ValueError with the reason when the record cannot be a ticket."""
    tid = _as_text(rec.get("id")).strip()
    if not tid:
        raise ValueError("missing ticket id")
    created_raw, updated_raw = rec.get("created"), rec.get("updated")
    try:
        created = parse_time(created_raw) if _as_text(created_raw).strip() else None
    except ValueError:
        raise ValueError(f"bad created time: {created_raw!r} (use ISO-8601, e.g. 2024-03-01T10:00:00Z)") from None
    try:
        updated = parse_time(updated_raw) if _as_text(updated_raw).strip() else created
    except ValueError:
        raise ValueError(f"bad updated time: {updated_raw!r} (use ISO-8601, e.g. 2024-03-01T10:00:00Z)") from None
    if updated is None:
        raise ValueError("missing updated and created time")
    answer_type = _as_text(rec.get("answer_type")).strip().lower()
    if answer_type not in ("", *ANSWER_TYPES):
        raise ValueError(f"unknown answer_type: {answer_type!r} (allowed: {', '.join(ANSWER_TYPES)})")
    answer_raw = rec.get("answer")
    answer = ""
    if answer_raw not in (None, ""):
        try:
            answer = _canonical_answer(answer_raw, answer_type)
        except (ValueError, TypeError) as e:
            raise ValueError(f"answer does not parse as {answer_type}: {str(e)[:80]}") from None
    verified = _as_bool(rec.get("resolution_verified"))
    notes: list[str] = []
    body = _as_text(rec.get("body"))
    truncated = False
    if len(body) > cfg.max_body_chars:
        if cfg.long_body == "refuse":
            raise ValueError(f"body too long: {len(body)} chars > ingest.max_body_chars={cfg.max_body_chars} "
                             "(set ingest.long_body=truncate to keep it truncated)")
        notes.append(f"body truncated from {len(body)} to {cfg.max_body_chars} chars (ingest.max_body_chars)")
        body, truncated = body[: cfg.max_body_chars], True
    counts: Counter = Counter()
    fields = {}
    for name, value in (("title", _as_text(rec.get("title"))), ("body", body),
                        ("resolution", _as_text(rec.get("resolution"))), ("answer", answer)):
        fields[name], c = redactor.redact(value.strip() if name != "body" else value)
        counts.update(c)
    ticket = {
        "id": tid,
        "created": format_time(created) if created else format_time(updated),
        "updated": format_time(updated),
        "title": fields["title"],
        "body": fields["body"],
        "status": _as_text(rec.get("status")).strip().lower(),
        "resolution": fields["resolution"],
        "resolution_verified": verified,
        "links": _as_links(rec.get("links")),
        "answer": fields["answer"],
        "answer_type": answer_type,
        "notes": notes,
    }
    return ticket, counts, truncated


def _map_keys(raw: dict[Any, Any]) -> tuple[dict[str, Any], list[str]]:
    """Rename export columns to our fields; returns (record, unknown column names)."""
    out, unknown = {}, []
    for k, v in raw.items():
        key = re.sub(r"[\s.\-]+", "_", str(k).strip().lower().lstrip("\ufeff"))
        name = _ALIAS.get(key)
        if name is None:
            unknown.append(str(k))
        elif name not in out or out[name] in (None, ""):
            out[name] = v
    return out, unknown


def _iter_lines(fh: Any, limit: int) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, line bytes or None when longer than ``limit``, length) of a binary file; an over-long
    line is skipped in 1 MiB reads, so memory stays bounded by ``limit`` whatever the file holds."""
    n = 0
    while line := fh.readline(limit + 1):
        n += 1
        if len(line) > limit and not line.endswith(b"\n"):
            size = len(line)
            while (more := fh.readline(1 << 20)) and not more.endswith(b"\n"):
                size += len(more)
            yield n, None, size + len(more)
            continue
        yield n, line, len(line)


def _too_long(n: int, size: int, limit: int) -> str:
    return (f"line too long: line {n} has {size} bytes > ingest.max_ticket_line_bytes={limit} "
            "(fix the export, or raise ingest.max_ticket_line_bytes)")


def _iter_raw_tickets(fh: Any, fmt: str, limit: int, rep: SourceReport
                      ) -> Iterator[tuple[str, dict[str, Any] | None, str, str]]:
    """Yields (where, raw record or None, raw text, error reason), reading one line at a time; undecodable
    bytes are replaced and counted in ``rep.replaced_bytes``."""

    def text_of(n: int, line: bytes) -> str:
        if n == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        t, bad = decode_text(line)
        rep.replaced_bytes += bad
        return t

    if fmt == "jsonl":
        for n, line, size in _iter_lines(fh, limit):
            if line is None:
                yield f"line {n}", None, "", _too_long(n, size, limit)
                continue
            text = text_of(n, line).rstrip("\r\n")
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                yield f"line {n}", None, text, f"invalid JSON: {e.msg} at column {e.colno}"
                continue
            except RecursionError:
                yield f"line {n}", None, text, "invalid JSON: nested too deeply"
                continue
            if not isinstance(obj, dict):
                yield f"line {n}", None, text, f"not a JSON object: {type(obj).__name__}"
                continue
            yield f"line {n}", obj, text, ""
        return
    long_lines: list[tuple[int, int]] = []

    def lines() -> Iterator[str]:
        for n, line, size in _iter_lines(fh, limit):
            if line is None:
                long_lines.append((n, size))
                yield "\n"  # the row is refused below; csv sees an empty line
                continue
            yield text_of(n, line)

    def drain_long() -> Iterator[tuple[str, None, str, str]]:
        while long_lines:
            n, size = long_lines.pop(0)
            yield f"line {n}", None, "", _too_long(n, size, limit)

    reader = csv.reader(lines())
    try:
        header = next(reader)
    except StopIteration:
        yield from drain_long()
        return
    except csv.Error as e:
        yield "row 1", None, "", f"unreadable CSV header: {e}"
        return
    yield from drain_long()
    row_no = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            yield from drain_long()
            return
        except csv.Error as e:
            row_no += 1
            yield from drain_long()
            yield f"row {row_no}", None, "", f"malformed CSV: {e}"
            continue
        row_no += 1
        yield from drain_long()
        if not any(c.strip() for c in row):
            continue
        raw = ",".join(row)
        if len(row) > len(header):
            yield f"row {row_no}", None, raw, f"row has {len(row)} fields, header has {len(header)}"
            continue
        rec = dict(zip(header, row + [""] * (len(header) - len(row))))
        yield f"row {row_no}", rec, raw, ""


def iter_tickets(path: str | Path, *, cfg: IngestConfig, redactor: Redactor, rep: SourceReport,
                 quarantined: list[dict[str, Any]] | QuarantineSpool) -> Iterator[tuple[dict[str, Any], str]]:
    """Stream one export: yields (ticket, where) and appends refused records to ``quarantined`` and counts to
    ``rep`` (``rep.stored`` is filled in later, after duplicates are resolved). Memory is bounded by one line."""
    p = Path(path)
    if rep.format == "unsupported":
        rep.read = rep.quarantined = 1
        reason = f"unsupported ticket format: suffix {p.suffix!r}; use one of {sorted(TICKET_SUFFIXES)}"
        rep.reasons[_reason_key(reason)] += 1
        quarantined.append({"source": str(p), "where": "file", "id": "", "reason": reason})
        return
    unknown_cols: set[str] = set()
    with p.open("rb") as fh:
        for where, rec, raw_text, err in _iter_raw_tickets(fh, rep.format, cfg.max_ticket_line_bytes, rep):
            rep.read += 1
            rid = ""
            if rec is not None:
                mapped, unknown = _map_keys(rec)
                unknown_cols.update(unknown)
                rid = _as_text(mapped.get("id")).strip()
                try:
                    ticket, counts, truncated = normalise_ticket(mapped, cfg=cfg, redactor=redactor)
                    rep.redactions.update(counts)
                    rep.truncated += truncated
                    yield ticket, where
                    continue
                except (ValueError, OverflowError, OSError, RecursionError) as e:
                    err = str(e) if not isinstance(e, RecursionError) else "value nested too deeply"
            rep.quarantined += 1
            rep.reasons[_reason_key(err)] += 1
            red, counts = redactor.redact(raw_text[:2000])
            rep.redactions.update(counts)
            quarantined.append({"source": str(p), "where": where, "id": rid[:200], "reason": err[:500], "raw": red})
    rep.unknown_columns = sorted(unknown_cols)


def ticket_report(path: str | Path) -> SourceReport:
    p = Path(path)
    return SourceReport(path=str(p), kind="tickets", format=TICKET_SUFFIXES.get(p.suffix.lower(), "unsupported"),
                        sha256=file_sha256(p), bytes=p.stat().st_size)


def parse_tickets(path: str | Path, *, cfg: IngestConfig, redactor: Redactor
                  ) -> tuple[list[tuple[dict[str, Any], str]], list[dict[str, Any]], SourceReport]:
    """One export -> ([(ticket, where)], quarantined, report) in memory (see :func:`iter_tickets` to stream).
    ``report.stored`` is filled in later (after duplicates are resolved across files and against the store)."""
    rep = ticket_report(path)
    quarantined: list[dict[str, Any]] = []
    tickets = list(iter_tickets(path, cfg=cfg, redactor=redactor, rep=rep, quarantined=quarantined))
    return tickets, quarantined, rep


# ----------------------------------------------------------------------------------------------
# The ingest
# ----------------------------------------------------------------------------------------------


def _expand(paths: Iterable[str | Path], suffixes: dict[str, str]) -> tuple[list[Path], list[str]]:
    """Files named directly, plus supported files under named folders; returns (files, skipped)."""
    files, skipped = [], []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file():
                    (files.append(f) if f.suffix.lower() in suffixes else skipped.append(str(f)))
        elif p.is_file():
            files.append(p)
        else:
            raise IngestError(f"input {str(p)!r} does not exist")
    return files, skipped


def ingest(cfg: RLSDConfig, *, manuals: Iterable[str | Path] = (), tickets: Iterable[str | Path] = (),
           store: Store | None = None, progress: bool = False) -> dict[str, Any]:
    """Parse, redact and store manuals and ticket exports as a new snapshot on top of the latest one.

    Returns the ingest report: ``snapshot_id``, ``previous``, ``unchanged`` (True when the content
    equals the previous snapshot, so no new snapshot was written), ``sources`` (per-file
    reconciliation), ``counts``, ``objects_written``, ``quarantine`` (the hashes of the objects holding
    every quarantined record, in order, QUARANTINE_CHUNK per object; also in the manifest),
    ``quarantined`` (the first QUARANTINE_SAMPLE records; ``counts["quarantined"]`` is the total), ``seconds``.
    """
    t0 = time.perf_counter()
    store = store or open_store(cfg.store)
    redactor = Redactor.from_config(cfg.ingest)
    manual_files, skipped_m = _expand(manuals, MANUAL_SUFFIXES)
    ticket_files, skipped_t = _expand(tickets, TICKET_SUFFIXES)
    if not manual_files and not ticket_files:
        raise IngestError("nothing to ingest: name manual files/folders (--manuals) and/or ticket exports (--tickets)")

    prev_id = store.latest()
    prev = store.read_manifest(prev_id) if prev_id else None
    with WorkIndex() as work:
        if prev:
            work.load_previous(store, prev)
        return _ingest_into(cfg, store, work, prev_id, prev, manual_files, ticket_files, skipped_m + skipped_t,
                            redactor, progress, t0)


def _ingest_into(cfg: RLSDConfig, store: Store, work: WorkIndex, prev_id: str | None, prev: dict[str, Any] | None,
                 manual_files: list[Path], ticket_files: list[Path], skipped: list[str], redactor: Redactor,
                 progress: bool, t0: float) -> dict[str, Any]:
    reports: list[SourceReport] = []
    quarantined = QuarantineSpool(work.folder)
    # Objects are written as the files are read, in batches (bounded memory whatever the input size);
    # the index shards, the manifest and the pointer come last, so a failure leaves no visible snapshot.
    objects_written = 0
    blobs: dict[str, bytes] = {}
    blob_bytes = 0

    def flush() -> None:
        nonlocal objects_written, blob_bytes
        objects_written += store.put_objects(blobs, known=work)
        blobs.clear()
        blob_bytes = 0

    def add_blob(d: str, b: bytes) -> None:
        nonlocal blob_bytes
        if d not in blobs:
            blobs[d] = b
            blob_bytes += len(b)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(manual_files) + len(ticket_files), desc="ingest", unit="file")

    # -- manuals: a re-ingested document replaces all of its sections ------------------------------
    doc_source: dict[str, str] = {}
    for f in manual_files:
        secs, q, rep = parse_manual(f, cfg=cfg.ingest, redactor=redactor)
        doc = slug(f.stem)
        if secs and doc in doc_source:
            reason = f"duplicate document id: {doc!r} already ingested from {doc_source[doc]} in this run; rename one file"
            rep.stored, rep.quarantined = 0, rep.read
            rep.reasons[_reason_key(reason)] += rep.read
            q += [{"source": str(f), "where": s["id"], "id": s["id"], "reason": reason} for s in secs]
            secs = []
        if secs:
            doc_source[doc] = str(f)
            entries = []
            for s in secs:
                b = canonical_json(s)
                d = sha256(b)
                add_blob(d, b)
                entries.append((s["id"], d))
            work.replace_document(doc, entries)
        reports.append(rep)
        quarantined.extend(q)
        del secs
        if blob_bytes >= FLUSH_BYTES or len(blobs) >= FLUSH_OBJECTS:
            flush()
        if bar:
            bar.update()

    # -- tickets: latest `updated` wins across files and against the store -------------------------
    # The winning version of each id is kept in the work index; its bytes wait in the write batch. A
    # ticket superseded by a later file after its batch was written leaves an unreferenced object.
    pending: dict[str, bytes] = {}  # digest -> bytes of winners not yet written
    for f in ticket_files:
        rep = ticket_report(f)
        reports.append(rep)
        src = len(reports) - 1
        for ticket, where in iter_tickets(f, cfg=cfg.ingest, redactor=redactor, rep=rep, quarantined=quarantined):
            tid, updated = ticket["id"], ticket["updated"]
            ts = micros(parse_time(updated))
            b = canonical_json(ticket)
            d = sha256(b)
            old = work.winner(tid)
            if old is not None:
                o_digest, o_updated, o_ts, o_src, o_where = old
                newer = ts >= o_ts
                lwhere, lrep, lupd = (o_where, reports[o_src], o_updated) if newer else (where, rep, updated)
                wwhere, wrep, wupd = (where, rep, updated) if newer else (o_where, reports[o_src], o_updated)
                reason = (f"duplicate id: {tid!r} superseded by {wrep.path} {wwhere} (updated {wupd} vs {lupd})")
                lrep.quarantined += 1
                lrep.reasons[_reason_key(reason)] += 1
                quarantined.append({"source": lrep.path, "where": lwhere, "id": tid, "reason": reason})
                if not newer:
                    continue
                pending.pop(o_digest, None)
            work.set_winner(tid, d, updated, ts, src, where, bool(ticket.get("resolution_verified")))
            stored = work.stored_ticket(tid)
            if stored is None or stored[2] < ts:
                pending[d] = b
                blob_bytes += len(b)
            if blob_bytes >= FLUSH_BYTES or len(pending) + len(blobs) >= FLUSH_OBJECTS:
                blobs.update(pending)
                pending.clear()
                flush()
        if bar:
            bar.update()
    if bar:
        bar.close()

    new_tickets = updated_tickets = new_verified = 0
    for tid, d, updated, ts, src, where, verified, s_updated, s_ts in work.winners_against_stored():
        rep = reports[src]
        if s_ts is not None:
            if ts < s_ts:
                reason = f"older than stored version: {tid!r} updated {updated} < stored {s_updated}"
                rep.quarantined += 1
                rep.reasons[_reason_key(reason)] += 1
                quarantined.append({"source": rep.path, "where": where, "id": tid, "reason": reason})
                continue
            if ts == s_ts:
                rep.stored += 1  # same id and updated time: the stored version stands
                continue
        work.put_ticket(tid, d, updated, ts)
        rep.stored += 1
        new_tickets += s_ts is None
        updated_tickets += s_ts is not None
        new_verified += verified  # new or updated, and verified: retraining material

    for rep in reports:
        if not rep.reconciled:  # a bug, never a silent drop
            raise IngestError(f"{rep.path}: read {rep.read} != stored {rep.stored} + quarantined {rep.quarantined}")

    # -- the last objects, the index shards, then the manifest, then the pointer -------------------
    blobs.update(pending)
    pending.clear()
    flush()
    q_digests, w = quarantined.write(store)
    objects_written += w
    index, content_hash, w = write_index(store, work)
    objects_written += w
    unchanged = prev is not None and prev.get("content_hash") == content_hash
    counts = {
        "sections": index["sections"]["count"], "tickets": index["tickets"]["count"], "new_tickets": new_tickets,
        "updated_tickets": updated_tickets, "new_verified_tickets": new_verified, "quarantined": quarantined.count,
        "read": sum(r.read for r in reports), "stored": sum(r.stored for r in reports),
        "redactions": dict(sum((r.redactions for r in reports), Counter())),
        "replaced_bytes": sum(r.replaced_bytes for r in reports),
        "truncated": sum(r.truncated for r in reports),
    }
    if unchanged:
        snapshot_id = prev_id
    else:
        snapshot_id = sha256(f"{content_hash}:{prev_id or ''}".encode())[:20]
        manifest = {
            "format": 2, "snapshot_id": snapshot_id, "previous": prev_id, "content_hash": content_hash,
            "created": format_time(dt.datetime.now(dt.UTC)),
            "sources": [{"path": r.path, "sha256": r.sha256, "bytes": r.bytes, "read": r.read, "stored": r.stored,
                         "quarantined": r.quarantined} for r in reports],
            "counts": counts, "quarantine": q_digests, "index": index,
        }
        store.write_manifest(manifest)
        store.set_latest(snapshot_id)
    return {
        "snapshot_id": snapshot_id, "previous": prev_id, "unchanged": unchanged,
        "new_verified_tickets": new_verified,
        "store": store.description, "sources": [r.to_dict() for r in reports],
        "skipped_files": skipped, "counts": counts, "objects_written": objects_written,
        "bytes_read": sum(r.bytes for r in reports), "quarantine": q_digests, "quarantined": quarantined.sample,
        "seconds": time.perf_counter() - t0,
    }


def iter_records(store: Store, manifest: dict[str, Any], kind: str, chunk: int = 5000) -> Iterator[list[dict]]:
    """The records of one kind of a snapshot in id order, ``chunk`` at a time (memory: the id -> hash
    index plus one chunk of records, not the whole table)."""
    index = read_index(store, manifest, kind)
    ids = sorted(index)
    for i in range(0, len(ids), chunk):
        part = ids[i:i + chunk]
        digests = [index[k] if kind == "sections" else index[k][0] for k in part]
        objs = store.get_json_objects(digests)
        yield [objs[d] for d in digests]


def load_snapshot(store: Store, snapshot: str = "latest") -> tuple[dict[str, Any], list[dict], list[dict]]:
    """(manifest, sections, tickets) of a snapshot, records in id order (every record in memory)."""
    man = store.read_manifest(snapshot)
    sec_index, tick_index = read_index(store, man, "sections"), read_index(store, man, "tickets")
    sec_objs = store.get_json_objects(sec_index.values())
    tick_objs = store.get_json_objects(v[0] for v in tick_index.values())
    sections = [sec_objs[sec_index[k]] for k in sorted(sec_index)]
    tickets = [tick_objs[tick_index[k][0]] for k in sorted(tick_index)]
    return man, sections, tickets


def format_report(rep: dict[str, Any]) -> str:
    """A short human summary of an ingest report."""
    lines = [f"snapshot {rep['snapshot_id']} ({'unchanged' if rep['unchanged'] else 'new'}; previous "
             f"{rep['previous']}) in {rep['store']}: {rep['counts']['sections']} sections, "
             f"{rep['counts']['tickets']} tickets, {rep['objects_written']} objects written"]
    for s in rep["sources"]:
        reasons = "; ".join(f"{k} x{v}" for k, v in s["reasons"].items())
        lines.append(f"  {s['path']}: read {s['read']} = stored {s['stored']} + quarantined {s['quarantined']}"
                     + (f" [{reasons}]" if reasons else "")
                     + (f" replaced_bytes={s['replaced_bytes']}" if s["replaced_bytes"] else "")
                     + (f" truncated={s['truncated']}" if s["truncated"] else "")
                     + (f" redactions={s['redactions']}" if s["redactions"] else ""))
    for f in rep["skipped_files"]:
        lines.append(f"  skipped (unsupported suffix): {f}")
    return "\n".join(lines)
