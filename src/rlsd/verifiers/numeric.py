"""Numeric answers: tolerances, units, thousands separators, fractions, percentages, LaTeX, sympy.

``numeric(completion, task)``: 1.0 when the stated answer equals ``task.answer``, 0.0 when it does not
(or states no answer), None when ``task.answer`` itself cannot be read.

What an answer is (each rule is tested in tests/verifiers/test_verify_numeric.py):
- ONE number: integer, decimal, fraction ("3/4", "\\frac{3}{4}", mixed "1 1/2"), scientific ("1.5e3",
  "1.5 x 10^3", "1.5 \\times 10^{3}"), with thousands separators ("1,234,567" / "1 234" / "1_234"), a
  currency sign, a unit word ("12 km") or a percent sign. Any minus sign counts (U+2212, U+2012, U+2013,
  U+FE63, U+FF0D). Two numbers offered as alternatives ("8 or 9", "8, 9") are no answer: 0.
- Integers compare exactly (10000000001 is not 1e10); other values within
  ``max(abs_tol, rel_tol * |ref|)`` (abs_tol 1e-6, rel_tol 1e-9). A task that sets ``abs_tol`` / ``tol``
  or ``rel_tol`` gets its tolerance for integers too.
- A percentage: "8%" is 0.08. Only where the reference is a percentage ("50%") does an answer also match
  as the bare number ("50" or "0.5" for "50%").
- Expressions, unless the task sets ``allow_expressions: true``: where the reference is a number, an
  answer with two or more numbers that is not one number ("14 + 89 - 95", "4 + 4") scores 0; a constant
  or a function of one number ("\\pi", "sqrt(2)") is compared numerically. Where the reference is itself
  an expression ("sqrt(8)"), answers are compared symbolically through sympy ("2*sqrt(2)", "x+1" vs
  "1+x"), except an expression over the question's own numbers (two or more numbers, all in the
  question, joined by operators: a copy of the question). Sympy is guarded as below.
- Where the answer is stated: the task's ``format`` (rlsd.verifiers.extract: an <answer> tag, an
  "Answer:" line, \\boxed{}); with the default ``format: any`` and no such statement, the unmarked forms
  of :func:`rlsd.verifiers.extract.unmarked_answer` ("#### 42", "The answer is 42.", a last line
  "x = 42", a last line that is a bare number).
- ``unit``: when given, an answer that carries a different unit word scores 0 (units are otherwise
  stripped and ignored: "12 km", "$1,200", "12\\,\\text{cm}").

Cost: an answer over :data:`MAX_ANSWER_CHARS` characters is no number (0) before any regular expression
runs, so parsing is linear and bounded in any thread (no reliance on SIGALRM).
Sympy guard: only strings of at most :data:`SYMPY_MAX_CHARS` characters made of digits, operators,
parentheses and a whitelist of names are parsed; exponents are limited to :data:`SYMPY_MAX_EXPONENT`
digits; and in the main thread a SIGALRM timer stops a comparison after :data:`SYMPY_TIME_LIMIT_S`
(off the main thread only the size guards apply). A timeout or parse error counts as "not equal".
"""

from __future__ import annotations

import math
import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction

from rlsd.tasks import Task
from rlsd.verifiers.extract import extract_answer, unbox, unmarked_answer

MAX_ANSWER_CHARS = 200
SYMPY_MAX_CHARS = 80
SYMPY_MAX_EXPONENT = 3
SYMPY_TIME_LIMIT_S = 2.0

_UNIT_WORD = r"[A-Za-z\u00b0\u00b5\u03bc][A-Za-z\u00b0\u00b5\u03bc/^0-9\.\- ]*"
_CURRENCY = "$\u20ac\u00a3\u00a5"
_MINUS = re.compile("[\u2212\u2012\u2013\u2010\u2011\ufe63\uff0d]")
# a x 10^b, a \times 10^{b}, a * 10**b -> a e b (before units are looked for: "x 10^3" is not a unit)
_SCI = (re.compile(r"\s*\\(?:times|cdot)\s*10\s*\^\s*\{?\s*([-+]?\d+)\s*\}?"),
        re.compile(r"\s*[x\u00d7\*]\s*10\s*(?:\^|\*\*)\s*\(?([-+]?\d+)\)?"))


def _clean(s: str) -> tuple[str, str | None, bool]:
    """(numeric text, unit word or None, is_percent) after stripping LaTeX wrappers, currency and units."""
    s = unbox(s.strip())
    s = _MINUS.sub("-", s).replace("\u00a0", " ").replace("\u2009", " ")
    for pattern in _SCI:
        s = pattern.sub(r"e\1", s)
    s = s.strip().strip("$").strip()  # $...$ math delimiters
    s = re.sub(r"\\(?:left|right)\b", "", s)
    s = re.sub(r"\\[,;:! ]", " ", s)  # LaTeX spaces
    s = re.sub(r"\\(?:text|mathrm|textrm|mbox|operatorname)\s*\{([^{}]*)\}", r" \1 ", s)
    s = s.replace("\\%", "%").replace("\\$", "$")
    s = s.strip().rstrip(".").strip()
    pct = False
    if s.endswith("%") or re.search(r"\bpercent\b", s, re.IGNORECASE):
        pct = True
        s = re.sub(r"%|\bpercent\b", "", s, flags=re.IGNORECASE).strip()
    s = s.strip(_CURRENCY).strip()
    if s[:1] == "-" and s[1:2] in _CURRENCY:
        s = "-" + s[2:]
    unit = None
    m = re.match(rf"^(.*?[0-9\}}\)](?:[eE][-+]?\d+)?)\s*({_UNIT_WORD})$", s)  # "1.5e3 km": the exponent is the number's
    if (m and not re.fullmatch(r"[eE][-+]?\d+", m.group(2).strip()) and not re.search(r"[a-zA-Z]\s*[\*\+\-/^(]", m.group(2))
            and not re.search(r"\s[-+]?\d", m.group(2))):  # "8 or 9": a second number is no unit
        # a trailing word after a number is a unit ("12 km", "3.5 kg/m^2"), not part of an expression
        if not re.search(r"\\|[a-z]\(", m.group(1)):
            s, unit = m.group(1).strip(), m.group(2).strip().lower()
    return s, unit, pct


_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:([, _])\d{3})(?:\1\d{3})*(?:\.\d+)?")


def _plain(s: str) -> Fraction | None:
    """A plain number, fraction, mixed number or scientific notation as an exact Fraction."""
    s = s.strip()
    if _THOUSANDS.fullmatch(s):
        s = re.sub(r"[, _]", "", s)
    m = re.fullmatch(r"([-+]?)\\[dt]?frac\s*\{\s*([-+]?\d+)\s*\}\s*\{\s*([-+]?\d+)\s*\}", s)
    if m:
        s = f"{m.group(1)}{m.group(2)}/{m.group(3)}"
    m = re.fullmatch(r"([-+]?)(\d+)\s+(\d+)\s*/\s*(\d+)", s)  # mixed number 1 1/2
    if m:
        if int(m.group(4)) == 0:
            return None
        v = int(m.group(2)) + Fraction(int(m.group(3)), int(m.group(4)))
        return -v if m.group(1) == "-" else v
    m = re.fullmatch(r"\(?\s*([-+]?\d+)\s*\)?\s*/\s*\(?\s*([-+]?\d+)\s*\)?", s)
    if m:
        return None if int(m.group(2)) == 0 else Fraction(int(m.group(1)), int(m.group(2)))
    if not re.fullmatch(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d{1,3})?", s):
        return None
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def parse_exact(s: str) -> tuple[Fraction | None, str | None, bool]:
    """(exact value, unit, is_percent) of an answer string; value None when it is not one plain number
    (or is too large for a float). A percentage's value is already divided by 100."""
    if not isinstance(s, str) or len(s) > MAX_ANSWER_CHARS:
        return None, None, False
    text, unit, pct = _clean(s)
    v = _plain(text)
    if v is None:
        return None, unit, pct
    try:
        if not math.isfinite(float(v)):
            return None, unit, pct
    except OverflowError:
        return None, unit, pct
    return (v / 100 if pct else v), unit, pct


def parse_number(s: str) -> tuple[float | None, str | None, bool]:
    """parse_exact with the value as a float."""
    v, unit, pct = parse_exact(s)
    return (None if v is None else float(v)), unit, pct


# ----------------------------------------------------------------------------------------------
# sympy, guarded
# ----------------------------------------------------------------------------------------------

_SYMPY_NAMES = {"sqrt", "pi", "e", "E", "exp", "log", "ln", "sin", "cos", "tan", "I", "oo", "x", "y", "z", "n",
                "a", "b", "c", "k", "t"}
_SYMPY_CHARS = re.compile(r"[0-9A-Za-z\s\.\+\-\*/\^\(\)]*")


def _latex_to_sympy(s: str) -> str:
    s = re.sub(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"((\1)/(\2))", s)
    s = re.sub(r"\\sqrt\s*\{([^{}]*)\}", r"sqrt(\1)", s)
    s = re.sub(r"\\sqrt\s*(\d+)", r"sqrt(\1)", s)
    s = s.replace("\\pi", "pi").replace("\\cdot", "*").replace("\\times", "*").replace("\\ln", "ln")
    s = s.replace("{", "(").replace("}", ")").replace("\\", "")
    return s


class _SympyTimeout(Exception):
    pass


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """SIGALRM-based limit in the main thread; a no-op elsewhere (size guards still apply)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def _raise(signum, frame):
        raise _SympyTimeout()

    import time

    old = signal.signal(signal.SIGALRM, _raise)
    t0 = time.monotonic()
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)  # an outer timer (pytest-timeout) is restored
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        if outer > 0:
            signal.setitimer(signal.ITIMER_REAL, max(1e-3, outer - (time.monotonic() - t0)))


def _sympy_expr(s: str):
    if len(s) > MAX_ANSWER_CHARS:
        return None
    s = _latex_to_sympy(_clean(s)[0])
    if len(s) > SYMPY_MAX_CHARS or not _SYMPY_CHARS.fullmatch(s):
        return None
    names = set(re.findall(r"[A-Za-z_]+", s))
    if not names <= _SYMPY_NAMES:
        return None
    # 9^9^9 and friends: refuse long exponents (and chained powers) before sympy evaluates them
    if (re.search(r"(\^|\*\*)\s*\(?\s*[-+]?\d{%d,}" % (SYMPY_MAX_EXPONENT + 1), s)
            or re.search(r"\d\s*[eE]\s*[-+]?\d{%d,}" % (SYMPY_MAX_EXPONENT + 1), s) or len(re.findall(r"\^|\*\*", s)) > 2):
        return None
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    local = {"ln": __import__("sympy").log, "e": __import__("sympy").E}
    return parse_expr(s, local_dict=local, evaluate=True,
                      transformations=standard_transformations + (convert_xor, implicit_multiplication_application))


def _import_sympy() -> None:
    """Import sympy's parser outside the time limit: a first import (2 s on loaded cores) inside it would make
    the first symbolic comparison of a process time out and score a right answer 0."""
    import sympy  # noqa: F401
    import sympy.parsing.sympy_parser  # noqa: F401


def sympy_equal(a: str, b: str, *, abs_tol: float = 1e-6, rel_tol: float = 1e-9) -> bool:
    """True when two short expressions are symbolically (or, for constants, numerically) equal.
    Never raises; False on anything it refuses to parse or that runs past the time limit."""
    _import_sympy()
    try:
        with _time_limit(SYMPY_TIME_LIMIT_S):
            ea, eb = _sympy_expr(a), _sympy_expr(b)
            if ea is None or eb is None:
                return False
            if not ea.free_symbols and not eb.free_symbols:
                va, vb = complex(ea.evalf()), complex(eb.evalf())
                return abs(va - vb) <= max(abs_tol, rel_tol * abs(vb))
            from sympy import simplify

            return bool(simplify(ea - eb) == 0)
    except BaseException as e:
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        return False


# ----------------------------------------------------------------------------------------------
# The verifier
# ----------------------------------------------------------------------------------------------


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _numbers(text: str) -> list[Fraction]:
    return [Fraction(x) for x in _NUMBER.findall(text)]


def copies_question_expression(answer: str, question: str) -> bool:
    """True for an expression over the question's own numbers: two or more numbers, every one of them in
    the question, with an operator between them ("14 + 89 - 95" for "What is 14 + 89 - 95?")."""
    nums = _numbers(answer)
    # a closing bracket or LaTeX brace may sit between a number and the operator: "4\sqrt{2} - 2\sqrt{2}"
    if len(nums) < 2 or not re.search(r"\d\s*[)\]}]*\s*(?:[-+*/^\u00d7\u00f7]|\\times|\\cdot|\\div)\s*[(\[{]*\s*[-+]?\d",
                                      answer):
        return False
    asked = set(_numbers(question[:MAX_ANSWER_CHARS * 50]))
    return all(n in asked for n in nums)


def numeric(completion: str, task: Task) -> float | None:
    """1.0 if the stated answer equals task.answer (see the module docstring for what an answer is)."""
    args = task.verifier_args
    explicit_tol = any(k in args for k in ("abs_tol", "tol", "rel_tol"))
    abs_tol = float(args.get("abs_tol", args.get("tol", 1e-6)))
    rel_tol = float(args.get("rel_tol", 1e-9))
    ref, ref_unit, ref_pct = parse_exact(task.answer)
    if ref is None and _sympy_expr_safe(task.answer) is None:
        return None  # the reference is neither a number nor a short expression: cannot verify
    fmt = args.get("format", "any")
    got_text = extract_answer(completion, fmt)
    if got_text is None and fmt == "any":
        got_text = unmarked_answer(completion)
    if got_text is None or not got_text.strip() or len(got_text) > MAX_ANSWER_CHARS:
        return 0.0
    got, got_unit, got_pct = parse_exact(got_text)
    want_unit = args.get("unit")
    if want_unit and got_unit and got_unit != str(want_unit).lower():
        return 0.0
    if ref is not None and got is not None:
        # percent only where the reference is a percentage: then "50%", "0.5" and "50" all match "50%" (values
        # are already divided by 100: ref 0.5); an answer that says "%" is read only as a percentage
        refs = [ref, ref * 100] if (ref_pct and not got_pct) else [ref]
        for r in refs:
            if r.denominator == 1 and got.denominator == 1 and not explicit_tol:
                if got == r:  # integers: exactly
                    return 1.0
            elif abs(float(got - r)) <= max(abs_tol, rel_tol * abs(float(r))):
                return 1.0
        return 0.0
    if not args.get("allow_expressions"):
        if ref is not None and len(_numbers(got_text)) >= 2:
            return 0.0  # a number is asked for: "4 + 4" is arithmetic left to the reader, not an answer
        if copies_question_expression(got_text, task.prompt):
            return 0.0
    return 1.0 if sympy_equal(got_text, task.answer, abs_tol=abs_tol, rel_tol=rel_tol) else 0.0


def _sympy_expr_safe(s: str):
    _import_sympy()
    try:
        with _time_limit(SYMPY_TIME_LIMIT_S):
            return _sympy_expr(s)
    except BaseException as e:
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        return None
