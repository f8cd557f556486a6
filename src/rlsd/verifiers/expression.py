"""Arithmetic-expression answers (countdown-style tasks and tickets whose verified answer is a formula).

``expression(completion, task)``: 1.0 when the stated answer is an arithmetic expression that
- parses with Python's ``ast`` into numbers, + - * / and parentheses only (no names, calls, powers,
  attributes or anything else: nothing is ever evaluated by Python; the tree is walked here, in exact
  rational arithmetic, and a division by zero scores 0);
- uses only the allowed numbers, each at most as often as ``verifier_args.numbers`` lists it (with
  ``use_all: true``, each exactly as often);
- equals the target exactly (``verifier_args.target``, else the value of ``task.answer`` read as an
  expression itself).
A trailing "= 24" is ignored when it states the expression's own value ("(3 + 5) * 3 = 24"); any other
right-hand side scores 0. Unicode operators (x, ×, ÷ and every minus sign numeric accepts) are read as
* / -. An answer over
``MAX_EXPRESSION_CHARS`` characters or ``MAX_NODES`` tree nodes scores 0 before it is parsed or walked.
None when the task lists no numbers or its target is unreadable.

Answer location: as rlsd.verifiers.numeric (the task's ``format``, then the unmarked forms).
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from fractions import Fraction

from rlsd.tasks import Task
from rlsd.verifiers.extract import extract_answer, unmarked_answer
from rlsd.verifiers.numeric import _MINUS

MAX_EXPRESSION_CHARS = 200
MAX_NODES = 200
_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
        ast.Div: lambda a, b: a / b}
_UNICODE = str.maketrans({"\u00d7": "*", "\u00b7": "*", "\u00f7": "/"})  # minus signs: numeric's _MINUS


class _Refused(ValueError):
    pass


def evaluate_expression(text: str) -> tuple[Fraction, list[Fraction]]:
    """(exact value, the numbers it uses in order) of an arithmetic expression; raises ValueError for
    anything else (names, calls, powers, a division by zero, too long or too deep)."""
    text = _MINUS.sub("-", text.translate(_UNICODE)).strip().rstrip(".")
    text = re.sub(r"(?<=[\d)\s])[xX](?=[\s\d(])", "*", text)  # 3 x 8
    if not text or len(text) > MAX_EXPRESSION_CHARS:
        raise _Refused("empty or too long")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, RecursionError, MemoryError) as e:
        raise _Refused(f"not an expression: {e}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise _Refused("too many nodes")
    used: list[Fraction] = []

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            v = Fraction(str(node.value)) if isinstance(node.value, float) else Fraction(node.value)
            used.append(v)
            return v
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = walk(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            a, b = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Div) and b == 0:
                raise _Refused("division by zero")
            return _OPS[type(node.op)](a, b)
        raise _Refused(f"{type(node).__name__} is not allowed in an arithmetic answer")

    return walk(tree), used


def _target(task: Task) -> Fraction | None:
    raw = str(task.verifier_args.get("target", task.answer)).strip()
    try:
        return Fraction(raw)
    except (ValueError, ZeroDivisionError):
        pass
    try:
        return evaluate_expression(raw)[0]
    except ValueError:
        return None


def expression(completion: str, task: Task) -> float | None:
    args = task.verifier_args
    try:
        allowed = Counter(Fraction(str(x)) for x in args.get("numbers") or [])
    except (ValueError, TypeError, ZeroDivisionError):
        return None
    target = _target(task)
    if not allowed or target is None:
        return None
    fmt = args.get("format", "any")
    got = extract_answer(completion, fmt)
    if got is None and fmt == "any":
        got = unmarked_answer(completion)
    if got is None or len(got) > MAX_EXPRESSION_CHARS:
        return 0.0
    lhs, _, rhs = got.partition("=")
    try:
        value, used = evaluate_expression(lhs)
        if rhs.strip() and evaluate_expression(rhs)[0] != value:
            return 0.0
    except ValueError:
        return 0.0
    count = Counter(used)
    if any(count[n] > allowed[n] for n in count):
        return 0.0
    if args.get("use_all") and count != allowed:
        return 0.0
    return 1.0 if value == target else 0.0
