"""One typed configuration for every rlsd command.

YAML recipe -> ``load_config(path, overrides)`` -> a frozen :class:`RLSDConfig`, validated once.
Every error names the field, the value and the fix. Secrets never live here: store and tracking
credentials come from the environment (Kubernetes secrets on a cluster).

Overrides use dotted keys (``--set rollout.group_size=8``); the value is parsed as YAML and must
match the field's type.

Hostile input (issue 18): the YAML reader refuses anchors, aliases and explicit tags *while parsing*,
before anything is expanded (an alias bomb is refused at its first anchor, in microseconds), and a recipe
larger than ``MAX_CONFIG_BYTES`` is refused unread. Every numeric field has an inclusive range in
:data:`RANGES` (checked for every section, however the config was built). Path fields may not climb out
of their root with ``..`` (``store.root: ../../..`` is refused; an absolute path is the operator's explicit
choice). Error messages are built only when a check fails, show values through a truncated repr, and are
capped at ``MAX_MESSAGE_CHARS``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

MAX_CONFIG_BYTES = 1_000_000   # a recipe is a few KB; anything near this is not a recipe
MAX_MESSAGE_CHARS = 600
MAX_YAML_DEPTH = 32
_REPR_CHARS = 80


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the field, the value and the fix (capped in length)."""

    def __init__(self, msg: str = "") -> None:
        if len(msg) > MAX_MESSAGE_CHARS:
            msg = msg[:MAX_MESSAGE_CHARS - 15] + " ...(truncated)"
        super().__init__(msg)


def _r(value: Any) -> str:
    """repr() for error messages, cut to a few dozen characters (a value may be megabytes of hostile YAML)."""
    if isinstance(value, (list, tuple, dict, set)) and len(value) > 8:
        value = type(value).__name__ + f" of {len(value)} items"
        return value
    text = repr(value[:_REPR_CHARS + 1] if isinstance(value, str) else value)
    return text if len(text) <= _REPR_CHARS else text[:_REPR_CHARS] + "..."


def _check(cond: bool, msg: str | typing.Callable[[], str]) -> None:
    """Raise ConfigError when ``cond`` is false; ``msg`` is a string or a callable built only then."""
    if not cond:
        raise ConfigError(msg() if callable(msg) else msg)


# ----------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    # The base model (rlsd.model_refs): a local HF folder, a .gguf file or a folder holding exactly one; or
    # store://models/<name>[@<id>] (imported once with `rlsd import-model`, hash-checked when fetched); or
    # models:/<name>@<alias> / models:/<name>/<version> from the MLflow registry. Never a hub id.
    path: str = "artifacts/tiny-model"
    # base: train from model.path. champion: from the current @champion of registry.model_name when the
    # registry has one, else from model.path (scheduled retraining continues from the best model so far).
    continue_from: Literal["base", "champion"] = "base"
    # Computation dtype of the policy: float32 on CPU, bfloat16 on GPU.
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # Attention implementation handed to transformers ("sdpa" or "eager").
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    # Use the tokenizer's chat template for prompts (instruct models); plain text otherwise.
    chat_template: bool = False
    # Text that opens the model's reply (e.g. "Answer:"), appended after the rendered prompt for the
    # student and the teacher alike; the verifier scores prefix + completion. Small instruct models
    # follow an answer format far more reliably when the reply starts with it.
    response_prefix: str = ""
    # Gradient checkpointing in the policy (saves memory, costs a recompute).
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        _check(bool(self.path), "model.path must name a local model folder or .gguf file, store://models/<name> or "
               "models:/<name>@<alias>, got ''")


@dataclass(frozen=True)
class DataConfig:
    # JSONL of Task records (see rlsd.tasks.Task); relative paths are resolved from the cwd.
    train_tasks: str = "artifacts/tasks/train.jsonl"
    eval_tasks: str = "artifacts/tasks/eval.jsonl"
    # Tasks taken from the eval file for the in-training evaluation (0 = none).
    eval_limit: int = 64
    shuffle: bool = True

    def __post_init__(self) -> None:
        _check(self.eval_limit >= 0, lambda: f"data.eval_limit must be >= 0, got {self.eval_limit}")


@dataclass(frozen=True)
class RolloutConfig:
    # G: samples per prompt. GRPO's advantage needs at least 2.
    group_size: int = 4
    # Prompts per optimizer step (the global batch is prompts_per_step * group_size rollouts).
    prompts_per_step: int = 4
    max_new_tokens: int = 32
    max_prompt_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    # Rollouts generated per forward call of the sampler (0 = all at once).
    generation_batch_size: int = 0
    # auto: our engine where the architecture is supported, transformers' generate otherwise.
    engine: Literal["auto", "graph", "generate"] = "auto"
    # Decode-step kernels of rlsd's engine: torch ops; triton = rlsd.rollout.kernels for rope + cache write,
    # attention and act * mul; mixed = those Triton kernels but torch's attention; auto = triton on CUDA (measured
    # fastest on an H200, benchmarks/results/gpu_h200_2026-11-30), torch elsewhere. Triton settings fail where
    # Triton cannot run.
    kernels: Literal["auto", "triton", "mixed", "torch"] = "auto"
    # Old log-probs in the PPO ratio: recomputed by the trainer (default) or taken from the sampler.
    old_logps_from: Literal["trainer", "sampler"] = "trainer"
    # Seed each prompt's group on its own: rollouts then do not depend on how prompts are split over
    # ranks or batches (reproducible across world sizes; slower: one sampler call per prompt).
    deterministic_groups: bool = False

    def __post_init__(self) -> None:
        _check(self.group_size >= 2, lambda: f"rollout.group_size must be >= 2 (group advantages need it), got {self.group_size}")
        _check(self.prompts_per_step >= 1, lambda: f"rollout.prompts_per_step must be >= 1, got {self.prompts_per_step}")
        _check(self.max_new_tokens >= 1, lambda: f"rollout.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        _check(self.temperature > 0, lambda: f"rollout.temperature must be > 0 (use a small value for near-greedy), got {self.temperature}")
        _check(0 < self.top_p <= 1, lambda: f"rollout.top_p must be in (0, 1], got {self.top_p}")
        _check(self.top_k >= 0, lambda: f"rollout.top_k must be >= 0 (0 disables it), got {self.top_k}")
        _check(self.generation_batch_size >= 0, lambda: f"rollout.generation_batch_size must be >= 0, got {self.generation_batch_size}")


@dataclass(frozen=True)
class AlgorithmConfig:
    # grpo | rlsd | opsd | grpo_opsd (GRPO loss + opsd_alpha * OPSD loss).
    name: Literal["grpo", "rlsd", "opsd", "grpo_opsd"] = "rlsd"
    # RLSD: lambda_k = lam0 * max(0, 1 - k / lambda_decay_steps) (paper: 50 steps; released code: 60).
    lam0: float = 0.5
    lambda_decay_steps: int = 50
    lambda_warmup_steps: int = 0
    eps_w: float = 0.2
    negative_only: bool = False
    # Clipped surrogate: clip-higher (DAPO) and dual-clip for negative advantages (0 disables).
    eps_low: float = 0.2
    eps_high: float = 0.28
    dual_clip: float = 3.0
    agg: Literal["token_mean", "seq_mean_token_mean"] = "token_mean"
    # OPSD: generalized JSD beta (0 = forward KL(T||S), 1 = reverse KL(S||T)); per-token clip (0 = off).
    jsd_beta: float = 0.5
    jsd_token_clip: float = 0.0
    # grpo_opsd: weight of the OPSD term.
    opsd_alpha: float = 0.1

    def __post_init__(self) -> None:
        _check(0 <= self.lam0 <= 1, lambda: f"algorithm.lam0 must be in [0, 1], got {self.lam0}")
        _check(self.lambda_decay_steps >= 1, lambda: f"algorithm.lambda_decay_steps must be >= 1, got {self.lambda_decay_steps}")
        _check(self.lambda_warmup_steps >= 0, lambda: f"algorithm.lambda_warmup_steps must be >= 0, got {self.lambda_warmup_steps}")
        _check(0 <= self.eps_w < 1, lambda: f"algorithm.eps_w must be in [0, 1), got {self.eps_w}")
        _check(0 <= self.eps_low < 1, lambda: f"algorithm.eps_low must be in [0, 1), got {self.eps_low}")
        _check(self.eps_high >= 0, lambda: f"algorithm.eps_high must be >= 0, got {self.eps_high}")
        _check(self.dual_clip == 0 or self.dual_clip > 1,
               lambda: f"algorithm.dual_clip must be 0 (off) or > 1, got {self.dual_clip}")
        _check(0 <= self.jsd_beta <= 1, lambda: f"algorithm.jsd_beta must be in [0, 1], got {self.jsd_beta}")
        _check(self.jsd_token_clip >= 0, lambda: f"algorithm.jsd_token_clip must be >= 0 (0 = off), got {self.jsd_token_clip}")
        _check(self.opsd_alpha >= 0, lambda: f"algorithm.opsd_alpha must be >= 0, got {self.opsd_alpha}")


@dataclass(frozen=True)
class TeacherConfig:
    # snapshot: frozen copy of the policy re-synced every sync_interval steps (RLSD paper: 10);
    # initial: the frozen initial policy (OPSD paper).
    kind: Literal["snapshot", "initial"] = "snapshot"
    sync_interval: int = 10
    # The paper's wording; {question} and {context} are filled in, the response is appended verbatim.
    template: str = (
        "{question}\nHere is a reference solution: {context}\n"
        "After understanding the reference solution, please try to solve this problem using your own approach below:\n"
    )

    def __post_init__(self) -> None:
        _check(self.sync_interval >= 1, lambda: f"teacher.sync_interval must be >= 1, got {self.sync_interval}")
        _check("{question}" in self.template and "{context}" in self.template,
               "teacher.template must contain {question} and {context}")


@dataclass(frozen=True)
class DeepSpeedConfig:
    # ZeRO stage 0-3. On CPU DeepSpeed runs with gloo (DS_ACCELERATOR=cpu).
    zero_stage: int = 0
    offload_optimizer: bool = False

    def __post_init__(self) -> None:
        _check(self.zero_stage in (0, 1, 2, 3), lambda: f"deepspeed.zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 10
    lr: float = 1e-6
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    # Rollouts per forward/backward micro-batch on each rank (0 = the whole local batch).
    micro_batch_size: int = 0
    # PPO mini-batches: each rollout batch is split into this many consecutive mini-batches, one optimizer
    # step each (verl's ppo_mini_batch_size, TRL's steps_per_generation), so the ratio and the clips act.
    # 1 = one optimizer step per rollout batch (the paper's setting).
    updates_per_batch: int = 1
    # Passes over the rollout batch (verl's ppo_epochs, TRL's num_iterations); optimizer steps per batch =
    # updates_per_batch * epochs_per_batch.
    epochs_per_batch: int = 1
    seed: int = 0
    checkpoint_every: int = 5
    keep_checkpoints: int = 2
    # Held-out accuracy every N steps (0 = never during training).
    eval_every: int = 0
    output_dir: str = "runs/latest"
    # Where checkpoints go ("" = <output_dir>/checkpoints). On a cluster: durable storage such as the workspace
    # PVC (/workspace/...); the train step adds a key derived from its inputs (rlsd.cluster.checkpoint_key), so a
    # restarted pod of the same task resumes there.
    checkpoint_dir: str = ""
    # The train step also pushes the final model to the store (folder registry.model_name), besides the KFP
    # artifact and the registry.
    push_model: bool = False
    # Also copy every complete checkpoint to the store (folder checkpoints-<name of the checkpoint folder>, i.e.
    # the train step's key) and, when the checkpoint folder holds none, resume from the newest copy:
    # a restarted pod resumes even without a persistent volume.
    checkpoint_store: bool = False

    def __post_init__(self) -> None:
        _check(self.steps >= 1, lambda: f"train.steps must be >= 1, got {self.steps}")
        _check(self.lr > 0, lambda: f"train.lr must be > 0, got {self.lr}")
        _check(self.grad_clip >= 0, lambda: f"train.grad_clip must be >= 0 (0 = off), got {self.grad_clip}")
        _check(self.micro_batch_size >= 0, lambda: f"train.micro_batch_size must be >= 0, got {self.micro_batch_size}")
        _check(self.updates_per_batch >= 1, lambda: f"train.updates_per_batch must be >= 1 (1 = one optimizer step per "
               f"rollout batch), got {self.updates_per_batch}")
        _check(self.epochs_per_batch >= 1, lambda: f"train.epochs_per_batch must be >= 1, got {self.epochs_per_batch}")
        _check(self.checkpoint_every >= 0, lambda: f"train.checkpoint_every must be >= 0 (0 = only at the end), got {self.checkpoint_every}")
        _check(self.keep_checkpoints >= 1, lambda: f"train.keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        _check(self.eval_every >= 0, lambda: f"train.eval_every must be >= 0, got {self.eval_every}")


@dataclass(frozen=True)
class StoreConfig:
    # local: a folder (embedded default); s3: MinIO / any S3 server. Credentials come only from
    # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or MINIO_ACCESS_KEY / MINIO_SECRET_KEY).
    backend: Literal["local", "s3"] = "local"
    root: str = "artifacts/store"
    endpoint: str = "127.0.0.1:9000"
    bucket: str = "rlsd"
    secure: bool = False
    region: str = ""
    retries: int = 3
    # Where new ticket exports and manuals land (rlsd inbox put, or any S3 client): s3://<bucket>/<inbox>/tickets/
    # and .../manuals/ (backend local: <root>/<inbox>/tickets, .../manuals). Ingest reads it when given no inputs.
    inbox: str = "inbox"

    def __post_init__(self) -> None:
        _check(self.retries >= 1, lambda: f"store.retries must be >= 1 (tries per S3 call), got {self.retries}")
        _check(isinstance(self.inbox, str) and bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*",
                                                                  self.inbox)) and ".." not in self.inbox,
               lambda: f"store.inbox must be a key prefix like 'inbox' or 'teams/a/inbox' (letters, digits, '.', '_', "
                       f"'-' between single '/'), got {_r(self.inbox)}")
        _check(self.backend == "local" or bool(self.endpoint and self.bucket),
               lambda: f"store.endpoint and store.bucket must be set for backend s3, got {_r(self.endpoint)}, {_r(self.bucket)}")


@dataclass(frozen=True)
class IngestConfig:
    # Redaction of e-mail, phone, IPv4/IPv6, employee ids, secrets (and extra_patterns) before storing.
    redact: bool = True
    # Employee ids in your directory ('' disables this type).
    employee_id_pattern: str = r"\bEMP-\d{4,8}\b"
    # Extra redaction types: {NAME: regex}; a match becomes [NAME].
    extra_patterns: dict[str, str] = field(default_factory=dict)
    # Ticket bodies longer than this are truncated (long_body: truncate) or quarantined (refuse).
    max_body_chars: int = 20000
    long_body: Literal["truncate", "refuse"] = "truncate"
    # A ticket edited without a newer updated time (same id and time, other content): stored as a new
    # version that names the one it replaces (new_version), or quarantined as a conflict (conflict).
    same_time_edit: Literal["new_version", "conflict"] = "new_version"
    # Manual sections longer than this are split into numbered parts.
    max_section_chars: int = 6000
    # Input limits (refused with a quarantine reason instead of exhausting memory): a manual file's
    # size, and one line of a ticket export (a JSONL record or a CSV line).
    max_manual_bytes: int = 100_000_000
    max_ticket_line_bytes: int = 1_000_000
    # Task building: share of tickets in the eval split (by a hash of the ticket id), sections
    # retrieved when a ticket links none, and the cap on the privileged context.
    eval_fraction: float = 0.2
    retrieve_k: int = 2
    max_context_chars: int = 4000
    # Free-text tasks: the grader of tickets whose verified answer is a written resolution (a metric name
    # such as rouge_l, or a composed spec of rlsd.verifiers.graders; model: base = the run's base model, fetched
    # by each step that grades when model.path is a reference). Empty: such
    # tickets make no task. Validated when the config loads; try it first with `rlsd grade`.
    text_grader: Any = ""

    def __post_init__(self) -> None:
        _check(isinstance(self.extra_patterns, dict), lambda: f"ingest.extra_patterns must be a mapping NAME: regex, got {_r(self.extra_patterns)}")
        for name, rx in {**self.extra_patterns, "EMPLOYEE_ID": self.employee_id_pattern or "x"}.items():
            _check(isinstance(name, str) and re.fullmatch(r"[A-Z][A-Z0-9_]*", name) is not None,
                   lambda: f"ingest.extra_patterns key must be an UPPER_CASE name, got {_r(name)}")
            try:
                re.compile(rx)
            except (re.error, TypeError) as e:
                raise ConfigError(f"ingest pattern {name} is not a valid regex ({_r(rx)}: {e}); fix the regex") from None
        _check(self.max_body_chars >= 100, lambda: f"ingest.max_body_chars must be >= 100, got {self.max_body_chars}")
        _check(self.max_section_chars >= 200, lambda: f"ingest.max_section_chars must be >= 200, got {self.max_section_chars}")
        _check(self.max_manual_bytes >= 1, lambda: f"ingest.max_manual_bytes must be >= 1, got {self.max_manual_bytes}")
        _check(self.max_ticket_line_bytes >= 1024,
               lambda: f"ingest.max_ticket_line_bytes must be >= 1024, got {self.max_ticket_line_bytes}")
        _check(0 < self.eval_fraction < 1, lambda: f"ingest.eval_fraction must be in (0, 1), got {self.eval_fraction}")
        _check(self.retrieve_k >= 0, lambda: f"ingest.retrieve_k must be >= 0, got {self.retrieve_k}")
        _check(self.max_context_chars >= 100, lambda: f"ingest.max_context_chars must be >= 100, got {self.max_context_chars}")


@dataclass(frozen=True)
class ValidationConfig:
    # The step fails when more than this share of a table's rows fails its suite.
    max_failure_rate: float = 0.1
    # Length bounds (characters).
    min_section_chars: int = 1
    max_section_chars: int = 20000
    max_title_chars: int = 500
    max_body_chars: int = 20000
    min_prompt_chars: int = 10
    max_prompt_chars: int = 6000
    max_context_chars: int = 8000
    # Leak guard: a run of this many consecutive words of the privileged context in the student
    # prompt counts as a leak (as does the answer itself).
    leak_span_words: int = 12
    # Snapshot tables are validated this many rows at a time (one GX batch each; memory is bounded by
    # a chunk, not by the snapshot). Ids are checked for uniqueness across chunks as well.
    chunk_rows: int = 5000

    def __post_init__(self) -> None:
        _check(self.chunk_rows >= 1, lambda: f"validation.chunk_rows must be >= 1, got {self.chunk_rows}")
        _check(0 <= self.max_failure_rate <= 1, lambda: f"validation.max_failure_rate must be in [0, 1], got {self.max_failure_rate}")
        for lo, hi in (("min_section_chars", "max_section_chars"), ("min_prompt_chars", "max_prompt_chars")):
            _check(0 <= getattr(self, lo) <= getattr(self, hi),
                   lambda: f"validation.{lo} must be in [0, validation.{hi}], got {getattr(self, lo)}")
        _check(self.leak_span_words >= 3, lambda: f"validation.leak_span_words must be >= 3, got {self.leak_span_words}")


@dataclass(frozen=True)
class TrackingConfig:
    enabled: bool = True
    # A local file store is the embedded default; an http(s) URI names a tracking server.
    uri: str = "sqlite:///artifacts/mlflow/mlflow.db"
    # Where a new experiment keeps its artifacts (a folder or an s3:// URI). With an http(s) tracking
    # server a plain folder is ignored and the server's own artifact store is used.
    artifact_location: str = "artifacts/mlflow/artifacts"
    experiment: str = "rlsd"
    # MLflow's own retries per HTTP request; the tracker adds its own bounded back-off on top, so
    # a down server never blocks training for long.
    http_retries: int = 1
    http_timeout_s: int = 10
    # The per-request timeout while a model's files are uploaded (register): the server answers a PUT only
    # after it has streamed the whole file to its artifact store, far longer than 10 s for a model shard.
    upload_timeout_s: int = 1800
    # Back-off between retries of buffered logging: doubles from 0.5 s up to this cap.
    max_backoff_s: float = 30.0
    # How long finish() keeps retrying undelivered records before it warns and gives up.
    flush_timeout_s: float = 60.0
    # Metrics buffered in memory while the server is away; beyond this the oldest are dropped with a warning.
    max_buffered_metrics: int = 1_000_000
    # PNG plots of the training curves logged as artifacts at finish.
    plots: bool = True

    def __post_init__(self) -> None:
        _check(bool(self.uri), "tracking.uri must be an sqlite:///, file:// or http(s):// URI, got ''")
        _check(bool(self.experiment), "tracking.experiment must be a non-empty name, got ''")
        _check(self.http_retries >= 0, lambda: f"tracking.http_retries must be >= 0, got {self.http_retries}")
        _check(self.http_timeout_s >= 1, lambda: f"tracking.http_timeout_s must be >= 1, got {self.http_timeout_s}")
        _check(self.upload_timeout_s >= 1, lambda: f"tracking.upload_timeout_s must be >= 1, got {self.upload_timeout_s}")
        _check(self.max_backoff_s > 0, lambda: f"tracking.max_backoff_s must be > 0, got {self.max_backoff_s}")
        _check(self.flush_timeout_s >= 0, lambda: f"tracking.flush_timeout_s must be >= 0, got {self.flush_timeout_s}")
        _check(self.max_buffered_metrics >= 1,
               lambda: f"tracking.max_buffered_metrics must be >= 1, got {self.max_buffered_metrics}")


@dataclass(frozen=True)
class RegistryConfig:
    model_name: str = "rlsd-model"
    # Promote @challenger to @champion only if it beats the champion by this much (pass@1 points)...
    margin: float = 0.0
    # ...with the lower end of the paired-bootstrap interval above zero...
    require_ci_above_zero: bool = True
    # ...and a leakage rate at most this.
    max_leakage_rate: float = 0.05
    # When no output could be checked for leakage (no task's privileged context has 3 words in a row
    # beside its answer, e.g. bare-answer arithmetic tasks) the rate is not measured: refuse promotion
    # (false, the default) or let the other gates decide (true, for such task sets only).
    allow_unmeasured_leakage: bool = False
    # With a champion, the comparison must pair at least this many held-out tasks. Below 20 one task moves
    # the mean difference by >= 0.05 (more than any sensible margin) and a percentile bootstrap over so few
    # per-task differences has far less than its nominal 95% coverage, so the interval gate means little.
    min_paired_tasks: int = 20
    # No champion yet: the first version needs only the leakage bound and not to be measurably worse than the
    # base model (false), or must pass the margin, interval and paired-task gates against the base model (true).
    first_version_needs_gain: bool = False

    def __post_init__(self) -> None:
        _check(bool(self.model_name), "registry.model_name must be a non-empty name, got ''")
        _check(self.min_paired_tasks >= 1,
               lambda: f"registry.min_paired_tasks must be >= 1, got {self.min_paired_tasks}")
        _check(self.margin >= 0, lambda: f"registry.margin must be >= 0 (pass@1 points), got {self.margin}")
        _check(0 <= self.max_leakage_rate <= 1,
               lambda: f"registry.max_leakage_rate must be in [0, 1], got {self.max_leakage_rate}")


@dataclass(frozen=True)
class EvalConfig:
    # pass@k from n = max(k, num_samples) samples per task (unbiased estimator; 0 = n is k).
    k: int = 4
    num_samples: int = 0
    max_new_tokens: int = 64
    temperature: float = 1.0
    bootstrap_samples: int = 2000
    seed: int = 0
    # Leakage: an output leaks when it reproduces this many consecutive privileged-context tokens.
    leak_ngram: int = 6
    # Evaluate only the first N held-out tasks (0 = all): a quick look on a small machine.
    limit: int = 0
    # A paragraph that opens the evaluation report (e.g. what a short demo run can and cannot show).
    note: str = ""

    def __post_init__(self) -> None:
        _check(self.k >= 1, lambda: f"eval.k must be >= 1, got {self.k}")
        _check(self.num_samples >= 0, lambda: f"eval.num_samples must be >= 0 (0 = use k), got {self.num_samples}")
        _check(self.max_new_tokens >= 1, lambda: f"eval.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        _check(self.temperature > 0, lambda: f"eval.temperature must be > 0, got {self.temperature}")
        _check(self.bootstrap_samples >= 100, lambda: f"eval.bootstrap_samples must be >= 100, got {self.bootstrap_samples}")
        _check(self.leak_ngram >= 3, lambda: f"eval.leak_ngram must be >= 3, got {self.leak_ngram}")
        _check(self.limit >= 0, lambda: f"eval.limit must be >= 0 (0 = all tasks), got {self.limit}")


@dataclass(frozen=True)
class PlatformConfig:
    """Where and how the pipeline runs: perimeter guard, retraining gate, cluster placement."""
    # Network guard around every step: strict refuses destinations outside the allow-list and
    # fails the step; record only logs them; off disables the guard (not for production).
    perimeter: Literal["strict", "record", "off"] = "strict"
    # Destinations this run expects to reach, "host" or "host:port". They do NOT widen the egress
    # allow-list: that comes only from the operator (RLSD_EGRESS_ALLOW / RLSD_EGRESS_ALLOW_FILE, see
    # rlsd.perimeter); a step whose hosts here (or store.endpoint, tracking.uri) lie outside it is refused.
    allow_hosts: tuple[str, ...] = ()
    # Scheduled retraining: skip training when fewer verified tickets than this are not yet trained on (added
    # since the snapshot the newest completed training learned from, rlsd.data.ingest.untrained_verified_tickets).
    min_new_tickets: int = 1
    # Code verifier isolation: bwrap (bubblewrap sandbox; where it cannot run, the verifier refuses to
    # run code) or process (weaker: rlimits and Python guards only; an explicit operator choice).
    code_sandbox: Literal["bwrap", "process"] = "bwrap"
    # Kubernetes placement of the training step (see rlsd.cluster).
    namespace: str = "rlsd"
    image: str = "registry.local/rlsd/rlsd-cpu:0.1.0"
    train_image: str = "registry.local/rlsd/rlsd-train:0.1.0"
    nodes: int = 1
    gpus_per_node: int = 0
    runtime: str = "rlsd-torch-distributed"  # manifests/base/training-runtime.yaml
    runtime_kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = "TrainingRuntime"
    store_secret: str = "rlsd-minio"
    tracking_secret: str = "rlsd-mlflow"
    shared_pvc: str = "rlsd-workspace"
    job_timeout_s: int = 86400

    def __post_init__(self) -> None:
        hosts = self.allow_hosts
        _check(isinstance(hosts, (list, tuple)) and all(isinstance(h, str) and h for h in hosts),
               lambda: f"platform.allow_hosts must be a list of 'host' or 'host:port' strings, got {_r(hosts)}")
        object.__setattr__(self, "allow_hosts", tuple(hosts))
        _check(self.min_new_tickets >= 0, lambda: f"platform.min_new_tickets must be >= 0, got {self.min_new_tickets}")
        _check(self.nodes >= 1, lambda: f"platform.nodes must be >= 1, got {self.nodes}")
        _check(self.gpus_per_node >= 0, lambda: f"platform.gpus_per_node must be >= 0 (0 = CPU), got {self.gpus_per_node}")
        _check(self.job_timeout_s >= 1, lambda: f"platform.job_timeout_s must be >= 1, got {self.job_timeout_s}")


# ----------------------------------------------------------------------------------------------
# Ranges and paths (checked for the whole config in RLSDConfig.__post_init__)
# ----------------------------------------------------------------------------------------------

_BIG = 1_000_000_000      # counts of steps, rows, characters: far beyond any real run, far below overflow
_SEED = 2**63 - 1

# Every int / float field, inclusive [low, high]. The sections' own checks add the exclusive ends and the
# reasons (group_size >= 2 because group advantages need it); these stop absurd values (1e9 samples per
# prompt, an infinite learning rate) before any of them sizes a tensor, a loop or an allocation.
RANGES: dict[str, tuple[float, float]] = {
    "data.eval_limit": (0, _BIG),
    "rollout.group_size": (2, 1024), "rollout.prompts_per_step": (1, 65536),
    "rollout.max_new_tokens": (1, 131072), "rollout.max_prompt_tokens": (1, 1_048_576),
    "rollout.temperature": (1e-6, 100.0), "rollout.top_p": (0.0, 1.0), "rollout.top_k": (0, 1_000_000),
    "rollout.generation_batch_size": (0, 1_000_000),
    "algorithm.lam0": (0.0, 1.0), "algorithm.lambda_decay_steps": (1, _BIG), "algorithm.lambda_warmup_steps": (0, _BIG),
    "algorithm.eps_w": (0.0, 1.0), "algorithm.eps_low": (0.0, 1.0), "algorithm.eps_high": (0.0, 10.0),
    "algorithm.dual_clip": (0.0, 1000.0), "algorithm.jsd_beta": (0.0, 1.0), "algorithm.jsd_token_clip": (0.0, 1e6),
    "algorithm.opsd_alpha": (0.0, 1000.0),
    "teacher.sync_interval": (1, _BIG),
    "deepspeed.zero_stage": (0, 3),
    "train.steps": (1, _BIG), "train.lr": (1e-12, 1.0), "train.weight_decay": (0.0, 10.0), "train.grad_clip": (0.0, 1e6),
    "train.adam_beta1": (0.0, 0.999999), "train.adam_beta2": (0.0, 0.99999999), "train.micro_batch_size": (0, 1_000_000),
    "train.updates_per_batch": (1, 4096), "train.epochs_per_batch": (1, 1024), "train.seed": (0, _SEED),
    "train.checkpoint_every": (0, _BIG), "train.keep_checkpoints": (1, 1000), "train.eval_every": (0, _BIG),
    "store.retries": (1, 100),
    "ingest.max_body_chars": (100, _BIG), "ingest.max_section_chars": (200, _BIG),
    "ingest.max_manual_bytes": (1, 64 * 2**30), "ingest.max_ticket_line_bytes": (1024, 2**30),
    "ingest.eval_fraction": (0.0, 1.0), "ingest.retrieve_k": (0, 1000), "ingest.max_context_chars": (100, _BIG),
    "validation.max_failure_rate": (0.0, 1.0), "validation.min_section_chars": (0, _BIG),
    "validation.max_section_chars": (0, _BIG), "validation.max_title_chars": (0, _BIG), "validation.max_body_chars": (0, _BIG),
    "validation.min_prompt_chars": (0, _BIG), "validation.max_prompt_chars": (0, _BIG),
    "validation.max_context_chars": (0, _BIG), "validation.leak_span_words": (3, 100_000), "validation.chunk_rows": (1, _BIG),
    "tracking.http_retries": (0, 100), "tracking.http_timeout_s": (1, 3600), "tracking.upload_timeout_s": (1, 86400), "tracking.max_backoff_s": (0.001, 3600.0),
    "tracking.flush_timeout_s": (0.0, 86400.0), "tracking.max_buffered_metrics": (1, 100_000_000),
    "registry.margin": (0.0, 100.0), "registry.max_leakage_rate": (0.0, 1.0), "registry.min_paired_tasks": (1, _BIG),
    "eval.k": (1, 1024), "eval.num_samples": (0, 65536), "eval.max_new_tokens": (1, 131072),
    "eval.temperature": (1e-6, 100.0), "eval.bootstrap_samples": (100, 10_000_000), "eval.seed": (0, _SEED),
    "eval.leak_ngram": (3, 100_000), "eval.limit": (0, _BIG),
    "platform.min_new_tickets": (0, _BIG), "platform.nodes": (1, 10_000), "platform.gpus_per_node": (0, 64),
    "platform.job_timeout_s": (1, 30 * 86400),
}

# Local paths, relative to the working directory (their root) unless absolute. A '..' part would let a
# recipe or a pipeline parameter point the store or the output at any folder above it.
PATH_FIELDS = ("model.path", "data.train_tasks", "data.eval_tasks", "train.output_dir", "train.checkpoint_dir", "store.root",
               "tracking.artifact_location")


def _check_ranges(cfg: Any) -> None:
    for sec in dataclasses.fields(cfg):
        section = getattr(cfg, sec.name)
        if not dataclasses.is_dataclass(section):
            continue
        for f in dataclasses.fields(section):
            v = getattr(section, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            key = f"{sec.name}.{f.name}"
            _check(math.isfinite(v), lambda: f"{key} must be a finite number, got {v!r}")
            lo, hi = RANGES.get(key, (-math.inf, math.inf))
            _check(lo <= v <= hi, lambda: f"{key} must be in [{lo:g}, {hi:g}], got {_r(v)}")


def _check_paths(cfg: Any) -> None:
    for key in PATH_FIELDS:
        sec, name = key.split(".")
        value = getattr(getattr(cfg, sec), name)
        if "://" in value:  # a URI (s3://, file://) is not a local path
            continue
        _check("\x00" not in value, lambda: f"{key} must not contain a NUL byte, got {_r(value)}")
        parts = re.split(r"[\\/]+", value)
        _check(".." not in parts, lambda: f"{key} must stay inside its root: '..' is not allowed, got {_r(value)}; "
               "name the folder below the working directory, or give an absolute path")


@dataclass(frozen=True)
class RLSDConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    platform: PlatformConfig = field(default_factory=PlatformConfig)

    def __post_init__(self) -> None:
        _check_ranges(self)
        _check_paths(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """{'rollout.group_size': 4, ...}: for MLflow params."""
        return {f"{s}.{k}": v for s, sec in self.to_dict().items() for k, v in sec.items()}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **sections: Any) -> RLSDConfig:
        """Copy with whole sections replaced: cfg.replace(train=dataclasses.replace(cfg.train, steps=3))."""
        return dataclasses.replace(self, **sections)


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check (and gently coerce int -> float) a YAML value against a field type."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        _check(value in choices, lambda: f"{where} must be one of {' | '.join(map(str, choices))}, got {_r(value)}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None) and value is None:
                return None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(value, args[0], where)
    if tp is bool:
        _check(isinstance(value, bool), lambda: f"{where} must be true or false, got {_r(value)}")
        return value
    if tp is int:
        _check(isinstance(value, int) and not isinstance(value, bool), lambda: f"{where} must be an integer, got {_r(value)}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), lambda: f"{where} must be a number, got {_r(value)}")
        _check(math.isfinite(value), lambda: f"{where} must be a finite number, got {_r(value)}")
        return float(value)
    if tp is str:
        _check(isinstance(value, (str, int, float)) and not isinstance(value, bool), lambda: f"{where} must be a string, got {_r(value)}")
        return str(value)
    return value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    _check(isinstance(data, dict), lambda: f"{where or 'config'} must be a mapping, got {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str)]
    _check(not bad, lambda: f"{where or 'config'} keys must be names, got {_r(bad[0])}" if bad else "")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    _check(not unknown, lambda: f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join((where + '.' if where else '') + u for u in unknown)}; "
           f"valid keys{' in ' + where if where else ''}: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value or {}, key)
        else:
            kwargs[name] = _coerce(value, tp, key)
    return cls(**kwargs)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors, aliases and explicit tags as the parser meets them (before composing,
    so nothing is ever expanded: a 'billion laughs' document costs its first anchor, not gigabytes)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        mark = event.start_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ConfigError(f"config uses a YAML anchor or alias ({where}); they are not allowed in rlsd configs: "
                              "write the value out")
        tag = getattr(event, "tag", None)
        implicit = getattr(event, "implicit", True)
        if tag is not None and tag != "!" and not (implicit is True or (isinstance(implicit, tuple) and any(implicit))):
            raise ConfigError(f"config uses an explicit YAML tag {_r(tag)} ({where}); tags are not allowed in rlsd "
                              "configs: write a plain value")
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            _check(self._depth <= MAX_YAML_DEPTH,
                   lambda: f"config nests deeper than {MAX_YAML_DEPTH} levels ({where}); a recipe is two levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _yaml(text: str, what: str) -> Any:
    """Parse one YAML document with :class:`_StrictLoader`; every failure becomes a short ConfigError."""
    _check(len(text) <= MAX_CONFIG_BYTES,
           lambda: f"{what} is {len(text)} characters; a config is at most {MAX_CONFIG_BYTES} (refused unread)")
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError:
        raise
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} is not valid YAML: {' '.join(str(e).split())}") from None
    except (ValueError, RecursionError, OverflowError) as e:  # int digit limit, nesting depth
        raise ConfigError(f"{what} is not a usable YAML document ({type(e).__name__}: {str(e)[:120]})") from None


def _field_type(section: str, name: str) -> Any:
    sec = typing.get_type_hints(RLSDConfig).get(section)
    return typing.get_type_hints(sec).get(name) if dataclasses.is_dataclass(sec) else None


_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"'}


def _string_value(raw: str) -> str:
    """A --set value for a string field, taken as written: never parsed as YAML, whose folding turns a
    newline into a space. One pair of enclosing quotes is removed; inside double quotes the escapes
    \\n, \\t, \\\\ and \\" stand for a newline, a tab, a backslash and a quote ('teacher.template="Q: {question}\\n"')."""
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return raw[1:-1]
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return re.sub(r'\\([nt"\\])', lambda m: _ESCAPES[m.group(1)], raw[1:-1])
    return raw


def _set_dotted(tree: dict[str, Any], dotted: str) -> None:
    _check("=" in dotted, lambda: f"--set expects key=value, got {_r(dotted)}")
    key, raw = dotted.split("=", 1)
    parts = key.strip().split(".")
    _check(len(parts) == 2 and all(parts), lambda: f"--set key must be section.field (e.g. train.steps), got {_r(key)}")
    if _field_type(parts[0], parts[1]) is str:
        tree.setdefault(parts[0], {})
        _check(isinstance(tree[parts[0]], dict), lambda: f"{parts[0]} must be a mapping")
        tree[parts[0]][parts[1]] = _string_value(raw)
        return
    try:
        value = _yaml(raw, f"--set {key.strip()}") if raw.strip() else ""
    except ConfigError as e:
        raise ConfigError(f"{e}; quote it, e.g. --set \"{key.strip()}='...'\"") from None
    tree.setdefault(parts[0], {})
    _check(isinstance(tree[parts[0]], dict), lambda: f"{parts[0]} must be a mapping")
    tree[parts[0]][parts[1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                *, text: str | None = None) -> RLSDConfig:
    """Read a YAML recipe (or ``text``), apply ``section.field=value`` overrides, validate, freeze."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        _check(not p.is_dir(), lambda: f"config {_r(str(p))} is a directory; give the path of a YAML file in it")
        _check(p.is_file(), lambda: f"config file {_r(str(p))} does not exist")
        try:
            _check(p.stat().st_size <= MAX_CONFIG_BYTES, lambda: f"config file {_r(str(p))} is larger than "
                   f"{MAX_CONFIG_BYTES} bytes; a recipe is a few KB (refused unread)")
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"config file {_r(str(p))} cannot be read ({e.strerror or type(e).__name__})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {_r(str(p))} is not UTF-8 text") from None
    if text is not None:
        tree = _yaml(text, "config") or {}
    _check(isinstance(tree, dict), lambda: f"config must be a YAML mapping of sections, got {type(tree).__name__}")
    for o in overrides:
        _set_dotted(tree, o)
    cfg = _build(RLSDConfig, tree, "")
    from rlsd.verifiers.graders import use_base_model, validate_spec

    if cfg.ingest.text_grader:
        try:
            spec = validate_spec(cfg.ingest.text_grader, "ingest.text_grader")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        cfg = dataclasses.replace(cfg, ingest=dataclasses.replace(cfg.ingest, text_grader=spec))
    # a grader's `model: base`: this model folder, or none yet (a reference is fetched by the step that grades)
    use_base_model(cfg.model.path if Path(cfg.model.path).is_dir() else None)
    os.environ["RLSD_CODE_SANDBOX"] = cfg.platform.code_sandbox  # read by rlsd.verifiers.sandbox at each run
    return cfg
