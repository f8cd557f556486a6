"""rlsd.rollout.kernels: each Triton kernel against its torch reference and against an independent formula
(complex rotation, scaled_dot_product_attention on expanded K/V with an explicit mask, float64 activations),
and the engine with kernels=triton against kernels=torch and a transformers forward.

The kernels run on CPU tensors in Triton's interpreter. TRITON_INTERPRET=1 is set by a module fixture for
this module's tests only (restored after): the kernels are built (their module imported) while it is set,
so they are interpreted however and whenever triton itself was imported (see rollout/_triton_kernels.py).
Skipped, with the reason, where triton is not installed."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

from rlsd.rollout import engine as E
from rlsd.rollout import kernels as K

pytestmark = pytest.mark.skipif(not K.importable(), reason="triton is not installed (pip install triton; the dev "
                                                            "extra has it): the kernels run in its interpreter")


@pytest.fixture(scope="module", autouse=True)
def interpreter():
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        if K._K is not None and not K._INTERPRETED:
            pytest.skip("the kernels were already built for a GPU in this process")
        K.build()
        yield
    finally:
        if old is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = old


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------
# rope + cache write
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("B,Hq,Hkv,D", [(5, 9, 3, 64), (3, 4, 2, 8), (2, 2, 2, 6)])
def test_rope_cache_write_matches_reference_and_complex_rotation(B, Hq, Hkv, D):
    g = _gen(0)
    S_max, col = 23, 13
    qkv = torch.randn(B, Hq + 2 * Hkv, D, generator=g)
    theta = torch.rand(B, D // 2, generator=g) * 40  # angles of the D/2 frequency pairs
    cos, sin = torch.cat([theta.cos()] * 2, -1), torch.cat([theta.sin()] * 2, -1)  # (B, D), as the engine's tables
    # the caches are layer slices of a 5-D tensor, as in the engine (non-trivial strides)
    k_all = torch.randn(3, B, Hkv, S_max, D, generator=g)
    v_all = torch.randn(3, B, Hkv, S_max, D, generator=g)
    k0, v0 = k_all.clone(), v_all.clone()
    q_out = torch.full((B, Hq, D), float("nan"))
    K.rope_cache_write(qkv, cos, sin, k_all[1], v_all[1], torch.tensor(col), q_out)

    k_ref, v_ref, q_ref = k0.clone(), v0.clone(), torch.empty(B, Hq, D)
    K.rope_cache_write_ref(qkv, cos, sin, k_ref[1], v_ref[1], torch.tensor([col]), q_ref)
    assert torch.allclose(q_out, q_ref, atol=1e-5) and torch.allclose(k_all, k_ref, atol=1e-5)
    assert torch.equal(v_all, v_ref)

    # independent: pair (i, i + D/2) is the complex number x_i + 1j x_{i+D/2}, turned by theta_i
    half = D // 2
    z = torch.complex(qkv[..., :half].double(), qkv[..., half:].double()) * torch.polar(
        torch.ones_like(theta).double(), theta.double())[:, None]
    rot = torch.cat([z.real, z.imag], -1).float()  # (B, Hq + 2 Hkv, D)
    assert (q_out - rot[:, :Hq]).abs().max().item() < 1e-5
    assert (k_all[1, :, :, col] - rot[:, Hq:Hq + Hkv]).abs().max().item() < 1e-5
    assert torch.equal(v_all[1, :, :, col], qkv[:, Hq + Hkv:])
    # nothing else was written: other columns and other layers are untouched
    keep = torch.ones(S_max, dtype=torch.bool)
    keep[col] = False
    assert torch.equal(k_all[1][:, :, keep], k0[1][:, :, keep]) and torch.equal(v_all[1][:, :, keep], v0[1][:, :, keep])
    assert torch.equal(k_all[[0, 2]], k0[[0, 2]]) and torch.equal(v_all[[0, 2]], v0[[0, 2]])


def test_rope_cache_write_bfloat16_rounds_once():
    g = _gen(1)
    B, Hq, Hkv, D = 4, 9, 3, 64
    qkv = torch.randn(B, Hq + 2 * Hkv, D, generator=g).bfloat16()
    theta = torch.rand(B, D // 2, generator=g) * 40
    cos, sin = torch.cat([theta.cos()] * 2, -1).bfloat16(), torch.cat([theta.sin()] * 2, -1).bfloat16()
    kc, vc = torch.zeros(B, Hkv, 8, D, dtype=torch.bfloat16), torch.zeros(B, Hkv, 8, D, dtype=torch.bfloat16)
    q = torch.empty(B, Hq, D, dtype=torch.bfloat16)
    K.rope_cache_write(qkv, cos, sin, kc, vc, torch.tensor(5), q)
    exact = torch.empty(B, Hq, D)
    K.rope_cache_write_ref(qkv.float(), cos.float(), sin.float(), torch.zeros(B, Hkv, 8, D),
                           torch.zeros(B, Hkv, 8, D), torch.tensor(5), exact)
    # float32 math, one conversion to bfloat16: within one bf16 ulp (2^-7 relative) of the float32 result
    # (Triton's interpreter truncates float32 -> bfloat16; a GPU rounds to nearest, half an ulp)
    assert ((q.float() - exact).abs() <= exact.abs() * 2 ** -7 + 1e-6).all()


# ----------------------------------------------------------------------------------------------
# decode attention
# ----------------------------------------------------------------------------------------------


def _sdpa_expanded(q, kc, vc, start, col, S, scale, window):
    """Independent reference: K/V expanded to every query head, an explicit boolean mask, torch's SDPA."""
    B, Hq, D = q.shape
    G = Hq // kc.shape[1]
    k = kc[:, :, :S].repeat_interleave(G, 1)  # (B, Hq, S, D)
    v = vc[:, :, :S].repeat_interleave(G, 1)
    c = torch.arange(S)
    mask = (c[None, :] >= start[:, None]) & (c[None, :] <= col)
    if window is not None:
        mask &= (col - c)[None, :] < window
    o = F.scaled_dot_product_attention(q[:, :, None].double(), k.double(), v.double(),
                                       attn_mask=mask[:, None, None, :], scale=scale)
    return o[:, :, 0].float()


CASES = [  # B, Hq, Hkv, D, S_max, S, col, starts
    (5, 9, 3, 64, 80, 71, 60, [0, 3, 33, 60, 17]),  # SmolLM2's heads, S not a multiple of BLOCK_N
    (3, 8, 2, 16, 40, 40, 39, [0, 39, 5]),  # col at the end
    (2, 4, 4, 8, 140, 136, 135, [1, 64]),  # G = 1, D < 16, more than two blocks
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("window", [None, 7, 40])
@pytest.mark.parametrize("blocks", [(64, 0), (16, 0), (64, 64), (16, 32)], ids=lambda b: f"block{b[0]}-split{b[1]}")
def test_decode_attention_matches_reference_and_sdpa(case, window, blocks, monkeypatch):
    monkeypatch.setattr(K, "BLOCK_N", blocks[0])
    monkeypatch.setattr(K, "SPLIT_CHUNK", blocks[1])  # 0: one pass; else flash-decoding splits + combine
    B, Hq, Hkv, D, S_max, S, col, starts = case
    g = _gen(2)
    q = torch.randn(B, Hq, D, generator=g)
    kc = torch.randn(B, Hkv, S_max, D, generator=g) * 2
    vc = torch.randn(B, Hkv, S_max, D, generator=g)
    start = torch.tensor(starts)
    scale = D ** -0.5
    out = torch.full_like(q, float("nan"))
    K.decode_attention(q, kc, vc, start, torch.tensor([col]), S, scale, window, out)
    ref = torch.empty_like(q)
    K.decode_attention_ref(q, kc, vc, start, torch.tensor(col), S, scale, window, ref)
    indep = _sdpa_expanded(q, kc, vc, start, col, S, scale, window)
    assert (out - ref).abs().max().item() < 1e-5
    assert (out - indep).abs().max().item() < 1e-5
    # only live columns are read: poisoning every other column (and columns >= S) changes nothing
    c = torch.arange(S_max)
    live = (c[None, :] >= start[:, None]) & (c[None, :] <= col) & (c[None, :] < S)
    if window is not None:
        live &= (col - c)[None, :] < window
    dead = ~live[:, None, :, None].expand_as(kc)
    out2 = torch.empty_like(q)
    K.decode_attention(q, kc.masked_fill(dead, float("nan")), vc.masked_fill(dead, float("inf")), start,
                       torch.tensor(col), S, scale, window, out2)
    assert torch.equal(out2, out)


def test_decode_attention_row_without_live_columns_is_zero_and_bf16_output():
    B, Hq, Hkv, D = 2, 9, 3, 64
    g = _gen(3)
    q = torch.randn(B, Hq, D, generator=g).bfloat16()
    kc = torch.randn(B, Hkv, 16, D, generator=g).bfloat16()
    vc = torch.randn(B, Hkv, 16, D, generator=g).bfloat16()
    start = torch.tensor([2, 11])  # row 1 starts after col: nothing to attend to
    out = torch.empty_like(q)
    K.decode_attention(q, kc, vc, start, torch.tensor(9), 16, D ** -0.5, None, out)
    assert out.dtype == torch.bfloat16 and torch.equal(out[1], torch.zeros_like(out[1]))
    exact = _sdpa_expanded(q[:1].float(), kc[:1].float(), vc[:1].float(), start[:1], 9, 16, D ** -0.5, None)
    assert ((out[0].float() - exact[0]).abs() <= exact[0].abs() * 2 ** -7 + 1e-6).all()  # one bf16 conversion


def test_kernels_reject_bad_inputs_clearly():
    q = torch.zeros(2, 9, 64)
    kc = torch.zeros(2, 3, 16, 64)
    with pytest.raises(ValueError, match="col must be a one-element long tensor"):
        K.decode_attention(q, kc, kc, torch.zeros(2, dtype=torch.long), torch.tensor([1, 2]), 16, 0.1, None, q.clone())
    with pytest.raises(ValueError, match="0 < S <= S_max"):
        K.decode_attention(q, kc, kc, torch.zeros(2, dtype=torch.long), torch.tensor(1), 17, 0.1, None, q.clone())
    with pytest.raises(ValueError, match="last dimension must be contiguous"):
        K.decode_attention(q, torch.zeros(2, 3, 16, 128)[..., ::2], kc, torch.zeros(2, dtype=torch.long),
                           torch.tensor(1), 16, 0.1, None, q.clone())
    with pytest.raises(ValueError, match="activation 'relu' has no kernel"):
        K.silu_mul(torch.zeros(2, 8), "relu")


# ----------------------------------------------------------------------------------------------
# act(g) * u
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("F_", [1536, 7, 2048])
@pytest.mark.parametrize("act", ["silu", "gelu_pytorch_tanh"])
def test_silu_mul_matches_reference_and_float64_formula(F_, act):
    gu = torch.randn(3, 2 * F_, generator=_gen(4)) * 4
    got = K.silu_mul(gu, act)
    ref = K.silu_mul_ref(gu, act)
    g, u = gu.double().chunk(2, -1)
    if act == "silu":
        a = g / (1 + torch.exp(-g))
    else:
        a = 0.5 * g * (1 + torch.tanh(math.sqrt(2 / math.pi) * (g + 0.044715 * g ** 3)))
    assert got.shape == (3, F_) and got.dtype == gu.dtype
    assert ((got - ref).abs() <= 1e-5 * (1 + ref.abs())).all()  # float32: 1e-5, relative above 1
    assert ((got.double() - a * u).abs() <= 1e-5 * (1 + (a * u).abs())).all()


# ----------------------------------------------------------------------------------------------
# the engine with kernels=triton
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("setting", ["triton", "mixed"])
@pytest.mark.parametrize("kind", ["qwen2", "mistral_window"])  # 2 layers; q/k/v biases; a 7-column window
def test_engine_with_triton_kernels_equals_torch_kernels_and_forward(kind, setting):
    from tests.rollout.test_engine import PROMPTS, tiny

    model, tok = tiny(kind)
    prompts = PROMPTS[:3]
    ref = E.sample(model, tok, prompts, max_new_tokens=8, greedy=True, kernels="torch")
    eng = E.get_engine(model, bucket=16, kernels=setting)  # a 16-column bucket: S > col + 1
    assert eng.use_kernels == setting and eng.act_name == "silu"
    got = E.sample(model, tok, prompts, max_new_tokens=8, greedy=True, kernels=setting)
    assert ref.prompt_mask.sum(1).unique().numel() == 3  # mixed prompt lengths
    assert torch.equal(got.completion_ids, ref.completion_ids)
    assert torch.equal(got.completion_mask, ref.completion_mask)
    assert (got.logps - ref.logps).abs().max().item() < 1e-5
    tf = E.teacher_forced_logps(model, got.prompt_ids, got.prompt_mask, got.completion_ids, got.completion_mask,
                                greedy=True)
    assert (got.logps - tf).abs().max().item() < 1e-5
    E.get_engine(model, bucket=0)  # back to the default for other users of this model


def test_engine_kernel_setting_auto_on_cpu_is_torch_and_bad_values_fail():
    from tests.rollout.test_engine import tiny

    model, _ = tiny("llama")
    eng = E.Engine(model)
    assert eng.kernels_setting == "auto" and not eng.use_kernels  # CPU: torch ops unless asked (CUDA: triton)
    eng.set_kernels("triton")
    assert eng.use_kernels == "triton"
    eng.set_kernels("mixed")
    assert eng.use_kernels == "mixed"
    eng.set_kernels("torch")
    assert not eng.use_kernels
    with pytest.raises(ValueError, match="auto | triton | mixed | torch"):
        eng.set_kernels("cuda")
