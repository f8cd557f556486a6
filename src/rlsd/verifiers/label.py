"""Exact labels, normalised: ``label(completion, task)``.

Both sides are normalised the same way: Unicode NFKC, case-folded, every punctuation or symbol
character removed (not replaced by a space: "e-mail" == "email", "New York." == "new york"),
whitespace collapsed. 1.0 when the stated answer
equals task.answer or one of ``verifier_args["aliases"]`` (a list of strings), else 0.0.
Multiple choice (``verifier_args["choices"]``): a stated answer that is not exactly a label also
scores 1.0 when it names the right choice and no other one as a whole word ("It blinks amber." for
amber), so a sentence around the choice is not punished and naming every option is.
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
        words = f" {norm} "
        named = {c for c in choices if f" {c} " in words}
        return 1.0 if named and named <= accepted else 0.0
    return 0.0
