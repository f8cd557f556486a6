"""Base-model references (rlsd.model_refs) against real servers: SeaweedFS S3 for the store, an MLflow server for
the registry. Import -> fetch gives the same bytes and the same logits; a tampered byte, an unknown name, id or
alias and a missing local path each end in one line naming the reference, exit 1, and nothing left behind."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from rlsd.cli import main
from rlsd.config import load_config
from rlsd.data.store import file_sha256, open_store
from rlsd.model_refs import ModelRefError, base_model_ref, fetch_model, parse_ref
from rlsd.models import build_tiny_model, load_model
from tests.helpers import write_addition_tasks

IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 11]])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "tiny-model"
    build_tiny_model(out, hidden_size=32, num_layers=1, num_heads=2, seed=3)
    return out


def _logits(path) -> torch.Tensor:
    with torch.no_grad():
        return load_model(path).eval()(input_ids=IDS).logits


def _files(folder: Path) -> dict[str, str]:
    return {f.relative_to(folder).as_posix(): file_sha256(f) for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.fixture
def s3(seaweed_s3, monkeypatch, request):
    for k, v in seaweed_s3.env().items():
        monkeypatch.setenv(k, v)
    bucket = "models-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    return ["store.backend=s3", f"store.endpoint={seaweed_s3.endpoint}", f"store.bucket={bucket}", "store.retries=1"]


def _cli(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()  # only this command's output
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _import(tiny, sets, capsys, name="tiny") -> str:
    argv = ["import-model", str(tiny), "--name", name]
    for s in sets:
        argv += ["--set", s]
    code, out, err = _cli(argv, capsys)
    assert code == 0, err
    ref = next(w for line in out.splitlines() for w in line.split() if w.startswith("store://models/tiny@"))
    return ref


def test_import_then_fetch_gives_the_same_files_and_logits(tiny, s3, tmp_path, capsys):
    ref = _import(tiny, s3, capsys)
    cfg = load_config(overrides=s3)
    # the manifest in the store records every file's SHA-256, equal to the originals'
    manifest = json.loads(open_store(cfg.store)._get(f"folders/tiny/{parse_ref(ref).version}.json"))
    assert {f["path"]: f["sha256"] for f in manifest["files"]} == _files(tiny)
    for which, r in (("pinned", ref), ("latest", "store://models/tiny")):
        path, info = fetch_model(cfg, r, tmp_path / which)
        assert path == tmp_path / which and info["sha256_verified"] is True
        assert info["uri"] == ref and info["version"] == parse_ref(ref).version and info["name"] == "tiny"
        assert _files(path) == _files(tiny) == info["files"]
        assert torch.equal(_logits(path), _logits(tiny))
    # importing the same folder again is the same version (no new manifest)
    assert _import(tiny, s3, capsys) == ref


def _tamper_one_byte(cfg, ref: str, file_name: str) -> None:
    store = open_store(cfg.store)
    manifest = json.loads(store._get(f"folders/tiny/{parse_ref(ref).version}.json"))
    digest = next(f for f in manifest["files"] if f["path"] == file_name)["chunks"][0]
    key = f"objects/{digest[:2]}/{digest}"
    data = bytearray(store._get(key))
    data[len(data) // 2] ^= 0x01
    store.client.put_object(cfg.store.bucket, key, io.BytesIO(bytes(data)), len(data))


def _train_argv(sets, model_path, tasks, out):
    argv = ["train", "--output", str(out), "--set", f"model.path={model_path}", "--set", f"data.train_tasks={tasks[0]}",
            "--set", f"data.eval_tasks={tasks[1]}", "--set", "tracking.enabled=false", "--set", "train.steps=1"]
    for s in sets:
        argv += ["--set", s]
    return argv


def test_a_tampered_byte_in_the_store_fails_the_fetch_and_leaves_nothing(tiny, s3, tmp_path, capsys):
    ref = _import(tiny, s3, capsys)
    cfg = load_config(overrides=s3)
    _tamper_one_byte(cfg, ref, "model.safetensors")
    with pytest.raises(ModelRefError, match=r"base model store://models/tiny@\w+: .*corrupt"):
        fetch_model(cfg, ref, tmp_path / "fetched")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no model folder, no .partial
    # through the CLI: one line naming the reference, exit 1, no output model
    tasks = write_addition_tasks(tmp_path / "tasks", 8, 4)
    code, _, err = _cli(_train_argv(s3, ref, tasks, tmp_path / "run"), capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"rlsd train: base model {ref}: ") and "corrupt" in err
    assert not (tmp_path / "run" / "final").exists()


@pytest.mark.parametrize("bad,needle", [("store://models/no-such-model", "no folder named 'no-such-model'"),
                                        ("store://models/tiny@0123456789abcdef0123", "no snapshot '0123456789abcdef0123'")])
def test_an_unknown_store_name_or_id_is_one_line_naming_it(tiny, s3, tmp_path, capsys, bad, needle):
    _import(tiny, s3, capsys)
    tasks = write_addition_tasks(tmp_path / "tasks", 8, 4)
    code, _, err = _cli(_train_argv(s3, bad, tasks, tmp_path / "run"), capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"rlsd train: base model {bad}: not in the store") and needle in err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_a_missing_local_path_is_one_line(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelRefError, match=f"base model '{missing}': no such file or folder"):
        fetch_model(load_config(), str(missing), tmp_path / "x")
    code, _, err = _cli(["import-model", str(missing)], capsys)
    assert code == 2 and err.strip() == f"rlsd import-model: --path {str(missing)!r}: no such file or folder"
    tasks = write_addition_tasks(tmp_path / "tasks", 8, 4)
    code, _, err = _cli(_train_argv([], missing, tasks, tmp_path / "run"), capsys)
    assert code == 2 and err.strip() == f"rlsd train: model.path {str(missing)!r}: no such file or folder"


def test_a_folder_that_is_not_a_model_is_refused_before_upload(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    code, _, err = _cli(["import-model", str(tmp_path / "notes"), "--set", f"store.root={tmp_path / 'store'}"], capsys)
    assert code == 1 and "is not a local model" in err
    assert not (tmp_path / "store" / "folders").exists()


def test_parse_refuses_malformed_references():
    assert parse_ref("store://models/a.b-c@00ff") == parse_ref("store://models/a.b-c@00ff")
    assert str(parse_ref("models:/m@champion")) == "models:/m@champion" and parse_ref("models:/m/3").version == "3"
    for bad in ("store://models/", "store://models/a/b", "store://models/a@XYZ", "models:/m", "models:/m@", ""):
        with pytest.raises(ModelRefError):
            parse_ref(bad)


# ----------------------------------------------------------------------------------------------
# The registry: models:/<name>@<alias>
# ----------------------------------------------------------------------------------------------


def _reg_cfg(mlflow_server, name, extra=()):
    return load_config(overrides=[f"tracking.uri={mlflow_server.url}", f"registry.model_name={name}", *extra])


def _versions(cfg) -> list[str]:
    from rlsd.registry import _client

    return sorted(mv.version for mv in _client(cfg).search_model_versions(f"name='{cfg.registry.model_name}'"))


def test_registry_alias_resolves_to_the_registered_weights(tiny, mlflow_server, tmp_path, capsys):
    from rlsd.registry import CHAMPION, _client, register_model

    cfg = _reg_cfg(mlflow_server, "refs-tiny")
    assert base_model_ref(cfg.replace(model=type(cfg.model)(path="p", continue_from="champion"))) == "p"  # none yet
    other = tmp_path / "other"
    build_tiny_model(other, hidden_size=32, num_layers=1, num_heads=2, seed=4)  # v1: different weights
    register_model(cfg, other)
    v2 = register_model(cfg, tiny)["version"]
    _client(cfg).set_registered_model_alias("refs-tiny", CHAMPION, str(v2))
    path, info = fetch_model(cfg, "models:/refs-tiny@champion", tmp_path / "champ")
    assert (info["kind"], info["version"], info["uri"]) == ("registry", str(v2), f"models:/refs-tiny/{v2}")
    assert info["sha256_verified"] is False  # registered from a local folder: MLflow's copy, fingerprinted
    assert torch.equal(_logits(path), _logits(tiny)) and not torch.equal(_logits(path), _logits(other))
    # continue_from: champion picks that version, pinned by number
    champ_cfg = cfg.replace(model=type(cfg.model)(path=str(other), continue_from="champion"))
    assert base_model_ref(champ_cfg) == f"models:/refs-tiny/{v2}"
    assert base_model_ref(cfg.replace(model=type(cfg.model)(path=str(other)))) == str(other)

    before = _versions(cfg)
    with pytest.raises(ModelRefError, match=r"base model models:/refs-tiny@nosuch: the registry has no alias @nosuch"):
        fetch_model(cfg, "models:/refs-tiny@nosuch", tmp_path / "none")
    assert not (tmp_path / "none").exists() and not (tmp_path / "none.partial").exists()
    tasks = write_addition_tasks(tmp_path / "tasks", 8, 4)
    sets = [f"tracking.uri={mlflow_server.url}", "registry.model_name=refs-tiny"]
    code, _, err = _cli(_train_argv(sets, "models:/refs-tiny@nosuch", tasks, tmp_path / "run"), capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith("rlsd train: base model models:/refs-tiny@nosuch: the registry has no alias @nosuch")
    assert _versions(cfg) == before  # nothing registered by a failed run


def test_a_version_pushed_to_the_store_is_fetched_from_the_store_hash_checked(tiny, s3, mlflow_server, tmp_path):
    from rlsd.model_refs import push_model
    from rlsd.registry import CHAMPION, _client, register_model

    cfg = _reg_cfg(mlflow_server, "refs-pushed", s3)
    pushed = push_model(cfg, tiny, "tiny")["ref"]
    v = register_model(cfg, tiny, source=pushed)["version"]
    _client(cfg).set_registered_model_alias("refs-pushed", CHAMPION, str(v))
    path, info = fetch_model(cfg, "models:/refs-pushed@champion", tmp_path / "champ")
    assert info["sha256_verified"] is True and info["store_uri"] == pushed and info["version"] == str(v)
    assert _files(path) == _files(tiny)
    _tamper_one_byte(cfg, pushed, "model.safetensors")
    with pytest.raises(ModelRefError, match=r"base model models:/refs-pushed@champion \(version \d+, store://.*corrupt"):
        fetch_model(cfg, "models:/refs-pushed@champion", tmp_path / "again")
    assert not (tmp_path / "again").exists() and not (tmp_path / "again.partial").exists()


def test_resolve_base_fetches_once_for_every_rank(tiny, tmp_path):
    """The resolved config names the fetched folder and no longer asks for the champion, so the ranks a launcher
    starts with it (`rlsd train --config <resolved>`) load that folder instead of resolving the registry again."""
    from rlsd.model_refs import import_model, resolve_base

    cfg = load_config(overrides=[f"store.root={tmp_path / 'store'}", "model.continue_from=base"])
    ref = import_model(cfg, tiny, "tiny")["ref"]
    cfg = cfg.replace(model=type(cfg.model)(path="store://models/tiny", continue_from="champion"))
    cfg = cfg.replace(tracking=type(cfg.tracking)(**{**cfg.tracking.__dict__, "uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}))
    run_cfg, info = resolve_base(cfg, tmp_path / "scratch")  # no registered model: the champion falls back to the base
    assert info["uri"] == ref and run_cfg.model.path == str(tmp_path / "scratch" / "base-model")
    assert run_cfg.model.continue_from == "base" and _files(Path(run_cfg.model.path)) == _files(tiny)
    assert load_config(overrides=[f"model.path={run_cfg.model.path}"]).model.path == run_cfg.model.path
