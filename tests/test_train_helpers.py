"""The trainer's batching helpers with exact expected values (issue 21: mutation testing of src/rlsd/train.py's
helpers): padding, the Batch, the per-step data position, the cross-rank means, the teacher's and the
policy's log-probs on a real tiny model, and one update of every algorithm on a one-vector toy policy."""

from __future__ import annotations

import math
import random

import pytest
import torch

from rlsd import core
from rlsd.config import load_config
from rlsd.tasks import Task
from tests.test_train_updates import ToyEngine, ToyPolicy

# ---------------------------------------------------------------------------------------------- small helpers


def test_left_pad_exact():
    from rlsd.train import left_pad

    ids, mask = left_pad([[5, 6, 7], [8], []], pad_id=2)
    assert ids.tolist() == [[5, 6, 7], [2, 2, 8], [2, 2, 2]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    assert ids.dtype == torch.long and mask.dtype == torch.long
    ids, mask = left_pad([[9]], pad_id=0)
    assert ids.tolist() == [[9]] and mask.tolist() == [[1]]


def test_batch_starts_with_zero_log_probs_and_nothing_ready():
    from rlsd.train import Batch

    cm = torch.tensor([[1, 1, 0], [1, 0, 0]])
    b = Batch(torch.zeros(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long),
              cm, torch.zeros(2))
    for t in (b.old_logps, b.teacher_logps):
        assert t.shape == (2, 3) and t.dtype == torch.float32 and not t.any()
    assert b.old_logps is not b.teacher_logps
    assert (b.old_ready, b.teacher_ready) == (False, False)
    assert b.teacher_prompt_ids is None and b.teacher_prompt_mask is None and b.sampler_logps is None


def test_update_rows_uneven_split_drops_the_remainder():
    from rlsd.train import update_rows

    assert update_rows(10, 3, 1) == [slice(0, 3), slice(3, 6), slice(6, 9)]
    assert update_rows(6, 3, 2) == [slice(0, 2), slice(2, 4), slice(4, 6)] * 2


def test_step_seed_is_pinned():
    """The seeds of every step's sampling: changing them changes every run (and breaks resuming a run
    across versions), so the values are pinned."""
    from rlsd.train import _step_seed

    assert _step_seed(0, 0, 0) == 0
    assert _step_seed(1, 0, 0) == 1_000_003
    assert _step_seed(0, 1, 0) == 10_007
    assert _step_seed(0, 0, 1) == 101
    assert _step_seed(3, 7, 1003) == (3 * 1_000_003 + 7 * 10_007 + 1003 * 101) % (2**31 - 1)
    assert _step_seed(5000, 0, 0) == 5000 * 1_000_003 % (2**31 - 1)  # wraps below 2**31 - 1


def test_prompt_order_and_tasks_for_step():
    from rlsd.train import _prompt_order, _tasks_for_step

    assert _prompt_order(5, 0, 0, False) == (0, 1, 2, 3, 4)
    want = list(range(7))
    random.Random(3 * 7919 + 2).shuffle(want)
    assert _prompt_order(7, 3, 2, True) == tuple(want)
    assert _prompt_order(7, 3, 1, True) != _prompt_order(7, 3, 2, True)  # a new order every epoch
    tasks = [Task(id=f"t{i}", prompt=f"q{i}", privileged_context="", answer="1") for i in range(5)]
    ids = lambda ts: [t.id for t in ts]  # noqa: E731
    assert ids(_tasks_for_step(tasks, 0, 3, 0, False)) == ["t0", "t1", "t2"]
    assert ids(_tasks_for_step(tasks, 1, 3, 0, False)) == ["t3", "t4", "t0"]  # wraps into epoch 1
    assert ids(_tasks_for_step(tasks, 2, 3, 0, False)) == ["t1", "t2", "t3"]
    # shuffled: every epoch visits every task once, in that epoch's order
    e0, e1 = _prompt_order(5, 9, 0, True), _prompt_order(5, 9, 1, True)
    steps = [t for s in range(2) for t in ids(_tasks_for_step(tasks, s, 5, 9, True))]
    assert steps == [f"t{i}" for i in e0] + [f"t{i}" for i in e1]


def test_means_over_one_rank():
    from rlsd.train import _all_reduce, _weighted_mean

    vals = [1.0, 2.5]
    out = _all_reduce(vals, 1, torch.device("cpu"))
    assert out == vals and out is not vals
    assert _weighted_mean({"b": 4.0, "a": 2.0}, 3.0, 1, torch.device("cpu")) == {"a": 2.0, "b": 4.0}
    assert _weighted_mean({"a": 2.0}, 0.0, 1, torch.device("cpu")) == {"a": 0.0}  # no weight: 0, not NaN


def test_weighted_mean_over_ranks(monkeypatch):
    """Two ranks (the collective faked): rank 0 holds 2.0 with weight 1, rank 1 holds 5.0 with weight 3."""
    import rlsd.train as T

    def fake_all_reduce(t, *a, **k):
        t += torch.tensor([5.0 * 3, 3.0], dtype=t.dtype)  # the other rank's value * weight, and weight

    monkeypatch.setattr(T.dist, "all_reduce", fake_all_reduce)
    assert T._all_reduce([1.0, 2.0], 2, torch.device("cpu")) == [16.0, 5.0]
    assert T._weighted_mean({"a": 2.0}, 1.0, 2, torch.device("cpu")) == {"a": pytest.approx((2.0 + 15.0) / 4)}


def _metrics_batch(sampler: bool):
    from rlsd.train import Batch

    cm = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1]])  # 9 tokens
    b = Batch(torch.zeros(4, 1, dtype=torch.long), torch.ones(4, 1, dtype=torch.long), torch.zeros(4, 3, dtype=torch.long),
              cm, torch.zeros(4), sampler_logps=torch.full((4, 3), -1.0) if sampler else None)
    b.old_logps = torch.full((4, 3), -1.5)  # |sampler - trainer| = 0.5 on every token
    return b


def test_batch_metrics_by_hand():
    """Two groups of two: rewards (1, 0 | 1, 1), one unverifiable score, 9 completion tokens; two updates
    whose summed statistics saw 18 tokens (each update counts its tokens)."""
    from rlsd.train import batch_metrics

    sums = {"tokens": 18.0, "entropy": 27.0, "clip_frac": 3.6, "loss": 0.5, "pg_loss": 0.3, "jsd_loss": 0.2}
    m = batch_metrics(_metrics_batch(sampler=True), torch.tensor([1.0, 0.0, 1.0, 1.0]), [1.0, None, 1.0, 1.0], sums,
                      {"w_clip_low_frac": 0.25}, group=2, updates=2, world=1, device=torch.device("cpu"))
    assert m == pytest.approx({
        "reward_mean": 0.75, "accuracy": 0.75, "unverifiable_frac": 0.25,
        "zero_var_frac": 0.5,  # the second group's rewards are equal
        "completion_len": 9 / 4, "entropy": 27.0 / 18, "clip_frac": 3.6 / 18,
        "w_clip_low_frac": 0.25, "sampler_logp_mismatch": 0.5,
        "loss": 0.25, "pg_loss": 0.15, "jsd_loss": 0.1})  # the mean over the two updates
    assert sums == {}  # consumed: nothing is logged twice
    # a partial reward (0.5) is no pass, and without a sampler's log-probs there is no mismatch to log
    sums = {"tokens": 0.0, "entropy": 0.0, "loss": 0.0, "pg_loss": 0.0, "jsd_loss": 0.0}
    m = batch_metrics(_metrics_batch(sampler=False), torch.tensor([0.5, 0.5, 1.0, 0.0]), [0.5, 0.5, 1.0, 0.0], sums, {},
                      group=2, updates=1, world=1, device=torch.device("cpu"))
    assert m["accuracy"] == 0.25 and m["zero_var_frac"] == 0.5 and m["entropy"] == 0.0  # no tokens: 0, not NaN
    assert "sampler_logp_mismatch" not in m and "w_clip_low_frac" not in m


def test_batch_metrics_over_two_ranks(monkeypatch):
    """The other rank (faked) had 4 rollouts (reward mean and accuracy 0.25, 1 token each, one group of two with
    equal rewards) and 9 tokens with entropy 0.5 a token:
    rollout statistics are weighted by rollouts, token statistics by tokens, losses summed over ranks."""
    import rlsd.train as T

    other = iter([
        [0.25 * 4, 1.0 * 4, 0.25 * 4, 0.0, 0.5 * 4, 4.0],  # accuracy, completion_len, reward_mean, unverifiable,
        # zero_var (sorted keys) times rollouts, and rollouts
        [0.5 * 9, 9.0],  # entropy * tokens, tokens
        [1.0, 1.0, 0.0],  # loss, pg_loss, jsd_loss
    ])

    def fake_all_reduce(t, *a, **k):
        t += torch.tensor(next(other), dtype=t.dtype)

    monkeypatch.setattr(T.dist, "all_reduce", fake_all_reduce)
    sums = {"tokens": 9.0, "entropy": 9.0 * 1.5, "loss": 0.5, "pg_loss": 0.5, "jsd_loss": 0.0}
    m = T.batch_metrics(_metrics_batch(sampler=False), torch.tensor([1.0, 0.0, 1.0, 1.0]), [1.0, 0.0, 1.0, 1.0], sums, {},
                        group=2, updates=1, world=2, device=torch.device("cpu"))
    assert m == pytest.approx({"reward_mean": (3 + 1) / 8, "accuracy": (3 + 1) / 8, "unverifiable_frac": 0.0,
                               "completion_len": (9 + 4) / 8, "zero_var_frac": (0.5 * 4 + 0.5 * 4) / 8,
                               "entropy": (1.5 * 9 + 0.5 * 9) / 18, "loss": 1.5, "pg_loss": 1.5, "jsd_loss": 0.0})


def test_rlsd_weight_diagnostics_are_token_weighted_over_ranks(monkeypatch):
    """The w / Delta diagnostics are per-token statistics: over ranks they are weighted by each rank's completion
    tokens (issue 14: the raw w_mean used to be averaged unweighted). This rank: 4 rollouts, 9 tokens,
    log_w_mean 0.2, w_mean 1.5; the other rank (faked): 4 rollouts, 3 tokens, log_w_mean -0.4, w_mean 3.0.
    Weighted by tokens: (0.2 * 9 - 0.4 * 3) / 12 = 0.05; weighted by rollouts it would be -0.1."""
    import rlsd.train as T

    other = iter([
        [0.0, 0.75 * 4, 0.0, 0.0, 1.0 * 4, 4.0],  # rollout statistics (sorted keys) times rollouts, and rollouts
        [0.5 * 3, 3.0],  # entropy * tokens, tokens
        [-0.4 * 3, 3.0 * 3, 3.0],  # log_w_mean * tokens, w_mean * tokens, tokens
        [0.0, 0.0, 0.0],  # loss, pg_loss, jsd_loss
    ])

    def fake_all_reduce(t, *a, **k):
        t += torch.tensor(next(other), dtype=t.dtype)

    monkeypatch.setattr(T.dist, "all_reduce", fake_all_reduce)
    sums = {"tokens": 9.0, "entropy": 9.0, "loss": 0.0, "pg_loss": 0.0, "jsd_loss": 0.0}
    m = T.batch_metrics(_metrics_batch(sampler=False), torch.tensor([1.0, 0.0, 1.0, 1.0]), [1.0, 0.0, 1.0, 1.0], sums,
                        {"log_w_mean": 0.2, "w_mean": 1.5}, group=2, updates=1, world=2, device=torch.device("cpu"))
    assert m["log_w_mean"] == pytest.approx((0.2 * 9 - 0.4 * 3) / 12)
    assert m["w_mean"] == pytest.approx((1.5 * 9 + 3.0 * 3) / 12)


# ---------------------------------------------------------------------------------------------- log-probs


@pytest.fixture(scope="module")
def tiny():
    from rlsd.models import build_tiny_model

    model, tok = build_tiny_model(None, hidden_size=32, num_layers=1, num_heads=1, seed=0)
    # larger weights than the 0.02 init: attention is no longer uniform, so a wrong position or a pad token let
    # into attention moves the log-probs by whole nats instead of 1e-5
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model.eval(), tok


def _reference_logps(model, prompt: list[int], completion: list[int]) -> list[float]:
    """log P(completion[t] | prompt, completion[:t]) from one forward of the unpadded sequence."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + completion])).logits[0].float()
    lp = torch.log_softmax(logits, -1)
    return [lp[len(prompt) - 1 + t, c].item() for t, c in enumerate(completion)]


@pytest.mark.parametrize("share, micro", [(1, 2), (2, 2), (1, 4), (2, 4)])
def test_logps_pass_gives_each_rows_own_log_probs(tiny, share, micro):
    """Old and teacher log-probs of left-padded rows (two rows per prompt) equal those of each row's unpadded
    sequence: a first prompt token masked out, a shifted position or a row's prompt mixed up fails."""
    from rlsd.train import Batch, left_pad, logps_pass

    model, tok = tiny
    student = [[11, 12, 13], [11, 12, 13], [21], [21]]
    teacher = [[31, 32, 33, 34, 35], [31, 32, 33, 34, 35], [41, 42], [41, 42]]
    comp = torch.tensor([[50, 51, 52], [53, 54, 55], [56, 57, 58], [59, 60, 61]])
    cmask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 0, 0]])
    p_ids, p_mask = left_pad(student, tok.pad_token_id)
    t_ids, t_mask = left_pad(teacher, tok.pad_token_id)
    b = Batch(p_ids, p_mask, comp, cmask, torch.zeros(4))
    b.teacher_prompt_ids, b.teacher_prompt_mask = t_ids, t_mask
    logps_pass(b, model, model, micro=micro, temperature=1.0, share=share, old=True, teacher_too=True)
    assert b.old_ready and b.teacher_ready
    for i in range(4):
        n = int(cmask[i].sum())
        want_old = _reference_logps(model, student[i], comp[i, :n].tolist())
        want_teacher = _reference_logps(model, teacher[i], comp[i, :n].tolist())
        assert b.old_logps[i, :n].tolist() == pytest.approx(want_old, abs=1e-3)
        assert b.teacher_logps[i, :n].tolist() == pytest.approx(want_teacher, abs=1e-3)
    assert not torch.equal(b.old_logps, b.teacher_logps)


def test_logps_pass_divides_by_the_temperature_and_can_skip_either_side(tiny):
    from rlsd.train import Batch, left_pad, logps_pass

    model, tok = tiny
    p_ids, p_mask = left_pad([[11, 12]], tok.pad_token_id)
    comp, cmask = torch.tensor([[50, 51]]), torch.ones(1, 2, dtype=torch.long)
    b = Batch(p_ids, p_mask, comp, cmask, torch.zeros(1))
    b.teacher_prompt_ids, b.teacher_prompt_mask = p_ids, p_mask
    logps_pass(b, model, model, micro=1, temperature=0.5, share=1, old=True, teacher_too=False)
    assert (b.old_ready, b.teacher_ready) == (True, False) and not b.teacher_logps.any()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[11, 12, 50, 51]])).logits[0].float() / 0.5
    want = [torch.log_softmax(logits[1 + t], -1)[c].item() for t, c in enumerate([50, 51])]
    assert b.old_logps[0].tolist() == pytest.approx(want, abs=1e-3)
    b.old_logps.zero_()
    logps_pass(b, model, model, micro=1, temperature=0.5, share=1, old=False, teacher_too=True)
    assert (b.old_ready, b.teacher_ready) == (True, True) and not b.old_logps.any()
    assert b.teacher_logps[0].tolist() == pytest.approx(want, abs=1e-3)


# ---------------------------------------------------------------------------------------------- one update


V = 4
W_T = torch.tensor([1.0, 0.0, -1.0, 0.5])  # the toy teacher's logits (the student starts uniform)


def _update(algo: str, adv: list[float], tokens: list[int], *, lam: float = 0.5, micro: int = 1, sampler=None, **cfg_kw):
    from rlsd.train import Batch, policy_update

    over = [f"algorithm.name={algo}"] + [f"{k}={v}" for k, v in cfg_kw.items()]
    cfg = load_config(overrides=over)
    policy, teacher = ToyPolicy(V), ToyPolicy(V)
    with torch.no_grad():
        teacher.w.copy_(W_T)
    engine = ToyEngine(policy, lr=1.0)
    n = len(adv)
    b = Batch(torch.zeros(n, 1, dtype=torch.long), torch.ones(n, 1, dtype=torch.long),
              torch.tensor([[t] for t in tokens]), torch.ones(n, 1, dtype=torch.long), torch.tensor(adv),
              teacher_prompt_ids=torch.zeros(n, 1, dtype=torch.long), teacher_prompt_mask=torch.ones(n, 1, dtype=torch.long),
              sampler_logps=sampler)
    st = policy_update(engine, teacher, b, slice(0, n), cfg=cfg, micro=micro, share=1, lam=lam, num_tokens=float(n),
                       num_seqs=float(n), world=1, zero_stage=0)
    return st, b, policy.w.detach().clone(), engine, cfg


def _rlsd_token_adv(adv, tokens, lam, eps_w=0.2):
    s = math.log(1 / V)
    t = torch.log_softmax(W_T, -1)
    out = []
    for a, y in zip(adv, tokens):
        sign = (a > 0) - (a < 0)
        w = min(max(math.exp(sign * (t[y].item() - s)), 1 - eps_w), 1 + eps_w)
        out.append(a * ((1 - lam) + lam * w))
    return out


def test_rlsd_update_by_hand():
    adv, tokens = [1.0, -1.0, 0.5], [0, 2, 3]
    st, b, w, engine, _ = _update("rlsd", adv, tokens, lam=0.5)
    token_adv = _rlsd_token_adv(adv, tokens, 0.5)
    assert st["pg_loss"] == pytest.approx(-sum(token_adv) / 3, rel=1e-5)
    assert st["loss"] == pytest.approx(st["pg_loss"]) and st["jsd_loss"] == 0.0
    assert st["tokens"] == 3 and st["entropy"] == pytest.approx(3 * math.log(V), rel=1e-5)
    assert st["ratio_mean"] == pytest.approx(3.0) and st["clip_frac"] == 0 and st["dual_clip_frac"] == 0
    assert st["approx_kl"] == pytest.approx(0.0, abs=1e-7) and st["time_teacher"] > 0  # the teacher ran
    t = torch.log_softmax(W_T, -1)
    assert b.teacher_logps[:, 0].tolist() == pytest.approx([t[y].item() for y in tokens], abs=1e-6)
    assert b.old_logps[:, 0].tolist() == pytest.approx([math.log(1 / V)] * 3, abs=1e-6)
    # one SGD step (lr 1) on -sum_i A_hat_i * rho_i / 3 at rho = 1: w = sum_i A_hat_i (e_{y_i} - 1/V) / 3
    want = sum(a * (torch.nn.functional.one_hot(torch.tensor(y), V).float() - 1 / V) for a, y in zip(token_adv, tokens)) / 3
    torch.testing.assert_close(w, want, atol=1e-6, rtol=0)
    assert engine.boundaries == [False, False, True] and engine.steps == 1
    # lambda 0 is GRPO exactly
    st0, *_ = _update("rlsd", adv, tokens, lam=0.0)
    assert st0["pg_loss"] == pytest.approx(-sum(adv) / 3, rel=1e-6)


def test_rlsd_negative_only_and_eps_w_reach_the_token_advantages():
    adv, tokens = [1.0, -1.0], [0, 2]
    st, *_ = _update("rlsd", adv, tokens, lam=1.0, **{"algorithm.negative_only": "true", "algorithm.eps_w": 0.1})
    t = _rlsd_token_adv(adv, tokens, 1.0, eps_w=0.1)
    assert st["pg_loss"] == pytest.approx(-(1.0 + t[1]) / 2, rel=1e-5)  # A > 0 keeps A under negative_only


def test_grpo_update_uses_the_sequence_advantage_and_the_clip_settings():
    adv, tokens = [1.0, -1.0, 0.5], [0, 2, 3]
    st, b, w, _, _ = _update("grpo", adv, tokens)
    assert st["pg_loss"] == pytest.approx(-sum(adv) / 3, rel=1e-6) and st["loss"] == pytest.approx(st["pg_loss"])
    assert not b.teacher_logps.any() and st["time_teacher"] == 0.0  # GRPO never runs the teacher
    # the rollout sampler's log-probs as the ratio's denominator: rho = exp(log(1/4) - (log(1/4) - 0.5)) = e^0.5,
    # above 1 + eps_high for A > 0 (clipped, constant), dual bound not reached for A < 0 (e^0.5 < 3)
    sampler = torch.full((3, 1), math.log(1 / V) - 0.5)
    st, *_ = _update("grpo", adv, tokens, sampler=sampler, **{"rollout.old_logps_from": "sampler"})
    rho = math.exp(0.5)
    assert st["ratio_mean"] == pytest.approx(3 * rho, rel=1e-5)
    assert st["clip_frac"] == pytest.approx(2.0)  # two tokens with A > 0 clipped (token-weighted sum)
    assert st["pg_loss"] == pytest.approx((-1.28 + rho - 0.5 * 1.28) / 3, rel=1e-5)
    st, *_ = _update("grpo", adv, tokens, sampler=sampler, **{"rollout.old_logps_from": "sampler", "algorithm.eps_high": 1.0,
                                                                "algorithm.eps_low": 0.1, "algorithm.dual_clip": 1.5})
    assert st["clip_frac"] == 0.0 and st["dual_clip_frac"] == pytest.approx(1.0)  # rho 1.65 > 1.5
    assert st["pg_loss"] == pytest.approx((-rho + 1.5 - 0.5 * rho) / 3, rel=1e-5)
    st, *_ = _update("grpo", adv, tokens, sampler=sampler, **{"algorithm.agg": "seq_mean_token_mean"})
    assert st["pg_loss"] == pytest.approx(-sum(adv) / 3, rel=1e-6)  # the trainer's own log-probs: rho = 1


def _jsd(beta=0.5, clip=None):
    return core.generalized_jsd(torch.zeros(1, 1, V), W_T.view(1, 1, V), torch.ones(1, 1), beta=beta,
                                token_clip=clip).item()


def test_opsd_and_grpo_opsd_updates_by_hand():
    adv, tokens = [1.0, -1.0, 0.5], [0, 2, 3]
    st, b, _, _, _ = _update("opsd", adv, tokens)
    assert st["jsd_loss"] == pytest.approx(_jsd(), rel=1e-5) and st["pg_loss"] == 0.0
    assert st["loss"] == pytest.approx(_jsd(), rel=1e-5) and "clip_frac" not in st
    assert b.teacher_logps.any()
    st, *_ = _update("grpo_opsd", adv, tokens)
    assert st["pg_loss"] == pytest.approx(-sum(adv) / 3, rel=1e-6)
    assert st["loss"] == pytest.approx(st["pg_loss"] + 0.1 * _jsd(), rel=1e-5)
    st, *_ = _update("grpo_opsd", adv, tokens, **{"algorithm.opsd_alpha": 2.0, "algorithm.jsd_beta": 0.25,
                                                  "algorithm.jsd_token_clip": 0.01})
    assert _jsd(0.25) > 0.01
    assert st["jsd_loss"] == pytest.approx(_jsd(0.25, 0.01), rel=1e-5)
    assert st["loss"] == pytest.approx(-sum(adv) / 3 + 2.0 * 0.01, rel=1e-5)


def test_update_normalises_by_the_global_token_count_and_world():
    from rlsd.train import Batch, policy_update

    cfg = load_config(overrides=["algorithm.name=grpo"])
    seen = []

    class Engine(ToyEngine):
        def backward(self, loss, scale_wrt_gas=True):
            seen.append(loss.item())
            super().backward(loss, scale_wrt_gas)

    policy = ToyPolicy(V)
    engine = Engine(policy, lr=1.0)
    b = Batch(torch.zeros(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.long), torch.tensor([[0], [1]]),
              torch.ones(2, 1, dtype=torch.long), torch.tensor([1.0, 1.0]))
    st = policy_update(engine, None, b, slice(0, 2), cfg=cfg, micro=2, share=1, lam=0.0, num_tokens=8.0, num_seqs=2.0,
                       world=4, zero_stage=0)
    assert st["pg_loss"] == pytest.approx(-2 / 8)  # the global count of 8 tokens, not these 2
    assert seen == [pytest.approx(-2 / 8 * 4)]  # DeepSpeed's mean over 4 ranks undone
    # gradient of -(rho_0 + rho_1) / 8 * 4 at w = 0: -0.5 * ((e_0 - 1/4) + (e_1 - 1/4)) = (-1, -1, 1, 1) / 4
    assert st["grad_norm"] == pytest.approx(0.5, rel=1e-6)


def test_rank_sums_keep_float64_and_small_weights(monkeypatch):
    """Sums over ranks in float64 (a float32 sum of token counts or losses would round 2**24 + 1), and a total
    weight below 1 (a fraction) is divided by, not replaced by 1."""
    import rlsd.train as T

    monkeypatch.setattr(T.dist, "all_reduce", lambda t, *a, **k: None)  # the other ranks add nothing
    assert T._all_reduce([16777217.0, 0.1], 2, torch.device("cpu")) == [16777217.0, 0.1]
    assert T._weighted_mean({"a": 2.0}, 0.5, 1, torch.device("cpu")) == {"a": pytest.approx(2.0)}


def test_update_with_masked_tokens_aggregation_and_temperature(monkeypatch):
    """Two rows of two tokens, the last token of row 1 masked; micro-batch of both rows: token_mean over the 3
    valid tokens, seq_mean_token_mean over the 2 rows; the statistics are token-weighted sums; the
    rollout temperature divides both the policy's and the teacher's logits; the teacher's time is summed over
    micro-batches."""
    import types

    import rlsd.train as T
    from rlsd.train import Batch, policy_update

    def run(algo, agg, temperature, micro=2):
        cfg = load_config(overrides=[f"algorithm.name={algo}", f"algorithm.agg={agg}", f"rollout.temperature={temperature}"])
        policy, teacher = ToyPolicy(V), ToyPolicy(V)
        with torch.no_grad():
            teacher.w.copy_(W_T)
        b = Batch(torch.zeros(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.long), torch.tensor([[0, 1], [2, 3]]),
                  torch.tensor([[1, 1], [1, 0]]), torch.tensor([1.0, -1.0]),
                  teacher_prompt_ids=torch.zeros(2, 1, dtype=torch.long), teacher_prompt_mask=torch.ones(2, 1, dtype=torch.long))
        st = policy_update(ToyEngine(policy, lr=1.0), teacher, b, slice(0, 2), cfg=cfg, micro=micro, share=1, lam=0.5,
                           num_tokens=3.0, num_seqs=2.0, world=1, zero_stage=0)
        return st, b

    st, _ = run("grpo", "token_mean", 1.0)
    assert st["pg_loss"] == pytest.approx(-(1 + 1 - 1) / 3) and st["tokens"] == 3
    assert st["ratio_mean"] == pytest.approx(3.0) and st["approx_kl"] == pytest.approx(0.0, abs=1e-7)
    st, _ = run("grpo", "seq_mean_token_mean", 1.0)
    assert st["pg_loss"] == pytest.approx((-1 + 1) / 2, abs=1e-7)
    st, b = run("rlsd", "token_mean", 0.5)
    assert b.teacher_logps[0].tolist() == pytest.approx(torch.log_softmax(W_T / 0.5, -1)[[0, 1]].tolist(), abs=1e-6)
    assert st["entropy"] == pytest.approx(3 * math.log(V), rel=1e-5)  # uniform at any temperature
    # the teacher's time: a fake clock that ticks 1 per reading gives 1 per micro-batch
    ticks = iter(range(1000))
    monkeypatch.setattr(T, "time", types.SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    st, _ = run("rlsd", "token_mean", 1.0, micro=1)
    assert st["time_teacher"] == 2.0


def test_eps_low_reaches_the_loss():
    """rho = e^-0.5 = 0.61 with A < 0: clipped below 1 - eps_low at the default 0.2, inside at eps_low 0.5."""
    adv, tokens = [-1.0], [0]
    sampler = torch.full((1, 1), math.log(1 / V) + 0.5)
    st, *_ = _update("grpo", adv, tokens, sampler=sampler, **{"rollout.old_logps_from": "sampler"})
    assert st["clip_frac"] == 1.0 and st["pg_loss"] == pytest.approx(0.8)
    st, *_ = _update("grpo", adv, tokens, sampler=sampler, **{"rollout.old_logps_from": "sampler", "algorithm.eps_low": 0.5})
    assert st["clip_frac"] == 0.0 and st["pg_loss"] == pytest.approx(math.exp(-0.5), rel=1e-5)


class _Spy(torch.nn.Module):
    """Records the shape of every forward's input_ids (and whether a cache came along)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, input_ids=None, cache=None, **kw):
        self.calls.append((tuple(input_ids.shape), cache is not None))
        return self.model(input_ids=input_ids, past_key_values=cache, **kw)


@pytest.mark.parametrize("case, share, calls", [
    ("grouped", 2, [((2, 3), True), ((4, 2), True)]),  # each prompt once, then the completions on its cache
    ("grouped", 1, [((4, 6), False)]),                   # share 1: one full pass
    ("mixed", 2, [((4, 6), False)]),                     # a group whose rows differ: one full pass
    ("one_token", 2, [((4, 4), False)]),                 # a single completion token: nothing to share
    ("checkpointing", 2, [((4, 6), False)]),             # activation checkpointing: no cache
    ("odd", 3, [((4, 6), False)]),                       # 4 rows are not groups of 3
])
def test_shared_prompt_pass_runs_each_prompt_once_only_when_it_may(tiny, case, share, calls):
    """completion_logits' prompt sharing (rollouts of one prompt run it once, ~G times less prompt compute):
    taken exactly when the rows come in groups of identical prompts, and the logits equal the full pass's."""
    from rlsd.train import completion_logits, left_pad

    model, tok = tiny
    prompts = [[11, 12, 13]] * 2 + [[21]] * 2 if case != "mixed" else [[11, 12, 13], [11, 12, 14], [21], [21]]
    t = 1 if case == "one_token" else 3
    p_ids, p_mask = left_pad(prompts, tok.pad_token_id)
    c_ids = torch.tensor([[50, 51, 52], [53, 54, 55], [56, 57, 58], [59, 60, 61]])[:, :t]
    c_mask = torch.ones_like(c_ids)
    spy = _Spy(model)
    if case == "checkpointing":
        spy.is_activation_checkpointing = True
    got = completion_logits(spy, p_ids, p_mask, c_ids, c_mask, 0.5, share)
    assert spy.calls == calls
    want = completion_logits(model, p_ids, p_mask, c_ids, c_mask, 0.5, 1)
    assert got.shape == want.shape and got.shape[:2] == (4, t)
    torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-4)


def test_a_model_that_ignores_the_cache_is_an_error_not_wrong_logits():
    from rlsd.train import completion_logits

    ids = torch.tensor([[5, 6]] * 2)
    with pytest.raises(RuntimeError, match="shared prompt pass left 0 cached positions, expected 2"):
        completion_logits(ToyPolicy(V), ids, torch.ones_like(ids), torch.tensor([[1, 2], [3, 0]]), torch.ones(2, 2), 1.0, 2)


def test_jsd_settings_and_aggregation_reach_the_opsd_loss():
    """The JSD's beta, and its aggregation with the global sequence count (two rows of lengths 2 and 1;
    the toy teacher gives every position the same divergence J)."""
    from rlsd.train import Batch, policy_update

    def run(agg, beta, num_seqs):
        cfg = load_config(overrides=["algorithm.name=opsd", f"algorithm.agg={agg}", f"algorithm.jsd_beta={beta}"])
        policy, teacher = ToyPolicy(V), ToyPolicy(V)
        with torch.no_grad():
            teacher.w.copy_(W_T)
        b = Batch(torch.zeros(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.long), torch.tensor([[0, 1], [2, 3]]),
                  torch.tensor([[1, 1], [1, 0]]), torch.tensor([1.0, -1.0]),
                  teacher_prompt_ids=torch.zeros(2, 1, dtype=torch.long), teacher_prompt_mask=torch.ones(2, 1, dtype=torch.long))
        return policy_update(ToyEngine(policy, lr=1.0), teacher, b, slice(0, 2), cfg=cfg, micro=2, share=1, lam=0.0,
                             num_tokens=3.0, num_seqs=num_seqs, world=1, zero_stage=0)

    assert run("token_mean", 0.25, 2.0)["jsd_loss"] == pytest.approx(_jsd(0.25), rel=1e-5)
    assert _jsd(0.25) != pytest.approx(_jsd(0.5), rel=1e-3)
    # per-sequence means J and J, summed, over the global count of 4 sequences: J / 2
    assert run("seq_mean_token_mean", 0.5, 4.0)["jsd_loss"] == pytest.approx(_jsd() / 2, rel=1e-5)


def test_grad_norm_under_zero_comes_from_deepspeed():
    """ZeRO 1-3 partition the module's gradients: the figure is DeepSpeed's own, NaN when it has none, and
    0.0 when the gradient is 0 (every group's rewards equal), as at ZeRO-0, never NaN."""
    from rlsd.train import Batch, policy_update

    class ZeroEngine(ToyEngine):
        norm = None

        def get_global_grad_norm(self):
            return self.norm

    cfg = load_config(overrides=["algorithm.name=grpo"])
    for norm, want in ((1.5, 1.5), (0.0, 0.0), (torch.tensor(0.0), 0.0), (None, None)):
        engine = ZeroEngine(ToyPolicy(V), lr=1.0)
        engine.norm = norm
        b = Batch(torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.long), torch.tensor([[0]]),
                  torch.ones(1, 1, dtype=torch.long), torch.tensor([1.0]))
        st = policy_update(engine, None, b, slice(0, 1), cfg=cfg, micro=1, share=1, lam=0.0, num_tokens=1.0,
                           num_seqs=1.0, world=1, zero_stage=2)
        assert st["grad_norm"] == want if want is not None else math.isnan(st["grad_norm"])


def test_the_policy_logits_are_divided_by_the_temperature():
    from rlsd.train import Batch, policy_update

    cfg = load_config(overrides=["algorithm.name=grpo", "rollout.temperature=0.5"])
    policy = ToyPolicy(V)
    with torch.no_grad():
        policy.w.copy_(W_T)
    b = Batch(torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.long), torch.tensor([[2]]),
              torch.ones(1, 1, dtype=torch.long), torch.tensor([1.0]))
    st = policy_update(ToyEngine(policy, lr=1.0), None, b, slice(0, 1), cfg=cfg, micro=1, share=1, lam=0.0,
                       num_tokens=1.0, num_seqs=1.0, world=1, zero_stage=0)
    p = torch.softmax(W_T / 0.5, -1)
    assert b.old_logps[0, 0].item() == pytest.approx(torch.log(p[2]).item(), abs=1e-6)
    assert st["entropy"] == pytest.approx(-(p * p.log()).sum().item(), rel=1e-5)
