"""Answer extraction and the format score."""

import time

import pytest

from rlsd.verifiers import MAX_COMPLETION_CHARS, extract_answer, format_score


@pytest.mark.parametrize("completion, fmt, expected", [
    ("7+9=16,4+8+1=13,3+5+1=9\nA:936", "any", "936"),
    ("thinking...\n<answer> 42 </answer>", "any", "42"),
    ("<ANSWER>first</ANSWER> then <answer>second</answer>", "any", "second"),
    ("Answer: Paris", "any", "Paris"),
    ("Final answer: 12 km", "any", "12 km"),
    ("so \\boxed{\\frac{1}{2}}.", "any", "\\frac{1}{2}"),
    ("Answer: \\boxed{7}", "any", "7"),
    ("<answer>\\boxed{3}</answer>", "tag", "3"),
    ("A:5\n<answer>6</answer>", "any", "6"),          # a tag beats an answer line
    ("A:5\n<answer>6</answer>", "line", "5"),
    ("A:5", "tag", None),
    ("no answer here", "any", None),
    ("<answer>unclosed", "any", None),
    ("\\boxed{unbalanced", "any", None),
    ("", "any", None),
])
def test_extract_answer(completion, fmt, expected):
    assert extract_answer(completion, fmt) == expected


@pytest.mark.parametrize("completion, fmt, expected", [
    ("7+9=16\nA:16", "any", 1.0),
    ("<answer>4</answer>", "any", 1.0),
    ("<answer>\\boxed{4}</answer>", "any", 1.0),          # the box belongs to the tag: one statement
    ("Answer: \\boxed{4}", "any", 1.0),
    ("\\boxed{4}", "boxed", 1.0),
    ("<answer>4</answer>", "line", 0.0),                 # wrong format
    ("<answer>4</answer><answer>5</answer>", "any", 0.0),  # twice
    ("A:4\nA:5", "any", 0.0),
    ("A:4\n<answer>4</answer>", "any", 0.0),
    ("<answer></answer>", "any", 0.0),                   # empty
    ("<answer>4", "any", 0.0),
    ("", "any", 0.0),
    ("no format at all 42", "any", 0.0),
])
def test_format_score(completion, fmt, expected):
    assert format_score(completion, fmt) == expected


def test_non_string_completion_is_no_answer():
    assert extract_answer(None) is None  # type: ignore[arg-type]
    assert format_score(12345) == 0.0  # type: ignore[arg-type]


def test_answer_after_the_cap_is_not_seen():
    pad = "x" * MAX_COMPLETION_CHARS
    assert extract_answer("A:1\n" + pad + "\nA:2") == "1"


@pytest.mark.parametrize("evil", [
    "<answer>" * 2_000_000,            # 16 MB of unclosed tags
    "\\boxed{" * 1_000_000,            # unbalanced boxes
    "A:" + "9" * 10_000_000,
    "{" * 10_000_000,
])
def test_adversarial_inputs_are_fast(evil):
    t = time.monotonic()
    extract_answer(evil)
    format_score(evil)
    assert time.monotonic() - t < 5.0


def test_format_score_of_an_empty_answer_line_is_zero_not_a_crash():
    # "Answer:" with nothing after it (a small model stopping early) once raised inside evaluation
    from rlsd.verifiers.extract import format_score

    assert format_score("Answer:") == 0.0
    assert format_score("thinking\nAnswer:   \n") == 0.0
    assert format_score("Answer:\n42") == 1.0  # the answer on the next line still counts
