"""Learning curves of grpo / rlsd / opsd / grpo_opsd over seeds on a graded task set with a hard tail.

Same warm-started model, same tasks, same rollout budget (prompts x G x new tokens per step, steps) for
every algorithm; only ``algorithm.name`` and ``train.seed`` change between runs. All runs execute
sequentially in one process (``rlsd.train.train`` called repeatedly; one DeepSpeed engine per run).

Tasks (generated here, written to JSONL under benchmarks/.cache/learning/tasks/; ``--tasks DIR`` uses
DIR/train.jsonl and DIR/eval.jsonl instead), tiers in ``meta["tier"]``:
- ``add-2`` .. ``add-5``: a+b with 2..5-digit operands and a digit-by-digit scratchpad
  (rlsd.tasks.addition_tasks);
- ``chain-3`` / ``chain-5`` / ``chain-7``: sums of 3 / 5 / 7 one-digit numbers with a running-sum
  scratchpad (``3+7+5=?`` -> ``3+7=10,10+5=15\\nA:15``), generated below (reasoning-gym's chain_sum
  idea; no reasoning-gym dependency).
The privileged context is the verified answer; the teacher prompt is ``{question}H:{context}\\n``.

Warm start (built once by ``python benchmarks/learning.py warm``, cached under
benchmarks/.cache/learning/warm/, rebuilt automatically when missing): a random-init tiny Llama
(d=128, 2 layers, ~0.56M parameters) trained with rlsd.warmstart.warm_start on the scratchpad solutions,
half of the prompts carrying the hint line, stopped when greedy dev accuracy (no hint, a dev set
disjoint from the held-out set) reaches --warm-target. ``--model DIR`` skips it and uses DIR.

Measured per run: held-out greedy accuracy every --eval-every steps (the trainer's quick_eval on the whole
held-out set), the trainer's per-step metrics (entropy, RLSD weight clip fractions, Delta), and at the end
on the final model: greedy pass@1 per tier, sampled pass@1 and pass@8 (8 samples at T=1), leakage and
mean Delta = log P_T - log P_S on the answer tokens (after ``A:``) of the sampled completions, the
teacher being the final model shown the hint.

Leakage: rlsd.evaluate.find_leak cannot judge these tasks (the privileged context is the bare answer,
which it masks; see its docstring), so two task-specific rates are reported instead:
- hint copying: the student's output contains the hint marker ``H:`` (it writes the hint line it never saw);
- shortcut: the output states ``A:`` with no scratchpad step (no ``=``) before it, i.e. it answers
  without the worked solution, the way a teacher that already knows the answer would.

    python benchmarks/learning.py                      # small setting: 4 x 3 seeds x 40 steps, ~20 min + warm start
    python benchmarks/learning.py --steps 60 --seeds 0,1,2,3,4   # the ~one-hour setting (tighter intervals)
    python benchmarks/learning.py report               # re-aggregate cached runs into the results

Writes benchmarks/results/learning.md and benchmarks/results/learning/*.png (or --results DIR).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

from _common import (
    CACHE,
    RESULTS,
    ROOT,
    grouped_bars,
    machine_line,
    make_config,
    md_table,
    quiet,
    read_metrics,
)

ALGOS = ("grpo", "rlsd", "opsd", "grpo_opsd")
TEMPLATE = "{question}H:{context}\n"
ADD_DIGITS = (2, 3, 4, 5)
CHAIN_LENGTHS = (3, 5, 7)
SUMMARY_START, SUMMARY_END = "<!-- summary -->", "<!-- /summary -->"
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


# ----------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------


def chain_scratchpad(xs: list[int]) -> str:
    """>>> chain_scratchpad([3, 7, 5])
    '3+7=10,10+5=15\\nA:15'"""
    steps, s = [], xs[0]
    for x in xs[1:]:
        steps.append(f"{s}+{x}={s + x}")
        s += x
    return ",".join(steps) + f"\nA:{s}"


def chain_tasks(n: int, *, lengths: tuple[int, ...] = CHAIN_LENGTHS, seed: int = 0, prefix: str = "chain") -> list[Any]:
    from rlsd.tasks import Task

    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = lengths[i % len(lengths)]
        xs = [rng.randint(1, 9) for _ in range(k)]
        ans = str(sum(xs))
        out.append(Task(id=f"{prefix}-{seed}-{i}", prompt="Q:" + "+".join(map(str, xs)) + "=?\n", privileged_context=ans,
                        answer=ans, verifier="numeric",
                        meta={"family": "chain", "terms": k, "tier": f"chain-{k}", "solution": chain_scratchpad(xs)}))
    return out


def addition(n: int, seed: int, prefix: str) -> list[Any]:
    from rlsd.tasks import addition_tasks

    return [dataclasses.replace(t, meta={**t.meta, "tier": f"add-{t.meta['digits']}"})
            for t in addition_tasks(n, digits=ADD_DIGITS, seed=seed, prefix=prefix)]


def make_tasks(folder: Path, *, n_train: int = 4000, n_eval_per_tier: int = 16, n_dev_per_tier: int = 12) -> Path:
    """train.jsonl (both families, all tiers), dev.jsonl (warm-start stop), eval.jsonl (held out):
    eval and dev prompts never occur in train or in each other."""
    from rlsd.tasks import write_tasks

    if (folder / "eval.jsonl").is_file():
        return folder
    train = addition(n_train // 2, 11, "tr-add") + chain_tasks(n_train // 2, seed=12, prefix="tr-chain")
    seen = {t.prompt for t in train}

    def held(seed: int, prefix: str, per_tier: int) -> list[Any]:
        pool = addition(40 * per_tier, seed, prefix + "-add") + chain_tasks(30 * per_tier, seed=seed + 1, prefix=prefix + "-chain")
        out, count = [], {}
        for t in pool:
            tier = t.meta["tier"]
            if t.prompt in seen or count.get(tier, 0) >= per_tier:
                continue
            seen.add(t.prompt)
            count[tier] = count.get(tier, 0) + 1
            out.append(t)
        return out

    ev = held(21, "ev", n_eval_per_tier)
    dev = held(31, "dev", n_dev_per_tier)
    write_tasks(train, folder / "train.jsonl")
    write_tasks(dev, folder / "dev.jsonl")
    write_tasks(ev, folder / "eval.jsonl")
    return folder


# ----------------------------------------------------------------------------------------------
# Warm start
# ----------------------------------------------------------------------------------------------


def build_warm(out: Path, tasks_dir: Path, *, hidden: int, layers: int, target: float, max_steps: int, seed: int = 0) -> Path:
    """Build (once) the warm-started model folder; warm_start.json records its measured dev accuracy."""
    from rlsd.models import build_tiny_model
    from rlsd.tasks import read_tasks
    from rlsd.warmstart import warm_start

    if (out / "config.json").is_file():
        return out
    model, tok = build_tiny_model(None, hidden_size=hidden, num_layers=layers, num_heads=max(1, hidden // 32), seed=seed)
    t0 = time.time()
    info = warm_start(model, tok, read_tasks(tasks_dir / "train.jsonl"), read_tasks(tasks_dir / "dev.jsonl"),
                      max_steps=max_steps, target_dev_acc=target, eval_every=50, seed=seed, max_new_tokens=64)
    info.update(seconds=round(time.time() - t0, 1), hidden=hidden, layers=layers, target=target,
                params=sum(p.numel() for p in model.parameters()))
    tmp = out.with_name(out.name + ".partial")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "warm_start.json").write_text(json.dumps(info, indent=1))
    tmp.rename(out)
    print(f"warm start: {info['steps']} steps, dev acc {info['dev_acc']:.2f} (hinted {info['dev_acc_hinted']:.2f})")
    return out


# ----------------------------------------------------------------------------------------------
# Final evaluation of one model
# ----------------------------------------------------------------------------------------------


def answer_token_start(tokenizer: Any, ids: list[int]) -> int | None:
    """Index of the first completion token after ``A:`` (None when the completion has no ``A:``)."""
    text = ""
    for i, t in enumerate(ids):
        text += tokenizer.decode([t])
        if "A:" in text:
            return i + 1
    return None


def final_eval(model_path: Path, tasks: list[Any], *, n: int = 8, max_new_tokens: int = 64, seed: int = 0,
               engine: str = "auto") -> dict[str, Any]:
    """Greedy and sampled scores per tier, leakage rates and answer-token Delta of one model."""
    import torch

    from rlsd import core
    from rlsd.evaluate import pass_at_k
    from rlsd.models import load_model, load_tokenizer
    from rlsd.prompts import render, student_text, teacher_text
    from rlsd.rollout import sample
    from rlsd.train import completion_logits, left_pad
    from rlsd.verifiers import score

    model, tok = load_model(model_path).eval(), load_tokenizer(model_path)
    prompts = [render(student_text(t), tok, False) for t in tasks]
    torch.manual_seed(seed)
    with torch.no_grad():
        greedy = sample(model, tok, prompts, num_samples=1, max_new_tokens=max_new_tokens, greedy=True, engine=engine)
        ro = sample(model, tok, prompts, num_samples=n, max_new_tokens=max_new_tokens, temperature=1.0, engine=engine)
        rows = [t for t in tasks for _ in range(n)]
        t_enc = [tok(render(teacher_text(t, TEMPLATE), tok, False), add_special_tokens=False).input_ids for t in rows]
        tp_ids, tp_mask = left_pad(t_enc, tok.pad_token_id)
        s_lp, t_lp = [], []
        for s in range(0, len(rows), 256):
            sl = slice(s, s + 256)
            c_ids, c_mask = ro.completion_ids[sl], ro.completion_mask[sl]
            s_lp.append(core.selective_log_softmax(completion_logits(model, ro.prompt_ids[sl], ro.prompt_mask[sl], c_ids, c_mask, 1.0), c_ids))
            t_lp.append(core.selective_log_softmax(completion_logits(model, tp_ids[sl], tp_mask[sl], c_ids, c_mask, 1.0), c_ids))
        delta = torch.cat(t_lp) - torch.cat(s_lp)
    g_scores = [1.0 if (score(t, x) or 0.0) >= 1.0 - 1e-9 else 0.0 for t, x in zip(tasks, greedy.texts)]
    s_scores = [1.0 if (score(t, x) or 0.0) >= 1.0 - 1e-9 else 0.0 for t, x in zip(rows, ro.texts)]
    d_ans = {"correct": [], "wrong": []}
    for i, text in enumerate(ro.texts):
        length = int(ro.completion_mask[i].sum())
        start = answer_token_start(tok, ro.completion_ids[i, :length].tolist())
        if start is None or start >= length:
            continue
        d_ans["correct" if s_scores[i] else "wrong"].append(float(delta[i, start:length].mean()))

    def shortcut(x: str) -> bool:
        return "A:" in x and "=" not in x.split("A:", 1)[0]

    all_texts = list(greedy.texts) + list(ro.texts)
    tiers: dict[str, dict[str, list[float]]] = {}
    for i, t in enumerate(tasks):
        c = int(sum(s_scores[i * n:(i + 1) * n]))
        d = tiers.setdefault(t.meta.get("tier", t.verifier), {"greedy": [], "pass@1": [], "pass@8": []})
        d["greedy"].append(g_scores[i])
        d["pass@1"].append(c / n)
        d["pass@8"].append(pass_at_k(n, c, min(8, n)))
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")
    return {
        "greedy": mean(g_scores),
        "pass@1": mean([v for d in tiers.values() for v in d["pass@1"]]),
        "pass@8": mean([v for d in tiers.values() for v in d["pass@8"]]),
        "tiers": {k: {m: mean(v) for m, v in d.items()} for k, d in sorted(tiers.items())},
        "hint_copy_rate": mean([float("H:" in x) for x in all_texts]),
        "shortcut_rate": mean([float(shortcut(x)) for x in all_texts]),
        "delta_answer_correct": mean(d_ans["correct"]),
        "delta_answer_wrong": mean(d_ans["wrong"]),
        "delta_answer": mean(d_ans["correct"] + d_ans["wrong"]),
        "completion_len": float(ro.completion_mask.sum(1).float().mean()),
        "examples": [x[:120] for x in ro.texts[:3]],
    }


# ----------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------


def run_one(algo: str, seed: int, args: argparse.Namespace, model: Path, tasks_dir: Path, run_dir: Path) -> dict[str, Any]:
    from rlsd.tasks import read_tasks
    from rlsd.train import train

    done = run_dir / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    eval_tasks = read_tasks(tasks_dir / "eval.jsonl")
    cfg = make_config({
        "model.path": model, "data.train_tasks": tasks_dir / "train.jsonl", "data.eval_tasks": tasks_dir / "eval.jsonl",
        "data.eval_limit": len(eval_tasks), "algorithm.name": algo, "rollout.group_size": args.group,
        "rollout.prompts_per_step": args.prompts, "rollout.max_new_tokens": args.new_tokens,
        "rollout.engine": args.engine, "rollout.temperature": 1.0, "teacher.template": TEMPLATE,
        "train.lr": args.lr, "train.seed": seed, "train.steps": args.steps, "train.checkpoint_every": 0,
        "train.eval_every": args.eval_every, "tracking.enabled": False,
    })
    t0 = time.time()
    train(cfg, output_dir=run_dir)
    seconds = time.time() - t0
    rows = read_metrics(run_dir / "metrics.jsonl")
    res = {"algo": algo, "seed": seed, "seconds": seconds, "metrics": rows,
           "curve": [(r["step"], r["eval_accuracy"]) for r in rows if "eval_accuracy" in r],
           "final": final_eval(run_dir / "final", eval_tasks, max_new_tokens=args.new_tokens, seed=seed, engine=args.engine)}
    done.write_text(json.dumps(res))
    return res


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def ci(xs: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval over seeds); half-width nan for one seed."""
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return float("nan"), float("nan")
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, float("nan")
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    return m, T975.get(len(xs) - 1, 1.96) * sd / math.sqrt(len(xs))


def fmt(m: float, h: float | None = None, p: int = 2) -> str:
    if math.isnan(m):
        return "-"
    return f"{m:.{p}f}" + ("" if h is None or math.isnan(h) else f" ± {h:.{p}f}")


def curves(results: dict[str, list[dict[str, Any]]], base: dict[str, Any]) -> tuple[dict[str, dict[int, list[float]]], list[int]]:
    """Per algorithm, step -> held-out greedy accuracy per run (in ``results`` order), step 0 being the warm
    start itself (the same for every run); and the sorted steps, 0 first."""
    steps = sorted({s for a in results for r in results[a] for s, _ in r["curve"]})
    curve = {a: {0: [base["greedy"]] * len(results[a])} for a in results if results[a]}
    for a in curve:
        for s in steps:
            curve[a][s] = [dict(r["curve"]).get(s, float("nan")) for r in results[a]]
    return curve, [0] + steps


def claims_table(results: dict[str, list[dict[str, Any]]], base: dict[str, Any], curve: dict[str, dict[int, list[float]]],
                 all_steps: list[int], last_k: int = 10) -> list[str]:
    """The paper's four claims as paired per-seed differences (mean ± 95% t over seeds; same seed = same
    prompt order): learning speed as the area under the held-out curve (its mean over the evaluated steps
    after 0), final accuracy, the fall from each seed's own peak, entropy over the last ``last_k`` steps,
    and the leakage rates' change from the warm start."""
    if "grpo" not in results:
        return []
    by_seed = {a: {r["seed"]: i for i, r in enumerate(results[a])} for a in results}
    evals = [s for s in all_steps if s > 0]

    def auc(a: str, i: int) -> float:
        return sum(curve[a][s][i] for s in evals) / len(evals)

    def fin(a: str, i: int) -> float:
        return curve[a][all_steps[-1]][i]

    def entropy(a: str, i: int, last: int | None = last_k) -> float:
        m = results[a][i]["metrics"][-last:] if last else results[a][i]["metrics"]
        return sum(x.get("entropy", float("nan")) for x in m) / len(m)

    rows = [["algorithm", "area under curve - grpo", "final - grpo", "final - grpo per seed", "final - own peak",
             "peak step per seed",
             "entropy (all steps) - grpo", f"entropy (last {last_k}) - grpo", "hint copying - warm start",
             "shortcut - warm start"]]
    for a in results:
        if not results[a]:
            continue
        seeds = [sd for sd in by_seed[a] if sd in by_seed["grpo"]]
        pairs = [(by_seed[a][sd], by_seed["grpo"][sd]) for sd in seeds]
        peak_step = [max(all_steps, key=lambda s, i=i: (curve[a][s][i], -s)) for i in range(len(results[a]))]
        rows.append([
            a,
            "-" if a == "grpo" else fmt(*ci([auc(a, i) - auc("grpo", j) for i, j in pairs]), p=3),
            "-" if a == "grpo" else fmt(*ci([fin(a, i) - fin("grpo", j) for i, j in pairs]), p=3),
            "-" if a == "grpo" else ", ".join(f"{fin(a, i) - fin('grpo', j):+.3f}" for i, j in pairs),
            fmt(*ci([fin(a, i) - max(curve[a][s][i] for s in all_steps) for i in range(len(results[a]))]), p=3),
            ", ".join(str(s) for s in peak_step),
            "-" if a == "grpo" else fmt(*ci([entropy(a, i, None) - entropy("grpo", j, None) for i, j in pairs]), p=3),
            "-" if a == "grpo" else fmt(*ci([entropy(a, i) - entropy("grpo", j) for i, j in pairs]), p=3),
            fmt(*ci([r["final"]["hint_copy_rate"] - base["hint_copy_rate"] for r in results[a]]), p=3),
            fmt(*ci([r["final"]["shortcut_rate"] - base["shortcut_rate"] for r in results[a]]), p=3),
        ])
    return ["## The paper's four claims, paired by seed (mean ± 95% t-interval over seeds)\n", md_table(rows), "",
            ("- area under curve: held-out greedy accuracy averaged over the evaluated steps after 0 (a learning-speed "
             "measure that needs no threshold); final - own peak: 0 when a seed ends at its best; peak step: the "
             "earliest step of each seed's best accuracy (0 = the warm start)."), ""]


def report(results: dict[str, list[dict[str, Any]]], base: dict[str, Any], header: str, setting: str, out_md: Path,
           plot_dir: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    algos = [a for a in ALGOS if results.get(a)] + [a for a in results if a not in ALGOS and results[a]]
    plot_dir.mkdir(parents=True, exist_ok=True)
    curve, all_steps = curves(results, base)
    fixed = [s for s in all_steps if s in (0,) or s == all_steps[-1] or s % max(1, (all_steps[-1] // 4)) == 0]
    lines = ["# Learning curves: GRPO vs RLSD vs OPSD vs GRPO+OPSD\n", f"machine: {header}\n", setting + "\n"]

    rows = [["algorithm"] + [f"step {s}" for s in fixed] + ["best (step)"]]
    for a in algos:
        means = {s: ci(curve[a][s])[0] for s in all_steps}
        best = max(all_steps, key=lambda s: means[s])
        rows.append([a] + [fmt(*ci(curve[a][s])) for s in fixed] + [f"{means[best]:.2f} ({best})"])
    lines += ["## Held-out greedy accuracy (mean ± 95% t-interval over seeds)\n", md_table(rows), ""]

    # steps to reach GRPO's final accuracy
    target = ci(curve["grpo"][all_steps[-1]])[0] if "grpo" in curve else float("nan")
    rows = [["algorithm", "first step mean curve >= target", "per seed"]]
    for a in algos:
        mc = {s: ci(curve[a][s])[0] for s in all_steps}
        hit = next((s for s in all_steps if mc[s] >= target - 1e-9), None)
        per = []
        for i in range(len(results[a])):
            h = next((s for s in all_steps if curve[a][s][i] >= target - 1e-9), None)
            per.append(str(h) if h is not None else f">{all_steps[-1]}")
        rows.append([a, str(hit) if hit is not None else f">{all_steps[-1]}", ", ".join(per)])
    lines += [f"## Steps to reach GRPO's final mean accuracy ({target:.3f})\n", md_table(rows), ""]

    tiers = sorted({t for a in algos for r in results[a] for t in r["final"]["tiers"]},
                   key=lambda t: (t.split("-")[0], int(t.split("-")[1]) if t.split("-")[-1].isdigit() else 0))
    rows = [["algorithm"] + tiers]
    rows.append(["warm start"] + [fmt(base["tiers"][t]["greedy"]) for t in tiers])
    for a in algos:
        rows.append([a] + [fmt(*ci([r["final"]["tiers"][t]["greedy"] for r in results[a]])) for t in tiers])
    lines += ["## Final greedy accuracy per difficulty tier (held out)\n", md_table(rows), ""]
    rows = [["algorithm"] + tiers]
    rows.append(["warm start"] + [fmt(base["tiers"][t]["pass@8"]) for t in tiers])
    for a in algos:
        rows.append([a] + [fmt(*ci([r["final"]["tiers"][t]["pass@8"] for r in results[a]])) for t in tiers])
    lines += ["## Final pass@8 per difficulty tier (8 samples at T=1)\n", md_table(rows), ""]

    lines += claims_table(results, base, curve, all_steps)

    last_k = 10
    rows = [["algorithm", "greedy pass@1", "sampled pass@1", "pass@8", "hint copying", "shortcut", "entropy (last 10)",
             "entropy (first 5)", "w clip-low", "w clip-high", "Delta all tokens", "Delta answer (correct / wrong)",
             "completion len", "minutes/run"]]
    rows.append(["warm start", fmt(base["greedy"]), fmt(base["pass@1"]), fmt(base["pass@8"]), fmt(base["hint_copy_rate"], p=3),
                 fmt(base["shortcut_rate"], p=3), "-", "-", "-", "-", "-",
                 f"{base['delta_answer_correct']:+.3f} / {base['delta_answer_wrong']:+.3f}", fmt(base["completion_len"], p=1), "-"])
    for a in algos:
        R = results[a]
        f = lambda k, R=R: fmt(*ci([r["final"][k] for r in R]))
        f3 = lambda k, R=R: fmt(*ci([r["final"][k] for r in R]), p=3)
        met = lambda k, sl, R=R: fmt(*ci([sum(m.get(k, float("nan")) for m in r["metrics"][sl]) / len(r["metrics"][sl]) for r in R]), p=3)
        has_t = "delta_mean" in R[0]["metrics"][0]
        rows.append([a, f("greedy"), f("pass@1"), f("pass@8"), f3("hint_copy_rate"), f3("shortcut_rate"),
                     met("entropy", slice(-last_k, None)), met("entropy", slice(0, 5)),
                     met("clip_low_frac", slice(None)) if has_t else "-", met("clip_high_frac", slice(None)) if has_t else "-",
                     met("delta_mean", slice(None)) if has_t else "-",
                     f"{ci([r['final']['delta_answer_correct'] for r in R])[0]:+.3f} / {ci([r['final']['delta_answer_wrong'] for r in R])[0]:+.3f}",
                     fmt(*ci([r["final"]["completion_len"] for r in R]), p=1),
                     f"{sum(r['seconds'] for r in R) / len(R) / 60:.1f}"])
    lines += ["## Final model and training diagnostics (mean ± 95% t-interval over seeds)\n", md_table(rows), "",
              "- pass@1 / pass@8: 8 samples per held-out task at T=1 (unbiased estimator, rlsd.evaluate.pass_at_k).",
              ("- hint copying: outputs (greedy + sampled) containing `H:`; shortcut: `A:` without any scratchpad "
               "step before it (see the module docstring; rlsd.evaluate.find_leak cannot judge bare-answer contexts)."),
              ("- w clip-low / clip-high: fraction of tokens whose RLSD weight exp(sign(A) Delta) falls outside "
               "[1-eps_w, 1+eps_w] (logged for every teacher-using algorithm; applied only by rlsd). The PPO ratio's "
               "clip fraction is 0 for all: one optimizer step per rollout batch makes the ratio exactly 1."),
              ("- Delta = log P_T - log P_S: 'all tokens' is the trainer's per-step mean over training rollouts; "
               "'answer' is measured at the end on the tokens after `A:` of held-out samples, teacher = the final "
               "model shown `H:<answer>`."), ""]

    # plots
    colors = {"grpo": "#1f77b4", "rlsd": "#d62728", "opsd": "#2ca02c", "grpo_opsd": "#9467bd"}
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for a in algos:
        ms = [ci(curve[a][s]) for s in all_steps]
        m = [x[0] for x in ms]
        h = [0.0 if x[1] != x[1] else x[1] for x in ms]
        ax.plot(all_steps, m, label=a, color=colors.get(a))
        ax.fill_between(all_steps, [x - y for x, y in zip(m, h)], [x + y for x, y in zip(m, h)], alpha=0.15, color=colors.get(a))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("held-out greedy accuracy")
    ax.set_title("mean and 95% interval over seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(plot_dir / "accuracy.png", dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for a in algos:
        for ax, key in zip(axes, ("entropy", "delta_mean")):
            if key not in results[a][0]["metrics"][0]:
                continue
            n_steps = min(len(r["metrics"]) for r in results[a])
            xs = list(range(1, n_steps + 1))
            m = [sum(r["metrics"][i][key] for r in results[a]) / len(results[a]) for i in range(n_steps)]
            ax.plot(xs, m, label=a, color=colors.get(a))
    axes[0].set_title("rollout token entropy (mean over seeds)")
    axes[1].set_title("mean Delta = log P_T - log P_S (training rollouts)")
    for ax in axes:
        ax.set_xlabel("optimizer step")
        ax.legend()
    fig.tight_layout()
    fig.savefig(plot_dir / "entropy_delta.png", dpi=100)
    plt.close(fig)

    series = {"warm start": [base["tiers"][t]["greedy"] for t in tiers]}
    series |= {a: [ci([r["final"]["tiers"][t]["greedy"] for r in results[a]])[0] for t in tiers] for a in algos}
    grouped_bars(plot_dir / "tiers.png", tiers, series, colors, "final greedy accuracy")
    rel = os.path.relpath(plot_dir, out_md.parent)
    lines += ["## Plots\n", f"![accuracy]({rel}/accuracy.png)\n", f"![entropy and Delta]({rel}/entropy_delta.png)\n",
              f"![tiers]({rel}/tiers.png)\n"]
    # keep a hand-written summary between the markers across re-runs
    if out_md.is_file() and SUMMARY_START in out_md.read_text():
        old = out_md.read_text()
        lines.insert(1, old[old.index(SUMMARY_START):old.index(SUMMARY_END) + len(SUMMARY_END)] + "\n")
    text = "\n".join(lines)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(text)
    (plot_dir / "summary.json").write_text(json.dumps({a: [{"seed": r["seed"], "curve": r["curve"], "final": r["final"],
                                                             "seconds": r["seconds"]} for r in results[a]] for a in algos}
                                                      | {"warm_start": base}, indent=1))
    return text


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", nargs="?", default="run", choices=["run", "warm", "report"])
    ap.add_argument("--model", default="", help="a model folder to start RL from (skips the tiny warm start)")
    ap.add_argument("--tasks", default="", help="folder with train.jsonl and eval.jsonl (default: generated here)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    ap.add_argument("--algos", default=",".join(ALGOS))
    ap.add_argument("--prompts", type=int, default=16, help="prompts per step")
    ap.add_argument("--group", type=int, default=8, help="samples per prompt")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--warm-hidden", type=int, default=128)
    ap.add_argument("--warm-layers", type=int, default=2)
    ap.add_argument("--warm-target", type=float, default=0.4, help="stop the warm start at this greedy dev accuracy")
    ap.add_argument("--warm-max-steps", type=int, default=4000)
    ap.add_argument("--results", default=str(RESULTS), help="folder for learning.md and learning/*.png")
    args = ap.parse_args()
    quiet()

    work = CACHE / "learning"
    tasks_dir = Path(args.tasks) if args.tasks else make_tasks(work / "tasks")
    if args.model:
        model = Path(args.model)
    else:
        model = build_warm(work / f"warm-d{args.warm_hidden}-l{args.warm_layers}-t{args.warm_target}", tasks_dir,
                           hidden=args.warm_hidden, layers=args.warm_layers, target=args.warm_target,
                           max_steps=args.warm_max_steps)
    if args.command == "warm":
        return
    from rlsd.tasks import read_tasks

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    key = json.dumps([str(model.resolve()), str(tasks_dir.resolve()), args.steps, args.prompts, args.group,
                      args.new_tokens, args.lr, args.eval_every, args.engine])
    runs = work / "runs" / hashlib.sha1(key.encode()).hexdigest()[:10]
    runs.mkdir(parents=True, exist_ok=True)
    (runs / "settings.json").write_text(key)
    header_file = runs / "machine.txt"  # the machine as the runs saw it (not as a later `report` sees it)
    if args.command != "report" or not header_file.is_file():
        header_file.write_text(machine_line())
    header = header_file.read_text()
    eval_tasks = read_tasks(tasks_dir / "eval.jsonl")
    base_file = runs / "warm_eval.json"
    if not base_file.is_file():
        base_file.write_text(json.dumps(final_eval(model, eval_tasks, max_new_tokens=args.new_tokens, engine=args.engine)))
    base = json.loads(base_file.read_text())
    results: dict[str, list[dict[str, Any]]] = {a: [] for a in algos}
    for seed in seeds:  # seed-major: a change in machine load hits every algorithm alike
        for algo in algos:
            rd = runs / f"{algo}-s{seed}"
            if args.command == "report" and not (rd / "result.json").is_file():
                continue
            r = run_one(algo, seed, args, model, tasks_dir, rd)
            results[algo].append(r)
            print(f"{algo} seed {seed}: final greedy {r['final']['greedy']:.3f}, pass@8 {r['final']['pass@8']:.3f}, "
                  f"{r['seconds'] / 60:.1f} min", flush=True)
    warm_info = json.loads((model / "warm_start.json").read_text()) if (model / "warm_start.json").is_file() else {}
    n_params = warm_info.get("params")
    if warm_info:
        reached = warm_info["dev_acc"] >= warm_info["target"]
        stop = (f"stopped at greedy dev accuracy {warm_info['dev_acc']:.2f} >= {warm_info['target']}" if reached else
                f"ran all its steps and reached greedy dev accuracy {warm_info['dev_acc']:.2f}, short of the "
                f"{warm_info['target']} target")
    setting = (f"Model: {model.name}" + (f" ({n_params / 1e6:.2f}M parameters; warm start {warm_info['steps']} supervised "
               f"steps, {stop}, hinted {warm_info['dev_acc_hinted']:.2f})" if warm_info else "") +
               f". Tasks: {os.path.relpath(tasks_dir, ROOT)} ({len(read_tasks(tasks_dir / 'train.jsonl'))} train, {len(eval_tasks)} held out). "
               f"Per step {args.prompts} prompts x G={args.group}, <= {args.new_tokens} new tokens, T=1, lr {args.lr}, "
               f"{args.steps} steps, teacher `{TEMPLATE!r}` (snapshot synced every 10 steps), other settings the "
               f"trainer's defaults; seeds {seeds} (the seed sets data order and sampling; one warm start for all). "
               f"Re-run: `python benchmarks/learning.py --steps {args.steps} --seeds {args.seeds} --prompts {args.prompts} "
               f"--group {args.group} --lr {args.lr}"
               + (f" --model {args.model}" if args.model else f" --warm-target {args.warm_target}") + "`.")
    text = report({a: r for a, r in results.items() if r}, base, header, setting, Path(args.results) / "learning.md",
                  Path(args.results) / "learning")
    print(text)


if __name__ == "__main__":
    main()
