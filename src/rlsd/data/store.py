"""The privileged-context store: content-addressed objects, immutable snapshot manifests, a pointer.

Layout (the same keys on both back ends)::

    objects/<sha[:2]>/<sha>      one JSON record (a manual section, a ticket, a quarantine list);
                                 the name is the SHA-256 of the bytes, so identical content is one object
    snapshots/<snapshot_id>.json the manifest of one ingest: sources and their hashes, counts,
                                 the previous snapshot, and the shard objects of its record index
                                 (record id -> object hash; see rlsd.data.index)
    refs/latest                  the id of the newest committed snapshot
    folders/<name>/<id>.json     a pushed folder (a trained model): files -> size, SHA-256, chunk objects
    refs/folders/<name>          the id of the newest pushed snapshot of that folder
    refs/trained/<model name>    the snapshot the newest completed training of that model learned from
                                 (written by the pipeline's register step; the retraining gate counts from it)

Commit protocol: objects first, then the manifest, then ``refs/latest``. Readers resolve snapshots
through manifests only, so an ingest that dies part-way leaves at most unreferenced objects
(harmless, content-addressed), never a visible half-snapshot. A manifest is written once and never
changed; ``refs/latest`` is the single mutable key (an atomic rename locally, one PUT on S3).

Back ends: :class:`LocalStore` (a folder; the embedded default) and :class:`S3Store` (MinIO or any
S3 server via the ``minio`` client). Credentials come only from the environment
(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or MINIO_ACCESS_KEY / MINIO_SECRET_KEY), never from the
config. Departure from a git-like object store: no packing and no garbage collection of
unreferenced objects (they only arise from failed ingests).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Container, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from rlsd.config import StoreConfig

T = TypeVar("T")


class StoreError(RuntimeError):
    """Any store failure; the message names the store, the key or operation and the fix."""


class StoreAuthError(StoreError):
    """Missing or rejected credentials (not retried)."""


class StoreUnavailable(StoreError):
    """The server did not answer after the configured number of tries."""


class StoreNotFound(StoreError, KeyError):
    """A key, object or snapshot that does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def canonical_json(obj: Any) -> bytes:
    """The bytes whose hash names a record: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


FOLDER_CHUNK_BYTES = 32 * 1024 * 1024


def _check_folder_name(name: str) -> None:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", name):
        raise StoreError(f"folder name must be letters, digits, '.', '_' or '-' (no '/'), got {name!r}")


def object_key(digest: str) -> str:
    return f"objects/{digest[:2]}/{digest}"


class Store(ABC):
    """One interface over a folder and an S3 bucket. Subclasses implement the five primitives."""

    description: str = "store"
    parallelism: int = 1

    # -- primitives ------------------------------------------------------------------------------
    @abstractmethod
    def _put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def _get(self, key: str) -> bytes:
        """The bytes at ``key``; raises StoreNotFound when absent."""

    @abstractmethod
    def _exists(self, key: str) -> bool: ...

    @abstractmethod
    def _list(self, prefix: str) -> Iterator[str]: ...

    # -- content-addressed objects ---------------------------------------------------------------
    def put_object(self, data: bytes) -> tuple[str, bool]:
        """Store ``data`` under its SHA-256; returns (digest, written). Existing objects are not rewritten."""
        digest = sha256(data)
        key = object_key(digest)
        if self._exists(key):
            return digest, False
        self._put(key, data)
        return digest, True

    def put_objects(self, blobs: dict[str, bytes], *, known: Container[str] = ()) -> int:
        """Store many ``{digest: bytes}``; digests in ``known`` are taken to exist already (they are
        referenced by a committed snapshot). Returns the number of objects written."""
        todo = [(d, b) for d, b in blobs.items() if d not in known]
        for d, b in todo:
            if sha256(b) != d:
                raise StoreError(f"object bytes do not hash to their name {d[:12]}... (a bug in the caller)")
        written = self._map(lambda db: self.put_object(db[1])[1], todo)
        return sum(written)

    def get_object(self, digest: str) -> bytes:
        data = self._get(object_key(digest))
        if sha256(data) != digest:
            raise StoreError(f"{self.description}: object {digest} is corrupt (its bytes hash to {sha256(data)}); "
                             "re-ingest the source files to rewrite it")
        return data

    def get_json_objects(self, digests: Iterable[str]) -> dict[str, Any]:
        ds = list(dict.fromkeys(digests))
        vals = self._map(lambda d: json.loads(self.get_object(d)), ds)
        return dict(zip(ds, vals))

    def object_count(self) -> int:
        return sum(1 for _ in self._list("objects/"))

    # -- snapshots -------------------------------------------------------------------------------
    def write_manifest(self, manifest: dict[str, Any]) -> None:
        sid = manifest["snapshot_id"]
        key = f"snapshots/{sid}.json"
        if self._exists(key):
            return  # immutable: the same id means the same content and the same previous snapshot
        self._put(key, canonical_json(manifest))

    def set_latest(self, snapshot_id: str) -> None:
        self._put("refs/latest", snapshot_id.encode())

    def latest(self) -> str | None:
        try:
            return self._get("refs/latest").decode().strip() or None
        except StoreNotFound:
            return None

    def set_trained(self, model_name: str, snapshot_id: str) -> None:
        self._put(f"refs/trained/{model_name}", snapshot_id.encode())

    def trained(self, model_name: str) -> str | None:
        """The snapshot the newest completed training of ``model_name`` learned from (None: none completed)."""
        try:
            return self._get(f"refs/trained/{model_name}").decode().strip() or None
        except StoreNotFound:
            return None

    def resolve(self, snapshot: str = "latest") -> str:
        if snapshot == "latest":
            sid = self.latest()
            if sid is None:
                raise StoreNotFound(f"{self.description} holds no snapshot yet; run `rlsd ingest` first")
            return sid
        return snapshot

    def read_manifest(self, snapshot: str = "latest") -> dict[str, Any]:
        sid = self.resolve(snapshot)
        try:
            return json.loads(self._get(f"snapshots/{sid}.json"))
        except StoreNotFound:
            known = ", ".join(self.list_snapshots()[:10]) or "none"
            raise StoreNotFound(f"{self.description}: snapshot {sid!r} does not exist (known: {known})") from None

    def list_snapshots(self) -> list[str]:
        return sorted(k.rsplit("/", 1)[-1][: -len(".json")] for k in self._list("snapshots/") if k.endswith(".json"))

    def named_key(self, name: str) -> bytes:
        """A random 32-byte key kept at ``keys/<name>``, created on first use (the fallback key of
        rlsd.data.redact's id hashing when $RLSD_ID_HASH_KEY is not set)."""
        _check_folder_name(name)
        try:
            return self._get(f"keys/{name}")
        except StoreNotFound:
            key = os.urandom(32)
            self._put(f"keys/{name}", key)
            return key

    # -- folders (a trained model, a checkpoint) --------------------------------------------------
    def upload_folder(self, folder: str | Path, name: str, *, chunk_bytes: int = FOLDER_CHUNK_BYTES) -> dict[str, Any]:
        """Push every file under ``folder`` as one immutable folder snapshot named ``name``.

        Commit protocol as for ingest: content-addressed chunks of at most ``chunk_bytes`` first (read one
        chunk at a time, so memory stays bounded whatever the file sizes), then the manifest
        ``folders/<name>/<folder_id>.json`` (every file's size, SHA-256 and chunks), then
        ``refs/folders/<name>``. An upload that dies part-way leaves only unreferenced chunks: no folder
        snapshot becomes visible; uploading the same content again writes no new manifest. Returns the manifest.
        """
        root = Path(folder)
        _check_folder_name(name)
        if not root.is_dir():
            raise StoreError(f"upload_folder: {str(root)!r} is not a folder; pass the model folder (e.g. <run>/final)")
        files: list[dict[str, Any]] = []
        for f in sorted(root.rglob("*")):
            if not f.is_file():
                continue
            whole, chunks, size = hashlib.sha256(), [], 0
            with f.open("rb") as fh:
                while block := fh.read(chunk_bytes):
                    whole.update(block)
                    size += len(block)
                    chunks.append(self.put_object(block)[0])
            files.append({"path": f.relative_to(root).as_posix(), "bytes": size, "sha256": whole.hexdigest(),
                          "chunks": chunks})
        if not files:
            raise StoreError(f"upload_folder: {str(root)!r} holds no file; nothing to upload")
        folder_id = sha256(canonical_json(files))[:20]
        manifest = {"format": 1, "kind": "folder", "name": name, "folder_id": folder_id, "files": files,
                    "bytes": sum(x["bytes"] for x in files), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        key = f"folders/{name}/{folder_id}.json"
        if not self._exists(key):
            self._put(key, canonical_json(manifest))
        else:
            manifest = json.loads(self._get(key))
        self._put(f"refs/folders/{name}", folder_id.encode())
        return manifest

    def list_folders(self, name: str) -> list[str]:
        """The ids of the committed snapshots of folder ``name`` (sorted)."""
        _check_folder_name(name)
        pre = f"folders/{name}/"
        return sorted(k[len(pre):-len(".json")] for k in self._list(pre) if k.endswith(".json"))

    def download_folder(self, name: str, dest: str | Path, *, folder_id: str = "latest") -> dict[str, Any]:
        """Write folder snapshot ``name`` (the latest, or ``folder_id``) to ``dest``, checking every file's
        SHA-256; files are assembled in ``<dest>.partial`` and renamed into place only when all are whole.
        ``dest`` must not exist. Returns the manifest."""
        _check_folder_name(name)
        dest = Path(dest)
        if dest.exists():
            raise StoreError(f"download_folder: {str(dest)!r} exists; remove it or pick another destination")
        if folder_id == "latest":
            try:
                folder_id = self._get(f"refs/folders/{name}").decode().strip()
            except StoreNotFound:
                raise StoreNotFound(f"{self.description} holds no folder named {name!r}; upload it first") from None
        try:
            manifest = json.loads(self._get(f"folders/{name}/{folder_id}.json"))
        except StoreNotFound:
            known = ", ".join(self.list_folders(name)[:10]) or "none"
            raise StoreNotFound(f"{self.description}: folder {name!r} has no snapshot {folder_id!r} (known: {known})") from None
        tmp = dest.with_name(dest.name + ".partial")
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        for entry in manifest["files"]:
            out = tmp / entry["path"]
            if ".." in Path(entry["path"]).parts or Path(entry["path"]).is_absolute():
                raise StoreError(f"{self.description}: folder {name!r} names a file outside it: {entry['path']!r}")
            out.parent.mkdir(parents=True, exist_ok=True)
            whole = hashlib.sha256()
            with out.open("wb") as fh:
                for d in entry["chunks"]:
                    block = self.get_object(d)
                    whole.update(block)
                    fh.write(block)
            if whole.hexdigest() != entry["sha256"]:
                raise StoreError(f"{self.description}: file {entry['path']!r} of folder {name!r} does not match its "
                                 "recorded SHA-256; upload the folder again")
        tmp.rename(dest)
        return manifest

    # -- helpers ---------------------------------------------------------------------------------
    def _map(self, fn: Callable[[Any], T], items: list[Any]) -> list[T]:
        if self.parallelism <= 1 or len(items) < 4:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(self.parallelism) as ex:
            return list(ex.map(fn, items))


# ----------------------------------------------------------------------------------------------
# Local folder
# ----------------------------------------------------------------------------------------------


class LocalStore(Store):
    """A folder. Writes go to a temporary file in the same folder, then an atomic rename."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.description = f"local store {str(self.root)!r}"

    def _path(self, key: str) -> Path:
        return self.root / key

    def _put(self, key: str, data: bytes) -> None:
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StoreNotFound(f"{self.description}: no key {key!r}") from None

    def _exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _list(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix)
        if not base.exists():
            return
        for p in base.rglob("*"):
            if p.is_file() and not p.name.startswith(".tmp-"):
                yield p.relative_to(self.root).as_posix()


# ----------------------------------------------------------------------------------------------
# S3 (MinIO, SeaweedFS, AWS)
# ----------------------------------------------------------------------------------------------

_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken",
               "InvalidClientTokenId", "AuthorizationHeaderMalformed"}


def s3_credentials() -> tuple[str, str, str | None]:
    """(access_key, secret_key, session_token) from the environment; a clear error when absent."""
    env = os.environ
    for a, s in (("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY")):
        if env.get(a) and env.get(s):
            return env[a], env[s], env.get("AWS_SESSION_TOKEN") or None
    raise StoreAuthError("S3 store: no credentials in the environment; set AWS_ACCESS_KEY_ID and "
                         "AWS_SECRET_ACCESS_KEY (or MINIO_ACCESS_KEY and MINIO_SECRET_KEY); they never go in the config")


class S3Store(Store):
    """An S3 bucket through the ``minio`` client; every call is tried ``retries`` times with backoff."""

    parallelism = 8

    def __init__(self, cfg: StoreConfig, *, connect_timeout: float = 3.0, read_timeout: float = 30.0,
                 backoff: float = 0.25) -> None:
        import urllib3
        from minio import Minio

        access, secret, token = s3_credentials()
        self.cfg, self.backoff = cfg, backoff
        scheme = "https" if cfg.secure else "http"
        self.description = f"S3 store {scheme}://{cfg.endpoint}/{cfg.bucket}"
        # No retries inside urllib3: this class owns the retry policy (bounded, then a clear error).
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
                                   retries=urllib3.Retry(total=0, redirect=0), maxsize=self.parallelism)
        self.client = Minio(cfg.endpoint, access_key=access, secret_key=secret, session_token=token,
                            secure=cfg.secure, region=cfg.region or None, http_client=http)
        self._ensure_bucket()

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        from minio.error import MinioException, S3Error, ServerError

        last: BaseException | None = None
        for attempt in range(self.cfg.retries):
            try:
                return fn()
            except S3Error as e:
                if e.code in _AUTH_CODES:
                    raise StoreAuthError(
                        f"{self.description}: {what} refused ({e.code}: {e.message}); check AWS_ACCESS_KEY_ID / "
                        "AWS_SECRET_ACCESS_KEY (or MINIO_ACCESS_KEY / MINIO_SECRET_KEY) and the bucket policy") from None
                if e.code in ("NoSuchKey", "NoSuchObject"):
                    raise StoreNotFound(f"{self.description}: no key for {what}") from None
                if e.code == "NoSuchBucket":
                    raise StoreError(f"{self.description}: bucket {self.cfg.bucket!r} disappeared during {what}") from None
                last = e  # other server errors: retry
            except (MinioException, OSError, Exception) as e:  # urllib3 connection errors, timeouts
                if isinstance(e, StoreError):
                    raise
                last = e
            if attempt + 1 < self.cfg.retries:
                time.sleep(min(self.backoff * 2**attempt, 4.0))
        if isinstance(last, (S3Error, ServerError)):  # it answered: reachable, but failing
            hint = ("the server is reachable but failed the request: see its log (one that is shutting down or "
                    "out of disk fails writes: SeaweedFS answers InternalError, MinIO XMinioStorageFull)")
        else:
            hint = "check that the server is up and store.endpoint / store.secure are right"
        raise StoreUnavailable(f"{self.description}: {what} failed after {self.cfg.retries} tries "
                               f"({type(last).__name__}: {last}); {hint} (raise store.retries to wait longer)")

    def _ensure_bucket(self) -> None:
        b = self.cfg.bucket
        if not self._call(f"bucket_exists({b})", lambda: self.client.bucket_exists(b)):
            self._call(f"make_bucket({b})", lambda: self.client.make_bucket(b, location=self.cfg.region or None))

    def _put(self, key: str, data: bytes) -> None:
        import io

        self._call(f"put {key}", lambda: self.client.put_object(self.cfg.bucket, key, io.BytesIO(data), len(data),
                                                                content_type="application/json"))

    def _get(self, key: str) -> bytes:
        def get() -> bytes:
            resp = self.client.get_object(self.cfg.bucket, key)
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

        return self._call(f"get {key}", get)

    def _exists(self, key: str) -> bool:
        try:
            self._call(f"stat {key}", lambda: self.client.stat_object(self.cfg.bucket, key))
            return True
        except StoreNotFound:
            return False

    def _list(self, prefix: str) -> Iterator[str]:
        keys = self._call(f"list {prefix}", lambda: [o.object_name for o in
                                                     self.client.list_objects(self.cfg.bucket, prefix=prefix,
                                                                              recursive=True)])
        yield from keys


def open_store(store_cfg: StoreConfig) -> Store:
    """The configured back end: ``local`` (a folder at store.root) or ``s3`` (store.endpoint/bucket)."""
    if store_cfg.backend == "local":
        return LocalStore(store_cfg.root)
    return S3Store(store_cfg)
