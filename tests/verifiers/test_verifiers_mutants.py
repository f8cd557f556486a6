"""Exact behaviour of the SQL, JSON and label verifiers, answer extraction and the verifier entry points
(issue 21: every value hand-computed; the SQL child's confinement checked where the OS settings are made)."""

import json
import os
import signal
import subprocess
import sys

import pytest

import rlsd.verifiers as verifiers
from rlsd.tasks import Task
from rlsd.verifiers import score, task_format_score
from rlsd.verifiers.extract import (
    cap,
    extract_answer,
    fenced_block,
    format_score,
    strip_fence,
    unmarked_answer,
)
from rlsd.verifiers.json_answer import MAX_JSON_CHARS, json_answer
from rlsd.verifiers.label import label
from rlsd.verifiers.sql import MAX_QUERY_CHARS, run_queries, sql

sql_mod = sys.modules["rlsd.verifiers.sql"]  # the package exports the function sql under the same name


def mk(verifier, answer, **args):
    return Task(id="t", prompt="Q", privileged_context="", answer=answer, verifier=verifier, verifier_args=args)


def sql_task(answer, **args):
    args.setdefault("setup", "CREATE TABLE t(x INTEGER); INSERT INTO t VALUES (1),(2);")
    return mk("sql", answer, **args)


# ---------------------------------------------------------------- SQL: verdicts (a real child each)

def test_sql_pays_exactly_one_for_a_right_result_set_ordered_or_not():
    assert sql("<answer>SELECT x FROM t ORDER BY x DESC</answer>", sql_task("SELECT x FROM t")) == 1.0
    assert sql("<answer>SELECT x FROM t ORDER BY x</answer>", sql_task("SELECT x FROM t ORDER BY x",
                                                                       ordered=True)) == 1.0


def test_sql_float_digits_rounds_both_sides_to_that_many_decimals():
    assert sql("<answer>SELECT 1.231</answer>", sql_task("SELECT 1.234", float_digits=2)) == 1.0  # 1.23 == 1.23
    assert sql("<answer>SELECT 1.234</answer>", sql_task("SELECT 1.236", float_digits=2)) == 0.0  # 1.23 != 1.24
    # default: 9 decimals, so a difference in the 10th decimal is forgiven, one in the 9th is not
    assert sql("<answer>SELECT 0.1234567891</answer>", sql_task("SELECT 0.1234567894")) == 1.0
    assert sql("<answer>SELECT 0.123456781</answer>", sql_task("SELECT 0.123456784")) == 0.0


def test_sql_blobs_compare_by_their_bytes():
    assert sql("<answer>SELECT x'01'</answer>", sql_task("SELECT x'02'")) == 0.0
    assert sql("<answer>SELECT x'0a0b'</answer>", sql_task("SELECT x'0A0B'")) == 1.0


def test_sql_answer_format_is_honoured():
    # format "tag": an answer line is not an answer, and there is no ```sql block to fall back on
    assert sql("Answer: SELECT x FROM t", sql_task("SELECT x FROM t", format="tag")) == 0.0
    assert sql("Answer: SELECT x FROM t", sql_task("SELECT x FROM t", format="line")) == 1.0


def test_sql_fenced_sqlite_block_and_uppercase_fence_language():
    assert sql("Here:\n```sqlite\nSELECT x FROM t\n```", sql_task("SELECT x FROM t")) == 1.0
    assert sql("<answer>```SQL\nSELECT x FROM t\n```</answer>", sql_task("SELECT x FROM t")) == 1.0


def test_sql_query_length_cap_is_inclusive():
    q = "SELECT 1" + " " * (MAX_QUERY_CHARS - 10) + "+0"
    assert len(q) == MAX_QUERY_CHARS
    assert sql(f"<answer>{q}</answer>", sql_task("SELECT 1")) == 1.0
    q1 = "SELECT 1" + " " * (MAX_QUERY_CHARS - 9) + "+0"
    assert sql(f"<answer>{q1}</answer>", sql_task("SELECT 1")) == 0.0


def test_sql_missing_answer_is_wrong_even_when_the_reference_is_empty():
    # the placeholder query returns no rows, like this reference: it must still score 0
    assert sql("I do not know.", sql_task("SELECT x FROM t WHERE x > 5")) == 0.0
    assert sql("<answer>SELECT x FROM t WHERE x > 9</answer>", sql_task("SELECT x FROM t WHERE x > 5")) == 1.0


def test_sql_trailing_semicolons_are_dropped_but_nothing_else():
    assert sql("<answer>SELECT x FROM t;;</answer>", sql_task("SELECT x FROM t")) == 1.0
    assert sql("<answer>SELECT 1 AS X</answer>", sql_task("SELECT 1")) == 1.0  # a final X is kept


def test_sql_default_time_limit_is_two_seconds(monkeypatch):
    seen = []

    def fake(args, reference, answer, *, time_limit_s):
        seen.append((reference, answer, time_limit_s))
        return {"ref": [[1]], "got": [[1]], "got_error": None}

    monkeypatch.setattr(sql_mod, "run_queries", fake)
    assert sql("<answer>SELECT 1;</answer>", sql_task("SELECT 1")) == 1.0
    assert sql("<answer>SELECT 1</answer>", sql_task("SELECT 1", time_limit_s=0.5)) == 1.0
    assert seen == [("SELECT 1", "SELECT 1", 2.0), ("SELECT 1", "SELECT 1", 0.5)]


# ---------------------------------------------------------------- SQL: how the child is started

class FakeProc:
    pid = 4_000_000  # never signalled: os.killpg is replaced below

    def __init__(self, out=b"", returncode=0, timeout=False):
        self.out, self.returncode, self.timeout = out, returncode, timeout
        self.stdin_data = None
        self.comm_timeout = "unset"
        self.waited = 0

    def communicate(self, data, timeout=None):
        self.stdin_data, self.comm_timeout = data, timeout
        if self.timeout:
            raise subprocess.TimeoutExpired("python", timeout)
        return self.out, None

    def wait(self):
        self.waited += 1


@pytest.fixture()
def proc_in(monkeypatch):
    """Replaces Popen, os.killpg and _limits; returns (use, calls, kills): use(FakeProc) is what Popen gives."""
    calls, kills, holder = [], [], {}

    def popen(argv, **kw):
        calls.append((argv, kw))
        return holder["proc"]

    monkeypatch.setattr(sql_mod.subprocess, "Popen", popen)
    monkeypatch.setattr(sql_mod.os, "killpg", lambda pid, sig: kills.append((pid, sig)))
    monkeypatch.setattr(sql_mod, "_limits", lambda memory_mb, cpu_s: ("limits", memory_mb, cpu_s))

    def use(p):
        holder["proc"] = p
        return p

    use(FakeProc(b'{"ref": [[1]], "got": [[1]], "got_error": null}'))
    return use, calls, kills


def test_child_is_isolated_interpreter_in_own_session_with_limits(proc_in):
    use, calls, kills = proc_in
    p = use(FakeProc(b'{"ref": [[1]], "got": [[1]], "got_error": null}'))
    reply = run_queries({"setup": "CREATE TABLE a(x)"}, "SELECT 1", "SELECT 2", time_limit_s=2.0)
    assert reply == {"ref": [[1]], "got": [[1]], "got_error": None}
    (argv, kw), = calls
    assert argv[:4] == [sys.executable, "-I", "-S", "-c"]
    assert kw["stdin"] is subprocess.PIPE and kw["stdout"] is subprocess.PIPE
    assert kw["stderr"] is subprocess.DEVNULL
    assert kw["start_new_session"] is True
    assert kw["env"] == {"PATH": os.defpath}
    # reference gets max(2, 5) = 5 s; wall = 5 + 2 + 5 = 12 s; CPU limit int(12) + 1 = 13 s; 256 MB
    assert kw["preexec_fn"] == ("limits", 256, 13)
    assert p.comm_timeout == 12.0
    assert json.loads(p.stdin_data) == {
        "setup": "CREATE TABLE a(x)", "reference": "SELECT 1", "answer": "SELECT 2", "reference_s": 5.0,
        "answer_s": 2.0, "max_rows": 10_000}
    assert kills == [(FakeProc.pid, signal.SIGKILL)]  # the group is killed after the reply too


def test_child_request_wall_clock_and_memory(proc_in):
    use, calls, kills = proc_in
    p = use(FakeProc(b'{"ref": [], "got": [], "got_error": null}'))
    run_queries({"setup": "S", "memory_mb": 64}, "R", "A", time_limit_s=7.5)
    # reference max(7.5, 5) = 7.5; wall 7.5 + 7.5 + 5 = 20 s; CPU 21 s
    assert calls[-1][1]["preexec_fn"] == ("limits", 64, 21)
    assert p.comm_timeout == 20.0
    assert json.loads(p.stdin_data)["reference_s"] == 7.5
    p = use(FakeProc(b'{"ref": [], "got": [], "got_error": null}'))
    run_queries({"setup": "S"}, "R", "A", time_limit_s=2.0)
    assert p.comm_timeout == 12.0
    assert json.loads(p.stdin_data)["reference_s"] == 5.0
    assert calls[-1][1]["preexec_fn"] == ("limits", 256, 13)


def test_child_past_its_wall_clock_is_killed_and_scores_wrong(proc_in, monkeypatch):
    use, calls, kills = proc_in
    use(FakeProc(timeout=True))
    assert run_queries({"setup": "S"}, "R", "A", time_limit_s=2.0) == {"got_error": "killed after 12 s"}
    assert kills == [(FakeProc.pid, signal.SIGKILL)] * 2
    use(FakeProc(timeout=True))
    assert sql("<answer>SELECT 1</answer>", sql_task("SELECT 1")) == 0.0


def test_child_dying_or_flooding_stdout_is_a_wrong_answer(proc_in, monkeypatch):
    use, calls, kills = proc_in
    use(FakeProc(b"", returncode=-9))
    assert run_queries({"setup": "S"}, "R", "A", time_limit_s=1.0) == {
        "got_error": "query process ended with status -9"}
    at_cap = b'{"ref": [[1]], "got": [[1]], "x": "12345"}'
    monkeypatch.setattr(sql_mod, "MAX_OUTPUT_BYTES", len(at_cap))  # exactly at the cap: still read
    use(FakeProc(at_cap))
    assert run_queries({"setup": "S"}, "R", "A", time_limit_s=1.0) == {"ref": [[1]], "got": [[1]], "x": "12345"}
    use(FakeProc(at_cap[:-1] + b' }'))
    assert run_queries({"setup": "S"}, "R", "A", time_limit_s=1.0) == {"got_error": "output too large"}


def test_child_reply_that_is_not_an_object_cannot_verify(proc_in):
    use, calls, kills = proc_in
    use(FakeProc(b"[1, 2]"))
    assert run_queries({"setup": "S"}, "R", "A", time_limit_s=1.0) is None


def test_limits_set_hard_equal_to_soft(monkeypatch):
    import resource

    set_ = []
    monkeypatch.setattr(resource, "setrlimit", lambda what, v: set_.append((what, v)))
    sql_mod._limits(7, 3)()
    assert set_ == [(resource.RLIMIT_AS, (7 * 1024 * 1024,) * 2), (resource.RLIMIT_CPU, (3, 3)),
                    (resource.RLIMIT_CORE, (0, 0)), (resource.RLIMIT_FSIZE, (0, 0))]


# ---------------------------------------------------------------- JSON

def test_json_scores_exact_values():
    assert json_answer('{"a": 1, "b": 2}', mk("json", '{"a": 1, "b": 2}')) == 1.0
    assert json_answer("[1, 2]", mk("json", "[1, 2]")) == 1.0
    assert json_answer('{"x": 1}', mk("json", "{}")) == 1.0
    assert json_answer("[1]", mk("json", '{"a": 1}')) == 0.0  # an object was expected


def test_json_a_list_never_equals_an_object_with_the_same_keys():
    t = mk("json", '{"k": {"a": 1}, "m": 2}')
    assert json_answer('{"k": ["a"], "m": 2}', t) == 0.5
    assert json_answer('{"k": [1], "m": 2}', t) == 0.5


def test_json_bare_scalar_completion_is_not_an_answer():
    assert json_answer("42", mk("json", "42")) == 0.0
    assert json_answer("<answer>42</answer>", mk("json", "42")) == 1.0


def test_json_answer_format_is_honoured():
    assert json_answer('Answer: {"a": 1}', mk("json", '{"a": 1}', format="tag")) == 0.0
    assert json_answer('Answer: {"a": 1}', mk("json", '{"a": 1}', format="line")) == 1.0


def test_json_length_cap_is_inclusive():
    pad = MAX_JSON_CHARS - len('{"a": ""}')
    text = '{"a": "' + "x" * pad + '"}'
    assert len(text) == MAX_JSON_CHARS
    assert json_answer(text, mk("json", text)) == 1.0
    longer = '{"a": "' + "x" * (pad + 1) + '"}'
    assert json_answer(longer, mk("json", longer)) == 0.0


def test_json_schema_recursion_is_a_wrong_answer():
    deep = "[" * 500 + "]" * 500  # json.loads parses 500 levels; the validator's $ref recursion does not
    assert len(json.loads(deep)) == 1
    assert json_answer(deep, mk("json", "[]", schema={"type": "array", "items": {"$ref": "#"}})) == 0.0


def test_json_fenced_block_language_choice():
    t = mk("json", '{"a": 1}')
    assert json_answer('```json\n{"a": 1}\n```\nthen\n```python\nprint(1)\n```', t) == 1.0
    assert json_answer('Here:\n```\n{"a": 1}\n```', t) == 1.0


# ---------------------------------------------------------------- labels

def test_label_scores_exactly_one():
    assert label("<answer>Paris</answer>", mk("label", "paris")) == 1.0
    t = mk("label", "amber", choices=["red", "amber", "green"])
    assert label("<answer>It blinks amber.</answer>", t) == 1.0


def test_label_answer_length_cap_is_inclusive():
    assert label("<answer>" + "a" * 10_000 + "</answer>", mk("label", "a" * 10_000)) == 1.0
    assert label("<answer>" + "a" * 10_001 + "</answer>", mk("label", "a" * 10_001)) == 0.0


# ---------------------------------------------------------------- extraction and format score

def test_cap_of_a_non_string_is_empty():
    assert cap(None) == ""
    assert cap(42) == ""


def test_format_score_per_kind():
    assert format_score("<answer>1</answer>", "tag") == 1.0
    assert format_score("Answer: 1", "line") == 1.0
    assert format_score("<answer>\\boxed{1}</answer>", "tag") == 1.0  # the box inside belongs to the tag
    assert format_score("\\boxed{1}\\boxed{2}", "any") == 0.0  # adjacent boxes are two statements


def test_format_score_counts_statements_after_a_nested_box():
    assert format_score("<answer>\\boxed{1}</answer> <answer>2</answer>", "any") == 0.0


def test_empty_tag_then_a_full_one_are_two_statements():
    assert format_score("<answer></answer> then <answer>5</answer>", "any") == 0.0
    assert extract_answer("<answer></answer> then <answer>5</answer>") == "5"


def test_tag_nested_in_tag_then_another_tag():
    assert extract_answer("<answer><answer>1</answer> <answer>2</answer>", "tag") == "2"


@pytest.mark.timeout(10)
def test_stray_closing_tags_before_three_answers():
    text = "</answer> <answer>a</answer> <answer>b</answer> <answer>c</answer>"
    assert extract_answer(text, "tag") == "c"
    assert extract_answer("</answer> <answer>a</answer> <answer>b</answer>", "tag") == "b"


def test_unknown_format_error_names_the_formats():
    with pytest.raises(ValueError, match=r"answer format must be one of \('any', 'tag', 'line', 'boxed'\), got 'xml'"):
        extract_answer("<answer>1</answer>", "xml")
    with pytest.raises(ValueError, match=r"answer format must be one of \('any', 'tag', 'line', 'boxed'\), got 'xml'"):
        format_score("<answer>1</answer>", "xml")


def test_fenced_block_takes_last_block_without_or_with_a_wanted_language():
    assert fenced_block("```python\nx\n```", ("json",)) is None
    assert fenced_block("```\nx\n```\n```python\ny\n```", ("json",)) == "x\n"


def test_strip_fence_accepts_an_uppercase_language():
    assert strip_fence("```SQL\nSELECT 1\n```") == "SELECT 1\n"


def test_unmarked_answer_reads_only_the_last_4096_characters():
    assert unmarked_answer("9" + "1" * 4096) == "1" * 4096


# ---------------------------------------------------------------- entry points

def test_score_clamps_to_one(monkeypatch):
    monkeypatch.setitem(verifiers.VERIFIERS, "label", lambda c, t: 1.5)
    assert score(mk("label", "a"), "x") == 1.0


def test_unknown_verifier_message_lists_known_ones():
    with pytest.raises(KeyError, match=r"task 't' names unknown verifier 'nope'; known: \['code', 'expression', "
                                       r"'json', 'label', 'numeric', 'sql', 'text'\]"):
        score(mk("nope", "a"), "x")


def test_task_format_score_uses_the_tasks_format():
    assert task_format_score(mk("label", "a", format="tag"), "<answer>1</answer>") == 1.0
    assert task_format_score(mk("label", "a", format="tag"), "Answer: 1") == 0.0
    assert task_format_score(mk("label", "a"), "Answer: 1") == 1.0

