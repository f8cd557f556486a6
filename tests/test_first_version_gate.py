"""The promotion gate for the first version (no @champion yet), hand-built evaluations: a candidate measurably
worse than the base model it was trained from is never promoted, and ``registry.first_version_needs_gain`` holds
the first version to the margin, interval and paired-task gates against the base model."""

from __future__ import annotations

import dataclasses

import pytest

from rlsd.config import RegistryConfig
from rlsd.registry import check_gates


def evaluation(diff: float, lo: float, hi: float, n_tasks: int = 40, leak_rate: float = 0.0) -> dict:
    return {"leakage": {"rate": leak_rate, "n_checked": 3 * n_tasks, "n_leaks": round(leak_rate * 3 * n_tasks)},
            "baseline": {"kind": "base", "name": "base", "version": None, "uri": "store://models/base@ab12"},
            "comparison": {"diff_pass1": diff, "ci_low": lo, "ci_high": hi, "n_tasks": n_tasks}}


REG = RegistryConfig()
NEEDS_GAIN = dataclasses.replace(REG, first_version_needs_gain=True, margin=0.05)


@pytest.mark.parametrize("diff,lo,hi,promoted", [
    (-0.200, -0.300, -0.100, False),  # worse than the base beyond doubt
    (-0.050, -0.120, -0.001, False),  # the interval's upper end just below zero
    (-0.050, -0.120, 0.000, True),    # upper end at zero: not measurably worse
    (0.000, 0.000, 0.000, True),      # the demo's outcome: identical scores
    (0.100, 0.020, 0.200, True),
])
def test_first_version_is_refused_only_when_measurably_worse_than_the_base(diff, lo, hi, promoted):
    ok, reasons = check_gates(REG, evaluation(diff, lo, hi), has_champion=False)
    assert ok is promoted, reasons
    assert any("no @champion exists yet" in r for r in reasons)
    assert any("measurably worse" in r for r in reasons) is (not promoted)
    if not promoted:
        assert f"{diff:+.4f}" in reasons[-1] and f"{hi:+.4f}" in reasons[-1]


def test_first_version_without_a_comparison_keeps_the_leakage_rule():
    ev = evaluation(0, 0, 0)
    ev["comparison"] = None
    assert check_gates(REG, ev, has_champion=False)[0] is True
    assert check_gates(REG, {**ev, "leakage": {"rate": 0.2, "n_checked": 10, "n_leaks": 2}}, has_champion=False)[0] is False


@pytest.mark.parametrize("diff,lo,hi,n_tasks,promoted,failing", [
    (0.100, 0.020, 0.200, 40, True, None),
    (0.040, 0.010, 0.080, 40, False, "registry.margin"),        # 0.04 < margin 0.05
    (0.100, -0.010, 0.200, 40, False, "includes or is below zero"),
    (0.100, 0.020, 0.200, 19, False, "registry.min_paired_tasks"),  # 19 < 20
    (0.100, 0.020, 0.200, 20, True, None),
])
def test_first_version_needs_gain_applies_the_comparison_gates_against_the_base(diff, lo, hi, n_tasks, promoted,
                                                                               failing):
    ok, reasons = check_gates(NEEDS_GAIN, evaluation(diff, lo, hi, n_tasks), has_champion=False)
    assert ok is promoted, reasons
    fails = [r for r in reasons if r.startswith("FAIL")]
    if failing:
        assert any(failing in r for r in fails), reasons
    else:
        assert not fails
    assert "against the base model" in reasons[-1] and reasons[-1].startswith("ok" if promoted else "FAIL")


def test_first_version_needs_gain_refuses_an_evaluation_without_comparison():
    ev = evaluation(0.1, 0.02, 0.2)
    ev["comparison"] = None
    ok, reasons = check_gates(NEEDS_GAIN, ev, has_champion=False)
    assert ok is False and "no comparison with the base model" in reasons[-1]


def test_first_version_reasons_word_for_word():
    # the operator reads these lines in the register step's log: each is pinned exactly
    ev = evaluation(0.1, 0.02, 0.2)
    ev["comparison"] = None
    assert check_gates(NEEDS_GAIN, ev, has_champion=False)[1][-1] == (
        "FAIL: no @champion exists yet and registry.first_version_needs_gain is set, but the evaluation has no "
        "comparison with the base model")
    assert check_gates(NEEDS_GAIN, evaluation(0.1, 0.02, 0.2), has_champion=False)[1][-1] == (
        "ok: no @champion exists yet; with registry.first_version_needs_gain the first version must pass the gates "
        "above against the base model")
    assert check_gates(REG, evaluation(-0.2, -0.3, -0.1), has_champion=False)[1][-1] == (
        "FAIL: measurably worse than the base model it was compared with (pass@1 difference -0.2000, interval "
        "upper end -0.1000 < 0)")


def test_first_version_needs_gain_still_fails_on_leakage_when_the_comparison_passes():
    # the leakage gate's verdict is kept: a comparison that passes every gate does not overwrite it
    ok, reasons = check_gates(NEEDS_GAIN, evaluation(0.1, 0.02, 0.2, leak_rate=0.5), has_champion=False)
    assert ok is False
    assert reasons[0].startswith("FAIL") and "leakage" in reasons[0]
    assert reasons[-1].startswith("FAIL: no @champion exists yet; with registry.first_version_needs_gain")


@pytest.mark.parametrize("comparison", ["n/a", [0.1, 0.02, 0.2], 0.1])
def test_first_version_with_a_comparison_that_is_not_an_object_counts_as_none(comparison):
    ev = evaluation(0.1, 0.02, 0.2)
    ev["comparison"] = comparison
    ok, reasons = check_gates(NEEDS_GAIN, ev, has_champion=False)  # refused with a reason, not a crash
    assert ok is False and "no comparison with the base model" in reasons[-1]
    assert check_gates(REG, ev, has_champion=False)[0] is True  # without needs_gain: the leakage rule alone


def test_first_version_with_a_comparison_without_interval_is_not_called_worse():
    # an interval that was not computed (too few tasks) cannot show "measurably worse": no crash, promoted
    ev = evaluation(-0.1, 0, 0)
    del ev["comparison"]["ci_high"], ev["comparison"]["ci_low"]
    ok, reasons = check_gates(REG, ev, has_champion=False)
    assert ok is True and not any("measurably worse" in r for r in reasons), reasons
