"""Does RL on the enterprise corpus make the model better? SmolLM2-135M-Instruct trained on the sample
corpus's tasks with grpo / rlsd / opsd / grpo_opsd, evaluated on held-out tickets (issue 19, item 1).

Tasks are built exactly as the pipeline builds them: data/sample ingested into a scratch store, then
rlsd.data.build.build_tasks, whose train / eval split is by ticket id (a hash of the id), with free-text
tickets included through ``ingest.text_grader`` (default ``rouge_l``; issue 20). :func:`check_split`
refuses a task set in which an eval ticket (or an eval prompt) also occurs in training.

Every run has the same budget: the same steps, prompts per step, group size, new tokens and learning rate;
only ``algorithm.name`` and ``train.seed`` change. Runs execute in fresh processes, ``--jobs`` at a time. A run
saves a (DeepSpeed) checkpoint at every step of ``--eval-at``; after it ends, each of those checkpoints and
the final model are scored on the held-out tasks with rlsd.evaluate.evaluate_model (greedy pass@1, and
pass@k from k samples at the eval temperature, per answer type), then the checkpoints are deleted.

Report (benchmarks/results/corpus_learning.md + corpus_learning/*.png): held-out greedy pass@1 and pass@k
per answer type at each eval step, mean and 95% t-interval over seeds; each algorithm's paired difference
(per-task scores averaged over its seeds, resampled over tasks: rlsd.evaluate.paired_bootstrap) to the base
model and to GRPO; PPO clip fraction, RLSD weight clip-low / clip-high fractions and entropy from the
trainer's metrics; a hand-written analysis kept between the summary markers across re-runs.

    python benchmarks/corpus_learning.py --smoke        # the mechanics on a tiny random model, ~2 min
    python benchmarks/corpus_learning.py                # the measured setting (see --help for its budget)
    python benchmarks/corpus_learning.py report         # re-aggregate cached runs

Runs are cached under benchmarks/.cache/corpus_learning/<settings hash>/ (a killed benchmark resumes at
the next unfinished run).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
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
from learning import SUMMARY_END, SUMMARY_START, ci, fmt

ALGOS = ("grpo", "rlsd", "opsd", "grpo_opsd")
COLORS = {"base": "#999999", "grpo": "#1f77b4", "rlsd": "#d62728", "opsd": "#2ca02c", "grpo_opsd": "#9467bd"}


# ----------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------


def corpus_tasks(folder: Path, *, text_grader: str = "rouge_l") -> Path:
    """train.jsonl / eval.jsonl built from data/sample the way the pipeline builds them (once)."""
    from rlsd.data.build import build_tasks
    from rlsd.data.ingest import ingest
    from rlsd.data.store import LocalStore

    if (folder / "eval.jsonl").is_file():
        return folder
    cfg = make_config({"ingest.text_grader": text_grader, "model.path": "unused"})
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    store = LocalStore(tmp / "store")
    ingest(cfg, manuals=[ROOT / "data/sample/manuals"], tickets=[ROOT / "data/sample/tickets"], store=store)
    out = build_tasks(cfg, out_dir=tmp, store=store)
    (tmp / "counts.json").write_text(json.dumps(out["counts"], indent=1, default=str))
    shutil.rmtree(tmp / "store")
    tmp.rename(folder)
    return folder


def check_split(folder: Path) -> dict[str, int]:
    """Counts of the split; ValueError when an eval ticket id or an eval prompt also occurs in training."""
    from rlsd.tasks import read_tasks

    train, ev = read_tasks(folder / "train.jsonl"), read_tasks(folder / "eval.jsonl")
    both = {t.meta["ticket_id"] for t in train} & {t.meta["ticket_id"] for t in ev}
    if both:
        raise ValueError(f"{len(both)} eval ticket(s) also in training, e.g. {sorted(both)[:3]}")
    same = {t.prompt for t in train} & {t.prompt for t in ev}
    if same:
        raise ValueError(f"{len(same)} eval prompt(s) also in training")
    counts = {"train": len(train), "eval": len(ev)}
    for t in ev:
        key = "eval " + str(t.meta.get("answer_type") or t.verifier)
        counts[key] = counts.get(key, 0) + 1
    return counts


# ----------------------------------------------------------------------------------------------
# One run
# ----------------------------------------------------------------------------------------------


def recipe(args: argparse.Namespace, algo: str, seed: int, model: Path, tasks: Path, every: int) -> Any:
    return make_config({
        "model.path": model, "model.chat_template": bool(args.chat_template), "model.response_prefix": args.response_prefix,
        "data.train_tasks": tasks / "train.jsonl", "data.eval_tasks": tasks / "eval.jsonl",
        "algorithm.name": algo, "rollout.group_size": args.group, "rollout.prompts_per_step": args.prompts,
        "rollout.max_new_tokens": args.new_tokens, "rollout.max_prompt_tokens": args.max_prompt_tokens,
        "rollout.temperature": args.temperature, "rollout.engine": args.engine,
        "train.lr": args.lr, "train.seed": seed, "train.steps": args.steps, "train.updates_per_batch": args.updates,
        "train.checkpoint_every": every, "train.keep_checkpoints": 1000, "train.eval_every": 0,
        "tracking.enabled": False, "ingest.text_grader": args.text_grader,
    })


def eval_points(args: argparse.Namespace) -> tuple[list[int], int]:
    """The intermediate steps to score (0 and the last step are always scored) and the checkpoint interval."""
    pts = sorted({int(s) for s in args.eval_at.split(",") if s.strip()} - {0, args.steps})
    pts = [s for s in pts if 0 < s < args.steps]
    if not pts:
        return [], 0
    return pts, math.gcd(*pts)


def model_at(run_dir: Path, step: int, final: Path, dest: Path) -> Path:
    """A loadable model folder with the policy weights of the checkpoint of ``step`` (ZeRO stage 0/1/2 keep
    the whole module in mp_rank_00_model_states.pt)."""
    import torch

    from rlsd.models import load_model

    states = torch.load(run_dir / "checkpoints" / f"step-{step}" / "mp_rank_00_model_states.pt",
                        map_location="cpu", weights_only=False)["module"]
    model = load_model(final)
    model.load_state_dict(states)
    shutil.rmtree(dest, ignore_errors=True)
    model.save_pretrained(dest)
    for f in final.iterdir():  # tokenizer and chat template files
        if f.is_file() and not (dest / f.name).exists():
            shutil.copy2(f, dest / f.name)
    return dest


def score_model(path: Path, tasks: list[Any], args: argparse.Namespace, seed: int) -> dict[str, Any]:
    from rlsd.evaluate import evaluate_model

    r = evaluate_model(path, tasks, k=args.k, max_new_tokens=args.new_tokens, temperature=args.eval_temperature,
                       seed=seed, chat_template=bool(args.chat_template), engine=args.engine,
                       response_prefix=args.response_prefix, max_prompt_tokens=args.max_prompt_tokens)
    return {"greedy": r["greedy_pass@1"], "pass@1": r["pass@1"], "pass@k": r["pass@k"],
            "per_type": r["per_type"], "leakage": r["leakage"]["rate"],
            "leaks": [{"task": e["task"], "span": e["span"]} for e in r["leakage"]["flagged"]],
            "per_task": [{"id": p["id"], "type": p["type"], "greedy": p["greedy_pass"], "pass@1": p["pass@1"],
                          "pass@k": p["pass@k"]} for p in r["per_task"]]}


@dataclass(frozen=True)
class Run:
    """One training run of the benchmark: what run_one needs, picklable for run_all's worker processes."""
    algo: str
    seed: int
    args: argparse.Namespace
    model: Path
    tasks_dir: Path
    run_dir: Path
    eval_tasks: list[Any]

    @property
    def result_file(self) -> Path:
        """Written when the run is trained and scored; a run that has it is not made again."""
        return self.run_dir / "result.json"


def run_one(run: Run) -> dict[str, Any]:
    """Train and score one run, and write its result file (run_all skips runs that have one)."""
    from rlsd.train import train

    args, run_dir = run.args, run.run_dir
    pts, every = eval_points(args)
    t0 = time.time()
    train(recipe(args, run.algo, run.seed, run.model, run.tasks_dir, every), output_dir=run_dir)
    seconds = time.time() - t0
    t1 = time.time()
    scores = {}
    with tempfile.TemporaryDirectory() as tmp:
        for s in pts:
            scores[s] = score_model(model_at(run_dir, s, run_dir / "final", Path(tmp) / f"step-{s}"), run.eval_tasks,
                                    args, run.seed)
    scores[args.steps] = score_model(run_dir / "final", run.eval_tasks, args, run.seed)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # GBs per run for a 135M model
    res = {"algo": run.algo, "seed": run.seed, "seconds": seconds, "eval_seconds": time.time() - t1,
           "metrics": read_metrics(run_dir / "metrics.jsonl"), "scores": {str(k): v for k, v in scores.items()}}
    run.result_file.write_text(json.dumps(res))
    return res


def run_all(todo: list[Run], jobs: int) -> list[dict[str, Any]]:
    """run_one for each run, each in a fresh process, ``jobs`` at a time; results in ``todo``'s order.

    A fresh process per run because a run's DeepSpeed engine, optimizer and evaluation copies are not all freed
    in the process that made them (the resident set grew ~4 GB a run, 17.7 GB after four). Every run uses one
    torch thread, so ``--jobs 2`` uses both cores of a 2-core machine; runs are seeded and single-threaded, so
    their results do not depend on how many run beside them (only their minutes do)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    out: list[dict[str, Any] | None] = [None] * len(todo)
    pending = []
    for i, run in enumerate(todo):
        if run.result_file.is_file():
            out[i] = json.loads(run.result_file.read_text())
        else:
            pending.append(i)
    if pending:
        with ProcessPoolExecutor(max(1, jobs), mp_context=multiprocessing.get_context("spawn"),
                                 max_tasks_per_child=1) as pool:
            futs = {pool.submit(_run_quiet, todo[i]): i for i in pending}
            for f in as_completed(futs):
                out[futs[f]] = f.result()
    return out  # type: ignore[return-value]


def _run_quiet(run: Run) -> dict[str, Any]:
    import torch

    quiet()
    torch.set_num_threads(1)  # what run_all's docstring promises, whatever OMP_NUM_THREADS says
    return run_one(run)


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def per_task_mean(runs: list[dict[str, Any]], step: str, key: str) -> list[float]:
    """Per-task score averaged over a list of runs (their tasks are the same, in the same order)."""
    rows = [r["scores"][step]["per_task"] for r in runs]
    return [sum(row[i][key] for row in rows) / len(rows) for i in range(len(rows[0]))]


def report(results: dict[str, list[dict[str, Any]]], base: dict[str, Any], header: str, setting: str,
           out_md: Path, plot_dir: Path, n_boot: int = 5000) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rlsd.evaluate import paired_bootstrap

    algos = [a for a in ALGOS if results.get(a)]
    last = max(int(s) for a in algos for s in results[a][0]["scores"])
    steps = sorted({int(s) for a in algos for r in results[a] for s in r["scores"]} | {0})
    types = sorted(base["per_type"])
    base_run = {"scores": {"0": base}}

    def at(a: str, step: int) -> list[dict[str, Any]]:
        return [base] * len(results[a]) if step == 0 else [r["scores"][str(step)] for r in results[a]]

    lines = ["# Learning on the enterprise corpus: GRPO vs RLSD vs OPSD vs GRPO+OPSD (SmolLM2-135M-Instruct)\n",
             f"machine: {header}\n", setting + "\n"]
    for metric, title in (("greedy", "greedy pass@1"), ("pass@k", f"pass@{base.get('k', 'k')}")):
        rows = [["algorithm", "answer type"] + [f"step {s}" for s in steps]]
        for a in algos:
            for ty in ["all"] + types:
                def val(sc: dict[str, Any], ty: str = ty) -> float:
                    key = "greedy_pass@1" if metric == "greedy" else metric
                    if ty == "all":
                        return sc[metric]
                    return sc["per_type"].get(ty, {}).get(key, float("nan"))
                rows.append([a, ty] + [fmt(*ci([val(sc) for sc in at(a, s)])) for s in steps])
        lines += [f"## Held-out {title} per answer type (mean ± 95% t-interval over seeds; step 0 = base)\n",
                  md_table(rows), ""]

    rows = [["algorithm", "seeds", "metric", "vs base: diff [95% CI]", "vs grpo: diff [95% CI]"]]
    for a in algos:
        for key in ("greedy", "pass@1"):
            cand = per_task_mean(results[a], str(last), key)
            vs_base = paired_bootstrap(per_task_mean([base_run], "0", key), cand, n_boot=n_boot, seed=0)
            cell = lambda b: f"{b['diff']:+.3f} [{b['ci_low']:+.3f}, {b['ci_high']:+.3f}]"
            g = "-"
            if a != "grpo" and results.get("grpo"):
                g = cell(paired_bootstrap(per_task_mean(results["grpo"], str(last), key), cand, n_boot=n_boot, seed=0))
            rows.append([a, str(len(results[a])), "greedy pass@1" if key == "greedy" else "sampled pass@1",
                         cell(vs_base), g])
    lines += [f"## Paired difference at step {last} (per-task scores averaged over seeds, tasks resampled)\n",
              md_table(rows), ""]

    rows = [["algorithm", "PPO clip fraction", "w clip-low", "w clip-high", "entropy (first 3 steps)",
             "entropy (last 3 steps)", "reward (last 3)", "leakage rate", "train min/run", "eval min/run"]]
    for a in algos:
        R = results[a]

        def met(k: str, sl: slice, R: list = R) -> str:
            vals = [sum(m.get(k, float("nan")) for m in r["metrics"][sl]) / max(1, len(r["metrics"][sl])) for r in R]
            return fmt(*ci(vals), p=3)
        leak = [r["scores"][str(last)]["leakage"] for r in R if r["scores"][str(last)]["leakage"] is not None]
        rows.append([a, met("clip_frac", slice(None)), met("clip_low_frac", slice(None)),
                     met("clip_high_frac", slice(None)), met("entropy", slice(0, 3)), met("entropy", slice(-3, None)),
                     met("reward_mean", slice(-3, None)), fmt(*ci(leak), p=3) if leak else "-",
                     f"{sum(r['seconds'] for r in R) / len(R) / 60:.1f}",
                     f"{sum(r['eval_seconds'] for r in R) / len(R) / 60:.1f}"])
    lines += ["## Training diagnostics (mean ± 95% t-interval over seeds)\n", md_table(rows), "",
              "- PPO clip fraction: tokens whose ratio was clipped (0 unless train.updates_per_batch > 1); w clip-low / "
              "clip-high: tokens whose RLSD weight exp(sign(A) Delta) fell outside [1-eps_w, 1+eps_w] (logged for every "
              "teacher-using algorithm, applied only by rlsd); leakage: rlsd.evaluate.find_leak on held-out outputs.", ""]

    lines += [f"## What the leakage check flagged at step {last} (up to 3 spans per algorithm)\n"]
    for a in algos:
        flagged = [e for r in results[a] for e in r["scores"][str(last)].get("leaks", [])]
        spans = "; ".join(f'"{e["span"]}" ({e["task"]})' for e in flagged[:3])
        lines.append(f"- {a}: {len(flagged)} flagged outputs over all seeds" + (f": {spans}" if spans else ""))
    lines.append("")

    plot_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("greedy", "pass@k")):
        for a in algos:
            ms = [ci([sc[metric] for sc in at(a, s)]) for s in steps]
            m = [x[0] for x in ms]
            h = [0.0 if x[1] != x[1] else x[1] for x in ms]
            ax.plot(steps, m, marker="o", label=a, color=COLORS[a])
            ax.fill_between(steps, [x - y for x, y in zip(m, h)], [x + y for x, y in zip(m, h)], alpha=0.15,
                            color=COLORS[a])
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(f"held-out {metric}")
        ax.legend(fontsize=8)
    fig.suptitle("held-out accuracy, mean and 95% interval over seeds")
    fig.tight_layout()
    fig.savefig(plot_dir / "accuracy.png", dpi=100)
    plt.close(fig)
    series = {"base": [base["per_type"][t]["greedy_pass@1"] for t in types]}
    series |= {a: [ci([sc["per_type"][t]["greedy_pass@1"] for sc in at(a, last)])[0] for t in types] for a in algos}
    grouped_bars(plot_dir / "per_type.png", types, series, COLORS, f"greedy pass@1 at step {last}")
    rel = os.path.relpath(plot_dir, out_md.parent)
    lines += ["## Plots\n", f"![accuracy]({rel}/accuracy.png)\n", f"![per answer type]({rel}/per_type.png)\n"]
    if out_md.is_file() and SUMMARY_START in out_md.read_text():
        old = out_md.read_text()
        lines.insert(1, old[old.index(SUMMARY_START):old.index(SUMMARY_END) + len(SUMMARY_END)] + "\n")
    text = "\n".join(lines)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(text)
    (plot_dir / "summary.json").write_text(json.dumps(
        {"base": {k: v for k, v in base.items() if k != "per_task"},
         **{a: [{"seed": r["seed"], "seconds": r["seconds"],
                 "scores": {s: {k: v for k, v in sc.items() if k != "per_task"} for s, sc in r["scores"].items()}}
                for r in results[a]] for a in algos}}, indent=1))
    return text


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", nargs="?", default="run", choices=["run", "report"])
    ap.add_argument("--model", default=str(ROOT / "artifacts" / "smollm2"), help="the base model folder")
    ap.add_argument("--smoke", action="store_true", help="a tiny random model and 2 steps: the mechanics only")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--eval-at", default="6", help="intermediate steps to score (0 and the last always are)")
    ap.add_argument("--seeds", default="0,1,2", help="seeds of grpo and rlsd")
    ap.add_argument("--other-seeds", default="0", help="seeds of opsd and grpo_opsd")
    ap.add_argument("--algos", default=",".join(ALGOS))
    ap.add_argument("--prompts", type=int, default=4, help="prompts per step")
    ap.add_argument("--group", type=int, default=4, help="samples per prompt")
    ap.add_argument("--updates", type=int, default=1, help="train.updates_per_batch")
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--max-prompt-tokens", type=int, default=768)
    ap.add_argument("--temperature", type=float, default=0.8, help="rollout temperature")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--k", type=int, default=4, help="eval samples per task (pass@k)")
    ap.add_argument("--eval-temperature", type=float, default=0.8)
    ap.add_argument("--eval-limit", type=int, default=0, help="score the first N held-out tasks (0 = all)")
    ap.add_argument("--chat-template", type=int, default=1)
    ap.add_argument("--response-prefix", default="Answer:")
    ap.add_argument("--text-grader", default="rouge_l", help="ingest.text_grader for free-text tickets ('' = none)")
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--results", default="", help="folder for corpus_learning.md and corpus_learning/*.png "
                    "(default benchmarks/results; with --smoke, the work folder)")
    ap.add_argument("--work", default=str(CACHE / "corpus_learning"), help="tasks, models and cached runs")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time, each in its own process on one thread")
    args = ap.parse_args(argv)
    args.results = args.results or str(Path(args.work) / "smoke-results" if args.smoke else RESULTS)
    if args.smoke:
        args.steps, args.eval_at, args.seeds, args.other_seeds = 2, "1", "0", "0"
        args.prompts, args.group, args.new_tokens, args.k, args.eval_limit = 2, 2, 8, 2, 8
        args.chat_template, args.max_prompt_tokens = 0, 512
    return args


def rerun_line(argv: list[str] | None = None) -> str:
    """The command that re-runs this setting: every option whose value differs from its default, so that a new
    option can never be left out (a hand-kept list once dropped four of them)."""
    import shlex

    args = parse(argv)
    default = parse(["--smoke"] if args.smoke else [])
    opts = ["--smoke"] if args.smoke else []
    opts += [f"--{k.replace('_', '-')} {shlex.quote(str(v))}" for k, v in vars(args).items()
             if k not in ("command", "results", "work") and v != getattr(default, k)]
    return " ".join(["python benchmarks/corpus_learning.py", *opts])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    args = parse(argv)
    quiet()
    torch.set_num_threads(1)  # the base's scoring as the runs: one thread (machine_line reports it)
    from rlsd.tasks import read_tasks

    work = Path(args.work)
    tasks_dir = corpus_tasks(work / f"tasks-{args.text_grader or 'none'}", text_grader=args.text_grader)
    split = check_split(tasks_dir)
    print("tasks:", json.dumps(split))
    model = Path(args.model)
    if args.smoke:
        from rlsd.models import build_tiny_model

        model = work / "tiny-model"
        if not (model / "config.json").is_file():
            build_tiny_model(model, hidden_size=64, num_layers=2, num_heads=2)
    elif not (model / "config.json").is_file():
        raise SystemExit(f"{model}: no model there (import SmolLM2 once with `rlsd import-smollm2`)")
    eval_tasks = read_tasks(tasks_dir / "eval.jsonl")
    if args.eval_limit:
        eval_tasks = eval_tasks[:args.eval_limit]
    key = json.dumps({k: v for k, v in vars(args).items() if k not in ("command", "results", "work", "seeds",
                                                                        "other_seeds", "algos", "jobs")} | {"model": str(model.resolve())},
                     sort_keys=True)
    runs = work / "runs" / hashlib.sha1(key.encode()).hexdigest()[:10]
    runs.mkdir(parents=True, exist_ok=True)
    (runs / "settings.json").write_text(key)
    header_file = runs / "machine.txt"
    if not header_file.is_file():
        header_file.write_text(machine_line())
    base_file = runs / "base_eval.json"
    if not base_file.is_file():
        t0 = time.time()
        base = score_model(model, eval_tasks, args, seed=0)
        base_file.write_text(json.dumps(base | {"k": args.k, "seconds": time.time() - t0}))
    base = json.loads(base_file.read_text())
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    seeds = {a: [int(s) for s in (args.seeds if a in ("grpo", "rlsd") else args.other_seeds).split(",") if s.strip()]
             for a in algos}
    todo = []  # seed-major: load drift hits every algorithm alike
    for i in range(max(len(s) for s in seeds.values())):
        for a in algos:
            if i < len(seeds[a]):
                run = Run(a, seeds[a][i], args, model, tasks_dir, runs / f"{a}-s{seeds[a][i]}", eval_tasks)
                if args.command == "run" or run.result_file.is_file():
                    todo.append(run)
    t0, fresh = time.time(), sum(not run.result_file.is_file() for run in todo)
    results: dict[str, list[dict[str, Any]]] = {a: [] for a in algos}
    for run, r in zip(todo, run_all(todo, args.jobs)):
        results[run.algo].append(r)
        fin = r["scores"][str(args.steps)]
        print(f"{run.algo} seed {run.seed}: greedy {fin['greedy']:.3f} (base {base['greedy']:.3f}), "
              f"pass@{args.k} {fin['pass@k']:.3f}, train {r['seconds'] / 60:.1f} min, "
              f"eval {r['eval_seconds'] / 60:.1f} min", flush=True)
    if fresh == len(todo) and fresh:  # every run made now: the wall time of the whole benchmark
        (runs / "wall.json").write_text(json.dumps({"runs": fresh, "jobs": args.jobs, "base_seconds": base["seconds"],
                                                    "runs_seconds": time.time() - t0}))
    wall = json.loads((runs / "wall.json").read_text()) if (runs / "wall.json").is_file() else None
    pts, _ = eval_points(args)
    setting = (f"Model: {model.name}. Tasks: data/sample built by rlsd.data.build ({split['train']} train, "
               f"{split['eval']} held out, split by ticket id; {len(eval_tasks)} scored; text grader "
               f"`{args.text_grader or 'none'}`). Per step {args.prompts} prompts x G={args.group}, <= {args.new_tokens} "
               f"new tokens, rollout T={args.temperature}, lr {args.lr}, {args.updates} update(s) per batch, "
               f"{args.steps} steps; scored at steps {[0] + pts + [args.steps]} (greedy, and k={args.k} samples at "
               f"T={args.eval_temperature}); seeds {seeds}. Base model scored in {base['seconds'] / 60:.1f} min. "
               + (f"All {wall['runs']} runs, {wall['jobs']} at a time, took {wall['runs_seconds'] / 60:.1f} min, "
                  f"{(wall['runs_seconds'] + wall['base_seconds']) / 60:.1f} min with the base's scoring. " if wall else "")
               + f"Re-run: `{rerun_line(argv)}`.")
    text = report({a: r for a, r in results.items() if r}, base, header_file.read_text(), setting,
                  Path(args.results) / "corpus_learning.md", Path(args.results) / "corpus_learning")
    print(text)
    return {"split": split, "base": base, "results": results, "report": text}


if __name__ == "__main__":
    main()
