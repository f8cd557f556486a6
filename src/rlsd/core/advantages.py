"""Group advantages (GRPO) and RLSD's token advantages. Pure torch.

Follows RLSD_SPEC.md (arXiv 2604.03128). Choices where the paper and its released code differ:
- the lambda schedule is the paper's (lam0 = 0.5 decaying to 0 over 50 steps); the released code's
  60 steps and its warm-up are settings (``decay_steps``, ``warmup_steps``);
- Delta_t uses whatever log-probs the caller passes as ``logps``; the trainer passes the rollout
  (old) log-probs, which equal the current policy's with one optimizer step per rollout batch;
- ``negative_only`` (released-code knob) reweights only sequences with A < 0.
Departure for numerical safety only: Delta is clamped to [-50, 50] before exp, which leaves every
clipped weight unchanged (exp(50) is far outside [1 - eps_w, 1 + eps_w]).
"""

from __future__ import annotations

import torch

from rlsd.core.logprobs import masked_mean, masked_std


def group_advantages(rewards: torch.Tensor, group_size: int, *, eps: float = 1e-6) -> torch.Tensor:
    """GRPO advantage: A_i = (R_i - mean_G R) / (std_G R + eps), std unbiased (torch.std).

    Args:
        rewards: (B,) rewards; the G members of a group are contiguous, B = num_groups * G.
        group_size: G >= 2.
    Returns:
        (B,) float32 advantages; a group whose rewards are all equal gets 0 for every member.

    >>> group_advantages(torch.tensor([1., 0., 0., 0.]), 4)
    tensor([ 1.5000, -0.5000, -0.5000, -0.5000])
    """
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2, got {group_size}")
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be (B,) with B divisible by group_size={group_size}, got {tuple(rewards.shape)}")
    r = rewards.float().view(-1, group_size)
    mean = r.mean(dim=1, keepdim=True)
    std = r.std(dim=1, keepdim=True)  # unbiased
    return ((r - mean) / (std + eps)).view(-1)


def rlsd_token_advantages(
    advantages: torch.Tensor,
    logps: torch.Tensor,
    teacher_logps: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    lam: float,
    eps_w: float = 0.2,
    negative_only: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """RLSD token advantage A_hat_t = A * ((1 - lam) + lam * clip(w_t, 1 - eps_w, 1 + eps_w)).

    w_t = exp(sign(A) * Delta_t), Delta_t = sg(log P_T(y_t) - log P_S(y_t)). No gradient flows through
    the result: the teacher only scales the magnitude, the verifier (sign of A) fixes the direction.

    Args:
        advantages: (B,) sequence advantages A.
        logps: (B, T) student log-probs of the sampled tokens.
        teacher_logps: (B, T) teacher log-probs of the same tokens under the privileged prompt.
        completion_mask: (B, T) 1 for valid completion tokens.
        lam: mixing weight lambda_k in [0, 1]; lam = 0 gives GRPO exactly.
        eps_w: clip half-width for w.
        negative_only: reweight only sequences with A < 0 (others keep A).
    Returns:
        (B, T) token advantages (zero at masked positions) and metrics over all valid tokens:
        delta_mean, delta_std, and on the raw weight actually applied (regardless of lam; w = 1 where
        A = 0, or where A >= 0 with negative_only): w_mean, log_w_mean (mean of log w, robust to the
        heavy tail of w), w_clipped_mean (mean of clip(w, 1 +- eps_w)), clip_low_frac (w < 1 - eps_w),
        clip_high_frac (w > 1 + eps_w).
    """
    mask = completion_mask.to(torch.float32)
    a = advantages.detach().float()
    delta = (teacher_logps.detach().float() - logps.detach().float())
    sign = torch.sign(a).unsqueeze(1)  # (B, 1); sign(0) = 0 gives w = 1
    w = torch.exp((sign * delta).clamp(-50.0, 50.0))
    applies = (a != 0).unsqueeze(1) if not negative_only else (a < 0).unsqueeze(1)
    w_used = torch.where(applies, w, torch.ones_like(w))
    scale = (1.0 - lam) + lam * w_used.clamp(1.0 - eps_w, 1.0 + eps_w)
    token_adv = a.unsqueeze(1) * scale * mask

    metrics = {
        "delta_mean": masked_mean(delta, mask).item(),
        "delta_std": masked_std(delta, mask).item(),
        "w_mean": masked_mean(w_used, mask).item(),  # heavy-tailed: one token can dominate it
        "log_w_mean": masked_mean(torch.log(w_used), mask).item(),  # robust: log of the geometric mean
        "w_clipped_mean": masked_mean(w_used.clamp(1.0 - eps_w, 1.0 + eps_w), mask).item(),
        "clip_low_frac": masked_mean((w_used < 1.0 - eps_w).float(), mask).item(),
        "clip_high_frac": masked_mean((w_used > 1.0 + eps_w).float(), mask).item(),
    }
    return token_adv, metrics


def lambda_schedule(step: int, *, lam0: float = 0.5, decay_steps: int = 50, warmup_steps: int = 0) -> float:
    """lambda_k for optimizer step k (0-based).

    With warmup_steps = 0 this is the paper's lam0 * max(0, 1 - k / decay_steps). With a warm-up,
    lambda rises linearly from 0 to lam0 over warmup_steps, then decays over decay_steps.
    """
    if step < warmup_steps:
        return lam0 * step / warmup_steps
    k = step - warmup_steps
    return lam0 * max(0.0, 1.0 - k / decay_steps)
