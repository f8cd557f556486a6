"""What components write back to KFP: the numbers of a step's result dict as flat metric names.

>>> numeric_metrics({"candidate": {"pass@1": 0.5, "n": 8}, "comparison": None, "passed": True, "tables": [1]})
{'candidate.pass@1': 0.5, 'candidate.n': 8.0}
"""

from __future__ import annotations

from typing import Any


def numeric_metrics(result: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every int/float leaf of nested dicts, keyed by its dotted path (booleans, strings, lists skipped)."""
    out: dict[str, float] = {}
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(numeric_metrics(value, prefix=f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out
