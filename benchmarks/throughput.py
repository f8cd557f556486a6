"""Rollout tokens/s, training tokens/s and time per optimizer step: our trainer vs TRL's GRPOTrainer.

Both sides train the same random-init Llama folder (default d=256, 4 layers, our tokenizer) on the same
prompts (generated addition tasks, the student prompt only), with the same group size, number of prompts
per step, maximum completion length, sampling (T=1, no top-k/top-p), learning rate, float32 on the CPU,
one optimizer step per rollout batch, no KL / reference model. The runs alternate (ours grpo, ours rlsd,
TRL grpo; repeated ``--reps`` times); the first step of every run is a warm-up and is dropped; per side the
minimum and the median over the kept steps are reported, as ratios.

- ours: ``rlsd.train.train`` in this process (the project venv). Phases from metrics.jsonl.
- TRL: ``trl.GRPOTrainer`` (trl==1.16.0, which requires transformers>=4.56.2) in a separate venv built once
  under benchmarks/.cache/trl-venv (no system site-packages; the project's pinned torch / transformers /
  accelerate plus trl); TRL is NOT a dependency of the project. It runs in a subprocess
  (``--worker trl``) and returns its timings as JSON. Rollout time = its ``_generate_and_score_completions``
  (generation, reward, and nothing else: TRL skips the old-log-prob pass with one step per batch);
  step time = from ``on_step_begin`` to ``on_step_end``.

Definitions (both sides): tokens = completion tokens of the batch (up to EOS); rollout tokens/s = tokens
/ rollout time; training tokens/s = tokens / (step time - rollout time) (log-prob passes, loss, backward,
optimizer); a random-init model rarely samples EOS, so completions are close to --new-tokens long.

    OMP_NUM_THREADS=1 python benchmarks/throughput.py --out benchmarks/results/throughput.md

Targets (issue 7): our GRPO step at least as fast as TRL's on CPU; our RLSD step within 1.15x of our GRPO.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRL_VERSION = "1.16.0"
PINS = ("torch==2.13.0", "transformers==5.24.0", "accelerate==1.15.0")  # the project's pins (pyproject.toml)


# ----------------------------------------------------------------------------------------------
# TRL side (runs inside the separate venv; imports nothing from rlsd)
# ----------------------------------------------------------------------------------------------


def trl_worker(spec_path: str) -> None:
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_DISABLED="true",
                      TRANSFORMERS_VERBOSITY="error", DISABLE_MLFLOW_INTEGRATION="TRUE")
    spec = json.loads(Path(spec_path).read_text())
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    torch.manual_seed(spec["seed"])
    tok = AutoTokenizer.from_pretrained(spec["model"])
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32, attn_implementation="sdpa")
    answers = dict(zip(spec["prompts"], spec["answers"]))

    def reward(prompts, completions, **_):
        return [1.0 if c.split("A:")[-1].strip() == answers[p] else 0.0 for p, c in zip(prompts, completions)]

    n_prompts = spec["prompts_per_step"] * (spec["steps"] + 1)
    ds = Dataset.from_dict({"prompt": (spec["prompts"] * (1 + n_prompts // len(spec["prompts"])))[:n_prompts]})
    G = spec["group"]
    cfg = trl.GRPOConfig(
        output_dir=spec["out"], per_device_train_batch_size=spec["prompts_per_step"] * G, num_generations=G,
        gradient_accumulation_steps=1, steps_per_generation=1, num_iterations=1, max_completion_length=spec["new_tokens"],
        temperature=1.0, top_p=1.0, top_k=0, beta=0.0, learning_rate=spec["lr"], max_steps=spec["steps"], use_cpu=True,
        bf16=False, fp16=False, logging_steps=1, report_to="none", save_strategy="no", seed=spec["seed"],
        dataloader_num_workers=0, shuffle_dataset=False, disable_tqdm=True, max_grad_norm=1.0,
    )
    times: dict[str, list[float]] = {"rollout": [], "step": [], "tokens": []}

    class Timed(trl.GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            t0 = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            times["rollout"].append(time.perf_counter() - t0)
            times["tokens"].append(float(out["completion_mask"].sum()))
            return out

    class StepClock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            times["step"].append(time.perf_counter() - self.t0)

    trainer = Timed(model=model, reward_funcs=reward, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[StepClock()])
    trainer.train()
    print("TRL_RESULT " + json.dumps({"trl": trl.__version__, "torch": torch.__version__, **times}), flush=True)


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_trl_venv(venv: Path) -> Path:
    """Create (once) a venv without system site-packages holding the project's pins plus trl."""
    py = venv_python(venv)
    stamp = venv / "rlsd-bench-ok"
    if stamp.is_file():
        return py
    print(f"building the TRL venv at {venv} (once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *PINS, f"trl=={TRL_VERSION}"], check=True)
    check = ("import trl, transformers, torch; print('trl', trl.__version__, 'transformers', transformers.__version__, "
             "'torch', torch.__version__)")
    subprocess.run([str(py), "-c", check], check=True)
    stamp.write_text(" ".join([*PINS, f"trl=={TRL_VERSION}"]))
    return py


# ----------------------------------------------------------------------------------------------
# Driver (project venv)
# ----------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    ap.add_argument("--spec", default="", help=argparse.SUPPRESS)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=8, help="prompts per step")
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--steps", type=int, default=3, help="steps per run (the first is dropped)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--engines", default="generate,auto", help="rollout engines of our side (generate = same as TRL)")
    ap.add_argument("--venv", default=str(HERE / ".cache" / "trl-venv"))
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    if args.worker == "trl":
        trl_worker(args.spec)
        return

    sys.path.insert(0, str(HERE))
    from _common import (
        CACHE,
        build_model,
        machine_line,
        make_config,
        md_table,
        quiet,
        read_metrics,
        write_addition,
    )

    quiet()
    from rlsd.tasks import read_tasks
    from rlsd.train import train

    py = ensure_trl_venv(Path(args.venv))
    model = build_model(CACHE / f"step_cost_d{args.hidden}_l{args.layers}", hidden=args.hidden, layers=args.layers)
    tr, ev = write_addition(CACHE / "step_cost_tasks", n_train=512, n_eval=16, digits=(2, 3, 4, 5))
    tasks = read_tasks(tr)
    header = machine_line()
    engines = [e for e in args.engines.split(",") if e]
    sides = [f"ours grpo ({e})" for e in engines] + [f"ours rlsd ({e})" for e in engines] + ["TRL grpo"]
    rows: dict[str, list[dict[str, float]]] = {s: [] for s in sides}
    trl_info = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for side in sides:
                out = Path(tmp) / f"{side.replace(' ', '_').replace('(', '').replace(')', '')}-{rep}"
                if side.startswith("ours"):
                    algo, engine = side.split()[1], side.split("(")[1].rstrip(")")
                    cfg = make_config({
                        "model.path": model, "data.train_tasks": tr, "data.eval_tasks": ev, "algorithm.name": algo,
                        "rollout.group_size": args.group, "rollout.prompts_per_step": args.prompts,
                        "rollout.max_new_tokens": args.new_tokens, "rollout.engine": engine, "data.shuffle": False,
                        "teacher.template": "{question}H:{context}\n", "train.lr": args.lr, "train.seed": rep,
                        "train.steps": args.steps, "train.checkpoint_every": 0, "train.eval_every": 0,
                        "tracking.enabled": False,
                    })
                    train(cfg, output_dir=out)
                    for m in read_metrics(out / "metrics.jsonl")[1:]:
                        tokens = m["completion_len"] * args.prompts * args.group
                        rows[side].append({"step": m["time_step"], "rollout": m["time_rollout"], "tokens": tokens})
                else:
                    spec = {"model": str(model), "prompts": [t.prompt for t in tasks], "answers": [t.answer for t in tasks],
                            "prompts_per_step": args.prompts, "group": args.group, "new_tokens": args.new_tokens,
                            "lr": args.lr, "steps": args.steps, "seed": rep, "out": str(out)}
                    sp = Path(tmp) / "spec.json"
                    sp.write_text(json.dumps(spec))
                    # not our process's distributed set-up (init_distributed put RANK, MASTER_PORT ... in os.environ)
                    drop = {"PYTHONPATH", "VIRTUAL_ENV", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
                            "MASTER_ADDR", "MASTER_PORT", "DS_ACCELERATOR", "CROSS_RANK", "CROSS_SIZE"}
                    env = {k: v for k, v in os.environ.items() if k not in drop}
                    proc = subprocess.run([str(py), __file__, "--worker", "trl", "--spec", str(sp)], env=env,
                                          capture_output=True, text=True, check=False)
                    line = next((x for x in proc.stdout.splitlines() if x.startswith("TRL_RESULT ")), None)
                    if proc.returncode or line is None:
                        sys.exit(f"TRL worker failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
                    res = json.loads(line.split(" ", 1)[1])
                    trl_info = {"trl": res["trl"], "torch": res["torch"]}
                    for s, r, n in list(zip(res["step"], res["rollout"], res["tokens"]))[1:]:
                        rows[side].append({"step": s, "rollout": r, "tokens": n})
                print(f"rep {rep} {side}: " + ", ".join(f"{r['step']:.2f}s" for r in rows[side][-(args.steps - 1):]), flush=True)

    def summary(side: str) -> dict[str, float]:
        R = rows[side]
        best = min(R, key=lambda r: r["step"])
        med = statistics.median
        return {"min": best["step"], "median": med([r["step"] for r in R]),
                "rollout_tps": med([r["tokens"] / r["rollout"] for r in R]),
                "train_tps": med([r["tokens"] / max(r["step"] - r["rollout"], 1e-9) for r in R]),
                "tokens": med([r["tokens"] for r in R]), "n": len(R)}

    S = {s: summary(s) for s in sides}
    ref = S["TRL grpo"]
    table = [["run", "step min s", "step median s", "min / TRL", "median / TRL", "rollout tok/s", "train tok/s",
              "tokens/step", "steps kept"]]
    for s in sides:
        v = S[s]
        table.append([s, f"{v['min']:.3f}", f"{v['median']:.3f}", f"{v['min'] / ref['min']:.2f}x",
                      f"{v['median'] / ref['median']:.2f}x", f"{v['rollout_tps']:,.0f}", f"{v['train_tps']:,.0f}",
                      f"{v['tokens']:.0f}", str(v["n"])])
    ratios = [f"ours rlsd / ours grpo ({e}): min {S[f'ours rlsd ({e})']['min'] / S[f'ours grpo ({e})']['min']:.2f}x, "
              f"median {S[f'ours rlsd ({e})']['median'] / S[f'ours grpo ({e})']['median']:.2f}x" for e in engines]
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model)
    setting = (f"model: random-init Llama d={c.hidden_size}, {c.num_hidden_layers} layers, vocab {c.vocab_size}, float32, "
               f"CPU; {args.prompts} prompts x G={args.group} per step, <= {args.new_tokens} new tokens, T=1, lr "
               f"{args.lr}, one optimizer step per batch, no KL; {args.reps} alternating reps x {args.steps - 1} kept "
               f"steps; TRL {trl_info.get('trl')} (torch {trl_info.get('torch')}) in its own venv; ours with the "
               f"rollout engine named in brackets (generate = transformers generate, as TRL uses)")
    text = f"machine: {header}\n\n{setting}\n\n{md_table(table)}\n\n" + "\n".join(f"- {r}" for r in ratios) + "\n"
    print("\n" + text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
