"""Ingest throughput (sections/s, tickets/s, MB/s) on the local and S3 back ends, and the cost of an
incremental ingest of 1% new tickets relative to a full one (target < 5%).

    PYTHONPATH=src:. python benchmarks/ingest.py [--tickets 5000] [--manual-copies 20] [--no-s3]

The S3 back end is a real SeaweedFS server (tests/s3server.py) on loopback. Writes a table to
stdout and benchmarks/results/ingest.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from rlsd.config import load_config
from rlsd.data.corpus import make_corpus
from rlsd.data.ingest import ingest
from rlsd.data.store import LocalStore, S3Store


def _inputs(tmp: Path, n_tickets: int, copies: int) -> tuple[list[Path], list[Path], Path]:
    make_corpus(tmp / "c", n_tickets=n_tickets, seed=1)
    mdir = tmp / "manuals"
    mdir.mkdir()
    for k in range(copies):  # distinct documents (the id comes from the file name)
        for f in (tmp / "c" / "manuals").iterdir():
            shutil.copy(f, mdir / f"{f.stem}-{k}{f.suffix}")
    new = tmp / "new.jsonl"
    with new.open("w") as fh:
        for i in range(max(1, n_tickets // 100)):
            fh.write(json.dumps({"id": f"NEW-{i}", "updated": "2025-01-01T00:00:00Z", "title": "Warranty question",
                                 "body": f"How long is the warranty of unit {i}? Mail me at a{i}@example.com",
                                 "status": "resolved", "resolution": "24 months.", "resolution_verified": True,
                                 "answer": "24", "answer_type": "numeric"}) + "\n")
    return [mdir], [tmp / "c" / "tickets"], new


def run(store_factory, manuals, tickets, new, repeats: int = 1) -> dict:
    cfg = load_config()
    best = None
    for _ in range(repeats):
        st = store_factory()
        t0 = time.perf_counter()
        full = ingest(cfg, manuals=manuals, tickets=tickets, store=st)
        t_full = time.perf_counter() - t0
        t0 = time.perf_counter()
        inc = ingest(cfg, tickets=[new], store=st)
        t_inc = time.perf_counter() - t0
        row = {"full_s": t_full, "inc_s": t_inc, "sections": full["counts"]["sections"],
               "tickets": full["counts"]["tickets"], "mb": full["bytes_read"] / 1e6,
               "objects": full["objects_written"], "inc_objects": inc["objects_written"],
               "inc_tickets": inc["counts"]["new_tickets"]}
        if best is None or row["full_s"] < best["full_s"]:
            best = row
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tickets", type=int, default=5000)
    ap.add_argument("--manual-copies", type=int, default=20)
    ap.add_argument("--no-s3", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        manuals, tickets, new = _inputs(tmp, args.tickets, args.manual_copies)
        n = [0]

        def local():
            n[0] += 1
            return LocalStore(tmp / f"store{n[0]}")

        rows["local"] = run(local, manuals, tickets, new)
        if not args.no_s3:
            from tests.s3server import S3Server

            from rlsd.config import StoreConfig

            with S3Server(tmp / "weed") as srv:
                os.environ.update(srv.env())

                def s3():
                    n[0] += 1
                    return S3Store(StoreConfig(backend="s3", endpoint=srv.endpoint, bucket=f"bench-{n[0]}"))

                rows["s3 (SeaweedFS, loopback)"] = run(s3, manuals, tickets, new)
    lines = ["| back end | sections | tickets | MB | full ingest s | sections/s | tickets/s | MB/s | objects | "
             "+1% tickets s | objects | incremental / full |", "|---|" + "---|" * 11]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['sections']} | {r['tickets']} | {r['mb']:.2f} | {r['full_s']:.2f} | "
                     f"{r['sections'] / r['full_s']:.0f} | {r['tickets'] / r['full_s']:.0f} | "
                     f"{r['mb'] / r['full_s']:.2f} | {r['objects']} | {r['inc_s']:.3f} | {r['inc_objects']} | "
                     f"{r['inc_s'] / r['full_s']:.1%} |")
    table = "\n".join(lines)
    print(table)
    out = ROOT / "benchmarks" / "results" / "ingest.md"
    out.write_text(
        "# Ingest throughput\n\n"
        f"`python benchmarks/ingest.py --tickets {args.tickets} --manual-copies {args.manual_copies}` on "
        f"{platform.machine()} ({os.cpu_count()} cores shared with other jobs), Python {platform.python_version()}.\n"
        "Full ingest = all manuals (sample manuals copied as distinct documents) + the two sample ticket exports, "
        "into an empty store; incremental = one more export holding 1% new tickets, on top of it. "
        "Rates are per wall-clock second of the full ingest (parse, redact, hash, write objects, manifest).\n\n"
        + table + "\n\nTarget: incremental / full < 5%.\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
