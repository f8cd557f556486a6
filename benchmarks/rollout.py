"""New tokens/s of rlsd's rollout engine and of transformers' generate, side by side in one run.

For each model shape and batch size: random-init weights, random prompts of --prompt-tokens tokens, no
EOS (every row runs the full --new-tokens), plain sampling (temperature 1, no top-k / top-p) in both
engines. Also prints the memory bound of a decode step (the bytes it must move, from
``rlsd.rollout.engine.memory_bytes_per_step`` at the average live cache length, over the copy bandwidth
measured in the same run) and the engine's fraction of it. ``--kernels`` times the engine once per decode
kernel setting (rollout.kernels: torch ops, or rlsd.rollout.kernels' Triton kernels), one row each, against
the same ``generate`` timing.

    # CPU (the committed benchmarks/results/rollout_cpu.md)
    OMP_NUM_THREADS=1 python benchmarks/rollout.py --models tiny --batches 64,256,1024 --new-tokens 64 \
        --prompt-tokens 32 --out benchmarks/results/rollout_cpu.md
    # GPU (inside benchmarks/gpu_rollout_check.sh)
    python benchmarks/rollout.py --models tiny,smollm2 --batches 64,256,1024 --new-tokens 256 \
        --prompt-tokens 128 --dtype bfloat16 --kernels torch,triton --out benchmarks/results/rollout_gpu.md
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rlsd import offline

offline.apply()

from rlsd.rollout import engine as E


def build(name: str, dtype: torch.dtype, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    if name == "tiny":  # rlsd.models.build_tiny_model's shape
        cfg = LlamaConfig(vocab_size=320, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                          tie_word_embeddings=True)
    elif name == "smollm2":  # SmolLM2-135M-Instruct's shape
        cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                          num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                          rope_parameters={"rope_type": "default", "rope_theta": 100000.0}, rms_norm_eps=1e-5,
                          tie_word_embeddings=True)
    else:
        raise SystemExit(f"--models: unknown model {name!r} (tiny, smollm2)")
    cfg.pad_token_id, cfg.eos_token_id, cfg.bos_token_id = 0, None, None
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(device=device, dtype=dtype).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def copy_bandwidth(device: str) -> float:
    """Bytes/s of a large device copy (read + write counted)."""
    n = (1 << 30) // 4
    x = torch.empty(n, dtype=torch.float32, device=device).fill_(1.0)
    y = torch.empty_like(x)
    y.copy_(x)
    sync(device)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        y.copy_(x)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * x.numel() * 4 / best


def time_call(fn, device: str) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="tiny,smollm2")
    ap.add_argument("--batches", default="64,256,1024")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="float32 | bfloat16 (default: bfloat16 on cuda, float32 on cpu)")
    ap.add_argument("--no-generate", action="store_true", help="time only the engine")
    ap.add_argument("--kernels", default="auto",
                    help="comma list of rollout.kernels settings to time (torch, triton); auto: torch,triton where "
                         "the Triton kernels can run on the device, else torch")
    ap.add_argument("--repeats", type=int, default=2,
                    help="timed calls of each engine, alternating; the fastest counts (shared machines are noisy)")
    ap.add_argument("--out", default=None, help="append the markdown table to this file")
    ap.add_argument("--json", default=None, help="write the rows as JSON to this file")
    a = ap.parse_args(argv)
    device = a.device
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[a.dtype or ("bfloat16" if device == "cuda"
                                                                              else "float32")]
    import transformers

    from rlsd.rollout import kernels as K

    kernel_sets = (["torch", "mixed", "triton"] if K.available(device) else ["torch"]) if a.kernels == "auto" else \
        [k.strip() for k in a.kernels.split(",")]
    bw = copy_bandwidth(device)
    gpu = torch.cuda.get_device_name() if device == "cuda" else None
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    head = [f"machine: {gpu or cpu} ({device}; {torch.get_num_threads()} torch threads); torch {torch.__version__}, "
            f"transformers {transformers.__version__}, python {platform.python_version()}",
            f"dtype {str(dtype).split('.')[-1]}, prompt {a.prompt_tokens} tokens, {a.new_tokens} new tokens, sampling "
            f"T=1, no EOS; measured copy bandwidth {bw / 1e9:.1f} GB/s",
            "",
            "| model | batch | kernels | engine tok/s | generate tok/s | speedup | engine ms/step | generate ms/step | "
            "bound ms/step | engine % of bound | first call s (capture) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(head), flush=True)
    rows: list[str] = []
    records: list[dict] = []
    P, T = a.prompt_tokens, a.new_tokens
    for name in a.models.split(","):
        model = build(name, dtype, device)
        engines = {k: E.Engine(model, kernels=k) for k in kernel_sets}  # one cache and graph set each
        for eng in engines.values():
            eng.refresh()
        for B in [int(b) for b in a.batches.split(",")]:
            g = torch.Generator().manual_seed(B)
            ids = torch.randint(2, model.config.vocab_size, (B, P), generator=g)
            mask = torch.ones_like(ids)

            def run_engine(eng, ids=ids, mask=mask):
                eng.generate(ids, mask, max_new_tokens=T, temperature=1.0, eos_ids=(), pad_id=0)

            ids_d, mask_d = ids.to(device), mask.to(device)

            def run_generate(n=T, model=model, ids_d=ids_d, mask_d=mask_d):
                with torch.no_grad():
                    model.generate(input_ids=ids_d, attention_mask=mask_d, max_new_tokens=n, min_new_tokens=n,
                                   do_sample=True, temperature=1.0, top_k=0, top_p=1.0, pad_token_id=0)

            # first calls allocate the cache and capture the graphs on CUDA (and compile the Triton kernels)
            first = {k: time_call(lambda e=e: run_engine(e), device) for k, e in engines.items()}
            if not a.no_generate:
                run_generate(2)
            t_eng = dict.fromkeys(engines, float("inf"))
            t_gen = float("inf")
            for _ in range(max(1, a.repeats)):
                for k, e in engines.items():
                    t_eng[k] = min(t_eng[k], time_call(lambda e=e: run_engine(e), device))
                if not a.no_generate:
                    t_gen = min(t_gen, time_call(run_generate, device))
            t_gen = float("nan") if a.no_generate else t_gen
            bound = E.memory_bytes_per_step(model, B, P + (T + 1) / 2) / bw
            ms_g = 1e3 * t_gen / T
            for k, te in t_eng.items():
                ms_e = 1e3 * te / T
                row = (f"| {name} | {B} | {k} | {B * T / te:,.0f} | {B * T / t_gen:,.0f} | {t_gen / te:.1f}x | "
                       f"{ms_e:.2f} | {ms_g:.2f} | {1e3 * bound:.3f} | {100 * 1e3 * bound / ms_e:.1f}% | "
                       f"{first[k]:.2f} |")
                print(row, flush=True)
                rows.append(row)
                records.append(dict(model=name, batch=B, kernels=k, engine_tok_s=B * T / te,
                                    generate_tok_s=B * T / t_gen, speedup=t_gen / te, engine_ms_step=ms_e,
                                    generate_ms_step=ms_g, bound_ms_step=1e3 * bound, frac_of_bound=1e3 * bound / ms_e,
                                    first_call_s=first[k]))
        del model, engines
        if device == "cuda":
            torch.cuda.empty_cache()
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            f.write("\n".join(head + rows) + "\n\n")
    if a.json:
        import json

        Path(a.json).write_text(json.dumps(dict(device=gpu or cpu, dtype=str(dtype), prompt_tokens=P, new_tokens=T,
                                                bandwidth_gbs=bw / 1e9, rows=records), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
