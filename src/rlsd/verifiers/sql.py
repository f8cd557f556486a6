"""SQL answers executed against SQLite and compared by result set: ``sql(completion, task)``.

The answer query is the stated answer (tag / answer line), else the last ```sql fenced block. It
runs against the task's database and its rows are compared with those of the reference query
``task.answer``: as multisets (order-insensitive, duplicates counted) unless
``verifier_args["ordered"]`` is true. Column names are ignored; floats are compared after rounding
to ``verifier_args.get("float_digits", 9)`` decimals; 1 == 1.0. Score 1/0.

The database (one of):
- ``verifier_args["db"]``: a path to a SQLite file, opened through a ``file:...?mode=ro`` URI;
- ``verifier_args["setup"]``: an SQL script run into a private in-memory database first.

Safety: besides the read-only open, an authorizer allows only reads (SELECT, READ, FUNCTION,
RECURSIVE; no ATTACH, PRAGMA, writes or DDL), ``PRAGMA query_only`` is on, a progress handler stops
a query after ``verifier_args.get("time_limit_s", 2.0)`` seconds, and at most
:data:`MAX_ROWS` rows are fetched (more counts as a wrong answer). A failing answer query scores 0;
a failing reference query, a missing database or a broken setup script give None (task defects).
"""

from __future__ import annotations

import sqlite3
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

from rlsd.tasks import Task
from rlsd.verifiers.extract import extract_answer, fenced_block, strip_fence

MAX_ROWS = 10_000
MAX_QUERY_CHARS = 10_000

_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, getattr(sqlite3, "SQLITE_RECURSIVE", 33)}


class _QueryError(Exception):
    pass


def _authorizer(action: int, *args: Any) -> int:
    return sqlite3.SQLITE_OK if action in _ALLOWED else sqlite3.SQLITE_DENY


def _connect(args: dict[str, Any]) -> sqlite3.Connection | None:
    if args.get("db"):
        p = Path(str(args["db"])).resolve()
        if not p.is_file():
            return None
        conn = sqlite3.connect(f"file:{urllib.parse.quote(str(p))}?mode=ro", uri=True, check_same_thread=False)
    elif args.get("setup"):
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        try:
            conn.executescript(str(args["setup"]))
        except sqlite3.Error:
            conn.close()
            return None
    else:
        return None
    conn.execute("PRAGMA query_only = ON")
    conn.set_authorizer(_authorizer)
    return conn


def _rows(conn: sqlite3.Connection, query: str, *, time_limit_s: float, digits: int) -> list[tuple]:
    deadline = time.monotonic() + time_limit_s
    conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 1000)
    try:
        cur = conn.execute(query)
        rows = cur.fetchmany(MAX_ROWS + 1)
    except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError, MemoryError) as e:
        raise _QueryError(str(e)) from None
    finally:
        conn.set_progress_handler(None, 0)
    if len(rows) > MAX_ROWS:
        raise _QueryError(f"more than {MAX_ROWS} rows")
    return [tuple(round(v, digits) if isinstance(v, float) else v for v in r) for r in rows]


def _answer_query(completion: str, fmt: str) -> str | None:
    got = extract_answer(completion, fmt)
    if got is not None:
        return strip_fence(got).strip()
    block = fenced_block(completion, ("sql", "sqlite"))
    return block.strip() if block is not None else None


def sql(completion: str, task: Task) -> float | None:
    args = task.verifier_args
    limit = float(args.get("time_limit_s", 2.0))
    digits = int(args.get("float_digits", 9))
    conn = _connect(args)
    if conn is None:
        return None
    try:
        try:
            ref = _rows(conn, task.answer, time_limit_s=max(limit, 5.0), digits=digits)
        except _QueryError:
            return None
        query = _answer_query(completion, args.get("format", "any"))
        if not query or len(query) > MAX_QUERY_CHARS:
            return 0.0
        try:
            got = _rows(conn, query.rstrip().rstrip(";"), time_limit_s=limit, digits=digits)
        except _QueryError:
            return 0.0
    finally:
        conn.close()
    if args.get("ordered", False):
        return 1.0 if got == ref else 0.0
    try:
        return 1.0 if Counter(got) == Counter(ref) else 0.0
    except TypeError:  # unhashable values cannot occur in sqlite rows, but never raise
        return 0.0
