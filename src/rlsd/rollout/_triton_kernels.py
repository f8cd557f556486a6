"""The @triton.jit kernels of rlsd.rollout.kernels (imported only by ``kernels.build()``; see that module for
the contract of each). Only basic ``tl`` builtins are used; sums and maxima are ``tl.reduce`` with the
combine functions below rather than ``tl.sum`` / ``tl.max`` / ``tl.zeros``, which are themselves
``@triton.jit`` functions of triton's standard library: those are compiled or interpreted according to
TRITON_INTERPRET when *triton* was first imported (inside a test process not under our control; e.g.
transformers imports triton), and a compiled one cannot be called from interpreted code, while these
kernels follow TRITON_INTERPRET when *this module* is imported."""

import os

import triton
import triton.language as tl

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _max(a, b):
    return tl.maximum(a, b)


# triton's own combine functions where they exist: the interpreter reduces with numpy for these (fast)
# and combines element by element in Python for any other.
_SUM = getattr(tl.standard, "_sum_combine", _add)
_MAX = getattr(tl.standard, "_elementwise_max", _max)


@triton.jit
def rope_cache_kernel(qkv, cos, sin, kc, vc, col_ptr, qo,
                      s_xb, s_xh, s_cb, s_sb, s_kb, s_kh, s_ks, s_vb, s_vh, s_vs, s_ob, s_oh,
                      HQ: tl.constexpr, HKV: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    d = tl.arange(0, BLOCK_D)
    m = d < D
    x = tl.load(qkv + b * s_xb + h * s_xh + d, mask=m, other=0.0).to(tl.float32)
    col = tl.load(col_ptr)
    if h < HQ + HKV:  # q or k head: rotate
        half = D // 2
        lower = d < half
        partner = tl.where(lower, d + half, d - half)
        xp = tl.load(qkv + b * s_xb + h * s_xh + partner, mask=m, other=0.0).to(tl.float32)
        c = tl.load(cos + b * s_cb + d, mask=m, other=0.0).to(tl.float32)
        s = tl.load(sin + b * s_sb + d, mask=m, other=0.0).to(tl.float32)
        r = x * c + tl.where(lower, -xp, xp) * s
        if h < HQ:
            tl.store(qo + b * s_ob + h * s_oh + d, r.to(qo.dtype.element_ty), mask=m)
        else:
            tl.store(kc + b * s_kb + (h - HQ) * s_kh + col * s_ks + d, r.to(kc.dtype.element_ty), mask=m)
    else:  # v head: copy
        tl.store(vc + b * s_vb + (h - HQ - HKV) * s_vh + col * s_vs + d, x.to(vc.dtype.element_ty), mask=m)


@triton.jit
def _attend(qv, kbase, vbase, lo, hi, s_ks, s_vs, scale, d, md, n, BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr,
            BLOCK_N: tl.constexpr, QK_PRECISION: tl.constexpr, PV_PRECISION: tl.constexpr):
    """Online softmax of one query group over the live columns [lo, hi] (every block holds at least one):
    the running max, sum and unnormalised output, float32, shared by the one-pass and split kernels."""
    m_i = tl.full((BLOCK_G,), float("-inf"), tl.float32)
    l_i = tl.full((BLOCK_G,), 0.0, tl.float32)
    acc = tl.full((BLOCK_G, BLOCK_D), 0.0, tl.float32)
    for n0 in range(lo, hi + 1, BLOCK_N):
        cols = n0 + n
        mn = cols <= hi
        kt = tl.load(kbase + cols[None, :] * s_ks + d[:, None], mask=md[:, None] & mn[None, :],
                     other=0.0).to(tl.float32)  # (BLOCK_D, BLOCK_N)
        s = tl.dot(qv, kt, input_precision=QK_PRECISION, out_dtype=tl.float32) * scale  # (BLOCK_G, BLOCK_N)
        s = tl.where(mn[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.reduce(s, 1, _MAX))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.reduce(p, 1, _SUM)
        v = tl.load(vbase + cols[:, None] * s_vs + d[None, :], mask=mn[:, None] & md[None, :],
                    other=0.0).to(tl.float32)  # (BLOCK_N, BLOCK_D)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=PV_PRECISION, out_dtype=tl.float32)
        m_i = m_new
    return m_i, l_i, acc


@triton.jit
def attention_kernel(q, kc, vc, start_ptr, col_ptr, out, S, window, scale,
                     s_qb, s_qh, s_kb, s_kh, s_ks, s_vb, s_vh, s_vs, s_ob, s_oh,
                     G: tl.constexpr, D: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr,
                     BLOCK_N: tl.constexpr, HAS_WINDOW: tl.constexpr, QK_PRECISION: tl.constexpr,
                     PV_PRECISION: tl.constexpr):
    # Both products are tl.dot (tensor cores on sm_80+) on float32 operands with a float32 accumulator: the G
    # query heads of a KV group padded to BLOCK_G >= 16 rows, K loaded transposed as (BLOCK_D, BLOCK_N).
    # QK_PRECISION / PV_PRECISION: "ieee" for a float32 cache; for 16-bit caches a bfloat16 operand is exact in
    # one TF32 pass ("tf32"), float16 and the float32 softmax weights P need three ("tf32x3", float32 accuracy).
    # (Operands stay float32 in registers: Triton's CPU interpreter multiplies 16-bit dot operands wrongly.)
    b = tl.program_id(0).to(tl.int64)
    hk = tl.program_id(1)
    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    mg = g < G
    md = d < D
    qh = hk * G + g
    qv = tl.load(q + b * s_qb + qh[:, None] * s_qh + d[None, :], mask=mg[:, None] & md[None, :],
                 other=0.0).to(tl.float32)  # (BLOCK_G, BLOCK_D)
    col = tl.load(col_ptr)
    hi = tl.minimum(col, S - 1)
    lo = tl.load(start_ptr + b)
    if HAS_WINDOW:
        lo = tl.maximum(lo, col - window + 1)
    m_i, l_i, acc = _attend(qv, kc + b * s_kb + hk * s_kh, vc + b * s_vb + hk * s_vh, lo, hi, s_ks, s_vs, scale,
                            d, md, n, BLOCK_G, BLOCK_D, BLOCK_N, QK_PRECISION, PV_PRECISION)
    o = tl.where(l_i[:, None] > 0, acc / tl.maximum(l_i, 1e-30)[:, None], 0.0)
    tl.store(out + b * s_ob + qh[:, None] * s_oh + d[None, :], o.to(out.dtype.element_ty),
             mask=mg[:, None] & md[None, :])


@triton.jit
def act_mul_kernel(gu, out, F, s_gb, s_ob, ACT: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    f = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = f < F
    g = tl.load(gu + b * s_gb + f, mask=m, other=0.0).to(tl.float32)
    u = tl.load(gu + b * s_gb + F + f, mask=m, other=0.0).to(tl.float32)
    if ACT == 0:  # silu; the exponent is capped (exp(80) is finite in float32; the result is ~0 there)
        a = g / (1.0 + tl.exp(tl.minimum(-g, 80.0)))
    else:  # gelu, tanh form: 0.5 g (1 + tanh(z)) = g / (1 + exp(-2 z)); tanh saturated beyond |z| = 20
        z = 0.7978845608028654 * (g + 0.044715 * g * g * g)
        z = tl.minimum(tl.maximum(z, -20.0), 20.0)
        a = g / (1.0 + tl.exp(-2.0 * z))
    tl.store(out + b * s_ob + f, (a * u).to(out.dtype.element_ty), mask=m)


@triton.jit
def attention_split_kernel(q, kc, vc, start_ptr, col_ptr, part_m, part_l, part_o, S, window, scale,
                           s_qb, s_qh, s_kb, s_kh, s_ks, s_vb, s_vh, s_vs,
                           G: tl.constexpr, D: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr,
                           BLOCK_N: tl.constexpr, CHUNK: tl.constexpr, HAS_WINDOW: tl.constexpr,
                           QK_PRECISION: tl.constexpr, PV_PRECISION: tl.constexpr):
    # flash-decoding's first pass: program (row, KV head, split) covers columns [split * CHUNK, + CHUNK) of
    # the live range and writes its running max, sum and unnormalised output (float32) for the combine pass.
    b = tl.program_id(0).to(tl.int64)
    hk = tl.program_id(1)
    sp = tl.program_id(2)
    nsp = tl.num_programs(2)
    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    mg = g < G
    md = d < D
    qh = hk * G + g
    qv = tl.load(q + b * s_qb + qh[:, None] * s_qh + d[None, :], mask=mg[:, None] & md[None, :],
                 other=0.0).to(tl.float32)
    col = tl.load(col_ptr)
    hi = tl.minimum(tl.minimum(col, S - 1), sp * CHUNK + CHUNK - 1)
    lo = tl.load(start_ptr + b)
    if HAS_WINDOW:
        lo = tl.maximum(lo, col - window + 1)
    lo = tl.maximum(lo, sp * CHUNK)
    m_i, l_i, acc = _attend(qv, kc + b * s_kb + hk * s_kh, vc + b * s_vb + hk * s_vh, lo, hi, s_ks, s_vs, scale,
                            d, md, n, BLOCK_G, BLOCK_D, BLOCK_N, QK_PRECISION, PV_PRECISION)
    row = (b * (tl.num_programs(1) * G) + qh) * nsp + sp  # part_m / part_l: (B, Hq, nsp); part_o: (.., D)
    tl.store(part_m + row, m_i, mask=mg)
    tl.store(part_l + row, l_i, mask=mg)
    tl.store(part_o + row[:, None] * D + d[None, :], acc, mask=mg[:, None] & md[None, :])


@triton.jit
def attention_combine_kernel(part_m, part_l, part_o, out, s_ob, s_oh, HQ: tl.constexpr, NSP: tl.constexpr,
                             D: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    # flash-decoding's second pass: one program per (row, query head) rescales the splits to a common max.
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    i = tl.arange(0, BLOCK_S)
    d = tl.arange(0, BLOCK_D)
    mi = i < NSP
    md = d < D
    base = (b * HQ + h) * NSP
    m = tl.load(part_m + base + i, mask=mi, other=float("-inf"))
    lsum = tl.load(part_l + base + i, mask=mi, other=0.0)
    o = tl.load(part_o + (base + i)[:, None] * D + d[None, :], mask=mi[:, None] & md[None, :], other=0.0)
    mx = tl.reduce(m, 0, _MAX)
    w = tl.where(m > float("-inf"), tl.exp(m - mx), 0.0)
    total = tl.reduce(lsum * w, 0, _SUM)
    r = tl.reduce(o * w[:, None], 0, _SUM)
    r = tl.where(total > 0, r / tl.maximum(total, 1e-30), 0.0)
    tl.store(out + b * s_ob + h * s_oh + d, r.to(out.dtype.element_ty), mask=md)
