"""Numeric answers: tolerances, units, thousands separators, fractions, percentages, LaTeX, sympy.

``numeric(completion, task)``: 1.0 when the stated answer equals ``task.answer`` within tolerance,
0.0 when it does not (or states no answer), None when ``task.answer`` itself cannot be read.

verifier_args:
- ``abs_tol`` (default 1e-6; ``tol`` is accepted as its older name) and ``rel_tol`` (default 1e-9):
  equal when ``|got - ref| <= max(abs_tol, rel_tol * |ref|)`` (math.isclose's rule).
- ``unit``: when given, an answer that carries a different unit word scores 0 (units are otherwise
  stripped and ignored: "12 km", "$1,200", "12\\,\\text{cm}").
- ``format``: the answer format (see rlsd.verifiers.extract), default "any".

Parsing, in order: plain numbers (unicode minus, thousands separators "1,234,567" / "1 234" /
"1_234", scientific "1.5e3" and "1.5 \\times 10^{3}"), fractions ("3/4", "\\frac{3}{4}", mixed "1 1/2"),
percentages ("50%" is 0.5; a percentage on either side also matches its bare number, so "50%" vs
"50" and "50%" vs "0.5" both pass), then symbolic equivalence through sympy for short expressions
("2*sqrt(2)" vs "sqrt(8)", "x+1" vs "1+x").

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
from rlsd.verifiers.extract import extract_answer, unbox

SYMPY_MAX_CHARS = 80
SYMPY_MAX_EXPONENT = 3
SYMPY_TIME_LIMIT_S = 2.0

_UNIT_WORD = r"[A-Za-z\u00b0\u00b5\u03bc][A-Za-z\u00b0\u00b5\u03bc/^0-9\.\- ]*"
_CURRENCY = "$\u20ac\u00a3\u00a5"


def _clean(s: str) -> tuple[str, str | None, bool]:
    """(numeric text, unit word or None, is_percent) after stripping LaTeX wrappers, currency and units."""
    s = unbox(s.strip())
    s = s.replace("\u2212", "-").replace("\u2013", "-").replace("\u00a0", " ").replace("\u2009", " ")
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
    m = re.match(rf"^(.*?[0-9\}}\)])\s*({_UNIT_WORD})$", s)
    if m and not re.fullmatch(r"[eE][-+]?\d+", m.group(2).strip()) and not re.search(r"[a-zA-Z]\s*[\*\+\-/^(]", m.group(2)):
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
    s = re.sub(r"\s*\\(?:times|cdot)\s*10\s*\^\s*\{?\s*([-+]?\d+)\s*\}?", r"e\1", s)
    s = re.sub(r"\s*[x\u00d7\*]\s*10\s*(?:\^|\*\*)\s*\(?([-+]?\d+)\)?", r"e\1", s)
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


def parse_number(s: str) -> tuple[float | None, str | None, bool]:
    """(value, unit, is_percent) of an answer string; value None when it is not a plain number.
    A percentage's value is already divided by 100."""
    if not isinstance(s, str) or len(s) > 200:
        return None, None, False
    text, unit, pct = _clean(s)
    v = _plain(text)
    if v is None:
        return None, unit, pct
    try:
        f = float(v)
    except OverflowError:
        return None, unit, pct
    if not math.isfinite(f):
        return None, unit, pct
    return (f / 100.0 if pct else f), unit, pct


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


def sympy_equal(a: str, b: str, *, abs_tol: float = 1e-6, rel_tol: float = 1e-9) -> bool:
    """True when two short expressions are symbolically (or, for constants, numerically) equal.
    Never raises; False on anything it refuses to parse or that runs past the time limit."""
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


def _candidates(v: float, pct: bool) -> list[float]:
    return [v, v * 100.0] if pct else [v]


def numeric(completion: str, task: Task) -> float | None:
    """1.0 if the stated answer equals task.answer within tolerance (see the module docstring)."""
    args = task.verifier_args
    abs_tol = float(args.get("abs_tol", args.get("tol", 1e-6)))
    rel_tol = float(args.get("rel_tol", 1e-9))
    ref, ref_unit, ref_pct = parse_number(task.answer)
    got_text = extract_answer(completion, args.get("format", "any"))
    if ref is None and _sympy_expr_safe(task.answer) is None:
        return None  # the reference is neither a number nor a short expression: cannot verify
    if got_text is None or not got_text.strip():
        return 0.0
    got, got_unit, got_pct = parse_number(got_text)
    want_unit = args.get("unit")
    if want_unit and got_unit and got_unit != str(want_unit).lower():
        return 0.0
    if ref is not None and got is not None:
        for r in _candidates(ref, ref_pct):
            for g in _candidates(got, got_pct):
                if abs(g - r) <= max(abs_tol, rel_tol * abs(r)):
                    return 1.0
        return 0.0
    return 1.0 if sympy_equal(got_text, task.answer, abs_tol=abs_tol, rel_tol=rel_tol) else 0.0


def _sympy_expr_safe(s: str):
    try:
        with _time_limit(SYMPY_TIME_LIMIT_S):
            return _sympy_expr(s)
    except BaseException as e:
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        return None
