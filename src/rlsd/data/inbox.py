"""The inbox: where ticket exports and manuals land before ingest, and the sources ingest reads.

A source is a local file or folder, or a store prefix ``s3://<bucket>/<prefix>/`` (one object when the URI
names one: ``s3://<bucket>/inbox/tickets/export.jsonl``). The configured inbox is ``store.inbox`` under the
store: ``s3://<store.bucket>/<store.inbox>/tickets/`` and ``.../manuals/`` (backend ``local``: the folders
``<store.root>/<store.inbox>/tickets`` and ``.../manuals``). ``rlsd ingest`` with no inputs, and the pipeline
with its ``manuals`` / ``tickets`` parameters left empty, read the configured inbox.

Objects are read through the project's S3 client (``minio``; endpoint and TLS from ``store.endpoint`` /
``store.secure``, credentials only from the environment, as rlsd.data.store) and streamed, 1 MiB at a time, into
a scratch folder under the object's own file name (so its suffix picks the reader), hashing the bytes on the way;
the ingest then reads the local copies with the ordinary readers and records each source under its s3:// URI.

**Only what is new.** Store prefixes (s3:// URIs and the configured inbox, local or S3) are incremental: a file
whose SHA-256 equals a source recorded by any snapshot reachable from ``refs/latest`` was already ingested and is
left out without being parsed (:func:`ingested_hashes`), and so is a file skipped before for its type (same
bytes, same kind, same suffix); renamed to a type that is read, the same bytes are new. A local path named explicitly
is always read (the operator's choice; re-reading it changes nothing, see rlsd.data.ingest). Nothing here deletes,
moves or rewrites an inbox object: reading is list + get only, and :func:`put` refuses to replace an object that
holds other content.

**Bad input fails before the store is touched:** a malformed URI, a bucket that does not exist, credentials
the server refuses: :class:`InboxError`, one line naming the URI. An existing bucket with nothing under the
prefix is an empty source, not an error (0 new tickets; the pipeline's gate then skips training).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlsd.config import RLSDConfig, StoreConfig
from rlsd.data.store import S3Store, Store, StoreError, file_sha256

KINDS = ("manuals", "tickets")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_CHUNK = 1 << 20


class InboxError(ValueError):
    """A source that cannot be read (malformed URI, missing bucket, refused credentials); nothing was written."""


def is_uri(source: str | Path) -> bool:
    """True for anything written as a URI (``s3://...``, ``s3:...``, ``http://...``): it is never a local path."""
    s = str(source)
    return s[:3].lower() == "s3:" or bool(re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", s))


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ("bucket", "some/prefix"); InboxError naming the URI when malformed."""
    m = re.fullmatch(r"s3://([^/]*)(?:/(.*))?", uri, flags=re.S)
    if not m:
        raise InboxError(f"malformed store URI {uri!r}: write s3://<bucket>/<prefix>/ (e.g. s3://rlsd/inbox/tickets/)")
    bucket, key = m.group(1), m.group(2) or ""
    if not _BUCKET.fullmatch(bucket) or ".." in bucket or re.fullmatch(r"\d+\.\d+\.\d+\.\d+", bucket):
        raise InboxError(f"malformed store URI {uri!r}: bucket name {bucket!r} is not a valid S3 bucket name "
                         "(3-63 lowercase letters, digits, '.' or '-')")
    parts = key.split("/")
    bad = [p for p in parts[:-1] if p in ("", ".", "..")] + [p for p in parts[-1:] if p in (".", "..")]
    if bad or any(ord(c) < 32 or c == "\\" for c in key):
        raise InboxError(f"malformed store URI {uri!r}: the prefix must not hold empty, '.' or '..' segments, "
                         "backslashes or control characters")
    return bucket, key


def configured_inbox(cfg: RLSDConfig, kind: str) -> str:
    """The configured inbox of ``kind`` (manuals | tickets): an s3:// URI, or a local folder for backend local."""
    if kind not in KINDS:
        raise InboxError(f"inbox kind must be one of {', '.join(KINDS)}, got {kind!r}")
    s = cfg.store
    if s.backend == "s3":
        return f"s3://{s.bucket}/{s.inbox}/{kind}/"
    return str(Path(s.root) / s.inbox / kind)


def skipped_key(digest: str, kind: str, name: str) -> str:
    """How a skipped file is known: its SHA-256 with the kind and suffix it was skipped for. A file is skipped for
    its suffix in its inbox, not for its bytes: the same bytes renamed to a type that is read (export.txt ->
    export.jsonl) or moved to the other inbox (a manual put under tickets/) are new, never "already ingested"."""
    kind = "manuals" if kind in ("manual", "manuals") else kind
    return f"{digest}|{kind}|{Path(name).suffix.lower()}"


def ingested_hashes(store: Store) -> set[str]:
    """What the snapshots reachable from refs/latest (following ``previous``) recorded: the SHA-256 of every
    source file (read, whatever its name) and the :func:`skipped_key` of every skipped file."""
    seen: set[str] = set()
    sid, visited = store.latest(), set()
    while sid and sid not in visited:
        visited.add(sid)
        man = store.read_manifest(sid)
        seen.update(e["sha256"] for e in man.get("sources", []) if e.get("sha256"))
        seen.update(skipped_key(e["sha256"], e.get("kind", ""), e.get("path", "")) for e in man.get("skipped", [])
                    if e.get("sha256"))
        sid = man.get("previous")
    return seen


# ----------------------------------------------------------------------------------------------
# Reading a bucket (never creating it)
# ----------------------------------------------------------------------------------------------


class _Bucket(S3Store):
    """Read/write access to one existing bucket with the store's retry and error policy; unlike S3Store it never
    creates the bucket: a missing one is an InboxError naming the URI."""

    def __init__(self, store_cfg: StoreConfig, bucket: str, uri: str) -> None:
        self.uri = uri
        super().__init__(dataclasses.replace(store_cfg, backend="s3", bucket=bucket))

    def _ensure_bucket(self) -> None:
        b = self.cfg.bucket
        if not self._call(f"bucket_exists({b})", lambda: self.client.bucket_exists(b)):
            raise InboxError(f"{self.uri}: bucket {b!r} does not exist on {self.description.rsplit('/', 1)[0]} "
                             "(create it, or fix store.inbox / the URI)")

    def objects(self, key: str) -> list[tuple[str, int]]:
        """(key, size) of the object ``key`` itself when it exists and does not end in '/', else of every object
        under ``key/`` (folder markers left out), sorted."""
        if key and not key.endswith("/"):
            if self._exists(key):
                st = self._call(f"stat {key}", lambda: self.client.stat_object(self.cfg.bucket, key))
                return [(key, int(st.size or 0))]
            key += "/"
        found = self._call(f"list {key or '/'}", lambda: [(o.object_name, int(o.size or 0)) for o in
                                                          self.client.list_objects(self.cfg.bucket, prefix=key,
                                                                                   recursive=True)])
        return sorted((k, n) for k, n in found if not k.endswith("/"))

    def download(self, key: str, dest: Path) -> str:
        """Stream object ``key`` into ``dest`` (1 MiB reads); returns the SHA-256 of the bytes written."""
        def get() -> str:
            h = hashlib.sha256()
            resp = self.client.get_object(self.cfg.bucket, key)
            try:
                with dest.open("wb") as f:
                    for block in resp.stream(_CHUNK):
                        h.update(block)
                        f.write(block)
            finally:
                resp.close()
                resp.release_conn()
            return h.hexdigest()

        return self._call(f"get {key}", get)


def _open_bucket(cfg: RLSDConfig, uri: str) -> tuple[_Bucket, str]:
    bucket, key = parse_s3_uri(uri)
    try:
        return _Bucket(cfg.store, bucket, uri), key
    except InboxError:
        raise
    except StoreError as e:
        raise InboxError(f"{uri}: {e}") from None


# ----------------------------------------------------------------------------------------------
# Sources -> local files for the readers
# ----------------------------------------------------------------------------------------------


@dataclass
class Listed:
    """One object of a store prefix, listed but not yet read."""

    uri: str
    key: str
    bytes: int
    bucket: _Bucket = field(repr=False)


@dataclass
class Sources:
    """Resolved inputs of one ingest: local paths to expand as today, and objects / inbox files that are
    incremental (left out when already ingested)."""

    local: dict[str, list[Path]] = field(default_factory=lambda: {k: [] for k in KINDS})
    objects: dict[str, list[Listed]] = field(default_factory=lambda: {k: [] for k in KINDS})
    inbox_folders: dict[str, list[Path]] = field(default_factory=lambda: {k: [] for k in KINDS})
    described: list[str] = field(default_factory=list)  # what was read, for messages

    @property
    def incremental(self) -> bool:
        return any(self.objects[k] or self.inbox_folders[k] for k in KINDS) or not any(self.local[k] for k in KINDS)


def resolve_sources(cfg: RLSDConfig, manuals: Iterable[str | Path] = (), tickets: Iterable[str | Path] = ()
                    ) -> Sources:
    """Check every source and list the objects of every store prefix, before anything is written anywhere.

    No manuals and no tickets at all: the configured inbox (both kinds). Raises InboxError for a malformed URI,
    a missing bucket or refused credentials; a local path that does not exist is left to the caller (as before).
    """
    given = {"manuals": [str(x) for x in manuals], "tickets": [str(x) for x in tickets]}
    use_inbox = not given["manuals"] and not given["tickets"]
    out = Sources()
    buckets: dict[str, _Bucket] = {}
    for kind in KINDS:
        names = [configured_inbox(cfg, kind)] if use_inbox else given[kind]
        for name in names:
            out.described.append(name)
            if not is_uri(name):
                if use_inbox:  # the local store's inbox: a folder that may not exist yet (= empty)
                    out.inbox_folders[kind].append(Path(name))
                else:
                    out.local[kind].append(Path(name))
                continue
            if not name.startswith("s3://"):
                raise InboxError(f"malformed store URI {name!r}: only s3://<bucket>/<prefix>/ is read (or a local path)")
            bucket_name, _ = parse_s3_uri(name)
            if bucket_name not in buckets:
                buckets[bucket_name] = _open_bucket(cfg, name)[0]
            b = buckets[bucket_name]
            _, key = parse_s3_uri(name)
            try:
                listed = b.objects(key)
            except StoreError as e:
                raise InboxError(f"{name}: {e}") from None
            out.objects[kind] += [Listed(uri=f"s3://{bucket_name}/{k}", key=k, bytes=n, bucket=b) for k, n in listed]
    return out


def _safe_name(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    return "_" if name in ("", ".", "..") else name


def fetch(sources: Sources, kind: str, scratch: Path, known: set[str]) -> tuple[list[Path], dict[Path, str], list[dict]]:
    """The objects and inbox files of ``kind`` that are new: (local copies to read, {copy: s3 URI or inbox path},
    already ingested: [{"path", "sha256", "bytes"}]). Objects are streamed into ``scratch/<kind>/<n>/<file name>``
    one at a time; a copy whose SHA-256 is in ``known`` is deleted again at once, so the scratch folder holds only
    new files. Inbox folder files are hashed in place and never copied."""
    files: list[Path] = []
    names: dict[Path, str] = {}
    already: list[dict[str, Any]] = []
    for i, obj in enumerate(sources.objects[kind]):
        dest = scratch / kind / str(i) / _safe_name(obj.key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            digest = obj.bucket.download(obj.key, dest)
        except StoreError as e:
            raise InboxError(f"{obj.uri}: {e}") from None
        if digest in known or skipped_key(digest, kind, dest.name) in known:
            already.append({"path": obj.uri, "sha256": digest, "bytes": dest.stat().st_size})
            shutil.rmtree(dest.parent)
            continue
        files.append(dest)
        names[dest] = obj.uri
    for folder in sources.inbox_folders[kind]:
        for f in _walk(folder):
            digest = file_sha256(f)
            if digest in known or skipped_key(digest, kind, f.name) in known:
                already.append({"path": str(f), "sha256": digest, "bytes": f.stat().st_size})
            else:
                files.append(f)
    return files, names, already


def _walk(folder: Path) -> Iterator[Path]:
    """Regular files under an inbox folder (symlinks not followed: nothing outside the inbox is read)."""
    if not folder.is_dir():
        return
    for f in sorted(folder.rglob("*")):
        if f.is_file() and not f.is_symlink() and not f.name.startswith(".tmp-"):
            yield f


# ----------------------------------------------------------------------------------------------
# Putting files into the inbox
# ----------------------------------------------------------------------------------------------


def put(cfg: RLSDConfig, kind: str, files: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Upload ``files`` into the configured inbox of ``kind`` under their file names.

    Never replaces other content: when the inbox already holds an object of that name with other bytes the whole
    call is refused (InboxError naming it; nothing uploaded): rename the file. The same bytes under the same name
    are left as they are (``"status": "unchanged"``). Every name is checked before the first upload.
    Returns [{"path": local file, "uri": where it is, "sha256", "bytes", "status": "uploaded" | "unchanged"}].
    """
    paths = [Path(f) for f in files]
    if not paths:
        raise InboxError("inbox put: name at least one file")
    for p in paths:
        if not p.is_file():
            raise InboxError(f"inbox put: {str(p)!r} is not a file")
    names = [p.name for p in paths]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InboxError(f"inbox put: two files share the name {dup[0]!r}; the inbox keys files by name, rename one")
    target = configured_inbox(cfg, kind)
    plan = [(p, file_sha256(p)) for p in paths]
    if is_uri(target):
        S3Store(cfg.store)  # the store's own bucket: created on first use, as every store write does
        b, prefix = _open_bucket(cfg, target)
        return _put_s3(b, target, prefix, plan)
    return _put_local(Path(target), plan)


def _check_names(plan: list[tuple[Path, str]], where: Callable[[Path], str], held: Callable[[Path], str | None],
                 verb: str) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """Every name checked before anything is written. ``held(p)`` is the SHA-256 the inbox holds under p's name
    (None: nothing). Returns the report rows and the (file, digest) pairs still to write; InboxError when a name
    holds other bytes."""
    out, todo = [], []
    for p, digest in plan:
        have = held(p)
        if have is not None and have != digest:
            raise InboxError(f"inbox put: {where(p)} already holds other content (sha256 {have[:12]}..., the file "
                             f"{str(p)!r} has {digest[:12]}...); nothing was {verb}: rename the file")
        if have is None:
            todo.append((p, digest))
        out.append({"path": str(p), "uri": where(p), "sha256": digest, "bytes": p.stat().st_size,
                    "status": "unchanged" if have else "uploaded"})
    return out, todo


def _put_s3(b: _Bucket, target: str, prefix: str, plan: list[tuple[Path, str]]) -> list[dict[str, Any]]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="rlsd-inbox-") as tmp:
        def held(p: Path) -> str | None:
            key = prefix + p.name
            return b.download(key, Path(tmp) / "held") if b._exists(key) else None

        out, todo = _check_names(plan, lambda p: target + p.name, held, "uploaded")
    for p, digest in todo:  # the digest the plan already computed: each file is hashed once
        key = prefix + p.name
        b._call(f"put {key}", lambda p=p, key=key, digest=digest: b.client.fput_object(
            b.cfg.bucket, key, str(p), metadata={"sha256": digest}))
    return out


def _put_local(folder: Path, plan: list[tuple[Path, str]]) -> list[dict[str, Any]]:
    import os
    import tempfile

    out, todo = _check_names(plan, lambda p: str(folder / p.name),
                             lambda p: file_sha256(folder / p.name) if (folder / p.name).exists() else None, "copied")
    folder.mkdir(parents=True, exist_ok=True)
    for p, _ in todo:  # a temporary name, then a hard link that fails if the name was taken meanwhile
        dest = folder / p.name
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        os.close(fd)
        try:
            shutil.copyfile(p, tmp)
            os.link(tmp, dest)
        except FileExistsError:
            raise InboxError(f"inbox put: {str(dest)!r} appeared while copying; nothing was replaced: run again") from None
        finally:
            Path(tmp).unlink(missing_ok=True)
    return out
