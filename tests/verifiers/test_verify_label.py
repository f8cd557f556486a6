"""Labels: normalised exact match with aliases."""

import pytest

from rlsd.tasks import Task
from rlsd.verifiers import score


def task(answer, **args):
    return Task(id="t", prompt="Q", privileged_context="", answer=answer, verifier="label", verifier_args=args)


@pytest.mark.parametrize("completion, answer, args, expected", [
    ("Answer: Paris", "paris", {}, 1.0),
    ("Answer:   PARIS.  ", "Paris", {}, 1.0),
    ("<answer>New   York!</answer>", "new york", {}, 1.0),
    ("<answer>New\nYork</answer>", "new york", {}, 1.0),
    ("<answer>e-mail</answer>", "email", {}, 1.0),
    ("<answer>ｐａｒｉｓ</answer>", "paris", {}, 1.0),               # full-width letters (NFKC)
    ("Answer: Straße", "STRASSE", {}, 1.0),                        # casefold
    ("Answer: NYC", "New York", {"aliases": ["NYC", "New York City"]}, 1.0),
    ("Answer: nyc", "New York", {"aliases": "NYC"}, 1.0),
    ("Answer: Boston", "New York", {"aliases": ["NYC"]}, 0.0),
    ("Answer: Paris, France", "paris", {}, 0.0),
    ("\\boxed{B}", "b", {}, 1.0),
    ("<answer>yes</answer>", "yes", {"format": "line"}, 0.0),      # wrong stated format
    ("Paris", "paris", {}, 0.0),                                   # no stated answer
    ("", "paris", {}, 0.0),
    ("Answer: " + "a" * 10_000_000, "a", {}, 0.0),
])
def test_label_table(completion, answer, args, expected):
    assert score(task(answer, **args), completion) == expected


def test_reference_of_only_punctuation_cannot_be_verified():
    assert score(task("..."), "Answer: ...") is None


def test_multiple_choice_names_exactly_the_right_option():
    from rlsd.tasks import Task
    from rlsd.verifiers import score

    t = Task(id="mc", prompt="Which colour? (amber, green, red)", privileged_context="", answer="amber",
             verifier="label", verifier_args={"choices": ["amber", "green", "red"]})
    assert score(t, "Answer: The LED blinks amber.") == 1.0
    assert score(t, "Answer:\n\nIt blinks Amber while updating") == 1.0  # answer on the next line
    assert score(t, "Answer: amber or green") == 0.0  # two options named
    # a denied choice is not named: the opposite of the answer never pays, a correction of another choice does
    for wrong in ["not amber", "It is not the amber one.", "It isn't amber", "anything except amber", "no amber",
                  "Not amber, not green"]:
        assert score(t, f"Answer: {wrong}") == 0.0, wrong
    for right in ["amber, not red", "Not green: amber.", "It is amber and not green"]:
        assert score(t, f"Answer: {right}") == 1.0, right
    assert score(t, "Answer: green") == 0.0
    assert score(t, "Answer: <option>") == 0.0
    assert score(t, "Answer:") == 0.0
