"""The corpus learning benchmark (issue 19): its tasks are the pipeline's, split by ticket id with no eval
ticket in training, and a smoke run goes through training, checkpoint scoring and the report."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import corpus_learning as cl

from rlsd.data.build import split_of
from rlsd.tasks import read_tasks, write_tasks


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory):
    return cl.corpus_tasks(tmp_path_factory.mktemp("corpus") / "tasks")


def test_no_eval_ticket_is_seen_in_training(tasks_dir):
    split = cl.check_split(tasks_dir)
    train, ev = read_tasks(tasks_dir / "train.jsonl"), read_tasks(tasks_dir / "eval.jsonl")
    assert split["train"] == len(train) and split["eval"] == len(ev) and split["eval"] > 0
    assert split.get("eval text", 0) > 0  # free-text tickets are in (ingest.text_grader)
    # the split is the pipeline's: a ticket is on the eval side exactly when its id hashes there
    assert all(split_of(t.meta["ticket_id"], 0.2) == "eval" for t in ev)
    assert all(split_of(t.meta["ticket_id"], 0.2) == "train" for t in train)
    assert {t.meta["ticket_id"] for t in train}.isdisjoint({t.meta["ticket_id"] for t in ev})


def test_a_leaked_eval_ticket_is_refused(tasks_dir, tmp_path):
    train, ev = read_tasks(tasks_dir / "train.jsonl"), read_tasks(tasks_dir / "eval.jsonl")
    write_tasks(train + ev[:1], tmp_path / "train.jsonl")
    write_tasks(ev, tmp_path / "eval.jsonl")
    with pytest.raises(ValueError, match="1 eval ticket"):
        cl.check_split(tmp_path)


def test_eval_points_and_checkpoint_interval():
    args = cl.parse(["--steps", "12", "--eval-at", "4,8,0,12,20"])
    assert cl.eval_points(args) == ([4, 8], 4)
    assert cl.eval_points(cl.parse(["--steps", "12", "--eval-at", "6,9"])) == ([6, 9], 3)
    assert cl.eval_points(cl.parse(["--steps", "12", "--eval-at", ""])) == ([], 0)


def test_rerun_line_names_every_option_that_differs_from_its_default():
    line = cl.rerun_line(["--steps", "12", "--prompts", "2", "--group", "8", "--temperature", "1.0", "--lr", "1e-5",
                          "--response-prefix", "The answer:", "--jobs", "2", "--work", "/tmp/w"])
    # --steps 12 and --lr 1e-5 are the defaults; --work says where, not what
    assert line == ("python benchmarks/corpus_learning.py --prompts 2 --group 8 --temperature 1.0 "
                    "--response-prefix 'The answer:' --jobs 2")
    assert cl.rerun_line(["--smoke", "--algos", "grpo"]) == "python benchmarks/corpus_learning.py --smoke --algos grpo"
    # and the line parses back to the same settings
    assert vars(cl.parse(shlex.split(line)[2:])) == vars(cl.parse(["--steps", "12", "--prompts", "2", "--group", "8", "--temperature",
                                                  "1.0", "--response-prefix", "The answer:", "--jobs", "2"]))


@pytest.mark.slow
def test_smoke_run_trains_scores_checkpoints_and_reports(tmp_path):
    out = cl.main(["--smoke", "--work", str(tmp_path), "--algos", "grpo,rlsd", "--jobs", "2"])
    res, base = out["results"], out["base"]
    assert [r["seed"] for r in res["grpo"]] == [0] and [r["seed"] for r in res["rlsd"]] == [0]
    # two runs side by side give what one run alone gives: the seed, not the neighbour, decides
    alone = cl.main(["--smoke", "--work", str(tmp_path / "alone"), "--algos", "grpo"])["results"]["grpo"][0]
    assert alone["scores"] == res["grpo"][0]["scores"]
    assert [m["loss"] for m in alone["metrics"]] == [m["loss"] for m in res["grpo"][0]["metrics"]]
    assert "All 2 runs, 2 at a time, took" in out["report"]
    for runs in res.values():
        r = runs[0]
        assert set(r["scores"]) == {"1", "2"}  # the step-1 checkpoint and the final model
        assert len(r["metrics"]) == 2
    # the paired difference printed for grpo vs base is the mean per-task difference
    g = [t["greedy"] for t in res["grpo"][0]["scores"]["2"]["per_task"]]
    b = [t["greedy"] for t in base["per_task"]]
    diff = sum(g) / len(g) - sum(b) / len(b)
    assert f"{diff:+.3f} [" in out["report"]
    md = tmp_path / "smoke-results" / "corpus_learning.md"
    assert md.is_file() and (tmp_path / "smoke-results" / "corpus_learning" / "accuracy.png").stat().st_size > 0
    text = md.read_text()
    assert all(f"| rlsd | {ty} |" in text for ty in ["all", *base["per_type"]])
    assert not list(tmp_path.glob("runs/*/*/checkpoints"))  # deleted once scored
    summary = json.loads((tmp_path / "smoke-results" / "corpus_learning" / "summary.json").read_text())
    assert set(summary) == {"base", "grpo", "rlsd"}


def test_report_lists_what_the_leakage_check_flagged(tmp_path):
    """The report names the flagged spans of the last step, over all seeds, at most 3 per algorithm; a cached
    result from before the spans were kept (no "leaks" key) counts none instead of failing the report."""
    per_task = [{"id": f"t{i}", "type": "number", "greedy": float(i % 2), "pass@1": 0.5, "pass@k": 1.0}
                for i in range(4)]
    score = {"greedy": 0.5, "pass@1": 0.5, "pass@k": 1.0, "leakage": 0.25, "per_task": per_task,
             "per_type": {"number": {"greedy_pass@1": 0.5, "pass@k": 1.0}}}
    leaks = [{"task": f"t{i}", "span": f"span {i}"} for i in range(4)]
    run = lambda seed, sc: {"seed": seed, "seconds": 60.0, "eval_seconds": 6.0, "metrics": [{"loss": 0.1}],
                            "scores": {"2": sc}}
    results = {"grpo": [run(0, {**score, "leaks": leaks[:1]}), run(1, {**score, "leaks": leaks[1:]})],
               "rlsd": [run(0, score)]}
    base = {**score, "k": 4}
    text = cl.report(results, base, "test machine", "setting", tmp_path / "r.md", tmp_path / "plots", n_boot=50)
    assert '- grpo: 4 flagged outputs over all seeds: "span 0" (t0); "span 1" (t1); "span 2" (t2)\n' in text
    assert "- rlsd: 0 flagged outputs over all seeds\n" in text
