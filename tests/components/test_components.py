"""Each component's Python function, called directly with real artifact objects on tmp_path.

The ONE rlsd function a component delegates to is replaced by a recorder; the tests assert what
the component passed to it (the promoted parameters applied to the validated config, the artifact
paths) and what it wrote back (artifact files, metadata, metrics, return values, connection log).
While a delegated module is still being written elsewhere, the recorder is installed as a stub
module; once it exists the real module's function is patched instead.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import types
from pathlib import Path

import pytest
from components.build_tasks import build_tasks
from components.evaluate import evaluate
from components.ingest import ingest
from components.register_and_promote import register_and_promote
from components.resolve_models import resolve_models
from components.train import train
from components.validate import validate
from kfp.dsl import HTML, Artifact, Dataset, Markdown, Metrics, Model

from rlsd.cluster import checkpoint_key

CONFIG = "store: {backend: s3, endpoint: 'minio.rlsd.svc:9000', bucket: rlsd}\ntrain: {steps: 7}\n"


@pytest.fixture(autouse=True)
def _operator_allow_list(monkeypatch):
    """The platform's egress allow-list, as the operator sets it in the pod spec: run parameters (the store
    endpoints below) must lie inside it; they no longer widen it (rlsd.perimeter)."""
    monkeypatch.setenv("RLSD_EGRESS_ALLOW", "loopback minio.rlsd.svc:9000 minio.prod:9000")


class Recorder:
    def __init__(self, result):
        self.result, self.calls = result, []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.result(*args, **kwargs) if callable(self.result) else self.result


def patch_rlsd(monkeypatch, module: str, name: str, fake) -> None:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError:
        parts = module.split(".")
        for i in range(2, len(parts) + 1):
            sub = ".".join(parts[:i])
            if sub not in sys.modules:
                try:
                    importlib.import_module(sub)
                except ModuleNotFoundError:
                    monkeypatch.setitem(sys.modules, sub, types.ModuleType(sub))
        mod = sys.modules[module]
    monkeypatch.setattr(mod, name, fake, raising=False)


def art(cls, tmp_path: Path, name: str, metadata: dict | None = None):
    a = cls(name=name, uri=str(tmp_path / name), metadata=dict(metadata or {}))
    assert a.path == str(tmp_path / name)
    return a


def connection_log(a: Artifact) -> dict:
    return json.loads(Path(a.path).read_text())


def test_ingest(tmp_path, monkeypatch):
    fake = Recorder({"snapshot_id": "snap-20260101-0001", "new_verified_tickets": 5, "untrained_verified_tickets": 12,
                     "manuals": 3})
    patch_rlsd(monkeypatch, "rlsd.data.ingest", "ingest", fake)
    snap, conn = art(Dataset, tmp_path, "snapshot"), art(Artifact, tmp_path, "connections")
    sid = tmp_path / "snapshot_id"
    out = ingest.python_func(config_yaml=CONFIG, manuals=["data/sample/manuals"], tickets=["t/a.json", "t/b.json"],
                             store_endpoint="minio.prod:9000", store_bucket="", snapshot=snap, connections=conn,
                             snapshot_id=str(sid))
    (cfg,), kwargs = fake.calls[0]
    assert kwargs == {"manuals": ["data/sample/manuals"], "tickets": ["t/a.json", "t/b.json"]}
    assert (cfg.store.endpoint, cfg.store.bucket) == ("minio.prod:9000", "rlsd")  # "" keeps the recipe's bucket
    assert out == 12 and snap.metadata["snapshot_id"] == "snap-20260101-0001"  # the gate: not yet trained on
    assert sid.read_text() == "snap-20260101-0001"  # the string parameter later steps are cache-keyed on
    assert json.loads(Path(snap.path).read_text())["manuals"] == 3
    log = connection_log(conn)
    # the operator's list, not the run's endpoint
    assert log["mode"] == "strict" and log["refused"] == 0 and log["allow"] == ["loopback", "minio.rlsd.svc:9000",
                                                                               "minio.prod:9000"]


def test_validate_logs_numeric_results(tmp_path, monkeypatch):
    def run(cfg, *, snapshot, out_dir):
        Path(out_dir, "report.md").write_text("# ok")
        Path(out_dir, "report.html").write_text("<p>ok</p>")
        return {"max_failure_rate": 0.125, "quarantined": 3, "passed": True, "snapshot_id": "snap-1",
                "valid_tasks": {"train": 30, "eval": 8}, "tables": [{"rows": 40}]}

    fake = Recorder(run)
    patch_rlsd(monkeypatch, "rlsd.data.validate", "validate", fake)
    rep, m, conn = art(Artifact, tmp_path, "report"), art(Metrics, tmp_path, "metrics"), art(Artifact, tmp_path, "c")
    html, md = art(HTML, tmp_path, "v.html"), art(Markdown, tmp_path, "v.md")
    validate.python_func(config_yaml=CONFIG, snapshot_id="snap-42", snapshot="latest", store_endpoint="", store_bucket="b2",
                         report=rep, metrics=m, report_html=html, report_md=md, connections=conn)
    (cfg,), kwargs = fake.calls[0]
    assert kwargs == {"snapshot": "snap-42", "out_dir": rep.path} and cfg.store.bucket == "b2"  # "latest" resolved
    # numbers become metrics (nested ones by dotted name); booleans, strings and lists do not
    assert m.metadata == {"max_failure_rate": 0.125, "quarantined": 3.0, "valid_tasks.train": 30.0,
                          "valid_tasks.eval": 8.0}
    assert Path(html.path).read_text() == "<p>ok</p>" and Path(md.path).read_text() == "# ok"


def test_validate_failure_fails_the_step(tmp_path, monkeypatch):
    def run(cfg, *, snapshot, out_dir):
        raise ValueError("validation failure rate 0.4 > threshold 0.1")

    patch_rlsd(monkeypatch, "rlsd.data.validate", "validate", run)
    with pytest.raises(ValueError, match="threshold"):
        validate.python_func(config_yaml=CONFIG, snapshot_id="snap-2", snapshot="snap-1", store_endpoint="", store_bucket="",
                             report=art(Artifact, tmp_path, "r"), metrics=art(Metrics, tmp_path, "m"),
                             report_html=art(HTML, tmp_path, "h"), report_md=art(Markdown, tmp_path, "md"),
                             connections=art(Artifact, tmp_path, "c"))


def test_build_tasks_records_relative_file_names(tmp_path, monkeypatch):
    def run(cfg, *, snapshot, out_dir):
        os.makedirs(Path(out_dir, "tasks"))
        return {"train_path": str(Path(out_dir, "tasks", "train.jsonl")), "eval_path": str(Path(out_dir, "eval.jsonl")),
                "counts": {"train": 30, "eval": 8}}

    fake = Recorder(run)
    patch_rlsd(monkeypatch, "rlsd.data.build", "build_tasks", fake)
    tasks = art(Dataset, tmp_path, "tasks")
    build_tasks.python_func(config_yaml=CONFIG, snapshot_id="snap-42", snapshot="snap-7", store_endpoint="",
                            store_bucket="",
                            tasks=tasks, connections=art(Artifact, tmp_path, "c"))
    assert fake.calls[0][1] == {"snapshot": "snap-7", "out_dir": tasks.path}  # an explicit id wins over the ingested
    assert tasks.metadata == {"train_file": "tasks/train.jsonl", "eval_file": "eval.jsonl",
                              "counts": {"train": 30, "eval": 8}}
    tasks2 = art(Dataset, tmp_path, "tasks2")
    build_tasks.python_func(config_yaml=CONFIG, snapshot_id="snap-42", snapshot="latest", store_endpoint="",
                            store_bucket="", tasks=tasks2, connections=art(Artifact, tmp_path, "c"))
    assert fake.calls[1][1] == {"snapshot": "snap-42", "out_dir": tasks2.path}  # "latest" = the id ingest returned


def test_no_snapshot_at_all_fails_validate_and_build_tasks_with_a_clear_message(tmp_path):
    """An empty inbox on a store that holds no snapshot yet: ingest returns "" and the next steps say so."""
    with pytest.raises(ValueError, match="no snapshot to validate"):
        validate.python_func(config_yaml=CONFIG, snapshot_id="", snapshot="latest", store_endpoint="", store_bucket="",
                             report=art(Artifact, tmp_path, "r"), metrics=art(Metrics, tmp_path, "m"),
                             report_html=art(HTML, tmp_path, "h"), report_md=art(Markdown, tmp_path, "md"),
                             connections=art(Artifact, tmp_path, "c"))
    with pytest.raises(ValueError, match="no snapshot to build tasks from"):
        build_tasks.python_func(config_yaml=CONFIG, snapshot_id="", snapshot="latest", store_endpoint="",
                                store_bucket="", tasks=art(Dataset, tmp_path, "t"), connections=art(Artifact, tmp_path, "c"))


BASE = {"kind": "store", "name": "smollm2", "version": "ab12", "uri": "store://models/smollm2@ab12",
        "sha256_verified": True}


def test_train_applies_promoted_parameters(tmp_path, monkeypatch):
    def run(cfg, *, model_dir, run_key):
        return {"final_model": model_dir, "steps": cfg.train.steps, "run_id": "r-42", "base_model": BASE,
                "store_ref": "store://models/rlsd-model@cd34"}

    fake = Recorder(run)
    patch_rlsd(monkeypatch, "rlsd.cluster", "train_step", fake)
    tasks = art(Dataset, tmp_path, "tasks", {"train_file": "tasks/train.jsonl", "eval_file": "eval.jsonl"})
    model, m = art(Model, tmp_path, "model"), art(Metrics, tmp_path, "metrics")
    train.python_func(config_yaml=CONFIG, tasks=tasks, base_model="/models/smollm2", algorithm="grpo", steps=3,
                      nodes=2, gpus_per_node=8, model=model, metrics=m, connections=art(Artifact, tmp_path, "c"))
    (cfg,), kwargs = fake.calls[0]
    # checkpoints are keyed on the step's own inputs (as the KFP cache is), not on a run id
    key = checkpoint_key(config_yaml=CONFIG, tasks=tasks.uri, base_model="/models/smollm2", algorithm="grpo",
                         steps=3, nodes=2, gpus_per_node=8)
    assert kwargs == {"model_dir": model.path, "run_key": key} and key.startswith("train-")
    assert (cfg.model.path, cfg.algorithm.name, cfg.train.steps) == ("/models/smollm2", "grpo", 3)
    assert cfg.model.continue_from == "base"  # the pinned base is used as it is, never re-resolved to @champion
    assert (cfg.platform.nodes, cfg.platform.gpus_per_node) == (2, 8)
    assert cfg.data.train_tasks == os.path.join(tasks.path, "tasks/train.jsonl")
    assert cfg.data.eval_tasks == os.path.join(tasks.path, "eval.jsonl")
    # the training run id travels with the model: register tags the version with it (lineage, retries)
    # the artifact folder IS the model (final weights only); the base it started from and the store copy
    assert model.metadata == {"final_model": ".", "algorithm": "grpo", "mlflow_run_id": "r-42", "base_model": BASE,
                              "store_ref": "store://models/rlsd-model@cd34"}
    assert m.metadata == {"steps": 3}


def test_train_zero_steps_and_empty_model_keep_the_recipe(tmp_path, monkeypatch):
    fake = Recorder(lambda cfg, *, model_dir, run_key: {"final_model": model_dir, "steps": 7})
    patch_rlsd(monkeypatch, "rlsd.cluster", "train_step", fake)
    config = CONFIG + "model: {continue_from: champion}\n"
    train.python_func(config_yaml=config, tasks=art(Dataset, tmp_path, "tasks"), base_model="", algorithm="rlsd",
                      steps=0, nodes=1, gpus_per_node=0, model=art(Model, tmp_path, "model"),
                      metrics=art(Metrics, tmp_path, "m"), connections=art(Artifact, tmp_path, "c"))
    cfg = fake.calls[0][0][0]
    assert cfg.train.steps == 7 and cfg.model.path == "artifacts/tiny-model" and cfg.model.continue_from == "champion"
    assert fake.calls[0][1]["run_key"] == checkpoint_key(config_yaml=config, tasks=str(tmp_path / "tasks"),
                                                         base_model="", algorithm="rlsd", steps=0, nodes=1,
                                                         gpus_per_node=0)
    assert cfg.data.train_tasks == str(tmp_path / "tasks" / "train.jsonl")  # default file name without metadata


def test_resolve_models_returns_the_pinned_references(tmp_path, monkeypatch):
    fake = Recorder({"base_model": "models:/rlsd-model/2", "champion": "models:/rlsd-model/2"})
    patch_rlsd(monkeypatch, "rlsd.model_refs", "resolve_models", fake)
    c = art(Artifact, tmp_path, "c")
    out = resolve_models.python_func(config_yaml=CONFIG, base_model="store://models/smollm2", connections=c)
    assert (out.base_model, out.champion) == ("models:/rlsd-model/2", "models:/rlsd-model/2")
    assert fake.calls[0][0][0].model.path == "store://models/smollm2"  # the parameter overrides the recipe's
    assert connection_log(c)["mode"]  # it ran inside the perimeter guard like every step
    resolve_models.python_func(config_yaml=CONFIG, base_model="", connections=art(Artifact, tmp_path, "c2"))
    assert fake.calls[1][0][0].model.path == "artifacts/tiny-model"  # "" keeps the recipe's


def test_evaluate_copies_reports_and_logs_metrics(tmp_path, monkeypatch):
    def run(cfg, *, candidate, base_model, tasks_path, out_dir, champion):
        for name, text in [("evaluation.json", "{}"), ("report.md", "# md"), ("report.html", "<h1>html</h1>")]:
            Path(out_dir, name).write_text(text)
        return {"candidate": {"pass@1": 0.5}, "baseline": {"pass@1": 0.25}, "comparison": None, "per_task": [1, 0]}

    fake = Recorder(run)
    patch_rlsd(monkeypatch, "rlsd.evaluate", "evaluate_against_champion", fake)  # champion, else base_model
    model = art(Model, tmp_path, "model", {"final_model": "final"})
    tasks = art(Dataset, tmp_path, "tasks", {"eval_file": "eval.jsonl"})
    ev, m = art(Artifact, tmp_path, "evaluation"), art(Metrics, tmp_path, "metrics")
    html, md = art(HTML, tmp_path, "report.html"), art(Markdown, tmp_path, "report.md")
    evaluate.python_func(config_yaml=CONFIG, model=model, tasks=tasks, base_model="/models/base", evaluation=ev,
                         metrics=m, report_html=html, report_md=md, connections=art(Artifact, tmp_path, "c"),
                         champion="models:/rlsd-model/3")
    (cfg,), kwargs = fake.calls[0]
    assert cfg.model.path == "/models/base"
    # compares with exactly the champion resolve-models pinned, not whatever is @champion when it runs
    assert kwargs == {"candidate": os.path.join(model.path, "final"), "base_model": "/models/base",
                      "tasks_path": os.path.join(tasks.path, "eval.jsonl"), "out_dir": ev.path,
                      "champion": "models:/rlsd-model/3"}
    # "" = there was no champion (the base); left out (outside the pipeline) = look @champion up now
    for given, passed in [("", ""), (None, None)]:
        extra = {} if given is None else {"champion": given}
        evaluate.python_func(config_yaml=CONFIG, model=model, tasks=tasks, base_model="/models/base", evaluation=ev,
                             metrics=m, report_html=html, report_md=md, connections=art(Artifact, tmp_path, "c"),
                             **extra)
        assert fake.calls[-1][1]["champion"] == passed
    assert Path(html.path).read_text() == "<h1>html</h1>" and Path(md.path).read_text() == "# md"
    assert m.metadata == {"candidate.pass@1": 0.5, "baseline.pass@1": 0.25}


def test_register_and_promote(tmp_path, monkeypatch):
    reg = Recorder({"name": "rlsd-model", "version": 4, "uri": "models:/rlsd-model/4"})
    pro = Recorder({"decision": "promoted", "reasons": ["pass@1 +6.2 > margin 2.0", "leakage 0.0 <= 0.05"]})
    patch_rlsd(monkeypatch, "rlsd.registry", "register_model", reg)
    patch_rlsd(monkeypatch, "rlsd.registry", "promote", pro)
    ev = art(Artifact, tmp_path, "evaluation")
    os.makedirs(ev.path)
    Path(ev.path, "evaluation.json").write_text(json.dumps({"delta": 6.2}))
    model = art(Model, tmp_path, "model", {"final_model": "final"})
    dec = art(Markdown, tmp_path, "decision.md")
    model.metadata["mlflow_run_id"] = "run-abc"
    out = register_and_promote.python_func(config_yaml=CONFIG, model=model, evaluation=ev, promotion_margin=2.0,
                                           decision=dec, connections=art(Artifact, tmp_path, "c"), kfp_run_id="kfp-1")
    (cfg, model_dir), kwargs = reg.calls[0]
    assert model_dir == os.path.join(model.path, "final")
    assert kwargs == {"evaluation": {"delta": 6.2}, "training_run_id": "run-abc", "training_output_dir": model.path,
                      "kfp_run": "kfp-1", "source": model.uri or model.path}
    assert cfg.registry.margin == 2.0
    assert pro.calls[0][1] == {"version": 4, "evaluation": {"delta": 6.2}}
    assert tuple(out) == ("rlsd-model", "4", "models:/rlsd-model/4", "promoted")
    # a model the train step pushed to the store is registered with that store folder as its source, so a run
    # that continues from this version fetches the hash-checked store copy (rlsd.model_refs)
    pushed = art(Model, tmp_path, "model2", {"final_model": ".", "store_ref": "store://models/rlsd-model@cd34"})
    register_and_promote.python_func(config_yaml=CONFIG, model=pushed, evaluation=ev, promotion_margin=2.0,
                                     decision=dec, connections=art(Artifact, tmp_path, "c2"), kfp_run_id="kfp-1")
    (_, model_dir), kwargs = reg.calls[1]
    assert model_dir == os.path.join(pushed.path, ".") and kwargs["source"] == "store://models/rlsd-model@cd34"
    assert Path(dec.path).read_text().splitlines()[0] == "# rlsd-model v4: promoted"


def test_component_refuses_a_planted_outbound_connection(tmp_path, monkeypatch):
    import socket

    from rlsd.perimeter import PerimeterError

    def leaky(cfg, *, manuals, tickets):
        try:  # 192.0.2.1 (TEST-NET-1): refused in-process before any packet is sent
            socket.create_connection(("192.0.2.1", 443), timeout=0.2)
        except OSError:
            pass
        return {"snapshot_id": "s", "new_verified_tickets": 0, "untrained_verified_tickets": 0}

    patch_rlsd(monkeypatch, "rlsd.data.ingest", "ingest", leaky)
    conn = art(Artifact, tmp_path, "connections")
    with pytest.raises(PerimeterError, match=r"192\.0\.2\.1:443"):
        ingest.python_func(config_yaml=CONFIG, manuals=[], tickets=[], store_endpoint="", store_bucket="",
                           snapshot=art(Dataset, tmp_path, "s"), connections=conn, snapshot_id=str(tmp_path / "sid"))
    assert connection_log(conn)["refused"] == 1
