"""Format readers of the ingest: manual files -> sections, ticket exports (JSONL, CSV) -> tickets.

Each reader fills a :class:`SourceReport` (``read``, ``quarantined``, reasons; ``stored`` is set by the
ingest after duplicates are resolved) and hands refused records, with their place in the file and a
reason, to the caller. Nothing here writes to the store; rlsd.data.ingest turns what these readers
yield into a snapshot.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime as dt
import io
import json
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from rlsd.config import IngestConfig
from rlsd.data.redact import Redactor
from rlsd.data.store import file_sha256, sha256

MANUAL_SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html",
                   ".txt": "text", ".text": "text", ".pdf": "pdf"}
TICKET_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
ANSWER_TYPES = ("numeric", "label", "json", "expression")

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
    records: int = -1  # ticket exports: records counted by count_records, a pass independent of the parser

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["reasons"] = dict(sorted(self.reasons.items()))
        d["redactions"] = dict(sorted(self.redactions.items()))
        return d

    @property
    def reconciled(self) -> bool:
        return self.read == self.stored + self.quarantined



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


class _Sections:
    """Sections under a heading path. A heading with nothing under it is an empty section and leaves no section,
    except a ``keep_if_bare`` heading that the next heading replaces (a sibling or a heading above it follows at
    once) or that ends the text: it becomes a section holding its own title, so its words are kept. Plain text's numbered headings are
    such: a list "1 Open the panel" / "2 Click Save" reads as numbered headings, and the first item was lost."""

    def __init__(self) -> None:
        self.out: list[tuple[list[str], str]] = []
        self.path: list[str] = []
        self.buf: list[str] = []
        self.bare = False  # the last heading of the path is keep_if_bare and has had no text yet

    def flush(self) -> None:
        body = "\n".join(self.buf).strip()
        if body:
            self.out.append((list(self.path), body))
            self.bare = False
        self.buf.clear()

    def heading(self, level: int, title: str, *, keep_if_bare: bool = False) -> None:
        self.flush()
        if self.bare and len(self.path) >= level:  # the bare heading leaves the path
            self.out.append((list(self.path), self.path[-1]))
        self.path[:] = self.path[: level - 1] + [title]
        self.bare = keep_if_bare

    def end(self) -> list[tuple[list[str], str]]:
        self.flush()  # a last heading with nothing under it is an empty section ("# Only a heading": no text) ...
        if self.bare:  # ... unless it is keep_if_bare: "1 A\n2 B\n3 C" keeps "3 C"
            self.out.append((list(self.path), self.path[-1]))
        return self.out


def _split_markdown(text: str) -> list[tuple[list[str], str]]:
    sec = _Sections()
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        m = None if fenced else _ATX.match(line)
        if m:
            sec.heading(len(m.group(1)), m.group(2) or "untitled")
        else:
            sec.buf.append(line)
    return sec.end()


def _split_plain(text: str) -> list[tuple[list[str], str]]:
    """Plain text: setext headings (a line underlined with === or ---) and numbered headings
    (``2.1 Tunnel limits``; the depth is the number of parts)."""
    lines = text.splitlines()
    sec = _Sections()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        nxt = lines[i + 1].rstrip() if i + 1 < len(lines) else ""
        if line.strip() and _SETEXT.match(nxt) and len(nxt.strip()) >= 3:
            sec.heading(1 if nxt.strip()[0] == "=" else 2, line.strip())
            i += 2
            continue
        m = _NUMBERED.match(line.strip())
        if m and not line.strip().endswith("."):
            sec.heading(m.group(1).count(".") + 1, line.strip(), keep_if_bare=True)
            i += 1
            continue
        sec.buf.append(line)
        i += 1
    return sec.end()


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
        elif re.fullmatch(r"h[1-6]", tag) and not self.skip:  # a heading inside <nav> is skipped with it
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


_CONTROL = re.compile(r"[\x01-\x08\x0b\x0e-\x1f\x7f]")


def binary_reason(raw: bytes, text: str, replaced: int) -> str:
    """Why a file named as text is binary, judged by its content ('' when it is text): any NUL byte, more
    than 10% of its bytes not UTF-8, or more than 10% control characters."""
    if nul := raw.count(b"\x00"):
        return f"binary content: {nul} NUL bytes in {len(raw)} (a binary file, or UTF-16 text; save it as UTF-8)"
    if raw and replaced / len(raw) > 0.10:
        return f"binary content: {replaced} of {len(raw)} bytes are not UTF-8"
    if text and (ctl := len(_CONTROL.findall(text))) / len(text) > 0.10:
        return f"binary content: {ctl} of {len(text)} characters are control characters"
    return ""


def parse_manual(path: str | Path, *, cfg: IngestConfig, redactor: Redactor, doc_id: str | None = None,
                 source: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], SourceReport]:
    """One manual file -> (sections, quarantined, report). A file that yields no text, or a PDF that
    cannot be read, is one quarantined record. ``source``: the name recorded for the file (an s3:// URI
    when ``path`` is a local copy of a store object); default ``path``."""
    p = Path(path)
    fmt = MANUAL_SUFFIXES.get(p.suffix.lower(), "unsupported")
    size = p.stat().st_size
    too_big = size > cfg.max_manual_bytes
    raw = b"" if too_big else p.read_bytes()
    rep = SourceReport(path=redactor.redact(source or str(p))[0], kind="manual", format=fmt,
                       sha256="" if too_big else sha256(raw), bytes=size)
    doc_id = doc_id or slug(redactor.redact(p.stem)[0])
    quarantined: list[dict[str, Any]] = []

    def quarantine(reason: str, where: str = "file") -> tuple[list, list, SourceReport]:
        rep.read += 1
        rep.quarantined += 1
        rec, counts = quarantine_entry(redactor, rep.path, where, doc_id, reason)
        rep.reasons[_reason_key(rec["reason"])] += 1
        rep.redactions.update(counts)
        quarantined.append(rec)
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
            if why := binary_reason(raw, text, rep.replaced_bytes):
                return quarantine(why)
            parts = {"markdown": _split_markdown, "html": _split_html, "text": _split_plain}[fmt](text)
    except RecursionError as e:
        return quarantine(f"unparseable {fmt}: {e}")
    if not parts:
        return quarantine("no text: the file holds no section with text")
    redacted = []  # redacted before the cut: a secret across a part boundary is not cut in half and half kept
    for heading_path, body in parts:
        body, counts = redactor.redact(body)
        rep.redactions.update(counts)
        redacted.append((heading_path, body))
    parts = _cap_sections(redacted, cfg.max_section_chars)
    sections, seen = [], Counter()
    for heading_path, body in parts:
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
    n_body = len(body)
    if n_body > cfg.max_body_chars and cfg.long_body == "refuse":
        raise ValueError(f"body too long: {n_body} chars > ingest.max_body_chars={cfg.max_body_chars} "
                         "(set ingest.long_body=truncate to keep it truncated)")
    counts: Counter = Counter()
    fields = {}
    # redacted before the cut: a secret across ingest.max_body_chars is not cut in half and half kept
    for name, value in (("title", _as_text(rec.get("title")).strip()), ("body", body[: cfg.max_body_chars + 4096]),
                        ("resolution", _as_text(rec.get("resolution")).strip()), ("answer", answer),
                        ("status", _as_text(rec.get("status")).strip().lower())):
        fields[name], c = redactor.redact(value)
        counts.update(c)
    if n_body > cfg.max_body_chars:
        notes.append(f"body truncated from {n_body} to {cfg.max_body_chars} chars (ingest.max_body_chars)")
        fields["body"], truncated = fields["body"][: cfg.max_body_chars], True
    tid, c = redactor.redact_id(tid)
    counts.update(c)
    links = []
    for link in _as_links(rec.get("links")):
        link, c = redactor.redact(link)
        counts.update(c)
        links.append(link)
    ticket = {
        "id": tid,
        "created": format_time(created) if created else format_time(updated),
        "updated": format_time(updated),
        "title": fields["title"],
        "body": fields["body"],
        "status": fields["status"],
        "resolution": fields["resolution"],
        "resolution_verified": verified,
        "links": links,
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


class _CRLines:
    """``readline(size)`` over a binary file whose lines end in a bare ``\\r`` (the classic Mac line end, still
    written by Excel's "CSV (Macintosh)"): a binary file's own readline splits at ``\\n`` only, and such a
    file would read as one line. Memory: one 1 MiB read plus the line being cut."""

    def __init__(self, fh: Any) -> None:
        self.fh, self.buf, self.pos = fh, b"", 0

    def readline(self, size: int = -1) -> bytes:
        while True:
            end = len(self.buf) if size < 0 else min(len(self.buf), self.pos + size)
            i = self.buf.find(b"\r", self.pos, end)
            if i >= 0 or end - self.pos == size:
                stop = i + 1 if i >= 0 else end
                line, self.pos = self.buf[self.pos:stop], stop
                return line
            chunk = self.fh.read(1 << 20)
            if not chunk:
                line, self.buf, self.pos = self.buf[self.pos:], b"", 0
                return line
            self.buf, self.pos = self.buf[self.pos:] + chunk, 0


def _line_source(fh: Any, limit: int) -> Any:
    """``fh`` itself, or a :class:`_CRLines` over it when its first ``limit`` bytes hold a ``\\r`` and no
    ``\\n`` (a file with bare-CR line ends). Mixed files keep ``\\n`` as their line end: a bare ``\\r`` inside
    one of their records is that record's own business (the csv module refuses it, it is quarantined)."""
    pos = fh.tell()
    head = fh.read(limit + 1)
    fh.seek(pos)
    return _CRLines(fh) if b"\r" in head and b"\n" not in head else fh


def _iter_lines(fh: Any, limit: int) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, line bytes or None when longer than ``limit``, length) of a binary file; an over-long
    line is skipped in 1 MiB reads, so memory stays bounded by ``limit`` whatever the file holds. Lines end
    in ``\\n`` (``\\r\\n`` too), or in a bare ``\\r`` in a file that has no ``\\n`` (:func:`_line_source`)."""
    n = 0
    src = _line_source(fh, limit)
    eol = (b"\r",) if isinstance(src, _CRLines) else (b"\n",)
    while line := src.readline(limit + 1):
        n += 1
        if len(line) > limit and not line.endswith(eol):
            size = len(line)
            while (more := src.readline(1 << 20)) and not more.endswith(eol):
                size += len(more)
            yield n, None, size + len(more)
            continue
        yield n, line, len(line)


def _too_long(n: int, size: int, limit: int) -> str:
    return (f"line too long: line {n} has {size} bytes > ingest.max_ticket_line_bytes={limit} "
            "(fix the export, or raise ingest.max_ticket_line_bytes)")


def _where(first: int, last: int) -> str:
    return f"line {first}" if first == last else f"lines {first}-{last}"


# ----------------------------------------------------------------------------------------------
# CSV record boundaries (quote-aware, with recovery from a stray quote)
# ----------------------------------------------------------------------------------------------


@dataclass
class CsvSpan:
    """One CSV record as physical lines ``first..last`` (1-based). ``lines`` is None for a line over the
    limit; ``damage`` is the reason when the span cannot be a record (it is quarantined whole)."""

    first: int
    last: int
    lines: list[str] | None
    damage: str = ""
    size: int = 0

    @property
    def blank(self) -> bool:
        return self.lines is not None and not self.damage and not "".join(self.lines).strip()


def _scan_line(text: str, inq: bool, fields: int) -> tuple[bool, int, bool]:
    """Walk one physical line with the csv module's quoting rules (a quote opens a field only at its start;
    ``""`` inside is a quote; a quote closes before a comma or the line end). Returns (still inside quotes at
    the line end, fields so far, whether a closing quote was followed by other text)."""
    i, n, bad = 0, len(text.rstrip("\r\n")), False
    at_start = not inq
    while i < n:
        if inq:
            j = text.find('"', i, n)
            if j < 0:
                return True, fields, bad
            if j + 1 < n and text[j + 1] == '"':
                i = j + 2
                continue
            inq = False
            i = j + 1
            if i < n and text[i] != ",":
                bad = True  # `"abc"def`: the csv module keeps going; a stray quote often looks like this
            at_start = False
            continue
        if at_start and text[i] == '"':
            inq, at_start = True, False
            i += 1
            continue
        j = text.find(",", i, n)
        if j < 0:
            break
        fields += 1
        i, at_start = j + 1, True
    return inq, fields, bad


def _swallowed(lines: list[str], header_fields: int) -> bool:
    """Whether one of ``lines`` (the lines a quoted field ran over), read on its own, is a whole record: as
    many fields as the header and its quotes closed. A stray quote that takes in the records after it
    looks like that; the second line of a quoted paragraph does not."""
    for line in lines:
        inq, fields, _ = _scan_line(line, False, 1)
        if not inq and fields == header_fields:
            return True
    return False


def csv_spans(fh: Any, limit: int, decode: Callable[[int, bytes], str]) -> Iterator[CsvSpan]:
    """Split a CSV export into record spans without the csv module (which, on a quote that never closes,
    swallows the rest of the file into one field). A record ends at a line end outside quotes. A record
    that runs over several lines is accepted only when its quotes close cleanly, it stays within ``limit``
    bytes and it has as many fields as the header; otherwise the stray quote is taken to open on the
    record's first line: that one line becomes a damaged span, and reading resumes at the next line (the
    lines read ahead are read again, so a good record after the stray quote is not lost). Memory: one record of at
    most ``limit`` bytes (the lines read ahead are kept to be read again)."""
    src = _iter_lines(fh, limit)
    back: list[tuple[int, str | None, int]] = []  # lines read ahead, to be scanned again (a stack, reversed)
    header_fields: int | None = None

    def nxt() -> tuple[int, str | None, int] | None:
        if back:
            return back.pop()
        for n, line, size in src:
            return n, (None if line is None else decode(n, line)), size
        return None

    while (item := nxt()) is not None:
        n, text, size = item
        if text is None:
            yield CsvSpan(n, n, None, _too_long(n, size, limit), size)
            continue
        lines, total = [text], size
        inq, fields, bad = _scan_line(text, False, 1)
        damaged = ""
        last = n
        while inq:
            item = nxt()
            if item is None:
                damaged = "end of file"
                break
            m, t2, s2 = item
            if t2 is None or total + s2 > limit:
                back.append(item)
                damaged = (f"line {m} too long" if t2 is None else
                           f"over ingest.max_ticket_line_bytes={limit} bytes")
                break
            lines.append(t2)
            total += s2
            last = m
            inq, fields, b2 = _scan_line(t2, inq, fields)
            bad = bad or b2
        if not damaged and len(lines) > 1:
            if bad:
                damaged = "a closing quote followed by text"
            elif header_fields is not None and fields != header_fields and (
                    fields > header_fields or _swallowed(lines[1:], header_fields)):
                # fewer fields than the header is a short row, as on one line (exports leave trailing empty
                # columns out), unless a line the quote took in reads as a whole record on its own
                damaged = f"{fields} fields where the header has {header_fields}"
        if damaged and len(lines) > 1:
            for k in range(len(lines) - 1, 0, -1):  # push back the lines after the damaged first line
                back.append((n + k, lines[k], len(lines[k].encode("utf-8", "surrogatepass"))))
            yield CsvSpan(n, n, lines[:1],
                          f"stray quote: a quoted field opened on line {n} does not close cleanly "
                          f"({damaged}); line {n} quarantined, reading resumes at line {n + 1}",
                          len(lines[0]))
            continue
        if damaged:  # a one-line record whose quote never closes before the end of the file or a long line
            yield CsvSpan(n, n, lines, f"stray quote: a quoted field opened on line {n} never closes ({damaged})",
                          total)
            continue
        if header_fields is None and "".join(lines).strip():
            header_fields = fields
        yield CsvSpan(n, last, lines, "", total)


# Byte order marks of the wide Unicode encodings (UTF-32 first: its LE mark begins with UTF-16's)
_WIDE_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
              (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


@contextlib.contextmanager
def open_export(path: str | Path) -> Iterator[Any]:
    """A ticket export opened for reading as UTF-8 bytes. A UTF-16 or UTF-32 file with its byte order mark (a
    "Unicode" export of Excel or PowerShell) is transcoded, 1 MiB at a time, into a temporary file first: read
    as bytes, its every other byte is NUL and its line ends are two bytes wide, and each record was quarantined
    (or the CSV had "no usable header"). A sequence that is not valid in its encoding becomes U+FFFD."""
    with Path(path).open("rb") as fh:
        head = fh.read(4)
        enc = next(((bom, e) for bom, e in _WIDE_BOMS if head.startswith(bom)), None)
        if enc is None:
            fh.seek(0)
            yield fh
            return
        fh.seek(len(enc[0]))
        dec = codecs.getincrementaldecoder(enc[1])(errors="replace")
        with tempfile.TemporaryFile() as out:
            while chunk := fh.read(1 << 20):
                out.write(dec.decode(chunk).encode("utf-8", "surrogatepass"))
            out.write(dec.decode(b"", final=True).encode("utf-8", "surrogatepass"))
            out.seek(0)
            yield out


def count_records(path: str | Path, fmt: str, limit: int) -> int:
    """The number of records of a ticket export, counted by a pass of its own that does not use the
    record parser (json / the csv module): JSONL, every line that is not blank (a line over ``limit``
    counts as one); CSV, every non-blank span of :func:`csv_spans` after the header. The ingest checks
    ``read == this == stored + quarantined`` per file."""
    with open_export(path) as fh:
        if fmt == "jsonl":
            total = 0
            for n, line, _ in _iter_lines(fh, limit):
                if line is None:
                    total += 1
                    continue
                if n == 1 and line.startswith(b"\xef\xbb\xbf"):
                    line = line[3:]
                total += bool(decode_text(line)[0].strip())
            return total
        if fmt != "csv":
            return 0
        # every physical line must fall in exactly one span, in order: a splitter that skipped or repeated
        # a line fails here instead of losing a record quietly
        records, last = 0, 0
        for span in csv_spans(fh, limit, lambda n, b: decode_text(b[3:] if n == 1 and b.startswith(
                b"\xef\xbb\xbf") else b)[0]):
            if span.first != last + 1 or span.last < span.first:
                raise ValueError(f"CSV record spans are not contiguous: lines {span.first}-{span.last} after line "
                                 f"{last} (a bug in rlsd's CSV splitter)")
            last = span.last
            records += not span.blank
        fh.seek(0)
        lines = sum(1 for _ in _iter_lines(fh, limit))
        if last != lines:
            raise ValueError(f"CSV record spans cover {last} of {lines} lines (a bug in rlsd's CSV splitter)")
        return max(0, records - 1)


def _id_hint(header: list[str], lines: list[str] | None) -> str:
    """The id column of a damaged CSV record's first line, read with its quotes dropped (best effort)."""
    if not lines:
        return ""
    try:
        row = next(csv.reader([lines[0].replace('"', "").rstrip("\r\n")]), [])
    except csv.Error:
        return ""
    for i, name in enumerate(header):
        if _ALIAS.get(re.sub(r"[\s.\-]+", "_", str(name).strip().lower().lstrip("\ufeff"))) == "id" and i < len(row):
            return row[i].strip()
    return ""


def _iter_raw_tickets(fh: Any, fmt: str, limit: int, rep: SourceReport
                      ) -> Iterator[tuple[str, dict[str, Any] | None, str, str, str]]:
    """Yields (where, raw record or None, raw text, error reason, id of a refused record when it can be told),
    reading one line (JSONL) or one record
    span (CSV) at a time; undecodable bytes are replaced and counted in ``rep.replaced_bytes``."""

    def text_of(n: int, line: bytes) -> str:
        if n == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        t, bad = decode_text(line)
        rep.replaced_bytes += bad
        return t

    if fmt == "jsonl":
        for n, line, size in _iter_lines(fh, limit):
            if line is None:
                yield f"line {n}", None, "", _too_long(n, size, limit), ""
                continue
            text = text_of(n, line).rstrip("\r\n")
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                yield f"line {n}", None, text, f"invalid JSON: {e.msg} at column {e.colno}", ""
                continue
            except RecursionError:
                yield f"line {n}", None, text, "invalid JSON: nested too deeply", ""
                continue
            if not isinstance(obj, dict):
                yield f"line {n}", None, text, f"not a JSON object: {type(obj).__name__}", ""
                continue
            yield f"line {n}", obj, text, "", ""
        return
    header: list[str] | None = None
    header_where, header_why = "", ""
    for span in csv_spans(fh, limit, text_of):
        if span.blank:
            continue
        where = _where(span.first, span.last)
        raw = "".join(span.lines or [])
        if header is None and not header_where:  # the header is not a record (count_records agrees)
            header_where = where
            if not span.damage:
                try:
                    rows = list(csv.reader(span.lines or []))
                    header = rows[0] if len(rows) == 1 else None
                except csv.Error as e:
                    header_why = f"malformed CSV: {e}"
            header_why = header_why or span.damage or "not one CSV row"
            continue
        if header is None:  # every record is quarantined: nothing to map its fields to
            yield where, None, raw, f"no usable CSV header: the header at {header_where} is unreadable ({header_why})", ""
            continue
        if span.damage:
            yield where, None, raw, span.damage, _id_hint(header, span.lines)
            continue
        try:
            rows = list(csv.reader(span.lines or []))
        except csv.Error as e:
            yield where, None, raw, f"malformed CSV: {e}", _id_hint(header, span.lines)
            continue
        if len(rows) != 1:
            yield where, None, raw, f"malformed CSV: {len(rows)} rows in one record span", ""
            continue
        row = rows[0]
        if not any(c.strip() for c in row):
            yield where, None, raw, "empty row: every field is blank", ""
            continue
        if len(row) > len(header):
            yield where, None, raw, f"row has {len(row)} fields, header has {len(header)}", _id_hint(header, span.lines)
            continue
        rec = dict(zip(header, row + [""] * (len(header) - len(row))))
        yield where, rec, raw, "", ""


def quarantine_entry(redactor: Redactor, source: str, where: str, rid: str, reason: str, raw: str | None = None
                     ) -> tuple[dict[str, Any], Counter]:
    """A quarantine record with every free-text field redacted: the reason (it may quote a value), the raw
    text (redacted first, then cut to 2,000 characters, so a secret is never cut in half and left) and the
    id (a keyed hash when it holds personal data). ``source`` is the report's path, redacted once per file
    (SourceReport.path); ``where`` is written by the readers (a line range, a section id of redacted text)."""
    counts: Counter = Counter()
    red, c = redactor.redact_repeated(reason)
    counts.update(c)
    rec: dict[str, Any] = {"source": source[:1000], "where": where[:200], "reason": red[:500]}
    rid_red, c = redactor.redact_id(rid[:1000]) if rid else ("", Counter())
    counts.update(c)
    rec["id"] = rid_red[:200]
    if raw is not None:
        red, c = redactor.redact(raw[:8000])
        counts.update(c)
        rec["raw"] = red[:2000]
    return rec, counts


def iter_tickets(path: str | Path, *, cfg: IngestConfig, redactor: Redactor, rep: SourceReport,
                 quarantined: list[dict[str, Any]] | Any) -> Iterator[tuple[dict[str, Any], str]]:
    """Stream one export: yields (ticket, where) and appends refused records to ``quarantined`` and counts to
    ``rep`` (``rep.stored`` is filled in later, after duplicates are resolved). Memory is bounded by one record."""
    p = Path(path)

    def refuse(where: str, rid: str, reason: str, raw: str | None) -> None:
        rep.quarantined += 1
        rec, counts = quarantine_entry(redactor, rep.path, where, rid, reason, raw)
        rep.reasons[_reason_key(rec["reason"])] += 1
        rep.redactions.update(counts)
        quarantined.append(rec)

    if rep.format == "unsupported":
        rep.read = 1
        refuse("file", "", f"unsupported ticket format: suffix {p.suffix!r}; use one of {sorted(TICKET_SUFFIXES)}",
               None)
        return
    unknown_cols: set[str] = set()
    with open_export(p) as fh:
        for where, rec, raw_text, err, rid in _iter_raw_tickets(fh, rep.format, cfg.max_ticket_line_bytes, rep):
            rep.read += 1
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
            refuse(where, rid, err, raw_text)
    rep.unknown_columns = sorted(redactor.redact(c)[0][:200] for c in unknown_cols)


def ticket_report(path: str | Path, redactor: Redactor | None = None) -> SourceReport:
    p = Path(path)
    name = redactor.redact(str(p))[0] if redactor else str(p)
    return SourceReport(path=name, kind="tickets", format=TICKET_SUFFIXES.get(p.suffix.lower(), "unsupported"),
                        sha256=file_sha256(p), bytes=p.stat().st_size)


def parse_tickets(path: str | Path, *, cfg: IngestConfig, redactor: Redactor
                  ) -> tuple[list[tuple[dict[str, Any], str]], list[dict[str, Any]], SourceReport]:
    """One export -> ([(ticket, where)], quarantined, report) in memory (see :func:`iter_tickets` to stream).
    ``report.stored`` is filled in later (after duplicates are resolved across files and against the store);
    ``report.records`` is the independent count of :func:`count_records`."""
    rep = ticket_report(path, redactor)
    quarantined: list[dict[str, Any]] = []
    tickets = list(iter_tickets(path, cfg=cfg, redactor=redactor, rep=rep, quarantined=quarantined))
    if rep.format != "unsupported":
        rep.records = count_records(path, rep.format, cfg.max_ticket_line_bytes)
    return tickets, quarantined, rep
