"""Store faults: a real S3 server (SeaweedFS) stops in the MIDDLE of an ingest and of a model upload.

Bounded retries then a clear StoreUnavailable; no partial snapshot becomes visible; after a restart the
same call succeeds and the store holds exactly one new complete snapshot. (tests/data/test_data_store.py
covers an outage BETWEEN ingests, a dead endpoint, and a local store failing part-way.)
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from tests.helpers import warm_tiny_model
from tests.s3server import S3Server

from rlsd.config import StoreConfig, load_config
from rlsd.data.ingest import ingest, load_snapshot
from rlsd.data.store import LocalStore, S3Store, StoreError, StoreNotFound, StoreUnavailable


class _StopsServer(S3Store):
    """An S3Store that stops the real server right after its ``stop_after``-th object write."""

    def __init__(self, cfg: StoreConfig, server: S3Server, stop_after: int) -> None:
        super().__init__(cfg)
        self.server, self.stop_after, self.writes = server, stop_after, 0

    def _put(self, key: str, data: bytes) -> None:
        super()._put(key, data)
        if key.startswith("objects/"):
            self.writes += 1
            if self.writes == self.stop_after:
                self.server.stop()


@pytest.fixture
def server(tmp_path, monkeypatch):
    with S3Server(tmp_path / "weed") as srv:
        for k, v in srv.env().items():
            monkeypatch.setenv(k, v)
        yield srv


def _cfg(srv: S3Server, bucket: str, retries: int = 2) -> StoreConfig:
    return StoreConfig(backend="s3", endpoint=srv.endpoint, bucket=bucket, secure=False, retries=retries)


def _restart(srv: S3Server, bucket: str, ready) -> S3Store:
    srv.start()
    st = S3Store(_cfg(srv, bucket, retries=5))
    deadline = time.monotonic() + 20  # a just-restarted filer may answer 404 for a moment
    while not ready(st) and time.monotonic() < deadline:
        time.sleep(0.5)
    return st


def _tickets(path: Path, ids) -> Path:
    with path.open("w") as f:
        for i in ids:
            f.write(json.dumps({"id": f"T-{i}", "updated": "2024-03-01T10:00:00Z", "title": f"t{i}",
                                "body": f"question {i} " + "x" * 200, "status": "resolved", "resolution": f"r{i}",
                                "resolution_verified": True, "answer": str(i), "answer_type": "numeric"}) + "\n")
    return path


@pytest.mark.integration
def test_server_stops_in_the_middle_of_an_ingest(server, tmp_path):
    bucket = f"mid-{uuid.uuid4().hex[:8]}"
    cfg = load_config()
    st = S3Store(_cfg(server, bucket))
    first = ingest(cfg, tickets=[_tickets(tmp_path / "a.jsonl", range(5))], store=st)
    big = _tickets(tmp_path / "b.jsonl", range(5, 205))

    faulty = _StopsServer(_cfg(server, bucket), server, stop_after=40)
    t0 = time.monotonic()
    # a server on its way down either refuses the connection or still answers (weed's S3 front: InternalError)
    with pytest.raises(StoreUnavailable, match=r"failed after 2 tries.*(check that the server is up|the server is "
                                               r"reachable but failed the request)"):
        ingest(cfg, tickets=[big], store=faulty)
    assert time.monotonic() - t0 < 60  # bounded: 2 tries per call, not a hang
    assert 40 <= faulty.writes < 200  # it really died part-way through the objects (8 writers in flight)

    st = _restart(server, bucket, lambda s: s.latest() is not None)
    assert st.latest() == first["snapshot_id"] and st.list_snapshots() == [first["snapshot_id"]]
    assert 5 < st.object_count() < 205  # the orphans of the failed ingest exist, but no manifest names them

    again = ingest(cfg, tickets=[big], store=st)
    assert st.list_snapshots() == sorted([first["snapshot_id"], again["snapshot_id"]])  # exactly one more
    assert st.latest() == again["snapshot_id"] and again["previous"] == first["snapshot_id"]
    _, _, tickets = load_snapshot(st)  # every object is read back and checked against its hash
    assert len(tickets) == 205 and [t["id"] for t in tickets] == sorted(f"T-{i}" for i in range(205))
    assert again["counts"]["read"] == again["counts"]["stored"] == 200


@pytest.mark.integration
def test_server_stops_in_the_middle_of_a_model_upload(server, tmp_path):
    bucket = f"up-{uuid.uuid4().hex[:8]}"
    model = warm_tiny_model()
    files = {p.relative_to(model).as_posix(): p.read_bytes() for p in model.rglob("*") if p.is_file()}
    chunk = 16 * 1024
    n_chunks = sum(-(-len(b) // chunk) for b in files.values())
    assert n_chunks > 20

    faulty = _StopsServer(_cfg(server, bucket), server, stop_after=n_chunks // 2)
    with pytest.raises(StoreUnavailable, match="failed after 2 tries"):
        faulty.upload_folder(model, "tiny-model", chunk_bytes=chunk)

    st = _restart(server, bucket, lambda s: s.object_count() > 0)
    assert st.list_folders("tiny-model") == []  # nothing half-uploaded is visible
    with pytest.raises(StoreNotFound, match="no folder named 'tiny-model'"):
        st.download_folder("tiny-model", tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()

    m = st.upload_folder(model, "tiny-model", chunk_bytes=chunk)
    assert st.list_folders("tiny-model") == [m["folder_id"]]
    assert st.upload_folder(model, "tiny-model", chunk_bytes=chunk)["folder_id"] == m["folder_id"]
    assert st.list_folders("tiny-model") == [m["folder_id"]]  # same content: still exactly one snapshot
    got = tmp_path / "got"
    st.download_folder("tiny-model", got)
    assert {p.relative_to(got).as_posix(): p.read_bytes() for p in got.rglob("*") if p.is_file()} == files


def test_folder_round_trip_corruption_and_names(tmp_path):
    """Local back end: chunking, a corrupt chunk is refused (no destination folder), bad names, missing input."""
    st = LocalStore(tmp_path / "store")
    src = tmp_path / "m"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(bytes(range(256)) * 40)  # 10240 bytes -> 3 chunks of 4096
    (src / "sub" / "b.txt").write_text("hello")
    m = st.upload_folder(src, "m1", chunk_bytes=4096)
    assert [(f["path"], f["bytes"], len(f["chunks"])) for f in m["files"]] == [("a.bin", 10240, 3), ("sub/b.txt", 5, 1)]
    st.download_folder("m1", tmp_path / "out")
    assert (tmp_path / "out" / "a.bin").read_bytes() == (src / "a.bin").read_bytes()
    with pytest.raises(StoreError, match="exists"):
        st.download_folder("m1", tmp_path / "out")
    (st.root / "objects" / m["files"][0]["chunks"][1][:2] / m["files"][0]["chunks"][1]).write_bytes(b"rot")
    with pytest.raises(StoreError, match="corrupt"):
        st.download_folder("m1", tmp_path / "out2")
    assert not (tmp_path / "out2").exists()
    for bad in ("../x", "a/b", ""):
        with pytest.raises(StoreError, match="folder name"):
            st.upload_folder(src, bad)
    with pytest.raises(StoreError, match="is not a folder"):
        st.upload_folder(tmp_path / "missing", "m2")


def test_cli_push_stores_the_trained_model_folder(tmp_path, capsys):
    from rlsd.cli import main

    model = warm_tiny_model()
    rc = main(["push", "--folder", str(model), "--name", "rlsd-model", "--set", f"store.root={tmp_path / 'store'}"])
    assert rc == 0
    st = LocalStore(tmp_path / "store")
    (fid,) = st.list_folders("rlsd-model")
    assert f"as folder rlsd-model@{fid}" in capsys.readouterr().out
    st.download_folder("rlsd-model", tmp_path / "back")
    assert (tmp_path / "back" / "model.safetensors").read_bytes() == (model / "model.safetensors").read_bytes()
