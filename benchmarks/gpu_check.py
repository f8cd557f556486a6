"""RLSD vs GRPO on one GPU with DeepSpeed in bf16: step time, tokens/s and MFU (run by gpu_check.sh).

Builds a random-init Llama from the project's own code (rlsd.models.build_tiny_model; default d=512,
6 layers, ~19M parameters, the locally trained tokenizer), writes generated addition tasks, and runs
``rlsd.train.train`` for grpo and rlsd alternately (``--reps`` times, ``--steps`` steps each, the first step
of each run dropped) with DeepSpeed (ZeRO ``--zero``) in bf16. A random-init model rarely samples EOS,
so completions run to --new-tokens.

Figures per algorithm (medians over kept steps; min step time too):
- rollout tokens/s = completion tokens / time_rollout;
- training tokens/s = completion tokens / (time_step - time_rollout);
- step time and the RLSD/GRPO ratio (min and median);
- MFU of the train phase = (6 N + 12 L d S) x (prompt + completion tokens) / time_train / peak, and of the
  log-prob phases (2 N ... per token for the old-logp pass and, for RLSD, the teacher pass) folded into a
  whole-step "model FLOPs" MFU = all model FLOPs of the step (rollout 2 N per generated token + prefill,
  log-prob passes, train) / time_step / peak; N = non-embedding parameters + the LM head, S = sequence length.
- peak: a bf16 matmul of --peak-size^3 measured in the same run (the card's measured peak, not the spec sheet).

Then (``--mechanics``, on by default) the update mechanics a GPU-sized run takes, in the same dtype, with a
coin per completion as the reward (sha256 of its text: a random-init model never solves a task, and these
checks are about the update, not learning):
- micro-batched (4 micro-batches) vs whole-batch, 3 steps: per-step loss and grad norm side by side, and the
  bf16 weights after 3 steps (identical fraction, moved-from-start fraction);
- updates_per_batch = 4: clip, dual-clip fractions and mean ratio per step (0, 0 and 1 with one update).

``--device cpu`` is a dry run of this Python on the CPU (float32, tiny sizes, a float32 matmul "peak"):
it checks the code path, not the figures.

    python benchmarks/gpu_check.py --json out.json          # on the GPU (via gpu_check.sh)
    OMP_NUM_THREADS=1 python benchmarks/gpu_check.py --device cpu --json /tmp/g.json   # dry run here
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    SMOLLM2_SHAPE,
    build_model,
    machine_line,
    make_config,
    md_table,
    quiet,
    read_metrics,
    write_addition,
)


def measured_peak(device: str, size: int) -> float:
    """FLOP/s of a square matmul (bf16 on CUDA, float32 on CPU), best of a few timed calls."""
    import torch

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(8):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(5):
            a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / 5)
    return 2 * size**3 / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--shape", choices=["custom", "smollm2"], default="custom",
                    help="smollm2: SmolLM2-135M's shape (30 layers, d=576, GQA 9/3, vocab 49152); custom: --hidden/--layers")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--zero", type=int, default=2)
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--peak-size", type=int, default=8192)
    ap.add_argument("--mechanics", type=int, default=1, help="1: also run the update-mechanics checks")
    ap.add_argument("--json", default="")
    ap.add_argument("--workdir", default="")
    args = ap.parse_args()
    if args.device == "cpu":  # dry run: small and float32 (--shape smollm2 still builds the 135M shape)
        args.hidden, args.layers, args.prompts, args.group = min(args.hidden, 64), min(args.layers, 2), min(args.prompts, 2), min(args.group, 4)
        args.new_tokens, args.steps, args.reps, args.peak_size = min(args.new_tokens, 8), min(args.steps, 2), 1, 512
    quiet()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --device cpu for a dry run")
    from rlsd.train import train

    work = Path(args.workdir or tempfile.mkdtemp(prefix="gpu_check_"))
    if args.shape == "smollm2":
        model = build_model(work / "model_smollm2_shape", hidden=0, layers=0, shape=SMOLLM2_SHAPE)
    else:
        model = build_model(work / f"model_d{args.hidden}_l{args.layers}", hidden=args.hidden, layers=args.layers)
    tr, ev = write_addition(work / "tasks", n_train=1024, n_eval=16, digits=(2, 3, 4, 5))
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model)
    d, L, V = c.hidden_size, c.num_hidden_layers, c.vocab_size
    kv = d * c.num_key_value_heads // c.num_attention_heads  # width of K and of V (GQA)
    n_body = L * (2 * d * d + 2 * d * kv + 3 * d * c.intermediate_size)  # q, o, k, v, gate/up/down
    n_flop = n_body + d * V  # matmul parameters per token (the tied head counts once as a matmul)
    n_total = n_body + V * d
    peak = measured_peak(args.device, args.peak_size)
    print(f"model: d={d}, {L} layers, {n_total / 1e6:.1f}M parameters; measured peak {peak / 1e12:.3f} TFLOP/s", flush=True)

    dtype = "bfloat16" if args.device == "cuda" else "float32"
    per: dict[str, list[dict]] = {"grpo": [], "rlsd": []}
    for rep in range(args.reps):
        for algo, kept in per.items():
            cfg = make_config({
                "model.path": model, "model.dtype": dtype, "data.train_tasks": tr, "data.eval_tasks": ev,
                "algorithm.name": algo, "rollout.group_size": args.group, "rollout.prompts_per_step": args.prompts,
                "rollout.max_new_tokens": args.new_tokens, "rollout.engine": args.engine,
                "teacher.template": "{question}H:{context}\n", "deepspeed.zero_stage": args.zero,
                "train.lr": 1e-5, "train.seed": rep, "train.steps": args.steps, "train.checkpoint_every": 0,
                "train.eval_every": 0, "tracking.enabled": False,
            })
            out = work / f"{algo}-{rep}"
            train(cfg, output_dir=out)
            rows = read_metrics(out / "metrics.jsonl")[1:]
            kept.extend(rows)
            print(f"rep {rep} {algo}: " + ", ".join(f"{r['time_step']:.3f}s" for r in rows), flush=True)

    # prompt length (tokens) of the student and teacher prompts, for the FLOP count
    from rlsd.models import load_tokenizer
    from rlsd.tasks import read_tasks

    tok = load_tokenizer(model)
    tasks = read_tasks(tr)[:256]
    p_len = statistics.mean(len(tok(t.prompt, add_special_tokens=False).input_ids) for t in tasks)
    t_len = statistics.mean(len(tok(f"{t.prompt}H:{t.privileged_context}\n", add_special_tokens=False).input_ids) for t in tasks)
    n_roll = args.prompts * args.group

    def flops_fwd(tokens_per_seq: float, seqs: int) -> float:  # forward FLOPs of `seqs` sequences
        return seqs * tokens_per_seq * (2 * n_flop + 2 * 2 * L * d * tokens_per_seq / 2)

    res = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu (dry run)",
           "machine": machine_line(), "peak_flops": peak, "params": n_total, "settings": vars(args), "algos": {}}
    for algo, rows in per.items():
        med = lambda k, rows=rows: statistics.median(r[k] for r in rows)
        comp = med("completion_len")
        toks = comp * n_roll
        seq = p_len + comp
        f_train = 3 * flops_fwd(seq, n_roll)
        f_teacher = flops_fwd(t_len + comp, n_roll) if algo == "rlsd" else 0.0
        f_roll = flops_fwd(seq, n_roll)  # prefill + one token at a time: the same matmul FLOPs as one forward
        res["algos"][algo] = {
            "step_min": min(r["time_step"] for r in rows), "step_median": med("time_step"),
            "rollout_s": med("time_rollout"), "teacher_s": med("time_teacher"),
            "train_s": med("time_train"), "completion_len": comp,
            "rollout_tok_s": statistics.median(r["completion_len"] * n_roll / r["time_rollout"] for r in rows),
            "train_tok_s": statistics.median(r["completion_len"] * n_roll / (r["time_step"] - r["time_rollout"]) for r in rows),
            "mfu_train": statistics.median(f_train / r["time_train"] for r in rows) / peak,
            "mfu_step": statistics.median((f_roll + f_teacher + f_train) / r["time_step"] for r in rows) / peak,
            "tokens": toks, "steps_kept": len(rows),
        }
    g, r = res["algos"]["grpo"], res["algos"]["rlsd"]
    res["ratio_min"], res["ratio_median"] = r["step_min"] / g["step_min"], r["step_median"] / g["step_median"]
    table = [["algorithm", "step min s", "step median s", "rollout s", "teacher s", "train s",
              "rollout tok/s", "train tok/s", "MFU train", "MFU step"]]
    for algo, v in res["algos"].items():
        table.append([algo, f"{v['step_min']:.3f}", f"{v['step_median']:.3f}", f"{v['rollout_s']:.3f}",
                      f"{v['teacher_s']:.3f}", f"{v['train_s']:.3f}", f"{v['rollout_tok_s']:,.0f}", f"{v['train_tok_s']:,.0f}",
                      f"{100 * v['mfu_train']:.1f}%", f"{100 * v['mfu_step']:.2f}%"])
    res["table"] = md_table(table)
    if args.shape == "smollm2" and args.prompts * args.group == 256 and args.new_tokens == 256:
        res["target"] = (f"RLSD step, 256 rollouts x 256 new tokens, 135M shape: {r['step_median']:.2f} s median "
                         f"(min {r['step_min']:.2f} s); target <= 2 s: {'MET' if r['step_median'] <= 2 else 'NOT met'}")
        print(res["target"], flush=True)
    print(f"\n{res['device']}; {dtype}; ZeRO-{args.zero}; engine {args.engine}; {n_total / 1e6:.1f}M params; "
          f"{args.prompts} x G={args.group} rollouts x <= {args.new_tokens} new tokens; measured peak "
          f"{peak / 1e12:.3f} TFLOP/s\n{res['table']}\nRLSD/GRPO step time: min {res['ratio_min']:.2f}x, "
          f"median {res['ratio_median']:.2f}x", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    if args.mechanics:
        res["mechanics"] = mechanics(model, tr, ev, work, args, dtype)
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1))


def _coin_reward(task, text: str) -> float:
    import hashlib

    return float(hashlib.sha256(text.encode()).digest()[0] & 1)


def mechanics(model: Path, tr: Path, ev: Path, work: Path, args: argparse.Namespace, dtype: str) -> dict:
    """Micro-batched vs whole-batch and several updates per batch, on the benchmark's model (see the docstring)."""
    from safetensors.torch import load_file

    import rlsd.verifiers as V
    from rlsd.train import train

    prompts, group = (2, 4) if args.device == "cpu" else (16, 8)
    new_tokens = min(args.new_tokens, 64)
    lr = 3e-4  # large enough that one AdamW step (~lr per weight) is visible in bf16 weights of scale 0.02

    def run(name: str, **extra) -> tuple[list[dict], dict]:
        cfg = make_config({
            "model.path": model, "model.dtype": dtype, "data.train_tasks": tr, "data.eval_tasks": ev,
            "algorithm.name": "rlsd", "rollout.group_size": group, "rollout.prompts_per_step": prompts,
            "rollout.max_new_tokens": new_tokens, "rollout.engine": args.engine,
            "teacher.template": "{question}H:{context}\n", "deepspeed.zero_stage": args.zero, "train.lr": lr,
            **extra, "train.steps": 3, "train.checkpoint_every": 0, "train.eval_every": 0, "tracking.enabled": False})
        out = work / f"mech-{name}"
        t0 = time.perf_counter()
        train(cfg, output_dir=out)
        print(f"mechanics run {name}: {time.perf_counter() - t0:.1f} s", flush=True)
        return read_metrics(out / "metrics.jsonl"), load_file(str(out / "final" / "model.safetensors"))

    orig = V.score
    V.score = _coin_reward
    try:
        rollouts = prompts * group
        whole, w_whole = run("whole")
        micro, w_micro = run("micro", **{"train.micro_batch_size": rollouts // 4})
        # a larger lr: each update must move the policy enough for ratios past the clip range
        upd, _ = run("updates4", **{"train.updates_per_batch": 4, "train.micro_batch_size": rollouts // 4,
                                    "train.lr": 10 * lr})
    finally:
        V.score = orig
    base = load_file(str(model / "model.safetensors"))
    same = sum(int((w_whole[k] == w_micro[k]).sum()) for k in w_whole) / sum(v.numel() for v in w_whole.values())
    moved = sum(int((w_micro[k] != base[k].to(w_micro[k].dtype)).sum()) for k in w_micro) / sum(
        v.numel() for v in w_micro.values())
    r = {"lr": lr, "lr_updates4": 10 * lr, "rollouts": rollouts, "new_tokens": new_tokens, "weights_identical_frac": same,
         "micro_moved_frac": moved,
         "steps": [{"step": a["step"], "reward_whole": a["reward_mean"], "reward_micro": b["reward_mean"],
                    "loss_whole": a["loss"], "loss_micro": b["loss"], "grad_norm_whole": a["grad_norm"],
                    "grad_norm_micro": b["grad_norm"]} for a, b in zip(whole, micro)],
         "updates4": [{k: u.get(k) for k in ("step", "optimizer_step", "clip_frac", "dual_clip_frac", "ratio_mean",
                                             "approx_kl", "lambda", "reward_mean")} for u in upd]}
    s1 = r["steps"][0]
    r["micro_equals_whole_step1"] = (abs(s1["grad_norm_whole"] - s1["grad_norm_micro"])
                                     <= 0.02 * max(s1["grad_norm_whole"], 1e-12) and s1["grad_norm_whole"] > 0)
    r["micro_trains"] = moved > 0.5
    r["clips_act"] = max(u["clip_frac"] for u in r["updates4"]) > 0
    rows = [["step", "reward whole / micro", "loss whole / micro", "grad norm whole / micro"]]
    rows += [[str(x["step"]), f"{x['reward_whole']:.3f} / {x['reward_micro']:.3f}",
              f"{x['loss_whole']:.4g} / {x['loss_micro']:.4g}",
              f"{x['grad_norm_whole']:.4g} / {x['grad_norm_micro']:.4g}"] for x in r["steps"]]
    rows2 = [["step", "optimizer steps", "clip_frac", "dual_clip_frac", "ratio_mean", "approx_kl", "lambda"]]
    rows2 += [[str(u["step"]), str(u["optimizer_step"]), f"{u['clip_frac']:.4f}", f"{u['dual_clip_frac']:.4f}",
               f"{u['ratio_mean']:.4f}", f"{u['approx_kl']:.2e}", f"{u['lambda']:.3f}"] for u in r["updates4"]]
    r["table"] = (f"micro-batched ({rollouts // 4} x 4) vs whole batch ({rollouts} rollouts x <= {new_tokens} tokens, "
                  f"{dtype}, lr {lr}, coin rewards):\n{md_table(rows)}\n{dtype} weights after 3 steps: "
                  f"{100 * same:.2f}% identical; micro-batched run moved {100 * moved:.1f}% of the weights. "
                  f"Step-1 grad norms within 2%: {r['micro_equals_whole_step1']}\n\nupdates_per_batch = 4 "
                  f"(lr {10 * lr}):\n"
                  f"{md_table(rows2)}\nclip fractions > 0: {r['clips_act']}")
    print(r["table"], flush=True)
    return r


if __name__ == "__main__":
    main()
