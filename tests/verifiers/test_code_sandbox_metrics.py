"""The metrics say which isolation mode ran the code verdicts (issue 17): evaluation.json's summary counts the
verdicts of this process per mode, and the count moves by exactly the verdicts a summary made."""

from __future__ import annotations

from tests.verifiers.test_verify_code import fence, requires_bwrap, task

from rlsd.evaluate import summarise
from rlsd.verifiers import sandbox


@requires_bwrap
def test_evaluation_summary_counts_code_verdicts_per_isolation_mode(monkeypatch):
    monkeypatch.setenv("RLSD_CODE_SANDBOX", "bwrap")
    before = sandbox.sandbox_stats()
    good = fence("def add(a, b):\n    return a + b")
    out = summarise([task()], [good], [good, fence("def add(a, b):\n    return a - b")], k=1, n=2)
    after = out["code_sandbox"]
    assert after["code_sandbox_runs_bwrap"] - before["code_sandbox_runs_bwrap"] == 3  # greedy + 2 samples
    assert after["code_sandbox_runs_process"] == before["code_sandbox_runs_process"]
    assert out["per_task"][0]["c"] == 1 and out["per_task"][0]["greedy_pass"] == 1.0
