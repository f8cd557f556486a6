"""Decode-attention variants on one GPU, each timed inside a CUDA graph (as the engine runs them, so no launch
overhead): rlsd.rollout.kernels.decode_attention over its block / warp / stage / split settings, the engine's
torch-op attention (the ``mixed`` path) and torch's SDPA, at the 135M shape (9 query heads, 3 KV heads, D 64),
bf16, column 300 of a 320-column bucket. Prints a table sorted by time with each variant's % of the memory bound
(live K/V bytes over the measured copy bandwidth) and its max |diff| to the float32 reference.

    python benchmarks/gpu_attention_probe.py [--batches 256,1024] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from rlsd.rollout import kernels as K  # noqa: E402


def graph_time(fn, n: int = 20, reps: int = 5) -> float:
    """Best microseconds per call over ``reps`` replays of a graph holding ``n`` calls."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(n):
            fn()
    g.replay()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        best = min(best, a.elapsed_time(b) * 1e3 / n)
    return best


def copy_bandwidth() -> float:
    x = torch.empty(1 << 28, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    us = graph_time(lambda: y.copy_(x), n=5)
    return 2 * x.numel() / (us * 1e-6)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="256,1024")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    dev, dt = "cuda", torch.bfloat16
    Hq, Hkv, D, S_max, S, col = 9, 3, 64, 384, 320, 300
    G = Hq // Hkv
    bw = copy_bandwidth()
    print(f"{torch.cuda.get_device_name()}; torch {torch.__version__}; copy bandwidth {bw / 1e9:.0f} GB/s", flush=True)
    results = []
    for B in [int(b) for b in args.batches.split(",")]:
        gen = torch.Generator(device="cpu").manual_seed(0)
        q = torch.randn(B, Hq, D, generator=gen).to(dev, dt)
        kc = (torch.randn(B, Hkv, S_max, D, generator=gen) * 2).to(dev, dt)
        vc = torch.randn(B, Hkv, S_max, D, generator=gen).to(dev, dt)
        start = torch.randint(0, 100, (B,), generator=gen).to(dev)
        c = torch.tensor([col], device=dev)
        live = (col + 1 - start).clamp(min=0).sum().item()
        bound_us = (live * Hkv * D * 2 * 2 + 2 * q.numel() * 2) / bw * 1e6
        ref = torch.empty(B, Hq, D, device=dev, dtype=torch.float32)
        K.decode_attention_ref(q.float(), kc.float(), vc.float(), start, c, S, D ** -0.5, None, ref)
        cols = torch.arange(S, device=dev)
        allowed = (cols[None, :] >= start[:, None]) & (cols[None, :] <= c)
        bias = torch.zeros(allowed.shape, device=dev).masked_fill_(~allowed, float("-inf"))[:, None, None, :]
        out = torch.empty_like(q)

        def record(name, fn):
            try:
                fn()
                torch.cuda.synchronize()
                err = (out.float() - ref).abs().max().item()
                us = graph_time(fn)
            except Exception as e:  # noqa: BLE001 - a variant that does not compile is reported, not fatal
                print(f"B={B} {name}: FAILED {type(e).__name__}: {str(e)[:200]}", flush=True)
                return
            results.append(dict(batch=B, variant=name, us=round(us, 2), pct_bound=round(100 * bound_us / us, 1),
                                max_abs_diff=err))
            print(f"B={B} {name}: {us:.1f} us ({100 * bound_us / us:.0f}% of bound), max|diff| {err:.2e}", flush=True)

        def engine_torch():  # the engine's torch-op attention (kernels=mixed / torch)
            s = torch.bmm(q.view(B * Hkv, G, D), kc[:, :, :S].reshape(B * Hkv, S, D).transpose(1, 2),
                          out_dtype=torch.float32).view(B, Hkv, G, S)
            p = torch.softmax(s * D ** -0.5 + bias, dim=-1).to(dt)
            out.copy_(torch.matmul(p, vc[:, :, :S]).reshape(B, Hq, D))

        record("engine torch ops", engine_torch)
        sdpa_mask = allowed[:, None, None, :]
        for backend in ("EFFICIENT_ATTENTION", "MATH", "CUDNN_ATTENTION"):
            def sdpa(backend=backend):
                with torch.nn.attention.sdpa_kernel(getattr(torch.nn.attention.SDPBackend, backend)):
                    o = F.scaled_dot_product_attention(q[:, :, None], kc[:, :, :S], vc[:, :, :S], attn_mask=sdpa_mask,
                                                       scale=D ** -0.5, enable_gqa=True)
                out.copy_(o[:, :, 0])
            record(f"sdpa {backend.lower()}", sdpa)
        for bn, w, st in itertools.product((16, 32, 64, 128), (1, 2, 4), (1, 2)):
            K.BLOCK_N, K.NUM_WARPS, K.NUM_STAGES, K.SPLIT_CHUNK = bn, w, st, 0
            record(f"triton one-pass block{bn} warps{w} stages{st}",
                   lambda: K.decode_attention(q, kc, vc, start, c, S, D ** -0.5, None, out))
        for bn, chunk, w, st in itertools.product((16, 32, 64), (64, 128), (2, 4), (2,)):
            if chunk < bn:
                continue
            K.BLOCK_N, K.NUM_WARPS, K.NUM_STAGES, K.SPLIT_CHUNK = bn, w, st, chunk
            record(f"triton split{chunk} block{bn} warps{w} stages{st}",
                   lambda: K.decode_attention(q, kc, vc, start, c, S, D ** -0.5, None, out))
        print(f"B={B}: memory bound {bound_us:.1f} us", flush=True)
    print("\n| batch | variant | us | % of memory bound | max abs diff |\n|---|---|---|---|---|")
    for r in sorted(results, key=lambda r: (r["batch"], r["us"]))[:]:
        print(f"| {r['batch']} | {r['variant']} | {r['us']} | {r['pct_bound']} | {r['max_abs_diff']:.2e} |")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(bandwidth=bw, results=results, at=time.strftime("%F %T")), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
