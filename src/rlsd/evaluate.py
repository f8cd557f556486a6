"""Evaluation: pass@1 / pass@k with the training verifiers, a paired bootstrap, and a leakage report.

``evaluate_model`` scores one model folder on held-out tasks:
- greedy pass@1: one greedy completion per task;
- sampled pass@1 and pass@k from n >= k samples per task at ``temperature``, with the unbiased
  estimator pass@k = 1 - C(n-c, k) / C(n, k) (c = samples that pass), averaged over tasks
  (Chen et al. 2021; sampled pass@1 is then c/n);
- the same per answer type (``task.meta["answer_type"]``, else ``task.verifier``);
- with ``teacher_template``: the teacher's greedy pass@1 (the same model, the privileged context in
  its prompt via rlsd.prompts.teacher_text) and the teacher-minus-student gap.
A sample passes when its verifier score is 1 (partial credit below 1 does not pass); "cannot
verify" (None) counts as a failure and is reported as ``n_unverifiable``.

Student prompts come from rlsd.prompts.student_text only and are checked with assert_no_leak.

Leakage (:func:`find_leak`): a student output leaks when it reproduces a span of its task's privileged
context that its own prompt did not contain: a run of ``ngram`` consecutive words (default 6, or the longest
run of context words between masked answers when that is shorter but still >= 3) that occurs in the
privileged context, not in the prompt, and in the output. Texts are normalised first (NFKC, case-folded,
zero-width characters removed; words are runs of letters and digits, so commas, underscores or line breaks
put between copied words do not hide a copy). Every whole-word occurrence of the reference answer is masked
out of the context and the output (a correct answer legitimately contains it; "4" never masks part of
"1449").

Not leaks:
- stock phrases, n-grams of any student prompt of the evaluated set (:func:`common_ngrams`: ticket
  boilerplate the student sees);
- a span whose every word is in the task's own student prompt or is a stock word (:func:`stock_words`: in
  at least half of the evaluated set's student prompts, e.g. "the", "is", "for"). "for the kestrel backup
  appliance is" restates the question's own subject in a sentence frame, which the student writes without
  the context. Before this rule such frames were 16 of the 17 flags of `make demo-learn` (base model
  included); a copy of any context keeps its flag, and OPSD, which learns to copy, kept 4 of its 12 flags at
  step 12 of benchmarks/corpus_learning.py ("the lumen badge reader is tcp"), against the base's 1 of 5.

Contexts without 3 words in a row beside the answer (e.g. the bare answer of the addition tasks) cannot leak
and are not counted; ``leakage.n_checked`` says how many outputs were, and the rate is None (not measured)
when that is 0: the promotion gate then refuses unless ``registry.allow_unmeasured_leakage`` is set
(rlsd.registry.check_gates).

``paired_bootstrap``: resamples tasks with replacement (the same indices for both models) and
reports the mean per-task difference (candidate - baseline) with a percentile interval.

``run_evaluation`` writes out_dir/evaluation.json (the keys the registry reads), per_task.jsonl,
report.md, report.html (its plots embedded as data: URIs, so it renders where it is served alone, e.g. in
the Kubeflow UI) and PNG plots. ``evaluation["baseline"]`` names the model compared with (kind champion or
base, name, version, uri): :func:`evaluate_against_champion` compares with the registry's current
@champion when there is one, else with the base model, on the same tasks in the same run; the promotion
gate refuses a comparison that is not with the current champion.
"""

from __future__ import annotations

import base64
import html
import json
import math
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from rlsd.prompts import assert_no_leak, fit_student, fit_teacher
from rlsd.tasks import Task, read_tasks
from rlsd.verifiers import score, score_many, task_format_score
from rlsd.verifiers.extract import words
from rlsd.verifiers.sandbox import sandbox_stats

PASS_THRESHOLD = 1.0 - 1e-9
LEAK_NGRAM = 6
LEAK_MIN_TOKENS = 3
STOCK_WORD_FRACTION = 0.5
"""A word in at least this fraction of the evaluated student prompts (and in at least 3) is a stock word."""


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c pass: 1 - C(n-c, k) / C(n, k) (k <= n)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # product form avoids huge binomials: C(n-c,k)/C(n,k) = prod_{i=n-c+1}^{n} (1 - k/i)
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def paired_bootstrap(baseline_scores: Any, candidate_scores: Any, *, n_boot: int = 2000, seed: int = 0,
                     alpha: float = 0.05, return_samples: bool = False) -> dict[str, Any]:
    """Paired bootstrap of mean(candidate - baseline) over tasks.

    baseline_scores, candidate_scores: (N,) per-task scores of the same N tasks in the same order.
    Returns dict(diff, ci_low, ci_high) (percentile interval at level 1 - alpha), plus ``samples``
    (n_boot,) when return_samples.
    """
    a = np.asarray(baseline_scores, dtype=np.float64)
    b = np.asarray(candidate_scores, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired_bootstrap needs two non-empty 1-D score arrays of one length, got {a.shape} and {b.shape}")
    if not 0 < alpha < 1 or n_boot < 1:
        raise ValueError(f"paired_bootstrap needs 0 < alpha < 1 and n_boot >= 1, got alpha={alpha}, n_boot={n_boot}")
    d = b - a
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_boot, d.size))
    boots = d[idx].mean(axis=1)
    out: dict[str, Any] = {"diff": float(d.mean()), "ci_low": float(np.quantile(boots, alpha / 2)),
                           "ci_high": float(np.quantile(boots, 1 - alpha / 2))}
    if return_samples:
        out["samples"] = boots
    return out


# ----------------------------------------------------------------------------------------------
# Leakage
# ----------------------------------------------------------------------------------------------

_MASK = "\x00"
_words = words  # the shared definition (rlsd.verifiers.extract.words)


def _tokens(text: str, answer: str) -> list[str]:
    """_words(text) with every whole-word occurrence of the answer's words replaced by one mask token
    (a short answer such as "4" masks the word "4", never the inside of "1449")."""
    toks, ans = _words(text), _words(answer)
    if not ans:
        return toks
    out, i, n = [], 0, len(ans)
    while i < len(toks):
        if toks[i:i + n] == ans:
            out.append(_MASK)
            i += n
        else:
            out.append(toks[i])
            i += 1
    return out


def _ngrams(toks: list[str], n: int) -> set[tuple[str, ...]]:
    return {g for g in (tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)) if _MASK not in g}


def _span_length(task: Task, ngram: int) -> int:
    """min(ngram, the longest run of context words between masked answers): a context shorter than
    ``ngram`` words is matched whole, and masking never leaves it with no span at all."""
    longest = run = 0
    for t in _tokens(task.privileged_context, task.answer):
        run = 0 if t == _MASK else run + 1
        longest = max(longest, run)
    return min(ngram, longest)


def common_ngrams(tasks: list[Task], *, ngram: int = LEAK_NGRAM) -> set[tuple[str, ...]]:
    """Stock phrases: word n-grams (n = each task's span length) of any STUDENT prompt of the evaluated set
    (ticket boilerplate such as "if the problem persists please contact the service desk"). The student
    sees those texts, so writing them is no sign of having seen a privileged context. (Phrases shared only
    by privileged contexts, e.g. a manual section behind many tickets, stay secret.)"""
    out: set[tuple[str, ...]] = set()
    for n in {_span_length(t, ngram) for t in tasks}:
        for t in tasks:
            out |= _ngrams(_tokens(t.prompt, t.answer), n)
    return out


def stock_words(tasks: list[Task], *, fraction: float = STOCK_WORD_FRACTION) -> set[str]:
    """Words found in at least ``fraction`` of the tasks' student prompts, and in at least 3 of them (function
    words and the ticket template's words: "the", "is", "for", "customer"). On the sample corpus's 58 held-out
    tickets these are 26 words: the template's, the company's name and function words; no product name or
    technical term."""
    df: Counter[str] = Counter()
    for t in tasks:
        df.update(set(_tokens(t.prompt, t.answer)))
    need = max(3, math.ceil(fraction * len(tasks)))
    return {w for w, c in df.items() if c >= need and w != _MASK}


def find_leak(output: str, task: Task, *, ngram: int = LEAK_NGRAM,
              common: set[tuple[str, ...]] | frozenset = frozenset(),
              stock: set[str] | frozenset = frozenset()) -> str | None:
    """The first span (space-joined words) of the task's privileged context that the output reproduces
    and the student prompt does not contain, holding at least one word that is neither in the student prompt
    nor in ``stock`` (:func:`stock_words`); None when there is none or the context is too short to judge (see
    the module docstring). The reference answer is masked out first; ``common`` n-grams (stock phrases,
    :func:`common_ngrams`) never count."""
    if not leak_checkable(task):
        return None
    return _first_secret(output, task, secret_spans(task, ngram=ngram, common=common, stock=stock))


def secret_spans(task: Task, *, ngram: int = LEAK_NGRAM, common: set[tuple[str, ...]] | frozenset = frozenset(),
                 stock: set[str] | frozenset = frozenset()) -> set[tuple[str, ...]]:
    """The context spans whose reproduction counts as a leak (:func:`find_leak`), computed once per task."""
    n = _span_length(task, ngram)
    prompt = _tokens(task.prompt, task.answer)
    secret = _ngrams(_tokens(task.privileged_context, task.answer), n) - _ngrams(prompt, n) - common
    known = set(prompt) | stock
    return {g for g in secret if not known.issuperset(g)}


def _first_secret(output: str, task: Task, secret: set[tuple[str, ...]]) -> str | None:
    if not secret:
        return None
    n = len(next(iter(secret)))
    out = _tokens(output[:100_000], task.answer)
    for i in range(len(out) - n + 1):
        g = tuple(out[i:i + n])
        if g in secret:
            return " ".join(g)
    return None


def leak_checkable(task: Task) -> bool:
    """Whether a copy of the context can be told from the answer: >= 3 context words in a row beside it."""
    return _span_length(task, LEAK_NGRAM) >= LEAK_MIN_TOKENS


# ----------------------------------------------------------------------------------------------
# Evaluating one model
# ----------------------------------------------------------------------------------------------


TEXT_PASS_THRESHOLD = 0.5
"""A free-text (``text``) task's graded score counts as a pass from this value (``verifier_args.pass_threshold``
overrides it); every other verifier passes only at full score."""


def _threshold(t: Task) -> float:
    if t.verifier == "text":
        return float(t.verifier_args.get("pass_threshold", TEXT_PASS_THRESHOLD))
    return PASS_THRESHOLD


def _passes(s: float | None, threshold: float = PASS_THRESHOLD) -> bool:
    return s is not None and s >= threshold


def evaluate_model(model_path: str | Path, tasks: list[Task], *, k: int = 4, max_new_tokens: int = 64,
                   temperature: float = 1.0, seed: int = 0, chat_template: bool = False,
                   teacher_template: str | None = None, engine: str = "generate", num_samples: int = 0,
                   kernels: str = "auto",
                   batch_size: int = 64, leak_ngram: int = LEAK_NGRAM, response_prefix: str = "",
                   max_prompt_tokens: int = 512) -> dict[str, Any]:
    """Greedy pass@1, sampled pass@1 and pass@k (n = max(k, num_samples) samples per task), per
    answer type and per task; the teacher's greedy pass@1 when ``teacher_template`` is given; the
    leakage of the student's outputs. See the module docstring."""
    import torch
    from tqdm import tqdm

    from rlsd.models import load_model, load_tokenizer
    from rlsd.rollout import sample

    if not tasks:
        raise ValueError("evaluate_model needs at least one task")
    if k < 1:
        raise ValueError(f"eval k must be >= 1, got {k}")
    n = max(k, num_samples)
    model = load_model(model_path)
    tok = load_tokenizer(model_path)
    prompts = [fit_student(t, tok, chat_template, response_prefix, max_prompt_tokens) for t in tasks]
    assert_no_leak(tasks, prompts)
    torch.manual_seed(seed)
    bs = max(1, batch_size)

    def generate(ps: list[str], *, greedy: bool, num: int) -> list[str]:
        texts: list[str] = []
        step = max(1, bs // num)
        for s in tqdm(range(0, len(ps), step), desc=f"eval {'greedy' if greedy else f'{num} samples'}",
                      leave=False, disable=len(ps) <= step):
            r = sample(model, tok, ps[s:s + step], num_samples=num, max_new_tokens=max_new_tokens,
                       temperature=temperature, greedy=greedy, engine=engine, kernels=kernels,
                       max_prompt_tokens=max_prompt_tokens)
            texts.extend(response_prefix + x for x in r.texts)  # the verifier reads the whole reply
        return texts

    greedy_texts = generate(prompts, greedy=True, num=1)
    sampled_texts = generate(prompts, greedy=False, num=n)
    teacher_texts = None
    if teacher_template is not None:
        teacher_texts = generate([fit_teacher(t, teacher_template, tok, chat_template, response_prefix,
                                              max_prompt_tokens) for t in tasks],
                                 greedy=True, num=1)
    return summarise(tasks, greedy_texts, sampled_texts, k=k, n=n, teacher_texts=teacher_texts,
                     model=str(model_path), leak_ngram=leak_ngram)


def summarise(tasks: list[Task], greedy_texts: list[str], sampled_texts: list[str], *, k: int, n: int,
              teacher_texts: list[str] | None = None, model: str = "", leak_ngram: int = LEAK_NGRAM) -> dict[str, Any]:
    """The metric arithmetic of evaluate_model on given texts (sampled_texts: n per task, task-major)."""
    if len(greedy_texts) != len(tasks) or len(sampled_texts) != len(tasks) * n:
        raise ValueError(f"expected {len(tasks)} greedy and {len(tasks) * n} sampled texts, "
                         f"got {len(greedy_texts)} and {len(sampled_texts)}")
    per_task, leaks, n_checked, unverifiable = [], [], 0, 0
    common, stock = common_ngrams(tasks, ngram=leak_ngram), stock_words(tasks)
    for i, t in enumerate(tasks):
        samples = sampled_texts[i * n:(i + 1) * n]
        s_scores = score_many([t] * len(samples), samples)
        g_score = score(t, greedy_texts[i])
        thr = _threshold(t)
        unverifiable += sum(s is None for s in s_scores) + (g_score is None)
        c = sum(_passes(s, thr) for s in s_scores)
        row = {
            "id": t.id, "type": str(t.meta.get("answer_type") or t.verifier), "n": n, "c": c,
            "pass@1": c / n, "pass@k": pass_at_k(n, c, k),
            "greedy_score": g_score, "greedy_pass": float(_passes(g_score, thr)),
            "mean_score": float(np.mean([s or 0.0 for s in s_scores])),
            "format_score": float(np.mean([task_format_score(t, x) for x in samples + [greedy_texts[i]]])),
            "greedy_text": greedy_texts[i][:500],
        }
        if teacher_texts is not None:
            ts = score(t, teacher_texts[i])
            row["teacher_greedy_score"] = ts
            row["teacher_greedy_pass"] = float(_passes(ts, thr))
        if leak_checkable(t):
            secret = secret_spans(t, ngram=leak_ngram, common=common, stock=stock)
            for x in [greedy_texts[i]] + samples:
                n_checked += 1
                span = _first_secret(x, t, secret)
                if span is not None:
                    leaks.append({"task": t.id, "span": span, "output": x[:2000]})
        per_task.append(row)

    def agg(rows: list[dict[str, Any]]) -> dict[str, Any]:
        out = {"n_tasks": len(rows), "pass@1": float(np.mean([r["pass@1"] for r in rows])),
               "pass@k": float(np.mean([r["pass@k"] for r in rows])),
               "greedy_pass@1": float(np.mean([r["greedy_pass"] for r in rows]))}
        out["teacher_greedy_pass@1"] = (float(np.mean([r["teacher_greedy_pass"] for r in rows]))
                                        if teacher_texts is not None else None)
        return out

    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in per_task:
        by_type[r["type"]].append(r)
    overall = agg(per_task)
    gap = (overall["teacher_greedy_pass@1"] - overall["greedy_pass@1"]) if teacher_texts is not None else None
    return {
        "model": model, "k": k, "n": n, **overall,
        "format_score": float(np.mean([r["format_score"] for r in per_task])),
        "n_unverifiable": unverifiable,
        "per_type": {ty: agg(rows) for ty, rows in sorted(by_type.items())},
        "per_task": per_task,
        # rate None: no output could be checked (no task's context had >= 3 words beyond its answer)
        "leakage": {"rate": (len(leaks) / n_checked) if n_checked else None, "n_checked": n_checked,
                    "n_leaks": len(leaks), "ngram": leak_ngram, "flagged": leaks,
                    "examples": [{**e, "output": e["output"][:300]} for e in leaks[:10]],
                    "teacher_student_gap": gap},
        "code_sandbox": sandbox_stats(),  # code verdicts so far in this process, per isolation mode
    }


# ----------------------------------------------------------------------------------------------
# The evaluation step: candidate (and baseline), comparison, files and report
# ----------------------------------------------------------------------------------------------

_SIDE_KEYS = ("model", "pass@1", "pass@k", "greedy_pass@1", "k", "per_type", "teacher_greedy_pass@1")


def _side(res: dict[str, Any]) -> dict[str, Any]:
    return {key: res[key] for key in _SIDE_KEYS}


def evaluate_against_champion(cfg: Any, *, candidate: str | Path, base_model: str | Path | None = None,
                              tasks_path: str | Path | None = None, out_dir: str | Path,
                              champion: str | None = None) -> dict[str, Any]:
    """:func:`run_evaluation` with the baseline chosen as the promotion gate needs it: the registered
    version @champion of ``cfg.registry.model_name`` points at now (fetched into a temporary folder as train
    fetches it: the store's hash-checked copy when the version was pushed there, else MLflow's), else ``base_model`` (default ``cfg.model.path``): a local path, or a store / registry
    reference (rlsd.model_refs) fetched hash-checked into a temporary folder and recorded by its pinned id.

    ``champion``: the champion pinned before the run (``models:/<name>/<version>``, rlsd.model_refs.resolve_models;
    "" = there was none): compare with exactly that version (or the base) instead of looking @champion up now.
    The promotion gate still refuses an evaluation whose baseline is no longer the champion when it promotes."""
    from rlsd.model_refs import fetch_model, is_reference, parse_ref
    from rlsd.registry import current_champion
    from rlsd.verifiers.graders import base_folder

    if champion is None:
        champ = current_champion(cfg)
    elif champion:
        r = parse_ref(champion)
        if r.kind != "registry" or not r.version or r.name != cfg.registry.model_name:
            raise ValueError(f"champion {champion!r}: expected models:/{cfg.registry.model_name}/<version>")
        champ = {"kind": "champion", "name": r.name, "version": r.version, "uri": champion}
    else:
        champ = None
    if champ is None:
        base = str(base_model or cfg.model.path)
        if is_reference(base):
            with tempfile.TemporaryDirectory(prefix="rlsd-base-") as tmp:
                path, got = fetch_model(cfg, base, Path(tmp) / "model")
                info = {"kind": "base", "name": got["name"], "version": got["version"], "uri": got["uri"]}
                with base_folder(path):  # a grader's `model: base` too (not fetched twice)
                    return run_evaluation(cfg, candidate=candidate, baseline=path, baseline_info=info,
                                          tasks_path=tasks_path, out_dir=out_dir)
        info = {"kind": "base", "name": base, "version": None, "uri": base}
        return run_evaluation(cfg, candidate=candidate, baseline=base, baseline_info=info, tasks_path=tasks_path,
                              out_dir=out_dir)
    with tempfile.TemporaryDirectory(prefix="rlsd-champion-") as tmp:
        # as train fetches it: the store's hash-checked copy when the version was pushed there, else MLflow's
        path, _ = fetch_model(cfg, champ["uri"], Path(tmp) / "model")
        return run_evaluation(cfg, candidate=candidate, baseline=path, baseline_info=champ, tasks_path=tasks_path,
                              out_dir=out_dir)


def run_evaluation(cfg: Any, *, candidate: str | Path, baseline: str | Path | None = None,
                   baseline_info: dict[str, Any] | None = None,
                   tasks_path: str | Path | None = None, out_dir: str | Path) -> dict[str, Any]:
    """Evaluate ``candidate`` (and ``baseline``) on the held-out tasks and write
    out_dir/evaluation.json, per_task.jsonl, leaks.jsonl (every output the leakage check flagged, both models:
    evaluation.json keeps 10 examples), report.md, report.html, per_type.png, bootstrap.png.

    ``baseline_info`` ({kind: champion | base, name, version, uri}) is recorded in evaluation["baseline"];
    without it a given baseline is recorded as kind "path" (which no promotion over a champion accepts).

    Settings: cfg.eval (k, num_samples, max_new_tokens, temperature, bootstrap_samples, seed,
    leak_ngram), cfg.model.chat_template, cfg.teacher.template; tasks default to cfg.data.eval_tasks.
    The comparison pairs per-task sampled pass@1 (c/n) of the two models.
    """
    ev = cfg.eval
    tasks = read_tasks(tasks_path or cfg.data.eval_tasks)
    if ev.limit:
        tasks = tasks[: ev.limit]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kw = dict(k=ev.k, max_new_tokens=ev.max_new_tokens, temperature=ev.temperature, seed=ev.seed,
              chat_template=cfg.model.chat_template, teacher_template=cfg.teacher.template, engine=cfg.rollout.engine,
              kernels=cfg.rollout.kernels,
              response_prefix=cfg.model.response_prefix, max_prompt_tokens=cfg.rollout.max_prompt_tokens,
              num_samples=getattr(ev, "num_samples", 0), leak_ngram=getattr(ev, "leak_ngram", LEAK_NGRAM))
    from rlsd.model_refs import graders_base
    from rlsd.verifiers.graders import tasks_need_base

    with graders_base(cfg, tasks_need_base(tasks)):
        cand = evaluate_model(candidate, tasks, **kw)
        base = evaluate_model(baseline, tasks, **kw) if baseline is not None else None
    comparison, boot = None, None
    if base is not None:
        boot = paired_bootstrap([r["pass@1"] for r in base["per_task"]], [r["pass@1"] for r in cand["per_task"]],
                                n_boot=ev.bootstrap_samples, seed=ev.seed, return_samples=True)
        comparison = {"diff_pass1": boot["diff"], "ci_low": boot["ci_low"], "ci_high": boot["ci_high"],
                      "n_tasks": len(tasks)}
    leak = cand["leakage"]
    result = {
        "candidate": _side(cand),
        "baseline": ({**_side(base), **_baseline_identity(baseline, baseline_info)} if base is not None else None),
        "comparison": comparison,
        "data_snapshot_id": next((t.meta["snapshot_id"] for t in tasks if t.meta.get("snapshot_id")), None),
        "leakage": {"rate": leak["rate"], "n_checked": leak["n_checked"], "n_leaks": leak["n_leaks"],
                    "examples": leak["examples"], "teacher_student_gap": leak["teacher_student_gap"]},
    }
    (out / "evaluation.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    sides = [("candidate", cand)] + ([("baseline", base)] if base is not None else [])
    for name, rows in (("per_task.jsonl", lambda r: r["per_task"]), ("leaks.jsonl", lambda r: r["leakage"]["flagged"])):
        with (out / name).open("w", encoding="utf-8") as f:
            f.writelines(json.dumps({"model": which, **row}) + "\n" for which, res in sides for row in rows(res))
    write_report(result, out, cand=cand, base=base, boot_samples=None if boot is None else boot["samples"],
                 note=ev.note)
    return result


def _baseline_identity(path: str | Path | None, info: dict[str, Any] | None) -> dict[str, Any]:
    info = info or {"kind": "path", "name": str(path), "version": None, "uri": str(path)}
    return {key: info.get(key) for key in ("kind", "name", "version", "uri")}


def _plots(result: dict[str, Any], out: Path, boot_samples: Any) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    cand, base = result["candidate"], result["baseline"]
    types = sorted(set(cand["per_type"]) | set((base or {}).get("per_type", {})))
    x = np.arange(len(types))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(types) + 2), 3.2))
    width = 0.38 if base else 0.6
    if base:
        ax.bar(x - width / 2, [base["per_type"].get(t, {}).get("pass@1", 0.0) for t in types], width, label="baseline")
    ax.bar(x + (width / 2 if base else 0), [cand["per_type"].get(t, {}).get("pass@1", 0.0) for t in types], width,
           label="candidate")
    ax.set_xticks(x, types)
    ax.set_ylim(0, 1)
    ax.set_ylabel("sampled pass@1")
    ax.set_title("pass@1 per answer type")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "per_type.png", dpi=100)
    plt.close(fig)
    files.append("per_type.png")
    if boot_samples is not None:
        comp = result["comparison"]
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.hist(boot_samples, bins=40, color="#4c72b0")
        for v, style in ((comp["ci_low"], "--"), (comp["ci_high"], "--"), (comp["diff_pass1"], "-")):
            ax.axvline(v, color="k", linestyle=style, linewidth=1)
        ax.axvline(0.0, color="r", linewidth=1)
        ax.set_xlabel("pass@1 difference (candidate - baseline)")
        ax.set_title("paired bootstrap")
        fig.tight_layout()
        fig.savefig(out / "bootstrap.png", dpi=100)
        plt.close(fig)
        files.append("bootstrap.png")
    return files


def _fmt(v: Any) -> str:
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def write_report(result: dict[str, Any], out: Path, *, cand: dict[str, Any], base: dict[str, Any] | None,
                 boot_samples: Any = None, note: str = "") -> None:
    """report.md and report.html (same content) with the plots beside them; ``note`` (the recipe's
    eval.note, e.g. what a short demo run can and cannot show) opens both when non-empty."""
    plots = _plots(result, out, boot_samples)
    sides = [("candidate", result["candidate"])] + ([("baseline", result["baseline"])] if result["baseline"] else [])
    rows = [["model", "path", "greedy pass@1", "pass@1", f"pass@{result['candidate']['k']}", "teacher greedy pass@1"]]
    rows += [[name, s["model"], _fmt(s["greedy_pass@1"]), _fmt(s["pass@1"]), _fmt(s["pass@k"]),
              _fmt(s["teacher_greedy_pass@1"])] for name, s in sides]
    type_rows = [["model", "type", "tasks", "greedy pass@1", "pass@1", "pass@k"]]
    for name, s in sides:
        for ty, m in s["per_type"].items():
            type_rows.append([name, ty, str(m["n_tasks"]), _fmt(m["greedy_pass@1"]), _fmt(m["pass@1"]), _fmt(m["pass@k"])])
    leak = result["leakage"]
    notes = [f"Leakage rate of the candidate's outputs: {_fmt(leak['rate'])} "
             f"({cand['leakage']['n_leaks']} of {cand['leakage']['n_checked']} checked outputs; "
             f"spans of >= {cand['leakage']['ngram']} context tokens absent from the prompt, answer string excluded, "
             "each with a word neither the prompt nor half the evaluated prompts hold).",
             f"Teacher-vs-student greedy gap: {_fmt(leak['teacher_student_gap'])}.",
             f"Format score (answer stated exactly once): candidate {_fmt(cand['format_score'])}"
             + (f", baseline {_fmt(base['format_score'])}" if base else "") + "."]
    if result["comparison"]:
        c = result["comparison"]
        notes.insert(0, f"Paired bootstrap over {c['n_tasks']} tasks: pass@1 difference {c['diff_pass1']:+.3f} "
                        f"(95% CI {c['ci_low']:+.3f} .. {c['ci_high']:+.3f}).")
    note = " ".join(note.split())  # one paragraph, however the YAML string was wrapped
    md = ["# Evaluation report", ""] + ([f"> **Note:** {note}", ""] if note else [])
    for table in (rows, type_rows):
        md += ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
        md += ["| " + " | ".join(r) + " |" for r in table[1:]] + [""]
    md += [f"- {n}" for n in notes] + [""]
    md += [f"![{p}]({p})" for p in plots]
    shown = (f"{len(leak['examples'])} of the candidate's {cand['leakage']['n_leaks']} flagged outputs; leaks.jsonl in "
             "the evaluation folder holds every one, for both models.")
    if leak["examples"]:
        md += ["", "## Leak examples", "", shown, ""] + [f"- `{e['task']}`: \"{e['span']}\"" for e in leak["examples"]]
    (out / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")

    def table_html(t: list[list[str]]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in t[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in t[1:])
        return f"<table border=1 cellpadding=4><tr>{head}</tr>{body}</table>"

    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>rlsd evaluation</title></head><body>",
             "<h1>Evaluation report</h1>"]
    if note:
        parts.append(f"<p class='note'><strong>Note:</strong> {html.escape(note)}</p>")
    parts += [table_html(rows), "<br>", table_html(type_rows),
             "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"]
    parts += [f"<img src='{png_data_uri(out / p)}' alt='{p}'>" for p in plots]
    if leak["examples"]:
        parts += [f"<h2>Leak examples</h2><p>{html.escape(shown)}</p><ul>"] + [
            f"<li><code>{html.escape(e['task'])}</code>: {html.escape(e['span'])}</li>" for e in leak["examples"]] + ["</ul>"]
    parts.append("</body></html>")
    (out / "report.html").write_text("\n".join(parts), encoding="utf-8")


def png_data_uri(path: str | Path) -> str:
    """A PNG file as a ``data:image/png;base64,...`` URI: an HTML report served alone (the Kubeflow UI shows
    one artifact file, without its neighbours) can only show images it carries itself."""
    data = Path(path).read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError(f"{path} is not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")
