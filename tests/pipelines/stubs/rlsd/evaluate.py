import json
import os

from rlsd._record import record


def run_evaluation(cfg, *, candidate, baseline=None, tasks_path=None, out_dir):
    record("evaluate", candidate=candidate, candidate_exists=os.path.isdir(candidate), baseline=baseline,
           tasks_path=tasks_path, out_dir=out_dir)
    result = {"candidate_pass_at_1": 0.5, "baseline_pass_at_1": 0.25}
    for name, text in [("evaluation.json", json.dumps(result)), ("report.md", "# base vs trained\n"),
                       ("report.html", "<h1>base vs trained</h1>")]:
        with open(os.path.join(out_dir, name), "w") as f:
            f.write(text)
    return result


def evaluate_against_champion(cfg, *, candidate, base_model=None, tasks_path=None, out_dir, champion=None):
    record("evaluate_champion", champion=champion)
    return run_evaluation(cfg, candidate=candidate, baseline=base_model or cfg.model.path, tasks_path=tasks_path,
                          out_dir=out_dir)
