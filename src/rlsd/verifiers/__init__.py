"""Verifiers: one function per answer kind, the same for training reward and evaluation.

Each verifier is ``fn(completion: str, task: Task) -> float | None``: a score in [0, 1], or None
when the task cannot be verified. It never raises on model output.
"""

from __future__ import annotations

import math
import re
from typing import Callable

from rlsd.tasks import Task

Verifier = Callable[[str, Task], "float | None"]

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
_A_LINE = re.compile(r"(?:^|\n)\s*(?:A|Answer|Final answer)\s*:\s*(.*)", re.I)


def extract_answer(completion: str) -> str | None:
    """The answer a completion states: the last <answer>...</answer>, else the last 'A:' /
    'Answer:' line. None when the completion states no answer in the expected format."""
    if not isinstance(completion, str):
        return None
    tags = _ANSWER_TAG.findall(completion)
    if tags:
        return tags[-1].strip()
    lines = _A_LINE.findall(completion)
    if lines:
        return lines[-1].strip()
    return None


def _to_number(s: str) -> float | None:
    s = s.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        v = float(s)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def numeric(completion: str, task: Task) -> float | None:
    """1.0 if the stated answer equals task.answer within verifier_args['tol'] (absolute, default 1e-6)."""
    ref = _to_number(task.answer)
    if ref is None:
        return None
    got = extract_answer(completion)
    val = _to_number(got) if got is not None else None
    if val is None:
        return 0.0
    tol = float(task.verifier_args.get("tol", 1e-6))
    return 1.0 if abs(val - ref) <= tol else 0.0


def label(completion: str, task: Task) -> float | None:
    """1.0 if the stated answer equals task.answer after case and whitespace normalisation."""
    got = extract_answer(completion)
    if got is None:
        return 0.0
    norm = lambda s: " ".join(s.lower().split())  # noqa: E731
    return 1.0 if norm(got) == norm(task.answer) else 0.0


VERIFIERS: dict[str, Verifier] = {"numeric": numeric, "label": label}


def score(task: Task, completion: str) -> float | None:
    """Score one completion with the task's own verifier."""
    fn = VERIFIERS.get(task.verifier)
    if fn is None:
        raise KeyError(f"task {task.id!r} names unknown verifier {task.verifier!r}; known: {sorted(VERIFIERS)}")
    try:
        s = fn(completion, task)
    except Exception:  # a verifier must never take training down on a strange output
        return None
    return None if s is None else float(min(1.0, max(0.0, s)))
