"""Exact behaviour of the store and the record index that earlier tests left open, expected values worked out
by hand: a manifest without a ``format`` key read as format 1 (iter_index, load_snapshot,
WorkIndex.load_previous), the order of per-ticket winners, exact integer microseconds far from the epoch,
the error messages users read (an unknown kind, a corrupt shard or object, a missing snapshot, an empty
store), ``resolve()``'s default, LocalStore's in-flight temporary files (in the key's folder, never listed,
independent of the system temp folder, and a write whose folder vanishes reports the rename's own error),
a folder manifest's ``created`` stamp in UTC whatever the local time zone, record bytes as UTF-8 (not
``\\u`` escapes), folder names with capitals, and the number of reads a store has in flight (on the caller's
thread at parallelism 1, a pool from four objects, never more than its parallelism)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

from rlsd.data import index as idx
from rlsd.data.ingest import load_snapshot
from rlsd.data.store import LocalStore, StoreError, StoreNotFound, canonical_json


def H(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# ----------------------------------------------------------------------------------------------
# the record index
# ----------------------------------------------------------------------------------------------

TICKET = {"id": "OLD-1", "updated": "2024-01-01T00:00:00Z", "title": "old", "body": "b", "status": "resolved",
          "resolution": "r", "resolution_verified": True, "links": [], "answer": "1", "answer_type": "numeric",
          "created": "2024-01-01T00:00:00Z", "notes": []}
SECTION = {"id": "guide/intro", "doc": "guide", "title": "Intro", "text": "hello"}


def _formatless_store(tmp_path):
    """A store whose latest snapshot is an inline (format-1) manifest with no "format" key at all."""
    st = LocalStore(tmp_path / "st")
    dt_, _ = st.put_object(canonical_json(TICKET))
    ds, _ = st.put_object(canonical_json(SECTION))
    man = {"snapshot_id": "old", "previous": None, "content_hash": "x", "counts": {},
           "sections": {"guide/intro": ds}, "tickets": {"OLD-1": [dt_, TICKET["updated"]]}}
    st.write_manifest(man)
    st.set_latest("old")
    return st, man, ds, dt_


def test_a_manifest_without_a_format_key_is_read_as_format_1(tmp_path):
    st, man, ds, dt_ = _formatless_store(tmp_path)
    assert "format" not in st.read_manifest()
    assert list(idx.iter_index(st, man, "sections")) == [("guide/intro", ds)]
    assert list(idx.iter_index(st, man, "tickets")) == [("OLD-1", [dt_, "2024-01-01T00:00:00Z"])]
    m, sections, tickets = load_snapshot(st)
    assert m == man and sections == [SECTION] and tickets == [TICKET]
    with idx.WorkIndex(tmp_path) as w:
        w.load_previous(st, st.read_manifest())
        # 2024-01-01T00:00:00Z is 1704067200 s after the epoch
        assert w.stored_ticket("OLD-1") == (dt_, "2024-01-01T00:00:00Z", 1704067200 * 10**6)
        assert w.db.execute("SELECT id, digest FROM sections").fetchall() == [("guide/intro", ds)]
        assert dt_ in w and ds in w and H(b"other") not in w
        assert w.count("sections") == 1 and w.count("tickets") == 1


def test_unknown_kind_is_refused_with_the_kinds_named(tmp_path):
    st, man, _, _ = _formatless_store(tmp_path)
    with pytest.raises(ValueError) as e:
        list(idx.iter_index(st, man, "manuals"))
    assert str(e.value) == "kind must be one of ('sections', 'tickets'), got 'manuals'"


def test_a_corrupt_shard_is_named_by_its_first_12_hex_digits(tmp_path):
    st = LocalStore(tmp_path / "st")
    rid = "T-1"
    wrong = "0" if idx.id_hash(rid)[0] != "0" else "1"
    d, _ = st.put_object(canonical_json({rid: "a" * 64}))
    man = {"format": 2, "index": {"sections": {"shards": {wrong: d}}, "tickets": {"shards": {}}}}
    with pytest.raises(StoreError) as e:
        list(idx.iter_index(st, man, "sections"))
    assert str(e.value) == (f"{st.description}: shard {d[:12]}... of sections holds id 'T-1' outside its prefix "
                            f"{wrong!r} (a corrupt manifest); re-ingest into a new store")


def test_micros_is_exact_far_from_the_epoch():
    # 9999-12-31T23:59:59.999999Z: 253402300799 s (2932896 days * 86400 + 86399) and 999999 us;
    # beyond 2**53 a float could not hold it, nor tell it from the microsecond before
    last = dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)
    assert idx.micros(last) == 253402300799999999 and type(idx.micros(last)) is int
    assert idx.micros(last) - idx.micros(last - dt.timedelta(microseconds=1)) == 1
    assert idx.micros(dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)) == -1


def test_winners_come_back_in_the_order_ids_were_first_read(tmp_path):
    with idx.WorkIndex(tmp_path) as w:
        for tid in ("T-3", "T-1", "T-2"):
            w.set_winner(tid, f"d{tid}", "2024-01-01T00:00:00Z", 1, 0, "a.jsonl:1", False)
        # a replaced winner keeps its place
        w.set_winner("T-1", "dnew", "2024-02-01T00:00:00Z", 2, 1, "b.jsonl:7", True)
        assert [r[:7] for r in w.winners_against_stored()] == [
            ("T-3", "dT-3", "2024-01-01T00:00:00Z", 1, 0, "a.jsonl:1", 0),
            ("T-1", "dnew", "2024-02-01T00:00:00Z", 2, 1, "b.jsonl:7", 1),
            ("T-2", "dT-2", "2024-01-01T00:00:00Z", 1, 0, "a.jsonl:1", 0),
        ]


# ----------------------------------------------------------------------------------------------
# store messages and defaults
# ----------------------------------------------------------------------------------------------

def test_a_corrupt_object_tells_the_user_to_reingest(tmp_path):
    st = LocalStore(tmp_path / "st")
    d, _ = st.put_object(b"good")
    (st.root / "objects" / d[:2] / d).write_bytes(b"tampered")
    with pytest.raises(StoreError) as e:
        st.get_object(d)
    assert str(e.value) == (f"{st.description}: object {d} is corrupt (its bytes hash to {H(b'tampered')}); "
                            "re-ingest the source files to rewrite it")


def test_missing_snapshot_of_an_empty_store_lists_none_known(tmp_path):
    st = LocalStore(tmp_path / "st")
    with pytest.raises(StoreNotFound) as e:
        st.read_manifest("s1")
    assert str(e.value) == f"{st.description}: snapshot 's1' does not exist (known: none)"


def test_resolve_defaults_to_the_latest_snapshot(tmp_path):
    st = LocalStore(tmp_path / "st")
    with pytest.raises(StoreNotFound) as e:
        st.resolve()
    assert str(e.value) == f"{st.description} holds no snapshot yet; run `rlsd ingest` first"
    st.set_latest("abc")
    assert st.resolve() == "abc" and st.resolve("latest") == "abc" and st.resolve("xyz") == "xyz"


# ----------------------------------------------------------------------------------------------
# LocalStore writes
# ----------------------------------------------------------------------------------------------

def test_a_write_in_flight_is_a_hidden_file_in_the_keys_folder(tmp_path, monkeypatch):
    st = LocalStore(tmp_path / "st")
    d = H(b"payload")
    folder = st.root / "objects" / d[:2]
    seen = []
    real_replace = os.replace

    def replace(src, dst):
        # what another reader of the store sees just before the rename
        seen.append((Path(src).parent, Path(dst), sorted(p.name for p in folder.iterdir()), st.object_count(),
                     sorted(st._list("objects/"))))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    assert st.put_object(b"payload") == (d, True)
    [(src_parent, dst, names, count, listed)] = seen
    assert src_parent == folder and dst == folder / d
    assert len(names) == 1 and names[0].startswith(".tmp-") and names[0] != ".tmp-"
    assert count == 0 and listed == []
    assert sorted(p.name for p in folder.iterdir()) == [d] and st.object_count() == 1
    assert st.get_object(d) == b"payload"


def test_writes_do_not_use_the_system_temp_folder(tmp_path, monkeypatch):
    # $TMPDIR may be another filesystem (a rename across it is not atomic, or fails); here it does not exist
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-tmp"))
    st = LocalStore(tmp_path / "st")
    d, written = st.put_object(b"x")
    st.write_manifest({"snapshot_id": "s1"})
    st.set_latest("s1")
    assert written and st.get_object(d) == b"x" and st.read_manifest() == {"snapshot_id": "s1"}
    assert not (tmp_path / "no-such-tmp").exists()


def test_a_write_whose_folder_vanishes_reports_the_failed_rename(tmp_path, monkeypatch):
    st = LocalStore(tmp_path / "st")
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append((src, dst))
        shutil.rmtree(Path(src).parent)  # the store's folder removed by someone else mid-write
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(FileNotFoundError) as e:
        st._put("snapshots/s1.json", b"{}")
    [(src, dst)] = calls
    # the error is the rename's (it names the key being written), not one from cleaning up the temporary file
    assert e.value.filename == src and e.value.filename2 == str(st.root / "snapshots" / "s1.json") and dst == st.root / "snapshots" / "s1.json"
    assert e.value.__context__ is None
    assert sorted(p.relative_to(st.root).as_posix() for p in st.root.rglob("*")) == []


@pytest.fixture
def ist_time_zone(monkeypatch):
    """Local time 5:30 ahead of UTC (a POSIX TZ string: no tz database needed)."""
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_folder_created_stamp_is_utc_in_any_time_zone(tmp_path, ist_time_zone):
    assert time.localtime(0).tm_hour == 5 and time.localtime(0).tm_min == 30  # the zone is in effect
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"w")
    st = LocalStore(tmp_path / "st")
    created = st.upload_folder(tmp_path / "m", "model")["created"]
    t = dt.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert abs((dt.datetime.now(dt.UTC) - t).total_seconds()) < 120, created


def test_work_index_names_the_kinds_it_knows_when_given_another(tmp_path):
    with idx.WorkIndex(tmp_path) as w, pytest.raises(ValueError) as e:
        w.count("manuals")
    assert str(e.value) == f"kind must be one of {idx.KINDS}, got 'manuals'"


def test_put_objects_refuses_bytes_that_do_not_hash_to_their_name(tmp_path):
    store = LocalStore(tmp_path / "s")
    wrong = H(b"other")
    with pytest.raises(StoreError) as e:
        store.put_objects({wrong: b"payload"})
    assert str(e.value) == f"object bytes do not hash to their name {wrong[:12]}... (a bug in the caller)"
    assert store.put_objects({H(b"payload"): b"payload"}) == 1  # the right name is stored


def test_file_sha256_reads_a_large_file_in_blocks_of_at_most_one_mib(tmp_path, monkeypatch):
    # model shards are gigabytes: the digest is taken block by block, never with the whole file in memory
    from rlsd.data import store as store_mod

    data = os.urandom(1 << 20) * 2 + b"tail"  # 2 MiB + 4 bytes
    p = tmp_path / "shard.bin"
    p.write_bytes(data)
    sizes = []
    real_sha256 = hashlib.sha256

    class Recorder:
        def __init__(self):
            self.h = real_sha256()

        def update(self, block):
            sizes.append(len(block))
            self.h.update(block)

        def hexdigest(self):
            return self.h.hexdigest()

    monkeypatch.setattr(store_mod.hashlib, "sha256", Recorder)
    assert store_mod.file_sha256(p) == hashlib.new("sha256", data).hexdigest()
    assert sizes == [1 << 20, 1 << 20, 4]


# ----------------------------------------------------------------------------------------------
# record bytes, folder names, and how many requests a store has in flight
# ----------------------------------------------------------------------------------------------

def test_canonical_json_writes_non_ascii_text_as_utf8_not_escapes():
    # the bytes (and so the hash that names a record) of a ticket in German or Japanese: keys sorted, no
    # spaces, characters as UTF-8; "\\u00e9" escapes would give the same record another name
    got = canonical_json({"title": "Lüfter défectueux", "a": ["東京", 1]})
    assert got == '{"a":["東京",1],"title":"Lüfter défectueux"}'.encode("utf-8")
    assert b"\\u" not in got and len(got) == 48


def test_folder_names_with_capitals_are_accepted(tmp_path):
    # model folders are named after models: "SmolLM2-135M-Instruct", "Qwen2.5-0.5B"
    st = LocalStore(tmp_path / "store")
    src = tmp_path / "model"
    src.mkdir()
    (src / "config.json").write_text("{}")
    for name in ("SmolLM2-135M-Instruct", "Qwen2.5-0.5B", "A"):
        manifest = st.upload_folder(src, name)
        assert st.list_folders(name) == [manifest["folder_id"]]
        st.download_folder(name, tmp_path / f"out-{name}")
        assert (tmp_path / f"out-{name}" / "config.json").read_text() == "{}"


class _CountingStore(LocalStore):
    """A folder store that records, for each object read, the thread it ran on and how many reads overlapped."""

    def __init__(self, root, parallelism: int) -> None:
        super().__init__(root)
        self.parallelism = parallelism
        self._lock = threading.Lock()
        self.active = self.peak = 0
        self.threads: set[int] = set()

    def get_object(self, digest: str) -> bytes:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.threads.add(threading.get_ident())
        try:
            time.sleep(0.03)  # long enough that a pool submits the next read before this one ends
            return super().get_object(digest)
        finally:
            with self._lock:
                self.active -= 1


def _put_records(st, n):
    recs = [{"id": f"T-{i}", "n": i} for i in range(n)]
    ds = [st.put_object(canonical_json(r))[0] for r in recs]
    return ds, recs


def test_a_store_with_parallelism_one_reads_on_the_callers_thread_one_at_a_time(tmp_path):
    st = _CountingStore(tmp_path / "s", parallelism=1)
    ds, recs = _put_records(st, 8)
    assert st.get_json_objects(ds) == dict(zip(ds, recs))
    assert st.threads == {threading.get_ident()} and st.peak == 1


def test_a_store_reads_four_objects_in_parallel_up_to_its_parallelism(tmp_path):
    st = _CountingStore(tmp_path / "s", parallelism=2)
    ds, recs = _put_records(st, 4)  # four is the smallest batch worth a pool
    assert st.get_json_objects(ds) == dict(zip(ds, recs))
    assert threading.get_ident() not in st.threads
    assert st.peak == 2
    st3 = _CountingStore(tmp_path / "s", parallelism=2)
    assert st3.get_json_objects(ds[:3]) == dict(zip(ds[:3], recs[:3]))
    assert st3.threads == {threading.get_ident()}  # three reads are not worth a pool


def test_a_store_never_has_more_reads_in_flight_than_its_parallelism(tmp_path):
    # S3Store's connection pool holds `parallelism` connections: more threads than that would open and drop
    # extra connections (urllib3 "connection pool is full") on every batch
    for parallelism in (2, 3):
        st = _CountingStore(tmp_path / f"s{parallelism}", parallelism=parallelism)
        ds, recs = _put_records(st, 16)
        assert st.get_json_objects(ds) == dict(zip(ds, recs))
        assert st.peak == parallelism and len(st.threads) == parallelism
