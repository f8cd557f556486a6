"""The Triton kernels of rlsd.rollout compile for a GPU (sm_80 and sm_90, through PTX and ptxas to a cubin)
with the installed triton, without a GPU: catches what the interpreter does not check (types, layouts,
loop bounds, reductions). Skipped where triton or its NVIDIA backend is missing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from rlsd.rollout import kernels as K

pytestmark = [pytest.mark.skipif(not K.importable(), reason="triton is not installed (pip install triton)"),
              pytest.mark.filterwarnings("ignore:TRITON_DEFAULT_FP_FUSION")]


@pytest.fixture(scope="module")
def compiled_module():
    """A fresh, non-interpreted import of rollout/_triton_kernels.py (the engine's own copy may be interpreted)."""
    import os

    import triton

    old = os.environ.pop("TRITON_INTERPRET", None)
    try:
        if "nvidia" not in getattr(triton.backends, "backends", {}):
            pytest.skip("triton has no NVIDIA backend here")
        path = Path(K.__file__).with_name("_triton_kernels.py")
        spec = importlib.util.spec_from_file_location("_rlsd_triton_kernels_compiled", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        from triton.runtime.jit import JITFunction

        if not isinstance(triton.language.standard._sum_combine, JITFunction):
            pytest.skip("triton was first imported in interpreter mode in this process")
        yield mod
    finally:
        if old is not None:
            os.environ["TRITON_INTERPRET"] = old


def _compile(fn, types: dict, consts: dict, arch: int, cache: Path):
    import os

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = {n: ("constexpr" if n in consts else types.get(n, "i32")) for n in fn.arg_names}
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()})
    old = os.environ.get("TRITON_CACHE_DIR")
    os.environ["TRITON_CACHE_DIR"] = str(cache)
    try:
        return triton.compile(src, target=GPUTarget("cuda", arch, 32))
    finally:
        if old is None:
            os.environ.pop("TRITON_CACHE_DIR", None)
        else:
            os.environ["TRITON_CACHE_DIR"] = old


@pytest.mark.parametrize("dt", ["fp32", "bf16"])
def test_kernels_compile_for_sm80_and_sm90(compiled_module, dt, tmp_path):
    T = compiled_module
    p = "*" + dt
    jobs = [
        (T.rope_cache_kernel, dict(qkv=p, cos=p, sin=p, kc=p, vc=p, col_ptr="*i64", qo=p),
         dict(HQ=9, HKV=3, D=64, BLOCK_D=64)),
        (T.attention_kernel, dict(q=p, kc=p, vc=p, start_ptr="*i64", col_ptr="*i64", out=p, scale="fp32"),
         dict(G=3, D=64, BLOCK_G=16, BLOCK_D=64, BLOCK_N=K.BLOCK_N, HAS_WINDOW=True,
              **dict(zip(("QK_PRECISION", "PV_PRECISION"),
                         K._dot_precisions(torch.float32 if dt == "fp32" else torch.bfloat16))))),
        (T.attention_split_kernel, dict(q=p, kc=p, vc=p, start_ptr="*i64", col_ptr="*i64", part_m="*fp32",
                                        part_l="*fp32", part_o="*fp32", scale="fp32"),
         dict(G=3, D=64, BLOCK_G=16, BLOCK_D=64, BLOCK_N=K.BLOCK_N, CHUNK=2 * K.BLOCK_N, HAS_WINDOW=True,
              **dict(zip(("QK_PRECISION", "PV_PRECISION"),
                         K._dot_precisions(torch.float32 if dt == "fp32" else torch.bfloat16))))),
        (T.attention_combine_kernel, dict(part_m="*fp32", part_l="*fp32", part_o="*fp32", out=p),
         dict(HQ=9, NSP=5, D=64, BLOCK_S=8, BLOCK_D=64)),
        (T.act_mul_kernel, dict(gu=p, out=p), dict(ACT=0, BLOCK=1024)),
        (T.act_mul_kernel, dict(gu=p, out=p), dict(ACT=1, BLOCK=1024)),
    ]
    for arch in (80, 90):
        for fn, types, consts in jobs:
            k = _compile(fn, types, consts, arch, tmp_path)
            assert k.asm["cubin"] and f".target sm_{arch}" in k.asm["ptx"], (fn.__name__, arch)
