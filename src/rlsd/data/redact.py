"""Redaction before anything is stored: personal data and secrets -> typed placeholders.

Built-in types, applied in this order (earlier types win on overlapping text):
SECRET (API keys, tokens, passwords written as ``key: value``, PEM private keys, AWS access key
ids), EMAIL, IPV6, IPV4, PHONE, EMPLOYEE_ID (``ingest.employee_id_pattern``), then every
``ingest.extra_patterns`` entry. A match becomes ``[TYPE]`` and is counted per type.

Departures from a full PII scanner (e.g. Presidio): no names or addresses (no NER model inside the
perimeter); phone numbers need a phone-like shape (``+CC ...``, ``(NNN) NNN-NNNN`` or
``NNN-NNN-NNNN``) so that quantities, dates and versions in manuals are left alone; IP candidates
are checked with :mod:`ipaddress`, so times such as ``10:30:00`` stay.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from rlsd.config import IngestConfig

_SECRET = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----"
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"
    r"|\b(?:sk|pk|rk|ghp|gho|xox[abpr])[-_][A-Za-z0-9_-]{16,}\b"
    r"|(?i:\b(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|token|password|passwd|pwd)"
    r"\s*[:=]\s*)[\"']?[^\s\"']{6,}[\"']?",
    re.DOTALL,
)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_IPV6_CAND = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{0,4}|\d{1,3}(?:\.\d{1,3}){3})(?![\w:])")
_IPV4_CAND = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
_PHONE = re.compile(
    r"(?<![\w+])\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{1,4}(?:[\s.-]\d{2,4}){1,4}(?![\w])"
    r"|(?<![\w(])\(\d{3}\)\s?\d{3}[\s.-]\d{4}(?!\w)"
    r"|(?<![\w.-])\d{3}[.-]\d{3}[.-]\d{4}(?![\w-]|\.\d)"
)


def _valid_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


@dataclass
class Redactor:
    """``redact(text) -> (text, Counter)``; ``enabled=False`` returns the text unchanged."""

    enabled: bool = True
    rules: list[tuple[str, re.Pattern[str], Callable[[str], bool] | None]] = field(default_factory=list)

    @classmethod
    def from_config(cls, cfg: IngestConfig) -> Redactor:
        rules: list[tuple[str, re.Pattern[str], Callable[[str], bool] | None]] = [
            ("SECRET", _SECRET, None),
            ("EMAIL", _EMAIL, None),
            ("IPV6", _IPV6_CAND, lambda s: any(c.isdigit() or c.isalpha() for c in s) and _valid_ip(s)),
            ("IPV4", _IPV4_CAND, _valid_ip),
            ("PHONE", _PHONE, None),
        ]
        if cfg.employee_id_pattern:
            rules.append(("EMPLOYEE_ID", re.compile(cfg.employee_id_pattern), None))
        for name, rx in cfg.extra_patterns.items():
            rules.append((name, re.compile(rx), None))
        return cls(enabled=cfg.redact, rules=rules)

    def redact(self, text: str) -> tuple[str, Counter[str]]:
        counts: Counter[str] = Counter()
        if not self.enabled or not text:
            return text, counts
        for name, rx, check in self.rules:
            def sub(m: re.Match[str], name: str = name, check: Callable[[str], bool] | None = check) -> str:
                if check is not None and not check(m.group(0)):
                    return m.group(0)
                counts[name] += 1
                return f"[{name}]"

            text = rx.sub(sub, text)
        return text, counts
