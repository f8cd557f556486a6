"""Time per optimizer step of grpo / rlsd / opsd / grpo_opsd on the same model and batch, side by side.

Every algorithm runs ``rlsd.train.train`` on the same random-init Llama (default d=256, 4 layers, ~3.3M
parameters: big enough that forward passes dominate), the same prompts, group size and token budget. The
algorithms alternate: for each repetition, each algorithm trains ``--steps`` steps in turn (one process,
one DeepSpeed engine per call); the first step of every call is a warm-up and is dropped. Per algorithm it
reports the minimum and the median step time over all kept steps, their ratio to grpo, and the median
rollout / teacher / train times from metrics.jsonl (time_rollout,
time_teacher, time_train, time_step). A random-init model rarely samples EOS, so completions are close to
the full --new-tokens (the mean completion length is printed; a low learning rate keeps it stable).

    OMP_NUM_THREADS=1 python benchmarks/step_cost.py --out benchmarks/results/step_cost.md

Target (issue 2): rlsd <= 1.25x grpo (RLSD adds one no-grad forward pass of the teacher).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import (
    CACHE,
    build_model,
    machine_line,
    make_config,
    md_table,
    median,
    quiet,
    read_metrics,
    write_addition,
)

PHASES = ("time_rollout", "time_teacher", "time_train", "time_step")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--algos", default="grpo,rlsd,opsd,grpo_opsd")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=8, help="prompts per step")
    ap.add_argument("--group", type=int, default=8, help="samples per prompt (G)")
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--micro-batch", type=int, default=0, help="0 = the whole batch in one micro-batch")
    ap.add_argument("--engine", default="auto", help="rollout engine: auto | graph | generate")
    ap.add_argument("--reps", type=int, default=4, help="alternating repetitions")
    ap.add_argument("--steps", type=int, default=3, help="steps per train call (the first is dropped)")
    ap.add_argument("--out", default="", help="write the table (Markdown) here too")
    args = ap.parse_args()
    quiet()

    from rlsd.train import train

    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    if "grpo" not in algos:
        raise SystemExit("--algos must include grpo (the ratios are to grpo)")
    model = build_model(CACHE / f"step_cost_d{args.hidden}_l{args.layers}", hidden=args.hidden, layers=args.layers)
    tr, ev = write_addition(CACHE / "step_cost_tasks", n_train=512, n_eval=16, digits=(2, 3, 4, 5))
    header = machine_line()
    from transformers import AutoConfig

    kept: dict[str, list[dict]] = {a: [] for a in algos}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for algo in algos:
                ov = {
                    "model.path": model, "data.train_tasks": tr, "data.eval_tasks": ev, "algorithm.name": algo,
                    "rollout.group_size": args.group, "rollout.prompts_per_step": args.prompts,
                    "rollout.max_new_tokens": args.new_tokens, "rollout.engine": args.engine,
                    "teacher.template": "{question}H:{context}\n", "train.lr": 1e-5, "train.seed": rep,
                    "train.steps": args.steps, "train.checkpoint_every": 0, "train.eval_every": 0,
                    "train.micro_batch_size": args.micro_batch, "tracking.enabled": False,
                }
                cfg = make_config(ov)
                out = Path(tmp) / f"{algo}-{rep}"
                train(cfg, output_dir=out)
                rows = read_metrics(out / "metrics.jsonl")[1:]
                kept[algo].extend(rows)
                print(f"rep {rep} {algo}: " + ", ".join(f"{r['time_step']:.2f}s" for r in rows), flush=True)
    from rlsd.models import load_model

    c = AutoConfig.from_pretrained(model)
    n_params = sum(p.numel() for p in load_model(model).parameters())

    def stat(algo: str, key: str, fn) -> float:
        return fn([r[key] for r in kept[algo]])

    g_min, g_med = stat("grpo", "time_step", min), stat("grpo", "time_step", median)
    table = [["algorithm", "step min s", "step median s", "min / grpo", "median / grpo", "rollout s",
              "teacher s", "train s", "completion len", "steps kept"]]
    for a in algos:
        mn, md = stat(a, "time_step", min), stat(a, "time_step", median)
        table.append([a, f"{mn:.3f}", f"{md:.3f}", f"{mn / g_min:.2f}x", f"{md / g_med:.2f}x",
                      *(f"{stat(a, k, median):.3f}" for k in PHASES[:3]),
                      f"{stat(a, 'completion_len', median):.1f}", str(len(kept[a]))])
    setting = (f"model: random-init Llama d={c.hidden_size}, {c.num_hidden_layers} layers, {n_params / 1e6:.2f}M parameters, "
               f"vocab {c.vocab_size}, float32; batch {args.prompts} prompts x G={args.group} = "
               f"{args.prompts * args.group} rollouts, up to {args.new_tokens} new tokens, micro-batch "
               f"{args.micro_batch or 'whole batch'}, rollout engine {args.engine}; {args.reps} alternating reps x "
               f"{args.steps - 1} kept steps per algorithm; phase columns are medians")
    text = f"machine: {header}\n\n{setting}\n\n{md_table(table)}\n"
    print("\n" + text)
    if args.out:
        p = Path(args.out)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


if __name__ == "__main__":
    main()
