"""All reliability figures from one command: faults survived, hostile inputs tried, sandbox escapes
refused, peak memory under load.

    PYTHONPATH=src:. python benchmarks/reliability.py [--quick] [--load-scale 0.05] [--examples 60]

Runs the reliability tests (tests/reliability/) together with the fault tests that live beside the code
they test (tracking outage: tests/test_tracking.py; concurrent promotion: tests/test_registry.py; S3
outages: tests/data/test_data_store.py; sandbox escapes: tests/verifiers/test_verify_code.py and test_code_adversarial.py), reads the
per-test outcome from pytest's JUnit XML, then measures ingest memory at two input sizes with
benchmarks/load.py (each in a fresh process), then the data-plane figures of issue 18 (:func:`data_plane`:
records lost on a torn CSV export, edits dropped, unreferenced quarantine chunks, redaction recall and false
positives on a planted set, symlink escapes). ``--quick`` leaves out the slow tests (kill/resume of real
training processes, the full-pipeline secrets scan, the MLflow restart); ``--data-plane`` prints only the
data-plane figures (seconds). A few minutes on 2 cores.
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
    ("hostile input", ["tests/reliability/test_hostile_input.py", "tests/reliability/test_ingest_invariant.py",
                       "tests/reliability/test_redaction_hostile.py", "tests/reliability/test_manuals_hostile.py"],
     "property tests, oversized inputs, torn CSV, same-time edits, planted secrets, hostile manuals folders"),
    ("sandbox escapes", ["tests/verifiers/test_verify_code.py", "tests/verifiers/test_code_adversarial.py"],
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


def data_plane(tmp: Path) -> dict:
    """The figures of issue 18 items 1-5, measured on inputs built here (the same as the tests build)."""
    import random

    from tests.reliability.test_ingest_invariant import _accounted, torn_export
    from tests.reliability.test_redaction_hostile import PLANTED, TRAPS

    from rlsd.config import IngestConfig, load_config
    from rlsd.data.ingest import ingest, load_snapshot
    from rlsd.data.redact import Redactor, luhn_ok
    from rlsd.data.store import LocalStore

    out: dict = {}
    # 1. the torn export: 4,000 rows under a header, row 2 opens a quote that never closes
    st = LocalStore(tmp / "torn-store")
    t0 = time.perf_counter()
    rep = ingest(load_config(), tickets=[torn_export(tmp / "torn.csv")], store=st)
    stored, quarantined = _accounted(rep, st)
    s = rep["sources"][0]
    out["torn_csv"] = {"rows": 4000, "read": s["read"], "stored": s["stored"], "quarantined": s["quarantined"],
                       "independent_count": s["records"],
                       "lost": len({f"T-{i}" for i in range(1, 4001)} - stored - quarantined),
                       "seconds": round(time.perf_counter() - t0, 2)}
    # 2. an edit that keeps updated_at: dropped or counted as stored without being stored?
    st = LocalStore(tmp / "edit-store")
    a, b = tmp / "a.jsonl", tmp / "b.jsonl"
    a.write_text(json.dumps({"id": "T-1", "updated": "2024-03-01T10:00:00Z", "body": "first"}) + "\n")
    b.write_text(json.dumps({"id": "T-1", "updated": "2024-03-01T10:00:00Z", "body": "edited"}) + "\n")
    ingest(load_config(), tickets=[a], store=st)
    r = ingest(load_config(), tickets=[b], store=st)
    out["same_time_edit"] = {"stored_as_new_version": int(load_snapshot(st)[2][0]["body"] == "edited"),
                             "dropped": int(load_snapshot(st)[2][0]["body"] != "edited"),
                             "counts": {k: r["counts"][k] for k in ("updated_tickets", "same_time_edits")}}
    # 4. quarantine chunks of ingests that store nothing new: named by a manifest?
    bad = tmp / "bad.jsonl"
    bad.write_text("not json\n")
    chunks = [c for f in (a, bad, bad, a) for c in ingest(load_config(), tickets=[f], store=st)["quarantine"]]
    named = {c for sid in st.list_snapshots() for c in st.read_manifest(sid)["quarantine"]}
    out["quarantine_chunks"] = {"written": len(chunks), "unreferenced": len(set(chunks) - named)}
    # 3. redaction: the planted table and traps, plus generated cards / IBANs / near misses
    red = Redactor.from_config(IngestConfig(), id_key=b"bench")
    rng = random.Random(18)
    planted = [(k, t.format(v=v), v) for k, t, v in PLANTED]
    traps = list(TRAPS)
    for _ in range(500):
        body = "4" + "".join(rng.choice("0123456789") for _ in range(14))
        good = next(body + d for d in "0123456789" if luhn_ok(body + d))
        planted.append(("CARD", f"card {good} ok", good))
        traps.append(f"order {good[:-1]}{(int(good[-1]) + rng.randint(1, 9)) % 10} ok")
        bban = "".join(rng.choice("0123456789") for _ in range(18))
        check = 98 - int("".join(str(int(c, 36)) for c in bban + "DE00")) % 97
        planted.append(("IBAN", f"iban DE{check:02d}{bban} x", f"DE{check:02d}{bban}"))
        traps.append(f"ref DE{(check % 97) + 1:02d}{bban} x" if check != 97 else f"ref DE01{bban} x")
        traps.append(f"version {rng.randint(1, 20)}.{rng.randint(0, 9)}.{rng.randint(0, 99)}.{rng.randint(0, 999)}")
        traps.append(f"date {rng.randint(2000, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}")
    by_kind: dict[str, list[int]] = {}
    for kind, text, v in planted:
        hit = v not in red.redact(text)[0]
        by_kind.setdefault(kind, [0, 0])[0] += hit
        by_kind[kind][1] += 1
    fps = [t for t in traps if red.redact(t)[0] != t]
    out["redaction"] = {"planted": len(planted), "found": sum(h for h, _ in by_kind.values()),
                        "recall": round(sum(h for h, _ in by_kind.values()) / len(planted), 4),
                        "by_kind": {k: f"{h}/{n}" for k, (h, n) in sorted(by_kind.items())},
                        "traps": len(traps), "false_positives": len(fps), "false_positive_examples": fps[:5]}
    # 5. a manuals folder with symlinks out of it: does outside text reach the store?
    (tmp / "outside").mkdir()
    (tmp / "outside" / "secret.md").write_text("# S\nOUTSIDE-TEXT-18\n")
    m = tmp / "manuals"
    m.mkdir()
    (m / "a.md").write_text("# A\ntext\n")
    (m / "blob.md").write_bytes(b"\x00" * 512)
    os.symlink(tmp / "outside" / "secret.md", m / "escape.md")
    os.symlink(tmp / "outside", m / "escape-dir")
    st = LocalStore(tmp / "manual-store")
    r = ingest(load_config(), manuals=[m], store=st)
    leaked = sum("OUTSIDE-TEXT-18" in f.read_bytes().decode("utf-8", "replace")
                 for f in (tmp / "manual-store").rglob("*") if f.is_file())
    out["manuals"] = {"symlinks_refused": sum(s["format"] == "symlink" for s in r["sources"]),
                      "objects_with_outside_text": leaked,
                      "binary_quarantined": sum(s["reasons"].get("binary content", 0) for s in r["sources"])}
    return out


def print_data_plane(dp: dict) -> None:
    t, e, q, r, m = dp["torn_csv"], dp["same_time_edit"], dp["quarantine_chunks"], dp["redaction"], dp["manuals"]
    print(f"torn CSV (4,000 rows, row 2 opens a quote that never closes): read {t['read']} = stored {t['stored']} + "
          f"quarantined {t['quarantined']} (independent count {t['independent_count']}); records lost: {t['lost']} "
          f"({t['seconds']} s)")
    print(f"edit with the same updated_at: stored as a new version {e['stored_as_new_version']}, dropped {e['dropped']}")
    print(f"quarantine chunks: {q['written']} written by ingests that stored nothing new, {q['unreferenced']} "
          "referenced by no manifest")
    print(f"redaction: recall {r['found']}/{r['planted']} ({r['recall']:.2%}) on planted values "
          f"[{', '.join(f'{k} {v}' for k, v in r['by_kind'].items())}]; false positives {r['false_positives']}/"
          f"{r['traps']} traps (versions, dates, order numbers, near-miss cards and IBANs)")
    print(f"manuals: {m['symlinks_refused']} symlinks out of the folder refused, {m['objects_with_outside_text']} store "
          f"objects hold outside text, {m['binary_quarantined']} binary .md quarantined")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="leave out the slow tests")
    ap.add_argument("--load-scale", type=float, default=0.05,
                    help="largest load size (1.0 = 100,000 tickets + 1 GB of manuals); half of it is measured too")
    ap.add_argument("--examples", type=int, default=60, help="hypothesis examples per property")
    ap.add_argument("--json", help="also write every figure to this JSON file")
    ap.add_argument("--data-plane", action="store_true", help="only the data-plane figures of issue 18 (seconds)")
    a = ap.parse_args()
    if a.data_plane:
        with tempfile.TemporaryDirectory(prefix="rlsd-data-plane-") as tmp:
            dp = data_plane(Path(tmp))
        print_data_plane(dp)
        if a.json:
            Path(a.json).write_text(json.dumps({"data_plane": dp}, indent=1))
        return 0 if dp["torn_csv"]["lost"] == 0 and dp["quarantine_chunks"]["unreferenced"] == 0 else 1

    with tempfile.TemporaryDirectory(prefix="rlsd-reliability-") as tmp:
        print("running the reliability tests ...", flush=True)
        results, hostile = run_tests(a.quick, a.examples, Path(tmp))
        print("measuring the data plane under hostile input ...", flush=True)
        dp = data_plane(Path(tmp) / "data-plane")
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
    print_data_plane(dp)
    for k, v in results.items():
        for f in v["failed"]:
            print(f"FAILED [{k}] {f}")
        if v["tail"]:
            print(v["tail"])
    if a.json:
        Path(a.json).write_text(json.dumps({"results": results, "hostile": hostile, "load": load, "data_plane": dp}, indent=1))
    from benchmarks._perimeter_figures import report as perimeter_report  # issue 18 items 6-9

    perimeter_report()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
