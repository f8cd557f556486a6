"""Hostile input: property-based tests (hypothesis) over ticket and manual parsing, config loading and
answer extraction, plus oversized inputs that must be refused by a limit, not by running out of memory.

Properties: nothing raises except the documented clear error (ConfigError for configs; nothing at all
for parsers and verifiers); every record read is stored or quarantined with a reason (reconciliation);
no text of a manual disappears. The number of examples each property tried is counted in
``HOSTILE_COUNTS`` and written to $RLSD_HOSTILE_COUNTS (benchmarks/reliability.py prints it).
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import string
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlsd.config import ConfigError, IngestConfig, load_config
from rlsd.data.ingest import ingest, load_snapshot, parse_manual, parse_tickets
from rlsd.data.redact import Redactor
from rlsd.data.store import LocalStore
from rlsd.tasks import Task
from rlsd.verifiers import extract_answer, score

HOSTILE_COUNTS: Counter = Counter()
RAW = Redactor(enabled=False)
SETTINGS = settings(max_examples=int(os.environ.get("RLSD_HYPOTHESIS_EXAMPLES", "60")), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


_TMP_DIRS: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def _write_counts():
    yield
    out = os.environ.get("RLSD_HOSTILE_COUNTS")
    if out:
        Path(out).write_text(json.dumps(dict(HOSTILE_COUNTS)))
    for d in _TMP_DIRS:  # one folder per hypothesis example (tmp_path is one per test): 121 a run were left behind
        shutil.rmtree(d, ignore_errors=True)


def _tmp() -> Path:
    d = Path(tempfile.mkdtemp(prefix="hostile-"))
    _TMP_DIRS.append(d)
    return d


# ---------------------------------------------------------------------------------------------- tickets

ALIASES = ["id", "ticket_id", "updated", "created_at", "title", "subject", "body", "description", "status",
           "resolution", "resolution_verified", "links", "answer", "answer_type", "weird column", "\ufeffid"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**30, max_value=10**30),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=60),
                    st.sampled_from(["2024-03-01T10:00:00Z", "1700000000", "not a date", "9" * 40, "numeric",
                                     "json", "label", "[1,2]", "{\"a\": [", "yes", "EMP-12345 a@b.co"]))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                      max_leaves=8)
records = st.dictionaries(st.sampled_from(ALIASES), values, max_size=8)
line_text = st.text(alphabet=st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=80)
lines = st.lists(st.one_of(records.map(lambda r: json.dumps(r, allow_nan=True)), line_text, st.just("[1, 2]"),
                           st.just("{" * 3000), st.just("")), max_size=25)


@SETTINGS
@given(lines=lines, junk=st.binary(max_size=40))
def test_jsonl_tickets_never_crash_and_reconcile(lines, junk):
    HOSTILE_COUNTS["ticket JSONL files"] += 1
    d = _tmp()
    body = "\n".join(lines).encode("utf-8", "surrogatepass") + b"\n" + junk
    (d / "t.jsonl").write_bytes(body)
    tickets, quarantined, rep = parse_tickets(d / "t.jsonl", cfg=IngestConfig(), redactor=RAW)
    expected_read = sum(1 for ln in body.split(b"\n") if ln.decode("utf-8", "replace").lstrip("\ufeff").strip())
    assert rep.read == expected_read == len(tickets) + rep.quarantined
    assert len(quarantined) == rep.quarantined and all(q["reason"] for q in quarantined)
    # the whole ingest: every read record is stored or quarantined; the snapshot holds one per distinct id
    r = ingest(load_config(), tickets=[d / "t.jsonl"], store=LocalStore(d / "store"))
    assert r["counts"]["read"] == r["counts"]["stored"] + r["counts"]["quarantined"]
    if r["counts"]["stored"]:
        assert len(load_snapshot(LocalStore(d / "store"))[2]) == len({t["id"] for t, _ in tickets})


cells = st.text(alphabet=st.sampled_from(list(string.printable) + ["\x00", "é", "\ufffd", '"']), max_size=30)


@SETTINGS
@given(header=st.lists(st.sampled_from(ALIASES), min_size=1, max_size=6),
       rows=st.lists(st.lists(cells, max_size=8), max_size=15), raw_tail=st.binary(max_size=30))
def test_csv_tickets_never_crash_and_reconcile(header, rows, raw_tail):
    HOSTILE_COUNTS["ticket CSV files"] += 1
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    for r in rows:
        w.writerow(r)
    d = _tmp()
    (d / "t.csv").write_bytes(buf.getvalue().encode() + raw_tail)
    tickets, quarantined, rep = parse_tickets(d / "t.csv", cfg=IngestConfig(), redactor=RAW)
    assert rep.read == len(tickets) + rep.quarantined and len(quarantined) == rep.quarantined


# ---------------------------------------------------------------------------------------------- manuals

md_lines = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + " .,#-=*`~<>/&;", max_size=60),
    st.builds(lambda n, t: "#" * n + " " + t, st.integers(1, 7), st.text(alphabet=string.ascii_letters + " ", max_size=20)),
    st.sampled_from(["```", "~~~", "====", "----", "2.1 Tunnel limits", "<h1>x</h1>", "<script>", "</p>"]),
)


def _words(s: str) -> set[str]:
    return set(re.findall(r"[A-Za-z0-9]+", s))


def _body_words(lines: list[str]) -> set[str]:
    """Words of the lines that cannot be headings (a heading with no text under it is structure, not data)."""
    out: set[str] = set()
    for i, ln in enumerate(lines):
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if re.match(r" {0,3}#", ln) or re.fullmatch(r"=+|-+", nxt) or re.match(r"\d+(\.\d+)*\s+[A-Z]", ln.strip()):
            continue
        out |= _words(ln)
    return out


@SETTINGS
@given(lines=st.lists(md_lines, max_size=40), fmt=st.sampled_from(["md", "txt", "html"]))
def test_manuals_never_crash_and_keep_every_word(lines, fmt):
    HOSTILE_COUNTS[f"manual .{fmt} files"] += 1
    d = _tmp()
    text = "\n".join(lines)
    (d / f"m.{fmt}").write_text(text)
    secs, quarantined, rep = parse_manual(d / f"m.{fmt}", cfg=IngestConfig(), redactor=RAW)
    assert rep.read == rep.stored + rep.quarantined and rep.reconciled
    assert all(s["text"].strip() for s in secs)
    if fmt != "html":  # HTML drops <script>/<style>/<nav> on purpose; markdown and text lose no word
        kept = set().union(*(_words(s["text"]) | _words(" ".join(s["heading_path"])) for s in secs)) if secs else set()
        lost = _body_words(text.split("\n")) - kept
        assert not lost or (not secs and quarantined), lost


@SETTINGS
@given(raw=st.binary(max_size=300), fmt=st.sampled_from(["md", "txt", "html", "pdf"]))
def test_manuals_of_random_bytes_never_crash(raw, fmt):
    HOSTILE_COUNTS["manual random-byte files"] += 1
    d = _tmp()
    (d / f"m.{fmt}").write_bytes(raw)
    secs, quarantined, rep = parse_manual(d / f"m.{fmt}", cfg=IngestConfig(), redactor=RAW)
    assert rep.reconciled and (secs or quarantined)


# ---------------------------------------------------------------------------------------------- config

FIELDS = ["train.steps", "train.lr", "rollout.group_size", "algorithm.name", "ingest.extra_patterns", "store.retries",
          "ingest.max_manual_bytes", "model.dtype", "tracking.uri", "nosuch.field", "train", "train.steps.x", ""]
yaml_values = st.one_of(st.integers(), st.floats(allow_nan=True), st.text(max_size=20), st.booleans(), st.none(),
                        st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))


@SETTINGS
@given(text=st.text(max_size=200))
def test_config_from_random_yaml_text_raises_only_config_error(text):
    HOSTILE_COUNTS["config YAML texts"] += 1
    try:
        load_config(text=text)
    except ConfigError as e:
        assert str(e)


@SETTINGS
@given(tree=st.dictionaries(st.sampled_from(["train", "rollout", "algorithm", "ingest", "store", "x", "model"]),
                            st.one_of(yaml_values, st.dictionaries(st.sampled_from(["steps", "lr", "group_size",
                                                                                    "name", "extra_patterns",
                                                                                    "retries", "dtype", "zzz"]),
                                                                   yaml_values, max_size=3)), max_size=4),
       overrides=st.lists(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(FIELDS), st.text(max_size=15)), max_size=3)
       | st.lists(st.text(max_size=20), max_size=2))
def test_config_from_random_trees_and_overrides_raises_only_config_error(tree, overrides):
    HOSTILE_COUNTS["config trees + overrides"] += 1
    import yaml

    try:
        load_config(text=yaml.safe_dump(tree), overrides=overrides)
    except ConfigError as e:
        assert str(e)


# ---------------------------------------------------------------------------------------------- answers

completions = st.one_of(
    st.text(max_size=400),
    st.lists(st.sampled_from(["\\boxed{", "}", "{", "####", "Answer:", "answer is", "12", "-3.5", "1/0", "1e999",
                              "\\frac{1}{2}", "%", "km", "```json", "```", '{"a": 1}', "NaN", "inf", "(", ")", " ",
                              "\n", "9" * 400, "**", "$"]), max_size=60).map("".join),
)
def _task(kind: str, ans: str, args: dict) -> Task | None:
    try:
        return Task(id="h", prompt="q", privileged_context="", answer=ans, verifier=kind, verifier_args=args)
    except ValueError:  # the task file is refused with a clear error when it is read
        return None


tasks = st.builds(
    _task,
    st.sampled_from(["numeric", "label", "json"]),
    st.one_of(st.sampled_from(["42", "3.5", "1/2", "50%", '{"a": 1}', "yes", "", "abc", "1e400", "nan"]), st.text(max_size=10)),
    st.one_of(st.just({}), st.dictionaries(st.sampled_from(["rel_tol", "abs_tol", "aliases", "schema", "fields",
                                                            "unit", "choices"]), values, max_size=2)),
)


@SETTINGS
@given(completion=completions, task=tasks)
def test_extract_and_score_never_raise_and_stay_in_range(completion, task):
    HOSTILE_COUNTS["completions scored"] += 1
    a = extract_answer(completion)
    assert a is None or isinstance(a, str)
    if task is None:
        return
    s = score(task, completion)
    assert s is None or (isinstance(s, float) and 0.0 <= s <= 1.0)


# ---------------------------------------------------------------------------------------------- oversized

def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_oversized_manual_is_refused_unread(tmp_path):
    big = tmp_path / "huge.md"
    with big.open("wb") as f:  # a sparse 8 GB file: refused before a byte is read
        f.truncate(8 * 1024**3)
    before = _maxrss_mb()
    secs, q, rep = parse_manual(big, cfg=IngestConfig(), redactor=RAW)
    assert secs == [] and rep.quarantined == 1 and rep.bytes == 8 * 1024**3
    assert "file too large: 8589934592 bytes > ingest.max_manual_bytes=100000000" in q[0]["reason"]
    assert _maxrss_mb() - before < 50
    small = IngestConfig(max_manual_bytes=1000)
    (tmp_path / "ok.md").write_text("# A\n" + "x" * 900)
    (tmp_path / "big.md").write_text("# A\n" + "x" * 1100)
    assert parse_manual(tmp_path / "ok.md", cfg=small, redactor=RAW)[2].stored == 1
    assert "ingest.max_manual_bytes=1000" in parse_manual(tmp_path / "big.md", cfg=small, redactor=RAW)[1][0]["reason"]
    HOSTILE_COUNTS["oversized inputs"] += 2


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_oversized_ticket_line_is_refused_and_the_rest_is_read(tmp_path, fmt):
    good = {"id": "T-1", "updated": "2024-03-01T10:00:00Z", "title": "t", "body": "b"}
    p = tmp_path / f"t.{fmt}"
    with p.open("wb") as f:
        if fmt == "csv":
            f.write(b"id,updated,title,body\n")
        f.write((json.dumps(good) if fmt == "jsonl" else "T-0,2024-03-01T10:00:00Z,t,b").encode() + b"\n")
        f.write(b"x" * (300 * 1024**2))  # one 300 MB line (a broken export, or an attack), then a good record
        f.write(b"\n" + (json.dumps({**good, "id": "T-2"}) if fmt == "jsonl" else "T-2,2024-03-01T10:00:00Z,t,b").encode() + b"\n")
    before = _maxrss_mb()
    tickets, q, rep = parse_tickets(p, cfg=IngestConfig(), redactor=RAW)
    grew = _maxrss_mb() - before
    assert [t["id"] for t, _ in tickets] == (["T-1", "T-2"] if fmt == "jsonl" else ["T-0", "T-2"])
    assert rep.read == 3 and rep.quarantined == 1
    assert re.search(r"line too long: line \d has 314572801 bytes > ingest.max_ticket_line_bytes=1000000", q[0]["reason"])
    assert grew < 60, f"peak RSS grew by {grew:.0f} MB reading a 300 MB line"
    HOSTILE_COUNTS["oversized inputs"] += 1


_QUARANTINE_WORKER = r"""
import json, resource, sys
from rlsd.config import load_config
from rlsd.data.ingest import ingest
from rlsd.data.store import LocalStore
rep = ingest(load_config(), tickets=[sys.argv[1]], store=LocalStore(sys.argv[2]))
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "counts": rep["counts"],
                  "chunks": rep["quarantine"], "sample": len(rep["quarantined"])}))
"""


def _ingest_garbage(tmp_path: Path, n: int) -> dict:
    """A fresh process ingests an 'export' of n lines that are not JSON (a wrong file, or an attack)."""
    import subprocess
    import sys

    p = tmp_path / f"garbage-{n}.jsonl"
    with p.open("w") as f:
        f.writelines(f"not a ticket {i} " + "x" * 250 + "\n" for i in range(n))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", _QUARANTINE_WORKER, str(p), str(tmp_path / f"store-{n}")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_an_export_of_garbage_lines_is_quarantined_in_bounded_memory(tmp_path):
    """300,000 bad lines: every one is quarantined with its reason and stored, in chunks; the report lists the
    first 1,000; peak memory is that of a 3,000-line file (held in memory, they would take ~300 MB)."""
    from rlsd.data.ingest import QUARANTINE_CHUNK, QUARANTINE_SAMPLE

    small, big = _ingest_garbage(tmp_path, 3_000), _ingest_garbage(tmp_path, 300_000)
    assert big["counts"]["read"] == big["counts"]["quarantined"] == 300_000 and big["counts"]["stored"] == 0
    assert big["sample"] == QUARANTINE_SAMPLE and len(big["chunks"]) == 300_000 // QUARANTINE_CHUNK
    st = LocalStore(tmp_path / "store-300000")
    last = json.loads(st.get_object(big["chunks"][-1]))
    assert len(last) == QUARANTINE_CHUNK and last[-1]["where"] == "line 300000" and last[-1]["reason"]
    assert big["peak_mb"] - small["peak_mb"] < 30, (small["peak_mb"], big["peak_mb"])
    HOSTILE_COUNTS["oversized inputs"] += 1
