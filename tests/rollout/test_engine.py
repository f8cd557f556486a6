"""rlsd.rollout.engine against independent references: transformers' generate (greedy tokens), one
transformers forward pass (log-probs), hand-computed filter sets, and invariances (buckets, chunking)."""

from __future__ import annotations

import math

import pytest
import torch

from rlsd.models import build_tiny_model, train_tokenizer
from rlsd.rollout import engine as E
from rlsd.rollout import sample as rollout_sample
from rlsd.rollout.hf import hf_sample

PROMPTS = ["Q:347+589=?", "H:1234\n<answer>yes</answer> The answer", "abc", "ticket resolution manual section"]


def _generation_ids(model, tok):
    with torch.no_grad():  # a larger init than transformers' 0.02 so that greedy paths are not flat
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.eval()
    return model, tok


def tiny(kind: str):
    """(model, tokenizer): float32 random-init models of each supported family, seeded."""
    if kind == "llama":
        return _generation_ids(*build_tiny_model(seed=1))
    if kind == "llama_gqa":
        return _generation_ids(*build_tiny_model(hidden_size=64, num_heads=4, num_kv_heads=2, num_layers=3, seed=2))
    tok = train_tokenizer()
    torch.manual_seed(3)
    common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    if kind == "qwen2":  # q/k/v biases, untied head
        from transformers import Qwen2Config, Qwen2ForCausalLM

        model = Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=False))
        with torch.no_grad():  # random biases so that they matter
            for layer in model.model.layers:
                for p in (layer.self_attn.q_proj.bias, layer.self_attn.k_proj.bias, layer.self_attn.v_proj.bias):
                    p.normal_(0, 0.5)
    elif kind == "mistral_window":  # a sliding window shorter than prompt + completion
        from transformers import MistralConfig, MistralForCausalLM

        model = MistralForCausalLM(MistralConfig(**common, sliding_window=7, tie_word_embeddings=True))
    elif kind == "llama3_rope":
        from transformers import LlamaConfig, LlamaForCausalLM

        rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
        model = LlamaForCausalLM(LlamaConfig(**common, rope_parameters=rope, tie_word_embeddings=True))
    else:
        raise ValueError(kind)
    return _generation_ids(model, tok)


KINDS = ["llama", "llama_gqa", "qwen2", "mistral_window", "llama3_rope"]


@pytest.fixture(scope="module", params=KINDS)
def model_tok(request):
    return tiny(request.param)


# ----------------------------------------------------------------------------------------------
# greedy tokens == generate; logps == teacher forcing
# ----------------------------------------------------------------------------------------------


def test_supports_all_families(model_tok):
    assert E.supports(model_tok[0]), E.why_unsupported(model_tok[0])


def test_greedy_equals_generate_mixed_prompt_lengths(model_tok):
    model, tok = model_tok
    ref = hf_sample(model, tok, PROMPTS, num_samples=2, max_new_tokens=24, greedy=True)
    got = E.sample(model, tok, PROMPTS, num_samples=2, max_new_tokens=24, greedy=True)
    assert ref.prompt_mask.sum(1).unique().numel() == 4  # really mixed lengths
    w = ref.completion_ids.shape[1]
    assert torch.equal(got.completion_mask[:, :w], ref.completion_mask)
    assert torch.equal(got.completion_ids[:, :w] * got.completion_mask[:, :w], ref.completion_ids * ref.completion_mask)
    assert got.texts == ref.texts


def test_logps_equal_teacher_forced_forward(model_tok):
    model, tok = model_tok
    got = E.sample(model, tok, PROMPTS, num_samples=2, max_new_tokens=24, greedy=True)
    ref = E.teacher_forced_logps(model, got.prompt_ids, got.prompt_mask, got.completion_ids, got.completion_mask,
                                 greedy=True)
    assert (got.logps - ref).abs().max().item() < 1e-5
    assert (got.logps[got.completion_mask.bool()] < 0).all()


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 12, 1.0), (1.3, 0, 0.8), (0.9, 30, 0.9)])
def test_sampled_logps_are_under_the_filtered_distribution(temperature, top_k, top_p):
    model, tok = tiny("llama_gqa")
    torch.manual_seed(5)
    got = E.sample(model, tok, PROMPTS, num_samples=3, max_new_tokens=16, temperature=temperature, top_k=top_k,
                   top_p=top_p)
    ref = E.teacher_forced_logps(model, got.prompt_ids, got.prompt_mask, got.completion_ids, got.completion_mask,
                                 temperature=temperature, top_k=top_k, top_p=top_p)
    assert torch.isfinite(ref).all()  # every sampled token survives the filter
    assert (got.logps - ref).abs().max().item() < 1e-5
    if top_k or top_p < 1:  # the filter renormalises: logps above the unfiltered ones
        plain = E.teacher_forced_logps(model, got.prompt_ids, got.prompt_mask, got.completion_ids,
                                       got.completion_mask, temperature=temperature)
        m = got.completion_mask.bool()
        assert (got.logps[m] >= plain[m] - 1e-6).all() and (got.logps[m] > plain[m] + 1e-4).any()


# ----------------------------------------------------------------------------------------------
# reproducibility, invariances
# ----------------------------------------------------------------------------------------------


def test_sampling_with_a_fixed_seed_is_reproducible():
    model, tok = tiny("llama")
    runs = []
    for seed in (11, 11, 12):
        torch.manual_seed(seed)
        runs.append(E.sample(model, tok, PROMPTS, num_samples=4, max_new_tokens=16, temperature=1.0))
    assert torch.equal(runs[0].completion_ids, runs[1].completion_ids)
    assert torch.equal(runs[0].logps, runs[1].logps)
    assert not torch.equal(runs[0].completion_ids, runs[2].completion_ids)
    # samples of one prompt differ from each other (the noise is per row)
    assert not torch.equal(runs[0].completion_ids[0], runs[0].completion_ids[1])


def test_cache_length_buckets_and_chunks_do_not_change_results():
    model, tok = tiny("llama_gqa")
    base = E.sample(model, tok, PROMPTS, num_samples=2, max_new_tokens=20, greedy=True)
    E.get_engine(model, bucket=16)  # decode attends to a 16-aligned slice, live columns masked
    bucketed = E.sample(model, tok, PROMPTS, num_samples=2, max_new_tokens=20, greedy=True)
    E.get_engine(model, bucket=0)
    chunked = E.sample(model, tok, PROMPTS, num_samples=2, max_new_tokens=20, greedy=True, generation_batch_size=3)
    for r in (bucketed, chunked):
        assert torch.equal(r.completion_ids, base.completion_ids)
        assert (r.logps - base.logps).abs().max().item() < 1e-5


def test_fused_weights_follow_in_place_updates():
    """No weight sync: after an optimizer-like in-place update the engine samples from the new weights."""
    model, tok = tiny("llama")
    before = E.sample(model, tok, PROMPTS, max_new_tokens=12, greedy=True)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.k_proj.weight.add_(torch.randn_like(layer.self_attn.k_proj.weight))
            layer.mlp.up_proj.weight.mul_(-1.5)
    after = E.sample(model, tok, PROMPTS, max_new_tokens=12, greedy=True)
    ref = hf_sample(model, tok, PROMPTS, max_new_tokens=12, greedy=True)
    assert torch.equal(after.completion_ids, ref.completion_ids)
    assert not torch.equal(after.completion_ids, before.completion_ids)
    tf = E.teacher_forced_logps(model, after.prompt_ids, after.prompt_mask, after.completion_ids,
                                after.completion_mask, greedy=True)
    assert (after.logps - tf).abs().max().item() < 1e-5


def test_wrapped_model_is_unwrapped():
    model, tok = tiny("llama")

    class Wrapper(torch.nn.Module):  # what DeepSpeedEngine / DDP look like from outside
        def __init__(self, m):
            super().__init__()
            self.module = m

    assert E.supports(Wrapper(model))
    a = E.sample(Wrapper(model), tok, PROMPTS[:2], max_new_tokens=8, greedy=True)
    b = E.sample(model, tok, PROMPTS[:2], max_new_tokens=8, greedy=True)
    assert torch.equal(a.completion_ids, b.completion_ids)


# ----------------------------------------------------------------------------------------------
# stops
# ----------------------------------------------------------------------------------------------


def _frequent_mid_token(ids: torch.Tensor, mask: torch.Tensor) -> int:
    """A live token that occurs after position 2 in some rows but not at position 0 of every row."""
    counts = torch.bincount(ids[:, 3:][mask[:, 3:].bool()])
    for t in counts.argsort(descending=True).tolist():
        if (ids[:, 0] != t).any():
            return t
    raise AssertionError("no candidate")


def test_no_token_after_an_eos_is_unmasked_and_generate_agrees():
    model, tok = tiny("llama_gqa")
    free = E.sample(model, tok, PROMPTS, num_samples=2, max_new_tokens=24, greedy=True)
    eos = _frequent_mid_token(free.completion_ids, free.completion_mask)
    model.generation_config.eos_token_id = eos
    try:
        got = E.sample(model, tok, PROMPTS, num_samples=2, max_new_tokens=24, greedy=True)
        ref = hf_sample(model, tok, PROMPTS, num_samples=2, max_new_tokens=24, greedy=True)
    finally:
        model.generation_config.eos_token_id = tok.eos_token_id
    m = got.completion_mask
    stopped = (got.completion_ids == eos) & m.bool()
    assert stopped.any(1).sum() >= 1
    for i in range(m.shape[0]):
        row = m[i].tolist()
        n_live = sum(row)
        assert row == [1] * n_live + [0] * (len(row) - n_live)  # one block, then nothing
        if stopped[i].any():
            j = int(stopped[i].nonzero()[0])
            assert n_live == j + 1  # the EOS itself is kept
            assert (got.completion_ids[i, j + 1:] == tok.pad_token_id).all()
            assert (got.logps[i, j + 1:] == 0).all()
    w = ref.completion_ids.shape[1]
    assert torch.equal(got.completion_mask[:, :w], ref.completion_mask)
    assert got.texts == ref.texts


def test_early_exit_when_every_row_stopped():
    model, tok = tiny("llama")
    free = E.sample(model, tok, PROMPTS[:1], max_new_tokens=30, greedy=True)
    eos = int(free.completion_ids[0, 2])  # the single row stops at step 2 (or earlier)
    model.generation_config.eos_token_id = eos
    try:
        eng = E.get_engine(model, check_every=4)
        got = E.sample(model, tok, PROMPTS[:1], max_new_tokens=30, greedy=True)
    finally:
        model.generation_config.eos_token_id = tok.eos_token_id
    assert got.completion_mask.sum().item() <= 3
    assert got.completion_ids.shape[1] == eng.check_every  # stopped at the first checkpoint, not at 30


def test_stop_strings_end_a_row_at_the_completing_token():
    model, tok = tiny("llama_gqa")
    free = E.sample(model, tok, PROMPTS, max_new_tokens=24, greedy=True)
    row = 1
    ids = free.completion_ids[row].tolist()
    stop = tok.decode(ids[5:7])  # a string that first completes at token 6 of row 1 (or earlier)
    got = E.sample(model, tok, PROMPTS, max_new_tokens=24, greedy=True, stop_strings=[stop])
    for i in range(len(PROMPTS)):
        n_live = int(got.completion_mask[i].sum())
        free_len = int(free.completion_mask[i].sum())  # a row may also end at EOS
        full = free.completion_ids[i, :free_len].tolist()
        cut = next((j for j in range(free_len) if stop in tok.decode(full[:j + 1])), None)
        assert n_live == (cut + 1 if cut is not None else free_len)
        assert got.completion_ids[i, :n_live].tolist() == full[:n_live]
        assert (got.completion_ids[i, n_live:] == tok.pad_token_id).all()
    assert int(got.completion_mask[row].sum()) <= 7


# ----------------------------------------------------------------------------------------------
# top-k / top-p on hand-made distributions
# ----------------------------------------------------------------------------------------------


def test_top_k_keeps_exactly_the_k_largest_and_ties():
    z = torch.tensor([[2.0, 0.5, 1.0, -1.0, 3.0], [1.0, 1.0, 0.0, 1.0, -2.0]])
    kept = torch.isfinite(E.filter_logits(z, top_k=2))
    assert kept.tolist() == [[True, False, False, False, True], [True, True, False, True, False]]
    assert torch.isfinite(E.filter_logits(z, top_k=0)).all() and torch.isfinite(E.filter_logits(z, top_k=5)).all()


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.1, 0.5, 0.15, 0.25]])  # descending: 0.5, 0.25, 0.15, 0.1
    z = probs.log()
    for top_p, expect in [(0.3, [False, True, False, False]), (0.7, [False, True, False, True]),
                          (0.8, [False, True, True, True]), (0.95, [True, True, True, True]),
                          (1e-3, [False, True, False, False])]:
        assert torch.isfinite(E.filter_logits(z, top_p=top_p))[0].tolist() == expect, top_p


def test_top_p_after_top_k_exact():
    # survivors after k=3: 0.5, 0.25, 0.15 -> renormalised 0.5556, 0.2778, 0.1667; preceding mass 0, .556, .833
    z = torch.tensor([[0.1, 0.5, 0.15, 0.25]]).log()
    assert torch.isfinite(E.filter_logits(z, top_k=3, top_p=0.5))[0].tolist() == [False, True, False, False]
    assert torch.isfinite(E.filter_logits(z, top_k=3, top_p=0.8))[0].tolist() == [False, True, False, True]
    assert torch.isfinite(E.filter_logits(z, top_k=3, top_p=0.85))[0].tolist() == [False, True, True, True]


def test_sampling_frequencies_and_logps_match_the_filtered_distribution():
    probs = torch.tensor([0.05, 0.4, 0.1, 0.3, 0.15])
    n = 40000
    logits = probs.log().expand(n, -1).contiguous()
    torch.manual_seed(0)
    tok, lp = E.sample_from_logits(logits, greedy=False, temperature=1.0, top_k=4, top_p=0.8)
    # top-k=4 drops 0.05; renormalised .4/.95, .1/.95, .3/.95, .15/.95; top-p .8 keeps .421, .316, .158 (mass .895)
    keep = torch.tensor([False, True, False, True, True])
    target = torch.where(keep, probs, torch.zeros_like(probs))
    target = target / target.sum()
    freq = torch.bincount(tok, minlength=5).float() / n
    assert (freq[~keep] == 0).all()
    assert (freq - target).abs().max().item() < 0.01  # 5 sigma at n = 40000
    assert torch.allclose(lp, target.log()[tok], atol=1e-6)
    # temperature sharpens: T = 0.5 squares and renormalises
    tok, lp = E.sample_from_logits(logits, greedy=False, temperature=0.5)
    t2 = probs ** 2 / (probs ** 2).sum()
    assert (torch.bincount(tok, minlength=5).float() / n - t2).abs().max().item() < 0.01
    assert torch.allclose(lp, t2.log()[tok], atol=1e-5)
    # greedy: argmax, logp under the unmodified distribution
    tok, lp = E.sample_from_logits(logits[:2], greedy=True)
    assert tok.tolist() == [1, 1] and math.isclose(lp[0].item(), math.log(0.4), abs_tol=1e-6)


# ----------------------------------------------------------------------------------------------
# dispatch
# ----------------------------------------------------------------------------------------------


def test_unsupported_models_fall_back_or_fail_clearly():
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tok = train_tokenizer()
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2,
                                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))
    gpt2.generation_config.pad_token_id = tok.pad_token_id
    dyn = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, rope_parameters={"rope_type": "dynamic", "factor": 2.0,
                                                                               "rope_theta": 10000.0}))
    assert not E.supports(gpt2) and "GPT2LMHeadModel" in E.why_unsupported(gpt2)
    assert not E.supports(dyn) and "dynamic" in E.why_unsupported(dyn)
    r = rollout_sample(gpt2.eval(), tok, PROMPTS[:2], max_new_tokens=4, greedy=True, engine="auto")  # generate
    assert r.logps is None and r.completion_ids.shape == (2, 4)
    with pytest.raises(ValueError, match="GPT2LMHeadModel"):
        rollout_sample(gpt2, tok, PROMPTS[:2], max_new_tokens=4, engine="graph")


def test_auto_dispatch_uses_the_engine():
    model, tok = tiny("llama")
    r = rollout_sample(model, tok, PROMPTS, num_samples=2, max_new_tokens=8, greedy=True, engine="auto")
    assert r.logps is not None and r.logps.shape == r.completion_ids.shape == (8, 8)


def test_memory_bound_counts_weights_and_cache():
    model, _ = tiny("llama")
    cfg = model.config
    b0 = E.memory_bytes_per_step(model, 4, 0)
    b1 = E.memory_bytes_per_step(model, 4, 10)
    per_col = cfg.num_hidden_layers * 4 * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 4 * 2
    assert b1 - b0 == 10 * per_col
    weights = sum(p.numel() * 4 for p in model.parameters())
    assert b0 == weights + per_col + 2 * 4 * cfg.vocab_size * 4


def test_samples_of_one_prompt_share_one_prefill(monkeypatch):
    """num_samples copies of a prompt are prefilled once (rep = num_samples) and still equal generate."""
    model, tok = tiny("llama")
    reps = []
    real = E.Engine._prefill

    def spy(self, st, ids, mask, rep=1):
        reps.append(rep)
        return real(self, st, ids, mask, rep)

    monkeypatch.setattr(E.Engine, "_prefill", spy)
    got = E.sample(model, tok, PROMPTS, num_samples=3, max_new_tokens=16, greedy=True)
    ref = hf_sample(model, tok, PROMPTS, num_samples=3, max_new_tokens=16, greedy=True)
    assert reps == [3]
    w = ref.completion_ids.shape[1]
    assert torch.equal(got.completion_ids[:, :w] * got.completion_mask[:, :w], ref.completion_ids * ref.completion_mask)


def test_triton_kernels_where_unavailable_fail_naming_the_fix(monkeypatch):
    from rlsd.config import ConfigError, load_config
    from rlsd.rollout import kernels as K

    model, tok = tiny("llama")
    monkeypatch.setattr(K, "importable", lambda: False)
    assert not K.available("cpu") and not K.available("cuda")
    with pytest.raises(ValueError, match=r"rollout.kernels=triton cannot run on cpu: triton is not installed.*"
                                         r"pip install triton.*rollout.kernels=torch"):
        E.sample(model, tok, PROMPTS[:1], max_new_tokens=2, greedy=True, kernels="triton")
    r = E.sample(model, tok, PROMPTS[:1], max_new_tokens=2, greedy=True, kernels="auto")  # auto: torch ops
    assert r.completion_ids.shape == (1, 2) and not E.get_engine(model).use_kernels
    assert load_config(overrides=["rollout.kernels=torch"]).rollout.kernels == "torch"
    with pytest.raises(ConfigError, match="rollout.kernels must be one of auto | triton | torch"):
        load_config(overrides=["rollout.kernels=cuda"])
