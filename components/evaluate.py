"""Evaluate the trained model against the champion resolve-models pinned (else the base model) with the training
verifiers (wraps rlsd.evaluate.evaluate_against_champion)."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components._image import RLSD_IMAGE


@dsl.component(base_image=RLSD_IMAGE, install_kfp_package=False)
def evaluate(config_yaml: str, model: Input[Model], tasks: Input[Dataset], base_model: str,
             evaluation: Output[Artifact], metrics: Output[Metrics], report_html: Output[HTML],
             report_md: Output[Markdown], connections: Output[Artifact], champion: str = "-"):
    """Args: base_model: the baseline when there is no champion ("" = the recipe's model.path): a local path,
    store://models/<name>[@id] or models:/<name>@alias, fetched hash-checked into a temporary folder.
    champion: the champion to compare with, pinned by resolve-models (models:/<name>/<version>; "" = none, use
    base_model); "-" (the default, outside the pipeline) looks up the current @champion.
    evaluation: folder with evaluation.json (its "baseline" names the model compared with)."""
    import os
    import shutil

    from rlsd.evaluate import evaluate_against_champion
    from rlsd.kfp_outputs import numeric_metrics
    from rlsd.perimeter import step

    os.makedirs(evaluation.path, exist_ok=True)
    with step(config_yaml, {"model.path": base_model}, log_path=connections.path) as cfg:
        result = evaluate_against_champion(
            cfg, candidate=os.path.join(model.path, model.metadata.get("final_model", "final")),
            base_model=cfg.model.path, tasks_path=os.path.join(tasks.path, tasks.metadata.get("eval_file", "eval.jsonl")),
            out_dir=evaluation.path, champion=None if champion == "-" else champion)
    shutil.copyfile(os.path.join(evaluation.path, "report.html"), report_html.path)
    shutil.copyfile(os.path.join(evaluation.path, "report.md"), report_md.path)
    for key, value in numeric_metrics(result).items():
        metrics.log_metric(key, value)
