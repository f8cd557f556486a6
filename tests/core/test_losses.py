import math

import pytest
import torch

from rlsd.core import (
    aggregate,
    entropy_from_logits,
    generalized_jsd,
    masked_mean,
    policy_loss,
    selective_log_softmax,
)


def test_selective_log_softmax_matches_full():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g)
    idx = torch.randint(0, 11, (3, 5), generator=g)
    ref = torch.log_softmax(logits, -1).gather(-1, idx[..., None]).squeeze(-1)
    torch.testing.assert_close(selective_log_softmax(logits, idx), ref)


def test_entropy_uniform_and_masked_mean_empty():
    assert entropy_from_logits(torch.zeros(1, 1, 4)).item() == pytest.approx(math.log(4))
    assert masked_mean(torch.ones(2, 2), torch.zeros(2, 2)).item() == 0.0


def _loop_policy_loss(logps, old, adv, mask, eps_low, eps_high, dual_clip):
    total, n = 0.0, 0
    for i in range(logps.shape[0]):
        for t in range(logps.shape[1]):
            if not mask[i, t]:
                continue
            r = math.exp(logps[i, t] - old[i, t])
            a = adv[i, t].item()
            l = max(-a * r, -a * min(max(r, 1 - eps_low), 1 + eps_high))
            if a < 0 and dual_clip:
                l = min(l, -dual_clip * a)
            total += l
            n += 1
    return total / n


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_policy_loss_matches_loop(seed):
    g = torch.Generator().manual_seed(seed)
    logps = -torch.rand(5, 6, generator=g) * 2
    old = logps + torch.randn(5, 6, generator=g) * 0.6  # ratios well outside the clip range too
    adv = torch.randn(5, 6, generator=g) * 2
    mask = (torch.rand(5, 6, generator=g) > 0.25).float()
    loss, m = policy_loss(logps, old, adv, mask)
    assert loss.item() == pytest.approx(_loop_policy_loss(logps, old, adv, mask, 0.2, 0.28, 3.0), rel=1e-5)
    assert 0 <= m["clip_frac"] <= 1


def _grad_at_ratio(ratio, adv, dual_clip=3.0):
    lp = torch.tensor([[math.log(ratio)]], requires_grad=True)
    loss, _ = policy_loss(lp, torch.zeros(1, 1), torch.tensor([[adv]]), torch.ones(1, 1), dual_clip=dual_clip)
    (g,) = torch.autograd.grad(loss, lp)
    return loss.item(), g.item()


def test_clip_branches_carry_gradient_or_not():
    # A > 0: gradient while ratio < 1 + eps_high (0.28), none above (clip-higher)
    assert _grad_at_ratio(1.27, 1.0)[1] == pytest.approx(-1.27)
    assert _grad_at_ratio(1.29, 1.0)[1] == 0.0
    # A > 0 and ratio below 1 - eps_low: the unclipped branch is the max -> gradient flows
    assert _grad_at_ratio(0.5, 1.0)[1] == pytest.approx(-0.5)
    # A < 0: gradient while ratio > 1 - eps_low (0.2), none below
    assert _grad_at_ratio(0.81, -1.0)[1] == pytest.approx(0.81)
    assert _grad_at_ratio(0.79, -1.0)[1] == 0.0
    # A < 0, huge ratio: dual clip caps the loss at -3 * A = 3 and removes the gradient
    loss, g = _grad_at_ratio(5.0, -1.0)
    assert loss == pytest.approx(3.0) and g == 0.0
    loss, g = _grad_at_ratio(5.0, -1.0, dual_clip=0.0)
    assert loss == pytest.approx(5.0) and g == pytest.approx(5.0)


def test_token_mean_over_micro_batches_equals_full_batch():
    g = torch.Generator().manual_seed(7)
    B, T = 8, 5
    logps = (-torch.rand(B, T, generator=g)).requires_grad_(True)
    old = logps.detach() + torch.randn(B, T, generator=g) * 0.1
    adv = torch.randn(B, T, generator=g)
    mask = (torch.rand(B, T, generator=g) > 0.3).float()
    for agg in ("token_mean", "seq_mean_token_mean"):
        full, _ = policy_loss(logps, old, adv, mask, agg=agg)
        (g_full,) = torch.autograd.grad(full, logps)
        n_tok, n_seq = mask.sum().item(), B
        parts = [policy_loss(logps[s:s + 3], old[s:s + 3], adv[s:s + 3], mask[s:s + 3], agg=agg,
                             num_tokens=n_tok, num_seqs=n_seq)[0] for s in (0, 3, 6)]
        total = sum(parts)
        (g_parts,) = torch.autograd.grad(total, logps)
        torch.testing.assert_close(total, full)
        torch.testing.assert_close(g_parts, g_full)


def test_aggregate_by_hand():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert aggregate(loss, mask, agg="token_mean").item() == pytest.approx(10 / 4)
    assert aggregate(loss, mask, agg="seq_mean_token_mean").item() == pytest.approx((2 + 4) / 2)
    with pytest.raises(ValueError):
        aggregate(loss, mask, agg="sum")


# ---- generalized JSD on a 3-token vocabulary -------------------------------------------------

P_T = [0.7, 0.2, 0.1]
P_S = [0.2, 0.5, 0.3]


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def _logits(p):
    return torch.tensor([[[math.log(x) for x in p]]])


@pytest.mark.parametrize("beta", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_jsd_by_hand(beta):
    got = generalized_jsd(_logits(P_S), _logits(P_T), torch.ones(1, 1), beta=beta).item()
    if beta == 0.0:
        ref = _kl(P_T, P_S)  # forward KL(T || S)
    elif beta == 1.0:
        ref = _kl(P_S, P_T)  # reverse KL(S || T)
    else:
        m = [beta * a + (1 - beta) * b for a, b in zip(P_T, P_S)]
        ref = beta * _kl(P_T, m) + (1 - beta) * _kl(P_S, m)
    assert got == pytest.approx(ref, rel=1e-5)


def test_jsd_is_zero_for_equal_distributions_and_masks():
    lg = torch.randn(2, 3, 5)
    assert generalized_jsd(lg, lg.clone(), torch.ones(2, 3)).abs().max() < 1e-6
    d = generalized_jsd(torch.randn(2, 3, 5), torch.randn(2, 3, 5), torch.tensor([[1, 1, 0], [0, 0, 0]]))
    assert (d[0, 2] == 0) and (d[1] == 0).all() and (d[0, :2] > 0).all()


def test_jsd_token_clip_and_teacher_gets_no_gradient():
    s = _logits(P_S).requires_grad_(True)
    t = _logits(P_T).requires_grad_(True)
    full = generalized_jsd(s, t, torch.ones(1, 1), beta=0.5)
    clipped = generalized_jsd(s, t, torch.ones(1, 1), beta=0.5, token_clip=0.05)
    assert full.item() > 0.05 and clipped.item() == pytest.approx(0.05)
    full.sum().backward()
    assert t.grad is None and s.grad is not None and s.grad.abs().sum() > 0
