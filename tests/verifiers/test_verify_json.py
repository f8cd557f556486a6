"""JSON answers: schema + expected field values, field-wise partial credit."""

import json

import pytest

from rlsd.tasks import Task
from rlsd.verifiers import score

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "tags": {"type": "array"}},
    "required": ["name", "age"],
}
EXPECTED = json.dumps({"name": "Ada", "age": 36, "tags": ["math", "code"]})


def task(answer=EXPECTED, **args):
    args.setdefault("schema", SCHEMA)
    return Task(id="t", prompt="Q", privileged_context="", answer=answer, verifier="json", verifier_args=args)


@pytest.mark.parametrize("completion, args, expected", [
    ('<answer>{"name": "Ada", "age": 36, "tags": ["math", "code"]}</answer>', {}, 1.0),
    ('<answer>{"tags": ["math", "code"], "age": 36, "name": "Ada"}</answer>', {}, 1.0),  # key order
    ('<answer>{"name": "Ada", "age": 36.0, "tags": ["math", "code"]}</answer>', {"schema": {"type": "object"}}, 1.0),
    ('<answer>{"name": "Ada", "age": 36, "tags": ["math", "code"], "extra": 1}</answer>', {}, 1.0),
    # partial credit: fraction of the 3 expected fields reproduced
    ('<answer>{"name": "Ada", "age": 37, "tags": ["math", "code"]}</answer>', {}, 2 / 3),
    ('<answer>{"name": "Ada", "age": 37}</answer>', {}, 1 / 3),
    ('<answer>{"name": "Bob", "age": 37, "tags": ["code", "math"]}</answer>', {}, 0.0),  # list order matters
    ('<answer>{"name": "Ada", "age": 37, "tags": ["math", "code"]}</answer>', {"partial_credit": False}, 0.0),
    # schema violations score 0 even when some fields match
    ('<answer>{"name": "Ada", "age": "36"}</answer>', {}, 0.0),
    ('<answer>{"name": "Ada"}</answer>', {}, 0.0),
    ('<answer>{"name": "Ada", "age": true, "tags": ["math", "code"]}</answer>', {}, 0.0),
    # extraction variants
    ('Here you go:\n```json\n{"name": "Ada", "age": 36, "tags": ["math", "code"]}\n```', {}, 1.0),
    ('{"name": "Ada", "age": 36, "tags": ["math", "code"]}', {}, 1.0),
    ('<answer>```json\n{"name": "Ada", "age": 36, "tags": ["math", "code"]}\n```</answer>', {}, 1.0),
    # adversarial
    ("", {}, 0.0),
    ("<answer>{not json}</answer>", {}, 0.0),
    ("<answer>[1, 2, 3]</answer>", {}, 0.0),
    ("<answer>" + "[" * 100_000 + "</answer>", {}, 0.0),
    ("<answer>" + "[" * 20_000 + "]" * 20_000 + "</answer>", {}, 0.0),  # deep nesting: RecursionError is caught
    ("<answer>" + '{"a": "' + "x" * 10_000_000 + '"}</answer>', {}, 0.0),
])
def test_json_table(completion, args, expected):
    assert score(task(**args), completion) == pytest.approx(expected)


def test_scalar_and_array_expectations_are_all_or_nothing():
    t = Task(id="t", prompt="Q", privileged_context="", answer="[1, 2]", verifier="json")
    assert score(t, "<answer>[1, 2]</answer>") == 1.0
    assert score(t, "<answer>[1, 3]</answer>") == 0.0


@pytest.mark.parametrize("answer, args", [
    ("{not json", {}),
    (EXPECTED, {"schema": {"type": "no-such-type"}}),
])
def test_task_defects_cannot_be_verified(answer, args):
    assert score(task(answer, **args), f"<answer>{EXPECTED}</answer>") is None
