import math

import pytest
import torch

from rlsd.core import group_advantages, lambda_schedule, rlsd_token_advantages


def test_group_of_four_by_hand():
    # rewards [1,0,0,0]: mean 0.25, unbiased std sqrt(((0.75)^2 + 3 * 0.25^2) / 3) = sqrt(0.25) = 0.5
    a = group_advantages(torch.tensor([1.0, 0, 0, 0]), 4)
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25]) / (0.5 + 1e-6)
    torch.testing.assert_close(a, expected)
    assert a.sum().abs() < 1e-6


def test_zero_variance_group_is_zero_not_nan():
    a = group_advantages(torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0, 0.5, 0.5, 1, 1]), 4)
    assert torch.isfinite(a).all()
    assert (a[:8] == 0).all()
    assert a[8] < 0 and a[10] > 0


def test_groups_are_independent_loop_reference():
    g = torch.Generator().manual_seed(0)
    for G in (2, 4, 8):
        r = torch.rand(6 * G, generator=g).round()
        a = group_advantages(r, G)
        for i in range(6):
            grp = [float(x) for x in r[i * G:(i + 1) * G]]
            mean = sum(grp) / G
            std = math.sqrt(sum((x - mean) ** 2 for x in grp) / (G - 1))
            for j in range(G):
                assert abs(a[i * G + j].item() - (grp[j] - mean) / (std + 1e-6)) < 1e-4


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError, match=">= 2"):
        group_advantages(torch.zeros(4), 1)


def _rlsd_loop(adv, logps, tlogps, mask, lam, eps_w, negative_only):
    B, T = logps.shape
    out = torch.zeros(B, T)
    for i in range(B):
        a = adv[i].item()
        s = (a > 0) - (a < 0)
        for t in range(T):
            if not mask[i, t]:
                continue
            w = math.exp(s * (tlogps[i, t].item() - logps[i, t].item()))
            if negative_only and a >= 0:
                w = 1.0
            w = min(max(w, 1 - eps_w), 1 + eps_w)
            out[i, t] = a * ((1 - lam) + lam * w)
    return out


@pytest.mark.parametrize("negative_only", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rlsd_matches_loop_reference(seed, negative_only):
    g = torch.Generator().manual_seed(seed)
    B, T = 8, 7
    adv = torch.randn(B, generator=g)
    adv[0] = 0.0
    logps = -torch.rand(B, T, generator=g) * 3
    tlogps = logps + torch.randn(B, T, generator=g) * 0.5
    mask = (torch.rand(B, T, generator=g) > 0.2).long()
    got, m = rlsd_token_advantages(adv, logps, tlogps, mask, lam=0.37, eps_w=0.2, negative_only=negative_only)
    ref = _rlsd_loop(adv, logps, tlogps, mask, 0.37, 0.2, negative_only)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)
    assert 0 <= m["clip_low_frac"] <= 1 and 0 <= m["clip_high_frac"] <= 1


def test_rlsd_by_hand():
    # A = +2, teacher likes token 0 (P_T/P_S = e^0.1 ~ 1.105, inside the clip), dislikes token 1 (e^-1: clipped to 0.8)
    adv = torch.tensor([2.0, -1.0])
    logps = torch.tensor([[-1.0, -1.0], [-1.0, -1.0]])
    tlogps = torch.tensor([[-0.9, -2.0], [-0.9, -2.0]])
    mask = torch.ones(2, 2)
    got, m = rlsd_token_advantages(adv, logps, tlogps, mask, lam=0.5)
    w_pos = [math.exp(0.1), 0.8]  # sign +: w = P_T / P_S
    w_neg = [math.exp(-0.1), 1.2]  # sign -: w = P_S / P_T = e^{+1} clipped to 1.2
    expected = torch.tensor([[2 * (0.5 + 0.5 * w) for w in w_pos], [-1 * (0.5 + 0.5 * w) for w in w_neg]])
    torch.testing.assert_close(got, expected)
    assert m["clip_low_frac"] == pytest.approx(0.25) and m["clip_high_frac"] == pytest.approx(0.25)
    assert m["delta_mean"] == pytest.approx((0.1 - 1.0) / 2)


def test_lambda_zero_is_grpo_exactly():
    g = torch.Generator().manual_seed(3)
    adv = torch.randn(6, generator=g)
    logps, tlogps = -torch.rand(6, 5, generator=g), -torch.rand(6, 5, generator=g) * 4
    mask = torch.ones(6, 5)
    mask[2, 3:] = 0
    got, _ = rlsd_token_advantages(adv, logps, tlogps, mask, lam=0.0)
    assert torch.equal(got, adv[:, None] * mask)


def test_sign_of_token_advantage_equals_sequence_sign():
    g = torch.Generator().manual_seed(4)
    adv = torch.randn(32, generator=g)
    adv[:4] = 0
    logps, tlogps = -torch.rand(32, 9, generator=g) * 10, -torch.rand(32, 9, generator=g) * 10
    mask = torch.ones(32, 9)
    for lam in (0.0, 0.5, 1.0):
        got, _ = rlsd_token_advantages(adv, logps, tlogps, mask, lam=lam)
        assert torch.equal(torch.sign(got), torch.sign(adv)[:, None].expand_as(got))


def test_no_gradient_flows_through_token_advantages():
    logps = torch.zeros(2, 3, requires_grad=True)
    tlogps = torch.zeros(2, 3, requires_grad=True)
    got, _ = rlsd_token_advantages(torch.tensor([1.0, -1.0]), logps, tlogps, torch.ones(2, 3), lam=0.5)
    assert not got.requires_grad


def test_extreme_delta_stays_finite():
    got, m = rlsd_token_advantages(torch.tensor([1.0]), torch.tensor([[-1e4]]), torch.tensor([[0.0]]),
                                   torch.ones(1, 1), lam=1.0)
    assert got.item() == pytest.approx(1.2) and math.isfinite(m["w_mean"])


def test_lambda_schedule():
    assert lambda_schedule(0) == 0.5
    assert lambda_schedule(25) == pytest.approx(0.25)
    assert lambda_schedule(50) == 0.0 and lambda_schedule(500) == 0.0
    assert lambda_schedule(30, lam0=0.5, decay_steps=60) == pytest.approx(0.25)  # released code's 60 steps
    assert lambda_schedule(0, warmup_steps=10) == 0.0
    assert lambda_schedule(5, warmup_steps=10) == pytest.approx(0.25)
    assert lambda_schedule(10, warmup_steps=10) == 0.5
    assert lambda_schedule(35, warmup_steps=10) == pytest.approx(0.25)


def test_eps_keeps_a_near_constant_group_bounded():
    # rewards 2e-6 and 0: mean 1e-6, unbiased std sqrt(2) * 1e-6; A = 1e-6 / (std + 1e-6) = 1 / (sqrt(2) + 1)
    a = group_advantages(torch.tensor([2e-6, 0.0]), 2)
    want = 1 / (math.sqrt(2) + 1)
    assert a[0].item() == pytest.approx(want, rel=1e-3) and a[1].item() == pytest.approx(-want, rel=1e-3)


def test_rlsd_metrics_by_hand():
    # one sequence A = +1, four tokens with P_T / P_S = 1, 1.1, 1.5, 0.5; eps_w 0.2
    ratios = [1.0, 1.1, 1.5, 0.5]
    logps = torch.full((1, 4), -2.0)
    tlogps = logps + torch.log(torch.tensor([ratios]))
    _, m = rlsd_token_advantages(torch.tensor([1.0]), logps, tlogps, torch.ones(1, 4), lam=0.5)
    deltas = [math.log(r) for r in ratios]
    mean = sum(deltas) / 4
    assert set(m) == {"delta_mean", "delta_std", "w_mean", "log_w_mean", "w_clipped_mean", "clip_low_frac",
                      "clip_high_frac"}
    assert m["delta_mean"] == pytest.approx(mean, abs=1e-6)
    assert m["delta_std"] == pytest.approx(math.sqrt(sum((d - mean) ** 2 for d in deltas) / 4), rel=1e-5)
    assert m["w_mean"] == pytest.approx(sum(ratios) / 4, rel=1e-5)
    assert m["log_w_mean"] == pytest.approx(mean, abs=1e-6)
    assert m["w_clipped_mean"] == pytest.approx((1.0 + 1.1 + 1.2 + 0.8) / 4, rel=1e-5)
    assert m["clip_low_frac"] == pytest.approx(0.25) and m["clip_high_frac"] == pytest.approx(0.25)


def test_rlsd_clip_fractions_do_not_count_ties():
    # eps_w = 0: the clip range is [1, 1]; w == 1 exactly (A = 0, or equal log-probs) is inside, not clipped
    logps = torch.zeros(2, 2)
    _, m = rlsd_token_advantages(torch.tensor([0.0, 1.0]), logps, logps.clone(), torch.ones(2, 2), lam=0.5, eps_w=0.0)
    assert m["clip_low_frac"] == 0.0 and m["clip_high_frac"] == 0.0 and m["w_clipped_mean"] == 1.0


def test_log_w_is_clamped_at_plus_minus_50():
    for sign, want in ((1.0, 50.0), (-1.0, -50.0)):
        got, m = rlsd_token_advantages(torch.tensor([sign]), torch.tensor([[-1e4]]), torch.tensor([[0.0]]),
                                       torch.ones(1, 1), lam=1.0)
        assert m["log_w_mean"] == pytest.approx(want) and math.isfinite(m["w_mean"])
        assert got.item() == pytest.approx(sign * (1.2 if sign > 0 else 0.8))


def test_token_advantages_are_float32_whatever_the_mask_dtype():
    got, _ = rlsd_token_advantages(torch.tensor([1.0]), torch.zeros(1, 2), torch.zeros(1, 2),
                                   torch.ones(1, 2, dtype=torch.float64), lam=0.5)
    assert got.dtype == torch.float32
