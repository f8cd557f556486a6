"""Store contract over LocalStore and S3Store (a real SeaweedFS server), idempotence, commit order,
and the failure modes: wrong credentials, server down, bucket missing."""

import json
import time
import uuid

import pytest
from tests.data.conftest import s3_cfg
from tests.s3server import S3Server

from rlsd.config import StoreConfig, load_config
from rlsd.data.ingest import ingest, load_snapshot
from rlsd.data.store import (
    LocalStore,
    S3Store,
    StoreAuthError,
    StoreNotFound,
    StoreUnavailable,
    open_store,
    sha256,
)


def _tickets(path, ids, updated="2024-03-01T10:00:00Z"):
    with open(path, "w") as f:
        f.writelines(json.dumps({"id": f"T-{i}", "updated": updated, "title": f"t{i}", "body": f"question {i}",
                                "status": "resolved", "resolution": f"r{i}", "resolution_verified": True,
                                "answer": str(i), "answer_type": "numeric"}) + "\n" for i in ids)
    return path


def test_contract_objects_and_manifests(store):
    d, written = store.put_object(b'{"a":1}')
    assert d == sha256(b'{"a":1}') and written
    assert store.put_object(b'{"a":1}') == (d, False)
    assert store.get_object(d) == b'{"a":1}'
    assert store.object_count() == 1
    with pytest.raises(StoreNotFound):
        store.get_object("0" * 64)
    assert store.latest() is None
    with pytest.raises(StoreNotFound, match="no snapshot yet"):
        store.read_manifest("latest")
    store.write_manifest({"snapshot_id": "s1", "x": 1})
    store.set_latest("s1")
    assert store.latest() == "s1" and store.read_manifest()["x"] == 1 and store.list_snapshots() == ["s1"]
    with pytest.raises(StoreNotFound, match="snapshot 'nope' does not exist"):
        store.read_manifest("nope")


def test_idempotent_and_incremental(store, tmp_path):
    cfg = load_config()
    man = tmp_path / "m.md"
    man.write_text("# Guide\n## A\nalpha text\n## B\nbeta text\n")
    full = _tickets(tmp_path / "t.jsonl", range(100))
    r1 = ingest(cfg, manuals=[man], tickets=[full], store=store)
    n1 = store.object_count()
    assert r1["objects_written"] == n1 == 102 + 2 and not r1["unchanged"]  # records + one index shard per kind
    r2 = ingest(cfg, manuals=[man], tickets=[full], store=store)
    assert r2["unchanged"] and r2["snapshot_id"] == r1["snapshot_id"] and r2["objects_written"] == 0
    assert store.object_count() == n1 and store.list_snapshots() == [r1["snapshot_id"]]
    # +10 tickets: exactly their 10 objects, the new ticket index shard and one manifest.
    new = _tickets(tmp_path / "new.jsonl", range(100, 110))
    r3 = ingest(cfg, tickets=[new], store=store)
    assert r3["objects_written"] == 11 and store.object_count() == n1 + 11
    assert r3["previous"] == r1["snapshot_id"] and len(store.list_snapshots()) == 2
    m3, sections, tickets = load_snapshot(store)
    assert len(tickets) == 110 and len(sections) == 2 and m3["counts"]["new_tickets"] == 10
    assert r1["new_verified_tickets"] == 100 and r2["new_verified_tickets"] == 0 and r3["new_verified_tickets"] == 10
    # the old snapshot is still readable as it was
    assert len(load_snapshot(store, r1["snapshot_id"])[2]) == 100


class _FailingStore(LocalStore):
    """Fails the n-th object write (a crash part-way through an ingest)."""

    def __init__(self, root, fail_at):
        super().__init__(root)
        self.n, self.fail_at = 0, fail_at

    def _put(self, key, data):
        if key.startswith("objects/"):
            self.n += 1
            if self.n == self.fail_at:
                raise StoreUnavailable("simulated outage")
        super()._put(key, data)


def test_failed_ingest_leaves_no_visible_snapshot(tmp_path):
    cfg = load_config()
    st = _FailingStore(tmp_path / "st", fail_at=10**9)
    r1 = ingest(cfg, tickets=[_tickets(tmp_path / "a.jsonl", range(20))], store=st)
    st.n, st.fail_at = 0, 5
    with pytest.raises(StoreUnavailable):
        ingest(cfg, tickets=[_tickets(tmp_path / "b.jsonl", range(20, 40))], store=st)
    assert st.latest() == r1["snapshot_id"] and st.list_snapshots() == [r1["snapshot_id"]]
    assert len(load_snapshot(st)[2]) == 20


@pytest.mark.integration
def test_s3_wrong_credentials_is_a_clear_error(s3_env, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    t0 = time.monotonic()
    with pytest.raises(StoreAuthError, match="AWS_ACCESS_KEY_ID"):
        S3Store(s3_cfg(s3_env, retries=3))
    assert time.monotonic() - t0 < 5  # refused credentials are not retried


@pytest.mark.integration
def test_s3_missing_credentials(monkeypatch, s3_server):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(StoreAuthError, match="no credentials in the environment"):
        open_store(s3_cfg(s3_server))
    monkeypatch.setenv("MINIO_ACCESS_KEY", s3_server.access_key)
    monkeypatch.setenv("MINIO_SECRET_KEY", s3_server.secret_key)
    assert open_store(s3_cfg(s3_server)).latest() is None  # the MinIO names work too


@pytest.mark.integration
def test_s3_bucket_created_when_missing(s3_env):
    bucket = f"fresh-{uuid.uuid4().hex[:8]}"
    st = S3Store(s3_cfg(s3_env, bucket=bucket))
    assert st.client.bucket_exists(bucket)


@pytest.mark.integration
def test_s3_server_down_bounded_retries(s3_env):
    from tests.s3server import free_ports

    cfg = StoreConfig(backend="s3", endpoint=f"127.0.0.1:{free_ports(1)[0]}", bucket="rlsd", retries=3)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable, match="failed after 3 tries"):
        S3Store(cfg)
    assert time.monotonic() - t0 < 10


@pytest.mark.integration
def test_s3_outage_between_ingests_writes_no_snapshot(tmp_path, monkeypatch):
    """A real server stops; the next ingest fails after bounded retries; after a restart the store
    holds exactly the first snapshot."""
    with S3Server(tmp_path / "weed") as srv:
        for k, v in srv.env().items():
            monkeypatch.setenv(k, v)
        cfg = s3_cfg(srv, bucket="outage", retries=2)
        st = S3Store(cfg)
        r1 = ingest(load_config(), tickets=[_tickets(tmp_path / "a.jsonl", range(5))], store=st)
        srv.stop()
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable, match="failed after 2 tries"):
            ingest(load_config(), tickets=[_tickets(tmp_path / "b.jsonl", range(5, 10))], store=st)
        assert time.monotonic() - t0 < 30  # 2 tries per call, fast refusals
        srv.start()
        st2 = S3Store(s3_cfg(srv, bucket="outage", retries=5))
        deadline = time.monotonic() + 60  # a just-restarted filer may answer 404 or 500 for a while on a busy machine
        while time.monotonic() < deadline:
            try:
                if st2.latest() is not None:
                    break
            except StoreUnavailable:
                pass
            time.sleep(0.5)
        assert st2.latest() == r1["snapshot_id"] and st2.list_snapshots() == [r1["snapshot_id"]]


def test_test_s3_server_refuses_a_nearly_full_disk_with_a_clear_error(tmp_path, monkeypatch):
    """At 0.6% free, SeaweedFS made every write an InternalError and 20 tests failed as if the store were broken;
    the harness now says what is wrong before it starts the server."""
    from collections import namedtuple

    from tests import s3server

    Usage = namedtuple("Usage", "total used free")
    total = 252 * 2**30
    monkeypatch.setattr(s3server.shutil, "disk_usage", lambda p: Usage(total, total - int(1.5 * 2**30), int(1.5 * 2**30)))
    with pytest.raises(RuntimeError, match=r"only 1\.5 GiB free .*\(0\.6% of 252 GiB\).*free at least 1\.3 GiB"):
        s3server.check_free_disk(tmp_path)
    # 1% of the disk plus a quarter GiB is enough; a small disk needs 1 GiB whatever its percentage
    monkeypatch.setattr(s3server.shutil, "disk_usage", lambda p: Usage(total, 0, int(0.01 * total) + 2**28))
    s3server.check_free_disk(tmp_path)
    monkeypatch.setattr(s3server.shutil, "disk_usage", lambda p: Usage(10 * 2**30, 0, 2**29))
    with pytest.raises(RuntimeError, match=r"\(5\.0% of 10 GiB\).*free at least 0\.5 GiB"):
        s3server.check_free_disk(tmp_path)
