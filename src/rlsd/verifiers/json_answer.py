"""JSON answers: ``json_answer(completion, task)``.

The answer is the stated answer (tag / answer line / boxed), else the last ```json fenced block,
else the whole completion when it is a JSON object or array (starts with "{" or "["; a bare scalar such
as ``42`` must be stated, e.g. ``Answer: 42``, so prose that happens to start with a number is no
answer). It must parse as JSON (at most
:data:`MAX_JSON_CHARS` characters) and validate against ``verifier_args["schema"]`` (JSON Schema,
the draft named by its ``$schema``, else 2020-12) when one is given; otherwise the score is 0.

Expected values: ``task.answer`` is the expected JSON text. Field-wise partial credit (the default,
``verifier_args["partial_credit"]: true``): for an expected object, the score is the fraction of its
top-level fields whose values the answer reproduces exactly (deep equality; 1 == 1.0; extra fields
in the answer are neither rewarded nor penalised unless the schema forbids them). For an expected
array or scalar, and with ``partial_credit: false``, the score is 1 for deep equality, else 0.

None ("cannot verify") when task.answer is not JSON or the schema itself is invalid: those are
task defects, not model errors.
"""

from __future__ import annotations

import json
from typing import Any

from rlsd.tasks import Task
from rlsd.verifiers.extract import cap, extract_answer, fenced_block, strip_fence

MAX_JSON_CHARS = 50_000


def _equal(a: Any, b: Any) -> bool:
    """Deep JSON equality where bools never equal numbers (json's True is not 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _answer_text(completion: str, fmt: str) -> str | None:
    got = extract_answer(completion, fmt)
    if got is not None:
        return strip_fence(got)
    block = fenced_block(completion, ("json",))
    if block is not None:
        return block
    text = cap(completion).strip()
    return text if text[:1] in "{[" else None


def json_answer(completion: str, task: Task) -> float | None:
    args = task.verifier_args
    try:
        expected = json.loads(task.answer)
    except ValueError:
        return None
    schema = args.get("schema")
    validator = None
    if schema is not None:
        import jsonschema

        try:
            cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
            cls.check_schema(schema)
            validator = cls(schema)
        except jsonschema.SchemaError:
            return None
    text = _answer_text(completion, args.get("format", "any"))
    if text is None or len(text) > MAX_JSON_CHARS:
        return 0.0
    try:
        got = json.loads(text)
    except (ValueError, RecursionError):
        return 0.0
    if validator is not None:
        try:
            if not validator.is_valid(got):
                return 0.0
        except RecursionError:
            return 0.0
    if isinstance(expected, dict) and args.get("partial_credit", True):
        if not isinstance(got, dict):
            return 0.0
        if not expected:
            return 1.0  # nothing expected beyond the schema
        hits = sum(1 for k, v in expected.items() if k in got and _equal(got[k], v))
        return hits / len(expected)
    return 1.0 if _equal(got, expected) else 0.0
