"""Evaluation: metric arithmetic with controlled outputs, the bootstrap's coverage, leakage, and
invariants of a real (random) tiny model run end to end."""

import html
import json
import math
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

import rlsd.rollout
from rlsd.config import load_config
from rlsd.evaluate import evaluate_model, find_leak, paired_bootstrap, pass_at_k, run_evaluation, summarise
from rlsd.rollout import Rollout
from rlsd.tasks import Task, addition_tasks, write_tasks

# ----------------------------------------------------------------------------------------------
# pass@k
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, c, k, expected", [
    (4, 0, 1, 0.0), (4, 1, 1, 0.25), (4, 2, 1, 0.5), (4, 1, 2, 0.5), (4, 2, 2, 1 - 1 / 6), (4, 1, 4, 1.0),
    (4, 4, 4, 1.0), (10, 3, 5, 1 - math.comb(7, 5) / math.comb(10, 5)),
])
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_matches_enumerating_subsets():
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                hits = [1 if any(i < c for i in sub) else 0 for sub in combinations(range(n), k)]
                assert pass_at_k(n, c, k) == pytest.approx(sum(hits) / len(hits))


def test_pass_at_k_rejects_bad_arguments():
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(2, 1, 3)


# ----------------------------------------------------------------------------------------------
# paired bootstrap
# ----------------------------------------------------------------------------------------------


def test_bootstrap_interval_covers_a_known_difference():
    """Per-task pass rates with a true mean difference of +0.10: the 95% interval should contain
    it in about 95% of repeated experiments (percentile bootstrap runs a little narrow at n=80)."""
    rng = np.random.default_rng(1)
    true_diff, hits, trials, n = 0.10, 0, 300, 80
    for t in range(trials):
        p = rng.uniform(0.2, 0.7, size=n)            # per-task difficulty shared by both models
        base = rng.binomial(8, p) / 8
        cand = rng.binomial(8, p + true_diff) / 8
        r = paired_bootstrap(base, cand, n_boot=400, seed=t)
        hits += r["ci_low"] <= true_diff <= r["ci_high"]
    coverage = hits / trials
    assert 0.88 <= coverage <= 0.99, coverage


def test_bootstrap_is_paired_exact_and_seeded():
    base = np.array([0.0, 1.0, 0.5, 0.25])
    cand = base + 0.25
    r = paired_bootstrap(base, cand, n_boot=500, seed=3)
    assert r["diff"] == pytest.approx(0.25)
    # every task improves by exactly 0.25, so every resample does too (an unpaired test would not)
    assert r["ci_low"] == pytest.approx(0.25) and r["ci_high"] == pytest.approx(0.25)
    assert paired_bootstrap(base, cand[::-1], seed=3) == paired_bootstrap(base, cand[::-1], seed=3)
    with pytest.raises(ValueError, match="one length"):
        paired_bootstrap([1, 2], [1, 2, 3])


def test_bootstrap_detects_no_difference():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=200)
    r = paired_bootstrap(a, a + rng.normal(0, 0.05, size=200), seed=0)
    assert r["ci_low"] < 0 < r["ci_high"]


# ----------------------------------------------------------------------------------------------
# leakage
# ----------------------------------------------------------------------------------------------

TICKET = Task(id="tk", prompt="Customer: the router blinks red. What should I do?\n",
              privileged_context="Resolution: hold the reset button for ten seconds, then wait for the green light. "
                                 "Answer: factory reset",
              answer="factory reset", verifier="label", meta={"answer_type": "label"})


@pytest.mark.parametrize("output, leaks", [
    ("First hold the reset button for ten seconds, then wait. Answer: factory reset", True),  # planted copy
    ("HOLD THE RESET BUTTON FOR TEN SECONDS", True),                                         # case-insensitive
    ("Answer: factory reset", False),                                                         # the answer itself
    ("Try a factory reset of the router; it usually fixes a red light. Answer: factory reset", False),
    ("the router blinks red. What should I do", False),                                       # spans of the prompt
    ("hold the reset button", False),                                                         # shorter than 6 tokens
    ("", False),
])
def test_leak_detector(output, leaks):
    assert (find_leak(output, TICKET) is not None) == leaks


def test_addition_tasks_cannot_leak():
    t = next(addition_tasks(1))
    assert find_leak(f"A:{t.answer}", t) is None


COPY = "hold the reset button for ten"  # the first 6-word span


@pytest.mark.parametrize("output", [
    "hold, the reset button, for ten, seconds",                      # a comma every few words
    "hold the reset button for ten seconds".replace(" ", "\u200b "),  # zero-width spaces
    "hold_the_reset_button_for_ten_seconds",                        # underscores
    "HOLD\nthe   reset\tbutton for ten seconds!",                  # case, line breaks, tabs
    "\uff48\uff4f\uff4c\uff44 the reset button for ten seconds",     # fullwidth letters (NFKC)
])
def test_disguised_copies_are_found(output):
    assert find_leak(output, TICKET) == COPY


def test_a_short_answer_is_masked_as_a_whole_word():
    """Answer "4": a verbatim copy of the whole context must be found, and the "4" inside "1449" must not
    cut the words around it (the old masking split "1449" into "1", mask, "9")."""
    t = Task(id="n", prompt="How many ports does the switch have?", privileged_context="Model 1449 has 4 ports",
             answer="4", verifier="numeric")
    assert find_leak("Model 1449 has 4 ports", t) == "model 1449 has"
    assert find_leak("It has 4 ports. Answer: 4", t) is None


def test_stock_phrases_seen_in_student_prompts_are_not_leaks():
    from rlsd.evaluate import common_ngrams

    boiler = "if the problem persists please contact the service desk"
    tasks = [Task(id=f"t{i}", prompt=f"Ticket {i}: the printer is stuck. {boiler}.", answer="restart",
                  privileged_context=f"Restart the spooler service number {i}. {boiler}.", verifier="label")
             for i in range(3)]
    out = f"Restart it. {boiler}. Answer: restart"
    other = Task(id="x", prompt="Q: printer?", answer="restart", verifier="label",
                 privileged_context=f"Restart the spooler. {boiler}.")
    assert find_leak(out, other) is not None  # alone, the boilerplate is in the context and not the prompt
    assert find_leak(out, other, common=common_ngrams([*tasks, other])) is None


def test_nothing_checkable_is_reported_as_not_measured():
    tasks = list(addition_tasks(3))
    r = summarise(tasks, ["A:1"] * 3, ["A:1"] * 6, k=2, n=2)
    assert r["leakage"]["n_checked"] == 0 and r["leakage"]["rate"] is None


# ----------------------------------------------------------------------------------------------
# metric arithmetic on controlled outputs
# ----------------------------------------------------------------------------------------------


def _tasks():
    return [
        Task(id="a", prompt="Q:1+2=?\n", privileged_context="3", answer="3"),
        Task(id="b", prompt="Q:2+2=?\n", privileged_context="4", answer="4"),
        TICKET,
    ]


GREEDY = ["A:3", "A:5", "Answer: factory reset"]
SAMPLED = ["A:3", "A:3", "A:0", "A:1",                                  # a: c = 2 of 4
           "A:0", "A:0", "A:0", "A:0",                                  # b: c = 0
           "Answer: factory reset", "hold the reset button for ten seconds, then wait. Answer: reboot",
           "Answer: reboot", "Answer: Factory  Reset."]                   # ticket: c = 2, one leak
TEACHER = ["A:3", "A:4", "Answer: factory reset"]


def _expected_pass_at_2():
    return (pass_at_k(4, 2, 2) + 0 + pass_at_k(4, 2, 2)) / 3


def test_summarise_hand_computed():
    r = summarise(_tasks(), GREEDY, SAMPLED, k=2, n=4, teacher_texts=TEACHER)
    assert r["pass@1"] == pytest.approx((2 / 4 + 0 + 2 / 4) / 3)
    assert r["pass@k"] == pytest.approx(_expected_pass_at_2())          # (5/6 + 0 + 5/6) / 3
    assert r["greedy_pass@1"] == pytest.approx(2 / 3)
    assert r["teacher_greedy_pass@1"] == pytest.approx(1.0)
    assert r["leakage"]["teacher_student_gap"] == pytest.approx(1 / 3)
    assert r["per_type"]["numeric"] == {"n_tasks": 2, "pass@1": 0.25, "pass@k": pytest.approx(5 / 12),
                                        "greedy_pass@1": 0.5, "teacher_greedy_pass@1": 1.0}
    assert r["per_type"]["label"]["pass@1"] == 0.5
    # only the ticket can leak: 5 outputs checked (greedy + 4 samples), one planted copy
    assert r["leakage"]["n_checked"] == 5 and r["leakage"]["n_leaks"] == 1
    assert r["leakage"]["rate"] == pytest.approx(0.2)
    assert r["leakage"]["examples"][0]["task"] == "tk"


def test_evaluate_model_with_controlled_sampler(tmp_path, monkeypatch):
    from rlsd.models import build_tiny_model

    build_tiny_model(tmp_path / "m")
    seen = []

    def fake_sample(model, tokenizer, prompts, *, num_samples=1, greedy=False, **kw):
        seen.append((list(prompts), num_samples, greedy))
        if greedy and any("reference solution" in p for p in prompts):
            texts = TEACHER
        elif greedy:
            texts = GREEDY
        else:
            texts = SAMPLED
        return Rollout(None, None, None, None, texts, None)

    monkeypatch.setattr(rlsd.rollout, "sample", fake_sample)
    cfg = load_config()
    r = evaluate_model(tmp_path / "m", _tasks(), k=2, num_samples=4, teacher_template=cfg.teacher.template)
    assert r["pass@1"] == pytest.approx(1 / 3)
    assert r["pass@k"] == pytest.approx(_expected_pass_at_2())
    assert r["greedy_pass@1"] == pytest.approx(2 / 3) and r["teacher_greedy_pass@1"] == 1.0
    # student prompts are the questions only; the teacher's carry the privileged context
    student_calls = [c for c in seen if not any("reference solution" in p for p in c[0])]
    assert all(p == t.prompt for c in student_calls for p, t in zip(c[0], _tasks()))
    teacher_call = [c for c in seen if c not in student_calls][0]
    assert TICKET.privileged_context in teacher_call[0][2]


# ----------------------------------------------------------------------------------------------
# a real (random) tiny model end to end
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from rlsd.models import build_tiny_model

    root = tmp_path_factory.mktemp("eval")
    build_tiny_model(root / "cand", seed=0)
    build_tiny_model(root / "base", seed=1)
    tasks = list(addition_tasks(6, seed=3)) + [TICKET]
    write_tasks(tasks, root / "eval.jsonl")
    return root, tasks


def test_greedy_is_deterministic_and_pass_at_k_bounds(tiny):
    root, tasks = tiny
    kw = dict(k=3, max_new_tokens=8, num_samples=4)
    r1 = evaluate_model(root / "cand", tasks, seed=0, **kw)
    r2 = evaluate_model(root / "cand", tasks, seed=1, **kw)
    assert [t["greedy_text"] for t in r1["per_task"]] == [t["greedy_text"] for t in r2["per_task"]]
    for r in (r1, r2):
        assert 0.0 <= r["pass@1"] <= r["pass@k"] <= 1.0
        for row in r["per_task"]:
            assert row["pass@1"] <= row["pass@k"] and row["n"] == 4
    r3 = evaluate_model(root / "cand", tasks, seed=0, **kw)
    assert [t["c"] for t in r3["per_task"]] == [t["c"] for t in r1["per_task"]]  # same seed, same samples


def test_run_evaluation_files_and_keys(tiny, tmp_path):
    root, tasks = tiny
    cfg = load_config(overrides=["eval.k=2", "eval.max_new_tokens=8", "eval.bootstrap_samples=200"])
    res = run_evaluation(cfg, candidate=root / "cand", baseline=root / "base", tasks_path=root / "eval.jsonl",
                         out_dir=tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert saved == json.loads(json.dumps(res))
    assert set(saved) == {"candidate", "baseline", "comparison", "leakage", "data_snapshot_id"}
    side = {"model", "pass@1", "pass@k", "greedy_pass@1", "k", "per_type", "teacher_greedy_pass@1"}
    assert set(saved["candidate"]) == side and set(saved["baseline"]) == side | {"kind", "name", "version", "uri"}
    # a baseline given as a bare path is recorded as such (no promotion over a champion accepts it)
    assert (saved["baseline"]["kind"], saved["baseline"]["uri"]) == ("path", str(root / "base"))
    assert set(saved["comparison"]) == {"diff_pass1", "ci_low", "ci_high", "n_tasks"}
    assert set(saved["leakage"]) == {"rate", "n_checked", "n_leaks", "examples", "teacher_student_gap"}
    c = saved["comparison"]
    assert c["n_tasks"] == len(tasks)
    assert c["ci_low"] <= c["diff_pass1"] <= c["ci_high"]
    assert c["diff_pass1"] == pytest.approx(saved["candidate"]["pass@1"] - saved["baseline"]["pass@1"])
    assert saved["candidate"]["k"] == 2 and isinstance(saved["candidate"]["teacher_greedy_pass@1"], float)
    assert set(saved["candidate"]["per_type"]) == {"numeric", "label"}
    for name in ("report.md", "report.html", "per_type.png", "bootstrap.png", "per_task.jsonl"):
        assert (tmp_path / "out" / name).stat().st_size > 0, name
    assert (tmp_path / "out" / "per_type.png").read_bytes()[:4] == b"\x89PNG"
    assert "per_type.png" in (tmp_path / "out" / "report.html").read_text()
    rows = [json.loads(x) for x in (tmp_path / "out" / "per_task.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * len(tasks)


def test_run_evaluation_without_baseline_and_cli(tiny, tmp_path, monkeypatch):
    from rlsd.cli import main

    root, tasks = tiny
    rc = main(["evaluate", "--candidate", str(root / "cand"), "--tasks", str(root / "eval.jsonl"),
               "--output", str(tmp_path / "o"), "--set", "eval.k=2", "--set", "eval.max_new_tokens=6"])
    assert rc == 0
    saved = json.loads((tmp_path / "o" / "evaluation.json").read_text())
    assert saved["baseline"] is None and saved["comparison"] is None
    assert not (tmp_path / "o" / "bootstrap.png").exists()
    assert (tmp_path / "o" / "per_type.png").exists()


# ----------------------------------------------------------------------------------------------
# candidate vs baseline on the same tasks, a known difference (issue 21: both models used to score 0,
# so swapping them passed every test)
# ----------------------------------------------------------------------------------------------

KNOWN = [Task(id=f"k{i}", prompt=f"Q:{i}+{i}=?\n", privileged_context=str(2 * i), answer=str(2 * i))
         for i in range(1, 5)]
# samples that pass per task (n = 4): candidate 4, 3, 2, 1; baseline 2, 2, 2, 0
# -> per-task pass@1 differences 0.5, 0.25, 0, 0.25: mean +0.25, never negative
CAND_C, BASE_C = [4, 3, 2, 1], [2, 2, 2, 0]
CAND_GREEDY, BASE_GREEDY = [True, True, True, True], [True, False, True, False]


def _controlled_sampler(monkeypatch, tmp_path):
    """A real tokenizer; 'models' that are their folder names; a sampler that answers by a fixed table."""
    from types import SimpleNamespace

    import rlsd.models
    from rlsd.models import build_tiny_model

    build_tiny_model(tmp_path / "tok")
    monkeypatch.setattr(rlsd.models, "load_model", lambda path, **kw: SimpleNamespace(name=Path(path).name))
    monkeypatch.setattr(rlsd.models, "load_tokenizer",
                        lambda path, _real=rlsd.models.load_tokenizer: _real(tmp_path / "tok"))

    def fake_sample(model, tokenizer, prompts, *, num_samples=1, greedy=False, **kw):
        texts = []
        for p in prompts:
            i = next(j for j, t in enumerate(KNOWN) if p.startswith(t.prompt))
            ans = KNOWN[i].answer
            if greedy and "reference solution" in p:
                texts.append(f"A:{ans}")  # the teacher is always right
            elif greedy:
                ok = (CAND_GREEDY if model.name == "cand" else BASE_GREEDY)[i]
                texts.append(f"A:{ans}" if ok else "A:1000")
            else:
                c = (CAND_C if model.name == "cand" else BASE_C)[i]
                texts.extend([f"A:{ans}"] * c + ["A:1000"] * (num_samples - c))
        return Rollout(None, None, None, None, texts, None)

    monkeypatch.setattr(rlsd.rollout, "sample", fake_sample)


def test_candidate_and_baseline_differ_by_a_known_amount(tmp_path, monkeypatch):
    _controlled_sampler(monkeypatch, tmp_path)
    write_tasks(KNOWN, tmp_path / "eval.jsonl")
    cfg = load_config(overrides=["eval.k=2", "eval.num_samples=4", "eval.bootstrap_samples=300", "eval.seed=5"])
    res = run_evaluation(cfg, candidate=tmp_path / "cand", baseline=tmp_path / "base",
                         tasks_path=tmp_path / "eval.jsonl", out_dir=tmp_path / "out")
    cand, base, comp = res["candidate"], res["baseline"], res["comparison"]
    assert cand["pass@1"] == pytest.approx((4 + 3 + 2 + 1) / 16) and base["pass@1"] == pytest.approx(6 / 16)
    assert cand["greedy_pass@1"] == 1.0 and base["greedy_pass@1"] == 0.5
    assert cand["pass@k"] == pytest.approx(sum(pass_at_k(4, c, 2) for c in CAND_C) / 4)
    assert base["pass@k"] == pytest.approx(sum(pass_at_k(4, c, 2) for c in BASE_C) / 4)
    assert cand["teacher_greedy_pass@1"] == 1.0 and cand["k"] == 2
    assert Path(cand["model"]).name == "cand" and Path(base["model"]).name == "base"
    assert comp["diff_pass1"] == pytest.approx(0.25) and comp["n_tasks"] == 4
    # the interval is the bootstrap of exactly these per-task differences, candidate minus baseline
    want = paired_bootstrap([c / 4 for c in BASE_C], [c / 4 for c in CAND_C], n_boot=300, seed=5)
    assert (comp["ci_low"], comp["ci_high"]) == (pytest.approx(want["ci_low"]), pytest.approx(want["ci_high"]))
    assert 0.0 <= comp["ci_low"] < 0.25 < comp["ci_high"] <= 0.5
    assert res["leakage"]["teacher_student_gap"] == pytest.approx(0.0)
    saved = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert saved["comparison"] == pytest.approx(comp)
    rows = [json.loads(x) for x in (tmp_path / "out" / "per_task.jsonl").read_text().splitlines()]
    assert [(r["model"], r["id"], r["c"]) for r in rows] == (
        [("candidate", t.id, c) for t, c in zip(KNOWN, CAND_C)] + [("baseline", t.id, c) for t, c in zip(KNOWN, BASE_C)])
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Paired bootstrap over 4 tasks: pass@1 difference +0.250" in md
    assert "| candidate |" in md and "| baseline |" in md and "0.625" in md and "0.375" in md

    # the same models the other way round: the difference flips sign, and a promotion gate would refuse it
    swapped = run_evaluation(cfg, candidate=tmp_path / "base", baseline=tmp_path / "cand",
                             tasks_path=tmp_path / "eval.jsonl", out_dir=tmp_path / "out2")
    assert swapped["comparison"]["diff_pass1"] == pytest.approx(-0.25)
    assert swapped["comparison"]["ci_high"] <= 0.0


def test_run_evaluation_passes_every_setting_to_the_sampler(tmp_path, monkeypatch):
    """eval.* and rollout.* settings reach each generate call, eval.limit cuts the tasks, and the baseline's
    identity and the data snapshot are recorded."""
    import rlsd.evaluate as E

    _controlled_sampler(monkeypatch, tmp_path)
    real = rlsd.rollout.sample
    calls = []

    def spy(model, tokenizer, prompts, **kw):
        calls.append((model.name, len(prompts), kw))
        return real(model, tokenizer, prompts, **kw)

    monkeypatch.setattr(rlsd.rollout, "sample", spy)
    seeds = []
    monkeypatch.setattr(E, "paired_bootstrap", lambda *a, **kw: seeds.append(kw) or paired_bootstrap(*a, **kw))
    tasks = [Task(id=t.id, prompt=t.prompt, privileged_context=t.privileged_context, answer=t.answer,
                  meta={"snapshot_id": "snap-7"}) for t in KNOWN]
    write_tasks(tasks, tmp_path / "eval.jsonl")
    cfg = load_config(overrides=["eval.k=2", "eval.num_samples=4", "eval.max_new_tokens=7", "eval.temperature=0.7",
                                 "eval.limit=3", "eval.bootstrap_samples=150", "eval.seed=9", "rollout.engine=generate",
                                 "rollout.kernels=torch", "rollout.max_prompt_tokens=300"])
    res = run_evaluation(cfg, candidate=tmp_path / "cand", baseline=tmp_path / "base", tasks_path=tmp_path / "eval.jsonl",
                         out_dir=tmp_path / "out", baseline_info={"kind": "champion", "name": "m", "version": "3",
                                                                 "uri": "models:/m/3", "extra": "dropped"})
    assert res["comparison"]["n_tasks"] == 3 and res["data_snapshot_id"] == "snap-7"
    assert res["baseline"]["kind"] == "champion" and res["baseline"]["version"] == "3" and "extra" not in res["baseline"]
    assert res["baseline"]["uri"] == "models:/m/3" and res["baseline"]["name"] == "m"
    assert seeds == [{"n_boot": 150, "seed": 9, "return_samples": True}]
    assert {c[0] for c in calls} == {"cand", "base"} and all(c[1] == 3 for c in calls)
    for _, _, kw in calls:
        assert (kw["max_new_tokens"], kw["temperature"], kw["engine"], kw["kernels"], kw["max_prompt_tokens"]) == (
            7, 0.7, "generate", "torch", 300)
    assert sorted((kw["greedy"], kw["num_samples"]) for _, _, kw in calls) == [
        (False, 4), (False, 4), (True, 1), (True, 1), (True, 1), (True, 1)]  # teacher + student greedy per model
    # a baseline without identity is recorded as a path, which no promotion over a champion accepts
    res = run_evaluation(cfg, candidate=tmp_path / "cand", baseline=tmp_path / "base", tasks_path=tmp_path / "eval.jsonl",
                         out_dir=tmp_path / "out2")
    assert {k: res["baseline"][k] for k in ("kind", "name", "version", "uri")} == {
        "kind": "path", "name": str(tmp_path / "base"), "version": None, "uri": str(tmp_path / "base")}


def test_report_text_exact(tmp_path, monkeypatch):
    """report.md and report.html say exactly the numbers of evaluation.json (the report is what people read)."""
    _controlled_sampler(monkeypatch, tmp_path)
    write_tasks(KNOWN, tmp_path / "eval.jsonl")
    cfg = load_config(overrides=["eval.k=2", "eval.num_samples=4", "eval.bootstrap_samples=300", "eval.seed=5"])
    out = tmp_path / "out"
    run_evaluation(cfg, candidate=tmp_path / "cand", baseline=tmp_path / "base", tasks_path=tmp_path / "eval.jsonl",
                   out_dir=out)
    want = paired_bootstrap([c / 4 for c in BASE_C], [c / 4 for c in CAND_C], n_boot=300, seed=5)
    ci = f"(95% CI {want['ci_low']:+.3f} .. {want['ci_high']:+.3f})"
    c, b = tmp_path / "cand", tmp_path / "base"
    notes = [f"Paired bootstrap over 4 tasks: pass@1 difference +0.250 {ci}.",
             "Leakage rate of the candidate's outputs: - (0 of 0 checked outputs; spans of >= 6 context tokens absent "
             "from the prompt, answer string excluded, each with a word neither the prompt nor half the evaluated "
             "prompts hold).",
             "Teacher-vs-student greedy gap: 0.000.",
             "Format score (answer stated exactly once): candidate 1.000, baseline 1.000."]
    md = (out / "report.md").read_text()
    assert md.startswith("\n".join([
        "# Evaluation report", "",
        "| model | path | greedy pass@1 | pass@1 | pass@2 | teacher greedy pass@1 |", "|---|---|---|---|---|---|",
        f"| candidate | {c} | 1.000 | 0.625 | 0.833 | 1.000 |", f"| baseline | {b} | 0.500 | 0.375 | 0.625 | 1.000 |", "",
        "| model | type | tasks | greedy pass@1 | pass@1 | pass@k |", "|---|---|---|---|---|---|",
        "| candidate | numeric | 4 | 1.000 | 0.625 | 0.833 |", "| baseline | numeric | 4 | 0.500 | 0.375 | 0.625 |", "",
        *[f"- {n}" for n in notes], ""]))
    assert "## Leak examples" not in md
    page = (out / "report.html").read_text()
    assert page.startswith("<!doctype html><html><head><meta charset='utf-8'><title>rlsd evaluation</title></head><body>\n"
                           "<h1>Evaluation report</h1>\n")
    assert ("<table border=1 cellpadding=4><tr><th>model</th><th>path</th><th>greedy pass@1</th><th>pass@1</th>"
            "<th>pass@2</th><th>teacher greedy pass@1</th></tr>"
            f"<tr><td>candidate</td><td>{c}</td><td>1.000</td><td>0.625</td><td>0.833</td><td>1.000</td></tr>"
            f"<tr><td>baseline</td><td>{b}</td><td>0.500</td><td>0.375</td><td>0.625</td><td>1.000</td></tr></table>") in page
    assert ("<table border=1 cellpadding=4><tr><th>model</th><th>type</th><th>tasks</th><th>greedy pass@1</th>"
            "<th>pass@1</th><th>pass@k</th></tr><tr><td>candidate</td><td>numeric</td><td>4</td><td>1.000</td>"
            "<td>0.625</td><td>0.833</td></tr><tr><td>baseline</td><td>numeric</td><td>4</td><td>0.500</td>"
            "<td>0.375</td><td>0.625</td></tr></table>") in page
    import html as _html

    assert "<ul>" + "".join(f"<li>{_html.escape(n)}</li>" for n in notes) + "</ul>" in page
    assert page.rstrip().endswith("</body></html>") and "Leak examples" not in page


def test_report_without_baseline_lists_leak_examples(tmp_path):
    from rlsd.evaluate import write_report

    side = {"model": "m", "pass@1": 0.5, "pass@k": 0.75, "greedy_pass@1": 0.25, "k": 3, "teacher_greedy_pass@1": None,
            "per_type": {"label": {"n_tasks": 2, "pass@1": 0.5, "pass@k": 0.75, "greedy_pass@1": 0.25}}}
    leak = {"rate": 0.5, "n_checked": 4, "n_leaks": 2, "teacher_student_gap": None,
            "examples": [{"task": "t<1>", "span": "hold the reset button", "output": "..."}]}
    result = {"candidate": side, "baseline": None, "comparison": None, "leakage": leak}
    write_report(result, tmp_path, cand={"leakage": {**leak, "ngram": 5}, "format_score": 0.5}, base=None)
    md = (tmp_path / "report.md").read_text()
    assert "| candidate | m | 0.250 | 0.500 | 0.750 | - |" in md and "| baseline |" not in md
    assert "| model | path | greedy pass@1 | pass@1 | pass@3 | teacher greedy pass@1 |" in md
    assert "| candidate | label | 2 | 0.250 | 0.500 | 0.750 |" in md
    assert ("- Leakage rate of the candidate's outputs: 0.500 (2 of 4 checked outputs; spans of >= 5 context tokens "
            "absent from the prompt, answer string excluded, each with a word neither the prompt nor half the "
            "evaluated prompts hold).") in md
    assert "- Teacher-vs-student greedy gap: -." in md and "- Format score (answer stated exactly once): candidate 0.500.\n" in md
    assert "Paired bootstrap" not in md
    shown = "1 of the candidate's 2 flagged outputs; leaks.jsonl in the evaluation folder holds every one, for both models."
    assert md.rstrip().endswith(f'## Leak examples\n\n{shown}\n\n- `t<1>`: "hold the reset button"')
    page = (tmp_path / "report.html").read_text()
    assert (f"<h2>Leak examples</h2><p>{html.escape(shown)}</p><ul>\n"
            "<li><code>t&lt;1&gt;</code>: hold the reset button</li>\n</ul>") in page
    assert (tmp_path / "per_type.png").exists() and not (tmp_path / "bootstrap.png").exists()


def _fake_models(monkeypatch, tmp_path, calls, answer_for=None):
    """load_model / load_tokenizer / sample stand-ins: a real tokenizer, a sampler that records each call and
    answers every prompt with ``answer_for(prompt)`` (default: the right answer of its KNOWN task)."""
    from types import SimpleNamespace

    import rlsd.models
    from rlsd.models import build_tiny_model

    build_tiny_model(tmp_path / "tok")
    real_tok = rlsd.models.load_tokenizer
    monkeypatch.setattr(rlsd.models, "load_model", lambda path, **kw: SimpleNamespace(path=str(path)))

    def load_tokenizer(path, **kw):
        assert str(path) == str(tmp_path / "m")  # the model's own tokenizer
        return real_tok(tmp_path / "tok")

    monkeypatch.setattr(rlsd.models, "load_tokenizer", load_tokenizer)

    def fake_sample(model, tokenizer, prompts, *, num_samples=1, **kw):
        calls.append({"prompts": list(prompts), "num_samples": num_samples, **kw})
        ans = answer_for or (lambda p: "A:" + next(t.answer for t in KNOWN if p.startswith(t.prompt)))
        return Rollout(None, None, None, None, [ans(p) for p in prompts for _ in range(num_samples)], None)

    monkeypatch.setattr(rlsd.rollout, "sample", fake_sample)


def test_evaluate_model_defaults(tmp_path, monkeypatch):
    import torch

    calls, seeds = [], []
    _fake_models(monkeypatch, tmp_path, calls)
    real_seed = torch.manual_seed
    monkeypatch.setattr(torch, "manual_seed", lambda s: seeds.append(s) or real_seed(s))
    r = evaluate_model(tmp_path / "m", KNOWN)
    assert seeds == [0] and r["k"] == 4 and r["n"] == 4 and r["pass@1"] == 1.0 and r["greedy_pass@1"] == 1.0
    assert r["teacher_greedy_pass@1"] is None and r["leakage"]["ngram"] == 6
    assert [(c["greedy"], c["num_samples"], len(c["prompts"])) for c in calls] == [(True, 1, 4), (False, 4, 4)]
    for c in calls:
        assert (c["max_new_tokens"], c["temperature"], c["engine"], c["kernels"], c["max_prompt_tokens"]) == (
            64, 1.0, "generate", "auto", 512)
        assert c["prompts"] == [t.prompt for t in KNOWN]  # plain text, no chat template, no response prefix
    with pytest.raises(ValueError, match="^evaluate_model needs at least one task$"):
        evaluate_model(tmp_path / "m", [])
    with pytest.raises(ValueError, match="^eval k must be >= 1, got 0$"):
        evaluate_model(tmp_path / "m", KNOWN, k=0)
    assert evaluate_model(tmp_path / "m", KNOWN, k=1)["n"] == 1


def test_evaluate_model_batches_and_prefix(tmp_path, monkeypatch):
    calls = []
    _fake_models(monkeypatch, tmp_path, calls, answer_for=lambda p: next(t.answer for t in KNOWN if p.startswith(t.prompt)))
    # batch_size 4 over 4 tasks: greedy 4 prompts a call; 8 samples each: 4 // 8 -> 1 prompt a call
    r = evaluate_model(tmp_path / "m", KNOWN, k=2, num_samples=8, batch_size=4, response_prefix="A:", seed=3)
    assert [len(c["prompts"]) for c in calls] == [4, 1, 1, 1, 1]
    assert r["pass@1"] == 1.0 and r["n"] == 8  # "A:" + the bare answer the model wrote
    assert all(c["prompts"][0].endswith("A:") for c in calls)  # the prefix opens the reply in the prompt
    calls.clear()
    evaluate_model(tmp_path / "m", KNOWN, k=1, batch_size=0)  # 0 means 1 prompt a call, not an empty batch
    assert [len(c["prompts"]) for c in calls] == [1] * 8
    calls.clear()
    evaluate_model(tmp_path / "m", KNOWN[:3], k=1, batch_size=2)
    assert [len(c["prompts"]) for c in calls] == [2, 1, 2, 1]


def test_find_leak_reads_the_first_100000_characters():
    copy = "hold the reset button for ten"
    filler = ("x " * 60_000)[: 100_001 - len(copy)]  # an even length: ends with a space
    out = filler + copy  # the copy's last letter is character 100,001
    assert len(out) == 100_001 and find_leak(out, TICKET) is None
    assert find_leak(out[1:], TICKET) == copy  # one character earlier it is read


def test_run_evaluation_files_settings_and_no_baseline(tmp_path, monkeypatch):
    """A nested output folder written twice; evaluation.json is the result indented by 2; seed, engine, prefix
    and leak n-gram reach evaluate_model; without a baseline nothing is compared and no bootstrap is drawn."""
    import torch

    import rlsd.evaluate as E

    _controlled_sampler(monkeypatch, tmp_path)
    real = rlsd.rollout.sample
    calls, seeds = [], []
    monkeypatch.setattr(rlsd.rollout, "sample", lambda m, t, prompts, **kw: calls.append((prompts, kw)) or real(m, t, prompts, **kw))
    real_seed = torch.manual_seed
    monkeypatch.setattr(torch, "manual_seed", lambda s: seeds.append(s) or real_seed(s))
    write_tasks(KNOWN, tmp_path / "eval.jsonl")
    cfg = load_config(overrides=["eval.k=2", "eval.num_samples=4", "eval.bootstrap_samples=100", "eval.seed=11",
                                 "eval.leak_ngram=5", "rollout.engine=graph", "model.response_prefix='Result: '"])
    out = tmp_path / "a" / "b" / "out"
    for _ in range(2):  # the folder and its parents are created; a second run writes over the first
        res = run_evaluation(cfg, candidate=tmp_path / "cand", baseline=tmp_path / "base",
                             tasks_path=tmp_path / "eval.jsonl", out_dir=out)
    assert (out / "evaluation.json").read_text() == json.dumps(res, indent=2)
    assert set(res["leakage"]) == {"rate", "n_checked", "n_leaks", "examples", "teacher_student_gap"}
    assert res["leakage"]["n_checked"] == 0 and res["leakage"]["n_leaks"] == 0
    assert seeds and set(seeds) == {11}
    assert all(kw["engine"] == "graph" for _, kw in calls)
    assert all(p.endswith("Result: ") for prompts, _ in calls for p in prompts)
    assert ">= 5 context tokens" in (out / "report.md").read_text()
    assert (out / "bootstrap.png").stat().st_size > 0
    rows = [json.loads(x) for x in (out / "per_task.jsonl").read_text().splitlines()]
    assert [r["model"] for r in rows] == ["candidate"] * 4 + ["baseline"] * 4
    calls.clear()
    res = run_evaluation(cfg, candidate=tmp_path / "cand", tasks_path=tmp_path / "eval.jsonl", out_dir=tmp_path / "solo")
    assert res["baseline"] is None and res["comparison"] is None
    assert len(calls) == 3  # the candidate only: greedy, samples, teacher
    assert not (tmp_path / "solo" / "bootstrap.png").exists() and (tmp_path / "solo" / "per_type.png").exists()
    rows = [json.loads(x) for x in (tmp_path / "solo" / "per_task.jsonl").read_text().splitlines()]
    assert [r["model"] for r in rows] == ["candidate"] * 4
    assert E.LEAK_NGRAM == 6


def test_every_flagged_output_is_written_to_leaks_jsonl(tmp_path, monkeypatch):
    """evaluation.json keeps 10 leak examples cut to 300 characters; leaks.jsonl keeps every flagged output of
    both models whole (up to 2,000 characters), so an operator can audit what the leakage gate counted."""
    from types import SimpleNamespace

    import rlsd.models
    from rlsd.models import build_tiny_model

    build_tiny_model(tmp_path / "tok")
    monkeypatch.setattr(rlsd.models, "load_model", lambda path, **kw: SimpleNamespace(name=Path(path).name))
    monkeypatch.setattr(rlsd.models, "load_tokenizer",
                        lambda path, _real=rlsd.models.load_tokenizer: _real(tmp_path / "tok"))
    task = Task(id="R", prompt="Customer: the router blinks red.\n", answer="factory reset", verifier="label",
                privileged_context="Resolution: hold the reset button for ten seconds, then call the desk. "
                                   "Answer: factory reset")
    copy = "Hold the reset button for ten seconds. " + "Wait. " * 80 + "Answer: factory reset"
    clean = "Answer: factory reset"

    def fake_sample(model, tokenizer, prompts, *, num_samples=1, greedy=False, **kw):
        if greedy:  # student and teacher greedy: clean
            return Rollout(None, None, None, None, [clean] * len(prompts), None)
        copies = 11 if model.name == "cand" else 1  # of 12 samples
        return Rollout(None, None, None, None, [copy] * copies + [clean] * (num_samples - copies), None)

    monkeypatch.setattr(rlsd.rollout, "sample", fake_sample)
    write_tasks([task], tmp_path / "eval.jsonl")
    cfg = load_config(overrides=["eval.k=2", "eval.num_samples=12", "eval.bootstrap_samples=100"])
    res = run_evaluation(cfg, candidate=tmp_path / "cand", baseline=tmp_path / "base",
                         tasks_path=tmp_path / "eval.jsonl", out_dir=tmp_path / "out")
    assert res["leakage"]["n_leaks"] == 11 and res["leakage"]["n_checked"] == 13
    assert len(copy) > 300
    assert res["leakage"]["examples"] == [{"task": "R", "span": "hold the reset button for ten", "output": copy[:300]}] * 10
    rows = [json.loads(x) for x in (tmp_path / "out" / "leaks.jsonl").read_text().splitlines()]
    want = {"task": "R", "span": "hold the reset button for ten", "output": copy}
    assert rows == [{"model": "candidate", **want}] * 11 + [{"model": "baseline", **want}]
    saved = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert "flagged" not in saved["leakage"] and saved["leakage"]["examples"] == res["leakage"]["examples"]
