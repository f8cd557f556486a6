"""Experiment tracking in MLflow that never stops training.

- :class:`Tracker` logs one training run: the resolved config as params and as ``config.yaml``,
  tags (code version, data snapshot id), per-step metrics, artifacts, and at ``finish`` PNG plots of
  the training curves. Every call only appends to an in-memory queue; one background thread
  delivers the queue in order with bounded exponential back-off, so a tracking server that goes
  away for a while costs nothing but a warning, and what was buffered arrives when it returns.
  ``finish`` waits at most ``tracking.flush_timeout_s`` for the queue to drain, then warns and
  returns; no ``log_*`` call and no ``finish`` ever raises because of the tracking server. A record the
  server refuses for what it is (``INVALID_PARAMETER_VALUE`` / ``BAD_REQUEST``: a name it does not take, a
  param changed) is dropped with a warning naming it, so it never holds back the records behind it.
- :func:`plot_training` draws reward, accuracy, entropy, clip-low/clip-high fractions and lambda
  against the step from a trainer's ``metrics.jsonl`` (matplotlib, Agg backend).
- :func:`track_run` logs a finished trainer output folder as one run (the offline path, for a KFP
  component or a run whose live tracking was off).

Where this departs from the usual MLflow idiom (``mlflow.start_run`` + ``mlflow.log_metric``): the
fluent API blocks the caller on every request and raises when the server is down; MLflow's own
asynchronous logging (``synchronous=False``) also gives up after its HTTP retries. Here delivery is
decoupled from training and retried until ``finish``'s deadline. MLflow's per-request retries
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` / ``_TIMEOUT``) are set from ``tracking.http_retries`` /
``tracking.http_timeout_s`` for this process so that one request never hangs for minutes.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlsd import offline
from rlsd.config import RLSDConfig, TrackingConfig, load_config

offline.apply()

log = logging.getLogger(__name__)

TAG_CODE_VERSION = "rlsd.code_version"
TAG_DATA_SNAPSHOT = "rlsd.data_snapshot_id"
TAG_GIT_COMMIT = "mlflow.source.git.commit"
MAX_PARAM_CHARS = 6000  # MLflow 3's limit on a param value
BATCH_METRICS = 1000  # MLflow's limit on metrics per log_batch
BATCH_PARAMS = 100  # MLflow's limit on params per log_batch


class TrackingWarning(RuntimeWarning):
    """The tracking server could not be reached (or came back); training goes on."""


# ----------------------------------------------------------------------------------------------
# Where things go
# ----------------------------------------------------------------------------------------------


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def resolve_uri(uri: str) -> str:
    """Absolute form of a local store URI (creating its folder); http(s) URIs unchanged."""
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if path and path != ":memory:":
            p = Path(path) if path.startswith("/") else Path.cwd() / path
            p.parent.mkdir(parents=True, exist_ok=True)
            return "sqlite:///" + str(p.resolve())
        return uri
    if uri.startswith("file:"):
        return uri
    if "://" not in uri:  # a bare folder: MLflow's file store
        p = Path(uri).resolve()
        p.mkdir(parents=True, exist_ok=True)
        return p.as_uri()
    return uri


def artifact_root(cfg: TrackingConfig) -> str | None:
    """The artifact location for a new experiment, or None to let a tracking server decide."""
    loc = cfg.artifact_location
    if not loc:
        return None
    if "://" in loc or loc.startswith("mlflow-artifacts:"):
        return loc
    if is_remote(cfg.uri):  # a plain folder means nothing on a remote server: use its own store
        return None
    p = Path(loc).resolve()
    p.mkdir(parents=True, exist_ok=True)
    return p.as_uri()


def configure_client(cfg: TrackingConfig) -> str:
    """Set this process's MLflow HTTP limits from the config; returns the resolved tracking URI."""
    offline.apply()
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(cfg.http_retries)
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(cfg.http_timeout_s)
    return resolve_uri(cfg.uri)


@contextlib.contextmanager
def upload_timeout(cfg: TrackingConfig) -> Iterator[None]:
    """MLflow's per-request timeout raised to ``cfg.upload_timeout_s`` for the block (a model upload: the
    server answers each PUT only after it has stored the whole file), then set back."""
    old = os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT")
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(cfg.http_timeout_s, cfg.upload_timeout_s))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MLFLOW_HTTP_REQUEST_TIMEOUT", None)
        else:
            os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = old


def get_or_create_experiment(client: Any, name: str, artifact_location: str | None) -> str:
    """Experiment id by name; creating it is safe against another process doing the same."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise ValueError(f"MLflow experiment {name!r} is deleted; restore it or set tracking.experiment to another name")
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def code_version() -> tuple[str, str | None]:
    """(code version, git commit or None): the commit of the checkout rlsd runs from (``-dirty`` if
    it has local changes), else ``rlsd==<package version>``."""
    import rlsd

    here = Path(rlsd.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        if commit:
            return commit + ("-dirty" if dirty else ""), commit
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version

        return f"rlsd=={version('rlsd')}", None
    except Exception:
        return f"rlsd=={rlsd.__version__}", None


# ----------------------------------------------------------------------------------------------
# The tracker
# ----------------------------------------------------------------------------------------------


class Tracker:
    """One MLflow run whose logging never blocks or kills training.

    ``with Tracker(cfg.tracking, run_name="exp1") as t: t.start(cfg.flat(), cfg.to_yaml()); ...
    t.log_metrics({"loss": 0.3}, step=1)``. Leaving the block by an exception ends the run FAILED.
    With ``tracking.enabled`` false every method is a no-op and ``run_id`` is None.
    """

    def __init__(self, tracking_cfg: TrackingConfig, *, run_name: str | None = None,
                 tags: dict[str, Any] | None = None) -> None:
        if isinstance(tracking_cfg, RLSDConfig):  # accept the whole config too
            tracking_cfg = tracking_cfg.tracking
        self.cfg = tracking_cfg
        self.run_name = run_name
        self._initial_tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self._run_id: str | None = None
        self._ops: collections.deque[tuple[str, Any]] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._deadline: float | None = None
        self._failing_since: float | None = None
        self._last_error: str = ""
        self._buffered_metrics = 0
        self._dropped_metrics = 0
        self._delivered_metrics = 0
        self._history: dict[int, dict[str, float]] = {}
        self._bad_keys: set[str] = set()
        self._single = 0  # deliver this many next metric entries one at a time (a merged batch was refused)
        self._started = False
        self._finished = False
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.report: dict[str, Any] = {}

    # -- public API ----------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.enabled)

    @property
    def run_id(self) -> str | None:
        """The MLflow run id once the run exists on the server (None before, or if never reached)."""
        return self._run_id

    @property
    def pending(self) -> int:
        """Records (metric batches, params, tags, artifacts) not yet delivered."""
        with self._cond:
            return len(self._ops)

    def start(self, params: dict[str, Any], config_yaml: str, *, wait_s: float | None = None) -> Tracker:
        """Create the run; log ``params`` and ``config_yaml`` (as ``config.yaml``); tag the code version.

        Waits up to ``wait_s`` (default: one request's retries and timeouts for a server, 120 s for a
        local store) for the run to exist so that ``run_id`` is known; if the server is unreachable it
        returns anyway and keeps trying in the background.
        """
        if not self.enabled or self._started:
            return self
        self._started = True
        version, commit = code_version()
        tags = {TAG_CODE_VERSION: version, **({TAG_GIT_COMMIT: commit} if commit else {}), **self._initial_tags}
        self._push("create", tags)
        items = [(str(k), _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), BATCH_PARAMS):
            self._push("params", items[i:i + BATCH_PARAMS])
        self._push("text", (config_yaml, "config.yaml"))
        self._thread = threading.Thread(target=self._worker, name="rlsd-tracker", daemon=True)
        self._thread.start()
        if wait_s is None:  # a local store may spend a while creating its tables the first time
            wait_s = (self.cfg.http_retries + 1) * self.cfg.http_timeout_s if is_remote(self.cfg.uri) else 120.0
        deadline = time.monotonic() + wait_s
        with self._cond:
            while self._run_id is None and time.monotonic() < deadline:
                self._cond.wait(timeout=max(0.0, deadline - time.monotonic()))
        return self

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Tags on the run, e.g. ``{TAG_DATA_SNAPSHOT: snapshot_id}``."""
        if self.enabled and tags:
            self._push("tags", {str(k): str(v) for k, v in tags.items()})

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        """Queue one step's numbers. Non-numbers are skipped with a one-time warning naming the key."""
        if not self.enabled:
            return
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        batch = []
        for k, v in metrics.items():
            try:
                if isinstance(v, (str, bytes)) or v is None:
                    raise TypeError
                fv = float(v)  # int, float, bool, numpy and 0-d torch scalars
            except (TypeError, ValueError):
                if k not in self._bad_keys:
                    self._bad_keys.add(k)
                    warnings.warn(f"tracking: metric {k!r} = {v!r} is not a number; it is not logged "
                                  "(log numbers, or put it in an artifact)", TrackingWarning, stacklevel=2)
                continue
            bad_name = _bad_metric_name(str(k))
            if bad_name:  # MLflow would refuse the whole batch holding it
                if k not in self._bad_keys:
                    self._bad_keys.add(k)
                    warnings.warn(f"tracking: metric name {k!r} is refused by MLflow ({bad_name}); it is not logged",
                                  TrackingWarning, stacklevel=2)
                continue
            batch.append(Metric(str(k), fv, ts, int(step)))
            self._history.setdefault(int(step), {})[str(k)] = fv
        if batch:
            self._push("metrics", batch)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Queue a file (or a folder's files) for upload under ``artifact_path``."""
        if not self.enabled:
            return
        p = Path(path)
        if not p.exists():
            warnings.warn(f"tracking: artifact {str(p)!r} does not exist; not logged", TrackingWarning, stacklevel=2)
            return
        self._push("artifact", (str(p.resolve()), artifact_path))

    def log_text(self, text: str, artifact_file: str) -> None:
        if self.enabled:
            self._push("text", (text, artifact_file))

    def finish(self, status: str = "FINISHED") -> dict[str, Any]:
        """Log the plots, end the run with ``status``, and wait up to ``tracking.flush_timeout_s``
        for everything to be delivered. Returns {run_id, delivered_metrics, undelivered, dropped_metrics}."""
        if not self.enabled or not self._started or self._finished:
            return self.report
        self._finished = True
        if self.cfg.plots and self._history:
            try:
                self._tmp = tempfile.TemporaryDirectory(prefix="rlsd-plots-")
                jsonl = Path(self._tmp.name) / "metrics.jsonl"
                jsonl.write_text("".join(json.dumps({"step": s, **m}) + "\n" for s, m in sorted(self._history.items())))
                for png in plot_training(jsonl, Path(self._tmp.name) / "plots"):
                    self._push("artifact", (str(png), "plots"))
            except Exception as e:  # a plot must not fail a finished training
                warnings.warn(f"tracking: plots not drawn: {e!r}", TrackingWarning, stacklevel=2)
        self._push("terminate", status)
        with self._cond:
            self._closing = True
            self._deadline = time.monotonic() + self.cfg.flush_timeout_s
            self._cond.notify_all()
        if self._thread is not None:
            # The worker stops at the deadline; one more request may be in flight after it.
            self._thread.join(self.cfg.flush_timeout_s + (self.cfg.http_retries + 1) * self.cfg.http_timeout_s + 5)
        with self._cond:
            left = list(self._ops)
        undelivered_metrics = sum(len(v) for k, v in left if k == "metrics")
        self.report = {"run_id": self._run_id, "delivered_metrics": self._delivered_metrics,
                       "undelivered": len(left), "undelivered_metrics": undelivered_metrics,
                       "dropped_metrics": self._dropped_metrics}
        if left:
            warnings.warn(
                f"tracking: the server at {self.cfg.uri} did not take {len(left)} records ({undelivered_metrics} metric "
                f"values) within tracking.flush_timeout_s={self.cfg.flush_timeout_s}s (last error: {self._last_error}); "
                "training finished anyway. The trainer's metrics.jsonl holds every value: log it later with "
                "`rlsd track --output <run folder>`.", TrackingWarning, stacklevel=2)
        if self._tmp is not None and (self._thread is None or not self._thread.is_alive()):
            self._tmp.cleanup()
        return self.report

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.finish("FINISHED")
        else:
            self.finish("KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")

    # -- the delivery thread -------------------------------------------------------------------

    def _push(self, kind: str, payload: Any) -> None:
        with self._cond:
            self._ops.append((kind, payload))
            if kind == "metrics":
                self._buffered_metrics += len(payload)
                self._enforce_bound()
            self._cond.notify_all()

    def _enforce_bound(self) -> None:
        dropped = 0
        while self._buffered_metrics > self.cfg.max_buffered_metrics:
            for i, (kind, payload) in enumerate(self._ops):
                if kind == "metrics":
                    del self._ops[i]
                    self._buffered_metrics -= len(payload)
                    dropped += len(payload)
                    break
            else:
                break
        if dropped:
            if self._dropped_metrics == 0:
                warnings.warn(f"tracking: more than tracking.max_buffered_metrics={self.cfg.max_buffered_metrics} "
                              "metric values waiting for the server; dropping the oldest (metrics.jsonl keeps them)",
                              TrackingWarning, stacklevel=3)
            self._dropped_metrics += dropped

    def _next_batch(self) -> tuple[str, Any, int]:
        """(kind, payload, number of queue entries it covers); consecutive metrics are merged."""
        kind, payload = self._ops[0]
        if kind != "metrics" or self._single:
            return kind, payload, 1
        merged: list[Any] = []
        n = 0
        for k, p in self._ops:
            if k != "metrics" or (merged and len(merged) + len(p) > BATCH_METRICS):
                break
            merged.extend(p)
            n += 1
        return kind, merged, n

    def _worker(self) -> None:
        try:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=configure_client(self.cfg))
        except Exception as e:  # e.g. an unusable URI: say so once, keep training
            self._last_error = f"{type(e).__name__}: {e}"
            warnings.warn(f"tracking: cannot use tracking.uri={self.cfg.uri!r} ({self._last_error}); nothing will be "
                          "logged to MLflow in this run", TrackingWarning, stacklevel=1)
            return
        backoff = 0.5
        while True:
            with self._cond:
                while not self._ops and not self._closing:
                    self._cond.wait()
                if not self._ops:
                    return
                if self._deadline is not None and time.monotonic() > self._deadline:
                    return
                kind, payload, n = self._next_batch()
            try:
                self._execute(client, kind, payload)
            except Exception as e:
                if kind not in ("create", "terminate") and _refused(e):  # retrying cannot help
                    self._drop_refused(kind, payload, n, e)
                    continue
                # the server is away (or failed): back off, retry
                self._last_error = _describe(e)
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                    warnings.warn(f"tracking: cannot reach MLflow at {self.cfg.uri} ({self._last_error}); buffering "
                                  "and retrying, training goes on", TrackingWarning, stacklevel=1)
                with self._cond:
                    wait = backoff
                    if self._deadline is not None:
                        wait = min(wait, max(0.0, self._deadline - time.monotonic()))
                    self._cond.wait(timeout=wait)  # finish() wakes us to apply its deadline
                backoff = min(backoff * 2, self.cfg.max_backoff_s)
                continue
            with self._cond:
                self._retire(n, delivered=True)
            backoff = 0.5
            if self._failing_since is not None:
                gap = time.monotonic() - self._failing_since
                self._failing_since = None
                warnings.warn(f"tracking: MLflow at {self.cfg.uri} is back after {gap:.1f}s; delivering buffered records",
                              TrackingWarning, stacklevel=1)

    def _retire(self, n: int, *, delivered: bool) -> None:
        """Take the first ``n`` queue entries off, counted as delivered or dropped (call with ``_cond`` held)."""
        for _ in range(n):
            k, p = self._ops.popleft()
            if k == "metrics":
                self._buffered_metrics -= len(p)
                if delivered:
                    self._delivered_metrics += len(p)
                else:
                    self._dropped_metrics += len(p)
                self._single = max(0, self._single - 1)
        self._cond.notify_all()

    def _drop_refused(self, kind: str, payload: Any, n: int, e: Exception) -> None:
        """The server answered that it will never take this record (e.g. INVALID_PARAMETER_VALUE): a merged
        metrics batch is split so that only the refused step is dropped; a single record is dropped with a
        warning, and everything queued behind it is delivered."""
        why = _describe(e)
        with self._cond:
            if kind == "metrics" and n > 1:
                self._single = n
                return
            self._retire(1, delivered=False)
        what = (f"{len(payload)} metric values of step {payload[0].step}" if kind == "metrics" and payload
                else f"a {kind} record")
        warnings.warn(f"tracking: MLflow at {self.cfg.uri} refused {what} ({why}); dropped, not retried "
                      "(metrics.jsonl keeps every value)", TrackingWarning, stacklevel=1)

    def _execute(self, client: Any, kind: str, payload: Any) -> None:
        from mlflow.entities import Param, RunTag

        if kind == "create":
            if self._run_id is None:
                exp_id = get_or_create_experiment(client, self.cfg.experiment, artifact_root(self.cfg))
                run = client.create_run(exp_id, run_name=self.run_name, tags=payload)
                with self._cond:
                    self._run_id = run.info.run_id
                    self._cond.notify_all()
            return
        assert self._run_id is not None
        if kind == "params":
            client.log_batch(self._run_id, params=[Param(k, v) for k, v in payload])
        elif kind == "tags":
            client.log_batch(self._run_id, tags=[RunTag(k, v) for k, v in payload.items()])
        elif kind == "metrics":
            client.log_batch(self._run_id, metrics=payload)
        elif kind == "text":
            text, name = payload
            client.log_text(self._run_id, text, name)
        elif kind == "artifact":
            path, artifact_path = payload
            if Path(path).is_dir():
                client.log_artifacts(self._run_id, path, artifact_path)
            else:
                client.log_artifact(self._run_id, path, artifact_path)
        elif kind == "terminate":
            client.set_terminated(self._run_id, status=payload)
        else:  # pragma: no cover - internal
            raise AssertionError(kind)


REFUSED_CODES = ("INVALID_PARAMETER_VALUE", "BAD_REQUEST")
"""MLflow error codes that refuse a record for what it is: sending it again gets the same answer."""


def _describe(e: BaseException) -> str:
    """The error's type and the first line of its message (200 characters at most), for a warning."""
    return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def _refused(e: BaseException) -> bool:
    return getattr(e, "error_code", "") in REFUSED_CODES


def _bad_metric_name(name: str) -> str:
    """Why MLflow refuses ``name`` as a metric name ('' when it takes it)."""
    try:
        from mlflow.utils.validation import _validate_metric_name
    except ImportError:  # pragma: no cover - another MLflow: the server decides (_refused)
        return ""
    try:
        _validate_metric_name(name)
    except Exception as e:
        return str(e).splitlines()[0][:200]
    return ""


def _param_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    if len(s) > MAX_PARAM_CHARS:
        note = "...[truncated; the full value is in config.yaml]"
        s = s[:MAX_PARAM_CHARS - len(note)] + note
    return s


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------

PLOTS: dict[str, tuple[str, list[str]]] = {
    "reward": ("reward (mean over the group)", ["reward_mean"]),
    "accuracy": ("accuracy (verifier pass rate)", ["accuracy"]),
    "entropy": ("policy entropy (nats/token)", ["entropy"]),
    "clip_fractions": ("teacher-weight clip fractions", ["clip_low_frac", "clip_high_frac"]),
    "lambda": ("lambda (self-distillation weight)", ["lambda"]),
}


def read_metrics(metrics_jsonl: str | Path) -> list[dict[str, Any]]:
    """The trainer's metrics.jsonl as a list of dicts (each with an integer ``step``). A last line that does
    not parse (an append torn by a kill) is skipped with a warning; an unreadable line before it is an error."""
    p = Path(metrics_jsonl)
    if not p.is_file():
        raise FileNotFoundError(f"metrics file {str(p)!r} does not exist (the trainer writes <output_dir>/metrics.jsonl)")
    rows = []
    lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
    last = max((i for i, line in enumerate(lines, 1) if line.strip()), default=0)
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if i == last:
                warnings.warn(f"{p}:{i}: skipped a torn last line (an append cut by a kill)", stacklevel=2)
                continue
            raise ValueError(f"{p}:{i} is not JSON ({e.msg}); each line must be one step's metrics object") from None
        if not isinstance(row, dict) or "step" not in row:
            raise ValueError(f"{p}:{i} must be a JSON object with a 'step' field, got {line[:80]!r}")
        rows.append(row)
    return rows


def plot_training(metrics_jsonl: str | Path, out_dir: str | Path) -> list[Path]:
    """One PNG per curve in :data:`PLOTS` (reward, accuracy, entropy, clip fractions, lambda vs step).

    A curve whose metrics never appear in the file is not drawn (logged at INFO, named); the
    returned list holds exactly the files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_jsonl)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, (title, keys) in PLOTS.items():
        series = {}
        for k in keys:
            pts = [(int(r["step"]), float(r[k])) for r in rows
                   if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool) and math.isfinite(r[k])]
            if pts:
                series[k] = sorted(pts)
        if not series:
            log.info("plot %s not drawn: no %s in %s", name, " / ".join(keys), metrics_jsonl)
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        for k, pts in series.items():
            ax.plot([s for s, _ in pts], [v for _, v in pts], marker="." if len(pts) < 50 else None, label=k)
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend()
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


# ----------------------------------------------------------------------------------------------
# A finished run folder, logged after the fact
# ----------------------------------------------------------------------------------------------


def track_run(cfg: RLSDConfig, output_dir: str | Path, *, run_name: str | None = None,
              tags: dict[str, Any] | None = None) -> str | None:
    """Log a finished trainer output folder as one MLflow run; returns its run id.

    Params come from the folder's ``config.yaml`` (the resolved config the run used) when present,
    else from ``cfg``; every line of ``metrics.jsonl`` becomes one step; ``config.yaml``,
    ``metrics.jsonl``, ``summary.json`` (if any) and the plots become artifacts. Tracking settings
    (URI, experiment) come from ``cfg.tracking``.
    """
    out = Path(output_dir)
    metrics_path = out / "metrics.jsonl"
    rows = read_metrics(metrics_path)
    cfg_path = out / "config.yaml"
    run_cfg = load_config(cfg_path) if cfg_path.is_file() else cfg
    config_yaml = cfg_path.read_text(encoding="utf-8") if cfg_path.is_file() else cfg.to_yaml()
    tracker = Tracker(cfg.tracking, run_name=run_name or out.resolve().name, tags=tags)
    with tracker:
        tracker.start(run_cfg.flat(), config_yaml)
        tracker.set_tags({"rlsd.output_dir": str(out.resolve())})
        for row in rows:
            tracker.log_metrics({k: v for k, v in row.items() if k != "step"}, step=int(row["step"]))
        tracker.log_artifact(metrics_path)
        if (out / "summary.json").is_file():
            tracker.log_artifact(out / "summary.json")
    return tracker.run_id
