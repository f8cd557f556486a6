"""rlsd's own rollout engine: static KV cache, one prefill, CUDA-graph decode steps, exact log-probs.

For the decoder-only families the trainer supports (transformers' Llama, Qwen2 and Mistral classes) this
module runs the model's forward pass itself, over the model's own live parameters:

- a static, preallocated KV cache of shape (layers, batch, kv_heads, max_len, head_dim) for K and for V;
- one prefill pass over left-padded prompts of different lengths (position = column - first real column,
  as ``generate`` does; padding columns are never attended to);
- decode steps that attend only to the live columns ``[start_b, col]`` of a cache slice ``[:S]``, where S
  is the exact length on CPU and a cache-length bucket on CUDA; grouped KV heads are used as they are
  (the query heads of one group are batched against their shared K/V, never expanded);
- fused QKV and gate/up projection weights, allocated once (rebuilt only when shapes, dtype or device
  change) and refilled from the live parameters at the start of every ``sample`` call (one device copy
  of those matrices per rollout phase; every other weight is read in place), so there is no weight sync;
- temperature / top-k / top-p filtering, the sample (Gumbel-max) and its log-prob in one function;
- per-sequence stop at EOS (on the device) or at a stop string (checked on the host at the early-exit
  checkpoints); early exit when every row has stopped, checked every ``check_every`` steps, so there is
  one host sync per ``check_every`` steps, not one per step;
- on CUDA, one decode step (layers, head, sampling, cache write, counters) captured with
  ``torch.cuda.graph`` per (batch bucket, cache-length bucket, sampling setting); the column and the
  output index live in device tensors that the captured step advances itself, so a decode loop is a
  sequence of ``replay()`` calls. Checked on an H200 (benchmarks/gpu_rollout_check.sh: graphs equal eager,
  greedy tokens equal generate in float32, bf16 log-prob gap 4.6e-3 mean).
- decode kernels (``rollout.kernels``: auto | torch | mixed | triton; ``Engine.set_kernels``; auto = triton
  on CUDA, the fastest on an H200, torch ops elsewhere): ``mixed`` uses the Triton rope + cache
  write and act * mul kernels around torch's attention; with ``triton`` a decode layer is 9 launches: RMSNorm, QKV GEMM,
  ``rlsd.rollout.kernels.rope_cache_write`` (rotation + cache write), ``decode_attention`` (grouped KV
  heads, float32 online softmax over the live columns only), O GEMM + residual, RMSNorm, gate/up GEMM,
  ``silu_mul``, down GEMM + residual; with ``torch`` ~21 (counted on CPU: 659 vs 293 launches per step
  for the 135M shape, ``benchmarks/results/rollout_ops.md``). The prefill is the same either way. The
  kernels are tested on CPU in Triton's interpreter (float32: same greedy tokens, log-probs within 1e-5)
  and compiled for sm_80 / sm_90 in CI; on an H200 they agree with the torch ops (log-probs within 1e-5 in
  float32), and the 135M decode step takes 2.35 ms (triton), 2.80 (mixed), 3.46 (torch) at batch 256
  (benchmarks/results/gpu_h200_2026-11-30).

ZeRO: under DeepSpeed ZeRO 0-2 every rank holds full parameters, which are read in place (a
DeepSpeedEngine is unwrapped through ``.module``). Under ZeRO-3 parameters are partitioned: ``sample``
gathers them once for the whole rollout phase (``deepspeed.zero.GatheredParameters`` around all chunks;
the fused buffers are refilled inside it) and releases them after; because the gathered tensors may come
back at other addresses, the parameter address fingerprint changes and the CUDA graphs are re-captured
(a few captures per phase) whenever it does.

Departures from ``generate`` (all deliberate):
- ``logps`` are the log-probs of the sampled tokens under the distribution actually sampled from, i.e.
  ``log_softmax(filter(logits / temperature))``; with ``greedy=True`` they are under the unmodified model
  distribution ``log_softmax(logits)`` (a greedy "distribution" is a point mass and gives no signal).
- The random stream differs from ``generate``'s (Gumbel-max over the filtered logits instead of
  ``multinomial``), so sampled tokens match ``generate`` in distribution, not draw for draw; greedy tokens
  match exactly (tested in float32).
- A stop string ends a row at the token that completes it (that token is kept and unmasked, like EOS).
- On CUDA the RMSNorm is ``torch.nn.functional.rms_norm`` (one kernel) and attention scores are computed
  in float32 where ``bmm(out_dtype=float32)`` exists; on CPU the RMSNorm follows transformers' formula and
  16-bit scores are upcast to float32. Measured on CPU in bfloat16 (2-layer 135M-width model, larger
  init): mean |engine - forward| 0.013 per token, against 0.007 for ``generate``'s own logits.
  In bfloat16 the log-probs therefore differ from a transformers forward by rounding only.

Shapes: N = rollouts, B = rows of one engine batch (N padded up to a bucket), P = prompt columns,
T = new tokens, V = vocabulary, L = layers, Hq / Hkv = query / KV heads, G = Hq // Hkv, D = head_dim.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from rlsd.rollout import Rollout, encode_prompts

STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


# ----------------------------------------------------------------------------------------------
# Which models
# ----------------------------------------------------------------------------------------------


def _unwrap(model: Any) -> Any:
    """The HF causal LM inside a DeepSpeedEngine / DDP wrapper (``.module``), or the model itself."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


def why_unsupported(model: Any) -> str | None:
    """None when the engine can run ``model``; otherwise the reason, in words."""
    m = _unwrap(model)
    try:
        from transformers import LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM
    except ImportError as e:  # pragma: no cover
        return f"transformers lacks a supported class ({e})"
    if not isinstance(m, (LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM)):
        return (f"model class {type(m).__name__} is not one of LlamaForCausalLM / Qwen2ForCausalLM / "
                "MistralForCausalLM (use rollout.engine=generate)")
    cfg = m.config
    rope = getattr(cfg, "rope_parameters", None) or {}
    if isinstance(rope, dict) and any(isinstance(v, dict) for v in rope.values()):
        return "per-layer-type rope parameters are not supported"
    rope_type = rope.get("rope_type", "default") if isinstance(rope, dict) else "default"
    if rope_type not in STATIC_ROPE_TYPES:
        return f"rope_type {rope_type!r} changes with the sequence length; supported: {STATIC_ROPE_TYPES}"
    if getattr(cfg, "quantization_config", None) is not None or getattr(m, "hf_quantizer", None) is not None:
        return "quantized models are not supported"
    if cfg.num_attention_heads % cfg.num_key_value_heads:
        return f"num_attention_heads {cfg.num_attention_heads} is not a multiple of num_key_value_heads"
    for p in m.parameters():
        if not (p.is_floating_point() and p.dtype in (torch.float32, torch.bfloat16, torch.float16)):
            return f"parameter dtype {p.dtype} is not float32/bfloat16/float16"
        if p.device.type == "meta":
            return "parameters are on the meta device"
    rot = getattr(m.model, "rotary_emb", None)
    if rot is None or not hasattr(rot, "inv_freq"):
        return "the model has no rotary_emb.inv_freq buffer"
    return None


def supports(model: Any) -> bool:
    """True for transformers' Llama / Qwen2 / Mistral causal LMs with static RoPE (default, linear, llama3,
    yarn), any GQA ratio, tied or untied embeddings, q/k/v biases, and sliding windows (exact per layer)."""
    return why_unsupported(model) is None


# ----------------------------------------------------------------------------------------------
# Sampling and its log-prob (pure)
# ----------------------------------------------------------------------------------------------


def filter_logits(z: torch.Tensor, *, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Top-k then top-p (nucleus) filtering, as transformers' warpers do: removed entries become -inf.

    z: (B, V) float logits (already divided by the temperature). top_k keeps every entry >= the k-th
    largest (ties kept); top_p keeps, in descending order, every entry whose preceding mass is < top_p
    (the smallest set with mass >= top_p; the most likely entry is always kept). Returns (B, V).
    """
    V = z.shape[-1]
    if 0 < top_k < V:
        kth = torch.topk(z, top_k, dim=-1).values[..., -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    if top_p < 1.0:
        sz, si = torch.sort(z, dim=-1, descending=True)
        p = torch.softmax(sz, dim=-1)
        before = p.cumsum(-1) - p
        remove = torch.zeros_like(before, dtype=torch.bool).scatter_(-1, si, before >= top_p)
        z = z.masked_fill(remove, float("-inf"))
    return z


def sample_from_logits(logits: torch.Tensor, *, greedy: bool, temperature: float = 1.0, top_k: int = 0,
                       top_p: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row and its log-prob under the distribution it was drawn from.

    logits: (B, V) float32. Returns tok (B,) long and logp (B,) float32. Sampling is Gumbel-max over
    ``filter_logits(logits / temperature)`` with noise ``-log(E)``, E ~ Exp(1) from torch's default
    generator (graph-safe on CUDA); greedy is argmax with logp under ``log_softmax(logits)``.
    """
    if greedy:
        tok = logits.argmax(-1)
        z = logits
    else:
        z = logits / temperature if temperature != 1.0 else logits
        z = filter_logits(z, top_k=top_k, top_p=top_p)
        e = torch.empty_like(z).exponential_()
        tok = (z - e.clamp_min_(1e-30).log()).argmax(-1)
    logp = z.gather(-1, tok[:, None]).squeeze(-1) - torch.logsumexp(z, dim=-1)
    return tok, logp


# ----------------------------------------------------------------------------------------------
# Weights: live references plus fused buffers
# ----------------------------------------------------------------------------------------------


@dataclass
class _Layer:
    ln1: torch.Tensor
    wqkv: torch.Tensor  # ((Hq + 2 Hkv) D, d) engine buffer, refilled from q/k/v each sample()
    bqkv: torch.Tensor | None
    wo: torch.Tensor  # live
    bo: torch.Tensor | None
    ln2: torch.Tensor
    wgu: torch.Tensor  # (2 I, d) engine buffer, refilled from gate/up each sample()
    bgu: torch.Tensor | None
    wd: torch.Tensor  # live
    bd: torch.Tensor | None
    act: Any
    window: int | None
    src_qkv: tuple = ()
    src_bqkv: tuple = ()
    src_gu: tuple = ()
    src_bgu: tuple = ()


def _fill(buf: torch.Tensor | None, parts: list[torch.Tensor | None]) -> torch.Tensor | None:
    if buf is None:
        return None
    torch.cat([p.detach() for p in parts], dim=0, out=buf)
    return buf


@dataclass
class _State:
    """Static device buffers of one engine batch size; CUDA graphs point into them."""

    B: int
    S_max: int
    k: torch.Tensor  # (L, B, Hkv, S_max, D)
    v: torch.Tensor  # (L, B, Hkv, S_max, D)
    tok: torch.Tensor  # (B,) token fed to the next decode step
    start: torch.Tensor  # (B,) first real column of each row
    col: torch.Tensor  # (1,) cache column the next decode step writes
    t: torch.Tensor  # (1,) output index the next sampled token goes to
    done: torch.Tensor  # (B,) bool
    out_ids: torch.Tensor  # (B, S_max) long
    out_lp: torch.Tensor  # (B, S_max) float32
    out_live: torch.Tensor  # (B, S_max) bool
    cols: torch.Tensor  # (S_max,) arange
    graphs: dict = field(default_factory=dict)
    pool: Any = None


class Engine:
    """Runs one supported model. Build with ``get_engine(model)`` (cached per model object)."""

    def __init__(self, model: Any, *, bucket: int | None = None, use_graphs: bool | None = None,
                 check_every: int = 8, kernels: str = "auto"):
        reason = why_unsupported(model)
        if reason is not None:
            raise ValueError(f"rollout engine 'graph' cannot run this model: {reason}")
        self.model = _unwrap(model)
        cfg = self.model.config
        self.cfg = cfg
        self.L = cfg.num_hidden_layers
        self.Hq = cfg.num_attention_heads
        self.Hkv = cfg.num_key_value_heads
        self.G = self.Hq // self.Hkv
        self.D = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.scale = self.D ** -0.5
        self.eps = cfg.rms_norm_eps
        self.check_every = max(1, int(check_every))
        emb = self.model.model.embed_tokens.weight
        self.device, self.dtype = emb.device, emb.dtype
        on_cuda = self.device.type == "cuda"
        self.bucket = bucket if bucket is not None else (64 if on_cuda else 0)
        self.use_graphs = on_cuda if use_graphs is None else (use_graphs and on_cuda)
        self.fused_rms = on_cuda and hasattr(F, "rms_norm")
        # float32 attention scores for 16-bit models: bmm(out_dtype=float32) on CUDA where it exists (no extra
        # traffic); on CPU the q / K slices are upcast ("upcast"); else scores are rounded to the model dtype.
        if on_cuda:
            self.bmm_fp32: bool | str = _probe_bmm_out_dtype(self.device, self.dtype)
        else:
            self.bmm_fp32 = "upcast" if self.dtype != torch.float32 else False
        self.layers: list[_Layer] = []
        self._shape_key: tuple | None = None
        self._fingerprint: tuple | None = None
        self._rope: tuple[torch.Tensor, torch.Tensor] | None = None
        self.state: _State | None = None
        self.kernels_setting, self.use_kernels = "", False  # use_kernels: False, "triton" or "mixed"
        self.set_kernels(kernels)

    def set_kernels(self, setting: str) -> None:
        """``torch``: torch ops; ``triton``: every decode kernel of rlsd.rollout.kernels; ``mixed``: the
        Triton rope + cache write and act * mul kernels with torch's attention; ``auto``: triton on CUDA where
        Triton runs, torch ops otherwise. Measured on an H200, 135M shape, bf16, batch 256 (1024): triton
        2.35 ms (5.68) per decode step, mixed 2.80 (6.60), torch 3.46 (7.36)
        (benchmarks/results/gpu_h200_2026-11-30). Triton settings raise, naming the fix, where
        the kernels cannot run (on CPU only in Triton's interpreter, for tests). Captured graphs are dropped
        on change."""
        from rlsd.rollout import kernels as K

        if setting not in ("auto", "triton", "mixed", "torch"):
            raise ValueError(f"rollout.kernels must be one of auto | triton | mixed | torch, got {setting!r}")
        if setting == self.kernels_setting:
            return
        if setting in ("triton", "mixed") and not K.available(self.device):
            raise ValueError(f"rollout.kernels={setting} cannot run on {self.device}: {K.unavailable_reason(self.device)}")
        if setting == "auto":
            use = "triton" if self.device.type == "cuda" and K.available(self.device) else False
        else:
            use = setting if setting in ("triton", "mixed") else False
        self.kernels_setting = setting
        if use != self.use_kernels:
            self.use_kernels = use
            self._drop_graphs()
        self.act_name = self._act_name()

    def _act_name(self) -> str | None:
        """The ``silu_mul`` kernel's name for the model's activation, or None (then the torch op is used)."""
        from rlsd.rollout import kernels as K

        act = getattr(self.cfg, "hidden_act", None)
        return act if act in K.ACTIVATIONS else None

    # --- weights ---------------------------------------------------------------------------

    def _windows(self) -> list[int | None]:
        cfg = self.cfg
        w = getattr(cfg, "sliding_window", None)
        types = getattr(cfg, "layer_types", None)
        if types is not None and getattr(cfg, "model_type", "") == "qwen2":
            return [w if t == "sliding_attention" else None for t in types]
        if getattr(cfg, "model_type", "") == "mistral":
            return [w] * self.L
        return [None] * self.L

    def refresh(self) -> None:
        """(Re)build the fused buffers when shapes change and refill them from the live parameters."""
        m = self.model
        key = tuple((tuple(p.shape), p.dtype, p.device) for p in m.parameters())
        if key != self._shape_key:
            self.layers = []
            for i, layer in enumerate(m.model.layers):
                a, mlp = layer.self_attn, layer.mlp
                qkv = [a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]
                bq = [a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]
                gu = [mlp.gate_proj.weight, mlp.up_proj.weight]
                bgu = [mlp.gate_proj.bias, mlp.up_proj.bias]
                has_bq, has_bgu = bq[0] is not None, bgu[0] is not None

                def alloc(parts):
                    return torch.empty((sum(p.shape[0] for p in parts), *parts[0].shape[1:]),
                                       dtype=parts[0].dtype, device=parts[0].device)

                self.layers.append(_Layer(
                    ln1=layer.input_layernorm.weight, wqkv=alloc(qkv), bqkv=alloc(bq) if has_bq else None,
                    wo=a.o_proj.weight, bo=a.o_proj.bias, ln2=layer.post_attention_layernorm.weight,
                    wgu=alloc(gu), bgu=alloc(bgu) if has_bgu else None, wd=mlp.down_proj.weight,
                    bd=mlp.down_proj.bias, act=mlp.act_fn, window=None,
                    src_qkv=tuple(qkv), src_bqkv=tuple(bq) if has_bq else (), src_gu=tuple(gu),
                    src_bgu=tuple(bgu) if has_bgu else ()))
            for lay, w in zip(self.layers, self._windows()):
                lay.window = w
            self._shape_key = key
            self._rope = None
            self._drop_graphs()
        with torch.no_grad():
            for lay in self.layers:
                _fill(lay.wqkv, list(lay.src_qkv))
                _fill(lay.bqkv, list(lay.src_bqkv))
                _fill(lay.wgu, list(lay.src_gu))
                _fill(lay.bgu, list(lay.src_bgu))
        # Graphs hold the addresses of the live weights they read; re-capture when any moved.
        fp = tuple(p.data_ptr() for p in m.parameters())
        if fp != self._fingerprint:
            self._fingerprint = fp
            self._drop_graphs()

    def _drop_graphs(self) -> None:
        if self.state is not None:
            self.state.graphs.clear()

    def _rope_tables(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape (n, D) in the model dtype, from the model's live inv_freq (transformers'
        formula: fp32 angles, times attention_scaling, cast to the activation dtype)."""
        if self._rope is None or self._rope[0].shape[0] < n:
            rot = self.model.model.rotary_emb
            inv = rot.inv_freq.to(device=self.device, dtype=torch.float32)
            pos = torch.arange(n, device=self.device, dtype=torch.float32)
            freqs = pos[:, None] * inv[None, :]
            emb = torch.cat((freqs, freqs), dim=-1)
            s = float(getattr(rot, "attention_scaling", 1.0))
            self._rope = ((emb.cos() * s).to(self.dtype), (emb.sin() * s).to(self.dtype))
        return self._rope

    # --- building blocks ---------------------------------------------------------------------

    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.fused_rms:
            return F.rms_norm(x, (x.shape[-1],), w, self.eps)
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return w * h.to(x.dtype)

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rot * sin

    @staticmethod
    def _linear_res(res: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        """res + x @ w.T (+ b), one GEMM with the residual in its epilogue when there is no bias."""
        if b is None and x.dim() == 2:
            return torch.addmm(res, x, w.t())
        return res + F.linear(x, w, b)

    # --- prefill -----------------------------------------------------------------------------

    def _prefill(self, st: _State, ids: torch.Tensor, mask: torch.Tensor, rep: int = 1) -> torch.Tensor:
        """Run the (B, P) left-padded prompts, fill cache columns [0, P), return last logits (B, V) fp32.

        With ``rep`` > 1 the first n = (B // rep) * rep rows come in groups of ``rep`` identical prompts
        (the samples of one prompt): each group's prompt is run once and its keys / values are copied to
        the group's rows, ``rep`` times less prefill work. Rows past n (bucket padding) are left as they are.
        """
        full_B = ids.shape[0]
        n_rows = (full_B // rep) * rep
        if rep > 1:
            ids, mask = ids[:n_rows:rep], mask[:n_rows:rep]
        B, P = ids.shape
        Hq, Hkv, D = self.Hq, self.Hkv, self.D
        start = st.start[:n_rows:rep] if rep > 1 else st.start
        pos = (mask.long().cumsum(-1) - 1).clamp_(min=0)  # (B, P), generate's position ids
        cos_t, sin_t = self._rope_tables(st.S_max)
        cos, sin = cos_t[pos][:, None], sin_t[pos][:, None]  # (B, 1, P, D)
        c = torch.arange(P, device=self.device)
        causal = c[None, :] <= c[:, None]  # (P, P) [query, key]
        real_key = c[None, None, :] >= start[:, None, None]  # (B, 1, P)
        diag = torch.eye(P, dtype=torch.bool, device=self.device)
        base = (causal[None] & real_key) | diag[None]  # (B, P, P): pad queries attend to themselves only
        masks: dict[int | None, torch.Tensor] = {}
        x = F.embedding(ids, self.model.model.embed_tokens.weight)  # (B, P, d)
        for li, lay in enumerate(self.layers):
            if lay.window not in masks:
                m_ = base if lay.window is None else base & ((c[:, None] - c[None, :]) < lay.window)[None]
                masks[lay.window] = m_[:, None]  # (B, 1, P, P)
            h = self._rms(x, lay.ln1)
            qkv = F.linear(h, lay.wqkv, lay.bqkv).view(B, P, Hq + 2 * Hkv, D).transpose(1, 2)
            q = self._rotate(qkv[:, :Hq], cos, sin)
            k = self._rotate(qkv[:, Hq:Hq + Hkv], cos, sin)
            v = qkv[:, Hq + Hkv:]
            if rep > 1:
                st.k[li, :n_rows, :, :P] = k.repeat_interleave(rep, 0)
                st.v[li, :n_rows, :, :P] = v.repeat_interleave(rep, 0)
            else:
                st.k[li, :, :, :P] = k
                st.v[li, :, :, :P] = v
            o = F.scaled_dot_product_attention(q, k, v.contiguous(), attn_mask=masks[lay.window],
                                               scale=self.scale, enable_gqa=Hq != Hkv)
            o = o.transpose(1, 2).reshape(B, P, Hq * D)
            x = x + F.linear(o, lay.wo, lay.bo)
            h = self._rms(x, lay.ln2)
            gu = F.linear(h, lay.wgu, lay.bgu)
            g, u = gu.chunk(2, dim=-1)
            x = x + F.linear(lay.act(g) * u, lay.wd, lay.bd)
        h = self._rms(x[:, -1], self.model.model.norm.weight)
        logits = F.linear(h, self.model.lm_head.weight, self.model.lm_head.bias).float()
        if rep > 1:
            logits = logits.repeat_interleave(rep, 0)
            if n_rows < full_B:  # bucket padding rows: never sampled from (done), any finite logits do
                logits = torch.cat([logits, logits[:1].expand(full_B - n_rows, -1)])
        return logits

    # --- one decode step (eager on CPU, captured on CUDA) -------------------------------------

    def _emit(self, st: _State, logits: torch.Tensor, samp: tuple, eos: torch.Tensor, pad_id: int) -> None:
        """Sample from logits (B, V) fp32, write the token / logp / live flag at output index st.t, update
        tok and done, advance st.t. No host sync."""
        greedy, temperature, top_k, top_p = samp
        tok, lp = sample_from_logits(logits, greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p)
        live = ~st.done
        tok = tok.masked_fill(~live, pad_id)
        lp = lp.masked_fill(~live, 0.0)
        st.out_ids.index_copy_(1, st.t, tok[:, None])
        st.out_lp.index_copy_(1, st.t, lp[:, None])
        st.out_live.index_copy_(1, st.t, live[:, None])
        if eos.numel():
            st.done |= (tok[:, None] == eos[None, :]).any(-1) & live
        st.tok.copy_(tok)
        st.t.add_(1)

    def _decode_step(self, st: _State, S: int, samp: tuple, eos: torch.Tensor, pad_id: int) -> None:
        """Feed st.tok at cache column st.col (attending to columns [start_b, col] of the first S), sample
        the next token. S >= col + 1 is a Python int (a cache-length bucket on CUDA)."""
        B, Hq, Hkv, G, D = st.B, self.Hq, self.Hkv, self.G, self.D
        col = st.col
        pos = (col - st.start).clamp_(min=0)  # (B,)
        cos_t, sin_t = self._rope_tables(st.S_max)
        cos = cos_t.index_select(0, pos)[:, None]  # (B, 1, D)
        sin = sin_t.index_select(0, pos)[:, None]
        if self.use_kernels == "triton":
            self._decode_layers_triton(st, S, cos[:, 0], sin[:, 0], samp, eos, pad_id)
            return
        mixed = self.use_kernels == "mixed"
        if mixed:
            from rlsd.rollout import kernels as K

            q_rot = torch.empty((B, Hq, D), dtype=self.dtype, device=self.device)
        cols = st.cols[:S]
        allowed = (cols[None, :] >= st.start[:, None]) & (cols[None, :] <= col)  # (B, S)
        biases: dict[int | None, torch.Tensor] = {}
        x = F.embedding(st.tok, self.model.model.embed_tokens.weight)  # (B, d)
        for li, lay in enumerate(self.layers):
            if lay.window not in biases:
                a_ = allowed if lay.window is None else allowed & ((col - cols)[None, :] < lay.window)
                biases[lay.window] = torch.zeros(a_.shape, device=self.device).masked_fill_(
                    ~a_, float("-inf"))[:, None, None, :]  # (B, 1, 1, S) fp32
            h = self._rms(x, lay.ln1)
            qkv = (torch.addmm(lay.bqkv, h, lay.wqkv.t()) if lay.bqkv is not None else h @ lay.wqkv.t())
            qkv = qkv.view(B, Hq + 2 * Hkv, D)
            if mixed:  # rotation and cache write in one kernel
                K.rope_cache_write(qkv, cos[:, 0], sin[:, 0], st.k[li], st.v[li], col, q_rot)
                q = q_rot.view(B, Hkv, G, D)
            else:
                qk = self._rotate(qkv[:, :Hq + Hkv], cos, sin)  # (B, Hq + Hkv, D)
                st.k[li].index_copy_(2, col, qk[:, Hq:, None, :])
                st.v[li].index_copy_(2, col, qkv[:, Hq + Hkv:, None, :])
                q = qk[:, :Hq].reshape(B, Hkv, G, D)
            kc = st.k[li, :, :, :S]  # (B, Hkv, S, D) view
            vc = st.v[li, :, :, :S]
            if self.bmm_fp32 == "upcast":
                s = torch.matmul(q.float(), kc.float().transpose(-1, -2))
            elif self.bmm_fp32:
                s = torch.bmm(q.reshape(B * Hkv, G, D), kc.reshape(B * Hkv, S, D).transpose(1, 2),
                              out_dtype=torch.float32).view(B, Hkv, G, S)
            else:
                s = torch.matmul(q, kc.transpose(-1, -2)).float()  # (B, Hkv, G, S)
            p = torch.softmax(s * self.scale + biases[lay.window], dim=-1).to(self.dtype)
            o = torch.matmul(p, vc).reshape(B, Hq * D)  # (B, Hkv, G, D) -> (B, Hq D)
            x = self._linear_res(x, o, lay.wo, lay.bo)
            h = self._rms(x, lay.ln2)
            gu = (torch.addmm(lay.bgu, h, lay.wgu.t()) if lay.bgu is not None else h @ lay.wgu.t())
            if mixed and self.act_name is not None:
                a = K.silu_mul(gu, self.act_name)
            else:
                g, u = gu.chunk(2, dim=-1)
                a = lay.act(g) * u
            x = self._linear_res(x, a, lay.wd, lay.bd)
        self._finish_step(st, x, samp, eos, pad_id)

    def _finish_step(self, st: _State, x: torch.Tensor, samp: tuple, eos: torch.Tensor, pad_id: int) -> None:
        """Final norm, head, sample / emit, advance the column. x: (B, d) the last layer's output."""
        h = self._rms(x, self.model.model.norm.weight)
        logits = F.linear(h, self.model.lm_head.weight, self.model.lm_head.bias).float()
        self._emit(st, logits, samp, eos, pad_id)
        st.col.add_(1)

    def _decode_layers_triton(self, st: _State, S: int, cos: torch.Tensor, sin: torch.Tensor, samp: tuple,
                              eos: torch.Tensor, pad_id: int) -> None:
        """``_decode_step`` with rlsd.rollout.kernels: per layer rms, QKV GEMM, rope + cache write, decode
        attention, O GEMM + residual, rms, gate/up GEMM, act * mul, down GEMM + residual (9 launches on CUDA
        without biases). cos, sin: (B, D) at each row's position."""
        from rlsd.rollout import kernels as K

        B, Hq, Hkv, D = st.B, self.Hq, self.Hkv, self.D
        col = st.col
        q = torch.empty((B, Hq, D), dtype=self.dtype, device=self.device)
        o = torch.empty((B, Hq, D), dtype=self.dtype, device=self.device)
        x = F.embedding(st.tok, self.model.model.embed_tokens.weight)  # (B, d)
        for li, lay in enumerate(self.layers):
            h = self._rms(x, lay.ln1)
            qkv = (torch.addmm(lay.bqkv, h, lay.wqkv.t()) if lay.bqkv is not None else h @ lay.wqkv.t())
            K.rope_cache_write(qkv.view(B, Hq + 2 * Hkv, D), cos, sin, st.k[li], st.v[li], col, q)
            K.decode_attention(q, st.k[li], st.v[li], st.start, col, S, self.scale, lay.window, o)
            x = self._linear_res(x, o.view(B, Hq * D), lay.wo, lay.bo)
            h = self._rms(x, lay.ln2)
            gu = (torch.addmm(lay.bgu, h, lay.wgu.t()) if lay.bgu is not None else h @ lay.wgu.t())
            if self.act_name is not None:
                a = K.silu_mul(gu, self.act_name)
            else:
                g, u = gu.chunk(2, dim=-1)
                a = lay.act(g) * u
            x = self._linear_res(x, a, lay.wd, lay.bd)
        self._finish_step(st, x, samp, eos, pad_id)

    def _graph_for(self, st: _State, S: int, samp: tuple, eos: torch.Tensor, eos_key: tuple, pad_id: int):
        """The CUDA graph of one decode step for (S, sampling, eos), captured on first use.

        Run on an H200 (graphs equal eager to the bit). Recipe: one eager warm-up step on a side stream (it moves tok/done/col/t and
        the RNG, so they are saved and restored; the cache and output columns it wrote are rewritten by
        the real steps before they are read), then capture into a pool shared by this state's graphs
        (they never run concurrently and every result lives in the state's static buffers)."""
        key = (S, samp, eos_key, pad_id)  # eos_key: the Python ids (no device read per step)
        g = st.graphs.get(key)
        if g is not None:
            return g
        saved = [x.clone() for x in (st.tok, st.done, st.col, st.t)]
        rng = torch.cuda.get_rng_state(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self._decode_step(st, S, samp, eos, pad_id)
        torch.cuda.current_stream(self.device).wait_stream(side)
        for x, y in zip((st.tok, st.done, st.col, st.t), saved):
            x.copy_(y)
        torch.cuda.synchronize(self.device)
        if st.pool is None:
            st.pool = torch.cuda.graph_pool_handle()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=st.pool):
            self._decode_step(st, S, samp, eos, pad_id)
        torch.cuda.set_rng_state(rng, self.device)
        st.graphs[key] = g
        return g

    # --- state -------------------------------------------------------------------------------

    def _state(self, B: int, S_need: int) -> _State:
        gran = self.bucket or 1
        S_max = max(gran, -(-S_need // gran) * gran)
        st = self.state
        if st is not None and st.B == B and st.S_max >= S_need:
            return st
        self.state = None  # free the old cache (and its graphs) before allocating the new one
        dev, L, Hkv, D = self.device, self.L, self.Hkv, self.D
        self.state = _State(
            B=B, S_max=S_max,
            k=torch.zeros((L, B, Hkv, S_max, D), dtype=self.dtype, device=dev),
            v=torch.zeros((L, B, Hkv, S_max, D), dtype=self.dtype, device=dev),
            tok=torch.zeros(B, dtype=torch.long, device=dev), start=torch.zeros(B, dtype=torch.long, device=dev),
            col=torch.zeros(1, dtype=torch.long, device=dev), t=torch.zeros(1, dtype=torch.long, device=dev),
            done=torch.zeros(B, dtype=torch.bool, device=dev),
            out_ids=torch.zeros((B, S_max), dtype=torch.long, device=dev),
            out_lp=torch.zeros((B, S_max), dtype=torch.float32, device=dev),
            out_live=torch.zeros((B, S_max), dtype=torch.bool, device=dev),
            cols=torch.arange(S_max, device=dev))
        return self.state

    def batch_bucket(self, n: int) -> int:
        """Rows of an engine batch for n rollouts: n on CPU; on CUDA the next power of two (>= 8) up to
        1024, then the next multiple of 256, so a handful of graph sets serve every batch size."""
        if not self.use_graphs:
            return n
        if n <= 1024:
            return max(8, 1 << (n - 1).bit_length())
        return -(-n // 256) * 256

    # --- one engine batch --------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, max_new_tokens: int,
                 greedy: bool = False, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 eos_ids: list[int] | tuple[int, ...] = (), pad_id: int = 0, stop_strings: list[str] | None = None,
                 tokenizer: Any = None, group: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample up to max_new_tokens for n left-padded prompts (call ``refresh()`` first).

        prompt_ids, prompt_mask: (n, P). Returns completion ids (n, T) long (pad after a stop), completion
        mask (n, T) long (1 up to and including the stop token) and logps (n, T) float32 (0 where masked),
        with T <= max_new_tokens the number of steps run (all on CPU). Left padding is required: every
        row's real tokens must end at column P - 1. ``group``: rows come in groups of this many copies of
        one prompt (checked); each prompt is then prefilled once.
        """
        n, P = prompt_ids.shape
        if n == 0:
            z = torch.zeros((0, 0), dtype=torch.long)
            return z, z.clone(), torch.zeros((0, 0))
        if bool(((prompt_mask[:, -1] == 0) & (prompt_mask.sum(1) > 0)).any()):
            raise ValueError("prompts must be left-padded (every row's last column real); "
                             "set tokenizer.padding_side='left'")
        B = self.batch_bucket(n)
        T = int(max_new_tokens)
        st = self._state(B, P + T)
        dev = self.device
        ids = torch.full((B, P), pad_id, dtype=torch.long, device=dev)
        mask = torch.zeros((B, P), dtype=torch.long, device=dev)
        ids[:n] = prompt_ids.to(dev)
        mask[:n] = prompt_mask.to(dev)
        st.start.copy_(P - mask.sum(1))
        st.done.zero_()
        st.done[n:] = True  # bucket padding rows never generate
        st.done |= mask.sum(1) == 0  # an empty prompt is a caller error; never sample from it
        st.out_live.zero_()
        st.t.zero_()
        eos_key = tuple(int(e) for e in eos_ids)
        eos = torch.tensor(eos_key, dtype=torch.long, device=dev)
        samp = (bool(greedy), float(temperature), int(top_k), float(top_p))
        rep = group if group > 1 and n % group == 0 and torch.equal(
            prompt_ids[::group].repeat_interleave(group, 0), prompt_ids) else 1
        self._emit(st, self._prefill(st, ids, mask, rep), samp, eos, pad_id)
        st.col.fill_(P)
        stops: dict[int, int] = {}  # row -> index of the token completing a stop string
        steps = 1
        gran = self.bucket or 1
        for t in range(1, T):
            if t % self.check_every == 0:
                if stop_strings:
                    self._check_stops(st, n, t, stop_strings, tokenizer, stops)
                if bool(st.done.all()):
                    break
            S = P + t if gran == 1 else min(st.S_max, -(-(P + t) // gran) * gran)
            if self.use_graphs:
                self._graph_for(st, S, samp, eos, eos_key, pad_id).replay()
            else:
                self._decode_step(st, S, samp, eos, pad_id)
            steps = t + 1
        if stop_strings:
            self._check_stops(st, n, steps, stop_strings, tokenizer, stops)
        ids_out = st.out_ids[:n, :steps].cpu()
        live = st.out_live[:n, :steps].cpu()
        lp = st.out_lp[:n, :steps].float().cpu()
        for row, j in stops.items():
            live[row, j + 1:] = False
        ids_out = torch.where(live, ids_out, torch.full_like(ids_out, pad_id))
        lp = torch.where(live, lp, torch.zeros_like(lp))
        return ids_out, live.long(), lp

    def _check_stops(self, st: _State, n: int, t: int, stop_strings: list[str], tokenizer: Any,
                     stops: dict[int, int]) -> None:
        """Host-side: find rows whose text (first t tokens) contains a stop string; mark them done."""
        if tokenizer is None:
            raise ValueError("stop_strings need the tokenizer")
        ids = st.out_ids[:n, :t].cpu()
        live = st.out_live[:n, :t].cpu()
        rows = [r for r in range(n) if r not in stops and bool(live[r].any())]
        if not rows:
            return
        texts = tokenizer.batch_decode([ids[r][live[r]].tolist() for r in rows], skip_special_tokens=False)
        hit = [r for r, s in zip(rows, texts) if any(x in s for x in stop_strings)]
        for r in hit:
            toks = ids[r][live[r]].tolist()
            for j in range(len(toks)):  # first prefix that contains a stop string
                if any(x in tokenizer.decode(toks[:j + 1], skip_special_tokens=False) for x in stop_strings):
                    stops[r] = j
                    break
        if hit:
            st.done[torch.tensor(hit, device=self.device)] = True


def _probe_bmm_out_dtype(device: torch.device, dtype: torch.dtype) -> bool:
    """True where torch.bmm(..., out_dtype=float32) runs for this dtype (CUDA builds of recent torch)."""
    if dtype == torch.float32:
        return False
    try:
        a = torch.ones((1, 2, 8), dtype=dtype, device=device)
        return torch.bmm(a, a.transpose(1, 2), out_dtype=torch.float32).dtype == torch.float32
    except Exception:  # noqa: BLE001 - any failure means: not available
        return False


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------

_ENGINES: weakref.WeakKeyDictionary[Any, Engine] = weakref.WeakKeyDictionary()


def get_engine(model: Any, **kw: Any) -> Engine:
    """The engine of this model object (built once; its buffers are reused across calls)."""
    m = _unwrap(model)
    eng = _ENGINES.get(m)
    if eng is None or kw:
        eng = Engine(m, **kw)
        _ENGINES[m] = eng
    return eng


@contextlib.contextmanager
def gathered(model: Any):
    """Full parameters for one rollout phase: ZeRO-3 partitioned parameters (those with ``ds_id``) are
    gathered once with ``deepspeed.zero.GatheredParameters`` and released on exit; otherwise a no-op.
    (Not exercised in CI: ZeRO-3 is not initialised in the rollout tests.)"""
    params = [p for p in _unwrap(model).parameters() if hasattr(p, "ds_id")]
    if not params:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        yield


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    eos = _unwrap(model).generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return []
    return [int(eos)] if isinstance(eos, int) else [int(e) for e in eos]


@torch.no_grad()
def sample(model: Any, tokenizer: Any, prompts: list[str], *, num_samples: int = 1, max_new_tokens: int = 32,
           temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, greedy: bool = False,
           max_prompt_tokens: int = 512, generation_batch_size: int = 0,
           stop_strings: list[str] | None = None, kernels: str = "auto") -> Rollout:
    """Sample ``num_samples`` completions per prompt with the engine; same contract as ``rlsd.rollout.sample``.

    Row i*num_samples + j of every (N, ...) tensor is sample j of prompt i; logps (N, T) are the
    log-probs of the sampled tokens under the distribution sampled from (see the module docstring).
    kernels: auto | triton | torch, the decode step's kernels (``Engine.set_kernels``).
    """
    if num_samples < 1 or max_new_tokens < 1:
        raise ValueError(f"num_samples and max_new_tokens must be >= 1, got {num_samples}, {max_new_tokens}")
    if not greedy and not temperature > 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token = tokenizer.eos_token")
    prompt_ids, prompt_mask = encode_prompts(tokenizer, prompts, num_samples, max_prompt_tokens)
    n = prompt_ids.shape[0]
    bs = generation_batch_size or n
    eng = get_engine(model)
    eng.set_kernels(kernels)
    pad = int(tokenizer.pad_token_id)
    chunks = []
    with gathered(model):
        eng.refresh()
        for s in range(0, n, bs):
            chunks.append(eng.generate(prompt_ids[s:s + bs], prompt_mask[s:s + bs], max_new_tokens=max_new_tokens,
                                       greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p,
                                       eos_ids=_eos_ids(model, tokenizer), pad_id=pad, stop_strings=stop_strings,
                                       tokenizer=tokenizer, group=num_samples if bs % num_samples == 0 else 1))
    width = max(c[0].shape[1] for c in chunks)
    completion_ids = torch.full((n, width), pad, dtype=torch.long)
    completion_mask = torch.zeros((n, width), dtype=torch.long)
    logps = torch.zeros((n, width), dtype=torch.float32)
    row = 0
    for ids, msk, lp in chunks:
        k, w = ids.shape
        completion_ids[row:row + k, :w], completion_mask[row:row + k, :w], logps[row:row + k, :w] = ids, msk, lp
        row += k
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    return Rollout(prompt_ids, prompt_mask, completion_ids, completion_mask, texts, logps)


@torch.no_grad()
def teacher_forced_logps(model: Any, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                         completion_ids: torch.Tensor, completion_mask: torch.Tensor, *, temperature: float = 1.0,
                         top_k: int = 0, top_p: float = 1.0, greedy: bool = False) -> torch.Tensor:
    """Reference log-probs from one transformers forward pass over prompt + completion (an independent
    check of the engine, and what a trainer recomputes).

    prompt_ids, prompt_mask: (N, P) left-padded; completion_ids, completion_mask: (N, T). Position ids
    follow ``generate`` (cumulative mask - 1). Returns (N, T) float32 log-probs of the completion tokens
    under ``log_softmax(filter(logits / temperature))`` (plain ``log_softmax(logits)`` when greedy), 0 where
    the completion mask is 0.
    """
    m = _unwrap(model)
    dev = next(m.parameters()).device
    ids = torch.cat([prompt_ids, completion_ids], 1).to(dev)
    mask = torch.cat([prompt_mask, completion_mask], 1).to(dev)
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    P, T = prompt_ids.shape[1], completion_ids.shape[1]
    logits = m(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, P - 1:P + T - 1].float()
    N, _, V = logits.shape
    z = logits.reshape(N * T, V)
    if not greedy:
        z = filter_logits(z / temperature, top_k=top_k, top_p=top_p)
    lp = torch.log_softmax(z, -1).gather(-1, completion_ids.to(dev).reshape(-1, 1)).view(N, T)
    return torch.where(completion_mask.to(dev) > 0, lp, torch.zeros_like(lp)).cpu()


def memory_bytes_per_step(model: Any, batch: int, cache_cols: float, *, kv_dtype_bytes: int | None = None) -> int:
    """Bytes one decode step must move at least: every weight read once (the embedding only for the
    batch's rows when untied), the live KV cache read (L x batch x Hkv x cols x D, K and V), the new
    K/V written, and the (batch, V) float32 logits written and read once."""
    m = _unwrap(model)
    cfg = m.config
    D = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    emb = m.model.embed_tokens.weight
    el = kv_dtype_bytes or emb.element_size()
    tied = m.lm_head.weight.data_ptr() == emb.data_ptr()
    w = sum(p.numel() * p.element_size() for p in m.parameters())
    if not tied:
        w -= emb.numel() * emb.element_size() - batch * emb.shape[1] * emb.element_size()
    kv = cfg.num_hidden_layers * batch * cfg.num_key_value_heads * D * el * 2
    return int(w + kv * cache_cols + kv + 2 * batch * cfg.vocab_size * 4)


__all__ = ["Engine", "filter_logits", "gathered", "get_engine", "memory_bytes_per_step", "sample",
           "sample_from_logits", "supports", "teacher_forced_logps", "why_unsupported"]
