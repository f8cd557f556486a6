"""Model registry: register a trained model, gate its promotion on evaluation, load the champion.

- :func:`register_model` logs a trained model folder with MLflow's transformers flavor (weights
  loaded from the local checkpoint and saved in full, never a hub reference; explicit pip
  requirements), registers a new version of ``registry.model_name``, points ``@challenger`` at it
  and tags it with the evaluation numbers when given.
- :func:`promote` moves ``@champion`` to a version only if its evaluation clears the gates
  (:func:`check_gates`): pass@1 better than the baseline by ``registry.margin``, the paired-bootstrap
  interval's lower end above zero (``registry.require_ci_above_zero``), and a leakage rate at most
  ``registry.max_leakage_rate`` (a rate measured on 0 outputs is no measurement: refused unless
  ``registry.allow_unmeasured_leakage``); the comparison must be against the CURRENT champion (the
  evaluation's ``baseline`` names it: kind champion, name, version; a candidate that only beat the base
  model, or an older champion, proves nothing about the champion) on at least ``registry.min_paired_tasks``
  paired tasks. With no champion yet, the first version within the leakage bound becomes champion. The decision and its evidence go on the version (tags and description)
  whether it is promoted or refused.
- Lineage: the version is tagged with its training run id (``rlsd.training_run_id``), data snapshot id,
  KFP run id and the code version of the image (:func:`image_code_version`). Registering the same
  training run's model again (a retried KFP step) returns the version already registered for it.
- :func:`current_champion`: what evaluation compares a candidate with (fetched by rlsd.model_refs).
- :func:`load_champion` loads ``models:/<name>@champion`` as (model, tokenizer);
  :func:`load_champion_pyfunc` as an MLflow pyfunc whose ``predict`` generates text.

Where this departs from MLflow's idiom: registry stages (Staging/Production) are deprecated, so
aliases and tags carry the state. MLflow has no compare-and-set on aliases, so concurrent
promotions follow a small protocol (see :func:`promote`): a gate-passing candidate marks itself
``pending`` with its recorded pass@1; right before moving the alias it re-reads the champion, every
pending candidate and every version promoted in the last ``RECENT_S`` seconds, moves ``@champion``
to the best of them, and re-reads after every move until the alias stands on that best version.
Because every move is followed by such a re-read, the last promoter to move the alias leaves it on
the best version it can see, and any candidate it cannot see yet re-reads after it. Ties keep the
current champion, so promoters never flip the alias back and forth. What remains:
(1) the alias write itself is last-writer-wins: a champion set by hand (a rollback) within
``RECENT_S`` of an automatic promotion can be overridden by a promotion running at that moment,
which still counts the recently promoted version as a candidate; (2) a promoter that stalls for
more than ``RECENT_S`` between its last read and its alias write can land a stale choice that no one
repairs until the next promotion; (3) recorded pass@1 values are compared across evaluations, which
is only meaningful on the same held-out set. One promotion at a time (a KFP recurring run with
``max_concurrency=1``) or a registry with a transactional alias API removes all three.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import time
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _pkg_version
from pathlib import Path
from typing import Any

from rlsd import offline
from rlsd.config import RegistryConfig, RLSDConfig
from rlsd.tracking import (
    artifact_root,
    code_version,
    configure_client,
    get_or_create_experiment,
    upload_timeout,
)

offline.apply()

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_PASS1 = "rlsd.eval.pass_at_1"
TAG_STATE = "rlsd.promotion.state"  # pending while a promotion runs, then the decision
TAG_PENDING_SINCE = "rlsd.promotion.pending_since"
TAG_DECISION = "rlsd.promotion.decision"
TAG_REASONS = "rlsd.promotion.reasons"
TAG_DECIDED_TS = "rlsd.promotion.decided_ts"
TAG_TRAINING_RUN = "rlsd.training_run_id"
TAG_SNAPSHOT = "rlsd.data_snapshot_id"
TAG_KFP_RUN = "rlsd.kfp_run_id"
TAG_CODE_VERSION = "rlsd.code_version"
TAG_MODEL_SOURCE = "rlsd.model_source"
CODE_VERSION_FILE = "/etc/rlsd/code-version"  # written at image build time (containers/Dockerfile.*)
PENDING_TTL_S = 600.0  # a pending mark older than this is a crashed promoter's and is ignored
RECENT_S = 120.0  # a version promoted this recently still counts as a candidate (see promote)
MAX_TAG_CHARS = 5000
MAX_DESCRIPTION_CHARS = 5000
PIP_PACKAGES = ("torch", "transformers", "tokenizers", "accelerate", "safetensors")


# ----------------------------------------------------------------------------------------------
# Evaluation evidence
# ----------------------------------------------------------------------------------------------


def _num(ev: dict[str, Any], *path: str, required: bool = True) -> float | None:
    cur: Any = ev
    for i, key in enumerate(path):
        if not isinstance(cur, dict) or key not in cur or cur[key] is None:
            if not required:
                return None
            where = "evaluation" + "".join(f"[{k!r}]" for k in path[:i + 1])
            raise ValueError(f"{where} is missing; pass the JSON written by `rlsd evaluate` "
                             "(candidate.pass@1, leakage.rate, and comparison when a champion exists)")
        cur = cur[key]
    if isinstance(cur, bool) or not isinstance(cur, (int, float)) or not math.isfinite(cur):
        where = "evaluation" + "".join(f"[{k!r}]" for k in path)
        raise ValueError(f"{where} must be a finite number, got {cur!r}")
    return float(cur)


def load_evaluation(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"evaluation file {str(p)!r} does not exist (write it with `rlsd evaluate`)")
    try:
        ev = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"evaluation file {str(p)!r} is not JSON: {e}") from None
    if not isinstance(ev, dict):
        raise ValueError(f"evaluation file {str(p)!r} must hold a JSON object, got {type(ev).__name__}")
    return ev


def evaluation_tags(evaluation: dict[str, Any]) -> dict[str, str]:
    """The evaluation's numbers as version tags (``rlsd.eval.*``)."""
    cand = evaluation.get("candidate") or {}
    comp = evaluation.get("comparison") or {}
    base = evaluation.get("baseline") or {}
    leak = evaluation.get("leakage") or {}
    fields = {
        TAG_PASS1: cand.get("pass@1"),
        "rlsd.eval.pass_at_k": cand.get("pass@k"),
        "rlsd.eval.k": cand.get("k"),
        "rlsd.eval.greedy_pass_at_1": cand.get("greedy_pass@1"),
        "rlsd.eval.teacher_greedy_pass_at_1": cand.get("teacher_greedy_pass@1"),
        "rlsd.eval.candidate_model": cand.get("model"),
        "rlsd.eval.per_type": cand.get("per_type"),
        "rlsd.eval.baseline_model": base.get("model"),
        "rlsd.eval.baseline_kind": base.get("kind"),
        "rlsd.eval.baseline_version": base.get("version"),
        "rlsd.eval.baseline_uri": base.get("uri"),
        "rlsd.eval.baseline_pass_at_1": base.get("pass@1"),
        "rlsd.eval.diff_pass1": comp.get("diff_pass1"),
        "rlsd.eval.ci_low": comp.get("ci_low"),
        "rlsd.eval.ci_high": comp.get("ci_high"),
        "rlsd.eval.n_tasks": comp.get("n_tasks"),
        "rlsd.eval.leakage_rate": leak.get("rate"),
        "rlsd.eval.leakage_checked": leak.get("n_checked"),
        "rlsd.eval.teacher_student_gap": leak.get("teacher_student_gap"),
    }
    return {k: _tag_value(v) for k, v in fields.items() if v is not None}


def _tag_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)
    return s if len(s) <= MAX_TAG_CHARS else s[:MAX_TAG_CHARS - 12] + "[truncated]"


def check_gates(reg: RegistryConfig, evaluation: dict[str, Any], *, has_champion: bool,
                champion_version: str | int | None = None) -> tuple[bool, list[str]]:
    """(passed, reasons): every gate checked, each reason saying the number, the bound and ok/FAIL.

    With a champion: diff_pass1 >= margin, ci_low > 0 (if required), leakage rate <= bound, at least
    ``reg.min_paired_tasks`` paired tasks, and (when ``champion_version`` is given, as :func:`promote`
    always does) a baseline that is that champion: ``evaluation["baseline"]`` with kind "champion",
    name ``reg.model_name`` and that version.
    Without one (the first version): the leakage bound, and a candidate measurably worse than the base model
    it was compared with (interval entirely below zero) is refused; with ``reg.first_version_needs_gain`` the
    margin, interval and paired-task gates apply against the base model as they would against a champion.
    """
    reasons: list[str] = []
    ok = True
    leak = evaluation.get("leakage") if isinstance(evaluation.get("leakage"), dict) else {}
    if leak.get("n_checked") == 0:  # nothing could be checked: the rate is not a measurement
        ok = reg.allow_unmeasured_leakage
        reasons.append("ok: leakage not measured (0 outputs checked), allowed by registry.allow_unmeasured_leakage"
                       if ok else "FAIL: leakage not measured (0 outputs checked: no task's privileged context has 3 "
                       "words beside its answer); set registry.allow_unmeasured_leakage: true to promote anyway")
    else:
        rate = _num(evaluation, "leakage", "rate")
        good = rate <= reg.max_leakage_rate
        ok &= good
        n = leak.get("n_checked")
        reasons.append(f"{'ok' if good else 'FAIL'}: leakage rate {rate:.4f} {'<=' if good else '>'} "
                       f"registry.max_leakage_rate {reg.max_leakage_rate:.4f}"
                       + (f" ({leak.get('n_leaks')} of {n} outputs)" if n is not None else ""))
    if not has_champion:
        return _first_version_gates(reg, evaluation, ok, reasons)
    if not isinstance(evaluation.get("comparison"), dict):
        reasons.append("FAIL: the evaluation has no comparison with a baseline (comparison is null): evaluate the "
                       "candidate against the current champion (`rlsd evaluate` with a baseline)")
        return False, reasons
    ok &= _comparison_gates(reg, evaluation, reasons)
    if champion_version is not None:
        good, what = _baseline_is(evaluation, reg.model_name, str(champion_version))
        ok &= good
        reasons.append(f"ok: compared with the current champion {what}" if good else
                       f"FAIL: compared with {what}, not with the current champion {reg.model_name} "
                       f"v{champion_version}: evaluate the candidate against models:/{reg.model_name}@{CHAMPION}")
    return ok, reasons


def _first_version_gates(reg: RegistryConfig, evaluation: dict[str, Any], ok: bool,
                         reasons: list[str]) -> tuple[bool, list[str]]:
    """check_gates when the registry has no @champion yet (``ok``/``reasons``: the leakage gate's)."""
    comp = evaluation.get("comparison") if isinstance(evaluation.get("comparison"), dict) else None
    if reg.first_version_needs_gain:
        if comp is None:
            reasons.append("FAIL: no @champion exists yet and registry.first_version_needs_gain is set, but the "
                           "evaluation has no comparison with the base model")
            return False, reasons
        ok &= _comparison_gates(reg, evaluation, reasons)
        reasons.append(f"{'ok' if ok else 'FAIL'}: no @champion exists yet; with registry.first_version_needs_gain "
                       "the first version must pass the gates above against the base model")
        return ok, reasons
    reasons.append("ok: no @champion exists yet, so the first version within the leakage bound becomes "
                   "champion (margin and interval gates need a champion to compare with)" if ok else
                   "FAIL: no @champion exists yet; the first version within the leakage bound would become champion")
    hi = _num(evaluation, "comparison", "ci_high", required=False) if comp is not None else None
    if hi is not None and hi < 0:
        reasons.append(f"FAIL: measurably worse than the base model it was compared with (pass@1 difference "
                       f"{_num(evaluation, 'comparison', 'diff_pass1'):+.4f}, interval upper end {hi:+.4f} < 0)")
        ok = False
    return ok, reasons


def _comparison_gates(reg: RegistryConfig, evaluation: dict[str, Any], reasons: list[str]) -> bool:
    """The margin, interval and paired-task gates on ``evaluation["comparison"]``; appends their reasons."""
    ok = True
    diff = _num(evaluation, "comparison", "diff_pass1")
    good = diff >= reg.margin
    ok &= good
    reasons.append(f"{'ok' if good else 'FAIL'}: pass@1 difference {diff:+.4f} {'>=' if good else '<'} "
                   f"registry.margin {reg.margin:.4f}")
    lo = _num(evaluation, "comparison", "ci_low")
    hi = _num(evaluation, "comparison", "ci_high", required=False)
    ci = f"[{lo:+.4f}, {hi:+.4f}]" if hi is not None else f"low end {lo:+.4f}"
    if reg.require_ci_above_zero:
        good = lo > 0
        ok &= good
        reasons.append(f"{'ok' if good else 'FAIL'}: paired-bootstrap interval of the difference {ci} "
                       f"{'is above zero' if good else 'includes or is below zero'}")
    else:
        reasons.append(f"ok: interval {ci} not gated (registry.require_ci_above_zero is false)")
    n_paired = _num(evaluation, "comparison", "n_tasks", required=False)
    good = n_paired is not None and n_paired >= reg.min_paired_tasks
    ok &= good
    reasons.append(f"{'ok' if good else 'FAIL'}: {'unknown' if n_paired is None else int(n_paired)} paired tasks "
                   f"{'>=' if good else '<'} registry.min_paired_tasks {reg.min_paired_tasks}"
                   + ("" if good else " (too few for the interval to mean anything)"))
    return ok


def _baseline_is(evaluation: dict[str, Any], name: str, version: str) -> tuple[bool, str]:
    """(whether the evaluation's recorded baseline is registered version ``name`` v``version``, a description
    of the baseline it names)."""
    b = evaluation.get("baseline") if isinstance(evaluation.get("baseline"), dict) else {}
    kind, b_name, b_version = b.get("kind"), b.get("name"), b.get("version")
    if kind != "champion":
        what = (f"the base model {b.get('uri') or b.get('model')}" if kind == "base" else
                "an unnamed baseline (the evaluation does not record which model it compared with)")
        return False, what
    what = f"{b_name} v{b_version}"
    return (b_name == name and b_version is not None and str(b_version) == version), what


# ----------------------------------------------------------------------------------------------
# Register
# ----------------------------------------------------------------------------------------------


def pip_requirements() -> list[str]:
    """Exact pins of what the logged model needs to load (never left to MLflow's inference, which
    imports torchvision and fails beside this torch)."""
    reqs = []
    for name in PIP_PACKAGES:
        try:
            reqs.append(f"{name}=={_pkg_version(name)}")
        except PackageNotFoundError:
            continue
    return reqs


def _client(cfg: RLSDConfig) -> Any:
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = configure_client(cfg.tracking)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _signature() -> Any:
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string")]), outputs=Schema([ColSpec("string")]),
        params=ParamSchema([ParamSpec("max_new_tokens", "long", 64), ParamSpec("do_sample", "boolean", False),
                            ParamSpec("temperature", "double", 1.0), ParamSpec("top_p", "double", 1.0)]))


def image_code_version() -> str:
    """The code version of the running image: $RLSD_CODE_VERSION or /etc/rlsd/code-version (both set from
    the ``RLSD_CODE_VERSION`` build argument of containers/Dockerfile.*: images have no .git), else the
    checkout's commit or the package version (rlsd.tracking.code_version)."""
    import os

    env = os.environ.get("RLSD_CODE_VERSION", "").strip()
    if env and env != "unknown":
        return env
    with contextlib.suppress(OSError):
        text = Path(CODE_VERSION_FILE).read_text(encoding="utf-8").strip()
        if text and text != "unknown":
            return text
    return code_version()[0]


def kfp_run_id(given: str = "") -> str:
    """The KFP run id: ``given`` (the pipeline passes dsl.PIPELINE_JOB_ID_PLACEHOLDER), else $KFP_RUN_ID, else ''."""
    import os

    given = (given or "").strip()
    if given and not given.startswith("{{"):  # an unresolved placeholder is no id
        return given
    return os.environ.get("KFP_RUN_ID", "").strip()


def find_training_run(cfg: RLSDConfig, output_dir: str | Path) -> str:
    """The id of the MLflow run that trained into ``output_dir`` (rlsd.train tags it ``rlsd.output_dir``),
    newest first; '' when there is none (tracking off)."""
    client = _client(cfg)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    if exp is None:
        return ""
    want = str(Path(output_dir).resolve()).replace("'", "\\'")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`rlsd.output_dir` = '{want}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else ""


def _existing_version(client: Any, name: str, training_run_id: str, source: str) -> Any | None:
    """A READY (or still pending) version registered earlier for the same training run and model source."""
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except Exception as e:  # no registered model yet
        if "not found" in str(e).lower() or "does not exist" in str(e).lower():
            return None
        raise
    same = [mv for mv in versions if (mv.tags.get(TAG_TRAINING_RUN) or "") == training_run_id
            and mv.tags.get(TAG_MODEL_SOURCE) == source and mv.status != "FAILED_REGISTRATION"]
    return min(same, key=lambda mv: int(mv.version)) if same else None


def register_model(cfg: RLSDConfig, model_dir: str | Path, *, run_id: str | None = None,
                   evaluation: dict[str, Any] | None = None, alias: str = CHALLENGER,
                   training_run_id: str = "", training_output_dir: str | Path | None = None,
                   snapshot_id: str = "", kfp_run: str = "", source: str = "") -> dict[str, Any]:
    """Log ``model_dir`` (a local save_pretrained folder or .gguf), register a new version of
    ``cfg.registry.model_name`` and set ``@alias`` on it.

    The model is logged into ``run_id`` (e.g. the training run) or a new run named after the folder.
    Lineage tags on the version: ``rlsd.training_run_id`` (``training_run_id``, else ``run_id``, else the run
    that trained into ``training_output_dir``: :func:`find_training_run`), ``rlsd.data_snapshot_id``
    (``snapshot_id``, else the evaluation's ``data_snapshot_id``), ``rlsd.kfp_run_id`` (:func:`kfp_run_id`), ``rlsd.code_version``
    (:func:`image_code_version`) and ``rlsd.model_source`` (``source``, e.g. the KFP artifact URI, else the
    folder). When a version with the same training run id and model source exists (a retried register
    step), nothing is logged again: that version gets the alias and the evaluation tags and is returned
    (``reused``: true). Without a training run id (MLflow was down through training, or tracking is off) a
    ``source`` given by the caller alone identifies the model; a defaulted folder path never does.
    Returns {name, version, uri ("models:/<name>/<version>"), alias_uri, run_id, model_uri, reused}.
    """
    import mlflow

    from rlsd.models import load_model, load_tokenizer

    if evaluation is not None:
        _num(evaluation, "candidate", "pass@1")  # fail before any upload on a malformed evaluation
        _num(evaluation, "leakage", "rate", required=(evaluation.get("leakage") or {}).get("n_checked") != 0)
    model_dir = Path(model_dir)
    if not (training_run_id or run_id) and training_output_dir is not None:
        training_run_id = find_training_run(cfg, training_output_dir)
    training_run_id = training_run_id or run_id or ""
    snapshot_id = snapshot_id or str((evaluation or {}).get("data_snapshot_id") or "")
    # a source the caller names (the pushed store folder, content-addressed, or the KFP artifact URI) identifies
    # the model even without a training run id (MLflow down through training, tracking off); a folder path does not
    identified = bool(training_run_id or source)
    source = source or str(model_dir.resolve())
    client = _client(cfg)
    name = cfg.registry.model_name
    lineage = {TAG_TRAINING_RUN: training_run_id, TAG_SNAPSHOT: snapshot_id, TAG_KFP_RUN: kfp_run_id(kfp_run),
               TAG_CODE_VERSION: image_code_version(), TAG_MODEL_SOURCE: source}
    etags = evaluation_tags(evaluation) if evaluation is not None else {}
    if identified:
        mv = _existing_version(client, name, training_run_id, source)
        if mv is not None:  # a retry: same training run, same model, one version
            _await_ready(client, name, mv.version)
            for k, v in etags.items():
                client.set_model_version_tag(name, mv.version, k, v)
            client.set_registered_model_alias(name, alias, mv.version)
            return {"name": name, "version": int(mv.version), "uri": f"models:/{name}/{mv.version}",
                    "alias_uri": f"models:/{name}@{alias}", "run_id": mv.run_id, "model_uri": mv.source,
                    "reused": True}
    model = load_model(model_dir)  # raises a clear error for anything that is not a local model
    tokenizer = load_tokenizer(model_dir)
    exp_id = get_or_create_experiment(client, cfg.tracking.experiment, artifact_root(cfg.tracking))
    tags = {"rlsd.source_dir": str(model_dir.resolve()), **lineage}
    start = {"run_id": run_id} if run_id else {"experiment_id": exp_id, "run_name": f"register-{model_dir.resolve().name}"}
    with mlflow.start_run(**start) as run, upload_timeout(cfg.tracking):
        info = mlflow.transformers.log_model(
            transformers_model={"model": model, "tokenizer": tokenizer}, name="model", task="text-generation",
            pip_requirements=pip_requirements(), signature=_signature(), save_pretrained=True)
        mlflow.set_tags(tags)
        if evaluation is not None:
            mlflow.log_dict(evaluation, "evaluation.json")
        run_id = run.info.run_id
    try:
        client.create_registered_model(name, description="Trained by rlsd (RL with verifiable rewards + self-distillation).")
    except Exception:  # already there (or created concurrently)
        client.get_registered_model(name)
    vtags = {**tags, **etags}
    mv = client.create_model_version(name, info.model_uri, run_id=run_id, tags=vtags, model_id=info.model_id,
                                     description=f"Registered from {model_dir.resolve()} (run {run_id}).")
    _await_ready(client, name, mv.version)
    client.set_registered_model_alias(name, alias, mv.version)
    return {"name": name, "version": int(mv.version), "uri": f"models:/{name}/{mv.version}",
            "alias_uri": f"models:/{name}@{alias}", "run_id": run_id, "model_uri": info.model_uri,
            "reused": False}


def _await_ready(client: Any, name: str, version: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        mv = client.get_model_version(name, version)
        if mv.status == "READY":
            return
        if mv.status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
            raise RuntimeError(f"model version {name} v{version} did not become READY (status {mv.status}: "
                               f"{mv.status_message})")
        time.sleep(0.5)


# ----------------------------------------------------------------------------------------------
# Promote
# ----------------------------------------------------------------------------------------------


def _get_alias(client: Any, name: str, alias: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        if getattr(e, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") or \
                "not found" in str(e).lower() or "does not exist" in str(e).lower():
            return None
        raise


def _pass1(mv: Any) -> float | None:
    try:
        return float(mv.tags[TAG_PASS1])
    except (KeyError, TypeError, ValueError):
        return None


def _age(mv: Any, tag: str, now: float) -> float:
    try:
        return now - float(mv.tags[tag])
    except (KeyError, TypeError, ValueError):
        return math.inf


def _read_state(client: Any, name: str) -> tuple[Any | None, list[Any]]:
    """(current champion or None, candidates): versions marked pending by a promotion running now,
    and versions promoted in the last RECENT_S seconds (so that a promoter whose alias move landed
    after a better concurrent promotion finished sees that version and moves the alias back)."""
    champion = _get_alias(client, name, CHAMPION)
    now = time.time()
    candidates = []
    for mv in client.search_model_versions(f"name='{name}'"):
        state = mv.tags.get(TAG_STATE)
        fresh = (state == "pending" and _age(mv, TAG_PENDING_SINCE, now) < PENDING_TTL_S) or \
                (state == "promoted" and _age(mv, TAG_DECIDED_TS, now) < RECENT_S)
        if fresh and _pass1(mv) is not None:
            candidates.append(mv)
    return champion, candidates


def _choose(champion: Any | None, candidates: list[Any], margin: float,
            measured: dict[str, float] | None = None) -> Any | None:
    """The version that should hold @champion: the candidate with the best recorded pass@1 (newer
    version on a tie), if it beats the champion's pass@1 by ``margin`` (strictly better; ties keep the
    champion, so promoters never flip the alias back and forth). The champion's pass@1 is the one
    ``measured`` gives for its version (what the promoter's own evaluation measured for it, on the same tasks
    as the candidate), else its recorded one (from the evaluation that promoted it, perhaps on other tasks)."""
    if not candidates:
        return champion
    best = max(candidates, key=lambda mv: (_pass1(mv), int(mv.version)))
    if champion is None or str(best.version) == str(champion.version):
        return best
    p_best = _pass1(best)
    p_champ = (measured or {}).get(str(champion.version), _pass1(champion))
    if p_champ is None:  # a champion with no recorded score: candidates were gated against it directly
        return best
    return best if (p_best > p_champ and p_best - p_champ >= margin) else champion


def _set_champion(client: Any, name: str, version: str) -> None:
    client.set_registered_model_alias(name, CHAMPION, str(version))


class RegistryUnavailable(RuntimeError):
    """The MLflow server did not answer during a registry operation; the message says what changed."""


def _unreachable(e: BaseException) -> bool:
    """A transport failure (refused, timed out, reset) rather than an answer from the server."""
    return isinstance(e, (ConnectionError, TimeoutError)) or "failed with exception" in str(e)


def promote(cfg: RLSDConfig, *, version: int | str, evaluation: dict[str, Any]) -> dict[str, Any]:
    """Gate ``version`` on ``evaluation`` and move ``@champion`` to it if it passes.

    Returns {decision: promoted | refused | superseded | already_champion, reasons, version,
    champion_before, champion_after, evidence}. ``superseded``: the version passed its gates but a
    version with a better recorded pass@1 holds (or took) @champion. The decision, reasons and
    evaluation numbers are written to the version's tags and prepended to its description.
    An unreachable MLflow server raises :class:`RegistryUnavailable`, which says whether the alias moved.
    """
    moved: list[str] = []
    try:
        return _promote(cfg, version=version, evaluation=evaluation, moved=moved)
    except Exception as e:
        if not _unreachable(e):
            raise
        what = (f"@{CHAMPION} was moved to v{moved[-1]} before the failure but the decision was not recorded"
                if moved else "no alias was changed")
        raise RegistryUnavailable(
            f"MLflow at {cfg.tracking.uri} did not answer during promote v{version} ({str(e)[:160]}); {what}; "
            "start or reach the server (check tracking.uri, raise tracking.http_retries to wait longer) and run "
            "the promotion again") from e


def _promote(cfg: RLSDConfig, *, version: int | str, evaluation: dict[str, Any], moved: list[str]) -> dict[str, Any]:
    reg = cfg.registry
    name = reg.model_name
    version = str(int(version))
    client = _client(cfg)
    client.get_model_version(name, version)  # raises RESOURCE_DOES_NOT_EXIST naming the version
    cand_p = _num(evaluation, "candidate", "pass@1")
    champ0 = _get_alias(client, name, CHAMPION)
    before = str(champ0.version) if champ0 is not None else None
    evidence = {**evaluation_tags(evaluation), "rlsd.promotion.champion_before": str(before)}
    for k, v in evidence.items():
        client.set_model_version_tag(name, version, k, v)

    if before == version:
        decision, reasons = "already_champion", [f"ok: v{version} already holds @{CHAMPION}; nothing to do"]
        return _record(client, name, version, decision, reasons, before, before, evidence)
    passed, reasons = check_gates(reg, evaluation, has_champion=champ0 is not None, champion_version=before)
    if not passed:
        return _record(client, name, version, "refused", reasons, before, before, evidence)

    # The champion as this evaluation measured it, beside the candidate on the same tasks: its recorded pass@1
    # comes from the evaluation that promoted it, maybe on another held-out set (a newer snapshot's).
    measured = {}
    if before is not None and _baseline_is(evaluation, name, before)[0]:
        base_p = _num(evaluation, "baseline", "pass@1", required=False)
        if base_p is not None:
            measured[before] = base_p
    # Concurrency protocol: mark pending, then move the alias to the best of {champion, pending}.
    client.set_model_version_tag(name, version, TAG_PASS1, repr(cand_p))
    client.set_model_version_tag(name, version, TAG_PENDING_SINCE, repr(time.time()))
    client.set_model_version_tag(name, version, TAG_STATE, "pending")
    try:
        champion = champ0
        for _ in range(10):
            champion, candidates = _read_state(client, name)  # re-read right before moving the alias
            target = _choose(champion, candidates, reg.margin, measured)
            if target is None or (champion is not None and str(target.version) == str(champion.version)):
                break
            _set_champion(client, name, target.version)
            moved.append(str(target.version))
        after = str(champion.version) if champion is not None else None
    except BaseException:
        with contextlib.suppress(Exception):  # a server that is gone: the pending mark expires after PENDING_TTL_S
            client.set_model_version_tag(name, version, TAG_STATE, "failed")
        raise
    if after == version:
        decision = "promoted"
        reasons.append(f"ok: @{CHAMPION} moved to v{version}" + (f" from v{before}" if before else " (first champion)"))
    else:
        decision = "superseded"
        holder = client.get_model_version(name, after) if after else None
        hp = _pass1(holder) if holder is not None else None
        reasons.append(f"FAIL: @{CHAMPION} is on v{after} (recorded pass@1 "
                       f"{'unknown' if hp is None else f'{hp:.4f}'}), not beaten by this version's {cand_p:.4f} "
                       f"by registry.margin {reg.margin:.4f} (a concurrent promotion)")
    return _record(client, name, version, decision, reasons, before, after, evidence)


def _record(client: Any, name: str, version: str, decision: str, reasons: list[str], before: str | None,
            after: str | None, evidence: dict[str, str]) -> dict[str, Any]:
    when = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    client.set_model_version_tag(name, version, TAG_DECISION, decision)
    client.set_model_version_tag(name, version, TAG_REASONS, _tag_value("; ".join(reasons)))
    client.set_model_version_tag(name, version, "rlsd.promotion.decided_at", when)
    client.set_model_version_tag(name, version, "rlsd.promotion.champion_after", str(after))
    client.set_model_version_tag(name, version, TAG_DECIDED_TS, repr(time.time()))
    client.set_model_version_tag(name, version, TAG_STATE, decision)
    block = "\n".join([f"[{when}] promotion to @{CHAMPION}: {decision.upper()} (champion before: "
                       f"{'v' + before if before else 'none'}, after: {'v' + after if after else 'none'})",
                       *(f"  - {r}" for r in reasons)])
    current = client.get_model_version(name, version).description or ""
    text = (block + "\n\n" + current).strip()
    client.update_model_version(name, version, description=text[:MAX_DESCRIPTION_CHARS])
    return {"decision": decision, "reasons": reasons, "name": name, "version": int(version),
            "champion_before": int(before) if before else None, "champion_after": int(after) if after else None,
            "evidence": evidence}


# ----------------------------------------------------------------------------------------------
# Load
# ----------------------------------------------------------------------------------------------


def _champion_uri(cfg: RLSDConfig, alias: str) -> str:
    client = _client(cfg)
    if _get_alias(client, cfg.registry.model_name, alias) is None:
        raise LookupError(f"registered model {cfg.registry.model_name!r} has no @{alias} at {cfg.tracking.uri}: "
                          "register a model (`rlsd register`) and promote it (`rlsd promote`) first")
    return f"models:/{cfg.registry.model_name}@{alias}"


def current_champion(cfg: RLSDConfig) -> dict[str, Any] | None:
    """{kind: "champion", name, version, uri ("models:/<name>/<version>")} of the version @champion points
    at now, or None when there is none (no registered model, or no alias)."""
    from mlflow.exceptions import MlflowException

    client = _client(cfg)
    name = cfg.registry.model_name
    try:
        mv = _get_alias(client, name, CHAMPION)
    except MlflowException as e:  # the registered model itself does not exist yet
        if getattr(e, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    if mv is None:
        return None
    return {"kind": "champion", "name": name, "version": str(mv.version), "uri": f"models:/{name}/{mv.version}"}


def load_champion(cfg: RLSDConfig, *, alias: str = CHAMPION) -> tuple[Any, Any]:
    """(model, tokenizer) of ``models:/<registry.model_name>@champion`` (left padding, pad token set)."""
    import mlflow

    parts = mlflow.transformers.load_model(_champion_uri(cfg, alias), return_type="components")
    model, tok = parts["model"], parts["tokenizer"]
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    return model, tok


def load_champion_pyfunc(cfg: RLSDConfig, *, alias: str = CHAMPION) -> Any:
    """``models:/<name>@champion`` as an MLflow pyfunc: ``predict(["prompt"], params={"max_new_tokens": 16})``."""
    import mlflow

    return mlflow.pyfunc.load_model(_champion_uri(cfg, alias))
