"""Shared pieces of the benchmarks: machine/version header, model and task builders, metrics reading.

Not part of the library (the benchmarks measure it); kept here so that every benchmark names the machine
and versions the same way.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".cache"
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "src"))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    """One line naming the machine and the software versions that matter here."""
    import torch
    import transformers

    try:
        import deepspeed

        ds = deepspeed.__version__
    except Exception:  # noqa: BLE001 - deepspeed missing or broken: say so
        ds = "n/a"
    if torch.cuda.is_available():
        dev = f"{torch.cuda.get_device_name(0)}"
    else:
        dev = f"{cpu_name()} CPU, {os.cpu_count()} cores visible, {torch.get_num_threads()} torch thread(s)"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{_dt.date.today().isoformat()}; {dev}; load avg {load:.1f} at start; python {platform.python_version()}, "
            f"torch {torch.__version__}, transformers {transformers.__version__}, deepspeed {ds}")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# SmolLM2-135M's shape (Llama, tied embeddings), for random-init benchmarks of the real model's cost
SMOLLM2_SHAPE = {"hidden_size": 576, "num_layers": 30, "num_heads": 9, "num_kv_heads": 3, "intermediate_size": 1536,
                 "vocab_size": 49152, "max_positions": 2048}


def build_model(out: Path, *, hidden: int, layers: int, heads: int | None = None, seed: int = 0,
                shape: dict | None = None) -> Path:
    """A random-init Llama with the project's locally trained tokenizer (rlsd.models.build_tiny_model):
    d=hidden, ``layers`` layers, or the given ``shape`` (build_tiny_model's keyword arguments)."""
    from rlsd.models import build_tiny_model

    if not (out / "config.json").is_file():
        kw = shape or {"hidden_size": hidden, "num_layers": layers, "num_heads": heads or max(1, hidden // 32)}
        build_tiny_model(out, seed=seed, **kw)
    return out


def write_addition(out_dir: Path, *, n_train: int, n_eval: int, digits: tuple[int, ...]) -> tuple[Path, Path]:
    from rlsd.tasks import addition_tasks, write_tasks

    out_dir.mkdir(parents=True, exist_ok=True)
    tr, ev = out_dir / "train.jsonl", out_dir / "eval.jsonl"
    if not tr.is_file():
        write_tasks(addition_tasks(n_train, digits=digits, seed=1, prefix="tr"), tr)
    if not ev.is_file():
        write_tasks(addition_tasks(n_eval, digits=digits, seed=2, prefix="ev"), ev)
    return tr, ev


def md_table(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)


def quiet() -> None:
    """Silence DeepSpeed / transformers chatter (the tables are what matters)."""
    import logging

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in ("DeepSpeed", "deepspeed", "torch.distributed", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


def make_config(flat: dict[str, Any]) -> Any:
    """An RLSDConfig from {'section.field': value} (validated by rlsd.config.load_config)."""
    import yaml

    from rlsd.config import load_config

    tree: dict[str, dict[str, Any]] = {}
    for k, v in flat.items():
        sec, name = k.split(".", 1)
        tree.setdefault(sec, {})[name] = str(v) if isinstance(v, Path) else v
    return load_config(text=yaml.safe_dump(tree))


def grouped_bars(path: Path, categories: list[str], series: dict[str, list[float]], colors: dict[str, str],
                 ylabel: str) -> None:
    """One PNG: a group of bars per category, one bar per series (values in [0, 1])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / len(series)
    for j, (name, vals) in enumerate(series.items()):
        ax.bar([i + j * width for i in range(len(categories))], vals, width, label=name, color=colors.get(name, "#999999"))
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(categories))], categories)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
