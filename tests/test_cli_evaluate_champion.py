"""`rlsd evaluate --against-champion`: with no champion registered the baseline is model.path, recorded as such in
evaluation.json (what the promotion gate reads); the flag and --baseline exclude each other; a leakage rate
measured on nothing prints as not measured instead of crashing."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import warm_tiny_model, write_addition_tasks


def test_against_champion_without_a_champion_compares_with_the_base(tmp_path):
    model = warm_tiny_model()
    _, ev = write_addition_tasks(tmp_path, n_train=4, n_eval=4)
    base = [sys.executable, "-m", "rlsd", "evaluate", "--candidate", str(model), "--tasks", str(ev),
            "--set", f"model.path={model}", "--set", f"tracking.uri=sqlite:///{tmp_path / 'ml.db'}",
            "--set", f"tracking.artifact_location={tmp_path / 'mlartifacts'}", "--set", "eval.k=1",
            "--set", "eval.max_new_tokens=8", "--set", "eval.bootstrap_samples=200", "--output", str(tmp_path / "out")]
    r = subprocess.run(base + ["--against-champion"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert res["baseline"]["kind"] == "base" and res["baseline"]["uri"] == str(model)
    assert res["comparison"]["diff_pass1"] == 0.0  # the same weights on both sides
    assert "leakage" in r.stdout
    both = subprocess.run(base + ["--against-champion", "--baseline", str(model)], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert both.returncode == 2 and "exclude each other" in both.stderr
