"""SQL answers executed against SQLite in a bounded child process, compared by result set:
``sql(completion, task)``.

The answer query is the stated answer (tag / answer line), else the last ```sql fenced block. It runs
against the task's database and its rows are compared with those of the reference query ``task.answer``:
as multisets (order-insensitive, duplicates counted) unless ``verifier_args["ordered"]`` is true. Column
names are ignored; floats are compared after rounding to ``verifier_args.get("float_digits", 9)``
decimals; 1 == 1.0. Score 1/0.

The database (one of):
- ``verifier_args["db"]``: a path to a SQLite file, opened through a ``file:...?mode=ro`` URI;
- ``verifier_args["setup"]``: an SQL script run into a private in-memory database first.

Where the queries run: never in the caller's (the trainer's) process. Each verdict starts one child
(``python -I -S``, stdlib sqlite3 only, its own session) that runs the reference and the answer query and
writes their rows as JSON on stdout; the comparison happens here. The OS bounds the child: address space
``verifier_args.get("memory_mb", 256)`` MB and CPU seconds by ``setrlimit`` (hard = soft), no core files,
and a wall-clock deadline after which the whole process group is SIGKILLed. Inside it, SQLite's own
limits are lowered (strings and blobs <= 1 MB, SQL text <= 100 kB, 8 attached databases -> 0, compound
selects 64, expression depth 256), an authorizer allows only reads (SELECT, READ, FUNCTION, RECURSIVE;
no ATTACH, PRAGMA, writes or DDL), ``PRAGMA query_only`` is on, a progress handler stops a query after
``verifier_args.get("time_limit_s", 2.0)`` seconds, and at most :data:`MAX_ROWS` rows are fetched (more
counts as a wrong answer). So a ``zeroblob`` memory bomb or a runaway recursive query costs the caller
nothing but the wait. A failing answer query scores 0; a failing reference query, a missing database,
a broken setup script or a child that cannot start give None (task or host defects).
Why not the code sandbox (rlsd.verifiers.sandbox): a query needs no file system or network at all, and
SQLite's authorizer already refuses everything but reads; the OS limits are what it lacked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

from rlsd.tasks import Task
from rlsd.verifiers.extract import extract_answer, fenced_block, strip_fence

MAX_ROWS = 10_000
MAX_QUERY_CHARS = 10_000
MAX_OUTPUT_BYTES = 64 * 1024 * 1024

# Runs in the child: stdlib only; reads one JSON request on stdin, writes one JSON reply on stdout.
_CHILD = r"""
import json, sqlite3, sys, time
req = json.loads(sys.stdin.read())
ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, getattr(sqlite3, "SQLITE_RECURSIVE", 33)}
def reply(**kw):
    sys.stdout.write(json.dumps(kw)); sys.stdout.flush(); sys.exit(0)
try:
    if req.get("db"):
        conn = sqlite3.connect(req["db"], uri=True)
    else:
        conn = sqlite3.connect(":memory:")
        conn.executescript(req["setup"])
except Exception as e:
    reply(setup_error=str(e)[:300])
for limit, value in ((sqlite3.SQLITE_LIMIT_LENGTH, 1_000_000), (sqlite3.SQLITE_LIMIT_SQL_LENGTH, 100_000),
                     (sqlite3.SQLITE_LIMIT_ATTACHED, 0), (sqlite3.SQLITE_LIMIT_COMPOUND_SELECT, 64),
                     (sqlite3.SQLITE_LIMIT_EXPR_DEPTH, 256)):
    conn.setlimit(limit, value)
conn.execute("PRAGMA query_only = ON")
conn.set_authorizer(lambda action, *a: sqlite3.SQLITE_OK if action in ALLOWED else sqlite3.SQLITE_DENY)
def run(query, seconds):
    deadline = time.monotonic() + seconds
    conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 1000)
    try:
        rows = conn.execute(query).fetchmany(req["max_rows"] + 1)
    except Exception as e:
        return None, (type(e).__name__ + ": " + str(e))[:300]
    finally:
        conn.set_progress_handler(None, 0)
    if len(rows) > req["max_rows"]:
        return None, "more than %d rows" % req["max_rows"]
    out = []
    for r in rows:
        out.append([{"b": bytes(v).hex()} if isinstance(v, (bytes, memoryview)) else v for v in r])
    return out, None
ref, ref_error = run(req["reference"], req["reference_s"])
if ref_error:
    reply(ref_error=ref_error)
got, got_error = run(req["answer"], req["answer_s"])
reply(ref=ref, got=got, got_error=got_error)
"""


def _limits(memory_mb: int, cpu_s: int):
    import resource

    def apply() -> None:  # in the child, between fork and exec
        for what, value in ((resource.RLIMIT_AS, memory_mb * 1024 * 1024), (resource.RLIMIT_CPU, cpu_s),
                            (resource.RLIMIT_CORE, 0), (resource.RLIMIT_FSIZE, 0)):
            try:
                resource.setrlimit(what, (value, value))
            except (ValueError, OSError):
                pass

    return apply


def run_queries(args: dict[str, Any], reference: str, answer: str, *, time_limit_s: float) -> dict[str, Any] | None:
    """The child's reply ({ref, got, got_error} or {ref_error} or {setup_error}), {"got_error": ...} when the
    child was killed or broke its limits, None when no database is named or the child cannot start."""
    if args.get("db"):
        p = Path(str(args["db"])).resolve()
        if not p.is_file():
            return None
        req: dict[str, Any] = {"db": f"file:{urllib.parse.quote(str(p))}?mode=ro"}
    elif args.get("setup"):
        req = {"setup": str(args["setup"])}
    else:
        return None
    req.update(reference=reference, answer=answer, reference_s=max(time_limit_s, 5.0), answer_s=time_limit_s,
               max_rows=MAX_ROWS)
    memory_mb = int(args.get("memory_mb", 256))
    wall = req["reference_s"] + time_limit_s + 5.0  # both queries, plus the interpreter's start
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _CHILD], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=_limits(memory_mb, int(wall) + 1), env={"PATH": os.defpath})
    except OSError:
        return None
    try:
        out, _ = proc.communicate(json.dumps(req).encode(), timeout=wall)
    except subprocess.TimeoutExpired:
        _kill(proc)
        return {"got_error": f"killed after {wall:.0f} s"}
    finally:
        _kill(proc)
    if len(out) > MAX_OUTPUT_BYTES:
        return {"got_error": "output too large"}
    try:
        reply = json.loads(out)
    except ValueError:  # the child died (memory limit, signal) before it could answer
        return {"got_error": f"query process ended with status {proc.returncode}"}
    return reply if isinstance(reply, dict) else None


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _answer_query(completion: str, fmt: str) -> str | None:
    got = extract_answer(completion, fmt)
    if got is not None:
        return strip_fence(got).strip()
    block = fenced_block(completion, ("sql", "sqlite"))
    return block.strip() if block is not None else None


def _canon(rows: list[list[Any]], digits: int) -> list[tuple]:
    def value(v: Any) -> Any:
        if isinstance(v, dict):
            return ("blob", v.get("b"))
        return round(v, digits) if isinstance(v, float) else v

    return [tuple(value(v) for v in r) for r in rows]


def sql(completion: str, task: Task) -> float | None:
    args = task.verifier_args
    limit = float(args.get("time_limit_s", 2.0))
    digits = int(args.get("float_digits", 9))
    if not (args.get("db") or args.get("setup")):
        return None
    query = _answer_query(completion, args.get("format", "any"))
    if not query or len(query) > MAX_QUERY_CHARS:
        # the reference must still be checked: a task whose own query fails cannot be verified
        query = "SELECT NULL WHERE 0"
        empty = True
    else:
        empty = False
    reply = run_queries(args, task.answer, query.rstrip().rstrip(";"), time_limit_s=limit)
    if reply is None or "setup_error" in reply or "ref_error" in reply:
        return None
    if empty or reply.get("got_error") or not isinstance(reply.get("got"), list):
        return 0.0
    ref, got = _canon(reply.get("ref") or [], digits), _canon(reply["got"], digits)
    if args.get("ordered", False):
        return 1.0 if got == ref else 0.0
    return 1.0 if Counter(got) == Counter(ref) else 0.0
