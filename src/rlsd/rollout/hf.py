"""Rollouts with transformers' ``generate`` (the fallback engine; works for any causal LM)."""

from __future__ import annotations

from typing import Any

import torch

from rlsd.rollout import Rollout, encode_prompts


def completion_mask_from_ids(completion_ids: torch.Tensor, eos_token_id: int | list[int] | None) -> torch.Tensor:
    """(N, T) mask: 1 up to and including the first EOS of each row, 0 after it."""
    if eos_token_id is None:
        return torch.ones_like(completion_ids, dtype=torch.long)
    eos_ids = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id),
                           device=completion_ids.device)
    is_eos = torch.isin(completion_ids, eos_ids)
    # positions strictly after the first eos: cumulative count of eos before this position > 0
    after = (is_eos.cumsum(1) - is_eos.long()) > 0
    return (~after).long()


@torch.no_grad()
def hf_sample(model: Any, tokenizer: Any, prompts: list[str], *, num_samples: int = 1, max_new_tokens: int = 32,
              temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, greedy: bool = False,
              max_prompt_tokens: int = 512, generation_batch_size: int = 0) -> Rollout:
    device = next(model.parameters()).device
    prompt_ids, prompt_mask = encode_prompts(tokenizer, prompts, num_samples, max_prompt_tokens)
    n = prompt_ids.shape[0]
    bs = generation_batch_size or n
    eos = model.generation_config.eos_token_id if model.generation_config.eos_token_id is not None else tokenizer.eos_token_id
    gen_kw: dict[str, Any] = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
    if greedy:
        gen_kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        gen_kw.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k or None)
    was_training = model.training
    model.eval()
    chunks = []
    for s in range(0, n, bs):
        ids = prompt_ids[s:s + bs].to(device)
        out = model.generate(input_ids=ids, attention_mask=prompt_mask[s:s + bs].to(device), **gen_kw)
        chunks.append(out[:, ids.shape[1]:].cpu())
    if was_training:
        model.train()
    width = max(c.shape[1] for c in chunks)
    completion_ids = torch.full((n, width), tokenizer.pad_token_id, dtype=torch.long)
    row = 0
    for c in chunks:
        completion_ids[row:row + c.shape[0], :c.shape[1]] = c
        row += c.shape[0]
    completion_mask = completion_mask_from_ids(completion_ids, eos)
    # rows that stopped early are padded by generate; pad ids after the EOS are masked already
    texts = tokenizer.batch_decode(completion_ids * completion_mask + tokenizer.pad_token_id * (1 - completion_mask),
                                   skip_special_tokens=True)
    return Rollout(prompt_ids, prompt_mask, completion_ids, completion_mask, texts, None)
