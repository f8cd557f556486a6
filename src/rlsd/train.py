"""The training loop: one file, read top to bottom.

    rollout -> verify -> advantages -> teacher prompts -> old / teacher log-probs -> updates -> log -> checkpoint

``algorithm.name`` picks the update (RLSD_SPEC.md):
- grpo:      clipped surrogate with A_hat_t = A (group advantage);
- rlsd:      A_hat_t = A * ((1 - lam) + lam * clip(exp(sign(A) * Delta_t), 1 +- eps_w)), teacher = policy snapshot
             shown the privileged context; the verifier fixes the sign, the teacher only the magnitude;
- opsd:      generalized JSD between the teacher's and the student's next-token distributions along the
             student's own rollout, no verifier signal;
- grpo_opsd: grpo loss + opsd_alpha * opsd loss.

Where this departs from the paper / released code (all settings where they matter):
- One optimizer step per rollout batch (``train.updates_per_batch: 1``, the paper's): Delta_t and the PPO
  ratio's old log-probs are the detached log-probs of the training forward itself (the rollout policy IS
  the current one, so no separate pass). With U updates per batch (PPO mini-batches) and E epochs, one
  no-grad pass computes the old (and, for RLSD, the teacher) log-probs first and every update uses them:
  Delta_t is that of the sampling policy, fixed for the batch like the advantages. lambda_k and the teacher
  sync count optimizer steps; checkpoints and resume are at batch boundaries. ``rollout.old_logps_from:
  sampler`` uses the sampler's log-probs instead; the mismatch is logged.
- Micro-batches: DeepSpeed's accumulation boundary is set explicitly (on the last micro-batch of each
  optimizer step), never left to its micro-step counter, which counts across rollout batches.
- Prompts are fitted to ``rollout.max_prompt_tokens`` by shortening the question (the teacher's context
  first) in the middle (rlsd.prompts.fit_student / fit_teacher); both end in the same template tail.
- Dropout is switched off in the policy (rlsd.models.disable_dropout).
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
import functools
import json
import math
import os
import random
import shutil
import socket
import time
from dataclasses import dataclass, field
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
from rlsd.models import disable_dropout
from rlsd.prompts import assert_no_leak, fit_student, fit_teacher, template_tail
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
    device = torch.device("cpu")
    if torch.cuda.is_available():  # the device first: NCCL's barrier and collectives use the current one
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo", verbose=False)
    return dist.get_rank(), dist.get_world_size(), device


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


@functools.lru_cache(maxsize=4)
def _prompt_order(n_tasks: int, seed: int, epoch: int, shuffle: bool) -> tuple[int, ...]:
    order = list(range(n_tasks))
    if shuffle:
        random.Random(seed * 7919 + epoch).shuffle(order)
    return tuple(order)


def _tasks_for_step(tasks: list[Task], step: int, per_step: int, seed: int, shuffle: bool) -> list[Task]:
    """The global batch of prompts for a step: a deterministic function of (seed, step) = the data position."""
    out = []
    for j in range(step * per_step, (step + 1) * per_step):
        epoch, pos = divmod(j, len(tasks))
        out.append(tasks[_prompt_order(len(tasks), seed, epoch, shuffle)[pos]])
    return out


def _all_reduce(values: list[float], world: int, device: torch.device) -> list[float]:
    """Sum of ``values`` over ranks. The tensor lives on the trainer's device: NCCL serves only CUDA
    tensors (every collective of the trainer goes through here)."""
    if world == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _weighted_mean(values: dict[str, float], weight: float, world: int, device: torch.device) -> dict[str, float]:
    """Mean over ranks of each value weighted by ``weight`` (this rank's token or row count)."""
    keys = sorted(values)
    sums = _all_reduce([values[k] * weight for k in keys] + [weight], world, device)
    return {k: sums[i] / max(sums[-1], 1e-12) for i, k in enumerate(keys)}


@dataclass
class Batch:
    """One rank's rollout batch on the trainer's device, rows in groups of G (row i*G + j = sample j of
    prompt i). prompt_ids / prompt_mask: (N, P) left-padded; completion_ids / completion_mask: (N, T);
    advantages: (N,); teacher_prompt_ids / teacher_prompt_mask: (N, P_T) or None; sampler_logps: (N, T) or
    None; old_logps / teacher_logps: (N, T), filled by ``logps_pass`` or by the first update's forward."""

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    advantages: torch.Tensor
    teacher_prompt_ids: torch.Tensor | None = None
    teacher_prompt_mask: torch.Tensor | None = None
    sampler_logps: torch.Tensor | None = None
    old_logps: torch.Tensor = field(init=False)
    teacher_logps: torch.Tensor = field(init=False)
    old_ready: bool = False  # old_logps computed before the updates (more than one update per batch)
    teacher_ready: bool = False

    def __post_init__(self) -> None:
        self.old_logps = torch.zeros_like(self.completion_mask, dtype=torch.float32)
        self.teacher_logps = torch.zeros_like(self.old_logps)


def batch_metrics(b: Batch, rewards: torch.Tensor, raw_scores: list[float | None], sums: dict[str, float],
                  rlsd_metrics: dict[str, float], *, group: int, updates: int, world: int,
                  device: torch.device) -> dict[str, float]:
    """One rollout batch's logged statistics, reduced over ranks: per-rollout ones (reward, accuracy,
    zero-variance groups, completion length) weighted by rollouts, per-token ones (entropy, PPO clip and
    ratio, RLSD weight diagnostics, sampler mismatch) by tokens, and the losses as the mean over the batch's
    ``updates`` optimizer steps (= the batch's loss with one update). ``sums`` holds the updates' summed
    statistics (rlsd.train.policy_update) and is consumed."""
    n = len(raw_scores)
    local_tokens = b.completion_mask.sum().item()
    m = _weighted_mean({"reward_mean": rewards.mean().item(),
                        "accuracy": (rewards >= 1.0 - 1e-6).float().mean().item(),
                        "unverifiable_frac": sum(s is None for s in raw_scores) / n,
                        "zero_var_frac": (rewards.view(-1, group).std(dim=1) == 0).float().mean().item(),
                        "completion_len": local_tokens / n},
                       n, world, device)
    seen = max(sums.pop("tokens"), 1.0)  # tokens over all updates (epochs count them again)
    per_token = {"entropy": sums.pop("entropy") / seen,
                 **{k: sums.pop(k) / seen for k in ("clip_frac", "dual_clip_frac", "ratio_mean", "approx_kl") if k in sums}}
    m.update(_weighted_mean(per_token, seen, world, device))
    if rlsd_metrics or b.sampler_logps is not None:
        tok = dict(rlsd_metrics)
        if b.sampler_logps is not None:  # sampler vs trainer log-probs of the same tokens
            tok["sampler_logp_mismatch"] = core.masked_mean((b.sampler_logps - b.old_logps).abs(),
                                                            b.completion_mask).item()
        m.update(_weighted_mean(tok, local_tokens, world, device))
    losses = _all_reduce([sums.pop("loss"), sums.pop("pg_loss"), sums.pop("jsd_loss")], world, device)
    m.update({"loss": losses[0] / updates, "pg_loss": losses[1] / updates, "jsd_loss": losses[2] / updates})
    return m


@torch.no_grad()
def logps_pass(b: Batch, engine: Any, teacher: Any, *, micro: int, temperature: float, share: int,
               old: bool, teacher_too: bool) -> None:
    """Before several updates on one batch: the rollout policy's log-probs (old_logps; the PPO ratio's
    denominator and RLSD's Delta stay those of the policy that sampled) and the teacher's, one no-grad
    pass per micro-batch."""
    for s in range(0, b.completion_ids.shape[0], micro):
        sl = slice(s, s + micro)
        ids, mask = b.completion_ids[sl], b.completion_mask[sl]
        if old:
            b.old_logps[sl] = core.selective_log_softmax(
                completion_logits(engine, b.prompt_ids[sl], b.prompt_mask[sl], ids, mask, temperature, share), ids)
        if teacher_too:
            b.teacher_logps[sl] = core.selective_log_softmax(completion_logits(
                teacher, b.teacher_prompt_ids[sl], b.teacher_prompt_mask[sl], ids, mask, temperature, share), ids)
    b.old_ready, b.teacher_ready = b.old_ready or old, b.teacher_ready or teacher_too


def policy_update(engine: Any, teacher: Any, b: Batch, rows: slice, *, cfg: RLSDConfig, micro: int, share: int,
                  lam: float, num_tokens: float, num_seqs: float, world: int, zero_stage: int) -> dict[str, float]:
    """ONE optimizer step on ``rows`` of the batch: forward and backward per micro-batch with DeepSpeed's
    accumulation boundary set explicitly (False, ..., False, True), then engine.step(). The loss is
    normalised by the GLOBAL token (sequence) count of these rows, so micro-batches and ranks add up to the
    loss of the rows as one batch (DeepSpeed's averaging over ranks is undone by the factor ``world``).
    Returns sums over the rows (loss, pg_loss, jsd_loss, entropy and policy statistics weighted by
    tokens, tokens) and the update's grad_norm and teacher time."""
    algo, temp, a = cfg.algorithm.name, cfg.rollout.temperature, cfg.algorithm
    needs_teacher, needs_jsd = algo in ("rlsd", "opsd", "grpo_opsd"), algo in ("opsd", "grpo_opsd")
    sums: dict[str, float] = {"loss": 0.0, "pg_loss": 0.0, "jsd_loss": 0.0, "entropy": 0.0, "tokens": 0.0,
                              "time_teacher": 0.0}
    starts = range(rows.start, rows.stop, micro)
    for s in starts:
        sl = slice(s, s + micro)
        ids, mask = b.completion_ids[sl], b.completion_mask[sl]
        tl = None
        if needs_jsd or (needs_teacher and not b.teacher_ready):
            tt = time.perf_counter()
            with torch.no_grad():
                tl = completion_logits(teacher, b.teacher_prompt_ids[sl], b.teacher_prompt_mask[sl], ids, mask, temp,
                                       share)
                b.teacher_logps[sl] = core.selective_log_softmax(tl, ids)
                if not needs_jsd:
                    tl = None  # only the sampled tokens' log-probs are needed: free (micro, T, V) now
            sums["time_teacher"] += time.perf_counter() - tt
        logits = completion_logits(engine, b.prompt_ids[sl], b.prompt_mask[sl], ids, mask, temp, share)
        logps = core.selective_log_softmax(logits, ids)
        with torch.no_grad():
            if not b.old_ready:  # one update per batch: the policy that sampled IS this one
                b.old_logps[sl] = logps.detach()
            sums["entropy"] += core.masked_sum(core.entropy_from_logits(logits.detach()), mask).item()
        w = mask.sum().item()
        sums["tokens"] += w
        old = b.sampler_logps[sl] if cfg.rollout.old_logps_from == "sampler" and b.sampler_logps is not None \
            else b.old_logps[sl]
        loss = torch.zeros((), device=logps.device)
        if algo != "opsd":
            if algo == "rlsd":  # row-wise: this micro-batch's rows equal the full batch's
                token_adv, _ = core.rlsd_token_advantages(b.advantages[sl], old, b.teacher_logps[sl], mask, lam=lam,
                                                          eps_w=a.eps_w, negative_only=a.negative_only)
            else:
                token_adv = b.advantages[sl].unsqueeze(1) * mask.float()
            pg, st = core.policy_loss(logps, old, token_adv, mask, eps_low=a.eps_low, eps_high=a.eps_high,
                                      dual_clip=a.dual_clip, agg=a.agg, num_tokens=num_tokens, num_seqs=num_seqs)
            loss = loss + pg
            sums["pg_loss"] += pg.item()
            for k, v in st.items():
                sums[k] = sums.get(k, 0.0) + v * w
        if needs_jsd:
            jsd = core.generalized_jsd(logits, tl, mask, beta=a.jsd_beta, token_clip=a.jsd_token_clip or None)
            jl = core.aggregate(jsd, mask, agg=a.agg, num_tokens=num_tokens, num_seqs=num_seqs)
            loss = loss + (a.opsd_alpha if algo == "grpo_opsd" else 1.0) * jl
            sums["jsd_loss"] += jl.item()
        sums["loss"] += loss.item()
        engine.set_gradient_accumulation_boundary(s == starts[-1])
        engine.backward(loss * world, scale_wrt_gas=False)
        del logits, tl
    grad_norm = _grad_norm(engine, zero_stage)
    engine.step()
    if math.isnan(grad_norm):  # ZeRO 1-3: DeepSpeed's own figure, known after the step (None: it has none;
        ds_norm = engine.get_global_grad_norm()  # 0.0 is a norm, that of a batch whose advantages are all 0)
        grad_norm = float("nan") if ds_norm is None else float(ds_norm)
    sums["grad_norm"] = grad_norm
    return sums


def update_rows(n_rows: int, updates: int, epochs: int) -> list[slice]:
    """The rows of each optimizer step of one batch: ``updates`` consecutive mini-batches, ``epochs`` passes."""
    size = n_rows // updates
    return [slice(u * size, (u + 1) * size) for _ in range(epochs) for u in range(updates)]


def train(cfg: RLSDConfig, output_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run (or resume) training as configured; returns a summary. See the module docstring."""
    import deepspeed
    from tqdm.auto import tqdm

    from rlsd.models import load_model, load_tokenizer
    from rlsd.rollout import sample
    from rlsd.verifiers import score_many
    from rlsd.verifiers.graders import use_base_model
    from rlsd.verifiers.sandbox import sandbox_stats

    out = Path(output_dir or cfg.train.output_dir)
    rank, world, device = init_distributed()
    algo = cfg.algorithm.name
    needs_teacher = algo in ("rlsd", "opsd", "grpo_opsd")
    G = cfg.rollout.group_size
    U, E = cfg.train.updates_per_batch, cfg.train.epochs_per_batch
    if cfg.rollout.prompts_per_step % world:
        raise ValueError(f"rollout.prompts_per_step ({cfg.rollout.prompts_per_step}) must be divisible by the "
                         f"number of ranks ({world})")
    local_prompts = cfg.rollout.prompts_per_step // world
    local_rollouts = local_prompts * G
    if local_rollouts % U:
        raise ValueError(f"train.updates_per_batch ({U}) must divide the rollouts per rank "
                         f"(prompts_per_step / ranks * group_size = {local_rollouts})")
    mini = local_rollouts // U  # rollouts per optimizer step on this rank
    micro = cfg.train.micro_batch_size or mini
    if mini % micro:
        raise ValueError(f"train.micro_batch_size ({micro}) must divide the rollouts per rank and update "
                         f"(prompts_per_step / ranks * group_size / updates_per_batch = {mini})")
    share = G if micro % G == 0 else 1  # micro-batches hold whole groups: run each prompt once
    updates_per_step = U * E

    # ---------------------------------------------------------------- data, model, teacher, engine
    tasks = read_tasks(cfg.data.train_tasks)
    eval_tasks = read_tasks(cfg.data.eval_tasks)[: cfg.data.eval_limit] if cfg.train.eval_every and cfg.data.eval_limit else []
    tokenizer = load_tokenizer(cfg.model.path)
    use_base_model(cfg.model.path)  # what a grader's `model: base` grades with: the model this run starts from
    torch.manual_seed(cfg.train.seed)
    model = load_model(cfg.model.path, dtype="float32", attn_implementation=cfg.model.attn_implementation)
    disable_dropout(model)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.config.use_cache = False
    teacher = copy.deepcopy(model).eval().requires_grad_(False) if needs_teacher else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                                  betas=(cfg.train.adam_beta1, cfg.train.adam_beta2))
    ds_cfg = deepspeed_config(cfg, micro_batch=micro, grad_accum=mini // micro, world=world)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_cfg)
    policy = engine.module
    if teacher is not None:
        teacher.to(device=device, dtype=next(policy.parameters()).dtype)
    zero3 = cfg.deepspeed.zero_stage
    tail = template_tail(tokenizer, cfg.model.chat_template, cfg.model.response_prefix)

    def sync_teacher() -> None:
        with torch.no_grad(), gathered(policy, zero3):
            for pt, ps in zip(teacher.parameters(), policy.parameters()):
                pt.copy_(ps.detach().to(pt.dtype))

    # ---------------------------------------------------------------- resume
    ckpt_dir = Path(cfg.train.checkpoint_dir) if cfg.train.checkpoint_dir else out / "checkpoints"  # durable: a PVC
    start_step = resume(engine, teacher, ckpt_dir, rank, device)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(cfg.to_yaml())
    metrics_path = out / "metrics.jsonl"
    if rank == 0 and start_step == 0 and metrics_path.exists():
        metrics_path.unlink()  # a fresh run (no checkpoint) starts a fresh log
    if rank == 0 and start_step > 0:
        _restore_log(metrics_path, ckpt_dir / f"step-{start_step}" / "metrics.jsonl", start_step)

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
        if start_step > 0 and metrics_path.exists():  # the resumed run's history starts at step 1 too
            from rlsd.tracking import read_metrics

            for row in read_metrics(metrics_path):
                tracker.log_metrics(row, step=int(row["step"]))

    # a failure inside the loop ends the MLflow run as FAILED (KILLED on Ctrl-C)
    with contextlib.ExitStack() as stack:
        stack.callback(forget_rendezvous_env)
        if tracker is not None:
            stack.enter_context(tracker)
        temp, max_prompt = cfg.rollout.temperature, cfg.rollout.max_prompt_tokens
        chat, prefix = cfg.model.chat_template, cfg.model.response_prefix
        bar = tqdm(total=cfg.train.steps, initial=start_step, desc=f"{algo} train", disable=rank != 0, unit="step")
        step_metrics: dict[str, float] = {}
        for step in range(start_step, cfg.train.steps):
            t0 = time.perf_counter()
            # ============================================================ rollout
            step_tasks = _tasks_for_step(tasks, step, cfg.rollout.prompts_per_step, cfg.train.seed, cfg.data.shuffle)
            my_tasks = step_tasks[rank * local_prompts:(rank + 1) * local_prompts]
            prompts = [fit_student(t, tokenizer, chat, prefix, max_prompt) for t in my_tasks]
            assert_no_leak(my_tasks, prompts)
            ro = rollout(sample, policy, tokenizer, prompts, cfg, step=step, rank=rank, zero_stage=zero3)
            t_rollout = time.perf_counter() - t0
            rows_tasks = [t for t in my_tasks for _ in range(G)]

            # ============================================================ verify
            raw_scores = score_many(rows_tasks, [prefix + text for text in ro.texts])
            rewards = torch.tensor([0.0 if s is None else s for s in raw_scores], dtype=torch.float32)

            # ============================================================ advantages
            b = Batch(ro.prompt_ids.to(device), ro.prompt_mask.to(device), ro.completion_ids.to(device),
                      ro.completion_mask.to(device), core.group_advantages(rewards, G).to(device),
                      sampler_logps=ro.logps.to(device) if ro.logps is not None else None)

            # ============================================================ teacher prompts
            if needs_teacher:
                t_texts = [fit_teacher(t, cfg.teacher.template, tokenizer, chat, prefix, max_prompt) for t in my_tasks]
                t_enc = [tokenizer(x, add_special_tokens=False).input_ids for x in t_texts]
                _check_prompt_tails(prompts, t_texts, t_enc, tail, max_prompt)
                t_ids, t_mask = left_pad([e for e in t_enc for _ in range(G)], tokenizer.pad_token_id)
                b.teacher_prompt_ids, b.teacher_prompt_mask = t_ids.to(device), t_mask.to(device)

            # ============================================================ old / teacher log-probs
            # One update per batch: the old policy IS the current one, so old_logps = logps.detach() of the
            # update's own forward and the teacher runs beside it (no extra pass). Several updates: one
            # no-grad pass first, so the ratio and the clips act and Delta stays that of the sampling policy.
            t3 = time.perf_counter()
            if updates_per_step > 1:
                logps_pass(b, engine, teacher, micro=micro, temperature=temp, share=share,
                           old=True, teacher_too=algo == "rlsd")
            t_old = time.perf_counter() - t3
            t4 = time.perf_counter()

            # ============================================================ updates (optimizer steps)
            schedule = update_rows(local_rollouts, U, E)
            tokens = _all_reduce([b.completion_mask[r].sum().item() for r in schedule[:U]], world, device)
            sums: dict[str, float] = {}
            grad_norms, lams = [], []
            for k, r in enumerate(schedule):
                opt_step = step * updates_per_step + k  # lambda and the teacher sync count optimizer steps
                lam = core.lambda_schedule(opt_step, lam0=cfg.algorithm.lam0, decay_steps=cfg.algorithm.lambda_decay_steps,
                                           warmup_steps=cfg.algorithm.lambda_warmup_steps) if algo == "rlsd" else 0.0
                st = policy_update(engine, teacher, b, r, cfg=cfg, micro=micro, share=share, lam=lam,
                                   num_tokens=tokens[k % U], num_seqs=cfg.rollout.prompts_per_step * G / U,
                                   world=world, zero_stage=zero3)
                grad_norms.append(st.pop("grad_norm"))
                lams.append(lam)
                for key, v in st.items():
                    sums[key] = sums.get(key, 0.0) + v
                if needs_teacher and cfg.teacher.kind == "snapshot" and (opt_step + 1) % cfg.teacher.sync_interval == 0:
                    sync_teacher()
            t_teacher = sums.pop("time_teacher")
            t_train = time.perf_counter() - t4 - t_teacher
            rlsd_metrics: dict[str, float] = {}
            if needs_teacher:  # Delta / w diagnostics over the whole batch (raw w, whatever lambda)
                _, rlsd_metrics = core.rlsd_token_advantages(b.advantages, b.old_logps, b.teacher_logps,
                                                             b.completion_mask, lam=lams[0], eps_w=cfg.algorithm.eps_w,
                                                             negative_only=cfg.algorithm.negative_only)

            # ============================================================ log
            m = batch_metrics(b, rewards, raw_scores, sums, rlsd_metrics, group=G, updates=updates_per_step,
                              world=world, device=device)
            m.update({
                "step": step + 1,
                "optimizer_step": (step + 1) * updates_per_step,
                "lambda": lams[0],
                "grad_norm": sum(grad_norms) / len(grad_norms),
                "lr": cfg.train.lr,
                "time_rollout": t_rollout,
                "time_old_logps": t_old,
                "time_teacher": t_teacher,
                "time_train": t_train,
                "time_step": time.perf_counter() - t0,
                **sandbox_stats(),  # code verdicts so far per isolation mode (bwrap | process)
            })
            if eval_tasks and (step + 1) % cfg.train.eval_every == 0:
                m["eval_accuracy"] = quick_eval(policy, tokenizer, eval_tasks, cfg, zero3)
            step_metrics = m
            if rank == 0:
                append_metrics(metrics_path, m)
                if tracker is not None:
                    tracker.log_metrics(m, step=step + 1)
                bar.set_postfix(reward=f"{m['reward_mean']:.2f}", loss=f"{m['loss']:.3f}")
            bar.update(1)

            # ============================================================ checkpoint (at a batch boundary)
            if cfg.train.checkpoint_every and (step + 1) % cfg.train.checkpoint_every == 0 and step + 1 < cfg.train.steps:
                saved = save_checkpoint(engine, teacher, ckpt_dir, step + 1, rank, cfg.train.keep_checkpoints,
                                        log=metrics_path)
                if cfg.train.checkpoint_store and rank == 0:  # a copy that outlives the volume (rlsd.model_refs)
                    from rlsd.model_refs import push_checkpoint

                    push_checkpoint(cfg, saved)
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


def resume(engine: Any, teacher: Any, ckpt_dir: Path, rank: int, device: torch.device) -> int:
    """Load the newest complete checkpoint under ``ckpt_dir`` (engine, teacher, this rank's RNG state) and
    return the rollout step it was saved after; 0 when there is none."""
    latest = latest_checkpoint(ckpt_dir)
    if latest is None:
        return 0
    engine.load_checkpoint(str(ckpt_dir), tag=latest.name)
    if teacher is not None and (latest / "teacher.pt").is_file():
        teacher.load_state_dict(torch.load(latest / "teacher.pt", map_location=device, weights_only=True))
    rng_file = latest / f"rng_rank{rank}.pt"
    if rng_file.is_file():
        _set_rng_state(torch.load(rng_file, weights_only=False))
    return json.loads((latest / "trainer_state.json").read_text())["step"]


def rollout(sample_fn: Any, policy: Any, tokenizer: Any, prompts: list[str], cfg: RLSDConfig, *, step: int,
            rank: int, zero_stage: int) -> Any:
    """This rank's rollouts for one step, from the policy in eval mode under no_grad (gathered under ZeRO-3).
    By default the rank's prompts are sampled in one batch from a seed of (seed, step, rank). With
    rollout.deterministic_groups each prompt is sampled alone from a seed of its global position, so its group's
    samples do not depend on the prompts beside it or on the number of ranks."""
    policy.eval()
    with torch.no_grad(), gathered(policy, zero_stage):
        if cfg.rollout.deterministic_groups:
            parts = []
            for i, p in enumerate(prompts):
                torch.manual_seed(_step_seed(cfg.train.seed, step, 1_000 + rank * len(prompts) + i))
                parts.append(_sample(sample_fn, policy, tokenizer, [p], cfg))
            ro = _concat_rollouts(parts, tokenizer.pad_token_id)
        else:
            torch.manual_seed(_step_seed(cfg.train.seed, step, rank))
            ro = _sample(sample_fn, policy, tokenizer, prompts, cfg)
    policy.train()
    return ro


def _check_prompt_tails(prompts: list[str], teacher_texts: list[str], teacher_ids: list[list[int]], tail: str,
                        max_tokens: int) -> None:
    """Student and teacher prompts end in the same template tail (assistant header and response prefix)
    and no teacher prompt exceeds the budget (nothing was cut at either end)."""
    for p, t, ids in zip(prompts, teacher_texts, teacher_ids, strict=True):
        if not (p.endswith(tail) and t.endswith(tail)) or len(ids) > max_tokens:
            raise AssertionError(f"student and teacher prompts must end in the template tail {tail!r} within "
                                 f"{max_tokens} tokens; got ...{p[-40:]!r} and ...{t[-40:]!r} ({len(ids)} tokens)")


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
    from rlsd.verifiers import score_many

    prompts = [fit_student(t, tokenizer, cfg.model.chat_template, cfg.model.response_prefix,
                           cfg.rollout.max_prompt_tokens) for t in tasks]
    was = policy.training
    policy.eval()
    with gathered(policy, zero_stage):
        ro = sample(policy, tokenizer, prompts, num_samples=1, max_new_tokens=cfg.rollout.max_new_tokens, greedy=True,
                    max_prompt_tokens=cfg.rollout.max_prompt_tokens, engine=cfg.rollout.engine,
                    kernels=cfg.rollout.kernels)
    policy.train(was)
    scores = [s or 0.0 for s in score_many(tasks, [cfg.model.response_prefix + x for x in ro.texts])]
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


def save_checkpoint(engine: Any, teacher: Any, ckpt_dir: Path, step: int, rank: int, keep: int,
                    log: Path | None = None) -> Path:
    """Model + optimizer (DeepSpeed), teacher snapshot, RNG state, step (= data position), and a copy of the
    metrics log so far (``log``; a pod restarted with an empty working folder gets its earlier steps back).

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
        if log is not None and log.is_file():
            shutil.copyfile(log, path / "metrics.jsonl")
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


def append_metrics(path: Path, m: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(m) + "\n")


def _restore_log(path: Path, saved: Path, step: int) -> None:
    """On resume: a missing log (a restarted pod's empty working folder) is first restored from the checkpoint's
    copy (written through a temporary file and a rename); then lines past the resumed step are dropped."""
    if not path.exists() and saved.is_file():
        tmp = path.with_name(path.name + ".tmp")
        shutil.copyfile(saved, tmp)
        os.replace(tmp, path)
    if path.exists():
        _truncate_log(path, step)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the resumed step (they were written after the last checkpoint).

    The shortened log is written to a temporary file, flushed to disk and renamed over the old one, so a
    kill at any moment leaves either the old log or the new one, never an empty or half-written file. A
    line that does not parse (torn by a kill mid-append) is skipped with a warning instead of failing
    every later resume.
    """
    import warnings

    keep: list[str] = []
    torn = 0
    for ln in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not ln.strip():
            continue
        try:
            rec = json.loads(ln)
            s = int(rec["step"])
        except (ValueError, TypeError, KeyError):
            torn += 1
            continue
        if s <= step:
            keep.append(ln)
    if torn:
        warnings.warn(f"{path}: skipped {torn} unreadable line(s) (a write torn by a kill); "
                      f"kept {len(keep)} step(s) up to {step}", RuntimeWarning, stacklevel=2)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write("".join(ln + "\n" for ln in keep))
        f.flush()
        os.fsync(f.fileno())
    if os.environ.get("RLSD_FAILPOINT") == "metrics-before-replace":  # fault-injection tests only
        os.kill(os.getpid(), 9)
    os.replace(tmp, path)


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

