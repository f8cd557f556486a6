"""Numeric answers: a table of (completion, reference, verifier_args, expected score)."""

import time

import pytest

from rlsd.tasks import Task
from rlsd.verifiers import score


def task(answer, prompt="Q", **args):
    return Task(id="t", prompt=prompt, privileged_context="", answer=answer, verifier="numeric", verifier_args=args)


@pytest.mark.parametrize("completion, answer, args, expected", [
    # the tiny addition tasks
    ("7+9=16,4+8+1=13,3+5+1=9\nA:936", "936", {}, 1.0),
    ("7+9=16,4+8+1=13,3+5+1=9\nA:937", "936", {}, 0.0),
    ("7+9=16", "16", {}, 0.0),                              # no stated answer
    # negatives, unicode minus, decimals
    ("A: -5", "-5", {}, 1.0),
    ("A: \u22125", "-5", {}, 1.0),
    ("A: 5", "-5", {}, 0.0),
    ("A: 3.50", "3.5", {}, 1.0),
    ("A: .5", "0.5", {}, 1.0),
    # tolerances
    ("A: 3.14", "3.14159", {"abs_tol": 0.01}, 1.0),
    ("A: 3.14", "3.14159", {}, 0.0),
    ("A: 3.14", "3.14159", {"tol": 0.01}, 1.0),             # older name of abs_tol
    ("A: 1010", "1000", {"rel_tol": 0.02}, 1.0),
    ("A: 1030", "1000", {"rel_tol": 0.02}, 0.0),
    # thousands separators, currency, units
    ("Answer: 1,234,567", "1234567", {}, 1.0),
    ("Answer: 1 234 567", "1234567", {}, 1.0),
    ("Answer: 1,23", "123", {}, 0.0),                       # not a valid grouping
    ("Answer: $1,200.50", "1200.5", {}, 1.0),
    ("Answer: 12 km", "12", {}, 1.0),
    ("Answer: 12km", "12", {}, 1.0),
    ("Answer: 12 km", "12", {"unit": "km"}, 1.0),
    ("Answer: 12 miles", "12", {"unit": "km"}, 0.0),
    ("\\boxed{12\\,\\text{cm}}", "12", {}, 1.0),
    # fractions and mixed numbers
    ("A: 3/4", "0.75", {}, 1.0),
    ("A: -3/4", "-0.75", {}, 1.0),
    ("\\boxed{\\frac{3}{4}}", "0.75", {}, 1.0),
    ("\\boxed{\\dfrac{1}{3}}", "1/3", {}, 1.0),
    ("A: 1 1/2", "1.5", {}, 1.0),
    ("A: 1/0", "1", {}, 0.0),
    # percentages
    ("A: 50%", "0.5", {}, 1.0),
    ("A: 50%", "50", {}, 0.0),                             # a percent only where the gold is one: 0.5 != 50
    ("A: 0.5", "50%", {}, 1.0),
    ("A: 50 percent", "50%", {}, 1.0),
    ("A: 5%", "50%", {}, 0.0),
    # scientific notation
    ("A: 1.5e3", "1500", {}, 1.0),
    ("A: 1.5 \\times 10^{3}", "1500", {}, 1.0),
    # symbolic equivalence (sympy)
    ("\\boxed{2\\sqrt{2}}", "sqrt(8)", {}, 1.0),
    ("A: x+1", "1+x", {}, 1.0),
    ("A: (x+1)^2", "x^2+2*x+1", {}, 1.0),
    ("A: x+2", "1+x", {}, 0.0),
    ("A: \\pi", "3.14159265", {"abs_tol": 1e-6}, 1.0),
    # adversarial
    ("", "5", {}, 0.0),
    ("A:", "5", {}, 0.0),
    ("A: five", "5", {}, 0.0),
    ("A: 9^9^9^9", "5", {}, 0.0),                           # refused before sympy evaluates it
    ("A: 9**99999999", "5", {}, 0.0),
    ("A: " + "(" * 5000 + "1" + ")" * 5000, "1", {}, 0.0),  # too long for sympy
    ("A: __import__('os').system('touch /tmp/x')", "0", {}, 0.0),
    ("A: nan", "5", {}, 0.0),
    ("A: inf", "5", {}, 0.0),
    ("A: 1e999999", "5", {}, 0.0),
])
def test_numeric_table(completion, answer, args, expected):
    t = time.monotonic()
    assert score(task(answer, **args), completion) == expected
    assert time.monotonic() - t < 5.0


@pytest.mark.parametrize("answer", ["not a number", "x" * 500, "import os"])
def test_unreadable_reference_cannot_be_verified(answer):
    assert score(task(answer), "A: 5") is None


def test_huge_completion_is_bounded():
    t = time.monotonic()
    assert score(task("5"), "9" * 10_000_000) == 0.0
    assert score(task("5"), "A:5\n" + "x" * 10_000_000) == 1.0
    assert time.monotonic() - t < 5.0


# ---------------------------------------------------------------------------------------------- reward hacks

ASK = "What is 14 + 89 - 95?"


@pytest.mark.parametrize("completion, answer, prompt, args, expected", [
    # the question's own expression, copied as the answer, is no answer
    ("Answer: 14 + 89 - 95", "8", ASK, {}, 0.0),
    ("Answer: (14+89)-95", "8", ASK, {}, 0.0),
    ("Answer: 14 + 89 - 95 = 8", "8", ASK, {}, 0.0),
    ("Answer: 4 + 4", "8", ASK, {}, 0.0),                        # any arithmetic for a number asked
    ("Answer: 14 + 89 - 95", "8", ASK, {"allow_expressions": True}, 1.0),
    ("Answer: 8", "8", ASK, {}, 1.0),
    ("Answer: sqrt(8)", "sqrt(8)", "Simplify sqrt(8)", {}, 1.0),  # a symbolic reference: equal expressions
    ("Answer: 2*sqrt(2)", "sqrt(8)", "Simplify sqrt(8)", {}, 1.0),
    ("Answer: 4*sqrt(2) - 2*sqrt(2)", "2*sqrt(2)", "Simplify 4*sqrt(2) - 2*sqrt(2)", {}, 0.0),  # the question
    # alternatives
    ("Answer: 8 or 9", "8", "Q", {}, 0.0),
    ("Answer: 9 or 8", "8", "Q", {}, 0.0),
    ("Answer: 8, 9", "8", "Q", {}, 0.0),
    ("Answer: 8 / 9", "8", "Q", {}, 0.0),                         # a fraction, and not 8
    # percent only where the gold is a percent
    ("Answer: 8%", "8", "Q", {}, 0.0),
    ("Answer: 8%", "0.08", "Q", {}, 1.0),
    ("Answer: 8", "8%", "Q", {}, 1.0),
    # integers exactly
    ("Answer: 10000000001", "1e10", "Q", {}, 0.0),
    ("Answer: 10000000000", "1e10", "Q", {}, 1.0),
    ("Answer: 123456789012345678901", "123456789012345678900", "Q", {}, 0.0),
    ("Answer: 10000000001", "1e10", "Q", {"rel_tol": 1e-9}, 1.0),  # the task's own tolerance
    ("Answer: 3.0", "3", "Q", {}, 1.0),
    # scientific notation and minus signs
    ("Answer: 1.5 x 10^3", "1500", "Q", {}, 1.0),
    ("Answer: 1.5 \u00d7 10^3", "1500", "Q", {}, 1.0),
    ("Answer: 1.5*10**3", "1500", "Q", {}, 1.0),
    ("Answer: 1.5 x 10^3", "1.5", "Q", {}, 0.0),
    ("Answer: \uff0d5", "-5", "Q", {}, 1.0),
    ("Answer: \u20125", "-5", "Q", {}, 1.0),
    ("Answer: \ufe635", "-5", "Q", {}, 1.0),
    # unmarked answers (format any)
    ("The answer is 42.", "42", "Q", {}, 1.0),
    ("So the final answer is: 42", "42", "Q", {}, 1.0),
    ("The answer is 3.5. It follows from the manual.", "3.5", "Q", {}, 1.0),
    ("14 + 28 = 42\n#### 42", "42", "Q", {}, 1.0),
    ("we add them\nx = 42", "42", "Q", {}, 1.0),
    ("we add them\n42", "42", "Q", {}, 1.0),
    ("we add them\n42.", "42", "Q", {}, 1.0),
    ("we add them\n-1,200", "-1200", "Q", {}, 1.0),
    ("The answer is 41.", "42", "Q", {}, 0.0),
    ("7+9=16", "16", "Q", {}, 0.0),                               # an equation is not a statement
    ("42 is close\nbut no answer here", "42", "Q", {}, 0.0),
    ("The answer is 42.", "42", "Q", {"format": "tag"}, 0.0),      # a stated format is a requirement
    ("#### 41\nThe answer is 42", "42", "Q", {}, 0.0),            # '####' first, by the stated order
])
def test_reward_hacks_and_unmarked_answers(completion, answer, prompt, args, expected):
    assert score(task(answer, prompt=prompt, **args), completion) == expected


def test_parsing_is_bounded_in_any_thread():
    """A long answer is refused before any regular expression runs, also where SIGALRM cannot fire."""
    import threading

    out = {}

    def run():
        t0 = time.perf_counter()
        out["s"] = score(task("5 km", unit="km"), "Answer: 5" + " kmkm" * 8000 + "1")
        out["s2"] = score(task("sqrt(8)"), "Answer: " + "a" * 40_000)
        out["t"] = time.perf_counter() - t0

    th = threading.Thread(target=run)
    th.start()
    th.join(30)
    assert out["s"] == 0.0 and out["s2"] == 0.0
    assert out["t"] < 1.0, out["t"]


# Reward bugs found by the mutation review (issue 21): each row paid a wrong answer or refused a right one.
@pytest.mark.parametrize("answer, reference, expected", [
    # an answer that says "%" is a percentage: 0.5% and 5000% are not 50%
    ("50%", "50%", 1.0), ("0.5", "50%", 1.0), ("50", "50%", 1.0), ("50 percent", "50%", 1.0),
    ("0.5%", "50%", 0.0), ("5000%", "50%", 0.0), ("5000", "50%", 0.0), ("0.005", "50%", 0.0),
    ("12.5%", "12.5%", 1.0), ("0.125%", "12.5%", 0.0), ("1250%", "12.5%", 0.0),
    # the exponent belongs to the number, not to the unit: 1.5e3 km is 1500, not 1.5
    ("1.5e3 km", "1500", 1.0), ("1.5e3 km", "1.5", 0.0), ("1.5E3 km", "1.5", 0.0),
    ("2 \\times 10^{3} m", "2000", 1.0), ("2 \\times 10^{3} m", "2", 0.0),
    ("3e-2 A", "0.03", 1.0), ("3e-2 A", "3", 0.0), ("12 eV", "12", 1.0),
])
def test_percent_and_exponent_answers(answer, reference, expected):
    assert score(task(reference), "Answer: " + answer) == expected


def test_a_copied_latex_expression_is_not_an_answer():
    """The question's own expression with LaTeX braces between number and operator is a copy, not a result."""
    q = "Simplify 4\\sqrt{2} - 2\\sqrt{2}. Give the exact value."
    assert score(task("2\\sqrt{2}", prompt=q), "Answer: 4\\sqrt{2} - 2\\sqrt{2}") == 0.0
    assert score(task("2\\sqrt{2}", prompt=q), "Answer: 4\\sqrt{2}-2\\sqrt{2}") == 0.0
    assert score(task("2\\sqrt{2}", prompt=q), "Answer: 2\\sqrt{2}") == 1.0
    assert score(task("2\\sqrt{2}", prompt=q), "Answer: \\sqrt{8}") == 1.0


def test_the_first_symbolic_check_of_a_process_does_not_time_out_on_importing_sympy():
    """sympy is imported before the comparison's time limit starts: a cold process with a 0.25 s limit (a
    cold sympy import takes longer) still finds 2*sqrt(2) == sqrt(8)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "assert 'sympy' not in sys.modules\n"
            "import importlib\n"
            "n = importlib.import_module('rlsd.verifiers.numeric')\n"
            "n.SYMPY_TIME_LIMIT_S = 0.25\n"
            "print(n.sympy_equal('2*sqrt(2)', 'sqrt(8)'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
