"""Pure torch math for RLSD and its baselines: importing this costs only torch."""

from rlsd.core.advantages import group_advantages, lambda_schedule, rlsd_token_advantages
from rlsd.core.logprobs import entropy_from_logits, masked_mean, masked_std, masked_sum, selective_log_softmax
from rlsd.core.losses import aggregate, generalized_jsd, policy_loss

__all__ = [
    "aggregate",
    "entropy_from_logits",
    "generalized_jsd",
    "group_advantages",
    "lambda_schedule",
    "masked_mean",
    "masked_std",
    "masked_sum",
    "policy_loss",
    "rlsd_token_advantages",
    "selective_log_softmax",
]
