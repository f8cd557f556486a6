"""Exact behaviour of the store (rlsd.data.store) and of WorkIndex.replace_document, expected values worked
out by hand: folder snapshots in chunks at the chunk-size boundaries, their listing, latest vs an explicit
id, tampered chunks and manifests, the error messages users read; S3Store's credentials, client settings,
retry policy and error mapping (a scripted HTTP server for the error codes a real server will not produce
on demand), and the S3 contract against the real SeaweedFS server (integration)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tests.data.conftest import s3_cfg
from tests.s3server import free_ports

import rlsd.data.store as store_mod
from rlsd.config import StoreConfig
from rlsd.data.index import WorkIndex
from rlsd.data.store import (
    LocalStore,
    S3Store,
    StoreAuthError,
    StoreError,
    StoreNotFound,
    StoreUnavailable,
    open_store,
    s3_credentials,
)


def H(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _canon(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


# ----------------------------------------------------------------------------------------------
# folders on a LocalStore
# ----------------------------------------------------------------------------------------------

def _model_v1(root: Path) -> Path:
    """a.bin: exactly one 4-byte chunk; b.bin: one byte more (2 chunks); empty: 0 chunks; nested files;
    an empty folder (not a file, not in the manifest); a folder ('sub') that sorts before later files."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "zz_empty_dir").mkdir()
    (root / "a.bin").write_bytes(b"abcd")
    (root / "b.bin").write_bytes(b"abcde")
    (root / "empty").write_bytes(b"")
    (root / "sub" / "c.txt").write_bytes(b"xyz")
    (root / "sub" / "deeper" / "d.txt").write_bytes(b"abcd")
    (root / "zz.txt").write_bytes(b"123456789")  # 4 + 4 + 1: three chunks
    return root


V1_FILES = [
    {"path": "a.bin", "bytes": 4, "sha256": H(b"abcd"), "chunks": [H(b"abcd")]},
    {"path": "b.bin", "bytes": 5, "sha256": H(b"abcde"), "chunks": [H(b"abcd"), H(b"e")]},
    {"path": "empty", "bytes": 0, "sha256": H(b""), "chunks": []},
    {"path": "sub/c.txt", "bytes": 3, "sha256": H(b"xyz"), "chunks": [H(b"xyz")]},
    {"path": "sub/deeper/d.txt", "bytes": 4, "sha256": H(b"abcd"), "chunks": [H(b"abcd")]},
    {"path": "zz.txt", "bytes": 9, "sha256": H(b"123456789"), "chunks": [H(b"1234"), H(b"5678"), H(b"9")]},
]
V1_ID = H(_canon(V1_FILES))[:20]
V1_CONTENT = {"a.bin": b"abcd", "b.bin": b"abcde", "empty": b"", "sub/c.txt": b"xyz", "sub/deeper/d.txt": b"abcd",
              "zz.txt": b"123456789"}


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _check_created(created: str) -> None:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", created), created
    t = dt.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert abs((dt.datetime.now(dt.UTC) - t).total_seconds()) < 120


def test_folder_manifest_exact_at_chunk_boundaries_and_round_trip(tmp_path):
    st = LocalStore(tmp_path / "store")
    src = _model_v1(tmp_path / "model")
    man = st.upload_folder(src, "m", chunk_bytes=4)
    assert set(man) == {"format", "kind", "name", "folder_id", "files", "bytes", "created"}
    assert (man["format"], man["kind"], man["name"], man["folder_id"]) == (1, "folder", "m", V1_ID)
    assert man["files"] == V1_FILES and man["bytes"] == 4 + 5 + 0 + 3 + 4 + 9 and len(man["folder_id"]) == 20
    _check_created(man["created"])
    # chunks are content-addressed: abcd (3 uses), e, xyz, 1234, 5678, 9
    assert st.object_count() == 6
    assert st.get_object(H(b"e")) == b"e"
    # the manifest is stored as canonical JSON under folders/<name>/<id>.json; the ref names it
    assert json.loads((st.root / "folders" / "m" / f"{V1_ID}.json").read_bytes()) == man
    assert (st.root / "refs" / "folders" / "m").read_bytes() == V1_ID.encode()
    assert st.list_folders("m") == [V1_ID]

    # uploading the same content again returns the stored manifest (its 'created' too) and writes nothing new
    key = st.root / "folders" / "m" / f"{V1_ID}.json"
    key.write_bytes(_canon({**man, "created": "2000-01-01T00:00:00Z"}))  # to tell the stored one apart
    stored = key.read_bytes()
    again = st.upload_folder(src, "m", chunk_bytes=4)
    assert again == {**man, "created": "2000-01-01T00:00:00Z"} and key.read_bytes() == stored
    key.write_bytes(_canon(man))
    assert st.object_count() == 6 and st.list_folders("m") == [V1_ID]

    # a leftover <dest>.partial of a crashed download is replaced, and nothing of it survives
    dest = tmp_path / "out"
    stale = tmp_path / "out.partial"
    (stale / "sub").mkdir(parents=True)
    (stale / "junk.txt").write_bytes(b"junk")
    got = st.download_folder("m", dest)
    assert got == man
    assert _tree(dest) == V1_CONTENT
    assert not stale.exists() and not (dest / "junk.txt").exists() and (dest / "zz_empty_dir").exists() is False

    with pytest.raises(StoreError) as e:
        st.download_folder("m", dest)
    assert str(e.value) == f"download_folder: {str(dest)!r} exists; remove it or pick another destination"


def test_default_chunk_size_is_32_mib(tmp_path):
    st = LocalStore(tmp_path / "store")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w").write_bytes(b"x" * 10)
    assert store_mod.FOLDER_CHUNK_BYTES == 32 * 1024 * 1024
    assert st.upload_folder(tmp_path / "m", "w")["files"] == [
        {"path": "w", "bytes": 10, "sha256": H(b"x" * 10), "chunks": [H(b"x" * 10)]}]


def test_folder_versions_latest_explicit_and_listing(tmp_path):
    st = LocalStore(tmp_path / "store")
    src = _model_v1(tmp_path / "model")
    m1 = st.upload_folder(src, "m", chunk_bytes=4)
    (src / "b.bin").write_bytes(b"B")
    m2 = st.upload_folder(src, "m", chunk_bytes=4)
    v2_files = [dict(f) for f in V1_FILES]
    v2_files[1] = {"path": "b.bin", "bytes": 1, "sha256": H(b"B"), "chunks": [H(b"B")]}
    assert m2["files"] == v2_files and m2["folder_id"] == H(_canon(v2_files))[:20] and m2["bytes"] == 4 + 1 + 3 + 4 + 9
    # another folder whose name starts like this one, and a stray non-manifest file, are not listed
    (tmp_path / "other" / "p" / "q").mkdir(parents=True)
    (tmp_path / "other" / "p" / "q" / "f").write_bytes(b"f")  # the only file, two folders down
    m3 = st.upload_folder(tmp_path / "other", "m2")
    assert m3["files"] == [{"path": "p/q/f", "bytes": 1, "sha256": H(b"f"), "chunks": [H(b"f")]}]
    assert st.download_folder("m2", tmp_path / "o2") == m3 and _tree(tmp_path / "o2") == {"p/q/f": b"f"}
    (st.root / "folders" / "m" / "notes.txt").write_text("not a manifest")
    assert st.list_folders("m") == sorted([m1["folder_id"], m2["folder_id"]])
    assert st.list_folders("m2") == [m3["folder_id"]] and st.list_folders("never") == []

    latest = st.download_folder("m", tmp_path / "latest")
    assert latest == m2 and _tree(tmp_path / "latest") == {**V1_CONTENT, "b.bin": b"B"}
    old = st.download_folder("m", tmp_path / "old", folder_id=m1["folder_id"])
    assert old == m1 and _tree(tmp_path / "old") == V1_CONTENT
    explicit_latest = st.download_folder("m", tmp_path / "ex", folder_id=m2["folder_id"])
    assert explicit_latest == m2


def test_folder_errors_name_what_to_fix(tmp_path):
    st = LocalStore(tmp_path / "store")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(StoreError) as e:
        st.upload_folder(f, "m")
    assert str(e.value) == f"upload_folder: {str(f)!r} is not a folder; pass the model folder (e.g. <run>/final)"
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    with pytest.raises(StoreError) as e:
        st.upload_folder(empty, "m")
    assert str(e.value) == f"upload_folder: {str(empty)!r} holds no file; nothing to upload"
    assert not (st.root / "refs").exists()
    for bad in ("a/b", "", ".hidden", "x" * 129):
        with pytest.raises(StoreError, match="folder name must be letters, digits"):
            st.upload_folder(tmp_path, bad)
        with pytest.raises(StoreError, match="folder name must be letters, digits"):
            st.list_folders(bad)
        with pytest.raises(StoreError, match="folder name must be letters, digits"):
            st.download_folder(bad, tmp_path / "d")

    with pytest.raises(StoreNotFound) as e:
        st.download_folder("ghost", tmp_path / "d")
    assert str(e.value) == f"{st.description} holds no folder named 'ghost'; upload it first"
    with pytest.raises(StoreNotFound) as e:
        st.download_folder("ghost", tmp_path / "d", folder_id="abc")
    assert str(e.value) == f"{st.description}: folder 'ghost' has no snapshot 'abc' (known: none)"
    assert not (tmp_path / "d").exists()

    # eleven snapshots: the message names the first ten ids, sorted
    ids = []
    for i in range(11):
        d = tmp_path / f"v{i}"
        d.mkdir()
        (d / "f").write_bytes(bytes([i]))
        ids.append(st.upload_folder(d, "many")["folder_id"])
    assert st.list_folders("many") == sorted(ids)
    with pytest.raises(StoreNotFound) as e:
        st.download_folder("many", tmp_path / "d", folder_id="nope")
    assert str(e.value) == (f"{st.description}: folder 'many' has no snapshot 'nope' "
                            f"(known: {', '.join(sorted(ids)[:10])})")


def test_download_refuses_tampered_chunks_manifests_and_escaping_paths(tmp_path):
    st = LocalStore(tmp_path / "store")
    src = tmp_path / "model"
    src.mkdir()
    (src / "w.bin").write_bytes(b"weights!")
    man = st.upload_folder(src, "m", chunk_bytes=4)
    assert man["files"][0]["chunks"] == [H(b"weig"), H(b"hts!")]

    # a chunk whose bytes changed on disk
    obj = st.root / "objects" / H(b"hts!")[:2] / H(b"hts!")
    obj.write_bytes(b"hts?")
    with pytest.raises(StoreError, match=f"object {H(b'hts!')} is corrupt"):
        st.download_folder("m", tmp_path / "d1")
    assert not (tmp_path / "d1").exists()
    obj.write_bytes(b"hts!")

    # a manifest whose recorded SHA-256 does not match the (intact) chunks
    key = st.root / "folders" / "m" / f"{man['folder_id']}.json"
    bad = json.loads(key.read_bytes())
    bad["files"][0]["sha256"] = H(b"something else")
    key.write_bytes(_canon(bad))
    with pytest.raises(StoreError) as e:
        st.download_folder("m", tmp_path / "d2")
    assert str(e.value) == (f"{st.description}: file 'w.bin' of folder 'm' does not match its recorded SHA-256; "
                            "upload the folder again")
    assert not (tmp_path / "d2").exists()

    # manifests naming a file outside the destination: refused before anything is written
    d, _ = st.put_object(b"x")
    for i, path in enumerate(["../evil", "sub/../../evil2", str(tmp_path / "abs_evil")]):
        fid = f"bad{i}"
        st._put(f"folders/bad/{fid}.json",
                _canon({"files": [{"path": path, "bytes": 1, "sha256": H(b"x"), "chunks": [d]}]}))
        with pytest.raises(StoreError) as e:
            st.download_folder("bad", tmp_path / "dl" / "out", folder_id=fid)
        assert str(e.value) == f"{st.description}: folder 'bad' names a file outside it: {path!r}"
    assert not (tmp_path / "dl" / "evil").exists() and not (tmp_path / "evil2").exists()
    assert not (tmp_path / "abs_evil").exists() and not (tmp_path / "dl" / "out").exists()


# ----------------------------------------------------------------------------------------------
# snapshots, errors, listing, back-end choice
# ----------------------------------------------------------------------------------------------

def test_store_not_found_reads_like_its_message():
    e = StoreNotFound("local store 'x': no key 'refs/latest'")
    assert str(e) == "local store 'x': no key 'refs/latest'" and isinstance(e, KeyError)
    assert str(StoreNotFound()) == ""


def test_local_listing_skips_temporary_files_and_lists_snapshots_sorted(tmp_path):
    st = LocalStore(tmp_path / "s")
    assert st.description == f"local store {str(tmp_path / 's')!r}"
    d1, _ = st.put_object(b"one")
    st.put_object(b"two")
    # a half-written temporary file of a crashed write is not an object
    (st.root / "objects" / d1[:2] / ".tmp-abc123").write_bytes(b"partial")
    (st.root / "snapshots").mkdir()
    (st.root / "snapshots" / ".tmp-x.json").write_bytes(b"{}")
    assert st.object_count() == 2
    assert sorted(st._list("objects/")) == sorted(f"objects/{H(b)[:2]}/{H(b)}" for b in (b"one", b"two"))
    assert list(st._list("nothing/")) == []
    for sid in ("s2", "s10", "s1"):
        st.write_manifest({"snapshot_id": sid})
    (st.root / "snapshots" / "README").write_text("not a manifest")
    assert st.list_snapshots() == ["s1", "s10", "s2"]
    with pytest.raises(StoreNotFound) as e:
        st.read_manifest("s3")
    assert str(e.value) == f"{st.description}: snapshot 's3' does not exist (known: s1, s10, s2)"
    with pytest.raises(StoreNotFound) as e:
        st._get("refs/nope")
    assert str(e.value) == f"{st.description}: no key 'refs/nope'"


def test_local_store_nested_root_failed_write_and_known_snapshots(tmp_path):
    root = tmp_path / "a" / "b" / "c"
    st = LocalStore(root)
    assert LocalStore(root).root == root  # opening an existing store again
    ids = [f"s{i:02d}" for i in range(11)]
    for sid in ids:
        st.write_manifest({"snapshot_id": sid})
    with pytest.raises(StoreNotFound) as e:
        st.read_manifest("zz")
    assert str(e.value) == f"{st.description}: snapshot 'zz' does not exist (known: {', '.join(ids[:10])})"
    digest, _ = st.put_object(b"q")
    with pytest.raises(IsADirectoryError):  # the key's path is a folder: the write fails...
        st._put("objects", b"x")
    # ...and leaves no temporary file behind
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        f"objects/{digest[:2]}/{digest}"] + [f"snapshots/{sid}.json" for sid in ids]


def test_open_store_picks_the_back_end(tmp_path, monkeypatch):
    st = open_store(StoreConfig(backend="local", root=str(tmp_path / "here")))
    assert type(st) is LocalStore and st.root == tmp_path / "here" and st.root.is_dir()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setattr(store_mod.time, "sleep", lambda s: None)
    port = free_ports(1)[0]
    with pytest.raises(StoreUnavailable) as e:  # an S3 store, so it calls the (dead) endpoint
        open_store(StoreConfig(backend="s3", endpoint=f"127.0.0.1:{port}", bucket="bkt", retries=1))
    assert str(e.value).startswith(f"S3 store http://127.0.0.1:{port}/bkt: bucket_exists(bkt) failed after 1 tries")


# ----------------------------------------------------------------------------------------------
# WorkIndex.replace_document
# ----------------------------------------------------------------------------------------------

def test_replace_document_drops_only_that_documents_sections(tmp_path):
    with WorkIndex(tmp_path) as w:
        w.replace_document("do", [("do", "h0")])
        w.replace_document("doc", [("doc", "h1"), ("doc/a", "h2"), ("doc/b/c", "h3")])
        for other, h in (("doc.x", "h4"), ("doc0", "h5"), ("doc1", "h6"), ("docA", "h7"), ("docs", "h8")):
            w.replace_document(other, [(other, h)])
        w.replace_document("doc", [("doc/new", "h9"), ("doc/new", "h10")])  # the last pair of an id wins
        (prefix, data), = list(w.shards("sections"))
        assert prefix == "" and json.loads(data) == {"do": "h0", "doc.x": "h4", "doc0": "h5", "doc1": "h6",
                                                     "docA": "h7", "docs": "h8", "doc/new": "h10"}


# ----------------------------------------------------------------------------------------------
# S3Store without a server: credentials, client settings, retries
# ----------------------------------------------------------------------------------------------

_CRED_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "AWS_SESSION_TOKEN")


@pytest.fixture
def no_creds(monkeypatch):
    for k in _CRED_VARS:
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


def test_s3_credentials_precedence(no_creds):
    mp = no_creds
    with pytest.raises(StoreAuthError) as e:
        s3_credentials()
    assert str(e.value) == ("S3 store: no credentials in the environment; set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY (or MINIO_ACCESS_KEY and MINIO_SECRET_KEY); they never go in the config")
    mp.setenv("MINIO_ACCESS_KEY", "mk")
    with pytest.raises(StoreAuthError):  # half a pair is no pair
        s3_credentials()
    mp.setenv("MINIO_SECRET_KEY", "ms")
    assert s3_credentials() == ("mk", "ms", None)
    mp.setenv("AWS_ACCESS_KEY_ID", "ak")  # AWS id without its secret: the MinIO pair
    assert s3_credentials() == ("mk", "ms", None)
    mp.delenv("AWS_ACCESS_KEY_ID")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "as")  # AWS secret without its id: the MinIO pair
    assert s3_credentials() == ("mk", "ms", None)
    mp.setenv("AWS_ACCESS_KEY_ID", "")
    assert s3_credentials() == ("mk", "ms", None)
    mp.setenv("AWS_ACCESS_KEY_ID", "ak")  # both pairs: AWS wins
    assert s3_credentials() == ("ak", "as", None)
    mp.setenv("AWS_SESSION_TOKEN", "tok")
    assert s3_credentials() == ("ak", "as", "tok")
    mp.setenv("AWS_SESSION_TOKEN", "")
    assert s3_credentials() == ("ak", "as", None)
    mp.setenv("AWS_SESSION_TOKEN", "tok2")
    mp.delenv("AWS_ACCESS_KEY_ID")
    assert s3_credentials() == ("mk", "ms", "tok2")
    mp.delenv("MINIO_ACCESS_KEY")
    with pytest.raises(StoreAuthError):
        s3_credentials()


class _Offline(S3Store):
    """An S3Store that does not look for its bucket at construction (no server needed)."""

    def _ensure_bucket(self) -> None:
        pass


def test_s3_client_settings(no_creds):
    no_creds.setenv("AWS_ACCESS_KEY_ID", "ak")
    no_creds.setenv("AWS_SECRET_ACCESS_KEY", "as")
    no_creds.setenv("AWS_SESSION_TOKEN", "tok")
    cfg = StoreConfig(backend="s3", endpoint="127.0.0.1:1", bucket="bkt", secure=True, region="eu-west-3")
    st = _Offline(cfg)
    assert st.cfg is cfg and st.backoff == 0.25 and st.parallelism == 8
    assert st.description == "S3 store https://127.0.0.1:1/bkt"
    assert st.client._base_url.is_https and st.client._base_url.region == "eu-west-3"
    assert st.client._base_url.host == "127.0.0.1:1"
    c = st.client._provider.retrieve()
    assert (c.access_key, c.secret_key, c.session_token) == ("ak", "as", "tok")
    kw = st.client._http.connection_pool_kw
    assert (kw["timeout"].connect_timeout, kw["timeout"].read_timeout) == (3.0, 30.0)
    assert (kw["retries"].total, kw["retries"].redirect) == (0, 0)  # the store owns the retry policy
    assert kw["maxsize"] == 8
    plain = _Offline(StoreConfig(backend="s3", endpoint="127.0.0.1:2", bucket="b2"))
    assert plain.description == "S3 store http://127.0.0.1:2/b2" and not plain.client._base_url.is_https
    assert plain.client._base_url.region is None


@pytest.mark.timeout(60)
def test_s3_dead_endpoint_bounded_retries_with_capped_backoff(no_creds):
    no_creds.setenv("AWS_ACCESS_KEY_ID", "ak")
    no_creds.setenv("AWS_SECRET_ACCESS_KEY", "as")
    sleeps: list[float] = []
    no_creds.setattr(store_mod.time, "sleep", sleeps.append)  # time.sleep for everyone: urllib3's would show
    port = free_ports(1)[0]
    for secure, scheme in ((False, "http"), (True, "https")):
        sleeps.clear()
        with pytest.raises(StoreUnavailable) as e:
            S3Store(StoreConfig(backend="s3", endpoint=f"127.0.0.1:{port}", bucket="bkt", secure=secure, retries=7))
        assert sleeps == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0]  # 0.25 * 2**attempt, at most 4 s, none after the last
        msg = str(e.value)
        assert msg.startswith(f"S3 store {scheme}://127.0.0.1:{port}/bkt: bucket_exists(bkt) failed after 7 tries "
                              f"(MaxRetryError: {'HTTPS' if secure else 'HTTP'}ConnectionPool(host='127.0.0.1', "
                              f"port={port})"), msg
        assert msg.endswith("); check that the server is up and store.endpoint / store.secure are right "
                            "(raise store.retries to wait longer)"), msg
    sleeps.clear()
    with pytest.raises(StoreUnavailable, match="failed after 1 tries"):
        S3Store(StoreConfig(backend="s3", endpoint=f"127.0.0.1:{port}", bucket="bkt", retries=1), backoff=1.0)
    assert sleeps == []
    with pytest.raises(StoreUnavailable, match="failed after 3 tries"):
        S3Store(StoreConfig(backend="s3", endpoint=f"127.0.0.1:{port}", bucket="bkt", retries=3), backoff=1.0)
    assert sleeps == [1.0, 2.0]


# ----------------------------------------------------------------------------------------------
# S3Store against a scripted HTTP server: the error codes and what each becomes
# ----------------------------------------------------------------------------------------------

def _error_xml(code: str, resource: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>scripted {code}</Message>'
            f"<Resource>{resource}</Resource><RequestId>r1</RequestId><HostId>h1</HostId></Error>").encode()


class _Scripted:
    """A tiny HTTP server answering S3 requests from a script {(method, path): (status, code or None)}."""

    def __init__(self, script: dict[tuple[str, str], tuple[int, str | None]]) -> None:
        self.script, self.requests = script, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                path = self.path.split("?", 1)[0]
                outer.requests.append((self.command, path))
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                status, code = outer.script.get((self.command, path), (500, "InternalError"))
                body = b"" if code is None or self.command == "HEAD" else _error_xml(code, path)
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _answer

            def log_message(self, *a) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted(no_creds):
    no_creds.setenv("AWS_ACCESS_KEY_ID", "ak")
    no_creds.setenv("AWS_SECRET_ACCESS_KEY", "as")
    no_creds.setattr(store_mod.time, "sleep", lambda s: None)
    servers = []

    def make(script):
        servers.append(_Scripted(script))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def _scfg(srv: _Scripted, retries: int = 2) -> StoreConfig:
    return StoreConfig(backend="s3", endpoint=srv.endpoint, bucket="bkt", region="us-east-1", retries=retries)


@pytest.mark.timeout(60)
def test_s3_missing_bucket_is_created_and_a_failed_creation_is_retried(scripted):
    srv = scripted({("HEAD", "/bkt"): (404, None), ("PUT", "/bkt"): (200, None)})
    S3Store(_scfg(srv))
    assert srv.requests == [("HEAD", "/bkt"), ("PUT", "/bkt")]
    srv = scripted({("HEAD", "/bkt"): (200, None)})
    S3Store(_scfg(srv))
    assert srv.requests == [("HEAD", "/bkt")]
    srv = scripted({("HEAD", "/bkt"): (404, None), ("PUT", "/bkt"): (500, "InternalError")})
    with pytest.raises(StoreUnavailable) as e:
        S3Store(_scfg(srv, retries=3))
    assert srv.requests == [("HEAD", "/bkt")] + [("PUT", "/bkt")] * 3
    assert str(e.value).startswith(f"S3 store http://{srv.endpoint}/bkt: make_bucket(bkt) failed after 3 tries "
                                   "(S3Error: S3 operation failed; code: InternalError, message: scripted InternalError")


@pytest.mark.timeout(60)
def test_s3_error_codes_map_to_store_errors(scripted):
    srv = scripted({("HEAD", "/bkt"): (200, None), ("GET", "/bkt/k1"): (404, "NoSuchKey"),
                    ("GET", "/bkt/k2"): (404, "NoSuchObject"), ("GET", "/bkt/k3"): (404, "NoSuchBucket"),
                    ("GET", "/bkt/k5"): (503, "SlowDown"), ("HEAD", "/bkt/k6"): (403, None),
                    ("HEAD", "/bkt/k7"): (404, None), ("HEAD", "/bkt/k8"): (200, None)})
    st = S3Store(_scfg(srv, retries=3))
    desc = f"S3 store http://{srv.endpoint}/bkt"
    for k in ("k1", "k2"):
        with pytest.raises(StoreNotFound) as e:
            st._get(k)
        assert str(e.value) == f"{desc}: no key for get {k}"
    with pytest.raises(StoreError) as e:
        st._get("k3")
    assert type(e.value) is StoreError
    assert str(e.value) == f"{desc}: bucket 'bkt' disappeared during get k3"
    for code in sorted(store_mod._AUTH_CODES):
        srv.script[("GET", "/bkt/k4")] = (403, code)
        srv.requests.clear()
        with pytest.raises(StoreAuthError) as e:
            st._get("k4")
        assert srv.requests == [("GET", "/bkt/k4")]  # refused credentials are not retried
        assert str(e.value) == (f"{desc}: get k4 refused ({code}: scripted {code}); check AWS_ACCESS_KEY_ID / "
                                "AWS_SECRET_ACCESS_KEY (or MINIO_ACCESS_KEY / MINIO_SECRET_KEY) and the bucket policy")
    srv.requests.clear()
    with pytest.raises(StoreUnavailable) as e:
        st._get("k5")
    assert srv.requests == [("GET", "/bkt/k5")] * 3
    assert str(e.value).startswith(f"{desc}: get k5 failed after 3 tries (S3Error: S3 operation failed; "
                                   "code: SlowDown, message: scripted SlowDown")
    answered = ("the server is reachable but failed the request: see its log (one that is shutting down or out of "
                "disk fails writes: SeaweedFS answers InternalError, MinIO XMinioStorageFull) (raise store.retries "
                "to wait longer)")
    assert str(e.value).endswith(answered)  # not "check that the server is up": it answered
    with pytest.raises(StoreAuthError, match=r": stat k6 refused \(AccessDenied: "):
        st._exists("k6")
    assert st._exists("k7") is False and st._exists("k8") is True
    srv.requests.clear()
    with pytest.raises(StoreUnavailable, match=r": stat k9 failed after 3 tries \(ServerError: server failed with HTTP status code 500\); ") as e:
        st._exists("k9")
    assert srv.requests == [("HEAD", "/bkt/k9")] * 3 and str(e.value).endswith(answered)
    with pytest.raises(StoreUnavailable, match=r": put p/k failed after 3 tries \(S3Error: "):
        st._put("p/k", b"data")
    with pytest.raises(StoreUnavailable, match=r": list p/ failed after 3 tries \(S3Error: "):
        list(st._list("p/"))


# ----------------------------------------------------------------------------------------------
# S3Store against the real SeaweedFS server
# ----------------------------------------------------------------------------------------------

@pytest.mark.integration
def test_s3_contract_on_a_real_server(s3_env):
    cfg = s3_cfg(s3_env)
    st = S3Store(cfg)
    assert st.description == f"S3 store http://{s3_env.endpoint}/{cfg.bucket}"
    assert st.client.bucket_exists(cfg.bucket)
    assert list(st._list("")) == [] and st.latest() is None
    for key, data in (("a/b/c.json", b"1"), ("a/d.json", b"22"), ("ab.json", b"333"), ("z", b"")):
        st._put(key, data)
    assert st._get("a/b/c.json") == b"1" and st._get("a/d.json") == b"22" and st._get("z") == b""
    assert sorted(st._list("a/")) == ["a/b/c.json", "a/d.json"]
    assert sorted(st._list("")) == ["a/b/c.json", "a/d.json", "ab.json", "z"]
    assert list(st._list("nope/")) == []
    assert st._exists("ab.json") and st._exists("z") and not st._exists("a") and not st._exists("a/b")
    assert st.client.stat_object(cfg.bucket, "ab.json").content_type == "application/json"
    assert st.client.stat_object(cfg.bucket, "z").content_type == "application/json"  # not guessed from a name
    with pytest.raises(StoreNotFound) as e:
        st._get("missing.json")
    assert str(e.value) == f"{st.description}: no key for get missing.json"
    st._put("a/d.json", b"new")
    assert st._get("a/d.json") == b"new"

    # a second store on the now existing bucket sees the same keys
    again = S3Store(cfg)
    assert again._get("ab.json") == b"333"


@pytest.mark.integration
def test_s3_folder_round_trip_and_minio_credentials(s3_env, monkeypatch, tmp_path):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k)
    monkeypatch.setenv("MINIO_ACCESS_KEY", s3_env.access_key)
    monkeypatch.setenv("MINIO_SECRET_KEY", s3_env.secret_key)
    st = open_store(s3_cfg(s3_env))
    assert type(st) is S3Store
    man = st.upload_folder(_model_v1(tmp_path / "model"), "m", chunk_bytes=4)
    assert man["files"] == V1_FILES and man["folder_id"] == V1_ID
    assert st.list_folders("m") == [V1_ID] and st.object_count() == 6
    assert st.download_folder("m", tmp_path / "out") == man and _tree(tmp_path / "out") == V1_CONTENT
    assert st.get_json_objects([st.put_object(json.dumps({"i": i}).encode())[0] for i in range(6)]) == {
        H(json.dumps({"i": i}).encode()): {"i": i} for i in range(6)}


@pytest.mark.integration
def test_s3_wrong_credentials_refused_without_retry(s3_env, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", f"nobody{uuid.uuid4().hex[:6]}")
    cfg = s3_cfg(s3_env, retries=3)
    with pytest.raises(StoreAuthError) as e:
        S3Store(cfg)
    assert f": bucket_exists({cfg.bucket}) refused (" in str(e.value)
