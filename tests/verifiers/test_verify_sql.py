"""SQL answers: result sets compared as multisets, read-only, time-limited."""

import sqlite3
import time

import pytest

from rlsd.tasks import Task
from rlsd.verifiers import score

SETUP = """
CREATE TABLE emp(id INTEGER PRIMARY KEY, name TEXT, dept TEXT, salary REAL);
INSERT INTO emp VALUES (1,'ann','ops',100.0),(2,'bob','ops',200.0),(3,'cy','dev',300.0),(4,'di','dev',300.0);
"""
REF = "SELECT dept, SUM(salary) FROM emp GROUP BY dept"


def task(answer=REF, **args):
    args.setdefault("setup", SETUP)
    return Task(id="t", prompt="Q", privileged_context="", answer=answer, verifier="sql", verifier_args=args)


@pytest.fixture()
def db_file(tmp_path):
    p = tmp_path / "co.db"
    with sqlite3.connect(p) as c:
        c.executescript(SETUP)
    c.close()
    return p


@pytest.mark.parametrize("completion, answer, args, expected", [
    (f"<answer>{REF}</answer>", REF, {}, 1.0),
    ("<answer>SELECT dept, SUM(salary) FROM emp GROUP BY dept ORDER BY dept DESC;</answer>", REF, {}, 1.0),
    ("<answer>SELECT d, s FROM (SELECT dept d, TOTAL(salary) s FROM emp GROUP BY dept)</answer>", REF, {}, 1.0),
    ("```sql\nSELECT dept, SUM(salary) FROM emp GROUP BY dept\n```", REF, {}, 1.0),
    ("<answer>SELECT dept, MAX(salary) FROM emp GROUP BY dept</answer>", REF, {}, 0.0),
    ("<answer>SELECT dept FROM emp GROUP BY dept</answer>", REF, {}, 0.0),
    # multiset: duplicates count
    ("<answer>SELECT salary FROM emp</answer>", "SELECT DISTINCT salary FROM emp", {}, 0.0),
    ("<answer>SELECT salary FROM emp ORDER BY id DESC</answer>", "SELECT salary FROM emp", {}, 1.0),
    # ordered comparison when asked
    ("<answer>SELECT name FROM emp ORDER BY name DESC</answer>", "SELECT name FROM emp ORDER BY name",
     {"ordered": True}, 0.0),
    ("<answer>SELECT name FROM emp ORDER BY name</answer>", "SELECT name FROM emp ORDER BY name",
     {"ordered": True}, 1.0),
    # 1 == 1.0; floats rounded
    ("<answer>SELECT 0.1 + 0.2</answer>", "SELECT 0.3", {}, 1.0),
    ("<answer>SELECT 1.0</answer>", "SELECT 1", {}, 1.0),
    # adversarial: writes, DDL, attach, pragmas, several statements, garbage, endless recursion
    ("<answer>DELETE FROM emp</answer>", "SELECT COUNT(*) FROM emp", {}, 0.0),
    ("<answer>DROP TABLE emp</answer>", REF, {}, 0.0),
    ("<answer>SELECT 1; DROP TABLE emp</answer>", REF, {}, 0.0),
    ("<answer>ATTACH DATABASE '/tmp/rlsd-evil.db' AS e</answer>", REF, {}, 0.0),
    ("<answer>PRAGMA table_info(emp)</answer>", REF, {}, 0.0),
    ("<answer>not sql at all</answer>", REF, {}, 0.0),
    ("", REF, {}, 0.0),
    ("<answer>WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT COUNT(*) FROM c</answer>",
     REF, {"time_limit_s": 0.5}, 0.0),
    ("<answer>WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 50000) SELECT x FROM c</answer>",
     REF, {}, 0.0),  # more rows than the cap
    ("<answer>SELECT 1" + " " * 100_000 + "</answer>", "SELECT 1", {}, 0.0),  # longer than the query cap
])
def test_sql_table(completion, answer, args, expected):
    t = time.monotonic()
    assert score(task(answer, **args), completion) == expected
    assert time.monotonic() - t < 15


def test_file_database_is_opened_read_only(db_file):
    t = Task(id="t", prompt="Q", privileged_context="", answer="SELECT COUNT(*) FROM emp", verifier="sql",
             verifier_args={"db": str(db_file)})
    assert score(t, "<answer>SELECT COUNT(*) FROM emp</answer>") == 1.0
    assert score(t, "<answer>DELETE FROM emp</answer>") == 0.0
    assert score(t, "<answer>INSERT INTO emp VALUES (9,'x','y',1)</answer>") == 0.0
    evil = db_file.parent / "rlsd-evil.db"
    assert score(t, f"<answer>ATTACH DATABASE '{evil}' AS e</answer>") == 0.0
    with sqlite3.connect(db_file) as c:
        assert c.execute("SELECT COUNT(*) FROM emp").fetchone() == (4,)
    c.close()
    assert not evil.exists()


@pytest.mark.parametrize("args", [{"db": "/no/such/file.db"}, {"setup": "CREATE TABLE ("}, {}])
def test_missing_or_broken_database_cannot_be_verified(args):
    t = Task(id="t", prompt="Q", privileged_context="", answer="SELECT 1", verifier="sql", verifier_args=args)
    assert score(t, "<answer>SELECT 1</answer>") is None


def test_broken_reference_query_cannot_be_verified():
    assert score(task("SELECT nope FROM nothing"), "<answer>SELECT 1</answer>") is None


@pytest.mark.parametrize("query", [
    "SELECT length(zeroblob(2000000000))",                   # SQLite's length limit refuses it
    "SELECT length(group_concat(x)) FROM (WITH RECURSIVE c(x) AS (SELECT randomblob(900000) UNION ALL "
    "SELECT randomblob(900000) FROM c LIMIT 3000) SELECT x FROM c)",  # gigabytes through a tiny limit
    "SELECT length(replace(hex(zeroblob(400000)), '0', hex(zeroblob(400000))))",
])
def test_memory_bombs_run_outside_the_caller_and_within_limits(query):
    """The zeroblob bomb of issue 17 raised the trainer's RSS from 21 MB to 3.4 GB and ran 5 s past a 2 s
    limit. Now: 0, the caller's peak RSS unchanged (within 20 MB) and within limit + interpreter start."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    assert score(task(time_limit_s=2.0), f"<answer>{query}</answer>") == 0.0
    assert time.monotonic() - t0 < 2.0 + 5.0 + 3.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 20 * 1024  # KiB


def test_queries_never_run_in_the_callers_process(monkeypatch):
    """sqlite3 is never used by the caller itself: a connect there fails the test."""
    import sqlite3 as lib

    def refuse(*a, **k):
        raise AssertionError("query ran in the caller's process")

    monkeypatch.setattr(lib, "connect", refuse)
    assert score(task(), f"<answer>{REF}</answer>") == 1.0
