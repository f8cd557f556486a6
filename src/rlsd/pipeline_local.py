"""Run the Kubeflow pipeline on this machine with kfp.local: the same compiled graph a cluster runs.

``run_local(cfg_path, overrides, workdir)`` loads the committed compiled pipeline
(pipelines/rlsd_pipeline.yaml, kept current by tests/pipelines), and executes it with
``kfp.local.SubprocessRunner(use_venv=False)``: every step is a subprocess of this Python
environment (so ``rlsd`` must be importable there: installed, or on PYTHONPATH), running the same
component code, parameters and ``dsl.If`` gate. The recipe (embedded defaults unless a file is
given, plus ``--set`` overrides) is passed, resolved, as the ``config_yaml`` parameter, so the
store, MLflow and model are those of the recipe: a local folder store and a local MLflow store by
default, or a real S3 server / MLflow server when the recipe names their endpoints.

What kfp.local does not do, said plainly: Kubernetes settings (secrets, GPUs, node selectors,
tolerations, volumes) and caching are ignored locally; the components' images are not used (this
environment is); steps run one after another. One local departure is ours: kfp.local 2.17 *does*
honour the retry policies (30 s, 60 s, 120 s back-off on the I/O steps), which only delays the
report of a local, deterministic failure by minutes, so ``run_local`` strips them from its copy
of the compiled graph unless ``retries=True``.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

from rlsd.config import load_config

PIPELINE_NAME = "rlsd-pipeline"
PROMOTED = ("promoted", "already_champion")  # rlsd.registry.promote decisions that leave it @champion


def find_pipeline() -> Path:
    """The compiled pipeline: $RLSD_PIPELINE, the source checkout's pipelines/, or ./pipelines/."""
    candidates = [Path(os.environ["RLSD_PIPELINE"])] if os.environ.get("RLSD_PIPELINE") else []
    candidates += [Path(__file__).resolve().parents[2] / "pipelines" / "rlsd_pipeline.yaml",
                   Path.cwd() / "pipelines" / "rlsd_pipeline.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"compiled pipeline not found in {', '.join(map(str, candidates))}; "
                            "run `python -m pipelines.rlsd_pipeline` in the checkout or set RLSD_PIPELINE")


def _sample(kind: str) -> list[str]:
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (root / "data" / "sample" / kind).exists():
            return [str(root / "data" / "sample" / kind)]
    return []


def _outputs(task_dir: Path) -> dict[str, Any]:
    f = task_dir / "executor_output.json"
    return json.loads(f.read_text()).get("parameterValues", {}) if f.is_file() else {}


def collect(run_dir: Path) -> dict[str, Any]:
    """Where a finished local run left its results (paths absolute; missing steps are None)."""
    def path(task: str, name: str) -> str | None:
        p = run_dir / task / name
        return str(p) if p.exists() else None

    logs = sorted(run_dir.glob("*/connections"))
    conn = [json.loads(p.read_text()) for p in logs]
    ingest = _outputs(run_dir / "ingest")
    reg = _outputs(run_dir / "register-and-promote")
    out: dict[str, Any] = {
        "run_dir": str(run_dir),
        "untrained_verified_tickets": ingest.get("Output"),  # the gate: verified tickets not yet trained on
        "validation_report": path("validate", "report_html"),
        "trained": (run_dir / "train").is_dir(),
        "model": path("train", "model"),
        "report_html": path("evaluate", "report_html"),
        "report_md": path("evaluate", "report_md"),
        "evaluation": path("evaluate", "evaluation"),
        "decision": path("register-and-promote", "decision"),
        "registered": None,
        "connection_logs": [str(p) for p in logs],
        "connections": {"attempts": sum(c["attempts"] for c in conn),
                        "outside_allow_list": sum(c["outside_allow_list"] for c in conn),
                        "refused": sum(c["refused"] for c in conn),
                        "modes": sorted({c["mode"] for c in conn})},
    }
    if reg:
        alias = "champion" if str(reg.get("decision", "")).lower() in PROMOTED else "challenger"
        out["registered"] = {"name": reg["name"], "version": reg["version"], "uri": reg["uri"],
                             "decision": reg["decision"], "alias": alias,
                             "alias_uri": f"models:/{reg['name']}@{alias}"}
    return out


def without_retries(src: Path, dst: Path) -> Path:
    """A copy of the compiled pipeline with every task's retryPolicy removed (local runs fail fast)."""
    import yaml

    docs = list(yaml.safe_load_all(src.read_text(encoding="utf-8")))
    dags = [docs[0]["root"]] + [c for c in docs[0]["components"].values() if "dag" in c]
    for dag in dags:
        for task in dag["dag"]["tasks"].values():
            task.pop("retryPolicy", None)
    dst.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
    return dst


def run_local(cfg_path: str | None, overrides: list[str] | tuple[str, ...] = (), workdir: str = "runs/pipeline",
              *, pipeline_yaml: str | Path | None = None, arguments: dict[str, Any] | None = None,
              quiet: bool = False, retries: bool = False, inbox: bool = False) -> dict[str, Any]:
    """Run the compiled pipeline locally on the recipe; return (and print) where its results are.

    Inputs: the sample corpus's local folders (data/sample, as ``make demo`` runs it), or with ``inbox=True``
    the pipeline's defaults (no manuals / tickets: what is new in the recipe's configured inbox, store.inbox),
    as a scheduled run on a cluster reads them. ``arguments`` override pipeline parameters
    (e.g. ``{"min_new_tickets": 0}``).
    """
    from kfp import components, local

    cfg = load_config(cfg_path, list(overrides))
    from rlsd.model_refs import is_reference

    model = Path(cfg.model.path)
    # store:// and models:/ references are resolved (and checked) by the resolve-models and train steps
    if not is_reference(cfg.model.path) and not model.exists():
        raise FileNotFoundError(f"model.path {str(model)!r} does not exist: build the demo model first "
                                f"(`rlsd make-tiny-model` or `rlsd import-smollm2`) or point model.path at a local model")
    args: dict[str, Any] = {
        "config_yaml": cfg.to_yaml(), "manuals": [] if inbox else _sample("manuals"),
        "tickets": [] if inbox else _sample("tickets"),
        "algorithm": cfg.algorithm.name, "nodes": 1, "gpus_per_node": 0,
        "promotion_margin": cfg.registry.margin, "min_new_tickets": cfg.platform.min_new_tickets,
    }
    args.update(arguments or {})
    root = Path(workdir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    compiled = Path(pipeline_yaml or find_pipeline())
    if not retries:
        compiled = without_retries(compiled, root / "pipeline-local.yaml")
    pipeline = components.load_component_from_file(str(compiled))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    before = set(root.iterdir()) | {compiled}
    t0 = time.perf_counter()
    with warnings.catch_warnings():  # kfp.local warns that our images' names lack "python"; they are not used locally
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")  # said above
        pipeline(**args)
    runs = sorted((p for p in set(root.iterdir()) - before if p.is_dir()), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise RuntimeError(f"kfp.local finished but left no run folder under {root}")
    result = collect(runs[-1]) | {"seconds": round(time.perf_counter() - t0, 2)}
    if not quiet:
        print(summary_text(result))
    return result


def summary_text(r: dict[str, Any]) -> str:
    c = r["connections"]
    lines = [f"pipeline run: {r['run_dir']} ({r['seconds']} s)",
             f"verified tickets not yet trained on: {r['untrained_verified_tickets']}", f"validation report: {r['validation_report']}"]
    if not r["trained"]:
        lines.append("training skipped: fewer verified tickets not yet trained on than platform.min_new_tickets")
    else:
        lines += [f"model: {r['model']}", f"report: {r['report_html']}", f"report (markdown): {r['report_md']}"]
    if r["registered"]:
        g = r["registered"]
        lines.append(f"registered: {g['uri']} ({g['decision']}); alias: {g['alias_uri']}")
    lines.append(f"network: {c['attempts']} connection attempts, {c['outside_allow_list']} outside the allow-list, "
                 f"{c['refused']} refused (mode {', '.join(c['modes']) or '-'})")
    return "\n".join(lines)
