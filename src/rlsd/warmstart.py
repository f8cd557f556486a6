"""Supervised warm start of a tiny model on the task format (tests, tiny recipe, learning benchmarks).

A model trained from scratch knows nothing; RL needs a policy that is sometimes right. The warm start
teaches the answer format on generated tasks (``meta['solution']``), and shows the privileged hint
line ``H:<context>`` in a fraction of the prompts so that the teacher prompt means something to the model
(measured: without hinted prompts the answer-conditioned teacher scores 0). It stops on a measured
dev accuracy, not a fixed step count.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from tqdm.auto import tqdm

from rlsd.tasks import Task

HINT_TEMPLATE = "{question}H:{context}\n"


def _example(task: Task, hinted: bool, tokenizer: Any) -> tuple[list[int], list[int]]:
    prompt = HINT_TEMPLATE.format(question=task.prompt, context=task.privileged_context) if hinted else task.prompt
    p = tokenizer(prompt, add_special_tokens=False).input_ids
    c = tokenizer(task.meta["solution"], add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    return p, c


def greedy_accuracy(model: Any, tokenizer: Any, tasks: list[Task], *, hinted: bool = False, max_new_tokens: int = 48) -> float:
    from rlsd.rollout import sample
    from rlsd.verifiers import score

    prompts = [HINT_TEMPLATE.format(question=t.prompt, context=t.privileged_context) if hinted else t.prompt for t in tasks]
    ro = sample(model, tokenizer, prompts, num_samples=1, max_new_tokens=max_new_tokens, greedy=True)
    return sum(score(t, x) or 0.0 for t, x in zip(tasks, ro.texts)) / max(len(tasks), 1)


def warm_start(model: Any, tokenizer: Any, tasks: list[Task], dev: list[Task], *, max_steps: int = 2000,
               batch_size: int = 64, lr: float = 3e-3, hint_frac: float = 0.5, target_dev_acc: float = 0.5,
               eval_every: int = 50, seed: int = 0, max_new_tokens: int = 48) -> dict[str, Any]:
    """Train until greedy dev accuracy (no hint) reaches ``target_dev_acc`` or ``max_steps``.

    Returns {"steps", "dev_acc", "dev_acc_hinted", "history": [(step, dev_acc)]}.
    """
    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    history: list[tuple[int, float]] = []
    acc = 0.0
    pad = tokenizer.pad_token_id
    bar = tqdm(range(1, max_steps + 1), desc="warm start", unit="step")
    step = 0
    for step in bar:
        model.train()
        batch = [_example(t, rng.random() < hint_frac, tokenizer) for t in rng.sample(tasks, min(batch_size, len(tasks)))]
        width = max(len(p) + len(c) for p, c in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        attn = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (p, c) in enumerate(batch):
            seq = p + c
            ids[i, : len(seq)] = torch.tensor(seq)
            attn[i, : len(seq)] = 1
            labels[i, len(p): len(seq)] = torch.tensor(c)
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % eval_every == 0:
            model.eval()
            acc = greedy_accuracy(model, tokenizer, dev, max_new_tokens=max_new_tokens)
            history.append((step, acc))
            bar.set_postfix(loss=f"{loss.item():.3f}", dev_acc=f"{acc:.2f}")
            if acc >= target_dev_acc:
                break
    model.eval()
    hinted = greedy_accuracy(model, tokenizer, dev, hinted=True, max_new_tokens=max_new_tokens)
    return {"steps": step, "dev_acc": acc, "dev_acc_hinted": hinted, "history": history}
