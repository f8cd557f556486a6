"""Verifiers: one function per answer kind, the same for training reward and evaluation.

Each verifier is ``fn(completion: str, task: Task) -> float | None``: a score in [0, 1], or None
when the task cannot be verified (a defect of the task, e.g. an unreadable reference). It never
raises on model output; :func:`score` additionally turns any unexpected exception into None and
clamps to [0, 1]. Only the first ``MAX_COMPLETION_CHARS`` (100 000) characters of a completion are
examined (rlsd.verifiers.extract).

Kinds (``task.verifier``): ``numeric`` (tolerances, units, fractions, percentages, LaTeX, sympy),
``label`` (normalised exact match, aliases), ``json`` (JSON Schema + expected fields, partial
credit), ``sql`` (SQLite result sets), ``code`` (Python against unit tests in a sandbox),
``expression`` (an arithmetic expression of given numbers that must reach a target; no eval), ``text``
(free text graded against the verified resolution: similarity, rubric, local judge, composed;
rlsd.verifiers.graders). Each
module's docstring states its rules and its ``verifier_args``.
"""

from __future__ import annotations

from collections.abc import Callable

from rlsd.tasks import Task
from rlsd.verifiers.expression import expression
from rlsd.verifiers.extract import MAX_COMPLETION_CHARS, extract_answer, format_score
from rlsd.verifiers.graders import GraderModelMissing, text
from rlsd.verifiers.graders import prefetch as _prefetch_judges
from rlsd.verifiers.json_answer import json_answer
from rlsd.verifiers.label import label
from rlsd.verifiers.numeric import numeric
from rlsd.verifiers.pycode import python_code
from rlsd.verifiers.sandbox import CodeSandboxUnavailable
from rlsd.verifiers.sql import sql

Verifier = Callable[[str, Task], "float | None"]

VERIFIERS: dict[str, Verifier] = {
    "numeric": numeric,
    "label": label,
    "json": json_answer,
    "sql": sql,
    "code": python_code,
    "expression": expression,
    "text": text,
}

__all__ = ["MAX_COMPLETION_CHARS", "VERIFIERS", "Verifier", "extract_answer", "format_score", "score",
           "score_many", "task_format_score"]


def score(task: Task, completion: str) -> float | None:
    """Score one completion with the task's own verifier (clamped to [0, 1]; None = cannot verify)."""
    fn = VERIFIERS.get(task.verifier)
    if fn is None:
        raise KeyError(f"task {task.id!r} names unknown verifier {task.verifier!r}; known: {sorted(VERIFIERS)}")
    try:
        s = fn(completion, task)
    except (CodeSandboxUnavailable, GraderModelMissing):  # the operator's to see (no confinement, no judge), not a 0
        raise
    except Exception:  # a verifier must never take training down on a strange output
        return None
    if s is None or s != s:  # None or NaN
        return None
    return float(min(1.0, max(0.0, s)))


def score_many(tasks: list[Task], completions: list[str]) -> list[float | None]:
    """``score`` of each (task, completion) pair, with the local judge's calls batched ahead."""
    _prefetch_judges(tasks, completions)
    return [score(t, c) for t, c in zip(tasks, completions)]


def task_format_score(task: Task, completion: str) -> float:
    """format_score in the task's stated format (verifier_args['format'], default 'any')."""
    return format_score(completion, task.verifier_args.get("format", "any"))
