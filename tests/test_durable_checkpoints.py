"""The train step's outputs (rlsd.cluster.train_step): the Model folder holds the final weights only; checkpoints
go to train.checkpoint_dir/<key>, the key derived from the step's own inputs (rlsd.cluster.checkpoint_key, as the
KFP cache key is), so a train pod restarted with a fresh empty working directory and the same inputs resumes from
the newest complete checkpoint and ends with the weights of an uninterrupted run; the final model is pushed to the
store when asked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlsd.cluster import checkpoint_key
from rlsd.config import load_config
from tests.helpers import warm_tiny_model, write_addition_tasks

MODEL_FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tr, ev = write_addition_tasks(tmp_path_factory.mktemp("tasks"))
    return warm_tiny_model(), tr, ev


def _sets(setup, **extra) -> list[str]:
    model, tr, ev = setup
    base = {"model.path": str(model), "data.train_tasks": str(tr), "data.eval_tasks": str(ev),
            "rollout.group_size": 4, "rollout.prompts_per_step": 4, "rollout.max_new_tokens": 12,
            "rollout.engine": "generate", "teacher.template": "'{question}H:{context}\n'", "train.lr": 1e-4,
            "train.steps": 5, "train.checkpoint_every": 2, "train.eval_every": 0, "tracking.enabled": False}
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def _steps(metrics: Path) -> list[int]:
    return [json.loads(x)["step"] for x in metrics.read_text().splitlines() if x.strip()]


def test_model_artifact_holds_final_weights_only_and_checkpoints_go_to_the_durable_folder(setup, tmp_path):
    from rlsd.cluster import train_step

    durable = tmp_path / "pvc" / "checkpoints"
    cfg = load_config(overrides=_sets(setup, **{"train.checkpoint_dir": str(durable)}))
    s = train_step(cfg, model_dir=str(tmp_path / "model"), run_key="run/7 a")
    model = tmp_path / "model"
    names = {p.relative_to(model).as_posix() for p in model.rglob("*")}
    assert names == MODEL_FILES, names  # no checkpoints/, optimizer states, teacher.pt, rng, metrics
    assert s["final_model"] == str(model) and s["store_ref"] == ""
    assert s["base_model"] == {"kind": "path", "name": str(setup[0]), "version": None, "uri": str(setup[0]),
                               "sha256_verified": False}
    ckpts = sorted(p.name for p in (durable / "run-7-a").iterdir())
    assert ckpts == ["step-2", "step-4"]  # the run id (made a folder name) keeps runs apart
    ckpt_bytes = sum(p.stat().st_size for p in (durable / "run-7-a" / "step-4").rglob("*") if p.is_file())
    model_bytes = sum(p.stat().st_size for p in model.rglob("*") if p.is_file())
    in_ckpt = {p.name for p in (durable / "run-7-a" / "step-4").rglob("*") if p.is_file()}
    assert {"mp_rank_00_model_states.pt", "trainer_state.json", "rng_rank0.pt", "teacher.pt"} <= in_ckpt, in_ckpt
    # weights + teacher + Adam's two moments: the checkpoint is > 3x the weights; the artifact is not
    assert ckpt_bytes > 3 * (model / "model.safetensors").stat().st_size
    assert model_bytes < 1.5 * (model / "model.safetensors").stat().st_size


# the pipeline train step's inputs (components/train.py passes these to checkpoint_key)
INPUTS = {"config_yaml": "train: {steps: 5}\n", "tasks": "s3://mlpipeline/v2/artifacts/build-tasks/1/tasks",
          "base_model": "store://models/smollm2@ab12", "algorithm": "rlsd", "steps": 5, "nodes": 1, "gpus_per_node": 0}


def test_the_checkpoint_key_is_derived_from_the_steps_inputs():
    """Same inputs (a retried or restarted pod of the same task) -> same key; a changed pinned base, snapshot
    (tasks artifact), recipe or parameter -> another key, so no run resumes another's checkpoints."""
    from rlsd.cluster import _run_dir_name

    key = checkpoint_key(**INPUTS)
    assert key == checkpoint_key(**dict(reversed(list(INPUTS.items()))))  # the same inputs, in any order
    assert key.startswith("train-") and _run_dir_name(key) == key and len(key) == 38
    changed = [("base_model", "models:/rlsd-model/1"), ("base_model", "store://models/smollm2@ab13"),
               ("tasks", "s3://mlpipeline/v2/artifacts/build-tasks/2/tasks"), ("config_yaml", "train: {steps: 6}\n"),
               ("algorithm", "grpo"), ("steps", 6), ("nodes", 2), ("gpus_per_node", 1)]
    keys = {checkpoint_key(**{**INPUTS, k: v}) for k, v in changed}
    assert len(keys) == len(changed) and key not in keys


KEY = checkpoint_key(**INPUTS)


def _env():
    drop = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "RLSD_FAILPOINT")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "PYTHONUNBUFFERED": "1"}


def _pod(sets: list[str], model_dir: Path, scratch: Path) -> subprocess.Popen:
    """A train pod: a fresh process with its own empty scratch (working) folder, the key derived from the same
    inputs as components/train.py derives it (nothing passed from the previous pod)."""
    code = ("import json, sys; from rlsd.config import load_config; from rlsd.cluster import checkpoint_key, train_step; "
            "train_step(load_config(overrides=sys.argv[4:]), model_dir=sys.argv[1], "
            "run_key=checkpoint_key(**json.loads(sys.argv[3])), scratch=sys.argv[2])")
    scratch.mkdir(parents=True)
    return subprocess.Popen([sys.executable, "-c", code, str(model_dir), str(scratch), json.dumps(INPUTS), *sets],
                            cwd=scratch,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_restarted_pod_resumes_from_the_durable_checkpoint_to_the_same_weights(setup, tmp_path):
    from rlsd.cluster import train_step

    ref = load_config(overrides=_sets(setup, **{"train.checkpoint_dir": str(tmp_path / "ref-ckpt")}))
    train_step(ref, model_dir=str(tmp_path / "ref"), run_key="uninterrupted")

    sets = _sets(setup, **{"train.checkpoint_dir": str(tmp_path / "pvc")})
    p = _pod(sets, tmp_path / "model", tmp_path / "pod1")
    done = tmp_path / "pvc" / KEY / "step-2" / "trainer_state.json"
    deadline = time.time() + 600
    while not done.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert done.exists(), p.stdout.read() if p.poll() is not None else "no checkpoint appeared"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (tmp_path / "model").exists()

    again = _pod(sets, tmp_path / "model", tmp_path / "pod2")  # a new pod: empty working folder, same inputs
    assert again.wait(timeout=600) == 0, again.stdout.read()
    # it resumed rather than starting over: steps 1-2 are the killed pod's own lines (their timings too), brought
    # back from the checkpoint's copy of the log, and 3-5 were trained anew
    log1 = (tmp_path / "pod1" / "run" / "metrics.jsonl").read_text().splitlines()
    log2 = (tmp_path / "pod2" / "run" / "metrics.jsonl").read_text().splitlines()
    assert _steps(tmp_path / "pod2" / "run" / "metrics.jsonl") == [1, 2, 3, 4, 5]
    assert log2[:2] == log1[:2]
    a, b = load_file(str(tmp_path / "ref" / "model.safetensors")), load_file(str(tmp_path / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-6)


def test_final_model_is_pushed_to_the_store_and_the_base_is_fetched_from_it(setup, tmp_path, capsys):
    from rlsd.cli import main
    from rlsd.cluster import train_step
    from rlsd.data.store import file_sha256
    from rlsd.model_refs import fetch_model

    store = tmp_path / "store"
    assert main(["import-model", str(setup[0]), "--name", "warm", "--set", f"store.root={store}"]) == 0
    ref = next(w for w in capsys.readouterr().out.split() if w.startswith("store://models/warm@"))
    cfg = load_config(overrides=_sets(setup, **{"model.path": "store://models/warm", "store.root": str(store),
                                                "train.push_model": True, "train.steps": 1,
                                                "registry.model_name": "pushed", "tracking.enabled": True,
                                                "tracking.uri": f"sqlite:///{tmp_path / 'ml.db'}"}))
    s = train_step(cfg, model_dir=str(tmp_path / "model"), run_key="r")
    assert s["base_model"]["uri"] == ref and s["base_model"]["sha256_verified"] is True
    # the training run says which base it started from
    from mlflow.tracking import MlflowClient

    tags = MlflowClient(f"sqlite:///{tmp_path / 'ml.db'}").get_run(s["run_id"]).data.tags
    assert {k: tags[f"rlsd.base_model.{k}"] for k in ("kind", "name", "version", "uri", "sha256_verified")} == {
        "kind": "store", "name": "warm", "version": ref.rsplit("@", 1)[1], "uri": ref, "sha256_verified": "True"}
    assert s["store_ref"].startswith("store://models/pushed@")
    path, info = fetch_model(cfg, s["store_ref"], tmp_path / "back")
    assert {k: file_sha256(path / k) for k in MODEL_FILES} == {k: file_sha256(tmp_path / "model" / k) for k in MODEL_FILES}
    assert info["sha256_verified"] is True


def test_without_the_volume_a_restarted_pod_resumes_from_the_store_copy(setup, tmp_path):
    """train.checkpoint_store: every complete checkpoint is copied to the store; a new pod whose checkpoint folder
    is empty (no persistent volume: a different, empty folder) restores the newest copy, hash-checked, and
    resumes from it to the weights of an uninterrupted run."""
    from rlsd.cluster import train_step

    store = tmp_path / "store"
    ref = load_config(overrides=_sets(setup, **{"store.root": str(store)}))
    train_step(ref, model_dir=str(tmp_path / "ref"), run_key="uninterrupted")

    def sets(disk):
        return _sets(setup, **{"train.checkpoint_dir": str(tmp_path / disk), "train.checkpoint_store": True,
                               "store.root": str(store)})

    p = _pod(sets("disk1"), tmp_path / "model", tmp_path / "pod1")
    deadline = time.time() + 600
    pushed = store / "refs" / "folders" / f"checkpoints-{KEY}"  # written last: the copy is whole
    while not pushed.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert pushed.exists(), p.stdout.read() if p.poll() is not None else "no checkpoint reached the store"
    p.send_signal(signal.SIGKILL)
    p.wait()
    # the pod's disk is gone: the new pod gets an empty checkpoint folder, the store keeps the copy of step 2
    again = _pod(sets("disk2"), tmp_path / "model", tmp_path / "pod2")
    assert again.wait(timeout=600) == 0, again.stdout.read()
    # the log of steps 1-2 came back with the checkpoint: the killed pod's own lines
    log1 = (tmp_path / "pod1" / "run" / "metrics.jsonl").read_text().splitlines()
    assert (tmp_path / "pod2" / "run" / "metrics.jsonl").read_text().splitlines()[:2] == log1[:2]
    assert _steps(tmp_path / "pod2" / "run" / "metrics.jsonl") == [1, 2, 3, 4, 5]
    assert sorted(x.name for x in (tmp_path / "disk2" / KEY).iterdir()) == ["step-2", "step-4"]
    a, b = load_file(str(tmp_path / "ref" / "model.safetensors")), load_file(str(tmp_path / "model" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-6)
