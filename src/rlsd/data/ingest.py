"""Ingest manuals and ticket exports into the store as one new immutable snapshot.

Manuals (Markdown, HTML, plain text, PDF through pypdf) become addressable **sections**::

    {"id": "<doc_id>/<heading-slug>/<subheading-slug>", "doc_id", "heading_path": [...], "text", "checksum"}

Tickets (JSONL or CSV exports) become **tickets**::

    {"id", "created", "updated" (ISO-8601 UTC), "title", "body", "status", "resolution",
     "resolution_verified" (bool), "links" ([section ids]), "answer", "answer_type"
     ("numeric" | "label" | "json" | ""), "notes" ([what ingest changed: truncation, bad bytes]),
     "supersedes" (only on a same-time edit: the digest of the version it replaces)}

The format readers (manuals, JSONL and CSV exports) live in rlsd.data.readers; this module turns what
they yield into a snapshot.

**No record lost.** Every source file reconciles, checked in code before anything visible is written:
records read by the parser == records counted by an independent pass over the file
(readers.count_records: non-blank lines of a JSONL file; for CSV the record spans of a quote-aware
splitter that does not use the csv module) == stored + quarantined. A file that does not reconcile fails
the ingest with IngestError and no manifest is written. Each quarantined record carries its file, line
or line range, the id when it can be told, the raw text (redacted) and a reason. A stray CSV quote (a
field that opens a quote that never closes) costs the line range of its own record, quarantined as
``stray quote``; reading resumes at the next line (readers.csv_spans). Messy exports are expected: a
UTF-8 BOM, UTF-16 or UTF-32 with a byte order mark (transcoded, readers.open_export), CRLF or bare-CR line
ends, quoted newlines, extra or reordered columns and header aliases (``ticket_id``,
``subject``, ``description``...), bytes that are not UTF-8 (replaced by U+FFFD and counted), bodies over
``ingest.max_body_chars`` (truncated with a note, or quarantined with ``long_body: refuse``).

**Versions by content, not by time alone.** The same ticket id in several exports or already in the
store: the latest ``updated`` wins (ties: the later file), the others are quarantined as superseded.
The same id and ``updated`` with other content (compared by the SHA-256 of the normalised record) is an
edit: with ``ingest.same_time_edit: new_version`` (default) it is stored as a new version whose record
names the object it replaces (``"supersedes": <digest>``; ingesting the same edit again changes
nothing, and the replaced version read again from an old export is quarantined as older than the stored
one: the stored version's lineage names it), with ``conflict`` it is quarantined as a conflict and the stored version stands. Never
ignored, never counted as stored when dropped. An update is incremental: a snapshot is the previous
one plus what this ingest adds; a manual that is ingested again replaces all of its sections.

**Every quarantine on record.** An ingest whose records equal the previous snapshot's (``unchanged``)
but that quarantined something or skipped a file still writes a snapshot: same index and
``content_hash``, ``records_unchanged: true``, its own ``quarantine`` chunks and ``skipped`` files, and
``previous`` set, so every quarantine chunk of every ingest is named by a manifest reachable from
``refs/latest``. Only an ingest that brings nothing at all writes nothing.

**The retraining gate.** The report's ``untrained_verified_tickets`` (what the pipeline's gate compares with
``platform.min_new_tickets``) counts the verified tickets new or updated since the snapshot the newest completed
training of ``registry.model_name`` learned from (``refs/trained/<name>``, written by the register step), not
the ones new in this ingest: a run that failed after its ingest leaves them counted for the next one.

**Manuals folders.** A symlink is followed only when its resolved target lies inside the named folder's
resolved path; one that leaves it (file or folder) is refused and recorded as a quarantined source of
format ``symlink``, its target never read. A file with a text suffix whose content is binary (NUL bytes,
>10% bytes not UTF-8, >10% control characters) is quarantined. Files of an unsupported type found in a
folder are listed in the manifest (``skipped``: path, SHA-256, bytes).

Redaction (rlsd.data.redact) runs on every text field before anything is hashed or stored: ticket
bodies, titles, resolutions, answers, statuses and links, section texts and headings, document ids,
source paths, quarantine reasons and raw text, column names; a ticket id that holds personal data becomes
a keyed hash. The report and its printed form are built from the redacted values only.

Memory is bounded whatever the input size: ticket exports are read one record at a time (a line over
``ingest.max_ticket_line_bytes`` is quarantined, skipped in 1 MiB reads), a manual over
``ingest.max_manual_bytes`` is quarantined unread, and objects are written in batches of
``FLUSH_BYTES`` / ``FLUSH_OBJECTS`` as files are parsed; what stays in memory is one file's sections, one
write batch and the first records of the quarantine (all of them are spooled to a scratch file and stored
in chunks). The record index (id -> object hash, for the store's
previous snapshot and for this ingest's winners) lives in a SQLite file in a temporary folder and is
written as sharded objects (rlsd.data.index), so memory does not grow with the number of records.
The index shards, the manifest and ``refs/latest`` are written last, so an ingest that fails leaves
only unreferenced objects.

**Store prefixes and the inbox** (rlsd.data.inbox). A source may be ``s3://<bucket>/<prefix>/``; with no
sources at all the configured inbox (``store.inbox``) is read. Such sources are checked and listed before the
store is opened (a malformed URI, a missing bucket or refused credentials: InboxError, nothing written); their
objects are streamed into a scratch folder and read by the same readers, recorded in the manifest under their
s3:// URI. They are incremental: a file whose SHA-256 a snapshot reachable from ``refs/latest`` already records
is left out unparsed (``already_ingested`` in the report), and an inbox with nothing new writes nothing and
returns the latest snapshot with 0 new tickets. Explicitly named local paths are read as before.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rlsd.config import RLSDConfig
from rlsd.data.inbox import fetch, ingested_hashes, resolve_sources
from rlsd.data.index import WorkIndex, micros, read_index, write_index
from rlsd.data.readers import (  # noqa: F401  (re-exported: the readers' public names lived here before)
    ANSWER_TYPES,
    FIELD_ALIASES,
    MANUAL_SUFFIXES,
    TICKET_SUFFIXES,
    SourceReport,
    _reason_key,
    count_records,
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
from rlsd.data.redact import Redactor, id_hash_key_from_env
from rlsd.data.store import Store, StoreNotFound, canonical_json, file_sha256, open_store, sha256

FLUSH_BYTES = 16 * 1024 * 1024  # write the object batch when it holds this many bytes ...
FLUSH_OBJECTS = 4096  # ... or this many objects
QUARANTINE_SAMPLE = 1000  # quarantined records listed in the ingest report (all of them go to the store)
QUARANTINE_CHUNK = 2000  # quarantined records per store object


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



# ----------------------------------------------------------------------------------------------
# The ingest
# ----------------------------------------------------------------------------------------------


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _expand(paths: Iterable[str | Path], suffixes: dict[str, str]
            ) -> tuple[list[Path], list[Path], list[tuple[Path, str]]]:
    """Files named directly, plus supported files under named folders; returns (files, skipped: files of an
    unsupported type found in a folder, refused: (path, reason) of symlinks that leave their folder).

    In a folder a symlink is followed only when its resolved target lies inside the folder's resolved path
    (folders reached through a symlink are not walked; their files inside the folder are found through
    their real path). A file named directly is the operator's choice and is read wherever it points."""
    files, skipped, refused = [], [], []
    for p in map(Path, paths):
        if p.is_dir():
            root = p.resolve()
            for f in sorted(p.rglob("*")):
                if f.is_symlink():
                    target = f.resolve()
                    if not _inside(target, root):
                        refused.append((f, f"symlink refused: it points outside the folder {str(p)!r} "
                                           f"(to {str(target)!r}); copy the file into the folder instead"))
                        continue
                    if not target.is_file():
                        continue
                elif not f.is_file():
                    continue
                (files.append(f) if f.suffix.lower() in suffixes else skipped.append(f))
        elif p.is_file():
            files.append(p)
        else:
            raise IngestError(f"input {str(p)!r} does not exist")
    return files, skipped, refused


def id_key(store: Store) -> bytes:
    """The key of the ids' keyed hash: $RLSD_ID_HASH_KEY, else a random key kept in the store (rlsd.data.redact)."""
    return id_hash_key_from_env() or store.named_key("id-hash")


def ingest(cfg: RLSDConfig, *, manuals: Iterable[str | Path] = (), tickets: Iterable[str | Path] = (),
           store: Store | None = None, progress: bool = False) -> dict[str, Any]:
    """Parse, redact and store manuals and ticket exports as a new snapshot on top of the latest one.

    Returns the ingest report: ``snapshot_id``, ``previous``, ``unchanged`` (True when the records equal
    the previous snapshot's), ``snapshot_written`` (False only when nothing at all is new: same records,
    nothing quarantined, no file skipped), ``sources`` (per-file reconciliation), ``counts``,
    ``objects_written``, ``quarantine`` (the hashes of the objects holding every quarantined record, in
    order, QUARANTINE_CHUNK per object; also in the manifest), ``quarantined`` (the first
    QUARANTINE_SAMPLE records; ``counts["quarantined"]`` is the total), ``skipped`` (files of an
    unsupported type found in folders, with their SHA-256; also in the manifest), ``already_ingested`` (store
    objects and inbox files left out unparsed because a snapshot already records their SHA-256), ``seconds``.

    Raises IngestError, with nothing visible written, when a file does not reconcile: its records read
    by the parser, its records counted by an independent pass over the file (readers.count_records) and
    its stored + quarantined records must be the same number.
    """
    t0 = time.perf_counter()
    # every source checked (and store prefixes listed) before the store is opened: bad input writes nothing
    sources = resolve_sources(cfg, manuals, tickets)
    manual_files, skipped_m, refused_m = _expand(sources.local["manuals"], MANUAL_SUFFIXES)
    ticket_files, skipped_t, refused_t = _expand(sources.local["tickets"], TICKET_SUFFIXES)
    if not sources.incremental and not manual_files and not ticket_files and not refused_m and not refused_t:
        skipped = skipped_m + skipped_t
        if skipped:  # folders were named, but hold nothing of a type that is read
            kinds = Counter(f.suffix.lower() or "(no suffix)" for f in skipped)
            raise IngestError(
                f"nothing to ingest: the named folders hold {len(skipped)} file(s), none of a type that is read "
                f"({', '.join(f'{k} x{n}' for k, n in sorted(kinds.items()))}, e.g. {str(skipped[0])!r}); manuals "
                f"are read from {', '.join(MANUAL_SUFFIXES)}, tickets from {', '.join(TICKET_SUFFIXES)}")
        raise IngestError("nothing to ingest: name manual files/folders (--manuals) and/or ticket exports (--tickets)")
    store = store or open_store(cfg.store)
    prev_id = store.latest()
    prev = store.read_manifest(prev_id) if prev_id else None
    with tempfile.TemporaryDirectory(prefix="rlsd-ingest-") as scratch:
        names: dict[Path, str] = {}
        already: list[dict[str, Any]] = []
        if sources.incremental:  # store objects and inbox files: only those no snapshot records yet
            known = ingested_hashes(store)
            for kind, suffixes, files, skipped in (("manuals", MANUAL_SUFFIXES, manual_files, skipped_m),
                                                   ("tickets", TICKET_SUFFIXES, ticket_files, skipped_t)):
                got, got_names, got_known = fetch(sources, kind, Path(scratch), known)
                names.update(got_names)
                already += got_known
                for f in got:
                    (files if f.suffix.lower() in suffixes else skipped).append(f)
        if not (manual_files or ticket_files or skipped_m or skipped_t or refused_m or refused_t):
            rep = _nothing_new(store, prev_id, prev, already, t0)
        else:
            redactor = Redactor.from_config(cfg.ingest, id_key=id_key(store) if cfg.ingest.redact else b"")
            with WorkIndex() as work:
                if prev:
                    work.load_previous(store, prev)
                rep = _ingest_into(cfg, store, work, prev_id, prev, manual_files, ticket_files,
                                   [(f, "manual") for f in skipped_m] + [(f, "tickets") for f in skipped_t],
                                   [(f, r, "manual") for f, r in refused_m] + [(f, r, "tickets") for f, r in refused_t],
                                   redactor, progress, t0, names)
    rep["already_ingested"] = already
    rep["untrained_verified_tickets"] = untrained_verified_tickets(store, cfg.registry.model_name)
    return rep


def untrained_verified_tickets(store: Store, model_name: str) -> int:
    """The retraining gate: verified tickets new or updated in the snapshots after the one the newest completed
    training of ``model_name`` learned from (``refs/trained/<model_name>``), summed along ``previous`` from
    ``refs/latest``; every snapshot's when none completed (or its snapshot is not in the chain).

    Counted from the last completed training, not from the last ingest: a run whose training, evaluation or
    registration failed (or an ingest step retried after its snapshot was committed) leaves its tickets counted
    for the next run, which would otherwise find 0 new tickets and never train on them."""
    trained, sid, seen, total = store.trained(model_name), store.latest(), set(), 0
    while sid and sid != trained and sid not in seen:
        seen.add(sid)
        man = store.read_manifest(sid)
        total += int(man.get("counts", {}).get("new_verified_tickets", 0))
        sid = man.get("previous")
    return total


def _nothing_new(store: Store, prev_id: str | None, prev: dict[str, Any] | None, already: list[dict[str, Any]],
                 t0: float) -> dict[str, Any]:
    """The report of an incremental ingest that found no new file: the latest snapshot stands, nothing written."""
    idx = (prev or {}).get("index", {})
    counts = {"sections": idx.get("sections", {}).get("count", 0), "tickets": idx.get("tickets", {}).get("count", 0),
              "new_tickets": 0, "updated_tickets": 0, "same_time_edits": 0, "new_verified_tickets": 0,
              "quarantined": 0, "read": 0, "stored": 0, "skipped_files": 0, "redactions": {}, "replaced_bytes": 0,
              "truncated": 0}
    return {"snapshot_id": prev_id, "previous": prev_id, "unchanged": True, "snapshot_written": False,
            "new_verified_tickets": 0, "store": store.description, "sources": [], "skipped_files": [], "skipped": [],
            "counts": counts, "objects_written": 0, "bytes_read": 0, "quarantine": [], "quarantined": [],
            "already_ingested": already, "seconds": time.perf_counter() - t0}


def _ingest_into(cfg: RLSDConfig, store: Store, work: WorkIndex, prev_id: str | None, prev: dict[str, Any] | None,
                 manual_files: list[Path], ticket_files: list[Path], skipped: list[tuple[Path, str]],
                 refused: list[tuple[Path, str, str]], redactor: Redactor, progress: bool, t0: float,
                 names: dict[Path, str] | None = None) -> dict[str, Any]:
    """``names``: the name to record for a local copy (its s3:// URI); other files are recorded by their path."""
    names = names or {}
    reports: list[SourceReport] = []
    quarantined = QuarantineSpool(work.folder)
    same_time_edit = cfg.ingest.same_time_edit
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

    def refuse(rep: SourceReport, where: str, tid: str, reason: str) -> None:
        rep.quarantined += 1
        rec, counts = quarantine_entry(redactor, rep.path, where, tid, reason)
        rep.reasons[_reason_key(rec["reason"])] += 1
        rep.redactions.update(counts)
        quarantined.append(rec)

    red_path = lambda f: redactor.redact(names.get(f, str(f)))[0]  # noqa: E731

    # -- symlinks that leave their folder: refused, each one a quarantined record of its own source --
    for f, reason, kind in refused:
        rep = SourceReport(path=red_path(f), kind=kind, format="symlink")
        rep.read = 1
        refuse(rep, "file", "", reason)
        reports.append(rep)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(manual_files) + len(ticket_files), desc="ingest", unit="file")

    # -- manuals: a re-ingested document replaces all of its sections ------------------------------
    doc_source: dict[str, str] = {}
    for f in manual_files:
        secs, q, rep = parse_manual(f, cfg=cfg.ingest, redactor=redactor, source=names.get(f))
        doc = secs[0]["doc_id"] if secs else slug(f.stem)
        if secs and doc in doc_source:
            reason = f"duplicate document id: {doc!r} already ingested from {doc_source[doc]} in this run; rename one file"
            rep.stored, rep.quarantined = 0, rep.read
            rep.reasons[_reason_key(reason)] += rep.read
            q += [quarantine_entry(redactor, rep.path, s["id"], s["id"], reason)[0] for s in secs]
            secs = []
        if secs:
            doc_source[doc] = rep.path
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
    # Versions are compared by content hash as well as by time: the same id and updated time with other
    # content is an edit (ingest.same_time_edit), never taken for the version already held.
    pending: dict[str, bytes] = {}  # digest -> bytes of winners not yet written
    for f in ticket_files:
        rep = ticket_report(f, redactor)
        if f in names:
            rep.path = red_path(f)
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
                if ts == o_ts and d != o_digest and same_time_edit == "conflict":
                    refuse(rep, where, tid, f"conflict: {tid!r} has the same updated time {updated} as "
                                            f"{reports[o_src].path} {o_where} but other content "
                                            "(ingest.same_time_edit=conflict; give the edit a newer updated time)")
                    continue
                newer = ts >= o_ts
                lwhere, lrep, lupd = (o_where, reports[o_src], o_updated) if newer else (where, rep, updated)
                wwhere, wrep, wupd = (where, rep, updated) if newer else (o_where, reports[o_src], o_updated)
                same = "identical content" if d == o_digest else "other content"
                refuse(lrep, lwhere, tid, f"duplicate id: {tid!r} superseded by {wrep.path} {wwhere} "
                                          f"(updated {wupd} vs {lupd}; {same})")
                if not newer:
                    continue
                pending.pop(o_digest, None)
            work.set_winner(tid, d, updated, ts, src, where, bool(ticket.get("resolution_verified")))
            stored = work.stored_ticket(tid)
            if stored is None or stored[2] < ts or (stored[2] == ts and stored[0] != d):
                pending[d] = b
                blob_bytes += len(b)
            if blob_bytes >= FLUSH_BYTES or len(pending) + len(blobs) >= FLUSH_OBJECTS:
                blobs.update(pending)
                pending.clear()
                flush()
        try:
            rep.records = 1 if rep.format == "unsupported" else count_records(f, rep.format,
                                                                               cfg.ingest.max_ticket_line_bytes)
        except ValueError as e:
            raise IngestError(f"{rep.path}: {e}; no snapshot was written") from None
        if bar:
            bar.update()
    if bar:
        bar.close()

    new_tickets = updated_tickets = new_verified = edited_same_time = 0
    for tid, d, updated, ts, src, where, verified, s_updated, s_ts, s_digest in work.winners_against_stored():
        rep = reports[src]
        if s_ts is not None:
            if ts < s_ts:
                refuse(rep, where, tid, f"older than stored version: {tid!r} updated {updated} < stored {s_updated}")
                continue
            if ts == s_ts:
                if d == s_digest:
                    rep.stored += 1  # the very version already stored
                    continue
                held = json.loads(store.get_object(s_digest))
                prior = held.pop("supersedes", None)
                if sha256(canonical_json(held)) == d:
                    rep.stored += 1  # the stored version is this content plus its lineage
                    pending.pop(d, None)
                    continue
                if prior and _in_lineage(store, prior, d):
                    pending.pop(d, None)  # an old export read again: the edit that replaced it stands
                    refuse(rep, where, tid, f"older than stored version: {tid!r} updated {updated} is a version "
                                            "that a later edit with the same updated time replaced (the stored "
                                            "version names it in its lineage)")
                    continue
                if same_time_edit == "conflict":
                    pending.pop(d, None)
                    refuse(rep, where, tid, f"conflict: {tid!r} has the same updated time {updated} as the stored "
                                            "version but other content (ingest.same_time_edit=conflict; give the "
                                            "edit a newer updated time)")
                    continue
                # a new version with lineage: the record names the object it replaces
                obj = json.loads(pending.pop(d) if d in pending else store.get_object(d))
                obj["supersedes"] = s_digest
                b = canonical_json(obj)
                d = sha256(b)
                pending[d] = b
                edited_same_time += 1
        work.put_ticket(tid, d, updated, ts)
        rep.stored += 1
        new_tickets += s_ts is None
        updated_tickets += s_ts is not None
        new_verified += verified  # new or updated, and verified: retraining material

    for rep in reports:  # a reader bug, never a silent drop: nothing visible is written
        if not rep.reconciled or (rep.records >= 0 and rep.records != rep.read):
            raise IngestError(
                f"{rep.path}: records do not reconcile: an independent count of record boundaries finds "
                f"{rep.records if rep.records >= 0 else 'n/a'}, the parser read {rep.read}, stored {rep.stored} + "
                f"quarantined {rep.quarantined} = {rep.stored + rep.quarantined}; no snapshot was written "
                "(this is a bug in rlsd's reader: report it with the file)")

    # -- the last objects, the index shards, then the manifest, then the pointer -------------------
    blobs.update(pending)
    pending.clear()
    flush()
    q_digests, w = quarantined.write(store)
    objects_written += w
    index, content_hash, w = write_index(store, work)
    objects_written += w
    skipped_entries = [{"path": red_path(f), "kind": kind, "sha256": file_sha256(f), "bytes": f.stat().st_size,
                        "reason": f"unsupported suffix {f.suffix!r}"} for f, kind in skipped]
    unchanged = prev is not None and prev.get("content_hash") == content_hash
    counts = {
        "sections": index["sections"]["count"], "tickets": index["tickets"]["count"], "new_tickets": new_tickets,
        "updated_tickets": updated_tickets, "same_time_edits": edited_same_time,
        "new_verified_tickets": new_verified, "quarantined": quarantined.count,
        "read": sum(r.read for r in reports), "stored": sum(r.stored for r in reports),
        "skipped_files": len(skipped_entries),
        "redactions": dict(sum((r.redactions for r in reports), Counter())),
        "replaced_bytes": sum(r.replaced_bytes for r in reports),
        "truncated": sum(r.truncated for r in reports),
    }
    # Same records but something quarantined or skipped: a snapshot is still written (its index is the
    # previous one's, its content_hash the same), so that every quarantine chunk and skipped file of every
    # ingest is named by a manifest reachable from refs/latest through `previous`.
    written = not unchanged or bool(q_digests) or bool(skipped_entries)
    if not written:
        snapshot_id = prev_id
    else:
        extra = "" if not unchanged else ":" + sha256(canonical_json([q_digests, skipped_entries]))
        snapshot_id = sha256(f"{content_hash}:{prev_id or ''}{extra}".encode())[:20]
        manifest = {
            "format": 2, "snapshot_id": snapshot_id, "previous": prev_id, "content_hash": content_hash,
            "records_unchanged": unchanged, "created": format_time(dt.datetime.now(dt.UTC)),
            "sources": [{"path": r.path, "kind": r.kind, "format": r.format, "sha256": r.sha256, "bytes": r.bytes,
                         "read": r.read, "stored": r.stored, "quarantined": r.quarantined} for r in reports],
            "skipped": skipped_entries, "counts": counts, "quarantine": q_digests, "index": index,
        }
        store.write_manifest(manifest)
        store.set_latest(snapshot_id)
    return {
        "snapshot_id": snapshot_id, "previous": prev_id, "unchanged": unchanged, "snapshot_written": written,
        "new_verified_tickets": new_verified,
        "store": store.description, "sources": [r.to_dict() for r in reports],
        "skipped_files": [e["path"] for e in skipped_entries], "skipped": skipped_entries, "counts": counts,
        "objects_written": objects_written,
        "bytes_read": sum(r.bytes for r in reports), "quarantine": q_digests, "quarantined": quarantined.sample,
        "seconds": time.perf_counter() - t0,
    }


def _in_lineage(store: Store, digest: str, content: str, depth: int = 64) -> bool:
    """Whether the version ``digest`` or one it supersedes (``depth`` steps back at most) holds ``content``
    (the SHA-256 of a normalised record without its ``supersedes``)."""
    for _ in range(depth):
        if digest == content:
            return True
        try:
            obj = json.loads(store.get_object(digest))
        except StoreNotFound:  # a broken chain: nothing further back to compare
            return False
        prior = obj.pop("supersedes", None)
        if sha256(canonical_json(obj)) == content:
            return True
        if not prior:
            return False
        digest = prior
    return False


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
    n = rep.get("untrained_verified_tickets")
    gate = "" if n is None else f"{n} verified tickets not yet trained on (the retraining gate)"
    if not rep["sources"] and not rep["snapshot_written"]:
        return (f"nothing new to ingest ({len(rep.get('already_ingested', []))} files already ingested); snapshot "
                f"{rep['snapshot_id'] or '(none yet)'} in {rep['store']} stands: {rep['counts']['sections']} sections, "
                f"{rep['counts']['tickets']} tickets, 0 new verified tickets" + (f"; {gate}" if gate else ""))
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
    if rep.get("already_ingested"):
        lines.append(f"  already ingested (same SHA-256 in an earlier snapshot), not read again: "
                     f"{len(rep['already_ingested'])} files")
    if gate:
        lines.append(f"  {gate}")
    return "\n".join(lines)
