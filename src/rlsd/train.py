"""The training loop: one file, read top to bottom.

    rollout -> verify -> advantages -> old / teacher log-probs -> loss -> DeepSpeed step -> log -> checkpoint

``algorithm.name`` picks the update (RLSD_SPEC.md):
- grpo:      clipped surrogate with A_hat_t = A (group advantage);
- rlsd:      A_hat_t = A * ((1 - lam) + lam * clip(exp(sign(A) * Delta_t), 1 +- eps_w)), teacher = policy snapshot
             shown the privileged context; the verifier fixes the sign, the teacher only the magnitude;
- opsd:      generalized JSD between the teacher's and the student's next-token distributions along the
             student's own rollout, no verifier signal;
- grpo_opsd: grpo loss + opsd_alpha * opsd loss.

Where this departs from the paper / released code (all settings where they matter):
- Delta_t and the PPO ratio's old log-probs are the detached log-probs of the training forward itself:
  with one optimizer step per rollout batch the rollout policy IS the current policy, so no separate
  old-log-prob pass is run (the released code's choice of the current policy's log-prob). Setting
  ``rollout.old_logps_from: sampler`` uses the sampler's log-probs instead; the mismatch is logged.
- Log-probs of policy and teacher are taken from logits divided by the sampling temperature (the
  distribution that was sampled from), as TRL does; at temperature 1.0 (the paper's) this changes nothing.
- The loss of each micro-batch / rank is normalised by the GLOBAL token (or sequence) count, so micro-batches
  and ranks add up to exactly the full-batch loss and gradient (DeepSpeed's gradient averaging over ranks is
  undone by scaling with the world size).
- Each step's sampling is seeded from (seed, step, rank) -- or (seed, step, prompt) with
  ``rollout.deterministic_groups`` -- so a resumed run samples exactly what an uninterrupted run samples.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from rlsd import offline

offline.apply()

import numpy as np
import torch
import torch.distributed as dist

from rlsd import core
from rlsd.config import RLSDConfig
from rlsd.data.store import file_sha256
from rlsd.prompts import assert_no_leak, render, student_text, teacher_text
from rlsd.tasks import Task, read_tasks

# ==============================================================================================
# Distributed set-up and DeepSpeed engine
# ==============================================================================================


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_RENDEZVOUS_SET: list[str] = []  # the variables init_distributed set itself (no launcher)


def init_distributed() -> tuple[int, int, torch.device]:
    """(rank, world_size, device). Works with the deepspeed / torchrun launchers and as one plain process."""
    import deepspeed

    if "WORLD_SIZE" not in os.environ:  # one process, no launcher
        env = dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
        _RENDEZVOUS_SET[:] = [k for k in env if k not in os.environ]
        for k in _RENDEZVOUS_SET:
            os.environ[k] = env[k]
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo", verbose=False)
    rank, world = dist.get_rank(), dist.get_world_size()
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def forget_rendezvous_env() -> None:
    """Remove the variables init_distributed set, so that a launcher or subprocess started later by this
    process (kfp.local, torchrun) does not inherit a port this process holds."""
    for k in _RENDEZVOUS_SET:
        os.environ.pop(k, None)
    _RENDEZVOUS_SET.clear()


def deepspeed_config(cfg: RLSDConfig, *, micro_batch: int, grad_accum: int, world: int) -> dict[str, Any]:
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch * grad_accum * world,
        "gradient_clipping": cfg.train.grad_clip,
        "zero_allow_untested_optimizer": True,
        "zero_optimization": {"stage": cfg.deepspeed.zero_stage},
        "bf16": {"enabled": cfg.model.dtype == "bfloat16"},
        "fp16": {"enabled": cfg.model.dtype == "float16"},
        "wall_clock_breakdown": False,
        "steps_per_print": 10**9,
    }
    if cfg.deepspeed.zero_stage == 3:
        ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
    if cfg.deepspeed.offload_optimizer and cfg.deepspeed.zero_stage > 0:
        ds["zero_optimization"]["offload_optimizer"] = {"device": "cpu"}
    return ds


@contextlib.contextmanager
def gathered(module: torch.nn.Module, zero_stage: int):
    """Under ZeRO-3, hold every parameter whole (read-only) for a phase; a no-op otherwise."""
    if zero_stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            yield
    else:
        yield


# ==============================================================================================
# Batching helpers
# ==============================================================================================


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, P) ids and mask, left-padded."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids, mask


def _cache_kwarg(model: Any) -> str:
    """The forward argument that takes a KV cache: ``cache`` from transformers 5.2x, ``past_key_values``
    before (5.17, the GPU machines' version, does not know ``cache`` and would drop it silently)."""
    import inspect

    module = getattr(model, "module", model)  # a DeepSpeed engine wraps the model
    return "cache" if "cache" in inspect.signature(type(module).forward).parameters else "past_key_values"


def completion_logits(model: Any, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                      completion_ids: torch.Tensor, completion_mask: torch.Tensor,
                      temperature: float, group_size: int = 1) -> torch.Tensor:
    """Logits (N, T, V) that predict each completion token, divided by the sampling temperature.

    prompt_ids / prompt_mask: (N, P) left-padded; completion_ids / completion_mask: (N, T).
    Position ids follow the attention mask (as generate does with left padding).

    With ``group_size`` G > 1 and rows in groups of G that share one prompt (rollouts of one prompt),
    each prompt is run once and its KV cache repeated G times for the completions: the same logits
    (and, through the repeated cache, the same gradients) for ~G times less prompt compute, which is
    most of the work when privileged contexts make teacher prompts long.
    """
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attn = torch.cat([prompt_mask, completion_mask], dim=1)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    n, p_len = prompt_ids.shape
    t = completion_ids.shape[1]
    shared = (group_size > 1 and n % group_size == 0 and t > 1
              and not getattr(model, "is_activation_checkpointing", False)
              and torch.equal(prompt_ids[::group_size].repeat_interleave(group_size, 0), prompt_ids))
    if not shared:
        out = model(input_ids=ids, attention_mask=attn, position_ids=pos, logits_to_keep=t + 1, use_cache=False)
        return out.logits[:, :-1, :].float() / temperature
    from transformers import DynamicCache

    first = slice(None, None, group_size)  # one row per group
    cache = DynamicCache()
    kw = {_cache_kwarg(model): cache}  # the model fills the cache in place
    head = model(input_ids=prompt_ids[first], attention_mask=prompt_mask[first], position_ids=pos[first, :p_len],
                 use_cache=True, logits_to_keep=1, **kw)
    if cache.get_seq_length() != p_len:  # a model that ignored the cache would silently drop the prompt
        raise RuntimeError(f"shared prompt pass left {cache.get_seq_length()} cached positions, expected {p_len}")
    cache.batch_repeat_interleave(group_size)
    tail = model(input_ids=completion_ids[:, :-1], attention_mask=attn[:, :-1], position_ids=pos[:, p_len:-1],
                 use_cache=True, **kw)
    logits = torch.cat([head.logits.repeat_interleave(group_size, 0), tail.logits], dim=1)
    return logits.float() / temperature


# ==============================================================================================
# The loop
# ==============================================================================================


def _step_seed(seed: int, step: int, salt: int) -> int:
    return (seed * 1_000_003 + step * 10_007 + salt * 101) % (2**31 - 1)


def _prompt_order(n_tasks: int, seed: int, epoch: int, shuffle: bool) -> list[int]:
    order = list(range(n_tasks))
    if shuffle:
        random.Random(seed * 7919 + epoch).shuffle(order)
    return order


def _tasks_for_step(tasks: list[Task], step: int, per_step: int, seed: int, shuffle: bool) -> list[Task]:
    """The global batch of prompts for a step: a deterministic function of (seed, step) = the data position."""
    out = []
    for j in range(step * per_step, (step + 1) * per_step):
        epoch, pos = divmod(j, len(tasks))
        out.append(tasks[_prompt_order(len(tasks), seed, epoch, shuffle)[pos]])
    return out


def _all_reduce_mean(values: dict[str, float], world: int) -> dict[str, float]:
    if world == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: (t[i] / world).item() for i, k in enumerate(keys)}


def _all_reduce_sum(x: float, world: int) -> float:
    if world == 1:
        return x
    t = torch.tensor([x], dtype=torch.float64)
    dist.all_reduce(t)
    return t.item()


def train(cfg: RLSDConfig, output_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run (or resume) training as configured; returns a summary. See the module docstring."""
    import deepspeed
    from tqdm.auto import tqdm

    from rlsd.models import load_model, load_tokenizer
    from rlsd.rollout import sample
    from rlsd.verifiers import score

    out = Path(output_dir or cfg.train.output_dir)
    rank, world, device = init_distributed()
    algo = cfg.algorithm.name
    needs_teacher = algo in ("rlsd", "opsd", "grpo_opsd")
    needs_pg = algo in ("grpo", "rlsd", "grpo_opsd")
    needs_jsd = algo in ("opsd", "grpo_opsd")
    G = cfg.rollout.group_size
    if cfg.rollout.prompts_per_step % world:
        raise ValueError(f"rollout.prompts_per_step ({cfg.rollout.prompts_per_step}) must be divisible by the "
                         f"number of ranks ({world})")
    local_prompts = cfg.rollout.prompts_per_step // world
    local_rollouts = local_prompts * G
    micro = cfg.train.micro_batch_size or local_rollouts
    if local_rollouts % micro:
        raise ValueError(f"train.micro_batch_size ({micro}) must divide the rollouts per rank "
                         f"(prompts_per_step / ranks * group_size = {local_rollouts})")
    grad_accum = local_rollouts // micro
    share = G if micro % G == 0 else 1  # micro-batches hold whole groups: run each prompt once

    # ---------------------------------------------------------------- data, model, teacher, engine
    tasks = read_tasks(cfg.data.train_tasks)
    eval_tasks = read_tasks(cfg.data.eval_tasks)[: cfg.data.eval_limit] if cfg.train.eval_every and cfg.data.eval_limit else []
    tokenizer = load_tokenizer(cfg.model.path)
    torch.manual_seed(cfg.train.seed)
    model = load_model(cfg.model.path, dtype="float32", attn_implementation=cfg.model.attn_implementation)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.config.use_cache = False
    teacher = None
    if needs_teacher:
        teacher = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                                  betas=(cfg.train.adam_beta1, cfg.train.adam_beta2))
    ds_cfg = deepspeed_config(cfg, micro_batch=micro, grad_accum=grad_accum, world=world)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_cfg)
    policy = engine.module
    if teacher is not None:
        teacher.to(device=device, dtype=next(policy.parameters()).dtype)
    zero3 = cfg.deepspeed.zero_stage

    def sync_teacher() -> None:
        with torch.no_grad(), gathered(policy, zero3):
            for pt, ps in zip(teacher.parameters(), policy.parameters()):
                pt.copy_(ps.detach().to(pt.dtype))

    # ---------------------------------------------------------------- resume
    ckpt_dir = out / "checkpoints"
    start_step = 0
    latest = latest_checkpoint(ckpt_dir)
    if latest is not None:
        engine.load_checkpoint(str(ckpt_dir), tag=latest.name)
        state = json.loads((latest / "trainer_state.json").read_text())
        start_step = state["step"]
        if teacher is not None and (latest / "teacher.pt").is_file():
            teacher.load_state_dict(torch.load(latest / "teacher.pt", map_location=device, weights_only=True))
        rng_file = latest / f"rng_rank{rank}.pt"
        if rng_file.is_file():
            _set_rng_state(torch.load(rng_file, weights_only=False))
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(cfg.to_yaml())
    metrics_path = out / "metrics.jsonl"
    if rank == 0 and start_step == 0 and metrics_path.exists():
        metrics_path.unlink()  # a fresh run (no checkpoint) starts a fresh log
    if rank == 0 and start_step > 0 and metrics_path.exists():
        _truncate_log(metrics_path, start_step)

    # ---------------------------------------------------------------- tracking (rank 0; never fatal)
    tracker = None
    if rank == 0 and cfg.tracking.enabled:
        from rlsd.tracking import Tracker

        snapshot = next((t.meta["snapshot_id"] for t in tasks if t.meta.get("snapshot_id")), None)
        tracker = Tracker(cfg.tracking, run_name=f"{out.name}-{algo}",
                          tags={"rlsd.algorithm": algo, "rlsd.output_dir": str(out.resolve()),
                                "rlsd.resumed_from_step": start_step, "rlsd.world_size": world,
                                **({"rlsd.data_snapshot_id": snapshot} if snapshot else {})})
        tracker.start(cfg.flat(), cfg.to_yaml())

    # a failure inside the loop ends the MLflow run as FAILED (KILLED on Ctrl-C)
    with contextlib.ExitStack() as stack:
        stack.callback(forget_rendezvous_env)
        if tracker is not None:
            stack.enter_context(tracker)
        temp = cfg.rollout.temperature
        bar = tqdm(total=cfg.train.steps, initial=start_step, desc=f"{algo} train", disable=rank != 0, unit="step")
        step_metrics: dict[str, float] = {}
        for step in range(start_step, cfg.train.steps):
            t0 = time.perf_counter()
            # ============================================================ rollout
            step_tasks = _tasks_for_step(tasks, step, cfg.rollout.prompts_per_step, cfg.train.seed, cfg.data.shuffle)
            my_tasks = step_tasks[rank * local_prompts:(rank + 1) * local_prompts]
            prompts = [render(student_text(t), tokenizer, cfg.model.chat_template, cfg.model.response_prefix) for t in my_tasks]
            assert_no_leak(my_tasks, prompts)
            policy.eval()
            with torch.no_grad(), gathered(policy, zero3):
                if cfg.rollout.deterministic_groups:
                    parts = []
                    for i, p in enumerate(prompts):
                        torch.manual_seed(_step_seed(cfg.train.seed, step, 1_000 + rank * local_prompts + i))
                        parts.append(_sample(sample, policy, tokenizer, [p], cfg))
                    ro = _concat_rollouts(parts, tokenizer.pad_token_id)
                else:
                    torch.manual_seed(_step_seed(cfg.train.seed, step, rank))
                    ro = _sample(sample, policy, tokenizer, prompts, cfg)
            policy.train()
            t_rollout = time.perf_counter() - t0
            rows_tasks = [t for t in my_tasks for _ in range(G)]
            prompt_ids, prompt_mask = ro.prompt_ids.to(device), ro.prompt_mask.to(device)
            completion_ids, completion_mask = ro.completion_ids.to(device), ro.completion_mask.to(device)

            # ============================================================ verify
            raw_scores = [score(t, cfg.model.response_prefix + text) for t, text in zip(rows_tasks, ro.texts)]
            rewards = torch.tensor([0.0 if s is None else s for s in raw_scores], dtype=torch.float32)

            # ============================================================ advantages
            advantages = core.group_advantages(rewards, G).to(device)
            zero_var = (rewards.view(-1, G).std(dim=1) == 0).float().mean().item()

            # ============================================================ teacher prompts
            if needs_teacher:
                t_texts = [render(teacher_text(t, cfg.teacher.template), tokenizer, cfg.model.chat_template,
                                  cfg.model.response_prefix) for t in rows_tasks]
                t_enc = [tokenizer(x, add_special_tokens=False).input_ids[-cfg.rollout.max_prompt_tokens:]
                         for x in t_texts]
                t_prompt_ids, t_prompt_mask = left_pad(t_enc, tokenizer.pad_token_id)
                t_prompt_ids, t_prompt_mask = t_prompt_ids.to(device), t_prompt_mask.to(device)
            lam = core.lambda_schedule(step, lam0=cfg.algorithm.lam0, decay_steps=cfg.algorithm.lambda_decay_steps,
                                       warmup_steps=cfg.algorithm.lambda_warmup_steps) if algo == "rlsd" else 0.0
            sampler_logps = ro.logps.to(device) if ro.logps is not None else None

            # ============================================================ teacher log-probs, loss and step
            # One pass per micro-batch. With one optimizer step per rollout batch the old policy IS the
            # current one, so old_logps = logps.detach() of this very forward (no separate pass).
            t3 = time.perf_counter()
            t_teacher = 0.0
            n_tokens = _all_reduce_sum(completion_mask.sum().item(), world)
            n_seqs = float(cfg.rollout.prompts_per_step * G)
            old_logps = torch.zeros_like(completion_mask, dtype=torch.float32)
            teacher_logps = torch.zeros_like(old_logps) if needs_teacher else None
            loss_total, pg_total, jsd_total, entropy_sum = 0.0, 0.0, 0.0, 0.0
            pg_stats: dict[str, float] = {}
            for s in range(0, local_rollouts, micro):
                sl = slice(s, s + micro)
                mask = completion_mask[sl]
                tl = None
                if needs_teacher:
                    tt = time.perf_counter()
                    with torch.no_grad():
                        tl = completion_logits(teacher, t_prompt_ids[sl], t_prompt_mask[sl], completion_ids[sl],
                                               mask, temp, share)
                        teacher_logps[sl] = core.selective_log_softmax(tl, completion_ids[sl])
                    t_teacher += time.perf_counter() - tt
                    if not needs_jsd:
                        tl = None  # only the sampled tokens' log-probs are needed
                logits = completion_logits(engine, prompt_ids[sl], prompt_mask[sl], completion_ids[sl], mask, temp, share)
                logps = core.selective_log_softmax(logits, completion_ids[sl])
                with torch.no_grad():
                    old_logps[sl] = logps.detach()
                    entropy_sum += core.masked_sum(core.entropy_from_logits(logits.detach()), mask).item()
                old = sampler_logps[sl] if cfg.rollout.old_logps_from == "sampler" and sampler_logps is not None \
                    else old_logps[sl]
                loss = torch.zeros((), device=device)
                if needs_pg:
                    if algo == "rlsd":  # row-wise: this micro-batch's rows equal the full batch's
                        token_adv, _ = core.rlsd_token_advantages(
                            advantages[sl], old, teacher_logps[sl], mask, lam=lam, eps_w=cfg.algorithm.eps_w,
                            negative_only=cfg.algorithm.negative_only)
                    else:
                        token_adv = advantages[sl].unsqueeze(1) * mask.float()
                    pg, st = core.policy_loss(logps, old, token_adv, mask, eps_low=cfg.algorithm.eps_low,
                                              eps_high=cfg.algorithm.eps_high, dual_clip=cfg.algorithm.dual_clip,
                                              agg=cfg.algorithm.agg, num_tokens=n_tokens, num_seqs=n_seqs)
                    loss = loss + pg
                    pg_total += pg.item()
                    w = mask.sum().item()
                    for k, v in st.items():
                        pg_stats[k] = pg_stats.get(k, 0.0) + v * w
                if needs_jsd:
                    jsd = core.generalized_jsd(logits, tl, mask, beta=cfg.algorithm.jsd_beta,
                                               token_clip=cfg.algorithm.jsd_token_clip or None)
                    jl = core.aggregate(jsd, mask, agg=cfg.algorithm.agg, num_tokens=n_tokens, num_seqs=n_seqs)
                    loss = loss + (cfg.algorithm.opsd_alpha if algo == "grpo_opsd" else 1.0) * jl
                    jsd_total += jl.item()
                loss_total += loss.item()
                engine.backward(loss * world, scale_wrt_gas=False)
                del logits, tl
            grad_norm = _grad_norm(engine, zero3)
            engine.step()
            t_train = time.perf_counter() - t3 - t_teacher
            rlsd_metrics: dict[str, float] = {}
            if needs_teacher:  # Delta / w diagnostics over the whole batch (raw w, whatever lambda)
                _, rlsd_metrics = core.rlsd_token_advantages(advantages, old_logps, teacher_logps, completion_mask,
                                                             lam=lam, eps_w=cfg.algorithm.eps_w,
                                                             negative_only=cfg.algorithm.negative_only)

            if needs_teacher and cfg.teacher.kind == "snapshot" and (step + 1) % cfg.teacher.sync_interval == 0:
                sync_teacher()

            # ============================================================ log
            local_tokens = completion_mask.sum().item()
            acc = (rewards >= 1.0 - 1e-6).float().mean().item()
            m = {
                "reward_mean": rewards.mean().item(),
                "accuracy": acc,
                "unverifiable_frac": sum(s is None for s in raw_scores) / len(raw_scores),
                "zero_var_frac": zero_var,
                "entropy": entropy_sum / max(local_tokens, 1),
                "completion_len": local_tokens / local_rollouts,
                **{k: v / max(local_tokens, 1) for k, v in pg_stats.items()},
                **rlsd_metrics,
            }
            if sampler_logps is not None:  # sampler vs trainer log-probs of the same tokens
                m["sampler_logp_mismatch"] = core.masked_mean((sampler_logps - old_logps).abs(), completion_mask).item()
            m = _all_reduce_mean(m, world)
            m.update({
                "step": step + 1,
                "loss": _all_reduce_sum(loss_total, world),
                "pg_loss": _all_reduce_sum(pg_total, world),
                "jsd_loss": _all_reduce_sum(jsd_total, world),
                "lambda": lam,
                "grad_norm": grad_norm if not math.isnan(grad_norm) else float(engine.get_global_grad_norm() or float("nan")),
                "lr": cfg.train.lr,
                "time_rollout": t_rollout,
                "time_teacher": t_teacher,
                "time_train": t_train,
                "time_step": time.perf_counter() - t0,
            })
            if eval_tasks and (step + 1) % cfg.train.eval_every == 0:
                m["eval_accuracy"] = quick_eval(policy, tokenizer, eval_tasks, cfg, zero3)
            step_metrics = m
            if rank == 0:
                with metrics_path.open("a") as f:
                    f.write(json.dumps(m) + "\n")
                if tracker is not None:
                    tracker.log_metrics(m, step=step + 1)
                bar.set_postfix(reward=f"{m['reward_mean']:.2f}", loss=f"{m['loss']:.3f}")
            bar.update(1)

            # ============================================================ checkpoint
            if cfg.train.checkpoint_every and (step + 1) % cfg.train.checkpoint_every == 0 and step + 1 < cfg.train.steps:
                save_checkpoint(engine, teacher, ckpt_dir, step + 1, rank, cfg.train.keep_checkpoints)
        bar.close()

        # ---------------------------------------------------------------- export
        final = out / "final"
        export_model(engine, tokenizer, final, zero3, rank)
        if tracker is not None:
            tracker.log_artifact(metrics_path)  # the run ends (plots, FINISHED) when the block closes
    if dist.is_initialized():
        dist.barrier()
    return {"steps": cfg.train.steps, "run_id": tracker.run_id if tracker else None, "final_model": str(final),
            "metrics": str(metrics_path), "last": step_metrics, "world_size": world}


# ==============================================================================================
# Pieces of the loop
# ==============================================================================================


def _sample(sample_fn: Any, model: Any, tokenizer: Any, prompts: list[str], cfg: RLSDConfig) -> Any:
    r = cfg.rollout
    return sample_fn(model, tokenizer, prompts, num_samples=r.group_size, max_new_tokens=r.max_new_tokens,
                     temperature=r.temperature, top_p=r.top_p, top_k=r.top_k, max_prompt_tokens=r.max_prompt_tokens,
                     generation_batch_size=r.generation_batch_size, engine=r.engine, kernels=r.kernels)


def _concat_rollouts(parts: list[Any], pad_id: int) -> Any:
    from rlsd.rollout import Rollout

    def cat(key: str, left: bool) -> torch.Tensor:
        ts = [getattr(p, key) for p in parts]
        w = max(t.shape[1] for t in ts)
        fill = pad_id if "ids" in key else 0
        padded = []
        for t in ts:
            pad = torch.full((t.shape[0], w - t.shape[1]), fill, dtype=t.dtype)
            padded.append(torch.cat([pad, t] if left else [t, pad], dim=1))
        return torch.cat(padded)

    logps = None
    if all(p.logps is not None for p in parts):
        logps = cat("logps", False)
    return Rollout(cat("prompt_ids", True), cat("prompt_mask", True), cat("completion_ids", False),
                   cat("completion_mask", False), [t for p in parts for t in p.texts], logps)


@torch.no_grad()
def quick_eval(policy: Any, tokenizer: Any, tasks: list[Task], cfg: RLSDConfig, zero_stage: int = 0) -> float:
    """Greedy pass@1 on held-out tasks with the training verifiers (student prompts only)."""
    from rlsd.rollout import sample
    from rlsd.verifiers import score

    prompts = [render(student_text(t), tokenizer, cfg.model.chat_template, cfg.model.response_prefix) for t in tasks]
    was = policy.training
    policy.eval()
    with gathered(policy, zero_stage):
        ro = sample(policy, tokenizer, prompts, num_samples=1, max_new_tokens=cfg.rollout.max_new_tokens, greedy=True,
                    max_prompt_tokens=cfg.rollout.max_prompt_tokens, engine=cfg.rollout.engine,
                    kernels=cfg.rollout.kernels)
    policy.train(was)
    scores = [score(t, cfg.model.response_prefix + x) or 0.0 for t, x in zip(tasks, ro.texts)]
    return float(np.mean(scores)) if scores else float("nan")


def _grad_norm(engine: Any, zero_stage: int) -> float:
    """Global L2 norm of the accumulated gradient before clipping (DeepSpeed's own figure under ZeRO 1-3,
    where the module's .grad is partitioned)."""
    if zero_stage == 0:
        sq = sum(float(p.grad.float().pow(2).sum()) for p in engine.module.parameters() if p.grad is not None)
        return sq**0.5  # stage 0: gradients are already averaged over ranks at the boundary
    return float("nan")


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])


def _checkpoint_files(path: Path) -> dict[str, str]:
    """{relative file name: sha256} of every file of a checkpoint folder except its trainer_state.json."""
    return {f.relative_to(path).as_posix(): file_sha256(f) for f in sorted(path.rglob("*"))
            if f.is_file() and not f.name.startswith("trainer_state.json")}


def _checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint that has a trainer_state.json cannot be loaded, or None when it is whole."""
    try:
        state = json.loads((path / "trainer_state.json").read_text())
        want = state.get("files")
    except (OSError, ValueError, AttributeError) as e:
        return f"unreadable trainer_state.json ({e})"
    if want is None:
        return None  # written before checksums were recorded: trusted as before
    have = _checkpoint_files(path)
    bad = sorted(k for k in want if have.get(k) != want[k])
    return f"{len(bad)} file(s) missing or changed since they were written: {', '.join(bad[:3])}" if bad else None


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest COMPLETE checkpoint, or None. Complete = its trainer_state.json (written last) exists and
    every file still has the SHA-256 recorded there; a corrupt newest checkpoint falls back to the previous
    complete one with a warning."""
    import warnings

    if not ckpt_dir.is_dir():
        return None
    done = sorted((p for p in ckpt_dir.glob("step-*") if (p / "trainer_state.json").is_file()),
                  key=lambda p: int(p.name.split("-")[1]), reverse=True)
    for p in done:
        problem = _checkpoint_problem(p)
        if problem is None:
            return p
        warnings.warn(f"checkpoint {p} is not loadable ({problem}); falling back to the previous complete "
                      "checkpoint (delete the folder to silence this)", RuntimeWarning, stacklevel=2)
    return None


def save_checkpoint(engine: Any, teacher: Any, ckpt_dir: Path, step: int, rank: int, keep: int) -> Path:
    """Model + optimizer (DeepSpeed), teacher snapshot, RNG state, step (= data position).

    trainer_state.json is written last, atomically, with the SHA-256 of every other file: a checkpoint
    without it (a write that was killed) or whose files no longer match is never loaded. A folder left
    by an earlier killed write of the same step is removed first.
    """
    tag = f"step-{step}"
    path = ckpt_dir / tag
    if rank == 0 and path.exists():
        shutil.rmtree(path)
    if dist.is_initialized():
        dist.barrier()
    engine.save_checkpoint(str(ckpt_dir), tag=tag, save_latest=False)
    torch.save(_rng_state(), path / f"rng_rank{rank}.pt")
    if dist.is_initialized():
        dist.barrier()
    if rank == 0:
        if teacher is not None:
            torch.save(teacher.state_dict(), path / "teacher.pt")
        if os.environ.get("RLSD_FAILPOINT") == "checkpoint-before-state":  # fault-injection tests only
            os.kill(os.getpid(), 9)
        tmp = path / "trainer_state.json.tmp"
        tmp.write_text(json.dumps({"step": step, "data_position": step, "time": time.time(),
                                   "files": _checkpoint_files(path)}))
        tmp.replace(path / "trainer_state.json")
        done = sorted((p for p in ckpt_dir.glob("step-*") if (p / "trainer_state.json").is_file()),
                      key=lambda p: int(p.name.split("-")[1]))
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    if dist.is_initialized():
        dist.barrier()
    return path


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the resumed step (they were written after the last checkpoint)."""
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    path.write_text("".join(ln + "\n" for ln in keep))


def export_model(engine: Any, tokenizer: Any, out: Path, zero_stage: int, rank: int) -> None:
    """A plain save_pretrained folder (ZeRO-3 weights gathered first)."""
    module = engine.module
    if zero_stage == 3:
        state = engine._zero3_consolidated_16bit_state_dict()
    else:
        state = module.state_dict() if rank == 0 else None
    if rank == 0:
        tmp = out.with_name(out.name + ".partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        module.save_pretrained(tmp, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)

