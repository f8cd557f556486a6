"""Task building from the sample corpus, stable split, the leak guard and the validation step."""

import dataclasses
import json
from pathlib import Path

import pytest

from rlsd.config import load_config
from rlsd.data.build import BM25, build_tasks, split_of, tokenize
from rlsd.data.corpus import make_corpus
from rlsd.data.ingest import ingest
from rlsd.data.store import LocalStore
from rlsd.data.validate import ValidationFailed, leak_reason, validate
from rlsd.tasks import Task, read_tasks, write_tasks

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("built")
    cfg = load_config()
    st = LocalStore(tmp / "st")
    rep = ingest(cfg, manuals=[SAMPLE / "manuals"], tickets=[SAMPLE / "tickets"], store=st)
    out = build_tasks(cfg, out_dir=tmp / "tasks", store=st)
    return cfg, st, rep, out, tmp


def test_sample_builds_tasks_with_findable_answers(built):
    cfg, st, rep, out, _ = built
    c = out["counts"]
    assert c["tasks"] == c["train"] + c["eval"] == 243 and sum(c["skipped"].values()) == 300 - 243
    assert c["by_answer_type"] == {"numeric": 120, "label": 86, "json": 37}
    tasks = read_tasks(out["train_path"]) + read_tasks(out["eval_path"])
    for t in tasks:
        assert t.verifier == t.meta["answer_type"] and t.meta["snapshot_id"] == rep["snapshot_id"]
        # the answer is in the privileged context (the resolution states it) and never in the prompt
        if t.verifier == "json":
            exp = t.verifier_args["expected"]
            assert str(exp["port"]) in t.privileged_context and exp["protocol"] in t.privileged_context
            assert t.verifier_args["schema"]["required"] == ["port", "protocol"]
        else:
            assert t.answer in t.privileged_context
        if t.verifier == "label":
            assert t.answer in t.verifier_args["choices"] and len(t.verifier_args["choices"]) >= 2
        assert "[EMAIL]" not in t.privileged_context and "@example.com" not in t.prompt
    # tickets without links got retrieved sections, and retrieval mostly found the right one
    retrieved = [t for t in tasks if t.meta["retrieved"]]
    hit = sum(t.answer in t.privileged_context.split("Manual:", 1)[-1] for t in retrieved if t.verifier != "json")
    assert len(retrieved) > 30 and hit / sum(t.verifier != "json" for t in retrieved) > 0.8


def test_split_is_stable_across_snapshots(built, tmp_path):
    cfg, st, rep, out, tmp = built
    before = {t.meta["ticket_id"]: s for s, p in (("train", out["train_path"]), ("eval", out["eval_path"]))
              for t in read_tasks(p)}
    extra = tmp_path / "more.jsonl"
    with extra.open("w") as f:
        for i in range(30):
            f.write(json.dumps({"id": f"NEW-{i}", "updated": "2025-01-01T00:00:00Z", "title": "Warranty question",
                                "body": "How many months of warranty does the Tessel Gateway have?",
                                "status": "resolved", "resolution": "It is 24 months.",
                                "resolution_verified": True, "answer": "24", "answer_type": "numeric"}) + "\n")
    st2 = LocalStore(tmp_path / "st2")
    import shutil

    shutil.copytree(tmp / "st", tmp_path / "st2", dirs_exist_ok=True)
    r2 = ingest(cfg, tickets=[extra], store=st2)
    out2 = build_tasks(cfg, out_dir=tmp_path / "tasks2", store=st2)
    after = {t.meta["ticket_id"]: s for s, p in (("train", out2["train_path"]), ("eval", out2["eval_path"]))
             for t in read_tasks(p)}
    assert r2["snapshot_id"] != rep["snapshot_id"] and len(after) == len(before) + 30
    assert all(after[k] == v for k, v in before.items())
    assert all(split_of(k, cfg.ingest.eval_fraction) == v for k, v in after.items())
    frac = sum(v == "eval" for v in after.values()) / len(after)
    assert 0.12 < frac < 0.3


def test_bm25_ranks_by_hand():
    docs = [tokenize("warranty months shipment"), tokenize("port console tcp"), tokenize("warranty warranty port")]
    bm = BM25(docs)
    assert bm.top(tokenize("tcp port"), 3)[0] == 1
    assert bm.top(tokenize("warranty"), 1) == [2]  # tf 2 beats tf 1 at near-equal length
    assert bm.top(tokenize("nothing matches"), 3) == []


def test_leak_reason_cases():
    ctx = "Verified resolution: the idle timeout of the Tessel Gateway console is 15 minutes and cannot be raised."
    assert leak_reason("How long is the timeout?", "15", ctx, span_words=8) == ""
    assert leak_reason("Is it 15 minutes?", "15", ctx, span_words=8).startswith("answer leak")
    assert leak_reason("Version 2.15 or port 150?", "15", ctx, span_words=8) == ""
    planted = "Q? the idle timeout of the Tessel Gateway console is something"
    assert leak_reason(planted, "99", ctx, span_words=8).startswith("context leak")
    assert leak_reason("amber, blue or green?", "blue", ctx, span_words=8, choices=["amber", "blue", "green"]) == ""
    assert leak_reason("it is blue, right?", "blue", ctx, span_words=8).startswith("answer leak")


def test_validation_quarantines_planted_leaks_and_passes_the_rest(built, tmp_path):
    cfg, st, rep, out, _ = built
    tasks = read_tasks(out["train_path"])
    numeric = [i for i, t in enumerate(tasks) if t.verifier == "numeric"][:2]
    a, b = numeric
    tasks[a] = dataclasses.replace(tasks[a], prompt=tasks[a].prompt + f"\nHint: it is {tasks[a].answer}.")
    words = tasks[b].privileged_context.split()
    start = next(i for i in range(len(words) - 14) if not any(tasks[b].answer in w for w in words[i:i + 14]))
    span = " ".join(words[start:start + 14])
    tasks[b] = dataclasses.replace(tasks[b], prompt=tasks[b].prompt + "\n" + span)
    tdir = tmp_path / "tasks"
    write_tasks(tasks, tdir / "train.jsonl")
    write_tasks(read_tasks(out["eval_path"]), tdir / "eval.jsonl")
    r = validate(cfg, tasks_dir=tdir, out_dir=tmp_path / "val", store=st)
    assert r["passed"] and r["quarantined"] == 2
    q = [json.loads(l) for l in (tmp_path / "val" / "quarantine.jsonl").read_text().splitlines()]
    assert {x["id"]: x["reasons"][0].split(":")[0] for x in q} == {tasks[a].id: "answer leak", tasks[b].id: "context leak"}
    assert r["valid_tasks"] == {"train": len(tasks) - 2, "eval": out["counts"]["eval"]}
    kept = {t.id for t in read_tasks(tmp_path / "val" / "train.jsonl")}
    assert tasks[a].id not in kept and tasks[b].id not in kept
    assert r["quarantine_object"] and st.get_object(r["quarantine_object"])
    md = (tmp_path / "val" / "report.md").read_text()
    assert "custom: leak guard" in md and "| FAIL | 2 |" in md
    assert "<html>" in (tmp_path / "val" / "report.html").read_text()[:100].lower().replace("<!doctype html>", "")


def test_validation_fails_past_threshold(tmp_path):
    cfg = load_config(text="validation: {max_failure_rate: 0.2}")
    good = [Task(id=f"g{i}", prompt="What is the port of the console?", privileged_context="It is 8443.",
                 answer="8443", verifier="numeric", meta={"answer_type": "numeric", "ticket_id": f"g{i}"})
            for i in range(6)]
    bad = [Task(id=f"b{i}", prompt="Is the port 8443 or what?", privileged_context="It is 8443.", answer="8443",
                verifier="regex", meta={"answer_type": "numeric", "ticket_id": f"b{i}"}) for i in range(3)]
    write_tasks(good + bad, tmp_path / "t" / "train.jsonl")
    with pytest.raises(ValidationFailed, match=r"tasks \(3/9 rows failed"):
        validate(cfg, snapshot=None, tasks_dir=tmp_path / "t", out_dir=tmp_path / "v")
    rep = json.loads((tmp_path / "v" / "report.json").read_text())
    exp = {e["expectation"]: e["unexpected"] for e in rep["tables"][0]["expectations"] if not e["success"]}
    assert exp == {"expect_column_values_to_be_in_set": 3, "custom: leak guard (not a GX expectation)": 3}


def test_corpus_is_deterministic_and_matches_the_committed_sample(tmp_path):
    make_corpus(tmp_path / "c")
    for p in sorted(SAMPLE.rglob("*")):
        if p.is_file():
            assert (tmp_path / "c" / p.relative_to(SAMPLE)).read_bytes() == p.read_bytes(), p


@pytest.mark.parametrize("question,answer,expected", [
    ("Is that a Network, Power or Storage problem?", "Power", ["Network", "Power", "Storage"]),
    ("Which LED colour shows an update (amber, green, red, blue)?", "amber", ["amber", "green", "red", "blue"]),
    ("Is audit export Basic, Plus or Enterprise?", "Enterprise", ["Basic", "Plus", "Enterprise"]),
    ("Is that Network, Power or Storage?", "Disk", []),  # the answer is not among the listed options
    ("What colour is the LED?", "amber", []),
])
def test_label_choices_are_the_options_the_question_lists(question, answer, expected):
    from rlsd.data.build import listed_options

    assert listed_options(question, answer) == expected


def _bm25_reference(docs, query, k, k1=1.2, b=0.75):
    """The textbook loop over every document (independent of BM25's postings)."""
    import math
    from collections import Counter

    n, avg = len(docs), sum(len(d) for d in docs) / len(docs)
    df = Counter(w for d in docs for w in set(d))
    out = []
    for i, d in enumerate(docs):
        tf, s = Counter(d), 0.0
        for w in query:
            f = tf.get(w)
            if f:
                idf = math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5))
                s += idf * f * (k1 + 1) / (f + k1 * (1 - b + b * len(d) / (avg or 1)))
        out.append(s)
    order = sorted(range(n), key=lambda i: (-out[i], i))
    return out, [i for i in order[:k] if out[i] > 0]


def test_bm25_equals_the_textbook_loop_bit_for_bit_ties_included():
    import random

    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)]
    docs = [[rng.choice(words[: rng.randint(3, 40)]) for _ in range(rng.randint(0, 30))] for _ in range(300)]
    docs = [d + ["common"] * (i % 10 != 3) for i, d in enumerate(docs)]  # in 90% of documents: a dense row
    docs += [list(docs[5]), list(docs[5])]  # exact ties: the lower index must come first
    bm = BM25(docs)
    assert bm.vocab["common"] in bm._dense and len(bm._dense) < len(bm.vocab)
    for _ in range(200):
        q = [rng.choice(words + ["unknown", "common"]) for _ in range(rng.randint(1, 8))]
        k = rng.choice([1, 3, 5, 50])
        ref_scores, ref_top = _bm25_reference(docs, q, k)
        assert bm.scores(q).tolist() == ref_scores
        assert bm.top(q, k) == ref_top
    top = bm.top(list(docs[5]), 300)
    tied = [i for i in top if i in (5, 300, 301)]
    assert tied == [5, 300, 301] and top.index(300) == top.index(5) + 1  # equal scores, index order


def _planted_store(path):
    """A snapshot (written by hand) whose tickets fail in known ways: a bad status, a bad date, and one
    record whose id duplicates another's (under a different index key)."""
    from rlsd.data.store import LocalStore, canonical_json

    st = LocalStore(path)
    base = {"created": "2024-03-01T10:00:00Z", "updated": "2024-03-01T10:00:00Z", "title": "t", "body": "b",
            "status": "resolved", "resolution": "r", "resolution_verified": True, "links": [], "answer": "1",
            "answer_type": "numeric", "notes": []}
    tickets = {f"T-{i}": {**base, "id": f"T-{i}"} for i in range(9)}
    tickets["T-2"]["status"] = "weird"
    tickets["T-5"]["updated"] = "yesterday"
    tickets["T-7"]["id"] = "T-0"  # the same id as T-0, in another chunk when chunks are small
    sec = {"id": "guide/a", "doc_id": "guide", "heading_path": ["A"], "text": "alpha", "checksum": "0" * 64}
    index = {"sections": {"guide/a": st.put_object(canonical_json(sec))[0]},
             "tickets": {k: [st.put_object(canonical_json(t))[0], t["updated"]] for k, t in tickets.items()}}
    st.write_manifest({"format": 1, "snapshot_id": "planted", "previous": None, "counts": {}, **index})
    st.set_latest("planted")
    return st


@pytest.mark.parametrize("chunk_rows", [2, 3])
def test_chunked_validation_equals_one_batch(tmp_path, chunk_rows):
    st = _planted_store(tmp_path / "st")
    reports, quarantines = [], []
    for n in (chunk_rows, 10_000):
        cfg = load_config(text=f"validation: {{chunk_rows: {n}, max_failure_rate: 0.9}}")
        out = tmp_path / f"v{n}"
        reports.append(validate(cfg, out_dir=out, store=st))
        quarantines.append(sorted((q["id"], tuple(q["reasons"])) for q in map(json.loads, (out / "quarantine.jsonl").open())))
    assert reports[0]["tables"] == reports[1]["tables"] and quarantines[0] == quarantines[1]
    tickets = reports[0]["tables"][1]
    bad = {e["expectation"]: e["unexpected"] for e in tickets["expectations"] if not e["success"]}
    assert tickets["rows"] == 9 and tickets["failed_rows"] == 4  # T-2, T-5 and both records with id T-0
    assert bad == {"expect_column_values_to_be_unique": 2, "expect_column_values_to_be_in_set": 1,
                   "expect_column_values_to_match_regex": 1}


def test_a_formula_answer_becomes_an_expression_task(built, tmp_path):
    """A ticket whose verified answer is a formula: ingest checks it parses as arithmetic, build-tasks makes an
    `expression` task whose numbers and target come from the formula, and the task's verifier pays any
    expression of those numbers that reaches the target, not the bare result."""
    import shutil

    from rlsd.verifiers import score

    cfg, st, rep, out, tmp = built
    extra = tmp_path / "formula.jsonl"
    rows = [{"id": f"F-{i}", "updated": "2025-02-01T00:00:00Z", "title": "Storage blocks",
             "body": "The array has 120 GB, 20 GB are reserved. How many 4 GB blocks fit?", "status": "resolved",
             "resolution": "Subtract the reserve, then divide by the block size.", "resolution_verified": True,
             "answer": "(120 - 20) / 4", "answer_type": "expression"} for i in range(12)]
    rows.append({**rows[0], "id": "F-bad", "answer": "__import__('os')"})
    extra.write_text("".join(json.dumps(r) + "\n" for r in rows))
    shutil.copytree(tmp / "st", tmp_path / "st3", dirs_exist_ok=True)
    st3 = LocalStore(tmp_path / "st3")
    r = ingest(cfg, tickets=[extra], store=st3)
    bad = [q for q in r["quarantined"] if "F-bad" in json.dumps(q)]
    assert len(bad) == 1 and "expression" in json.dumps(bad[0])  # no arithmetic: refused with a reason
    got = build_tasks(cfg, out_dir=tmp_path / "tasks3", store=st3)
    tasks = [t for p in (got["train_path"], got["eval_path"]) for t in read_tasks(p)
             if t.meta["ticket_id"].startswith("F-")]
    assert len(tasks) == 12 and all(t.verifier == "expression" for t in tasks)
    t = tasks[0]
    assert t.verifier_args == {"numbers": ["120", "20", "4"], "target": "25"}
    assert "120, 20, 4" in t.prompt and t.answer not in t.prompt
    assert score(t, "Answer: (120 - 20) / 4") == 1.0
    assert score(t, "Answer: 120 / 4 - 20 / 4") == 0.0  # 4 and 20 used twice
    assert score(t, "Answer: 25") == 0.0
