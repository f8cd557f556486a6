"""Load: ingest 100,000 tickets and ~1 GB of manuals with bounded memory; report peak RSS and time.

    PYTHONPATH=src:. python benchmarks/load.py [--scale 1.0] [--sizes 0.25,0.5,1] [--out benchmarks/results/load.md]

Inputs are generated on the fly into a temporary folder (deleted afterwards): ``--scale`` 1.0 means
100,000 tickets (JSONL, 10 export files) and 1 GB of Markdown manuals (files of ~8 MB, a heading every
~40 lines, e-mail addresses and IPs for the redactor to find). Each size runs in a FRESH child process
(ru_maxrss is a process high-water mark), ingesting into a local folder store, and reports its peak RSS
and wall time; the target is a peak RSS flat in the input size, so the script prints the ratio of the
largest size's peak to the smallest's (1.0 = perfectly flat; the input grows by sizes[-1] / sizes[0]).
The record index (id -> object hash) is built in a SQLite scratch file and written as shards
(rlsd.data.index), so it does not grow the peak either; its page cache is capped at 16 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TICKETS_AT_1 = 100_000
MANUAL_BYTES_AT_1 = 1_000_000_000
MANUAL_FILE_BYTES = 8_000_000
WORDS = ["gateway", "tunnel", "firmware", "reset", "badge", "reader", "port", "backup", "appliance", "warranty", "sensor", "hub", "print", "server", "queue", "admin", "password", "rotate", "certificate", "renew", "latency", "throughput", "packet", "retry", "timeout", "limit", "volume", "restore", "snapshot", "schedule", "mirror", "cable", "power", "supply", "fan", "alarm", "threshold", "calibrate"]


def _para(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words)).capitalize() + "."


def generate(folder: Path, scale: float, seed: int = 0) -> tuple[Path, Path, int, int]:
    """Write the manuals and ticket exports for ``scale``; returns (manuals dir, tickets dir, n_tickets, bytes)."""
    rng = random.Random(seed)
    mdir, tdir = folder / "manuals", folder / "tickets"
    mdir.mkdir(parents=True)
    tdir.mkdir(parents=True)
    target = int(MANUAL_BYTES_AT_1 * scale)
    written, k = 0, 0
    block = []  # a pool of ~200 KB of varied text, cycled with per-file headings (generation stays fast)
    for i in range(400):
        block.append(_para(rng, rng.randint(30, 90)) + (f" Contact ops{i}@example.com or 10.0.{i % 250}.7." if i % 7 == 0 else ""))
    while written < target:
        size = min(MANUAL_FILE_BYTES, target - written)
        with (mdir / f"manual-{k:04d}.md").open("w") as f:
            n, h = 0, 0
            while n < size:
                if h % 40 == 0:
                    line = f"{'#' * (1 + (h // 40) % 3)} Chapter {k}.{h // 40} {rng.choice(WORDS)}\n\n"
                else:
                    line = block[(h * 31 + k) % len(block)] + "\n\n"
                f.write(line)
                n += len(line)
                h += 1
        written += size
        k += 1
    n_tickets = int(TICKETS_AT_1 * scale)
    per_file = max(1, -(-n_tickets // 10))
    for j in range(0, n_tickets, per_file):
        with (tdir / f"export-{j // per_file:02d}.jsonl").open("w") as f:
            for i in range(j, min(n_tickets, j + per_file)):
                f.write(json.dumps({
                    "id": f"LD-{i:07d}", "created": "2024-03-01T10:00:00Z", "updated": f"2024-03-{1 + i % 28:02d}T10:00:00Z",
                    "title": f"{rng.choice(WORDS)} question {i}", "body": _para(rng, rng.randint(20, 60))
                    + f" Reach me at user{i}@example.com.", "status": "resolved", "resolution": _para(rng, 12),
                    "resolution_verified": i % 3 == 0, "answer": str(i % 97), "answer_type": "numeric"}) + "\n")
    return mdir, tdir, n_tickets, written


def worker(scale: float, folder: Path) -> dict:
    """One size in this process: generate, ingest into a local store under ``folder``, report peak RSS and time."""
    sys.path[:0] = [str(ROOT / "src"), str(ROOT)]
    from rlsd.config import load_config
    from rlsd.data.ingest import ingest
    from rlsd.data.store import LocalStore

    t0 = time.perf_counter()
    mdir, tdir, n_tickets, manual_bytes = generate(folder / "in", scale)
    t_gen = time.perf_counter() - t0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    rep = ingest(load_config(), manuals=[mdir], tickets=[tdir], store=LocalStore(folder / "store"))
    t_ingest = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"scale": scale, "tickets": n_tickets, "manual_mb": manual_bytes / 1e6,
            "input_mb": rep["bytes_read"] / 1e6, "sections": rep["counts"]["sections"],
            "stored": rep["counts"]["stored"], "quarantined": rep["counts"]["quarantined"],
            "objects": rep["objects_written"], "generate_s": round(t_gen, 1), "ingest_s": round(t_ingest, 1),
            "mb_per_s": round(rep["bytes_read"] / 1e6 / t_ingest, 2), "rss_after_imports_mb": round(rss_before, 1),
            "peak_rss_mb": round(peak, 1)}


def step_worker(step: str, folder: Path) -> dict:
    """validate or build-tasks of the store under ``folder`` in this process: time and peak RSS."""
    sys.path[:0] = [str(ROOT / "src"), str(ROOT)]
    from rlsd.config import load_config
    from rlsd.data.store import LocalStore

    st, cfg = LocalStore(folder / "store"), load_config()
    t0 = time.perf_counter()
    if step == "validate":
        from rlsd.data.validate import validate

        r = validate(cfg, out_dir=folder / "validate", store=st)
        what = f"{sum(t['rows'] for t in r['tables'])} rows, {r['quarantined']} quarantined"
    else:
        from rlsd.data.build import build_tasks

        r = build_tasks(cfg, out_dir=folder / "tasks", store=st)
        what = f"{r['counts']['tasks']} tasks"
    return {"step": step, "seconds": round(time.perf_counter() - t0, 1), "what": what,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _child(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"load worker {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_size(scale: float, tasks: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix="rlsd-load-") as tmp:
        row = _child("--worker", str(scale), "--folder", tmp)
        if tasks:
            row["steps"] = [_child("--step", s, "--folder", tmp) for s in ("validate", "build")]
        return row


def measure(scale: float, sizes: list[float], tasks: bool = False) -> dict:
    rows = [run_size(scale * s, tasks) for s in sizes]
    ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    growth = rows[-1]["input_mb"] / rows[0]["input_mb"]
    return {"rows": rows, "peak_ratio": round(ratio, 3), "input_ratio": round(growth, 2)}


def table(res: dict) -> str:
    lines = ["| tickets | manuals MB | input MB | sections | objects | ingest s | MB/s | RSS after imports MB | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['tickets']} | {r['manual_mb']:.0f} | {r['input_mb']:.0f} | {r['sections']} | {r['objects']} | "
                     f"{r['ingest_s']} | {r['mb_per_s']} | {r['rss_after_imports_mb']} | {r['peak_rss_mb']} |")
    lines.append(f"\nPeak RSS ratio largest / smallest: **{res['peak_ratio']}** for {res['input_ratio']}x the input "
                 "(1.0 = flat).")
    if any("steps" in r for r in res["rows"]):
        lines += ["", "The next pipeline steps on the same store, each in a fresh process:", "",
                  "| tickets | step | result | seconds | peak RSS MB |", "|---|---|---|---|---|"]
        for r in res["rows"]:
            for st in r.get("steps", []):
                lines.append(f"| {r['tickets']} | {st['step']} | {st['what']} | {st['seconds']} | {st['peak_rss_mb']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="1.0 = 100,000 tickets + 1 GB of manuals")
    ap.add_argument("--sizes", default="0.25,0.5,1", help="fractions of --scale to measure, smallest first")
    ap.add_argument("--out", help="also write the table to this Markdown file")
    ap.add_argument("--tasks", action="store_true", help="also run validate and build-tasks on each store")
    ap.add_argument("--worker", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--step", choices=["validate", "build"], help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker is not None:
        print(json.dumps(worker(a.worker, Path(a.folder))))
        return
    if a.step:
        print(json.dumps(step_worker(a.step, Path(a.folder))))
        return
    res = measure(a.scale, [float(x) for x in a.sizes.split(",")], a.tasks)
    text = table(res)
    print(text)
    if a.out:
        import platform

        Path(a.out).write_text(f"# Ingest under load\n\n`python benchmarks/load.py --scale {a.scale} --sizes {a.sizes}"
                               f"{' --tasks' if a.tasks else ''}` "
                               f"on {platform.machine()} ({os.cpu_count()} cores shared), Python "
                               f"{platform.python_version()}; local folder store; each size in a fresh process.\n\n"
                               + text + "\n")


if __name__ == "__main__":
    main()
