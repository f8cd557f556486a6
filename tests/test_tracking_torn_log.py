"""rlsd track reads a metrics.jsonl whose last append was torn by a kill (issue 18 item 8): the torn last line
is skipped with a warning, every complete step is kept; a bad line before the end is still an error."""

from __future__ import annotations

import json

import pytest

from rlsd.tracking import read_metrics


def test_torn_last_line_is_skipped_with_a_warning(tmp_path):
    p = tmp_path / "metrics.jsonl"
    steps = [{"step": i, "loss": 0.5 / i} for i in (1, 2, 3)]
    p.write_text("".join(json.dumps(s) + "\n" for s in steps) + '{"step": 4, "lo')
    with pytest.warns(UserWarning, match=r"metrics.jsonl:4: skipped a torn last line"):
        rows = read_metrics(p)
    assert rows == steps


def test_a_bad_line_before_the_end_is_an_error(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2 is not JSON"):
        read_metrics(p)


def test_trailing_blank_lines_do_not_hide_a_torn_line(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1}\n{"st\n\n\n')
    with pytest.warns(UserWarning, match="torn last line"):
        assert read_metrics(p) == [{"step": 1}]
