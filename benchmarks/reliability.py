"""All reliability figures from one command: faults survived, hostile inputs tried, sandbox escapes
refused, peak memory under load.

    PYTHONPATH=src:. python benchmarks/reliability.py [--quick] [--load-scale 0.05] [--examples 60]

Runs the reliability tests (tests/reliability/) together with the fault tests that live beside the code
they test (tracking outage: tests/test_tracking.py; concurrent promotion: tests/test_registry.py; S3
outages: tests/data/test_data_store.py; sandbox escapes: tests/verifiers/test_verify_code.py), reads the
per-test outcome from pytest's JUnit XML, then measures ingest memory at two input sizes with
benchmarks/load.py (each in a fresh process). ``--quick`` leaves out the slow tests (kill/resume of real
training processes, the full-pipeline secrets scan, the MLflow restart). A few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

# (group, pytest selection, what one passing test is)
GROUPS = [
    ("crash and resume", ["tests/reliability/test_crash_resume.py",
                          "tests/test_train.py::test_killed_run_resumes_to_the_same_parameters"],
     "trainer SIGKILLed (random points, inside a checkpoint write) or checkpoint damaged; resumes to the same model"),
    ("store outages", ["tests/reliability/test_store_faults.py", "tests/data/test_data_store.py"],
     "S3 server stopped mid-ingest / mid-upload / between ingests, dead endpoint, bad credentials"),
    ("tracking outages", ["tests/reliability/test_promotion_faults.py",
                          "tests/test_tracking.py::test_server_stopped_mid_run_and_restarted_gets_every_metric",
                          "tests/test_tracking.py::test_server_that_never_returns_costs_a_warning_not_the_training",
                          "tests/test_registry.py::test_concurrent_promotions_end_on_the_better_model"],
     "MLflow down during training / promotion; concurrent promotions"),
    ("secrets", ["tests/reliability/test_secrets.py"], "planted credentials scanned for in every output of a full run"),
    ("hostile input", ["tests/reliability/test_hostile_input.py"], "property tests and oversized inputs"),
    ("sandbox escapes", ["tests/verifiers/test_verify_code.py"],
     "model code that tries the network, files outside, fork bombs, memory, time, signals"),
]


def run_tests(quick: bool, examples: int, tmp: Path) -> tuple[dict[str, dict], dict[str, int]]:
    counts_file = tmp / "hostile.json"
    results: dict[str, dict] = {}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "OMP_NUM_THREADS": "1",
           "RLSD_HOSTILE_COUNTS": str(counts_file), "RLSD_HYPOTHESIS_EXAMPLES": str(examples)}
    for name, sel, what in GROUPS:
        xml = tmp / f"{name.replace(' ', '_')}.xml"
        cmd = [sys.executable, "-m", "pytest", *sel, "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"]
        if quick:
            cmd += ["-m", "not slow"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        cases = ET.parse(xml).getroot().iter("testcase") if xml.exists() else []
        passed, failed, skipped = [], [], []
        for c in cases:
            tid = f"{c.get('classname')}::{c.get('name')}"
            if c.find("failure") is not None or c.find("error") is not None:
                failed.append(tid)
            elif c.find("skipped") is not None:
                skipped.append(tid)
            else:
                passed.append(tid)
        results[name] = {"what": what, "passed": len(passed), "failed": failed, "skipped": len(skipped),
                         "seconds": round(time.perf_counter() - t0, 1),
                         "tail": proc.stdout[-1500:] if failed or proc.returncode not in (0, 5) else ""}
        print(f"  {name}: {len(passed)} passed, {len(failed)} failed, {len(skipped)} skipped "
              f"({results[name]['seconds']} s)", flush=True)
    hostile = json.loads(counts_file.read_text()) if counts_file.exists() else {}
    return results, hostile


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="leave out the slow tests")
    ap.add_argument("--load-scale", type=float, default=0.05,
                    help="largest load size (1.0 = 100,000 tickets + 1 GB of manuals); half of it is measured too")
    ap.add_argument("--examples", type=int, default=60, help="hypothesis examples per property")
    ap.add_argument("--json", help="also write every figure to this JSON file")
    a = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="rlsd-reliability-") as tmp:
        print("running the reliability tests ...", flush=True)
        results, hostile = run_tests(a.quick, a.examples, Path(tmp))
    print(f"measuring ingest memory at {a.load_scale / 2:g} and {a.load_scale:g} of full load ...", flush=True)
    from benchmarks.load import measure

    load = measure(a.load_scale, [0.5, 1.0])

    faults = {k: v for k, v in results.items() if k not in ("hostile input", "sandbox escapes")}
    survived = sum(v["passed"] for v in faults.values())
    failed = sum(len(v["failed"]) for v in results.values())
    print("\n=== rlsd reliability ===")
    print(f"faults survived: {survived} fault tests passed, {sum(len(v['failed']) for v in faults.values())} failed")
    for k, v in faults.items():
        print(f"  {k:17s} {v['passed']:3d} passed  ({v['what']})")
    h = results["hostile input"]
    print(f"hostile inputs tried: {sum(hostile.values())} generated or oversized inputs over {h['passed']} tests, "
          f"{len(h['failed'])} failed")
    for k, n in sorted(hostile.items()):
        print(f"  {k:26s} {n}")
    s = results["sandbox escapes"]
    print(f"sandbox escape attempts refused: {s['passed']} tests passed, {len(s['failed'])} failed")
    rows = load["rows"]
    print("peak memory (ingest, fresh process each): "
          + ", ".join(f"{r['tickets']} tickets + {r['manual_mb']:.0f} MB manuals -> {r['peak_rss_mb']:.0f} MB "
                      f"({r['ingest_s']} s)" for r in rows)
          + f"; ratio {load['peak_ratio']} for {load['input_ratio']}x the input (1.0 = flat)")
    for k, v in results.items():
        for f in v["failed"]:
            print(f"FAILED [{k}] {f}")
        if v["tail"]:
            print(v["tail"])
    if a.json:
        Path(a.json).write_text(json.dumps({"results": results, "hostile": hostile, "load": load}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
