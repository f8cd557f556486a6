"""A snapshot's record index (record id -> object hash), sharded in the store and worked on from disk.

A snapshot manifest (format 2) does not list its records itself. For each kind (``sections``,
``tickets``) it names shard objects: a shard holds the entries whose ``sha256(id)`` starts with the
shard's prefix, as canonical JSON (``{id: digest}`` for sections, ``{id: [digest, updated]}`` for
tickets), stored content-addressed like every record. The prefix length grows with the record count
(one shard up to :data:`SHARD_TARGET` records, then 16, 256, ...), so a shard stays a few hundred KB at
most and an ingest that changes a few tickets writes a few new shards; the others keep their hashes.
Format-1 manifests (the whole index inline, written before 2026-11-26) are still read.

:class:`WorkIndex` is the working copy an ingest builds its new index in: a SQLite file in a
temporary folder, so an ingest's memory does not grow with the number of records in the store or in
its input. Departure from a git tree: shards are keyed by hash prefix, not by path, because record ids
(ticket numbers) are dense and arrive in bursts; hashing spreads them evenly.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlsd.data.store import Store, StoreError, canonical_json, sha256

KINDS = ("sections", "tickets")
SHARD_TARGET = 4096  # records per shard before the prefix grows by one hex digit (16x more shards)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def shard_chars(n: int) -> int:
    """Hex digits of the shard prefix for n records: 0 (one shard) while n <= SHARD_TARGET, then +1 per 16x."""
    k = 0
    while n > SHARD_TARGET * 16 ** k:
        k += 1
    return k


def id_hash(record_id: str) -> str:
    return hashlib.sha256(record_id.encode("utf-8")).hexdigest()[:8]


def micros(t: dt.datetime) -> int:
    """Exact integer microseconds since the epoch of an aware datetime (orders like the datetimes). Stored
    ``updated`` values are ingest's normalised UTC ISO-8601 strings, which ``fromisoformat`` reads."""
    return (t - _EPOCH) // dt.timedelta(microseconds=1)


def iter_index(store: Store, manifest: dict[str, Any], kind: str) -> Iterator[tuple[str, Any]]:
    """(id, entry) of every record of ``kind`` in a snapshot, one shard in memory at a time (shard order,
    not id order). The entry is a digest (sections) or [digest, updated] (tickets)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if manifest.get("format", 1) == 1:
        yield from manifest[kind].items()
        return
    for prefix, digest in sorted(manifest["index"][kind]["shards"].items()):
        shard = json.loads(store.get_object(digest))
        for rid, entry in shard.items():
            if not id_hash(rid).startswith(prefix):
                raise StoreError(f"{store.description}: shard {digest[:12]}... of {kind} holds id {rid!r} outside "
                                 f"its prefix {prefix!r} (a corrupt manifest); re-ingest into a new store")
            yield rid, entry


def read_index(store: Store, manifest: dict[str, Any], kind: str) -> dict[str, Any]:
    """The whole {id: entry} map of one kind (O(records) memory: for readers that need every record)."""
    return dict(iter_index(store, manifest, kind))


class WorkIndex:
    """An ingest's working index on disk: the previous snapshot's records, this ingest's changes, the
    per-ticket winners across export files, and the set of object digests known to exist.

    Tables (SQLite, WITHOUT ROWID, in a temporary folder deleted by :meth:`close`):
      sections(id, h, digest)                          the index being built
      tickets(id, h, digest, updated, ts)              the index being built (ts: microseconds of updated)
      winners(id, seq, digest, updated, ts, src, at, verified)  the latest version of each ticket id read
      known(digest)                                    objects referenced by the previous snapshot
    """

    def __init__(self, folder: str | Path | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="rlsd-ingest-", dir=folder)
        self.db = sqlite3.connect(Path(self._tmp.name) / "index.sqlite")
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "temp_store=FILE", "cache_size=-16384"):
            self.db.execute(f"PRAGMA {pragma}")  # a scratch file: no journal, 16 MB page cache
        self.db.executescript("""
            CREATE TABLE sections(id TEXT PRIMARY KEY, h TEXT NOT NULL, digest TEXT NOT NULL) WITHOUT ROWID;
            CREATE TABLE tickets(id TEXT PRIMARY KEY, h TEXT NOT NULL, digest TEXT NOT NULL, updated TEXT NOT NULL,
                                 ts INTEGER NOT NULL) WITHOUT ROWID;
            CREATE TABLE winners(id TEXT PRIMARY KEY, seq INTEGER NOT NULL, digest TEXT NOT NULL,
                                 updated TEXT NOT NULL, ts INTEGER NOT NULL, src INTEGER NOT NULL,
                                 at TEXT NOT NULL, verified INTEGER NOT NULL) WITHOUT ROWID;
            CREATE TABLE known(digest TEXT PRIMARY KEY) WITHOUT ROWID;
        """)
        self._seq = 0

    @property
    def folder(self) -> Path:
        """The scratch folder (deleted by :meth:`close`); other scratch files of the ingest go here too."""
        return Path(self._tmp.name)

    def close(self) -> None:
        self.db.close()
        self._tmp.cleanup()

    def __enter__(self) -> WorkIndex:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the previous snapshot ---------------------------------------------------------------------
    def load_previous(self, store: Store, manifest: dict[str, Any]) -> None:
        """Copy a snapshot's index in, one shard at a time; its record and shard digests become known."""
        if manifest.get("format", 1) >= 2:
            self.db.executemany("INSERT OR IGNORE INTO known VALUES (?)",
                                [(d,) for k in KINDS for d in manifest["index"][k]["shards"].values()])
        for rid, d in iter_index(store, manifest, "sections"):
            self.db.execute("INSERT INTO sections VALUES (?, ?, ?)", (rid, id_hash(rid), d))
            self.db.execute("INSERT OR IGNORE INTO known VALUES (?)", (d,))
        for rid, (d, updated) in iter_index(store, manifest, "tickets"):
            self.db.execute("INSERT INTO tickets VALUES (?, ?, ?, ?, ?)",
                            (rid, id_hash(rid), d, updated, micros(dt.datetime.fromisoformat(updated))))
            self.db.execute("INSERT OR IGNORE INTO known VALUES (?)", (d,))

    def __contains__(self, digest: object) -> bool:
        """Whether an object is referenced by the previous snapshot (so it exists in the store)."""
        return self.db.execute("SELECT 1 FROM known WHERE digest = ?", (digest,)).fetchone() is not None

    # -- sections ------------------------------------------------------------------------------------
    def replace_document(self, doc: str, sections: list[tuple[str, str]]) -> None:
        """Drop every section of document ``doc`` (id ``doc`` or ``doc/...``) and add (id, digest) pairs."""
        # ids under doc/ sort in [doc + "/", doc + "0"): "0" is the character after "/"
        self.db.execute("DELETE FROM sections WHERE id = ? OR (id >= ? AND id < ?)", (doc, doc + "/", doc + "0"))
        self.db.executemany("INSERT OR REPLACE INTO sections VALUES (?, ?, ?)",
                            [(rid, id_hash(rid), d) for rid, d in sections])

    # -- tickets -------------------------------------------------------------------------------------
    def stored_ticket(self, tid: str) -> tuple[str, str, int] | None:
        """(digest, updated, ts) of ticket ``tid`` in the index being built (the previous snapshot's until
        :meth:`put_ticket` replaces it), or None."""
        return self.db.execute("SELECT digest, updated, ts FROM tickets WHERE id = ?", (tid,)).fetchone()

    def winner(self, tid: str) -> tuple[str, str, int, int, str] | None:
        """(digest, updated, ts, src, at) of the version of ``tid`` that currently wins in this ingest."""
        return self.db.execute("SELECT digest, updated, ts, src, at FROM winners WHERE id = ?", (tid,)).fetchone()

    def set_winner(self, tid: str, digest: str, updated: str, ts: int, src: int, at: str, verified: bool) -> None:
        # an upsert: a replaced winner keeps its seq, its place in the order ids were first seen
        self._seq += 1
        self.db.execute("""INSERT INTO winners VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET
                           digest = excluded.digest, updated = excluded.updated, ts = excluded.ts,
                           src = excluded.src, at = excluded.at, verified = excluded.verified""",
                        (tid, self._seq, digest, updated, ts, src, at, int(verified)))

    def winners_against_stored(self) -> Iterator[tuple]:
        """(id, digest, updated, ts, src, at, verified, stored_updated, stored_ts, stored_digest) per winner, in the order
        ids were first read; stored_* are None for a ticket new to the store. Materialised in a table
        first, so the caller may write to the index while iterating."""
        self.db.execute("DROP TABLE IF EXISTS resolved")
        self.db.execute("""CREATE TABLE resolved AS SELECT w.seq, w.id, w.digest, w.updated, w.ts, w.src, w.at,
                           w.verified, t.updated AS s_updated, t.ts AS s_ts, t.digest AS s_digest
                           FROM winners w LEFT JOIN tickets t ON t.id = w.id""")
        yield from self.db.execute("""SELECT id, digest, updated, ts, src, at, verified, s_updated, s_ts, s_digest
                                      FROM resolved ORDER BY seq""")

    def put_ticket(self, tid: str, digest: str, updated: str, ts: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO tickets VALUES (?, ?, ?, ?, ?)", (tid, id_hash(tid), digest, updated, ts))

    # -- the new index -------------------------------------------------------------------------------
    def count(self, kind: str) -> int:
        return self.db.execute(f"SELECT count(*) FROM {self._table(kind)}").fetchone()[0]

    def shards(self, kind: str) -> Iterator[tuple[str, bytes]]:
        """(prefix, canonical JSON bytes) of every non-empty shard of the index being built, in prefix order;
        one shard in memory at a time."""
        k = shard_chars(self.count(kind))
        cols = "id, h, digest" + (", updated" if kind == "tickets" else "")
        prefix, shard = None, {}
        for row in self.db.execute(f"SELECT {cols} FROM {self._table(kind)} ORDER BY h, id"):
            p = row[1][:k]
            if p != prefix and shard:
                yield prefix, canonical_json(shard)
                shard = {}
            prefix = p
            shard[row[0]] = row[2] if kind == "sections" else [row[2], row[3]]
        if shard:
            yield prefix, canonical_json(shard)

    @staticmethod
    def _table(kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        return kind


def write_index(store: Store, work: WorkIndex) -> tuple[dict[str, Any], str, int]:
    """Write the shards of both kinds; returns (manifest ``index`` entry, content hash, objects written).
    The content hash is a function of the records only (each shard is named by its bytes)."""
    index: dict[str, Any] = {}
    written = 0
    for kind in KINDS:
        shards: dict[str, str] = {}
        for prefix, data in work.shards(kind):
            digest = sha256(data)
            if digest not in work:  # an unchanged shard of the previous snapshot is not even looked up
                written += store.put_object(data)[1]
            shards[prefix] = digest
        index[kind] = {"count": work.count(kind), "shard_chars": shard_chars(work.count(kind)), "shards": shards}
    content_hash = sha256(canonical_json({k: index[k]["shards"] for k in KINDS}))
    return index, content_hash, written
