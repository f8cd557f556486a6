"""Evaluation, exact values (issue 21: the survivors of the evaluate mutation run).

Every expected number here is computed by hand in the comment beside it: pass@k by the unbiased estimator,
ROUGE-L F1 of the free-text answers (the ``text`` verifier's default grader), bootstrap quantiles of a
two-valued difference, leak counts of planted copies. Each test names the slips it is there to catch.
"""

import numpy as np
import pytest

from rlsd.evaluate import _fmt, _threshold, find_leak, paired_bootstrap, summarise
from rlsd.tasks import Task
from rlsd.verifiers.sandbox import sandbox_stats

# ----------------------------------------------------------------------------------------------
# tasks with hand-computable scores
# ----------------------------------------------------------------------------------------------

# reference "restart the print spooler service" (5 words); ROUGE-L F1 = 2PR / (P + R) on the answer line:
#   "restart the print queue"            LCS 3, P 3/4, R 3/5 -> 2/3   (passes at the text threshold 0.5)
#   "restart the print spooler service"  1.0;  "reboot" 0.0
SPOOLER = "restart the print spooler service"
PARTIAL, EXACT, WRONG = "Answer: restart the print queue", f"Answer: {SPOOLER}", "Answer: reboot"


def _text_task(**args) -> Task:
    return Task(id="txt", prompt="The print queue is stuck. What fixes it?\n", privileged_context="",
                answer=SPOOLER, verifier="text", verifier_args=args, meta={"answer_type": "free_text"})


# a numeric task whose reference cannot be read: every score is None ("cannot verify")
BAD = Task(id="bad", prompt="Q: how many ports?\n", privileged_context="", answer="not a number", verifier="numeric")
NUM = Task(id="num", prompt="Q:2+2=?\n", privileged_context="4", answer="4")
LONG_GREEDY = "x" * 480 + "\n" + PARTIAL  # 512 characters; the per-task row keeps the first 500


def _three():
    # n = 2 samples per task, task-major
    greedy = ["A:1", "A:5", LONG_GREEDY]
    sampled = ["A:1", "A:2",          # BAD: both None
               "A:4", "A:5",          # NUM: c = 1
               PARTIAL, WRONG]        # txt: 2/3 passes (>= 0.5), 0 fails -> c = 1
    teacher = ["A:1", "A:4", PARTIAL]  # None, 1.0, 2/3
    return [BAD, NUM, _text_task()], greedy, sampled, teacher


def test_summarise_rows_exact():
    """Per-task rows, every key: c by each task's own threshold, pass@k = 1 - C(n-c, k)/C(n, k), the
    teacher's score and pass, mean_score with None as 0, the greedy text cut at 500 characters."""
    tasks, greedy, sampled, teacher = _three()
    r = summarise(tasks, greedy, sampled, k=2, n=2, teacher_texts=teacher)
    rows = {row["id"]: {k: v for k, v in row.items() if k != "format_score"} for row in r["per_task"]}
    # n = 2, k = 2, c = 1: C(1, 2) = 0 -> pass@2 = 1
    assert rows["bad"] == {"id": "bad", "type": "numeric", "n": 2, "c": 0, "pass@1": 0.0, "pass@k": 0.0,
                           "greedy_score": None, "greedy_pass": 0.0, "mean_score": 0.0, "greedy_text": "A:1",
                           "teacher_greedy_score": None, "teacher_greedy_pass": 0.0}
    assert rows["num"] == {"id": "num", "type": "numeric", "n": 2, "c": 1, "pass@1": 0.5, "pass@k": 1.0,
                           "greedy_score": 0.0, "greedy_pass": 0.0, "mean_score": 0.5, "greedy_text": "A:5",
                           "teacher_greedy_score": 1.0, "teacher_greedy_pass": 1.0}
    txt = rows["txt"]
    assert txt.pop("greedy_text") == LONG_GREEDY[:500] and len(LONG_GREEDY) == 512
    assert txt == {"id": "txt", "type": "free_text", "n": 2, "c": 1, "pass@1": 0.5, "pass@k": 1.0,
                   "greedy_score": pytest.approx(2 / 3), "greedy_pass": 1.0, "mean_score": pytest.approx(1 / 3),
                   "teacher_greedy_score": pytest.approx(2 / 3), "teacher_greedy_pass": 1.0}
    # each of the three outputs states one answer, except BAD's "A:1"/"A:2"/"A:1" which do too: all 1.0
    assert [row["format_score"] for row in r["per_task"]] == [1.0, 1.0, 1.0]


def test_summarise_totals_and_keys_exact():
    tasks, greedy, sampled, teacher = _three()
    r = summarise(tasks, greedy, sampled, k=2, n=2, teacher_texts=teacher)
    assert set(r) == {"model", "k", "n", "n_tasks", "pass@1", "pass@k", "greedy_pass@1", "teacher_greedy_pass@1", "format_score",
                      "n_unverifiable", "per_type", "per_task", "leakage", "code_sandbox"}
    assert r["model"] == "" and r["k"] == 2 and r["n"] == 2 and r["n_tasks"] == 3
    assert r["pass@1"] == pytest.approx((0 + 0.5 + 0.5) / 3)
    assert r["pass@k"] == pytest.approx((0 + 1 + 1) / 3)
    assert r["greedy_pass@1"] == pytest.approx(1 / 3)          # only the text task's 2/3 greedy passes
    assert r["teacher_greedy_pass@1"] == pytest.approx(2 / 3)  # NUM and txt
    # cannot verify: BAD's 2 samples + its greedy output = 3 (teacher outputs are not counted)
    assert r["n_unverifiable"] == 3
    assert r["per_type"] == {
        "free_text": {"n_tasks": 1, "pass@1": 0.5, "pass@k": 1.0, "greedy_pass@1": 1.0, "teacher_greedy_pass@1": 1.0},
        "numeric": {"n_tasks": 2, "pass@1": 0.25, "pass@k": 0.5, "greedy_pass@1": 0.0, "teacher_greedy_pass@1": 0.5}}
    assert r["leakage"] == {"rate": None, "n_checked": 0, "n_leaks": 0, "ngram": 6, "examples": [], "flagged": [],
                            "teacher_student_gap": pytest.approx(2 / 3 - 1 / 3)}
    assert r["code_sandbox"] == sandbox_stats()
    assert summarise(tasks, greedy, sampled, k=2, n=2, model="m/1")["model"] == "m/1"


def test_summarise_refuses_a_wrong_number_of_texts_exactly():
    tasks, greedy, sampled, _ = _three()
    with pytest.raises(ValueError, match=r"^expected 3 greedy and 6 sampled texts, got 2 and 6$"):
        summarise(tasks, greedy[:2], sampled, k=2, n=2)   # only the greedy count is wrong
    with pytest.raises(ValueError, match=r"^expected 3 greedy and 6 sampled texts, got 3 and 5$"):
        summarise(tasks, greedy, sampled[:5], k=2, n=2)   # only the sampled count is wrong


def test_text_tasks_pass_at_their_own_threshold():
    """A free-text answer passes from 0.5 (TEXT_PASS_THRESHOLD), or from verifier_args.pass_threshold; every
    other verifier only at full score; a score equal to the threshold passes."""
    assert _threshold(_text_task()) == 0.5
    assert _threshold(_text_task(pass_threshold=0.9)) == 0.9
    assert _threshold(NUM) == pytest.approx(1.0) and _threshold(NUM) < 1.0
    strict = _text_task(pass_threshold=0.9)
    r = summarise([strict], [PARTIAL], [PARTIAL, EXACT], k=1, n=2)
    assert (r["per_task"][0]["c"], r["greedy_pass@1"]) == (1, 0.0)  # 2/3 < 0.9 fails, 1.0 passes
    # a score equal to the threshold passes: exact answer at threshold 1.0; ROUGE-L 1/2 at the default 0.5
    full = _text_task(pass_threshold=1.0)
    assert summarise([full], [EXACT], [EXACT], k=1, n=1)["greedy_pass@1"] == 1.0
    half = Task(id="h", prompt="What is stuck?\n", privileged_context="", answer="print spooler", verifier="text")
    # "print queue" vs "print spooler": LCS 1, P = R = 1/2 -> F1 = 1/2
    r = summarise([half], ["Answer: print queue"], ["Answer: print queue"], k=1, n=1)
    assert r["per_task"][0]["greedy_score"] == 0.5 and r["pass@1"] == 1.0


# ----------------------------------------------------------------------------------------------
# leakage inside summarise: the n-gram length, stock phrases, the examples
# ----------------------------------------------------------------------------------------------

ROUTER = Task(id="L", prompt="Customer: the router blinks red.\n", answer="factory reset", verifier="label",
              privileged_context="Resolution: hold the reset button for ten seconds, then contact the desk. "
                                 "Answer: factory reset")
PRINTER = Task(id="M", prompt="Customer: the printer jams. If it persists contact the desk.\n", answer="clear jam",
               verifier="label",
               privileged_context="Resolution: open the tray and remove the stuck paper sheet. Answer: clear jam")


def test_leak_ngram_and_stock_phrases_reach_the_leak_check():
    """leak_ngram=3: a 3-word copy ("hold the reset") leaks; "contact the desk" is in the router's context
    but also in another task's student prompt (a stock phrase at n = 3), so it does not."""
    long_copy = "First hold the reset button. " + "Then wait. " * 40 + "Answer: factory reset"
    greedy = [long_copy, "Answer: clear jam"]
    sampled = ["Please contact the desk today. Answer: factory reset", "Answer: clear jam"]
    r = summarise([ROUTER, PRINTER], greedy, sampled, k=1, n=1, leak_ngram=3)
    assert r["leakage"]["n_checked"] == 4 and r["leakage"]["n_leaks"] == 1
    assert r["leakage"]["rate"] == 0.25 and r["leakage"]["ngram"] == 3
    assert len(long_copy) > 300
    assert r["leakage"]["examples"] == [{"task": "L", "span": "hold the reset", "output": long_copy[:300]}]
    # at the default 6 words the 3-word copy is no leak
    assert summarise([ROUTER, PRINTER], greedy, sampled, k=1, n=1)["leakage"]["n_leaks"] == 0


def test_at_most_ten_leak_examples():
    copy = "hold the reset button for ten seconds. Answer: factory reset"
    r = summarise([ROUTER], [copy], [copy] * 11, k=1, n=11)
    assert r["leakage"]["n_leaks"] == 12 and r["leakage"]["n_checked"] == 12
    assert len(r["leakage"]["examples"]) == 10 and len(r["leakage"]["flagged"]) == 12


# ----------------------------------------------------------------------------------------------
# find_leak: the last n-gram of a context, the span after a masked answer
# ----------------------------------------------------------------------------------------------


def test_a_copy_of_the_last_words_of_the_context_leaks():
    t = Task(id="s", prompt="What now?\n", privileged_context="one two three four five six seven", answer="zzz",
             verifier="label")
    # 7 words, n = 6: two 6-grams; the copy is the last one
    assert find_leak("two three four five six seven", t) == "two three four five six seven"
    assert find_leak("one two three four five six", t) == "one two three four five six"


def test_the_span_length_counts_the_words_after_a_masked_answer_from_zero():
    """Context "red green 42 blue cyan magenta", answer 42: runs of 2 and 3 words -> spans of 3 words."""
    t = Task(id="c", prompt="Which number?\n", privileged_context="red green 42 blue cyan magenta", answer="42",
             verifier="numeric")
    assert find_leak("blue cyan magenta", t) == "blue cyan magenta"


# ----------------------------------------------------------------------------------------------
# paired bootstrap
# ----------------------------------------------------------------------------------------------


def test_bootstrap_defaults_seed_and_sample_count():
    base, cand = [0.0, 0.0, 1.0, 0.5, 0.25], [1.0, 0.0, 1.0, 0.75, 0.0]
    r = paired_bootstrap(base, cand, return_samples=True)
    assert r["samples"].shape == (2000,)   # n_boot defaults to 2000
    assert r["diff"] == pytest.approx((1 + 0 + 0 + 0.25 - 0.25) / 5)
    same = paired_bootstrap(base, cand, seed=0, return_samples=True)
    assert np.array_equal(r["samples"], same["samples"])  # seed defaults to 0
    other = paired_bootstrap(base, cand, seed=1, return_samples=True)
    assert not np.array_equal(r["samples"], other["samples"])
    # a fixed seed gives the same draw every time
    assert np.array_equal(paired_bootstrap(base, cand, seed=7, return_samples=True)["samples"],
                          paired_bootstrap(base, cand, seed=7, return_samples=True)["samples"])
    assert "samples" not in paired_bootstrap(base, cand)


def test_bootstrap_interval_is_the_alpha_over_2_quantiles():
    """Differences (0, 1): each resample of 2 tasks averages 0, 1/2 or 1 with chances 1/4, 1/2, 1/4. With
    alpha = 0.5 the interval is the 25% and 75% quantiles of the samples."""
    r = paired_bootstrap([0.0, 0.0], [0.0, 1.0], n_boot=4000, seed=2, alpha=0.5, return_samples=True)
    s = r["samples"]
    assert set(np.unique(s)) == {0.0, 0.5, 1.0}
    assert abs(np.mean(s == 0.5) - 0.5) < 0.03 and abs(np.mean(s == 0.0) - 0.25) < 0.03
    assert r["ci_low"] == np.quantile(s, 0.25) and r["ci_high"] == np.quantile(s, 0.75)
    # a continuous spread of differences, where alpha/2 and alpha/3 give different quantiles
    rng = np.random.default_rng(0)
    base, cand = rng.uniform(size=30), rng.uniform(size=30)
    r = paired_bootstrap(base, cand, n_boot=500, seed=4, alpha=0.3, return_samples=True)
    assert r["ci_low"] == np.quantile(r["samples"], 0.15) and r["ci_high"] == np.quantile(r["samples"], 0.85)
    assert r["ci_low"] != np.quantile(r["samples"], 0.1) and r["ci_high"] != np.quantile(r["samples"], 0.9)


def test_bootstrap_one_task_and_one_resample():
    r = paired_bootstrap([0.0], [1.0], n_boot=1, return_samples=True)
    assert r["diff"] == 1.0 and r["ci_low"] == 1.0 and r["ci_high"] == 1.0 and list(r["samples"]) == [1.0]


def test_bootstrap_reads_scores_as_float64():
    """Scores numpy reads as numbers (text read from a CSV, bools) are converted, on both sides."""
    assert paired_bootstrap(["0", "0.5"], ["1", "0.5"], n_boot=10)["diff"] == 0.5
    assert paired_bootstrap([True, False], [True, True], n_boot=10)["diff"] == 0.5


@pytest.mark.parametrize("base, cand", [([], []), ([[0.0, 1.0]], [[1.0, 1.0]]), ([0.0], [0.0, 1.0])])
def test_bootstrap_refuses_bad_shapes(base, cand):
    with pytest.raises(ValueError, match=r"^paired_bootstrap needs two non-empty 1-D score arrays of one length"):
        paired_bootstrap(base, cand)


@pytest.mark.parametrize("alpha, n_boot", [(0.0, 10), (1.0, 10), (1.5, 10), (-0.1, 10), (0.05, 0)])
def test_bootstrap_refuses_bad_alpha_and_n_boot(alpha, n_boot):
    msg = rf"^paired_bootstrap needs 0 < alpha < 1 and n_boot >= 1, got alpha={alpha}, n_boot={n_boot}$"
    with pytest.raises(ValueError, match=msg):
        paired_bootstrap([0.0, 1.0], [1.0, 1.0], alpha=alpha, n_boot=n_boot)


# ----------------------------------------------------------------------------------------------
# report number format
# ----------------------------------------------------------------------------------------------


def test_fmt():
    assert _fmt(None) == "-" and _fmt(0.5) == "0.500" and _fmt(-0.0625) == "-0.062"
    assert _fmt(3) == "3" and _fmt("n/a") == "n/a"


# ----------------------------------------------------------------------------------------------
# the report's layout and its embedded images
# ----------------------------------------------------------------------------------------------


def test_png_data_uri_exact(tmp_path):
    from rlsd.evaluate import png_data_uri

    png = b"\x89PNG\r\n\x1a\n" + b"\x00\x01\xff"
    (tmp_path / "a.png").write_bytes(png)
    # base64 of 89 50 4E 47 0D 0A 1A 0A 00 01 FF, by hand: iVBORw0K GgoAAf8=
    assert png_data_uri(tmp_path / "a.png") == "data:image/png;base64,iVBORw0KGgoAAf8="
    (tmp_path / "b.png").write_bytes(b"GIF89a")
    with pytest.raises(ValueError, match=r"b\.png is not a PNG file$"):
        png_data_uri(tmp_path / "b.png")


def test_report_layout_with_leak_examples(tmp_path):
    """The notes end with a blank line before the plots; the leak examples follow the plots after a blank line;
    the HTML page keeps its head when it lists leak examples and puts <br> between its two tables."""
    from rlsd.evaluate import write_report

    side = {"model": "m", "pass@1": 0.5, "pass@k": 0.75, "greedy_pass@1": 0.25, "k": 3, "teacher_greedy_pass@1": None,
            "per_type": {"label": {"n_tasks": 2, "pass@1": 0.5, "pass@k": 0.75, "greedy_pass@1": 0.25}}}
    leak = {"rate": 0.5, "n_checked": 4, "n_leaks": 2, "teacher_student_gap": None,
            "examples": [{"task": "t1", "span": "hold the reset button", "output": "..."}]}
    result = {"candidate": side, "baseline": None, "comparison": None, "leakage": leak}
    write_report(result, tmp_path, cand={"leakage": {**leak, "ngram": 6}, "format_score": 0.5}, base=None)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert md.endswith("- Format score (answer stated exactly once): candidate 0.500.\n\n"
                       "![per_type.png](per_type.png)\n\n## Leak examples\n\n"
                       "1 of the candidate's 2 flagged outputs; leaks.jsonl in the evaluation folder holds every one, for both models.\n\n- `t1`: \"hold the reset button\"\n")
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!doctype html><html><head><meta charset='utf-8'><title>rlsd evaluation</title></head><body>\n"
                           "<h1>Evaluation report</h1>\n<table ")
    assert "</table>\n<br>\n<table border=1 cellpadding=4><tr><th>model</th><th>type</th>" in page
    assert page.endswith("<h2>Leak examples</h2><p>1 of the candidate&#x27;s 2 flagged outputs; leaks.jsonl in the evaluation folder holds every one, for both models.</p><ul>\n<li><code>t1</code>: hold the reset button</li>\n</ul>\n"
                         "</body></html>")


# ----------------------------------------------------------------------------------------------
# evaluate_model: what reaches the sampler (fake model and sampler, real tokenizer)
# ----------------------------------------------------------------------------------------------

CHAT = "{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}<|assistant|>"


def _sampler(monkeypatch, tmp_path, calls, *, chat=False):
    """load_model -> a stand-in, load_tokenizer -> the tiny model's real tokenizer (with a chat template when
    ``chat``), sample -> a recorder that answers every prompt with "A:0"."""
    from types import SimpleNamespace

    import rlsd.models
    import rlsd.rollout
    from rlsd.models import build_tiny_model
    from rlsd.rollout import Rollout

    build_tiny_model(tmp_path / "tok")
    real_tok = rlsd.models.load_tokenizer
    toks = []

    def load_tokenizer(path, **kw):
        tok = real_tok(tmp_path / "tok")
        if chat:
            tok.chat_template = CHAT
        toks.append(tok)
        return tok

    monkeypatch.setattr(rlsd.models, "load_model", lambda path, **kw: SimpleNamespace(path=str(path)))
    monkeypatch.setattr(rlsd.models, "load_tokenizer", load_tokenizer)

    def fake_sample(model, tokenizer, prompts, *, num_samples=1, **kw):
        calls.append({"tokenizer": tokenizer, "prompts": list(prompts), "num_samples": num_samples, **kw})
        return Rollout(None, None, None, None, ["A:0"] * (len(prompts) * num_samples), None)

    monkeypatch.setattr(rlsd.rollout, "sample", fake_sample)
    return toks


def test_evaluate_model_hands_the_model_its_own_tokenizer(tmp_path, monkeypatch):
    from rlsd.evaluate import evaluate_model

    calls = []
    toks = _sampler(monkeypatch, tmp_path, calls)
    evaluate_model(tmp_path / "m", [NUM], k=1)
    assert len(toks) == 1 and calls and all(c["tokenizer"] is toks[0] for c in calls)


def test_evaluate_model_default_batch_is_64_prompts(tmp_path, monkeypatch):
    """65 tasks: greedy in calls of 64 + 1 prompts; 4 samples each: 64 // 4 = 16 prompts a call."""
    from rlsd.evaluate import evaluate_model

    calls = []
    _sampler(monkeypatch, tmp_path, calls)
    tasks = [Task(id=f"t{i}", prompt=f"Q:{i}+0=?\n", privileged_context=str(i), answer=str(i)) for i in range(65)]
    r = evaluate_model(tmp_path / "m", tasks)
    assert [(c["greedy"], len(c["prompts"])) for c in calls] == (
        [(True, 64), (True, 1)] + [(False, 16)] * 4 + [(False, 1)])
    assert r["pass@1"] == pytest.approx(1 / 65)  # "A:0" is right for task t0 only


def test_evaluate_model_chat_template_on_student_and_teacher_prompts(tmp_path, monkeypatch):
    from rlsd.config import load_config
    from rlsd.evaluate import evaluate_model

    calls = []
    _sampler(monkeypatch, tmp_path, calls, chat=True)
    template = load_config().teacher.template
    evaluate_model(tmp_path / "m", [NUM], k=1, chat_template=True, teacher_template=template)
    prompts = [p for c in calls for p in c["prompts"]]
    assert prompts[:2] == [f"<|user|>{NUM.prompt}<|assistant|>"] * 2  # greedy, samples
    assert prompts[2] == "<|user|>" + template.format(question=NUM.prompt, context=NUM.privileged_context) + "<|assistant|>"
    calls.clear()
    evaluate_model(tmp_path / "m", [NUM], k=1, teacher_template=template)  # chat_template defaults to off
    assert [p for c in calls for p in c["prompts"]][0] == NUM.prompt


def test_evaluate_model_leak_ngram_reaches_the_summary(tmp_path, monkeypatch):
    from rlsd.evaluate import evaluate_model

    calls = []
    _sampler(monkeypatch, tmp_path, calls)
    assert evaluate_model(tmp_path / "m", [ROUTER], k=1, leak_ngram=4)["leakage"]["ngram"] == 4


def test_run_evaluation_uses_the_configured_chat_template(tmp_path, monkeypatch):
    from rlsd.config import load_config
    from rlsd.evaluate import run_evaluation
    from rlsd.tasks import write_tasks

    calls = []
    _sampler(monkeypatch, tmp_path, calls, chat=True)
    write_tasks([NUM], tmp_path / "eval.jsonl")
    cfg = load_config(overrides=["eval.k=1", "eval.num_samples=1", "model.chat_template=true"])
    run_evaluation(cfg, candidate=tmp_path / "m", tasks_path=tmp_path / "eval.jsonl", out_dir=tmp_path / "out")
    prompts = [p for c in calls for p in c["prompts"]]
    assert len(prompts) == 3 and all(p.startswith("<|user|>") and p.endswith("<|assistant|>") for p in prompts)


def _report_side():
    return {"model": "m", "pass@1": 0.5, "pass@k": 0.75, "greedy_pass@1": 0.25, "k": 3, "teacher_greedy_pass@1": None,
            "per_type": {"label": {"n_tasks": 2, "pass@1": 0.5, "pass@k": 0.75, "greedy_pass@1": 0.25}}}


@pytest.mark.parametrize("note,md_head,html_note", [
    # a note wrapped over lines (as YAML folds it) is one paragraph; HTML-special characters are escaped in the page
    ("A 15-minute run\n   shows the machinery, <not> a better model & says so.",
     "# Evaluation report\n\n> **Note:** A 15-minute run shows the machinery, <not> a better model & says so.\n\n| model |",
     "<p class='note'><strong>Note:</strong> A 15-minute run shows the machinery, &lt;not&gt; a better model &amp; "
     "says so.</p>"),
    ("", "# Evaluation report\n\n| model |", None),  # no note: the table follows the title at once
])
def test_report_opens_with_the_recipes_note(tmp_path, note, md_head, html_note):
    from rlsd.evaluate import write_report

    leak = {"rate": 0.0, "n_checked": 4, "n_leaks": 0, "teacher_student_gap": None, "examples": []}
    result = {"candidate": _report_side(), "baseline": None, "comparison": None, "leakage": leak}
    write_report(result, tmp_path, cand={"leakage": {**leak, "ngram": 6}, "format_score": 0.5}, base=None, note=note)
    assert (tmp_path / "report.md").read_text(encoding="utf-8").startswith(md_head)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    if html_note:
        assert "<h1>Evaluation report</h1>\n" + html_note + "\n<table " in page
    else:
        assert "<h1>Evaluation report</h1>\n<table " in page and "class='note'" not in page


def test_run_evaluation_writes_the_configured_note(tmp_path, monkeypatch):
    from rlsd.config import load_config
    from rlsd.evaluate import run_evaluation
    from rlsd.tasks import write_tasks

    _sampler(monkeypatch, tmp_path, [])
    write_tasks([NUM], tmp_path / "eval.jsonl")
    cfg = load_config(overrides=["eval.k=1", "eval.num_samples=1", "eval.note=Four steps move nothing"])
    run_evaluation(cfg, candidate=tmp_path / "m", tasks_path=tmp_path / "eval.jsonl", out_dir=tmp_path / "out")
    assert (tmp_path / "out" / "report.md").read_text(encoding="utf-8").startswith(
        "# Evaluation report\n\n> **Note:** Four steps move nothing\n\n")
