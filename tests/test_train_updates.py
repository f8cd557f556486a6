"""The trainer's update phase where GPU-sized runs differ from the default CPU run: several optimizer steps
per rollout batch (PPO mini-batches), micro-batches with an explicit accumulation boundary, collectives on
the trainer's device. Hand-computed on a one-parameter-vector policy, then end to end on the tiny model."""

from __future__ import annotations

import ast
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from rlsd.config import load_config
from tests.helpers import ROOT, warm_tiny_model, write_addition_tasks

# ---------------------------------------------------------------------------------------------- a toy policy


class ToyPolicy(torch.nn.Module):
    """Next-token logits w (V,) whatever the context: log pi(y) = w_y - logsumexp(w)."""

    def __init__(self, vocab: int):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(vocab))

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0, use_cache=False, **kw):
        n, length = input_ids.shape
        return SimpleNamespace(logits=self.w.expand(n, logits_to_keep or length, -1))


class ToyEngine:
    """The part of a DeepSpeed engine the update phase uses, with plain SGD; records the boundaries set."""

    def __init__(self, policy: ToyPolicy, lr: float):
        self.module, self.opt, self.boundaries, self.steps = policy, torch.optim.SGD(policy.parameters(), lr=lr), [], 0

    def __call__(self, **kw):
        return self.module(**kw)

    def set_gradient_accumulation_boundary(self, is_boundary: bool) -> None:
        self.boundaries.append(is_boundary)

    def backward(self, loss, scale_wrt_gas=True):
        assert scale_wrt_gas is False
        loss.backward()

    def step(self):
        assert self.boundaries[-1] is True, "engine.step() before a boundary backward"
        self.opt.step()
        self.opt.zero_grad()
        self.steps += 1


def _toy_batch(advantages, vocab: int):
    from rlsd.train import Batch

    n = len(advantages)
    return Batch(torch.zeros(n, 1, dtype=torch.long), torch.ones(n, 1, dtype=torch.long),
                 torch.zeros(n, 1, dtype=torch.long), torch.ones(n, 1, dtype=torch.long),  # every row sampled token 0
                 torch.tensor(advantages, dtype=torch.float32))


def _run_updates(advantages, *, vocab: int, lr: float, updates: int, micro: int):
    """The train loop's update phase on the toy policy: old log-probs first, then one policy_update per mini-batch."""
    from rlsd.train import logps_pass, policy_update, update_rows

    cfg = load_config(overrides=["algorithm.name=grpo"])  # eps_low 0.2, eps_high 0.28, dual_clip 3, token_mean
    policy = ToyPolicy(vocab)
    engine = ToyEngine(policy, lr)
    b = _toy_batch(advantages, vocab)
    if updates > 1:
        logps_pass(b, engine, None, micro=micro, temperature=1.0, share=1, old=True, teacher_too=False)
    stats, ws = [], []
    for rows in update_rows(len(advantages), updates, 1):
        tokens = float(b.completion_mask[rows].sum())
        stats.append(policy_update(engine, None, b, rows, cfg=cfg, micro=micro, share=1, lam=0.0, num_tokens=tokens,
                                   num_seqs=float(rows.stop - rows.start), world=1, zero_stage=0))
        ws.append(policy.w.detach().clone())
    return b, stats, ws, engine


def _softmax0(w0: float, rest: float, vocab: int) -> float:
    """softmax(w)[0] for w = (w0, rest, ..., rest)."""
    return 1.0 / (1.0 + (vocab - 1) * math.exp(rest - w0))


@pytest.mark.parametrize("lr,a2,expect", [(1.0, +1.0, "clip"), (1.0, -1.0, "free"), (4.0, -1.0, "dual")])
def test_two_updates_match_the_hand_computation(lr, a2, expect):
    """V = 4, w = 0: pi_old(0) = 1/4 for both rows. Update 1 (row 0, A = +1, ratio 1): the token-mean loss
    -rho * A has gradient -(e_0 - 1/4) in w, so SGD gives w1 = lr * (e_0 - 1/4). Update 2 (row 1, token 0,
    old log-prob still log 1/4): rho = 4 * softmax(w1)_0.
    - lr 1: rho = 4 / (1 + 3/e) = 1.90 > 1 + 0.28: with A = +1 the clipped branch is taken (constant):
      w2 = w1, clip_frac 1; with A = -1 the unclipped branch rho * 1 is larger and below the dual bound 3:
      w2 = w1 - lr * rho * (e_0 - softmax(w1)).
    - lr 4: rho = 4 / (1 + 3 e^-4) = 3.79 > 3: dual-clip holds the loss at 3 (constant): w2 = w1."""
    V = 4
    b, (s1, s2), (w1, w2), engine = _run_updates([1.0, a2], vocab=V, lr=lr, updates=2, micro=1)
    want_w1 = torch.tensor([lr * 0.75] + [-lr * 0.25] * 3)
    torch.testing.assert_close(w1, want_w1, atol=1e-6, rtol=0)
    assert s1["clip_frac"] == 0 and s1["ratio_mean"] == pytest.approx(1.0)
    p0 = _softmax0(lr * 0.75, -lr * 0.25, V)
    rho = 4 * p0
    assert s2["ratio_mean"] == pytest.approx(rho, rel=1e-5)
    assert b.old_logps[1, 0].item() == pytest.approx(math.log(0.25), abs=1e-6)  # fixed before the updates
    if expect == "clip":
        assert rho > 1.28 and s2["clip_frac"] == 1 and s2["dual_clip_frac"] == 0
        torch.testing.assert_close(w2, w1)
        assert s2["loss"] == pytest.approx(-1.28, rel=1e-6)
    elif expect == "free":
        assert 1.28 < rho < 3 and s2["clip_frac"] == 0 and s2["dual_clip_frac"] == 0
        p_rest = (1 - p0) / 3
        want_w2 = want_w1 - lr * rho * torch.tensor([1 - p0, -p_rest, -p_rest, -p_rest])
        torch.testing.assert_close(w2, want_w2, atol=1e-5, rtol=0)
        assert s2["loss"] == pytest.approx(rho, rel=1e-5)
    else:
        assert rho > 3 and s2["dual_clip_frac"] == 1
        torch.testing.assert_close(w2, w1)
        assert s2["loss"] == pytest.approx(3.0, rel=1e-6)
    assert engine.steps == 2 and engine.boundaries == [True, True]


def test_one_update_per_batch_keeps_ratio_one_and_sets_one_boundary_per_step():
    """updates_per_batch = 1 with two micro-batches: one optimizer step, boundary False then True, ratio 1,
    and the step equals one SGD step on the token mean of both rows."""
    b, (s,), (w,), engine = _run_updates([1.0, -1.0], vocab=4, lr=1.0, updates=1, micro=1)
    assert engine.boundaries == [False, True] and engine.steps == 1
    assert s["ratio_mean"] == pytest.approx(2.0) and s["clip_frac"] == 0  # token-weighted sums over 2 tokens
    # rows with A = +1 and A = -1 on the same token cancel: the gradient is zero
    torch.testing.assert_close(w, torch.zeros(4))
    b, (s,), (w,), engine = _run_updates([1.0, 1.0], vocab=4, lr=1.0, updates=1, micro=1)
    torch.testing.assert_close(w, torch.tensor([0.75, -0.25, -0.25, -0.25]))


def test_update_rows_split_and_repeat():
    from rlsd.train import update_rows

    assert update_rows(8, 2, 1) == [slice(0, 4), slice(4, 8)]
    assert update_rows(8, 2, 2) == [slice(0, 4), slice(4, 8), slice(0, 4), slice(4, 8)]
    assert update_rows(8, 1, 1) == [slice(0, 8)]


# ---------------------------------------------------------------------------------------------- collectives


def test_collectives_use_the_trainers_device(monkeypatch):
    """NCCL serves only CUDA tensors. With a CUDA trainer device (fake tensors: no GPU needed) every tensor
    handed to a collective must be a CUDA tensor."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    import rlsd.train as T

    seen = []

    class Stop(Exception):
        pass

    def fake_all_reduce(t, *a, **k):
        seen.append(t.device)
        raise Stop

    monkeypatch.setattr(T.dist, "all_reduce", fake_all_reduce)
    cuda = torch.device("cuda", 0)
    with FakeTensorMode(allow_non_fake_inputs=True):
        for call in (lambda: T._all_reduce([1.0, 2.0], 2, cuda),
                     lambda: T._weighted_mean({"a": 1.0}, 3.0, 2, cuda)):
            with pytest.raises(Stop):
                call()
    assert seen == [cuda, cuda]


def test_every_collective_in_the_library_goes_through_the_device_helper():
    """A dist.<collective>(tensor) call anywhere else in src/rlsd would bypass the device rule."""
    tensor_ops = {"all_reduce", "all_gather", "all_gather_into_tensor", "broadcast", "reduce", "reduce_scatter",
                  "reduce_scatter_tensor", "gather", "scatter", "send", "recv", "all_to_all"}
    offenders = []
    for path in (ROOT / "src" / "rlsd").rglob("*.py"):
        tree = ast.parse(path.read_text())
        allowed = set()  # the one call inside rlsd.train._all_reduce
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and fn.name == "_all_reduce":
                allowed |= {id(n) for n in ast.walk(fn)}
        for node in ast.walk(tree):  # module level too; dist.op, torch.distributed.op, from torch.distributed import op
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in tensor_ops
                    and ast.unparse(node.func.value) in ("dist", "torch.distributed") and id(node) not in allowed):
                offenders.append(f"{path.name}:{node.lineno}")
            if (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch.distributed")
                    and any(a.name in tensor_ops for a in node.names)):
                offenders.append(f"{path.name}:{node.lineno} (import)")
    assert offenders == []


# ---------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("tasks")
    tr, ev = write_addition_tasks(d)
    return warm_tiny_model(), tr, ev


def _cfg(setup, **extra):
    model, tr, ev = setup
    base = {
        "model.path": str(model), "data.train_tasks": str(tr), "data.eval_tasks": str(ev),
        "rollout.group_size": 4, "rollout.prompts_per_step": 4, "rollout.max_new_tokens": 12,
        "rollout.engine": "generate", "teacher.template": "{question}H:{context}\n", "train.lr": 1e-3,
        "train.steps": 3, "train.checkpoint_every": 0, "train.eval_every": 0, "tracking.enabled": False,
    }
    base.update(extra)
    return load_config(overrides=[f"{k}={v}" for k, v in base.items()])


def _read(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_micro_batched_run_reaches_the_whole_batch_weights(setup, tmp_path):
    """4 micro-batches of 8 rollouts and one batch of 32 reach the same weights after 3 steps (DeepSpeed used
    to step only every 4th rollout batch, so the micro-batched run never moved in 3 steps).

    Tolerance: the two runs sum the same gradient in a different order (float32, relative error ~1e-7).
    AdamW's first steps move a weight by about lr * g / |g| whatever |g|, so a gradient within rounding of 0
    can move a weight by up to 2 lr differently; such weights are a tiny minority. So: the per-step losses
    and grad norms agree to 1e-4, 99.5% of the weights agree to 1e-3 lr, and none differs by more than
    2 lr x 3 steps. Every step moves the weights by ~lr, so the old bug fails all three."""
    from rlsd.train import train

    lr = 1e-4
    runs = {}
    for mb in (0, 8):
        out = tmp_path / f"mb{mb}"
        train(_cfg(setup, **{"train.micro_batch_size": mb, "algorithm.name": "rlsd", "rollout.prompts_per_step": 8,
                             "train.lr": lr}), output_dir=out)
        runs[mb] = (_read(out / "metrics.jsonl"), _weights(out / "final"))
    (r0, w0), (r4, w4) = runs[0], runs[8]
    assert [r["reward_mean"] for r in r0] == [r["reward_mean"] for r in r4]
    for a, b in zip(r0, r4):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-7)
        assert a["grad_norm"] > 0 and a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    assert len({r["grad_norm"] for r in r4}) == 3  # a fresh gradient at every step, not one that piles up
    diffs = torch.cat([(w0[k].float() - w4[k].float()).abs().flatten() for k in w0])
    assert (diffs <= 1e-3 * lr).float().mean() >= 0.995, (diffs > 1e-3 * lr).float().mean()
    assert diffs.max() <= 2 * lr * 3
    base = _weights(setup[0])
    moved = torch.cat([(w4[k].float() - base[k].float()).abs().flatten() for k in w4])
    assert moved.median() > 0.5 * lr  # and the run did train


def test_micro_batched_parameters_move_at_step_one(setup, tmp_path):
    from rlsd.train import train

    train(_cfg(setup, **{"train.micro_batch_size": 4, "train.steps": 1, "algorithm.name": "grpo"}), output_dir=tmp_path)
    base, after = _weights(setup[0]), _weights(tmp_path / "final")
    assert all(not torch.equal(base[k], after[k]) for k in base if "embed" not in k)


def test_updates_per_batch_make_the_clips_act_and_count_optimizer_steps(setup, tmp_path):
    """Two updates per batch: update 2 sees a ratio != 1, so clip fractions are > 0 somewhere in 3 steps
    (always 0 with one update); lambda decays per optimizer step (0.5, 0.48, 0.46 at the batches' first
    updates), and a run resumed from a checkpoint after batch 2 ends with the same weights."""
    from rlsd.train import train

    cfg = _cfg(setup, **{"train.updates_per_batch": 2, "train.micro_batch_size": 8, "algorithm.name": "rlsd",
                         "train.lr": 3e-3, "train.checkpoint_every": 2, "rollout.prompts_per_step": 8})
    out = tmp_path / "run"
    train(cfg, output_dir=out)
    rows = _read(out / "metrics.jsonl")
    assert [r["optimizer_step"] for r in rows] == [2, 4, 6]
    assert [r["lambda"] for r in rows] == pytest.approx([0.5, 0.48, 0.46])
    assert max(r["clip_frac"] for r in rows) > 0
    assert any(abs(r["ratio_mean"] - 1) > 1e-4 for r in rows)
    ref = _weights(out / "final")
    shutil.rmtree(out / "final")
    train(cfg, output_dir=out)  # resumes from checkpoints/step-2 and redoes batch 3
    again = _weights(out / "final")
    for k in ref:
        torch.testing.assert_close(ref[k], again[k], atol=1e-6, rtol=1e-6)
    assert [r["step"] for r in _read(out / "metrics.jsonl")] == [1, 2, 3]

    one = _cfg(setup, **{"algorithm.name": "rlsd", "train.lr": 3e-3, "rollout.prompts_per_step": 8})
    train(one, output_dir=tmp_path / "one")
    assert all(r["clip_frac"] == 0 and r["ratio_mean"] == pytest.approx(1.0) for r in _read(tmp_path / "one" / "metrics.jsonl"))


def test_teacher_is_resynced_every_interval_optimizer_steps(setup, tmp_path):
    """sync_interval 2: the teacher saved with the step-2 checkpoint equals the policy at step 2; with the
    default interval 10 it is still the initial model."""
    from rlsd.train import train

    for interval, expect in ((2, "policy"), (10, "initial")):
        out = tmp_path / f"i{interval}"
        train(_cfg(setup, **{"algorithm.name": "rlsd", "teacher.sync_interval": interval,
                             "train.checkpoint_every": 2}), output_dir=out)
        ck = out / "checkpoints" / "step-2"
        teacher = torch.load(ck / "teacher.pt", weights_only=True)
        policy = torch.load(next(ck.glob("mp_rank_00_model_states.pt")), weights_only=False)["module"]
        initial = _weights(setup[0])
        differs_from_initial = any(not torch.equal(teacher[k], initial[k]) for k in initial if k in teacher)
        if expect == "policy":
            for k in teacher:
                torch.testing.assert_close(teacher[k], policy[k].to(teacher[k].dtype), atol=0, rtol=0)
            assert differs_from_initial
        else:
            assert not differs_from_initial


@pytest.mark.parametrize("engine", ["generate", "graph"])
def test_training_runs_in_bfloat16_on_the_cpu(setup, tmp_path, engine):
    """The dtype path a GPU takes (bf16 weights in DeepSpeed, rollouts sampled from the bf16 policy) runs here,
    with transformers' generate and with rlsd's engine (what rollout.engine auto picks for Llama on a GPU)."""
    from rlsd.train import train

    train(_cfg(setup, **{"model.dtype": "bfloat16", "algorithm.name": "rlsd", "train.steps": 2,
                         "train.micro_batch_size": 8, "rollout.engine": engine}), output_dir=tmp_path)
    rows = _read(tmp_path / "metrics.jsonl")
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0 for r in rows)
    base, after = _weights(setup[0]), _weights(tmp_path / "final")
    assert any(not torch.equal(base[k].float(), after[k].float()) for k in base)


def test_teacher_snapshot_equals_the_policy_exactly_at_the_tenth_optimizer_step(setup, tmp_path):
    """Default sync_interval 10, five optimizer steps per batch (one update, five epochs): after batch 1
    (optimizer step 5) the teacher is still the initial model; after batch 2 (step 10, the sync boundary)
    it is the policy of that moment, weight for weight. A teacher re-synced after step 1 (or after every
    step, or one step off) fails one of the two."""
    from rlsd.train import train

    out = tmp_path / "run"
    train(_cfg(setup, **{"algorithm.name": "rlsd", "train.epochs_per_batch": 5, "train.steps": 3,
                         "train.checkpoint_every": 1, "train.lr": 3e-3}), output_dir=out)
    initial = _weights(setup[0])

    def teacher_and_policy(step):
        ck = out / "checkpoints" / f"step-{step}"
        teacher = torch.load(ck / "teacher.pt", weights_only=True)
        policy = torch.load(next(ck.glob("mp_rank_00_model_states.pt")), weights_only=False)["module"]
        return teacher, policy

    t1, p1 = teacher_and_policy(1)
    assert all(torch.equal(t1[k], initial[k]) for k in initial if k in t1)
    assert any(not torch.equal(p1[k].to(t1[k].dtype), t1[k]) for k in t1)  # the policy did move
    t2, p2 = teacher_and_policy(2)
    assert set(t2) == set(p2)
    for k in t2:
        torch.testing.assert_close(t2[k], p2[k].to(t2[k].dtype), atol=0, rtol=0)
    assert [r["optimizer_step"] for r in _read(out / "metrics.jsonl")] == [5, 10, 15]


def test_dropout_is_off_in_the_trained_policy(setup, tmp_path):
    """A model whose config asks for attention dropout 0.5: the trainer turns it off, so with two updates per
    batch and a learning rate too small to move a weight the old-log-prob pass and the updates see the same
    policy (ratio 1, no clip). With dropout left on, every forward draws a new mask: ratios far from 1."""
    from rlsd.train import train

    model = tmp_path / "dropout-model"
    shutil.copytree(setup[0], model)
    conf = json.loads((model / "config.json").read_text())
    conf["attention_dropout"] = 0.5
    (model / "config.json").write_text(json.dumps(conf))
    cfg = _cfg((model, *setup[1:]), **{"algorithm.name": "grpo", "train.updates_per_batch": 2, "train.steps": 1,
                                        "train.lr": 1e-12})
    train(cfg, output_dir=tmp_path / "run")
    (row,) = _read(tmp_path / "run" / "metrics.jsonl")
    assert row["ratio_mean"] == pytest.approx(1.0, abs=1e-5) and row["clip_frac"] == 0.0
