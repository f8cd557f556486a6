"""The Task record that crosses every boundary, JSONL I/O, and a small generated task set.

A Task is one verifiable problem: the student ``prompt`` (question only), the
``privileged_context`` only the teacher sees (a verified answer, a resolution, a manual passage),
the reference ``answer`` and the name of the ``verifier`` that scores a completion against it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator


@dataclass(frozen=True)
class Task:
    id: str
    prompt: str
    privileged_context: str
    answer: str
    verifier: str = "numeric"
    # Verifier settings (tolerance, JSON schema, SQL database, unit tests ...).
    verifier_args: dict[str, Any] = field(default_factory=dict)
    # Free-form: difficulty tier, source ticket id, answer type, snapshot id ...
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("id", "prompt", "answer", "verifier"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v:
                raise ValueError(f"Task.{name} must be a non-empty string, got {v!r} (task id {self.id!r})")
        if not isinstance(self.privileged_context, str):
            raise ValueError(f"Task.privileged_context must be a string (task id {self.id!r})")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Task:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown Task field(s) {unknown}; valid: {sorted(names)}")
        return cls(**d)


def read_tasks(path: str | Path) -> list[Task]:
    """Read Task records from a JSONL file; errors name the file and line."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"task file {str(p)!r} does not exist (build it with `rlsd build-tasks` or `rlsd make-tasks`)")
    tasks = []
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                tasks.append(Task.from_dict(json.loads(line)))
            except (ValueError, TypeError) as e:
                raise ValueError(f"{p}:{n}: bad task record: {e}") from None
    if not tasks:
        raise ValueError(f"task file {str(p)!r} holds no tasks")
    return tasks


@contextlib.contextmanager
def task_writer(path: str | Path) -> Iterator[Callable[[Task], None]]:
    """``with task_writer(p) as write: write(task) ...``: JSONL through a temporary file that replaces
    ``path`` only when the block ends without an error (readers never see half a file)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            yield lambda t: f.write(json.dumps(t.to_dict(), ensure_ascii=False) + "\n")
        tmp.replace(p)
    finally:
        tmp.unlink(missing_ok=True)


def write_tasks(tasks: Iterable[Task], path: str | Path) -> int:
    n = 0
    with task_writer(path) as write:
        for t in tasks:
            write(t)
            n += 1
    return n


# ----------------------------------------------------------------------------------------------
# Generated addition tasks with a scratchpad (tests, the tiny recipe, learning benchmarks)
# ----------------------------------------------------------------------------------------------


def addition_scratchpad(a: int, b: int) -> str:
    """The worked solution: digit sums from the right with carries, then the answer.

    >>> addition_scratchpad(347, 589)
    '7+9=16,4+8+1=13,3+5+1=9\\nA:936'
    """
    da, db = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        s = x + y + carry
        steps.append(f"{x}+{y}" + (f"+{carry}" if carry else "") + f"={s}")
        carry = s // 10
    return ",".join(steps) + f"\nA:{a + b}"


def addition_tasks(n: int, *, digits: Iterable[int] = (2, 3), seed: int = 0, prefix: str = "add") -> Iterator[Task]:
    """n addition problems, digit counts drawn round-robin from ``digits``.

    The student sees ``Q:a+b=?``; the privileged context is the verified answer (as in RLSD).
    """
    rng = random.Random(seed)
    digits = list(digits)
    for i in range(n):
        d = digits[i % len(digits)]
        a = rng.randint(10 ** (d - 1), 10**d - 1)
        b = rng.randint(10 ** (d - 1), 10**d - 1)
        yield Task(
            id=f"{prefix}-{seed}-{i}",
            prompt=f"Q:{a}+{b}=?\n",
            privileged_context=str(a + b),
            answer=str(a + b),
            verifier="numeric",
            meta={"family": "addition", "digits": d, "solution": addition_scratchpad(a, b)},
        )
