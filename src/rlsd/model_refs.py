"""Base-model references: where a train or evaluate step gets the model it starts from.

One resolver for three kinds of reference (``model.path`` in a recipe, or the ``base_model`` pipeline parameter):

* a local path (a ``save_pretrained`` folder or a ``.gguf`` file): used in place, as before;
* ``store://models/<name>`` (the newest import) or ``store://models/<name>@<id>`` (one version): a folder
  written once by ``rlsd import-model`` (:func:`import_model`, built on ``Store.upload_folder``: content-addressed
  chunks, then a manifest of every file's size and SHA-256, then the name's pointer). :func:`fetch_model`
  downloads it into the step's own scratch folder and checks every chunk and every file against the manifest;
* ``models:/<name>@<alias>`` (e.g. ``@champion``) or ``models:/<name>/<version>``: a version of the MLflow
  registry. When the version was registered from a model the train step pushed to the store (its
  ``rlsd.model_source`` tag is a ``store://`` reference) the files come from the store, hash-checked; otherwise
  from MLflow's artifact store (recorded as not hash-verified).

``model.continue_from: champion`` (:func:`base_model_ref`) makes a run start from the current @champion of
``registry.model_name`` when the registry has one, else from ``model.path``: the retraining loop. In the pipeline
:func:`resolve_models` pins both the base and the champion to immutable references once, before train and
evaluate, which then take them as parameters (``model.continue_from: base``).

Failures raise :class:`ModelRefError` with one line naming the reference (a name, id or alias that does not
exist, a file whose hash does not match, a local path that does not exist). A failed fetch leaves nothing at
the destination: files are assembled in ``<dest>.partial`` and renamed into place only when all are whole.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlsd.config import RLSDConfig
from rlsd.verifiers.graders import BASE_ENV, base_folder

STORE_SCHEME = "store://models/"
REGISTRY_SCHEME = "models:/"
SOURCE_TAG = "rlsd.model_source"  # rlsd.registry.TAG_MODEL_SOURCE: the pushed store reference of a version
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"


class ModelRefError(RuntimeError):
    """A base-model reference that cannot be resolved or fetched; the message names it."""


@dataclass(frozen=True)
class ModelRef:
    """kind: path | store | registry. name: the path, store folder name or registered model name.
    version: the store folder id, the registry version, or None (latest / a local path). alias: registry alias."""

    kind: str
    name: str
    version: str | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.kind == "store":
            return STORE_SCHEME + self.name + (f"@{self.version}" if self.version else "")
        if self.kind == "registry":
            return REGISTRY_SCHEME + self.name + (f"@{self.alias}" if self.alias else f"/{self.version}")
        return self.name


def is_reference(text: str) -> bool:
    """True for a store or registry reference (anything but a local path)."""
    return str(text).startswith((STORE_SCHEME, REGISTRY_SCHEME))


def parse_ref(text: str) -> ModelRef:
    """The reference in ``text``; a malformed store or registry reference is refused naming the form expected."""
    text = str(text).strip()
    if text.startswith(STORE_SCHEME):
        m = re.fullmatch(rf"({_NAME})(?:@([0-9a-f]{{1,64}}))?", text[len(STORE_SCHEME):])
        if not m:
            raise ModelRefError(f"base model {text!r}: expected store://models/<name> or store://models/<name>@<id>")
        return ModelRef("store", m.group(1), m.group(2))
    if text.startswith(REGISTRY_SCHEME):
        m = re.fullmatch(rf"({_NAME})(?:@([A-Za-z0-9_-]+)|/([0-9]+))", text[len(REGISTRY_SCHEME):])
        if not m:
            raise ModelRefError(f"base model {text!r}: expected models:/<name>@<alias> or models:/<name>/<version>")
        return ModelRef("registry", m.group(1), m.group(3), m.group(2))
    if not text:
        raise ModelRefError("base model: empty reference; give a local folder, store://models/<name> or models:/<name>@<alias>")
    return ModelRef("path", text)


# ----------------------------------------------------------------------------------------------
# Import and push (a folder -> a versioned store folder)
# ----------------------------------------------------------------------------------------------


def push_model(cfg: RLSDConfig, folder: str | Path, name: str) -> dict[str, Any]:
    """Upload a model folder to the store as folder ``name``; returns {ref (pinned to the id), name, folder_id,
    files, bytes}. Refuses a folder that is not a model (no config.json or .gguf) before uploading anything."""
    from rlsd.data.store import StoreError, open_store
    from rlsd.models import _resolve

    folder = Path(folder)
    if not folder.is_dir():
        raise ModelRefError(f"model folder {str(folder)!r} does not exist or is not a folder")
    try:
        _resolve(folder)
    except (FileNotFoundError, ValueError) as e:
        raise ModelRefError(str(e)) from None
    if not re.fullmatch(_NAME, name):
        raise ModelRefError(f"model name {name!r}: use letters, digits, '.', '_' or '-' (no '/')")
    try:
        m = open_store(cfg.store).upload_folder(folder, name)
    except StoreError as e:
        raise ModelRefError(f"pushing {str(folder)!r} as {STORE_SCHEME}{name}: {e}") from None
    return {"ref": str(ModelRef("store", name, m["folder_id"])), "name": name, "folder_id": m["folder_id"],
            "files": len(m["files"]), "bytes": m["bytes"]}


def import_model(cfg: RLSDConfig, path: str | Path, name: str | None = None) -> dict[str, Any]:
    """``rlsd import-model``: a local model folder into the store once (named after the folder unless ``name``)."""
    name = name or re.sub(r"[^A-Za-z0-9._-]", "-", Path(path).resolve().name).lstrip(".-_") or "model"
    return push_model(cfg, path, name)


# ----------------------------------------------------------------------------------------------
# Fetch (a reference -> a local folder, hash-checked)
# ----------------------------------------------------------------------------------------------


def _clean(dest: Path) -> None:
    for p in (dest, dest.with_name(dest.name + ".partial")):
        if p.exists():
            shutil.rmtree(p, ignore_errors=True)


def _fetch_store(cfg: RLSDConfig, ref: ModelRef, dest: Path, shown: str) -> dict[str, Any]:
    from rlsd.data.store import StoreError, StoreNotFound, open_store

    store = open_store(cfg.store)
    try:
        manifest = store.download_folder(ref.name, dest, folder_id=ref.version or "latest")
    except StoreNotFound as e:
        _clean(dest)
        raise ModelRefError(f"base model {shown}: not in the store ({e})") from None
    except StoreError as e:
        _clean(dest)
        raise ModelRefError(f"base model {shown}: {e}") from None
    except BaseException:
        _clean(dest)
        raise
    return {"kind": "store", "name": ref.name, "version": manifest["folder_id"],
            "uri": str(ModelRef("store", ref.name, manifest["folder_id"])), "sha256_verified": True,
            "files": {f["path"]: f["sha256"] for f in manifest["files"]}}


def _fetch_registry(cfg: RLSDConfig, ref: ModelRef, dest: Path, shown: str) -> dict[str, Any]:
    import logging

    from mlflow.exceptions import MlflowException

    from rlsd.data.store import file_sha256
    from rlsd.registry import _client

    # a first look at a fresh sqlite registry logs its table set-up at INFO: not the user's business on stderr
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    client = _client(cfg)
    try:
        mv = (client.get_model_version_by_alias(ref.name, ref.alias) if ref.alias
              else client.get_model_version(ref.name, ref.version))
    except MlflowException as e:
        what = f"alias @{ref.alias}" if ref.alias else f"version {ref.version}"
        raise ModelRefError(f"base model {shown}: the registry has no {what} of model {ref.name!r} "
                            f"({e.error_code})") from None
    version = str(mv.version)
    source = (mv.tags or {}).get(SOURCE_TAG, "")
    info = {"kind": "registry", "name": ref.name, "version": version, "uri": f"{REGISTRY_SCHEME}{ref.name}/{version}",
            "alias": ref.alias}
    if source.startswith(STORE_SCHEME):  # registered from a pushed folder: the store's hash-checked copy
        got = _fetch_store(cfg, parse_ref(source), dest, f"{shown} (version {version}, {source})")
        return {**info, "store_uri": got["uri"], "sha256_verified": True, "files": got["files"]}
    import mlflow

    tmp = dest.with_name(dest.name + ".partial")
    _clean(dest)
    try:
        parts = mlflow.transformers.load_model(info["uri"], return_type="components")
        parts["model"].save_pretrained(tmp)
        parts["tokenizer"].save_pretrained(tmp)
        tmp.rename(dest)
    except BaseException:
        _clean(dest)
        raise
    files = {f.relative_to(dest).as_posix(): file_sha256(f) for f in sorted(dest.rglob("*")) if f.is_file()}
    return {**info, "sha256_verified": False, "files": files}


def fetch_model(cfg: RLSDConfig, ref: str | ModelRef, dest: str | Path) -> tuple[Path, dict[str, Any]]:
    """(local model path, info) for ``ref``. A local path is returned as it is (info kind "path"); a store or
    registry reference is written to ``dest`` (which must not exist), every file checked against its
    SHA-256, and must hold a model. info: {kind, name, version, uri, sha256_verified, files: {path: sha256}}."""
    from rlsd.models import _resolve

    r = ref if isinstance(ref, ModelRef) else parse_ref(ref)
    shown = str(r)
    if r.kind == "path":  # used in place, as before (loading it says what is wrong with a folder that is there)
        if not Path(r.name).exists():
            raise ModelRefError(f"base model {shown!r}: no such file or folder")
        return Path(r.name), {"kind": "path", "name": r.name, "version": None, "uri": r.name, "sha256_verified": False}
    dest = Path(dest)
    if dest.exists():
        raise ModelRefError(f"base model {shown}: destination {str(dest)!r} exists; give a new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    info = _fetch_store(cfg, r, dest, shown) if r.kind == "store" else _fetch_registry(cfg, r, dest, shown)
    try:
        _resolve(dest)
    except (FileNotFoundError, ValueError):
        _clean(dest)
        raise ModelRefError(f"base model {shown}: the fetched folder holds no model (no config.json or .gguf)") from None
    return dest, {**info, "ref": shown}


# ----------------------------------------------------------------------------------------------
# Checkpoints in the store (train.checkpoint_store)
# ----------------------------------------------------------------------------------------------


def checkpoint_folder(ckpt_dir: str | Path) -> str:
    """The store folder that mirrors the checkpoints of ``ckpt_dir`` (in the train step: <checkpoint_dir>/<key of its inputs>)."""
    return "checkpoints-" + (re.sub(r"[^A-Za-z0-9._-]", "-", Path(ckpt_dir).name).strip(".-") or "run")[:100]


def push_checkpoint(cfg: RLSDConfig, path: str | Path) -> str:
    """Upload one complete checkpoint folder (``<ckpt_dir>/step-N``, trainer_state.json written last) as the newest
    version of :func:`checkpoint_folder`; returns the folder id."""
    from rlsd.data.store import open_store

    path = Path(path)
    return open_store(cfg.store).upload_folder(path, checkpoint_folder(path.parent))["folder_id"]


def restore_checkpoint(cfg: RLSDConfig, ckpt_dir: str | Path) -> Path | None:
    """When ``ckpt_dir`` holds no complete checkpoint, download the newest one pushed to the store (every file
    hash-checked) as ``ckpt_dir/step-N``; returns its path, or None when there is nothing to restore."""
    import json

    from rlsd.data.store import StoreNotFound, open_store
    from rlsd.train import latest_checkpoint

    ckpt_dir = Path(ckpt_dir)
    if latest_checkpoint(ckpt_dir) is not None:
        return None
    tmp = ckpt_dir / ".restoring"
    _clean(tmp)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    try:
        open_store(cfg.store).download_folder(checkpoint_folder(ckpt_dir), tmp)
    except StoreNotFound:
        return None
    except BaseException:
        _clean(tmp)
        raise
    step = int(json.loads((tmp / "trainer_state.json").read_text())["step"])
    dest = ckpt_dir / f"step-{step}"
    _clean(dest)
    tmp.rename(dest)
    return dest


def base_model_ref(cfg: RLSDConfig) -> str:
    """The reference a training run starts from: with ``model.continue_from: champion`` the version @champion of
    ``registry.model_name`` points at now (pinned by version: the alias may move during the run) when there is
    one, else ``model.path``."""
    if cfg.model.continue_from == "champion":
        from rlsd.registry import current_champion

        champ = current_champion(cfg)
        if champ is not None:
            return f"{REGISTRY_SCHEME}{champ['name']}/{champ['version']}"
    return cfg.model.path


def pin_ref(cfg: RLSDConfig, ref: str) -> str:
    """``ref`` made immutable: ``store://models/<name>`` -> ``store://models/<name>@<id of the newest import>``,
    ``models:/<name>@<alias>`` -> ``models:/<name>/<version the alias points at now>``; a pinned reference or a
    local path is returned as it is. An unknown name or alias raises :class:`ModelRefError` naming it."""
    r = parse_ref(ref)
    if r.kind == "store" and not r.version:
        from rlsd.data.store import StoreError, StoreNotFound, open_store

        store = open_store(cfg.store)
        try:  # the name's pointer (Store.upload_folder writes it last; download_folder reads it the same way)
            folder_id = store._get(f"refs/folders/{r.name}").decode().strip()
        except StoreNotFound:
            raise ModelRefError(f"base model {ref}: the store holds no model named {r.name!r}; "
                                f"import it first (rlsd import-model)") from None
        except StoreError as e:
            raise ModelRefError(f"base model {ref}: {e}") from None
        return str(ModelRef("store", r.name, folder_id))
    if r.kind == "registry" and r.alias:
        import logging

        from mlflow.exceptions import MlflowException

        from rlsd.registry import _client

        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
        try:
            mv = _client(cfg).get_model_version_by_alias(r.name, r.alias)
        except MlflowException as e:
            raise ModelRefError(f"base model {ref}: the registry has no alias @{r.alias} of model {r.name!r} "
                                f"({e.error_code})") from None
        return str(ModelRef("registry", r.name, str(mv.version)))
    return str(r)


def resolve_models(cfg: RLSDConfig) -> dict[str, str]:
    """What a pipeline run's train and evaluate steps use, pinned once before them (the ``resolve-models`` step,
    never cached): {"base_model": the immutable reference train starts from (the current champion's
    ``models:/<name>/<version>`` with ``model.continue_from: champion`` when there is one, else ``model.path``
    pinned by :func:`pin_ref`), "champion": ``models:/<name>/<version>`` of the current @champion of
    ``registry.model_name`` that evaluate compares with, or "" when there is none}.

    Pinned, the two are plain parameters of train and evaluate, so the KFP cache key of those steps changes
    exactly when the model they use does (a moved @champion or a new import is a new key, never a stale hit)."""
    from rlsd.registry import current_champion

    champ = current_champion(cfg)
    champion = f"{REGISTRY_SCHEME}{champ['name']}/{champ['version']}" if champ else ""
    if cfg.model.continue_from == "champion" and champion:
        base = champion
    else:
        base = pin_ref(cfg, cfg.model.path)
    return {"base_model": base, "champion": champion}


def resolve_base(cfg: RLSDConfig, scratch: str | Path) -> tuple[RLSDConfig, dict[str, Any]]:
    """``cfg`` with ``model.path`` pointing at a local copy of its base model (fetched into
    ``<scratch>/base-model`` unless it is a local path) and ``model.continue_from: base``, and the info of what
    was fetched."""
    ref = base_model_ref(cfg)
    path, info = fetch_model(cfg, ref, Path(scratch) / "base-model")
    # resolved once: a launcher's ranks (`rlsd train --config <this config>`) load this folder, not the champion again
    resolved = type(cfg.model)(**{**cfg.model.__dict__, "path": str(path), "continue_from": "base"})
    return cfg.replace(model=resolved), info


@contextmanager
def graders_base(cfg: RLSDConfig, needed: bool) -> Iterator[None]:
    """A block whose graders' ``model: base`` needs the run's base model (``needed``) gets a folder of it: the one
    this process already names (config load names a local ``model.path``, train the folder it loads), else
    ``model.path`` fetched hash-checked into a temporary folder for the block. A step that grades without any
    model (ingest, validate, a similarity grader) fetches nothing."""
    import os

    current = os.environ.get(BASE_ENV, "")
    if not needed or (current and Path(current).is_dir()):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="rlsd-grader-base-") as tmp:
        path, _ = fetch_model(cfg, cfg.model.path, Path(tmp) / "model")
        with base_folder(path):
            yield
