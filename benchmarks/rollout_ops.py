"""Kernel launches of ONE decode step of rlsd's rollout engine, counted on CPU: rollout.kernels=torch vs
rollout.kernels=triton (the Triton kernels run in Triton's interpreter here). A proxy for the GPU, where a
CUDA-graph-captured decode step of this small model is bound by its number of launches.

How ops are counted. A ``TorchDispatchMode`` sees every aten op the step dispatches. Ops that return an
alias of an input (view, slice, select, transpose, t, expand, unsqueeze, ...; also ``_unsafe_view``, a
view without the alias annotation) and bare allocations (empty, empty_strided) launch no kernel and are
listed apart; every other aten op counts as one launch (a copy made by ``matmul`` of a non-contiguous
cache slice is counted, as it should be; top-k / sort would count low, but a greedy step uses neither).
In float32 the torch path's cast of the softmax weights to the model dtype is a no-op; in bfloat16 on
CUDA it is one more launch per layer. A Triton kernel call counts as
one launch (in the interpreter it is one Python call; on a GPU one launch); the torch ops it makes
internally (e.g. the interpreter's own copies) are not counted. ``F.rms_norm`` counts as one launch, as
the engine's CUDA path uses it (``Engine.fused_rms``; a fused kernel on CUDA builds of recent torch; on
CPU it decomposes into 6 ops). Per layer = (ops of the 30-layer step - ops of the 2-layer step) / 28.

    OMP_NUM_THREADS=1 python benchmarks/rollout_ops.py --out benchmarks/results/rollout_ops.md
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported: the kernels run on CPU tensors

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rlsd import offline  # noqa: E402

offline.apply()

from rlsd.rollout import engine as E  # noqa: E402
from rlsd.rollout import kernels as K  # noqa: E402

NO_LAUNCH = {"empty.memory_format", "empty_strided.default", "empty_like.default", "_unsafe_view.default"}


class Counting(TorchDispatchMode):
    """Records the aten ops dispatched (name -> count), split into launches and no-launch ops."""

    def __init__(self):
        super().__init__()
        self.launch: Counter = Counter()
        self.free: Counter = Counter()
        self.paused = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.paused:
            name = f"{func.overloadpacket.__name__}.{func._overloadname}"
            aliases = any(r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns)
            (self.free if aliases or name in NO_LAUNCH else self.launch)[name] += 1
        return func(*args, **(kwargs or {}))

    def one(self, name: str, fn):
        """Wrap fn: one launch named ``name``; the torch ops inside are not counted."""
        def wrapped(*a, **kw):
            self.launch[name] += 1
            self.paused += 1
            try:
                return fn(*a, **kw)
            finally:
                self.paused -= 1
        return wrapped


def build(layers: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=layers,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                      rope_parameters={"rope_type": "default", "rope_theta": 100000.0}, rms_norm_eps=1e-5,
                      tie_word_embeddings=True, pad_token_id=0, eos_token_id=None, bos_token_id=None)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def count_step(model, kernels: str, batch: int, prompt: int) -> Counting:
    """Counts of one greedy decode step at column ``prompt + 1`` (after a prefill and one step)."""
    eng = E.Engine(model, kernels=kernels)
    eng.fused_rms = True  # the CUDA path's RMSNorm (see the module docstring)
    eng.refresh()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, model.config.vocab_size, (batch, prompt), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :prompt // 2] = 0  # one shorter prompt
    eng.generate(ids, mask, max_new_tokens=2, greedy=True, eos_ids=(), pad_id=0)  # prefill + one step
    st = eng.state
    eos = torch.zeros(0, dtype=torch.long)
    mode = Counting()
    saved = {n: getattr(K, n) for n in ("rope_cache_write", "decode_attention", "silu_mul")}
    rms = F.rms_norm
    try:
        for n, fn in saved.items():
            setattr(K, n, mode.one(f"triton:{n}", fn))
        F.rms_norm = mode.one("rms_norm (fused)", rms)
        with torch.no_grad(), mode:
            eng._decode_step(st, int(st.col.item()) + 1, (True, 1.0, 0, 1.0), eos, 0)
    finally:
        for n, fn in saved.items():
            setattr(K, n, fn)
        F.rms_norm = rms
    return mode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--prompt-tokens", type=int, default=8)
    ap.add_argument("--out", default=None, help="write the markdown to this file")
    a = ap.parse_args(argv)
    if not K.available("cpu"):
        raise SystemExit(f"Triton kernels cannot run here: {K.unavailable_reason('cpu')}")
    L, L0 = a.layers, 2
    big, small = build(L), build(L0)
    res = {}
    for kernels in ("torch", "triton"):
        m_big = count_step(big, kernels, a.batch, a.prompt_tokens)
        m_small = count_step(small, kernels, a.batch, a.prompt_tokens)
        per_layer = Counter({k: (m_big.launch[k] - m_small.launch[k]) / (L - L0) for k in m_big.launch})
        per_layer = Counter({k: v for k, v in per_layer.items() if v})
        n = sum(m_big.launch.values())
        pl = sum(per_layer.values())
        res[kernels] = dict(step=n, layer=pl, outside=n - L * pl, free=sum(m_big.free.values()),
                            free_layer=(sum(m_big.free.values()) - sum(m_small.free.values())) / (L - L0),
                            per_layer=per_layer)
    lines = [f"# Launches of one decode step (SmolLM2-135M shape: {L} layers, hidden 576, 9 / 3 heads, head_dim 64; "
             f"random init, float32, batch {a.batch}, prompt {a.prompt_tokens}; CPU, Triton interpreter)", "",
             "Counted with `benchmarks/rollout_ops.py` (a TorchDispatchMode: every non-view, non-allocation aten op "
             "is one launch; a Triton kernel call is one launch; `F.rms_norm` is one, as on the engine's CUDA path). "
             "A proxy: CUDA-graph replay time of this model's step is bound by launches (issue #10).", "",
             "| kernels | launches per step | per layer | outside the layers | view / alloc ops per step (no launch) |",
             "|---|---|---|---|---|"]
    for k, r in res.items():
        lines.append(f"| {k} | {r['step']} | {r['layer']:.0f} | {r['outside']:.0f} | {r['free']} |")
    t, k = res["torch"], res["triton"]
    lines += ["", f"Per step: {t['step']} -> {k['step']} launches ({t['step'] / k['step']:.1f}x fewer).", ""]
    for name, r in res.items():
        lines.append(f"Per layer, kernels={name}: " + ", ".join(f"{op} x{v:.0f}" for op, v in
                                                                  sorted(r["per_layer"].items(), key=lambda x: -x[1])))
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
