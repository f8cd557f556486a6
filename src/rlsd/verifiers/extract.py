"""Answer extraction from a stated output format, and the format score.

Formats a completion may state its answer in (``fmt``):
- ``"tag"``: ``<answer>...</answer>`` (case-insensitive, may span lines);
- ``"line"``: a line starting with ``A:``, ``Answer:`` or ``Final answer:`` (the rest of that line, or
  the next non-empty line when the rest is empty);
- ``"boxed"``: LaTeX ``\\boxed{...}`` (balanced braces, so ``\\boxed{\\frac{1}{2}}`` works);
- ``"any"`` (default): the last tag, else the last answer line, else the last ``\\boxed{}``.

Only the first :data:`MAX_COMPLETION_CHARS` characters of a completion are examined (a 10 MB output
costs the same as a 100 kB one; an answer stated after the cap is not seen and scores as missing).
Training completions are a few thousand characters at most, so only degenerate outputs reach the cap.
"""

from __future__ import annotations

import re
import unicodedata

MAX_COMPLETION_CHARS = 100_000
FORMATS = ("any", "tag", "line", "boxed")

_OPEN = re.compile(r"<answer>", re.IGNORECASE)
_CLOSE = re.compile(r"</answer>", re.IGNORECASE)
# The statement is the rest of the marker's line, or, when that is empty, the next non-empty line
# (small models often break the line right after "Answer:").
_LINE = re.compile(r"^[ \t]*(?:A|Answer|Final answer)[ \t]*:[ \t]*(?:\n\s*)?(\S[^\n]*)?$", re.IGNORECASE | re.MULTILINE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.DOTALL)


def cap(completion: object) -> str:
    """The part of a completion verifiers look at ('' for a non-string)."""
    if not isinstance(completion, str):
        return ""
    return completion[:MAX_COMPLETION_CHARS]


def _boxed_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every \\boxed{...} with balanced braces (unbalanced ones are skipped).

    Linear time: one stack pass pairs every brace, so adversarial '\\boxed{' * 10**4 stays cheap."""
    starts = [m for m in _BOXED.finditer(text)]
    if not starts:
        return []
    close_of: dict[int, int] = {}
    stack: list[int] = []
    for i, ch in enumerate(text):
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            close_of[stack.pop()] = i
    out = []
    for m in starts:
        c = close_of.get(m.end() - 1)
        if c is not None:
            out.append((m.start(), c + 1, text[m.end():c]))
    return out


def _tag_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every <answer>...</answer>, non-overlapping, left to right.

    Linear time (opening and closing tags are found once each, then paired), unlike a lazy regex
    that rescans to the end for every unclosed '<answer>'."""
    opens = [m for m in _OPEN.finditer(text)]
    if not opens:
        return []
    closes = [m for m in _CLOSE.finditer(text)]
    out, j, pos = [], 0, 0
    for o in opens:
        if o.start() < pos:
            continue
        while j < len(closes) and closes[j].start() < o.end():
            j += 1
        if j == len(closes):
            break
        c = closes[j]
        out.append((o.start(), c.end(), text[o.end():c.start()]))
        pos = c.end()
    return out


def unbox(s: str) -> str:
    """'\\boxed{42}' -> '42'; the content of the last box when the string holds one, else s."""
    spans = _boxed_spans(s)
    return spans[-1][2].strip() if spans else s


def _statements(text: str) -> list[tuple[str, int, int, str]]:
    """Every answer statement as (kind, start, end, content), nested ones dropped
    (a \\boxed{} inside a tag or an answer line belongs to that statement)."""
    found = [("tag", s, e, c) for s, e, c in _tag_spans(text)]
    found += [("line", m.start(), m.end(), m.group(1)) for m in _LINE.finditer(text)]
    found += [("boxed", s, e, c) for s, e, c in _boxed_spans(text)]
    found.sort(key=lambda x: (x[1], -x[2]))
    top: list[tuple[str, int, int, str]] = []
    for st in found:
        if top and st[1] < top[-1][2]:  # inside (or overlapping) the previous statement
            continue
        top.append(st)
    return top


def extract_answer(completion: str, fmt: str = "any") -> str | None:
    """The answer a completion states in format ``fmt`` (see the module docstring), stripped and with
    an enclosing \\boxed{} removed; None when it states none."""
    text = cap(completion)
    if not text:
        return None
    if fmt not in FORMATS:
        raise ValueError(f"answer format must be one of {FORMATS}, got {fmt!r}")
    for kind in (("tag", "line", "boxed") if fmt == "any" else (fmt,)):
        if kind == "tag":
            hits = [c for _, _, c in _tag_spans(text)]
        elif kind == "line":
            hits = _LINE.findall(text)
        else:
            hits = [c for _, _, c in _boxed_spans(text)]
        if hits:
            return unbox(hits[-1].strip()).strip()
    return None


_HASHES = re.compile(r"^[ \t]*####[ \t]*(\S[^\n]*)$", re.MULTILINE)
_ANSWER_IS = re.compile(r"\banswer\s+is\s*:?[ \t]*(\S[^\n]*)", re.IGNORECASE)
_ASSIGNED = re.compile(r"[ \t]*[A-Za-z_][A-Za-z0-9_]{0,30}[ \t]*=[ \t]*(\S.*)")
_BARE_NUMBER = re.compile(r"[ \t]*([-+\u2212]?[$\u20ac\u00a3]?\d[\d,. _]*(?:/\d+)?%?)[ \t]*\.?[ \t]*")


def _sentence(s: str) -> str:
    """The text up to the first sentence end ('. ' or a final '.'), so 'is 3.5. Then ...' gives '3.5'."""
    m = re.search(r"\.(?:\s|$)", s)
    return (s[:m.start()] if m else s).strip()


def unmarked_answer(completion: str) -> str | None:
    """The answer of a completion that states none in a marked format, from the forms models write
    without being asked, in this order (the last occurrence of each):
    1. a line "#### 42" (GSM8K style) -> "42";
    2. "... the answer is 42." / "answer is: 42" -> "42" (to the end of the sentence);
    3. a last non-empty line "x = 42" (a NAME = value, not "7+9=16") -> "42";
    4. a last non-empty line that is a bare number ("42", "-3.5", "1,200", "3/4", "50%") -> it.
    None when none applies. Linear time (each pattern is anchored to a line or scans once)."""
    text = cap(completion)
    if not text:
        return None
    hits = _HASHES.findall(text)
    if hits:
        return hits[-1].strip()
    last = None
    for m in _ANSWER_IS.finditer(text):
        last = m
    if last is not None:
        return _sentence(last.group(1)) or None
    lines = [ln for ln in text[-4096:].splitlines() if ln.strip()]  # the last line, within the cap
    if not lines:
        return None
    m = _ASSIGNED.fullmatch(lines[-1])
    if m:
        return _sentence(m.group(1)) or None
    m = _BARE_NUMBER.fullmatch(lines[-1])
    return m.group(1).strip() if m else None


def format_score(completion: str, fmt: str = "any") -> float:
    """1.0 if the completion states its answer exactly once in the stated format (a non-empty
    statement; a \\boxed{} inside the tag or line counts as part of it), else 0.0.

    Two answers, an empty ``<answer></answer>``, an unclosed tag or no answer at all score 0.
    With ``fmt="any"`` the single statement may be in any of the three formats.
    """
    st = _statements(cap(completion))
    if fmt not in FORMATS:
        raise ValueError(f"answer format must be one of {FORMATS}, got {fmt!r}")
    if len(st) != 1:
        return 0.0
    kind, _, _, content = st[0]
    if fmt != "any" and kind != fmt:
        return 0.0
    return 1.0 if unbox((content or "").strip()).strip() else 0.0  # "Answer:" with nothing after: content None


def fenced_block(completion: str, languages: tuple[str, ...] = ()) -> str | None:
    """The last ```lang ... ``` block whose language is in ``languages`` (or has none); None if absent."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(cap(completion))]
    for lang, body in reversed(blocks):
        if not lang or lang in languages:
            return body
    return None


def strip_fence(s: str) -> str:
    """An answer that is itself one fenced block -> its body."""
    m = re.fullmatch(r"\s*```[ \t]*[A-Za-z0-9_+-]*[ \t]*\n(.*?)```\s*", s, re.DOTALL)
    return m.group(1) if m else s


def _mark_class() -> str:
    """A regex class of the combining marks (categories Mn, Mc, Me) of the first two planes: the vowel signs and
    viramas of Devanagari, Bengali, Tamil, Thai ... are inside words, yet ``\\w`` does not match them."""
    import unicodedata as ud

    spans: list[list[int]] = []
    for cp in range(0x20000):
        if ud.category(chr(cp)).startswith("M"):
            if spans and spans[-1][1] == cp - 1:
                spans[-1][1] = cp
            else:
                spans.append([cp, cp])
    return "[" + "".join(re.escape(chr(a)) + (f"-{re.escape(chr(b))}" if b > a else "") for a, b in spans) + "]"


# letters and digits, with the combining marks that follow them; punctuation, underscores and spaces separate words
_WORD = re.compile(r"[^\W_](?:[^\W_]|" + _mark_class() + ")*")
_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u2060-\u2064\ufeff]")  # soft hyphen, zero-width, BOM


def words(text: str) -> list[str]:
    """Normalised words, shared by the leakage check and the text graders: NFKC, case-folded, zero-width
    characters removed, split at anything that is not a letter or digit (so commas, underscores, line
    breaks or invisible characters inserted between or inside words change nothing)."""
    return _WORD.findall(_INVISIBLE.sub("", unicodedata.normalize("NFKC", text)).casefold())
