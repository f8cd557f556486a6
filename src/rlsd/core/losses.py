"""Policy surrogate, loss aggregation and the generalized JSD for OPSD. Pure torch.

Follows RLSD_SPEC.md. Choices:
- dual-clip (released RLSD code, value 3.0) is on by default; ``dual_clip=0`` turns it off;
- ``token_mean`` (global token mean, the default) makes micro-batches and ranks add up to the
  full-batch loss when the caller passes the global token count as ``num_tokens``;
  ``seq_mean_token_mean`` is the paper's text (per-sequence mean, then mean over sequences;
  pass the global sequence count as ``num_seqs``);
- the JSD's optional clip is applied to the summed per-token divergence (not to each vocabulary
  entry), as in the OPSD repository's default; clipped tokens carry no gradient.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from rlsd.core.logprobs import masked_mean

Agg = Literal["token_mean", "seq_mean_token_mean"]


def aggregate(
    loss_mat: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    agg: Agg = "token_mean",
    num_tokens: float | None = None,
    num_seqs: float | None = None,
) -> torch.Tensor:
    """Reduce a (B, T) per-token loss to a scalar.

    Args:
        loss_mat: (B, T) per-token loss.
        completion_mask: (B, T) 1 for valid tokens.
        agg: "token_mean" = sum / num_tokens; "seq_mean_token_mean" = sum_i mean_t / num_seqs.
        num_tokens: the normaliser for token_mean (default: valid tokens here). Pass the global count
            when this is one micro-batch or one rank of a larger batch.
        num_seqs: the normaliser for seq_mean_token_mean (default: B here).
    """
    mask = completion_mask.to(loss_mat.dtype)
    if agg == "token_mean":
        n = mask.sum().clamp(min=1) if num_tokens is None else max(float(num_tokens), 1.0)
        return (loss_mat * mask).sum() / n
    if agg == "seq_mean_token_mean":
        per_seq = (loss_mat * mask).sum(1) / mask.sum(1).clamp(min=1)
        n = loss_mat.shape[0] if num_seqs is None else max(float(num_seqs), 1.0)
        return per_seq.sum() / n
    raise ValueError(f"agg must be token_mean or seq_mean_token_mean, got {agg!r}")


def policy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    token_advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    dual_clip: float = 3.0,
    agg: Agg = "token_mean",
    num_tokens: float | None = None,
    num_seqs: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate with clip-higher and dual-clip.

    rho = exp(logps - old_logps); L = -min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A);
    for A < 0 and dual_clip > 0: L = min(L, -dual_clip * A).

    Args:
        logps: (B, T) current policy log-probs of the sampled tokens (with gradient).
        old_logps: (B, T) log-probs under the rollout policy (no gradient).
        token_advantages: (B, T) A_hat (RLSD) or A broadcast over tokens (GRPO); no gradient.
        completion_mask: (B, T).
    Returns:
        scalar loss and metrics: clip_frac (fraction of valid tokens where the clipped branch is
        taken), dual_clip_frac, ratio_mean, approx_kl (k3 estimator of KL(old || new)).
    """
    mask = completion_mask.to(torch.float32)
    adv = token_advantages.detach().float()
    log_ratio = logps.float() - old_logps.detach().float()
    ratio = torch.exp(log_ratio)
    loss1 = -adv * ratio
    loss2 = -adv * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    clipped = torch.maximum(loss1, loss2)
    loss_mat = clipped
    dual_mask = torch.zeros_like(mask, dtype=torch.bool)
    if dual_clip > 0:
        bound = -dual_clip * adv
        dual_mask = (adv < 0) & (clipped > bound)
        loss_mat = torch.where(adv < 0, torch.minimum(clipped, bound), clipped)
    loss = aggregate(loss_mat, mask, agg=agg, num_tokens=num_tokens, num_seqs=num_seqs)
    with torch.no_grad():
        metrics = {
            "clip_frac": masked_mean((loss2 > loss1).float(), mask).item(),
            "dual_clip_frac": masked_mean(dual_mask.float(), mask).item(),
            "ratio_mean": masked_mean(ratio, mask).item(),
            "approx_kl": masked_mean(torch.exp(-log_ratio) - 1 + log_ratio, mask).item(),
        }
    return loss, metrics


def generalized_jsd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    beta: float = 0.5,
    token_clip: float | None = None,
) -> torch.Tensor:
    """Per-token generalized Jensen-Shannon divergence JSD_beta(P_T || P_S) over the full vocabulary.

    JSD_beta = beta * KL(P_T || M) + (1 - beta) * KL(P_S || M), M = beta * P_T + (1 - beta) * P_S.
    beta = 0 is defined as the forward KL(P_T || P_S) and beta = 1 as the reverse KL(P_S || P_T)
    (the mixture formula vanishes there). The teacher is a fixed target: no gradient reaches it.

    Args:
        student_logits: (B, T, V) student logits at the completion positions.
        teacher_logits: (B, T, V) teacher logits at the same positions (privileged prompt).
        completion_mask: (B, T).
        beta: in [0, 1].
        token_clip: if set (> 0), clamp each token's summed divergence to at most this value.
    Returns:
        (B, T) divergence, zero at masked positions.
    """
    s = torch.log_softmax(student_logits.float(), dim=-1)
    t = torch.log_softmax(teacher_logits.detach().float(), dim=-1)
    if beta <= 0.0:
        div = (t.exp() * (t - s)).sum(-1)
    elif beta >= 1.0:
        div = (s.exp() * (s - t)).sum(-1)
    else:
        m = torch.logsumexp(torch.stack([t + math.log(beta), s + math.log(1.0 - beta)]), dim=0)
        div = beta * (t.exp() * (t - m)).sum(-1) + (1.0 - beta) * (s.exp() * (s - m)).sum(-1)
    if token_clip:
        div = div.clamp(max=token_clip)
    return div * completion_mask.to(div.dtype)
