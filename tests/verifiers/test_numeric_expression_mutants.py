"""Adversarial cases for the numeric and arithmetic-expression verifiers (issue 21, mutation survivors).

Every expected value is worked out by hand. The verifiers are called directly (as graders.grade does, with no
clamping), so a verifier that pays 2.0, raises, or returns None where it should score is caught too.
Cases already in test_verify_numeric.py / test_verify_expression.py are not repeated.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from rlsd.tasks import Task
from rlsd.verifiers.expression import evaluate_expression, expression
from rlsd.verifiers.numeric import (
    MAX_ANSWER_CHARS,
    SYMPY_MAX_CHARS,
    copies_question_expression,
    numeric,
    parse_exact,
    parse_number,
    sympy_equal,
)


@pytest.fixture(autouse=True, scope="module")
def _sympy_loaded():
    """Import sympy before the first comparison: the import runs inside the verifier's 2 s SIGALRM window and
    can take longer than that on a loaded machine (the comparison then times out and counts as unequal)."""
    import sympy
    from sympy.parsing.sympy_parser import parse_expr

    sympy.simplify(parse_expr("x + 1") - parse_expr("1 + x"))


def num_task(answer, prompt="Q", **args):
    return Task(id="n", prompt=prompt, privileged_context="", answer=answer, verifier="numeric", verifier_args=args)


def expr_task(numbers=(3, 8), target="24", answer="3 * 8", **args):
    return Task(id="e", prompt=f"Reach {target} with {list(numbers)}", privileged_context="", answer=answer,
                verifier="expression", verifier_args={"numbers": list(numbers), "target": target, **args})


# ---------------------------------------------------------------------------------------------- numeric


@pytest.mark.parametrize("completion, answer, args, expected", [
    # each scoring path pays exactly 1.0 (graders.grade uses the raw value in a weighted mean)
    ("Answer: 8", "8", {}, 1.0),                                  # integers, exactly
    ("Answer: 3.50", "3.5", {}, 1.0),                             # within tolerance
    ("Answer: 2*sqrt(2)", "sqrt(8)", {}, 1.0),                    # symbolic
    # scientific notation with a capital E is a number, and 'E5' is no unit
    ("Answer: 1.5E5", "150000", {}, 1.0),
    ("Answer: 1.5E5", "1.5", {}, 0.0),
    ("Answer: 2.5E-3", "0.0025", {}, 1.0),
    # a letter followed by an operator is an expression, not a unit: '2x-1' is not 2
    ("Answer: 2x-1", "2", {}, 0.0),
    ("Answer: 2N-1", "2", {}, 0.0),
    # a function call or LaTeX before a trailing letter keeps the letter as a variable
    ("Answer: sqrt(2)x", "sqrt(2)*x", {}, 1.0),
    ("Answer: \\sqrt{2}x", "sqrt(2)*x", {}, 1.0),
    ("Answer: sqrt(2)x", "sqrt(2)", {}, 0.0),
    # LaTeX wrappers
    ("Answer: \\left(-3\\right)", "-3", {}, 1.0),
    ("Answer: \\left(-3\\right)", "3", {}, 0.0),
    ("Answer: 12\\,345", "12345", {}, 1.0),                       # a LaTeX thin space as thousands separator
    ("Answer: 12\\;345", "12345", {}, 1.0),
    ("\\boxed{12\\,\\text{cm}}", "12", {"unit": "cm"}, 1.0),
    ("\\boxed{12\\,\\mathrm{km}}", "12", {"unit": "km"}, 1.0),
    ("\\boxed{12\\,\\text{m}}", "12", {"unit": "km"}, 0.0),
    ("Answer: 12 km.", "12", {"unit": "km"}, 1.0),                # a full stop is no part of the unit
    ("Answer: 500 LUX", "500", {"unit": "lux"}, 1.0),             # unit words compare case-blind
    ("Answer: 500 LUX", "500", {"unit": "lx"}, 0.0),
    # percentages, in any case and LaTeX-escaped
    ("Answer: 50 Percent", "0.5", {}, 1.0),
    ("Answer: 50 PERCENT", "0.5", {}, 1.0),
    ("Answer: 40 PERCENT", "40%", {"unit": "%"}, 1.0),            # the percent word is no unit word
    ("Answer: 40%", "40%", {"unit": "%"}, 1.0),
    ("Answer: 50\\%", "0.5", {}, 1.0),
    ("Answer: $50\\%$", "0.5", {}, 1.0),                           # inside math delimiters
    ("Answer: 50", "0.5", {}, 0.0),                               # a bare 50 is no percent of a plain 0.5
    ("Answer: 5", "0.05", {}, 0.0),
    # currency signs, also after a minus sign
    ("Answer: \u20ac12", "12", {}, 1.0),
    ("Answer: \u00a31,200", "1200", {}, 1.0),
    ("Answer: \u00a5500", "500", {}, 1.0),
    ("Answer: 12\u20ac", "12", {}, 1.0),
    ("Answer: -$12", "-12", {}, 1.0),
    ("Answer: -$12", "12", {}, 0.0),
    ("Answer: -\u20ac3.50", "-3.5", {}, 1.0),
    ("Answer: \\$12", "12", {}, 1.0),                             # LaTeX-escaped dollar
    # non-breaking and thin spaces as thousands separators
    ("Answer: 1\u00a0234", "1234", {}, 1.0),
    ("Answer: 1\u2009234", "1234", {}, 1.0),
    ("Answer: 1\u2009234", "1235", {}, 0.0),
    # mixed numbers
    ("Answer: 2 1/2", "2.5", {}, 1.0),
    ("Answer: 2 1/2", "1.5", {}, 0.0),
    ("Answer: -1 1/2", "-1.5", {}, 1.0),
    ("Answer: -1 1/2", "1.5", {}, 0.0),
    ("Answer: 2 3/1", "5", {}, 1.0),
    ("Answer: 1 1/0", "1", {}, 0.0),                              # a zero denominator is no number (no crash)
    # a task's own tolerance applies to integers too, the boundary included
    ("Answer: 101", "100", {"abs_tol": 2}, 1.0),
    ("Answer: 101", "100", {"tol": 2}, 1.0),
    ("Answer: 102", "100", {"abs_tol": 2}, 1.0),
    ("Answer: 103", "100", {"abs_tol": 2}, 0.0),
    ("Answer: 101", "100", {}, 0.0),
    ("Answer: 2", "1.5", {"abs_tol": 0.5}, 1.0),                  # |2 - 1.5| = 0.5: on the boundary
    ("Answer: 2.25", "1.5", {"abs_tol": 0.5}, 0.0),
    # ... and to symbolic references
    ("Answer: 1.41", "sqrt(2)", {"abs_tol": 0.01}, 1.0),         # |1.41 - 1.41421...| = 0.0042
    ("Answer: 1.41", "sqrt(2)", {"rel_tol": 0.01}, 1.0),         # 0.01 * 1.414 = 0.0141
    ("Answer: 1.41", "sqrt(2)", {}, 0.0),
    ("Answer: 1.4", "sqrt(2)", {"abs_tol": 0.01}, 0.0),
    # a stated format is required: an 'Answer:' line is no <answer> tag
    ("Answer: 42", "42", {"format": "tag"}, 0.0),
    ("Answer: 42", "42", {"format": "boxed"}, 0.0),
    ("<answer>42</answer>", "42", {"format": "tag"}, 1.0),
    # LaTeX into sympy
    ("Answer: \\frac{x}{2}", "x/2", {}, 1.0),
    ("Answer: \\dfrac{x}{2}", "x/3", {}, 0.0),
    ("Answer: 2\\sqrt2", "sqrt(8)", {}, 1.0),                     # \sqrt without braces
    ("Answer: \\sqrt{x}", "x^(1/2)", {}, 1.0),
    ("Answer: \\ln(e^2)", "2", {}, 1.0),
    ("Answer: e^2", "exp(2)", {}, 1.0),                           # 'e' is Euler's number
    ("Answer: \\pi", "pi", {}, 1.0),
    ("Answer: 2 \\cdot x", "2*x", {}, 1.0),
    ("Answer: 3 \\times x", "3*x", {}, 1.0),
    ("Answer: 3 \\times x", "4*x", {}, 0.0),
    ("Answer: x^{2}+2x+1", "(x+1)^2", {}, 1.0),
    ("Answer: \\sin(x)", "sin(x)", {}, 1.0),
    ("Answer: \\cos(x)", "sin(x)", {}, 0.0),
    ("Answer: x^2*y^2", "(x*y)^2", {}, 1.0),                      # two powers are allowed
    ("Answer: x^999", "x^999", {}, 1.0),                          # a three-digit exponent is allowed
    ("Answer: 3e20*x", "300000000000000000000*x", {}, 1.0),       # so is a two-digit e-exponent
    # the sympy guard
    ("Answer: (x+1", "x+1", {}, 0.0),                             # a parse error is "not equal", never a pass
    ("Answer: x/0", "x/0", {}, 0.0),                              # undefined (zoo) equals nothing, itself included
    ("Answer: x^2^2^2", "x^16", {}, 0.0),                         # chained powers are refused
    # the question's own expression, with a LaTeX operator, is no answer to a symbolic reference
    ("Answer: 6 \\times 7 \\times x", "42*x", {"prompt": "Simplify 6 \\times 7 \\times x"}, 0.0),
    ("Answer: 6 \\cdot 7x", "42*x", {"prompt": "Simplify 6 \\cdot 7x"}, 0.0),
    ("Answer: 6 \\times 7 \\times x", "42*x", {}, 1.0),                 # not a copy where the question differs
])
def test_numeric_adversarial_table(completion, answer, args, expected):
    args = dict(args)
    prompt = args.pop("prompt", "Q")
    assert numeric(completion, num_task(answer, prompt=prompt, **args)) == expected


@pytest.mark.parametrize("answer", [
    "w + 1",          # a name outside the whitelist
    "W + 1",          # ... in capitals
    "x % 3",          # a character outside the whitelist ('%' would be Mod)
    "x^1000",         # a four-digit exponent
    "1e1000",         # a four-digit e-exponent
    "1E1000",
])
def test_references_the_sympy_guard_refuses_cannot_be_verified(answer):
    assert numeric(f"Answer: {answer}", num_task(answer)) is None


def test_the_sympy_whitelist_admits_every_listed_name_at_once():
    # all 21 names of the whitelist in one expression; exp(-oo) is 0
    everything = "sqrt(pi)*e*E*exp(x)*log(y)*ln(z)*sin(n)*cos(a)*tan(b)*I*c*k*t+exp(-oo)"
    assert sympy_equal(everything, "sqrt(pi)*E**2*exp(x)*log(y)*log(z)*sin(n)*cos(a)*tan(b)*I*c*k*t")


def test_sympy_size_limits_are_inclusive():
    # the converted text may be exactly SYMPY_MAX_CHARS characters; \sqrt {2} becomes sqrt(2), no space
    at_limit = "\\sqrt {2}*10" + "+x" * 35
    assert len("sqrt(2)*10" + "+x" * 35) == SYMPY_MAX_CHARS
    assert sympy_equal(at_limit, "10*sqrt(2)+35*x")
    assert not sympy_equal(at_limit + "+x", "10*sqrt(2)+36*x")
    assert sympy_equal("10*x" + "+x" * 38, "48*x")                # 80 characters
    assert not sympy_equal("10*x" + "+x" * 39, "49*x")            # 82
    # the raw answer may be exactly MAX_ANSWER_CHARS before cleaning (\left( and \right) vanish)
    raw = "\\left(" * 15 + "x + 1" + "\\right)" * 15
    assert len(raw) == MAX_ANSWER_CHARS
    assert sympy_equal(raw, "1+x")
    assert numeric("Answer: " + raw, num_task("x+1")) == 1.0
    assert not sympy_equal("\\left(" + raw + "\\right)", "1+x")


def test_sympy_equal_tolerances():
    # defaults: abs 1e-6, rel 1e-9
    assert sympy_equal("3.1415926", "pi")                         # off by 5.4e-8
    assert not sympy_equal("3.14", "pi")
    assert not sympy_equal("3.1415", "pi")
    # the boundary is inclusive
    assert sympy_equal("1.5", "1", abs_tol=0.5)
    assert not sympy_equal("1.75", "1", abs_tol=0.5)
    # relative to the reference (second argument)
    assert sympy_equal("1001", "10^3", rel_tol=0.01)
    assert not sympy_equal("1011", "10^3", rel_tol=0.01)
    assert sympy_equal("0", "0")                                  # a zero reference (no division by it)
    assert sympy_equal("0", "sin(0)")


def test_sympy_equal_symbolic_against_constant_and_parse_errors():
    assert sympy_equal("sin(x)^2+cos(x)^2", "1")                 # free symbols on one side only
    assert not sympy_equal("sin(x)^2", "1")
    assert not sympy_equal("x+", "x")
    assert not sympy_equal("x", "x+")
    assert not sympy_equal("((", "((")


@pytest.mark.parametrize("answer, question, expected", [
    ("14 + 89", "What is 14 + 89?", True),                        # two numbers are enough
    ("14 + 89 - 95", "What is 14 + 89 - 95?", True),
    ("14 89", "What is 14 + 89?", False),                         # no operator between them
    ("14 + 90", "What is 14 + 89?", False),                       # 90 is not in the question
    ("103", "What is 14 + 89?", False),
    ("6 \\times 7", "What is 6 \\times 7?", True),
    ("6 \\cdot 7", "What is 6 \\cdot 7?", True),
    ("42 \\div 7", "What is 42 \\div 7?", True),
    ("6 \u00d7 7", "What is 6 \u00d7 7?", True),
    ("3 + 4", "x" * 10_050 + " 3 + 4 ", False),                    # only the first 10,000 characters are read
    ("3 + 4", "x" * 9_950 + " 3 + 4 ", True),
])
def test_copies_question_expression(answer, question, expected):
    assert copies_question_expression(answer, question) is expected


def test_parse_exact_values_and_length_bound():
    assert parse_exact("12") == (Fraction(12), None, False)
    assert parse_exact("12")[1] is None and parse_exact("12")[2] is False
    assert parse_exact("50 PERCENT") == (Fraction(1, 2), None, True)
    assert parse_exact("-$12") == (Fraction(-12), None, False)
    assert parse_exact("1.5E5") == (Fraction(150000), None, False)
    # exactly MAX_ANSWER_CHARS is read, one more is not
    assert parse_exact("12" + " " * 196 + "km") == (Fraction(12), "km", False)
    assert parse_exact("12" + " " * 197 + "km") == (None, None, False)
    assert parse_exact("50" + " " * 197 + "%") == (Fraction(1, 2), None, True)
    assert parse_exact("50" + " " * 198 + "%") == (None, None, False)
    assert parse_exact(None) == (None, None, False)


def test_parse_number():
    assert parse_number("1 1/2") == (1.5, None, False)
    assert parse_number("12 km") == (12.0, "km", False)
    assert parse_number("5%") == (0.05, None, True)
    assert parse_number("five") == (None, None, False)
    assert parse_number("-\u20ac3.50") == (-3.5, None, False)


# ---------------------------------------------------------------------------------------------- expression


def test_expression_target_argument_wins_over_the_answer():
    # the target is verifier_args.target; task.answer is only its fallback
    t = expr_task(target="24", answer="see the worked solution")
    assert expression("Answer: 3 * 8", t) == 1.0
    t = expr_task(target="24", answer="25")
    assert expression("Answer: 3 * 8", t) == 1.0
    assert expression("Answer: 3 * 8 + 1", expr_task(numbers=(3, 8, 1), target="24", answer="25")) == 0.0


def test_expression_format_is_required():
    t = expr_task(format="tag")
    assert expression("Answer: 3 * 8", t) == 0.0
    assert expression("<answer>3 * 8</answer>", t) == 1.0
    assert expression("\\boxed{3 * 8}", expr_task(format="boxed")) == 1.0
    assert expression("Answer: 3 * 8", expr_task(format="boxed")) == 0.0


def test_expression_length_bound_is_inclusive():
    at_limit = "(" * 97 + "3 *  8" + ")" * 97
    assert len(at_limit) == 200
    assert expression("Answer: " + at_limit, expr_task()) == 1.0
    assert evaluate_expression(at_limit) == (Fraction(24), [3, 8])
    with pytest.raises(ValueError, match="^empty or too long$"):
        evaluate_expression("(" * 100 + "1" + ")" * 100)           # 201 characters
    with pytest.raises(ValueError, match="^empty or too long$"):
        evaluate_expression("  ")


@pytest.mark.parametrize("text, value, used", [
    ("3 X 8", 24, [3, 8]),                                       # a capital X as times
    ("3 * 8..", 24, [3, 8]),                                     # trailing full stops
    ("(3 * 8).", 24, [3, 8]),
    (".5 * 48", 24, [Fraction(1, 2), 48]),                       # a leading point is part of the number
    ("0.5 * 48", 24, [Fraction(1, 2), 48]),
    ("0.1 * 3", Fraction(3, 10), [Fraction(1, 10), 3]),          # decimals exactly, not as binary floats
    ("-3 + 27", 24, [3, 27]),
    ("+3 * 8", 24, [3, 8]),
    ("-(-3) * 8", 24, [3, 8]),
    ("3 \u2212 1", 2, [3, 1]),                                     # unicode minus signs
    ("8 \u2013 5", 3, [8, 5]),
    ("1+" * 66 + "1", 67, [1] * 67),                             # exactly MAX_NODES (200) nodes
])
def test_evaluate_expression_values(text, value, used):
    assert evaluate_expression(text) == (Fraction(value), [Fraction(u) for u in used])


@pytest.mark.parametrize("text, message", [
    ("3 * 8X", "^not an expression: "),
    ("3 +", "^not an expression: "),
    ("1+" * 67 + "1", "^too many nodes$"),                        # 203 nodes
    ("8 / (3 - 3)", "^division by zero$"),
    ("abs(3)", "^Call is not allowed in an arithmetic answer$"),
    ("3 ** 8", "^BinOp is not allowed in an arithmetic answer$"),
    ("x * 8", "^Name is not allowed in an arithmetic answer$"),
])
def test_evaluate_expression_refusals_say_why(text, message):
    with pytest.raises(ValueError, match=message):
        evaluate_expression(text)


def test_expression_pays_exactly_one():
    assert expression("Answer: 3 * 8", expr_task()) == 1.0
    assert expression("Answer: 3 \u2212 1", expr_task(numbers=(3, 1), target="2")) == 1.0
    assert expression("Answer: 0.1 * 3", expr_task(numbers=(0.1, 3), target="0.3")) == 1.0
