"""Exact labels, normalised: ``label(completion, task)``.

Both sides are normalised the same way: Unicode NFKC, case-folded, every punctuation or symbol
character removed (not replaced by a space: "e-mail" == "email", "New York." == "new york"),
whitespace collapsed. 1.0 when the stated answer
equals task.answer or one of ``verifier_args["aliases"]`` (a list of strings), else 0.0.
Multiple choice (``verifier_args["choices"]``): a stated answer that is not exactly a label also
scores 1.0 when it names the right choice and no other one as a whole word ("It blinks amber." for
amber), so a sentence around the choice is not punished and naming every option is. A choice right after a
negation is not named by it ("not amber" names no choice; "amber, not red" names amber).
``verifier_args["format"]`` picks the answer format (default "any").
"""

from __future__ import annotations

import unicodedata

from rlsd.tasks import Task
from rlsd.verifiers.extract import extract_answer


def normalise_label(s: str) -> str:
    s = unicodedata.normalize("NFKC", s).casefold()
    s = "".join(" " if ch.isspace() else ch for ch in s
                if ch.isspace() or unicodedata.category(ch)[0] not in "PS")
    return " ".join(s.split())


def label(completion: str, task: Task) -> float | None:
    accepted = {normalise_label(task.answer)}
    aliases = task.verifier_args.get("aliases", [])
    if isinstance(aliases, str):
        aliases = [aliases]
    accepted |= {normalise_label(str(a)) for a in aliases}
    accepted.discard("")
    if not accepted:
        return None
    got = extract_answer(completion, task.verifier_args.get("format", "any"))
    if got is None or len(got) > 10_000:
        return 0.0
    norm = normalise_label(got)
    if norm in accepted:
        return 1.0
    choices = {normalise_label(str(c)) for c in task.verifier_args.get("choices", []) or []} - {""}
    if choices:
        named = _named(norm.split(), choices)
        return 1.0 if named and named <= accepted else 0.0
    return 0.0


# words that deny the choice right after them (normalised: "isn't" is "isnt")
NEGATIONS = {"not", "no", "never", "isnt", "arent", "wasnt", "werent", "dont", "doesnt", "except", "without", "nor",
             "neither", "non"}


def _named(words: list[str], choices: set[str]) -> set[str]:
    """The choices the words name as whole words, other than right after a negation ("not", "isn't", or one
    with an article between: "not the amber one"): "amber, not red" names amber; "not amber" names none."""
    named = set()
    for c in choices:
        cw = c.split()
        for i in range(len(words) - len(cw) + 1):
            if words[i:i + len(cw)] != cw:
                continue
            before = words[max(0, i - 2):i]
            if before[-1:] and before[-1] in ("the", "a", "an"):
                before = before[:-1]
            if not (before and before[-1] in NEGATIONS):
                named.add(c)
                break
    return named
