"""The trainer end to end on a warm-started tiny model: every algorithm, resume, ranks, the leak guard."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlsd.config import load_config
from rlsd.prompts import PrivilegedLeakError, assert_no_leak
from rlsd.tasks import Task
from tests.helpers import ROOT, warm_tiny_model, write_addition_tasks

PY = sys.executable


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("tasks")
    tr, ev = write_addition_tasks(d)
    return warm_tiny_model(), tr, ev


def _overrides(model, tr, ev, **extra):
    base = {
        "model.path": str(model), "data.train_tasks": str(tr), "data.eval_tasks": str(ev), "data.eval_limit": 8,
        "rollout.group_size": 4, "rollout.prompts_per_step": 4, "rollout.max_new_tokens": 12,
        "rollout.engine": "generate", "teacher.template": "'{question}H:{context}\n'", "train.lr": 1e-3,
        "train.steps": 2, "train.checkpoint_every": 0, "train.eval_every": 0, "tracking.enabled": False,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def _read(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


KEYS = ["loss", "reward_mean", "accuracy", "zero_var_frac", "entropy", "clip_frac", "completion_len", "lambda",
        "grad_norm"]
TEACHER_KEYS = ["delta_mean", "delta_std", "w_mean", "clip_low_frac", "clip_high_frac"]


@pytest.mark.parametrize("algo", ["grpo", "rlsd", "opsd", "grpo_opsd"])
def test_each_algorithm_trains_and_logs_finite_metrics(setup, tmp_path, algo):
    from rlsd.train import train

    model, tr, ev = setup
    cfg = load_config(overrides=_overrides(model, tr, ev, **{"algorithm.name": algo, "train.steps": 3}))
    had_port = "MASTER_PORT" in os.environ
    summary = train(cfg, output_dir=tmp_path)
    assert ("MASTER_PORT" in os.environ) == had_port  # no rendezvous variables left for later subprocesses
    rows = _read(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    keys = [k for k in KEYS if not (algo == "opsd" and k == "clip_frac")] + (TEACHER_KEYS if algo != "grpo" else [])
    for r in rows:
        for k in keys:
            assert k in r and math.isfinite(r[k]), (k, r.get(k))
        # values, not only finiteness: one update per batch, so the policy that sampled IS the one updated
        # (ratio 1 on every token: no clip, no dual clip, zero KL); 16 rollouts in 4 groups of 4
        if algo != "opsd":
            assert r["clip_frac"] == 0.0 and r["dual_clip_frac"] == 0.0
            assert r["ratio_mean"] == pytest.approx(1.0, abs=1e-6) and r["approx_kl"] == pytest.approx(0.0, abs=1e-6)
        assert (r["accuracy"] * 16) == pytest.approx(round(r["accuracy"] * 16))
        assert (r["zero_var_frac"] * 4) == pytest.approx(round(r["zero_var_frac"] * 4))
        assert r["accuracy"] <= r["reward_mean"] + 1e-9 and 0 < r["completion_len"] <= 12
        assert r["optimizer_step"] == r["step"]
        if algo in ("grpo", "rlsd") and r["zero_var_frac"] == 1.0:  # every advantage 0: no policy gradient
            assert r["grad_norm"] == 0.0 and r["loss"] == 0.0
        else:
            assert r["grad_norm"] > 0
    before, after = _weights(model), _weights(Path(summary["final_model"]))
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "no parameter moved"
    if algo == "rlsd":
        assert rows[0]["lambda"] == 0.5 and rows[1]["lambda"] == pytest.approx(0.49)
    if algo in ("opsd", "grpo_opsd"):
        assert all(r["jsd_loss"] > 0 for r in rows)


def test_rlsd_with_lambda_zero_equals_grpo(setup, tmp_path):
    from rlsd.train import train

    model, tr, ev = setup
    outs = {}
    for algo, extra in (("grpo", {}), ("rlsd", {"algorithm.lam0": 0.0})):
        cfg = load_config(overrides=_overrides(model, tr, ev, **{"algorithm.name": algo, **extra}))
        outs[algo] = train(cfg, output_dir=tmp_path / algo)
    a, b = _weights(Path(outs["grpo"]["final_model"])), _weights(Path(outs["rlsd"]["final_model"]))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la, lb = _read(tmp_path / "grpo" / "metrics.jsonl"), _read(tmp_path / "rlsd" / "metrics.jsonl")
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]


def test_micro_batches_give_the_same_loss_and_gradient(setup, tmp_path):
    """Four micro-batches of 4 rollouts == one batch of 16: same loss and same gradient norm.

    (Parameters after an AdamW step are not compared: Adam's first step moves every weight by +-lr
    whatever its gradient's size, so float rounding in a near-zero gradient flips whole updates.)"""
    from rlsd.train import train

    model, tr, ev = setup
    rows = []
    for mb in (0, 4):
        cfg = load_config(overrides=_overrides(model, tr, ev, **{"train.micro_batch_size": mb, "train.steps": 1,
                                                                 "algorithm.name": "grpo_opsd"}))
        train(cfg, output_dir=tmp_path / f"mb{mb}")
        rows.append(_read(tmp_path / f"mb{mb}" / "metrics.jsonl")[0])
    assert rows[0]["reward_mean"] == rows[1]["reward_mean"] and rows[0]["zero_var_frac"] < 1
    assert rows[0]["loss"] == pytest.approx(rows[1]["loss"], rel=1e-5, abs=1e-8)
    assert rows[0]["grad_norm"] > 0
    assert rows[0]["grad_norm"] == pytest.approx(rows[1]["grad_norm"], rel=1e-5)


DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _env():
    """This process's environment minus the rendezvous variables an in-process run has set."""
    return {**{k: v for k, v in os.environ.items() if k not in DIST_VARS}, "PYTHONUNBUFFERED": "1"}


def _cli(args, out, **kw):
    env = _env()
    return subprocess.Popen([PY, "-m", "rlsd", "train", *args, "--output", str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_killed_run_resumes_to_the_same_parameters(setup, tmp_path):
    model, tr, ev = setup
    args = []
    for o in _overrides(model, tr, ev, **{"train.steps": 5, "train.checkpoint_every": 2}):
        args += ["--set", o]
    ref = _cli(args, tmp_path / "ref")
    assert ref.wait(timeout=600) == 0, ref.stdout.read()

    out = tmp_path / "killed"
    p = _cli(args, out)
    ckpt = out / "checkpoints" / "step-2" / "trainer_state.json"
    deadline = time.time() + 600
    while not ckpt.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert ckpt.exists(), "no checkpoint appeared"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (out / "final").exists()
    again = _cli(args, out)
    assert again.wait(timeout=600) == 0, again.stdout.read()
    a, b = _weights(tmp_path / "ref" / "final"), _weights(out / "final")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-6)
    assert [r["step"] for r in _read(out / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    ra, rb = _read(tmp_path / "ref" / "metrics.jsonl"), _read(out / "metrics.jsonl")
    assert [r["loss"] for r in ra] == pytest.approx([r["loss"] for r in rb], abs=1e-7)


def test_a_resumed_run_logs_its_whole_history_to_mlflow(setup, tmp_path):
    """A resume opens a new MLflow run (the run a registered version's lineage points to): its metric history
    holds the steps before the resume too, with their values, not only the steps trained after it."""
    from mlflow.tracking import MlflowClient

    from rlsd.train import train

    model, tr, ev = setup
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    cfg = load_config(overrides=_overrides(model, tr, ev, **{"train.steps": 4, "train.checkpoint_every": 2,
                                                             "tracking.enabled": True, "tracking.uri": uri}))
    first = train(cfg, output_dir=tmp_path / "run")
    logged = _read(tmp_path / "run" / "metrics.jsonl")
    again = train(cfg, output_dir=tmp_path / "run")  # the step-2 checkpoint is the newest: steps 3-4 again
    assert again["run_id"] != first["run_id"]
    client = MlflowClient(uri)
    assert client.get_run(again["run_id"]).data.tags["rlsd.resumed_from_step"] == "2"
    history = sorted((m.step, m.value) for m in client.get_metric_history(again["run_id"], "loss"))
    assert [s for s, _ in history] == [1, 2, 3, 4]
    assert [v for _, v in history[:2]] == pytest.approx([r["loss"] for r in logged[:2]], abs=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("stage,launcher", [(2, "torchrun"), (3, "torchrun"), (2, "deepspeed")])
def test_two_ranks_match_one_rank(setup, tmp_path, stage, launcher):
    """Same global batch (deterministic per-group sampling): 2 ranks under a launcher == 1 rank."""
    model, tr, ev = setup
    ov = _overrides(model, tr, ev, **{"rollout.deterministic_groups": True, "deepspeed.zero_stage": stage,
                                      "train.steps": 1, "algorithm.name": "rlsd"})
    args = [a for o in ov for a in ("--set", o)]
    one = _cli(args, tmp_path / "one")
    assert one.wait(timeout=600) == 0, one.stdout.read()
    env = _env()
    if launcher == "torchrun":
        cmd = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "rlsd"]
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [str(Path(PY).parent / "deepspeed"), "--num_gpus", "2", "--master_port", str(port), "--module", "rlsd"]
    two = subprocess.run([*cmd, "train", *args, "--output", str(tmp_path / "two")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    r1, r2 = _read(tmp_path / "one" / "metrics.jsonl"), _read(tmp_path / "two" / "metrics.jsonl")
    (a,), (b,) = r1, r2
    assert a["reward_mean"] == b["reward_mean"] and a["zero_var_frac"] < 1
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-8)  # summation order differs across ranks
    assert a["grad_norm"] > 0 and a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    assert (tmp_path / "two" / "final" / "model.safetensors").is_file()


def test_privileged_context_never_reaches_a_student_input(setup, tmp_path, monkeypatch):
    """Record every text and token sequence the policy is shown; none contains a privileged context."""
    import rlsd.rollout as rollout_mod
    from rlsd.tasks import write_tasks
    from rlsd.train import train

    model, _, ev = setup
    secret = "VERIFIED-RESOLUTION-7731: reset the flux capacitor"
    tasks = [Task(id=f"t{i}", prompt=f"Q:{i}+{i}=?\n", privileged_context=f"{secret} {i}", answer=str(2 * i))
             for i in range(1, 9)]
    tr = tmp_path / "train.jsonl"
    write_tasks(tasks, tr)
    seen: list[str] = []
    real = rollout_mod.sample

    def spy(model_, tok, prompts, **kw):
        seen.extend(prompts)
        return real(model_, tok, prompts, **kw)

    monkeypatch.setattr(rollout_mod, "sample", spy)
    cfg = load_config(overrides=_overrides(model, tr, ev, **{"teacher.template": "'{question}{context}\n'"}))
    train(cfg, output_dir=tmp_path / "run")
    assert seen and all(secret not in p for p in seen)
    with pytest.raises(PrivilegedLeakError):
        assert_no_leak(tasks[:1], [tasks[0].prompt + tasks[0].privileged_context])


def test_bad_config_errors_name_field_value_and_fix():
    from rlsd.config import ConfigError

    with pytest.raises(ConfigError, match=r"rollout.group_size must be >= 2.*got 1"):
        load_config(overrides=["rollout.group_size=1"])
    with pytest.raises(ConfigError, match=r"algorithm.name must be one of grpo \| rlsd \| opsd \| grpo_opsd, got 'ppo'"):
        load_config(overrides=["algorithm.name=ppo"])
    with pytest.raises(ConfigError, match=r"unknown key train.stepz"):
        load_config(text="train:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match="train.steps must be an integer"):
        load_config(overrides=["train.steps=three"])


def test_every_recipe_loads():
    for p in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = load_config(p)
        assert load_config(text=cfg.to_yaml()) == cfg  # YAML round trip


def test_demo_learn_is_the_measured_recipe_and_promotes_only_on_a_gain():
    # benchmarks/results/demo_budget.md measured exactly this recipe; a first version of it must beat the base
    demo, learn = load_config(ROOT / "configs" / "demo.yaml"), load_config(ROOT / "configs" / "demo-learn.yaml")
    assert learn.registry.first_version_needs_gain and learn.registry.require_ci_above_zero
    assert not demo.registry.first_version_needs_gain
    assert (learn.train.steps, learn.train.lr, learn.rollout.prompts_per_step, learn.rollout.group_size,
            learn.rollout.temperature, learn.rollout.max_new_tokens) == (30, 1e-5, 2, 8, 1.0, 24)
    assert (learn.eval.limit, learn.eval.k, learn.eval.temperature, learn.eval.max_new_tokens) == (0, 4, 0.8, 24)
    assert learn.ingest.text_grader == {"grader": "similarity", "metric": "rouge_l"}
    assert learn.model.path == demo.model.path and learn.registry.model_name != demo.registry.model_name


def test_training_run_is_tracked_in_mlflow(setup, tmp_path):
    """Every step's metrics, the resolved config as params and artifact, plots and the metrics log."""
    from mlflow.tracking import MlflowClient

    from rlsd.train import train

    model, tr, ev = setup
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(overrides=_overrides(model, tr, ev, **{
        "train.steps": 3, "tracking.enabled": True, "tracking.uri": uri,
        "tracking.artifact_location": str(tmp_path / "artifacts"), "tracking.experiment": "t"}))
    summary = train(cfg, output_dir=tmp_path / "run")
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["algorithm.name"] == "rlsd" and run.data.params["train.steps"] == "3"
    hist = client.get_metric_history(run.info.run_id, "loss")
    logged = {m.step: m.value for m in hist}
    local = {r["step"]: r["loss"] for r in _read(tmp_path / "run" / "metrics.jsonl")}
    assert logged.keys() == local.keys() == {1, 2, 3}
    assert all(logged[k] == pytest.approx(local[k]) for k in local)
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "metrics.jsonl" in names and "config.yaml" in names
    assert any(a.path.endswith(".png") for a in client.list_artifacts(run.info.run_id, "plots"))


def test_shared_prompt_forward_equals_full_forward(setup):
    """Running each group's prompt once (repeated KV cache) gives the full forward's logits and gradients."""
    from rlsd.core import selective_log_softmax
    from rlsd.models import load_model, load_tokenizer
    from rlsd.train import completion_logits, left_pad

    model_dir, _, _ = setup
    model, tok = load_model(model_dir), load_tokenizer(model_dir)
    prompts = [tok("Q:12+7=?\n").input_ids, tok("Q:3+4=?\nH:7\n").input_ids]
    p_ids, p_mask = left_pad([p for p in prompts for _ in range(3)], tok.pad_token_id)
    g = torch.Generator().manual_seed(0)
    c_ids = torch.randint(2, len(tok), (6, 5), generator=g)
    c_mask = torch.ones(6, 5, dtype=torch.long)
    c_mask[1, 3:] = 0  # a row that stopped early
    grads = []
    for group in (1, 3):
        model.zero_grad()
        logits = completion_logits(model, p_ids, p_mask, c_ids, c_mask, 0.7, group)
        (selective_log_softmax(logits, c_ids) * c_mask).sum().backward()
        grads.append((logits.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-5, rtol=1e-5)
    for a, b in zip(grads[0][1], grads[1][1]):  # float sums in another order: tolerance relative to the scale
        torch.testing.assert_close(a, b, atol=1e-5 * max(1.0, a.abs().max().item()), rtol=1e-4)
