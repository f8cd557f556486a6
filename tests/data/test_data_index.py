"""The sharded record index of a snapshot (rlsd.data.index): prefix growth, incremental shard writes,
the on-disk work index, reading format-1 manifests, and a corrupt shard refused."""

import hashlib
import json

import pytest

from rlsd.config import load_config
from rlsd.data import index as idx
from rlsd.data.ingest import ingest, load_snapshot
from rlsd.data.store import LocalStore, StoreError, canonical_json


def _tickets(path, ids, updated="2024-03-01T10:00:00Z", title="t"):
    with open(path, "w") as f:
        f.writelines(json.dumps({"id": f"T-{i}", "updated": updated, "title": f"{title}{i}", "body": f"question {i}",
                                "status": "resolved", "resolution": f"r{i}", "resolution_verified": False,
                                "answer": str(i), "answer_type": "numeric"}) + "\n" for i in ids)
    return path


def test_shard_chars_by_hand():
    t = idx.SHARD_TARGET
    assert [idx.shard_chars(n) for n in (0, 1, t, t + 1, 16 * t, 16 * t + 1, 256 * t + 1)] == [0, 0, 0, 1, 1, 2, 3]
    assert idx.id_hash("T-1") == hashlib.sha256(b"T-1").hexdigest()[:8]


def test_micros_orders_like_datetimes_exactly():
    import datetime as dt

    a = dt.datetime(2024, 3, 1, 10, 0, 0, 1, tzinfo=dt.UTC)
    b = dt.datetime(2024, 3, 1, 10, 0, 0, 2, tzinfo=dt.UTC)
    assert idx.micros(b) - idx.micros(a) == 1 and idx.micros(dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=dt.UTC)) == 10**6


def test_shards_grow_and_only_changed_shards_are_written(tmp_path, monkeypatch):
    monkeypatch.setattr(idx, "SHARD_TARGET", 8)  # 100 tickets -> 16 shards of ~6
    st, cfg = LocalStore(tmp_path / "st"), load_config()
    r1 = ingest(cfg, tickets=[_tickets(tmp_path / "a.jsonl", range(100))], store=st)
    m1 = st.read_manifest()
    shards1 = m1["index"]["tickets"]["shards"]
    assert m1["format"] == 2 and m1["index"]["tickets"]["shard_chars"] == 1 and m1["index"]["tickets"]["count"] == 100
    expected_prefixes = {idx.id_hash(f"T-{i}")[0] for i in range(100)}
    assert set(shards1) == expected_prefixes and r1["objects_written"] == 100 + len(expected_prefixes)
    # each shard holds exactly its prefix's ids
    for p, d in shards1.items():
        assert set(json.loads(st.get_object(d))) == {f"T-{i}" for i in range(100) if idx.id_hash(f"T-{i}")[0] == p}
    # change one ticket: one record object and one shard are new; every other shard keeps its hash
    r2 = ingest(cfg, tickets=[_tickets(tmp_path / "b.jsonl", [7], updated="2024-04-01T00:00:00Z", title="new")],
                store=st)
    shards2 = st.read_manifest()["index"]["tickets"]["shards"]
    changed = {p for p in shards1 if shards1[p] != shards2[p]}
    assert r2["objects_written"] == 2 and changed == {idx.id_hash("T-7")[0]} and set(shards2) == set(shards1)
    _, _, tickets = load_snapshot(st)
    assert [t["id"] for t in tickets] == sorted(f"T-{i}" for i in range(100))
    assert next(t for t in tickets if t["id"] == "T-7")["title"] == "new7"
    # the same content again: unchanged, nothing written
    r3 = ingest(cfg, tickets=[tmp_path / "b.jsonl"], store=st)
    assert r3["unchanged"] and r3["objects_written"] == 0


def test_format1_manifest_is_still_read_and_built_upon(tmp_path):
    st, cfg = LocalStore(tmp_path / "st"), load_config()
    t = {"id": "OLD-1", "updated": "2024-01-01T00:00:00Z", "title": "old", "body": "b", "status": "resolved",
         "resolution": "r", "resolution_verified": True, "links": [], "answer": "1", "answer_type": "numeric",
         "created": "2024-01-01T00:00:00Z", "notes": []}
    d, _ = st.put_object(canonical_json(t))
    st.write_manifest({"format": 1, "snapshot_id": "old", "previous": None, "content_hash": "x", "counts": {},
                       "sections": {}, "tickets": {"OLD-1": [d, t["updated"]]}})
    st.set_latest("old")
    assert [x["id"] for x in load_snapshot(st)[2]] == ["OLD-1"]
    r = ingest(cfg, tickets=[_tickets(tmp_path / "a.jsonl", range(3))], store=st)
    assert r["previous"] == "old" and r["counts"]["tickets"] == 4 and r["counts"]["new_tickets"] == 3
    assert [x["id"] for x in load_snapshot(st)[2]] == ["OLD-1", "T-0", "T-1", "T-2"]


def test_shard_with_an_id_outside_its_prefix_is_refused(tmp_path):
    st = LocalStore(tmp_path / "st")
    rid = "T-1"
    wrong = "0" if idx.id_hash(rid)[0] != "0" else "1"
    d, _ = st.put_object(canonical_json({rid: "a" * 64}))
    man = {"format": 2, "index": {"sections": {"shards": {wrong: d}}, "tickets": {"shards": {}}}}
    with pytest.raises(StoreError, match="outside its prefix"):
        list(idx.iter_index(st, man, "sections"))


def test_work_index_replaces_a_document_and_nothing_else(tmp_path):
    with idx.WorkIndex(tmp_path) as w:
        w.replace_document("guide", [("guide/a", "1"), ("guide/b", "2"), ("guide", "0")])
        w.replace_document("guide-2", [("guide-2/a", "3")])  # shares a prefix with "guide", not a document
        w.replace_document("guide", [("guide/c", "4")])
        rows = dict(w.db.execute("SELECT id, digest FROM sections").fetchall())
        assert rows == {"guide/c": "4", "guide-2/a": "3"}
        folder = list(tmp_path.iterdir())
        assert len(folder) == 1 and (folder[0] / "index.sqlite").exists()
    assert list(tmp_path.iterdir()) == []  # the scratch folder is removed
