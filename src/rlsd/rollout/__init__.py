"""Sampling completions for a batch of prompts.

``sample(...)`` is the one entry point used by the trainer and by evaluation. Engines:
- ``generate``: transformers' ``generate`` (any causal LM);
- ``graph``: rlsd's own engine (static KV cache, CUDA graphs on GPU; rlsd.rollout.engine);
- ``auto``: ``graph`` where the architecture is supported, ``generate`` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Rollout:
    """A batch of sampled completions; row i*num_samples + j is sample j of prompt i.

    prompt_ids: (N, P) left-padded prompt ids; prompt_mask: (N, P) 1 for real prompt tokens.
    completion_ids: (N, T) sampled ids, pad after the stop; completion_mask: (N, T) 1 up to and
    including the EOS token (nothing after a stop is unmasked).
    logps: (N, T) log-probs of the sampled tokens under the distribution actually sampled from
    (after temperature / top-p / top-k), or None when the engine does not provide them.
    texts: decoded completions (special tokens skipped).
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    texts: list[str]
    logps: torch.Tensor | None = None


def encode_prompts(tokenizer: Any, prompts: list[str], num_samples: int,
                   max_prompt_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, P) left-padded prompt ids and mask, each prompt repeated num_samples times (N = len * num_samples).

    A prompt over ``max_prompt_tokens`` is an error, never cut: cutting either end loses the chat template's
    reply header or the start of the question (rlsd.prompts.fit_student shortens a question in the middle)."""
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    lengths = enc.attention_mask.sum(1)
    if len(prompts) and int(lengths.max()) > max_prompt_tokens:
        i = int(lengths.argmax())
        raise ValueError(f"prompt {i} has {int(lengths[i])} tokens, more than max_prompt_tokens={max_prompt_tokens}; "
                         "shorten it with rlsd.prompts.fit_student or raise rollout.max_prompt_tokens")
    return enc.input_ids.repeat_interleave(num_samples, 0), enc.attention_mask.repeat_interleave(num_samples, 0)


def sample(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    num_samples: int = 1,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    greedy: bool = False,
    max_prompt_tokens: int = 512,
    generation_batch_size: int = 0,
    engine: str = "generate",
    kernels: str = "auto",
) -> Rollout:
    """Sample ``num_samples`` completions for every prompt (texts, already rendered).

    kernels (rlsd's engine only): auto | triton | torch, the decode step's kernels (see rollout.kernels)."""
    if engine in ("auto", "graph"):
        from rlsd.rollout import engine as eng

        if engine == "graph" or eng.supports(model):
            return eng.sample(model, tokenizer, prompts, num_samples=num_samples, max_new_tokens=max_new_tokens,
                              temperature=temperature, top_p=top_p, top_k=top_k, greedy=greedy,
                              max_prompt_tokens=max_prompt_tokens, generation_batch_size=generation_batch_size,
                              kernels=kernels)
    from rlsd.rollout.hf import hf_sample

    return hf_sample(model, tokenizer, prompts, num_samples=num_samples, max_new_tokens=max_new_tokens,
                     temperature=temperature, top_p=top_p, top_k=top_k, greedy=greedy,
                     max_prompt_tokens=max_prompt_tokens, generation_batch_size=generation_batch_size)
