"""Shared builders for tests: a warm-started tiny model (cached per code version) and task files."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "test-models"


def _code_key() -> str:
    h = hashlib.sha256()
    for f in ("src/rlsd/models.py", "src/rlsd/warmstart.py", "src/rlsd/tasks.py"):
        h.update((ROOT / f).read_bytes())
    return h.hexdigest()[:12]


def warm_tiny_model() -> Path:
    """A 2-layer d=64 Llama warm-started on 1-2 digit addition until it is right about a third of the time.

    Built once per code version into .cache/test-models/ (about 20-40 s on 2 cores)."""
    out = CACHE / f"warm-{_code_key()}"
    if (out / "config.json").is_file():
        return out
    from rlsd.models import build_tiny_model
    from rlsd.tasks import addition_tasks
    from rlsd.warmstart import warm_start

    model, tok = build_tiny_model(None, hidden_size=64, num_layers=2, num_heads=2, seed=0)
    warm_start(model, tok, list(addition_tasks(2048, digits=(1, 2), seed=11, prefix="ws")),
               list(addition_tasks(48, digits=(1, 2), seed=12, prefix="wsdev")),
               max_steps=1500, lr=3e-3, target_dev_acc=0.35, eval_every=50, seed=0)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return out


def write_addition_tasks(folder: Path, n_train: int = 64, n_eval: int = 16) -> tuple[Path, Path]:
    from rlsd.tasks import addition_tasks, write_tasks

    tr, ev = folder / "train.jsonl", folder / "eval.jsonl"
    write_tasks(addition_tasks(n_train, digits=(1, 2), seed=21), tr)
    write_tasks(addition_tasks(n_eval, digits=(1, 2), seed=22, prefix="ev"), ev)
    return tr, ev


def tiny_models(root: Path, n: int, seed: int) -> list[Path]:
    """n distinct one-layer tiny models (seeds seed..seed+n-1) under root: m0, m1, ..."""
    from rlsd.models import build_tiny_model

    paths = [root / f"m{i}" for i in range(n)]
    for i, p in enumerate(paths):
        build_tiny_model(p, hidden_size=32, num_layers=1, num_heads=1, seed=seed + i)
    return paths


def registry_cfg(url: str, experiment: str, **registry: object):
    """The default recipe pointed at the MLflow server ``url`` (one HTTP try), with registry overrides."""
    import dataclasses

    from rlsd.config import RLSDConfig

    base = RLSDConfig()
    return base.replace(tracking=dataclasses.replace(base.tracking, uri=url, experiment=experiment, http_retries=1),
                        registry=dataclasses.replace(base.registry, **registry))
