import math

import pytest
import torch

from rlsd.core import (
    aggregate,
    entropy_from_logits,
    generalized_jsd,
    masked_mean,
    masked_std,
    masked_sum,
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


# ---- the policy statistics, hand-computed (issue 21: they were only bounded or never checked) -------------

# (ratio, advantage, valid) per token; old log-prob 0, so logps = log(ratio). eps_low 0.2, eps_high 0.28, dual 3.
TOKENS = [
    (1.0, +1.0, 1),  # inside the clip range: both branches equal (a tie is not a clip)
    (1.5, +1.0, 1),  # A > 0 above 1 + eps_high: clipped branch taken
    (0.5, +1.0, 1),  # A > 0 below 1 - eps_low: the unclipped branch is the max (not a clip)
    (0.5, -1.0, 1),  # A < 0 below 1 - eps_low: clipped branch taken
    (5.0, -1.0, 1),  # A < 0, ratio 5: unclipped loss 5 > dual bound 3: dual-clipped
    (2.0, -1.0, 1),  # A < 0, ratio 2: unclipped loss 2 < 3: neither
    (1.2, 0.0, 1),   # A = 0: both branches are 0 (a tie)
    (1.5, +1.0, 0),  # masked: counts nowhere
]


def _stat_inputs():
    ratios = torch.tensor([[r for r, _, _ in TOKENS]])
    adv = torch.tensor([[a for _, a, _ in TOKENS]])
    mask = torch.tensor([[m for _, _, m in TOKENS]], dtype=torch.float32)
    return torch.log(ratios), torch.zeros_like(ratios), adv, mask


def test_policy_statistics_by_hand():
    logps, old, adv, mask = _stat_inputs()
    loss, m = policy_loss(logps, old, adv, mask)
    valid = [(r, a) for r, a, v in TOKENS if v]
    assert len(valid) == 7
    assert m["clip_frac"] == pytest.approx(2 / 7)       # tokens 1 and 3; ties (0, 6) are not clips
    assert m["dual_clip_frac"] == pytest.approx(1 / 7)  # token 4
    assert m["ratio_mean"] == pytest.approx((1 + 1.5 + 0.5 + 0.5 + 5 + 2 + 1.2) / 7)
    assert m["approx_kl"] == pytest.approx(sum(1 / r - 1 + math.log(r) for r, _ in valid) / 7)
    # per-token losses: -1, -1.28, -0.5, 0.8, min(5, 3) = 3, 2, 0
    assert loss.item() == pytest.approx((-1 - 1.28 - 0.5 + 0.8 + 3 + 2 + 0) / 7)
    loss0, m0 = policy_loss(logps, old, adv, mask, dual_clip=0.0)
    assert m0["dual_clip_frac"] == 0.0 and m0["clip_frac"] == pytest.approx(2 / 7)
    assert loss0.item() == pytest.approx((-1 - 1.28 - 0.5 + 0.8 + 5 + 2 + 0) / 7)


def test_policy_statistics_other_clip_widths_and_aggregation():
    logps, old, adv, mask = _stat_inputs()
    # eps_low 0.6 / eps_high 0.6: token 1 (1.5) and token 3 (0.5) are now inside [0.4, 1.6]; dual at 4
    loss, m = policy_loss(logps, old, adv, mask, eps_low=0.6, eps_high=0.6, dual_clip=4.0)
    assert m["clip_frac"] == 0.0 and m["dual_clip_frac"] == pytest.approx(1 / 7)
    assert loss.item() == pytest.approx((-1 - 1.5 - 0.5 + 0.5 + 4 + 2 + 0) / 7)
    # seq_mean_token_mean over two sequences (row 0: tokens 0-3, row 1: tokens 4-7 with 7 masked)
    two = [x.view(2, 4) for x in (logps, old, adv, mask)]
    loss, _ = policy_loss(*two, agg="seq_mean_token_mean")
    assert loss.item() == pytest.approx(((-1 - 1.28 - 0.5 + 0.8) / 4 + (3 + 2 + 0) / 3) / 2)
    loss, _ = policy_loss(*two, agg="seq_mean_token_mean", num_seqs=4)
    assert loss.item() == pytest.approx(((-1 - 1.28 - 0.5 + 0.8) / 4 + (3 + 2 + 0) / 3) / 4)
    loss, _ = policy_loss(*two, num_tokens=14)
    assert loss.item() == pytest.approx((-1 - 1.28 - 0.5 + 0.8 + 3 + 2 + 0) / 14)


def test_policy_statistics_with_no_valid_token_are_zero():
    logps, old, adv, _ = _stat_inputs()
    loss, m = policy_loss(logps, old, adv, torch.zeros_like(adv))
    assert loss.item() == 0.0 and m == {"clip_frac": 0.0, "dual_clip_frac": 0.0, "ratio_mean": 0.0, "approx_kl": 0.0}


def test_dual_clip_counts_only_negative_advantages_strictly_above_the_bound():
    # A = +0.5 with ratio 1.5 (clipped branch -0.64 is above the "bound" -1.5 of a positive A: no dual clip)
    # A = -1 with the loss exactly at the bound (ratio == dual_clip): a tie is not a dual clip
    r = torch.exp(torch.log(torch.tensor([[1.5, 2.0]])))
    tie = r[0, 1].item()  # the float32 ratio itself, so -A * ratio == dual_clip * -A exactly
    loss, m = policy_loss(torch.log(r), torch.zeros(1, 2), torch.tensor([[0.5, -1.0]]), torch.ones(1, 2), dual_clip=tie)
    assert m["dual_clip_frac"] == 0.0 and m["clip_frac"] == pytest.approx(0.5)
    assert loss.item() == pytest.approx((-0.5 * 1.28 + tie) / 2)


def test_default_aggregation_normalisers_and_error():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert aggregate(loss, mask).item() == pytest.approx(10 / 4)  # token_mean is the default
    assert aggregate(loss, mask, num_tokens=1).item() == pytest.approx(10.0)  # a global count of 1 token
    assert aggregate(loss, mask, num_tokens=0.5).item() == pytest.approx(10.0)  # never below 1
    assert aggregate(loss, mask, agg="seq_mean_token_mean", num_seqs=1).item() == pytest.approx(6.0)
    assert aggregate(loss, mask.double()).dtype == torch.float32  # the loss keeps the per-token losses' dtype
    with pytest.raises(ValueError, match="agg must be token_mean or seq_mean_token_mean, got 'sum'"):
        aggregate(loss, mask, agg="sum")


def test_masked_statistics_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0], [6.0, 5.0, 4.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_sum(x, mask).item() == 9.0
    torch.testing.assert_close(masked_sum(x, mask, 1), torch.tensor([3.0, 6.0]))
    torch.testing.assert_close(masked_sum(x, mask, 0), torch.tensor([7.0, 2.0, 0.0]))
    assert masked_mean(x, mask).item() == pytest.approx(3.0)
    torch.testing.assert_close(masked_mean(x, mask, 1), torch.tensor([1.5, 6.0]))  # one valid element: itself
    torch.testing.assert_close(masked_mean(x, mask, 0), torch.tensor([3.5, 2.0, 0.0]))  # empty column: 0
    # population std of {1, 2, 6}: mean 3, variance (4 + 1 + 9) / 3
    assert masked_std(x, mask).item() == pytest.approx(math.sqrt(14 / 3))
    assert masked_std(torch.tensor([[-2.0, 4.0]]), torch.ones(1, 2)).item() == pytest.approx(3.0)
    # masks of another dtype do not change the statistic's dtype
    assert masked_sum(x.bfloat16(), mask.float()).dtype == torch.bfloat16
    assert masked_mean(x.bfloat16(), mask.float()).dtype == torch.bfloat16


def test_entropy_per_position():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, 4, generator=g)
    p = torch.softmax(logits, -1)
    torch.testing.assert_close(entropy_from_logits(logits), -(p * p.log()).sum(-1))


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_jsd_per_position_and_default_beta(beta):
    g = torch.Generator().manual_seed(6)
    s, t = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    mask = torch.ones(2, 3, dtype=torch.float64)
    got = generalized_jsd(s, t, mask, beta=beta)
    assert got.shape == (2, 3) and got.dtype == torch.float32
    for i in range(2):
        for j in range(3):
            one = generalized_jsd(s[i:i + 1, j:j + 1], t[i:i + 1, j:j + 1], torch.ones(1, 1), beta=beta)
            assert got[i, j].item() == pytest.approx(one.item(), rel=1e-5, abs=1e-7)
    if beta == 0.5:  # the default
        torch.testing.assert_close(generalized_jsd(s, t, mask), got)
