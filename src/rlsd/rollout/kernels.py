"""Triton kernels for one decode step of rlsd's rollout engine, each with a pure-torch reference of the
same signature (the reference is the specification; tests compare the two).

- ``rope_cache_write``: rotary embedding of the step's q and k heads (transformers' ``rotate_half``
  convention), the rotated k and the v of the step written into KV-cache column ``col``, the rotated q
  written to ``q_out``: one kernel instead of ~8 (slices, cat, neg, muls, add, two ``index_copy_``).
- ``decode_attention``: one query per row attends to the live columns ``[start_b, col]`` (and, with a
  sliding window, only the last ``window`` of them) of the first S cache columns. Grouped KV heads are not
  expanded: one program per (row, KV head) loads each K / V block once for the G = Hq / Hkv query heads
  of its group (padded to 16 rows, so that both products are ``tl.dot`` on tensor cores; the first
  version multiplied by broadcasting in registers and ran ~10x off its memory bound on an H200). Scores
  and the online softmax (a running max and sum over blocks of BLOCK_N columns, flash-decoding's first
  pass) are float32; the output is written in the cache dtype. One kernel instead
  of ~6 (scores, scale, mask bias, softmax, cast, P @ V), and it reads only the live columns, not all S.
- ``silu_mul``: ``act(g) * u`` over the fused gate/up output, for act = silu or gelu (tanh form).

``col`` (the cache column of this step) and ``start`` are read from device memory inside the kernels, so
a captured CUDA graph that advances ``col`` replays correctly; nothing here syncs with the host.

Departures from the torch path of the engine (all in rounding only; float32 results agree to ~1e-6):
the rotation and ``act(g) * u`` are computed in float32 and rounded once to the model dtype (the torch
path rounds after every op in 16-bit); attention keeps the softmax weights in float32 for P @ V (the torch
path casts them to the model dtype first). A row with no live column gets a zero output (the engine never
makes one: column ``col`` is always live). A split over S across programs (flash-decoding's second pass,
``SPLIT_CHUNK`` > 0) exists and is tested, but is off: on an H200 at batch 256 and 1024 the one-pass kernel
with BLOCK_N 32, one warp, two stages was the fastest of 48 settings (29.8 us at batch 256, 40% of the memory
bound; 83 us at 1024, 58%; the torch ops 45.7 / 128 us; benchmarks/gpu_attention_probe.py,
benchmarks/results/gpu_h200_2026-11-30/attention_probe).

Triton is imported lazily and only basic ``tl`` operations are used (load/store/where/sum/max/exp,
program_id, arange, constexpr block sizes), so the kernels run on older Triton releases bundled with
CUDA builds of torch, and on CPU tensors in Triton's interpreter (``TRITON_INTERPRET=1`` set before the
kernels are first built). ``available(device)`` says whether they can run on a device.

Shapes: B = rows, Hq / Hkv = query / KV heads, G = Hq // Hkv, D = head_dim, S_max = cache columns,
F = intermediate size. Every tensor's last dimension must be contiguous.
"""

from __future__ import annotations

import importlib.util
import math
import os
from typing import Any

import torch

ACTIVATIONS = {"silu": 0, "swish": 0, "gelu_pytorch_tanh": 1, "gelu_new": 1}
"""transformers ``hidden_act`` names the ``silu_mul`` kernel implements -> its ACT code."""

_K: dict[str, Any] | None = None  # the jit-compiled kernels, built on first use
_INTERPRETED = False  # whether _K was built in Triton's interpreter (TRITON_INTERPRET=1)
BLOCK_N = 32  # cache columns per attention block (a power of two, >= 16 for tl.dot)
SPLIT_CHUNK = 0  # > 0: flash-decoding over splits of this many columns (a multiple of BLOCK_N) plus a combine pass
NUM_WARPS = 1
NUM_STAGES = 2


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def importable() -> bool:
    """True when the ``triton`` package can be imported (it is not imported here)."""
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # a broken or blocked install
        return False


def _interpret_env() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def available(device: torch.device | str) -> bool:
    """Whether the Triton kernels can run on ``device``: on CUDA when triton imports and CUDA is up; on CPU
    only in Triton's interpreter (the kernels were built, or will be built, with TRITON_INTERPRET=1)."""
    dev = torch.device(device)
    if not importable():
        return False
    if dev.type == "cuda":
        return torch.cuda.is_available() and (_K is None or not _INTERPRETED)
    if dev.type == "cpu":
        return _INTERPRETED if _K is not None else _interpret_env()
    return False


def unavailable_reason(device: torch.device | str) -> str:
    """Why ``available(device)`` is False, with the fix (empty when it is True)."""
    dev = torch.device(device)
    if available(dev):
        return ""
    if not importable():
        return ("triton is not installed (CUDA builds of torch bundle it; elsewhere `pip install triton`), "
                "or set rollout.kernels=torch")
    if dev.type == "cuda" and _K is not None and _INTERPRETED:
        return "the kernels were built in Triton's interpreter (TRITON_INTERPRET=1); unset it for CUDA"
    if dev.type == "cpu":
        return ("Triton kernels run on CPU tensors only in Triton's interpreter: set TRITON_INTERPRET=1 before "
                "the first use, or set rollout.kernels=torch")
    return f"no Triton backend for device type {dev.type!r}; set rollout.kernels=torch"


def build() -> dict[str, Any]:
    """The jit-compiled kernels (built once; in interpreter mode when TRITON_INTERPRET=1 at this call)."""
    global _K, _INTERPRETED
    if _K is not None:
        return _K
    from rlsd.rollout import _triton_kernels as T  # defines the @triton.jit kernels on import

    _INTERPRETED = T.INTERPRETED
    _K = {"rope": T.rope_cache_kernel, "attention": T.attention_kernel, "act_mul": T.act_mul_kernel,
          "attention_split": T.attention_split_kernel, "attention_combine": T.attention_combine_kernel}
    return _K


def _last_contiguous(**ts: torch.Tensor) -> None:
    for name, t in ts.items():
        if t.stride(-1) != 1:
            raise ValueError(f"{name}: the last dimension must be contiguous (stride 1), got strides {t.stride()}; "
                             "pass .contiguous()")


def _check_col(col: torch.Tensor) -> None:
    if col.numel() != 1 or col.dtype != torch.long:
        raise ValueError(f"col must be a one-element long tensor on the device, got {col.dtype} {tuple(col.shape)}")


# ----------------------------------------------------------------------------------------------
# rope + cache write
# ----------------------------------------------------------------------------------------------


def rope_cache_write(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor,
                     v_cache: torch.Tensor, col: torch.Tensor, q_out: torch.Tensor) -> None:
    """Rotate q and k of one decode step, write k and v into cache column ``col``, q into ``q_out``.

    qkv: (B, Hq + 2 Hkv, D) the fused projection (q heads, then k heads, then v heads); cos, sin: (B, D)
    the rotary tables at each row's position; k_cache, v_cache: (B, Hkv, S_max, D); col: one-element long
    tensor (read on the device); q_out: (B, Hq, D). Writes k_cache[:, :, col], v_cache[:, :, col], q_out.
    """
    B, H, D = qkv.shape
    Hkv = k_cache.shape[1]
    Hq = H - 2 * Hkv
    if q_out.shape != (B, Hq, D) or k_cache.shape[0] != B or k_cache.shape[-1] != D or D % 2:
        raise ValueError(f"rope_cache_write: qkv {tuple(qkv.shape)}, k_cache {tuple(k_cache.shape)} and q_out "
                         f"{tuple(q_out.shape)} do not fit (B, Hq + 2 Hkv, D) / (B, Hkv, S, D) / (B, Hq, D), D even")
    _check_col(col)
    _last_contiguous(qkv=qkv, cos=cos, sin=sin, k_cache=k_cache, v_cache=v_cache, q_out=q_out)
    k = build()["rope"]
    k[(B, H)](qkv, cos, sin, k_cache, v_cache, col, q_out,
              qkv.stride(0), qkv.stride(1), cos.stride(0), sin.stride(0),
              k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
              v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), q_out.stride(0), q_out.stride(1),
              HQ=Hq, HKV=Hkv, D=D, BLOCK_D=_next_pow2(D))


def rope_cache_write_ref(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor,
                         v_cache: torch.Tensor, col: torch.Tensor, q_out: torch.Tensor) -> None:
    """Pure-torch ``rope_cache_write`` (the engine's torch path: rotate_half, then ``index_copy_``)."""
    Hkv = k_cache.shape[1]
    Hq = qkv.shape[1] - 2 * Hkv
    half = qkv.shape[-1] // 2
    x = qkv[:, :Hq + Hkv]
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    r = x * cos[:, None] + rot * sin[:, None]
    c = col.reshape(1)
    k_cache.index_copy_(2, c, r[:, Hq:, None, :].to(k_cache.dtype))
    v_cache.index_copy_(2, c, qkv[:, Hq + Hkv:, None, :].to(v_cache.dtype))
    q_out.copy_(r[:, :Hq])


# ----------------------------------------------------------------------------------------------
# decode attention
# ----------------------------------------------------------------------------------------------


def _dot_precisions(dtype: torch.dtype) -> tuple[str, str]:
    """tl.dot input precisions (Q K^T, P V) for a cache of ``dtype``; the operands are float32 in registers:
    exact products ("ieee") for a float32 cache; a bfloat16 value is exact in TF32, so Q K^T takes one TF32
    pass, float16 values and the float32 softmax weights take three ("tf32x3", float32 accuracy)."""
    if dtype == torch.float32:
        return "ieee", "ieee"
    return ("tf32" if dtype == torch.bfloat16 else "tf32x3"), "tf32x3"


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, start: torch.Tensor,
                     col: torch.Tensor, S: int, scale: float, window: int | None, out: torch.Tensor) -> None:
    """One query per row over the live cache columns, grouped KV heads shared, float32 online softmax.

    q: (B, Hq, D); k_cache, v_cache: (B, Hkv, S_max, D); start: (B,) long, each row's first real column;
    col: one-element long tensor, the current column (read on the device); S: columns considered (the
    cache-length bucket, S > col); window: a sliding window (keys within ``col - window < c``) or None;
    out: (B, Hq, D) written with softmax(q K^T * scale) V over columns c with start_b <= c <= col, c < S.
    """
    B, Hq, D = q.shape
    Hkv = k_cache.shape[1]
    if Hq % Hkv or k_cache.shape[0] != B or k_cache.shape[-1] != D or out.shape != q.shape or not \
            0 < S <= k_cache.shape[2]:
        raise ValueError(f"decode_attention: q {tuple(q.shape)}, k_cache {tuple(k_cache.shape)}, out "
                         f"{tuple(out.shape)}, S={S} do not fit (B, Hq, D) / (B, Hkv, S_max, D), Hq % Hkv == 0, "
                         "0 < S <= S_max")
    if start.shape != (B,) or start.dtype != torch.long:
        raise ValueError(f"decode_attention: start must be a (B,) long tensor, got {start.dtype} {tuple(start.shape)}")
    _check_col(col)
    _last_contiguous(q=q, k_cache=k_cache, v_cache=v_cache, out=out)
    G = Hq // Hkv
    qk_precision, pv_precision = _dot_precisions(k_cache.dtype)
    blocks = dict(G=G, D=D, BLOCK_G=max(16, _next_pow2(G)), BLOCK_D=max(16, _next_pow2(D)), BLOCK_N=BLOCK_N,
                  HAS_WINDOW=window is not None, QK_PRECISION=qk_precision, PV_PRECISION=pv_precision,
                  num_warps=NUM_WARPS, num_stages=NUM_STAGES)
    if SPLIT_CHUNK <= 0:
        build()["attention"][(B, Hkv)](
            q, k_cache, v_cache, start, col, out, int(S), int(window or 0), float(scale),
            q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
            v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), out.stride(0), out.stride(1), **blocks)
        return
    chunk = max(BLOCK_N, SPLIT_CHUNK // BLOCK_N * BLOCK_N)
    nsp = -(-int(S) // chunk)
    part_m = torch.empty((B, Hq, nsp), dtype=torch.float32, device=q.device)
    part_l = torch.empty_like(part_m)
    part_o = torch.empty((B, Hq, nsp, D), dtype=torch.float32, device=q.device)
    build()["attention_split"][(B, Hkv, nsp)](
        q, k_cache, v_cache, start, col, part_m, part_l, part_o, int(S), int(window or 0), float(scale),
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), CHUNK=chunk, **blocks)
    build()["attention_combine"][(B, Hq)](part_m, part_l, part_o, out, out.stride(0), out.stride(1), HQ=Hq, NSP=nsp,
                                          D=D, BLOCK_S=_next_pow2(nsp), BLOCK_D=_next_pow2(D))


def decode_attention_ref(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, start: torch.Tensor,
                         col: torch.Tensor, S: int, scale: float, window: int | None, out: torch.Tensor) -> None:
    """Pure-torch ``decode_attention``: grouped matmuls over the first S columns with an additive -inf
    mask, float32 scores and softmax (rows without a live column get zeros)."""
    B, Hq, D = q.shape
    Hkv = k_cache.shape[1]
    G = Hq // Hkv
    cols = torch.arange(S, device=q.device)
    c = col.reshape(())
    allowed = (cols[None, :] >= start[:, None]) & (cols[None, :] <= c)  # (B, S)
    if window is not None:
        allowed = allowed & ((c - cols)[None, :] < window)
    kc = k_cache[:, :, :S].float()
    vc = v_cache[:, :, :S].float()
    s = torch.matmul(q.float().reshape(B, Hkv, G, D), kc.transpose(-1, -2)) * scale  # (B, Hkv, G, S)
    s = s.masked_fill(~allowed[:, None, None, :], float("-inf"))
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)
    out.copy_(torch.matmul(p, vc).reshape(B, Hq, D))


# ----------------------------------------------------------------------------------------------
# act(g) * u
# ----------------------------------------------------------------------------------------------


def _act_code(act: str) -> int:
    if act not in ACTIVATIONS:
        raise ValueError(f"silu_mul: activation {act!r} has no kernel; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[act]


def silu_mul(gu: torch.Tensor, act: str = "silu", out: torch.Tensor | None = None) -> torch.Tensor:
    """act(g) * u for gu = [g | u]: gu (B, 2F) -> (B, F) in gu's dtype (``out`` if given)."""
    if gu.dim() != 2 or gu.shape[1] % 2:
        raise ValueError(f"silu_mul: gu must be (B, 2F), got {tuple(gu.shape)}")
    code = _act_code(act)
    B, F2 = gu.shape
    F = F2 // 2
    out = torch.empty((B, F), dtype=gu.dtype, device=gu.device) if out is None else out
    _last_contiguous(gu=gu, out=out)
    BLOCK = min(1024, _next_pow2(F))
    build()["act_mul"][(B, math.ceil(F / BLOCK))](gu, out, F, gu.stride(0), out.stride(0), ACT=code, BLOCK=BLOCK)
    return out


def silu_mul_ref(gu: torch.Tensor, act: str = "silu", out: torch.Tensor | None = None) -> torch.Tensor:
    """Pure-torch ``silu_mul`` (transformers' activations: F.silu, gelu(approximate='tanh'))."""
    code = _act_code(act)
    g, u = gu.chunk(2, dim=-1)
    a = torch.nn.functional.silu(g) if code == 0 else torch.nn.functional.gelu(g, approximate="tanh")
    r = a * u
    if out is None:
        return r
    return out.copy_(r)


__all__ = ["ACTIVATIONS", "available", "build", "decode_attention", "decode_attention_ref", "importable",
           "rope_cache_write", "rope_cache_write_ref", "silu_mul", "silu_mul_ref", "unavailable_reason"]
