"""Redaction before anything is stored: personal data and secrets -> typed placeholders.

Built-in types, applied in this order (earlier types win on overlapping text); a match becomes
``[TYPE]`` and is counted per type:

* secrets: ``PRIVATE_KEY`` (PEM blocks; one without its END line up to its last base64 or header line), ``GITHUB_TOKEN`` (``github_pat_...``, ``ghp_/gho_/ghu_/ghs_/ghr_``),
  ``AWS_SECRET_KEY`` (40 characters after an ``aws_secret_access_key``-like name), ``SECRET`` (AWS access key
  ids ``AKIA/ASIA...``, ``sk_/pk_/rk_/xox?-`` API keys, and ``api_key|secret|token|password...: value`` with
  a value of 6+ characters; the whole ``name: value`` goes; the name may carry a prefix, ``DB_PASSWORD``,
  ``client_secret``, ``x-api-key``, glued, ``PGPASSWORD``, or ``pass`` after a prefix, ``SMTP_PASS``, and
  quotes, ``"api_key": "..."``), ``PASSWORD`` (``password is X``,
  ``password=abc``, ``pwd: x1`` -- short values too; only the value goes, and prose such as "the
  password is required" is left alone; the password of a URL, ``postgres://user:X@host``), ``BEARER``
  (``Bearer <token>``, ``Authorization: Basic <base64>``), ``JWT`` (``eyJ...``.``...``.``...``),
  and a bare 40-character AWS-secret-shaped string (upper, lower and digits, Shannon entropy >= 4.2
  bits/char, so git SHAs -- hex -- and long identifiers stay);
* numbers with checksums: ``IBAN`` (either case, groups split by spaces or dashes, country length where
  known, ISO 7064 mod 97 == 1; a word the pattern takes in after it, "BE68 5390 0754 7034 EUR", is cut off
  and kept), ``CARD``
  (13-19 digits, contiguous or grouped 4-4-4-4(-3) / 4-6-5, a known issuer prefix -- Mir and RuPay too --, and the
  Luhn check),
  ``SSN`` (``AAA-GG-SSSS`` with the SSA's never-issued areas 000/666/9xx, groups 00, serials 0000 left
  out; nine bare digits only after "SSN" / "social security");
* ``EMAIL`` (non-ASCII letters too: ``müller@firma.de``), ``IPV6``, ``IPV4`` (checked with :mod:`ipaddress`; a dotted quad after "version", "v",
  "release", "build", "firmware"... is a version string and stays, as is one after "section", "chapter",
  "step"), ``PHONE`` (a phone-like shape: ``+CC ...``, ``(NNN) NNN-NNNN``, ``NNN-NNN-NNNN`` or
  ``NNN NNN NNNN`` (not inside a longer run of numbers), 7 digits or more; ``+12.50`` is an amount),
  ``EMPLOYEE_ID`` (``ingest.employee_id_pattern``),
  then every ``ingest.extra_patterns`` entry.

Ids: :meth:`Redactor.redact_id` leaves an id without personal data as it is and turns one that holds
any (a ticket id that is an e-mail address) into ``pii-<HMAC-SHA256(key, id)[:24]>``: stable across
ingests, so updates still find their ticket, and the id -> hash mapping is never stored. The key
comes from ``$RLSD_ID_HASH_KEY`` (a Kubernetes secret on a cluster); without it, a random key is created
once in the store (``keys/id-hash``), which keeps ids stable but lets anyone who can read the store
test guesses -- set the variable where that matters.

Why regexes and not a PII library. Presidio (presidio-analyzer) is the maintained offline option;
its recognisers for credit cards, IBANs and US SSNs are the same kind of regex + checksum as here,
but it needs a spaCy language model (en_core_web_lg, ~400 MB, a download from outside the network)
for its NLP engine, and it has no recognisers for AWS secret keys, Bearer/JWT tokens, GitHub tokens
or "password is X". scrubadub is in maintenance mode and also regex-based for these types. What
a library would add is names and street addresses (NER); they are the departure here: no names or
addresses are found (no NER model inside the perimeter). The types above are tested with planted
values and false-positive traps (versions, dates, order numbers, 16-digit numbers that fail Luhn)
in tests/data/test_data_redact.py and tests/reliability/test_redaction_hostile.py.

Every pattern runs in time linear in the text: where a pattern could be retried from each position of a long
run ("a_a_a_...", "ab-ab-..."), its repetition is bounded (an e-mail local part has at most 64 characters, RFC
5321; a secret's name at most 3 parts before ``password``/``api_key``...: ``MYSQL_ROOT_PASSWORD``). Unbounded,
a 20,000-character hostile body cost 1-10 s a record (tests/reliability/test_linear_time_patterns.py).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from rlsd.config import IngestConfig

# A check says whether a match is a real hit: False (no), True (all of it) or n (its first n characters only).
Check = Callable[[re.Match[str]], "bool | int"]

_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?:.*?-----END [A-Z ]*PRIVATE KEY-----"
                  r"|(?:[ \t]*\r?\n?[ \t]*(?:[A-Za-z0-9+/=]{16,}|[\w-]+:[^\n]*))*)", re.DOTALL)
_GITHUB = re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}|\bgh[pousr]_[A-Za-z0-9]{30,}\b")
_AWS_SECRET_NAMED = re.compile(
    r"(?i:aws.{0,20}?(?:secret|sak)[A-Za-z_ -]{0,20}?)\s*(?:[:=]|\bis\b|=>)?\s*[\"']?"
    r"(?P<v>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])")
_SECRET_KV = re.compile(
    r"(?i:(?<![A-Za-z0-9])(?:[A-Za-z0-9]+[_.-]){0,3}(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token"
    r"|token|[a-z]{0,8}?passw(?:or)?d|pwd|pass)[\"']?\s*[:=]\s*)[\"']?[^\s\"']{6,}[\"']?")
_SECRET = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b|\b(?:sk|pk|rk|xox[abpr])[-_][A-Za-z0-9_-]{16,}\b")
_PASSWORD = re.compile(
    r"(?i:(?<![A-Za-z0-9])(?:[A-Za-z0-9]+[_.-]){0,3}(?:[a-z]{0,8}?(?:password|passwd|passphrase|passcode)|pwd)\b[\"']?\s*"
    r"(?:(?:is|was)\b\s*:?|:=|[:=]))\s*[\"'`]?"
    r"(?P<v>[^\s\"'`,;]*[^\s\"'`,;.!?:)\]])")
# Words that follow "password is" in prose, not a password.
_PROSE = {"not", "required", "reset", "changed", "set", "wrong", "incorrect", "invalid", "expired", "correct",
          "empty", "missing", "the", "a", "an", "your", "their", "his", "her", "my", "our", "its", "case-sensitive",
          "sent", "stored", "hashed", "encrypted", "shown", "too", "now", "still", "being", "also", "only", "never",
          "always", "valid", "blank", "same", "different", "needed", "optional", "mandatory", "accepted", "rejected",
          "locked", "unknown", "available", "updated", "displayed", "masked", "hidden", "protected", "strong", "weak",
          "long", "short", "given", "entered", "typed", "used", "saved", "lost", "forgotten", "compromised",
          "generated", "rotated", "managed", "known", "this", "that", "it", "be", "been", "none", "null", "***",
          "[redacted]", "open", "click", "see", "go", "use", "enter", "type", "choose", "select", "contact", "ask",
          "follow", "call", "reset", "change", "press", "tap", "run", "at", "in", "on", "for", "of", "to", "and", "or",
          "field", "prompt", "policy", "manager", "reset.", "n/a", "tbd"}
# scheme://user:PASSWORD@host: the password goes (the last '@' before the host ends it: "p@ss@host")
_URL_PASSWORD = re.compile(r"(?i:\b[a-z][a-z0-9+.-]{1,30}://[^\s/:@]*:)(?P<v>[^\s/]*[^\s/@])(?=@[^\s/@]+)")
_BASIC = re.compile(r"(?i:\bauthorization\s*[:=]\s*[\"']?basic)\s+(?P<v>[A-Za-z0-9+/]{8,}=*)")
_BEARER = re.compile(r"(?i:\bbearer)\s+(?P<v>[A-Za-z0-9\-._~+/]{8,}=*)")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_AWS_SECRET_BARE = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]{4}){2,7}(?:[ -]?[A-Z0-9]{1,3})?\b", re.IGNORECASE)
_CARD = re.compile(r"(?<![\w+.,/-])(?:\d{13,19}|\d{4}([ -])\d{4}\1\d{4}\1\d{1,4}(?:\1\d{3})?|\d{4}([ -])\d{6}\2\d{4,5})"
                   r"(?![\w/]|[.,-]\d)")
_SSN = re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])")
_SSN_NAMED = re.compile(r"(?i:\b(?:ssn|social[ -]security(?:[ -](?:number|no\.?|#))?)\s*[:#=]?\s*)(?P<v>\d{9})\b")
_EMAIL = re.compile(r"\b[\w.%+-]{1,64}@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}\b")
_IPV6_CAND = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{0,4}|\d{1,3}(?:\.\d{1,3}){3})(?![\w:])")
_IPV4_CAND = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
_VERSION_BEFORE = re.compile(r"(?i:\b(?:v|ver|version|versions|release|rel|build|firmware|fw|sdk|rev|revision|"
                             r"patch|driver|kernel|ios|android|os|tag|bump(?:ed)?|upgrade[sd]? from|section|sections|chapter|clause|step|§)\.?\s*[:=#]?\s*)$")
_PHONE = re.compile(
    r"(?<![\w+])\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{1,4}(?:[\s.-]\d{2,4}){1,4}(?![\w])"
    r"|(?<![\w(])\(\d{3}\)\s?\d{3}[\s.-]\d{4}(?!\w)"
    r"|(?<![\w.-])\d{3}[.-]\d{3}[.-]\d{4}(?![\w-]|\.\d)"
    r"|(?<![\w.-])(?<!\d )\d{3} \d{3} \d{4}(?![\w-]|\.\d| \d)"
)
_PLACEHOLDER = re.compile(r"\[[A-Z][A-Z0-9_]*\]")

# IBAN lengths by country (ISO 13616 registry, the countries most exports will hold); others: 15-34.
IBAN_LENGTHS = {"AD": 24, "AE": 23, "AT": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "CH": 21, "CY": 28, "CZ": 24,
                "DE": 22, "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GI": 23, "GR": 27, "HR": 21,
                "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "KW": 30, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
                "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25, "QA": 29, "RO": 24, "SA": 24, "SE": 24,
                "SI": 19, "SK": 24, "SM": 27, "TR": 26, "UA": 29}


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check of a string of digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_issuer(d: str) -> bool:
    """A known card issuer prefix and length (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro,
    Mir, RuPay: the IIN table of ISO/IEC 7812 as Wikipedia's "Payment card number" lists it)."""
    n = len(d)
    p2, p4 = int(d[:2]), int(d[:4])
    return ((d[0] == "4" and n in (13, 16, 19)) or (51 <= p2 <= 55 and n == 16) or (2221 <= p4 <= 2720 and n == 16)
            or (2200 <= p4 <= 2204 and 16 <= n <= 19)  # Mir
            or (p2 in (60, 81, 82) and n == 16)  # RuPay (its 65, 508 and 353/356 are Discover, Maestro, JCB here)
            or (p2 in (34, 37) and n == 15) or ((d.startswith("6011") or d.startswith("65")
                                                 or 644 <= int(d[:3]) <= 649) and 16 <= n <= 19)
            or (p2 == 35 and 16 <= n <= 19) or (p2 in (30, 36, 38, 39) and 14 <= n <= 19)
            or (p2 == 62 and 16 <= n <= 19) or (p2 in (50, 56, 57, 58, 67) and 12 <= n <= 19))


def _card_ok(m: re.Match[str]) -> bool:
    d = re.sub(r"[ -]", "", m.group(0))
    return 13 <= len(d) <= 19 and _card_issuer(d) and luhn_ok(d)


def iban_ok(text: str) -> bool:
    """Country length (where known) and the ISO 7064 mod-97 check of an IBAN (spaces and dashes ignored)."""
    s = text.replace(" ", "").replace("-", "").upper()
    want = IBAN_LENGTHS.get(s[:2])
    if (want is not None and len(s) != want) or not 15 <= len(s) <= 34:
        return False
    num = "".join(str(int(c, 36)) for c in s[4:] + s[:4])
    return int(num) % 97 == 1


def _iban_check(m: re.Match[str]) -> bool | int:
    """The whole match when it is an IBAN; else its longest prefix that is one, ending before a space or at the
    country's length (the pattern's last 1-3 character group also takes in a word that follows an IBAN whose
    length is a multiple of 4: "BE68 5390 0754 7034 EUR"); else no hit."""
    s = m.group(0)
    if iban_ok(s):
        return True
    want = IBAN_LENGTHS.get(s[:2].upper())
    for end in range(len(s) - 1, 14, -1):
        at_length = want is not None and len(s[:end].replace(" ", "").replace("-", "")) == want
        if (s[end] in " -" or at_length) and s[end - 1] not in " -" and iban_ok(s[:end]):
            return end
    return False


def _entropy(s: str) -> float:
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def _aws_bare_ok(m: re.Match[str]) -> bool:
    s = m.group(0)
    return (any(c.isupper() for c in s) and any(c.islower() for c in s) and any(c.isdigit() for c in s)
            and _entropy(s) >= 4.2)


def _password_ok(m: re.Match[str]) -> bool:
    v = m.group("v")
    return not _PLACEHOLDER.fullmatch(v) and v.lower() not in _PROSE


def _bearer_ok(m: re.Match[str]) -> bool:
    v = m.group("v")
    return not _PLACEHOLDER.fullmatch(v) and (len(v) >= 20 or any(c.isdigit() for c in v))


def _phone_ok(m: re.Match[str]) -> bool:
    """A phone number has 7 digits or more (E.164's shortest national numbers) and is not a signed decimal:
    "+12.50" and "+15.75%" are amounts, "+10-20" a range."""
    s = m.group(0)
    return sum(c.isdigit() for c in s) >= 7 and not re.fullmatch(r"\+\d+\.\d{1,2}", s)


def _valid_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _ipv4_ok(m: re.Match[str]) -> bool:
    before = m.string[max(0, m.start() - 24):m.start()]
    return _valid_ip(m.group(0)) and not _VERSION_BEFORE.search(before)


def _ipv6_ok(m: re.Match[str]) -> bool:
    s = m.group(0)
    return any(c.isdigit() or c.isalpha() for c in s) and _valid_ip(s)


Rule = tuple[str, re.Pattern[str], Check | None]

BUILTIN_RULES: list[Rule] = [
    ("PRIVATE_KEY", _PEM, None),
    ("GITHUB_TOKEN", _GITHUB, None),
    ("AWS_SECRET_KEY", _AWS_SECRET_NAMED, None),
    ("SECRET", _SECRET_KV, None),
    ("SECRET", _SECRET, None),
    ("PASSWORD", _PASSWORD, _password_ok),
    ("PASSWORD", _URL_PASSWORD, _password_ok),
    ("JWT", _JWT, None),
    ("BEARER", _BEARER, _bearer_ok),
    ("BEARER", _BASIC, None),
    ("AWS_SECRET_KEY", _AWS_SECRET_BARE, _aws_bare_ok),
    ("IBAN", _IBAN, _iban_check),
    ("CARD", _CARD, _card_ok),
    ("SSN", _SSN, None),
    ("SSN", _SSN_NAMED, None),
    ("EMAIL", _EMAIL, None),
    ("IPV6", _IPV6_CAND, _ipv6_ok),
    ("IPV4", _IPV4_CAND, _ipv4_ok),
    ("PHONE", _PHONE, _phone_ok),
]


# A rule whose pattern needs one of these words (lower case) is skipped when the text holds none of them:
# the case-insensitive alternations cost a try at every word boundary (redaction bounds ingest's speed).
_NEEDS: dict[re.Pattern[str], tuple[str, ...]] = {
    _PEM: ("-----begin",), _GITHUB: ("gh",), _AWS_SECRET_NAMED: ("aws",),
    _SECRET_KV: ("key", "secret", "token", "pass", "pwd"), _PASSWORD: ("pass", "pwd"), _BEARER: ("bearer",),
    _JWT: ("eyj",), _URL_PASSWORD: ("://",), _BASIC: ("basic",), _SSN_NAMED: ("ssn", "social"), _SSN: ("-",),
}


def id_hash_key_from_env() -> bytes | None:
    v = os.environ.get("RLSD_ID_HASH_KEY", "")
    return v.encode() if v else None


@dataclass
class Redactor:
    """``redact(text) -> (text, Counter)``; ``enabled=False`` returns the text unchanged.

    A rule is (type, pattern, check or None); a check gets the match and says whether it is a real hit.
    A pattern with a group named ``v`` replaces only that group (``password is [PASSWORD]``)."""

    enabled: bool = True
    rules: list[Rule] = field(default_factory=list)
    id_key: bytes = b""

    @classmethod
    def from_config(cls, cfg: IngestConfig, *, id_key: bytes = b"") -> Redactor:
        rules = list(BUILTIN_RULES)
        if cfg.employee_id_pattern:
            rules.append(("EMPLOYEE_ID", re.compile(cfg.employee_id_pattern), None))
        for name, rx in cfg.extra_patterns.items():
            rules.append((name, re.compile(rx), None))
        # without a key (a reader used on its own, outside an ingest) a random one: stable within the process only
        return cls(enabled=cfg.redact, rules=rules, id_key=id_key or id_hash_key_from_env() or os.urandom(32))

    def redact(self, text: str) -> tuple[str, Counter[str]]:
        counts: Counter[str] = Counter()
        if not self.enabled or not text:
            return text, counts
        low = text.lower()
        for name, rx, check in self.rules:
            needs = _NEEDS.get(rx)
            if needs is not None and not any(w in low for w in needs):
                continue
            if name == "AWS_SECRET_KEY" and len(text) < 40:
                continue

            def sub(m: re.Match[str], name: str = name, check: Check | None = check) -> str:
                hit = True if check is None else check(m)
                if hit is False:
                    return m.group(0)
                counts[name] += 1
                if hit is not True:  # only the first `hit` characters
                    return f"[{name}]" + m.group(0)[hit:]
                if "v" in m.re.groupindex and m.group("v") is not None:
                    s, e = m.span("v")
                    return m.group(0)[: s - m.start()] + f"[{name}]" + m.group(0)[e - m.start():]
                return f"[{name}]"

            text = rx.sub(sub, text)
        return text, counts

    def redact_repeated(self, text: str) -> tuple[str, Counter[str]]:
        """:meth:`redact` with a bounded memo, for short texts that repeat (quarantine reasons)."""
        memo = self.__dict__.setdefault("_memo", {})
        hit = memo.get(text)
        if hit is None:
            hit = self.redact(text)
            if len(memo) < 20000:
                memo[text] = hit
        return hit[0], Counter(hit[1])

    def redact_id(self, record_id: str) -> tuple[str, Counter[str]]:
        """The id itself when it holds no personal data or secret; else ``pii-<keyed hash>`` (stable for a key)."""
        red, counts = self.redact(record_id)
        if red == record_id:
            return record_id, counts
        if not self.id_key:  # Redactor(...) built by hand: never keep the id in plain
            self.id_key = os.urandom(32)
        counts["ID_HASHED"] += 1
        return "pii-" + hmac.new(self.id_key, record_id.encode("utf-8"), hashlib.sha256).hexdigest()[:24], counts
