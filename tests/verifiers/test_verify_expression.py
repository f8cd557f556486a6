"""Arithmetic-expression answers: the value must reach the target through the allowed numbers only, and
nothing the model writes is ever evaluated by Python."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest

from rlsd.tasks import Task
from rlsd.verifiers import score
from rlsd.verifiers.expression import evaluate_expression


def task(numbers, target="24", answer="(8 / (3 - 8 / 3))", **args):
    return Task(id="e", prompt=f"Reach {target} with {numbers}", privileged_context="", answer=answer,
                verifier="expression", verifier_args={"numbers": numbers, "target": target, **args})


@pytest.mark.parametrize("completion, numbers, expected", [
    ("Answer: 8 / (3 - 8 / 3)", [3, 3, 8, 8], 1.0),          # exact rational arithmetic: 8 / (1/3) = 24
    ("Answer: (3 + 3) * (8 - 8 + 4)", [3, 3, 8, 8], 0.0),     # 4 is not given
    ("Answer: 3 * 8", [3, 3, 8, 8], 1.0),                     # a subset is fine unless use_all
    ("Answer: 3 * 8 * 1", [3, 3, 8, 8], 0.0),
    ("Answer: 8 * 3", [3, 8], 1.0),
    ("Answer: 8 + 8 + 8", [3, 8, 8], 0.0),                    # 8 used three times, given twice
    ("Answer: 24", [3, 3, 8, 8], 0.0),                        # the bare target is not an expression of them
    ("Answer: 3 \u00d7 8", [3, 8], 1.0),
    ("Answer: 3 x 8", [3, 8], 1.0),
    ("Answer: (3 + 8) = 11", [3, 8], 0.0),                    # a right-hand side that is its value, but not 24
    ("Answer: 3 * 8 = 24", [3, 8], 1.0),
    ("Answer: 3 * 8 = 25", [3, 8], 0.0),                      # a false equation
    ("Answer: 3 ** 8", [3, 8], 0.0),                          # powers are not allowed
    ("Answer: __import__('os').system('touch /tmp/rlsd-pwned')", [3, 8], 0.0),
    ("Answer: (lambda: 24)()", [3, 8], 0.0),
    ("Answer: 8 / (3 - 3)", [3, 3, 8], 0.0),                  # division by zero
    ("Answer: True * 24", [3, 8], 0.0),
    ("Answer: " + "(" * 150 + "3*8" + ")" * 150, [3, 8], 0.0),  # over the length cap
    ("Answer: 3 * 8 or 8 * 3", [3, 8], 0.0),
    ("The answer is 3 * 8.", [3, 8], 1.0),                    # unmarked forms are read as for numeric
    ("", [3, 8], 0.0),
])
def test_expression_table(completion, numbers, expected):
    assert score(task(numbers), completion) == expected


def test_use_all_requires_every_number_exactly():
    t = task([3, 3, 8, 8], use_all=True)
    assert score(t, "Answer: 8 / (3 - 8 / 3)") == 1.0
    assert score(t, "Answer: 3 * 8") == 0.0


def test_target_from_the_reference_formula_and_unverifiable_tasks():
    t = Task(id="f", prompt="Blocks?", privileged_context="", answer="(120 - 20) / 4", verifier="expression",
             verifier_args={"numbers": [120, 20, 4]})
    assert score(t, "Answer: (120 - 20) / 4") == 1.0 and score(t, "Answer: 100 / 4") == 0.0  # 100 not given
    assert score(Task(id="n", prompt="Q", privileged_context="", answer="24", verifier="expression"), "A: 3*8") is None
    bad = Task(id="b", prompt="Q", privileged_context="", answer="x + 1", verifier="expression",
               verifier_args={"numbers": [1]})
    assert score(bad, "A: 1") is None


def test_the_evaluator_is_exact_and_never_calls_python(tmp_path, monkeypatch):
    assert evaluate_expression("1/3 + 1/3 + 1/3") == (Fraction(1), [1, 3, 1, 3, 1, 3])
    monkeypatch.chdir(tmp_path)
    for hostile in ("open('x', 'w')", "[].__class__", "a", "f'{1}'", "1 if 1 else 2", "(1).real"):
        with pytest.raises(ValueError):
            evaluate_expression(hostile)
    assert list(tmp_path.iterdir()) == []


def test_a_megabyte_completion_is_cheap():
    t0 = time.perf_counter()
    assert score(task([3, 8]), "(" * 1_000_000) == 0.0
    assert score(task([3, 8]), "Answer: " + "3*" * 500_000 + "8") == 0.0
    assert time.perf_counter() - t0 < 2.0
