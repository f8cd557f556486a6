"""Hostile text cannot stall ingest or build-tasks: every pattern that reads stored text finishes in time linear
in the text. A ticket body is cut at ingest.max_body_chars (20,000 by default), but a pattern that retries from
every start position over a long run of word characters and separators ("a_a_a_...", "ab-ab-ab-...") costs the
square of that: 1-10 s per record for the e-mail, secret-name and option-list patterns before they were bounded
(hours for the 400,000-character texts below). Each text here is redacted (and its option list read) under an
alarm of 60 s that a linear pass (well under 1 s) never comes near and a quadratic one cannot beat."""

from __future__ import annotations

import signal

import pytest

from rlsd.config import IngestConfig
from rlsd.data.build import listed_options
from rlsd.data.redact import Redactor

R = Redactor.from_config(IngestConfig(), id_key=b"test-key")
N = 400_000
# the names every name-gated rule looks for, then one long run that each pattern could retry from every position
PREFIX = "key token secret password pass pwd ssn aws gh bearer basic eyj @ http:// -----begin "
RUNS = ["a_", "a.", "ab-", "a.1", "1.", "1-", "+1 ", "1:", "a:", "a@", "aB1+", "x, ", "(a, "]


@pytest.fixture
def alarm():
    def stop(*_):
        raise TimeoutError("a pattern took more than 60 s: it is not linear in the text")
    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("run", RUNS)
def test_redaction_and_option_lists_are_linear_in_the_text(run, alarm):
    text = PREFIX + run * (N // len(run))
    red, _ = R.redact(text)
    assert len(red) > N // 2  # the run itself is no secret
    listed_options(text, "a")


def test_the_bounds_keep_what_the_patterns_found():
    # secret names with up to three prefix parts in front of the one the pattern names, and a longer chain whose
    # last three parts are enough; an address with a 64-character local part (RFC 5321's longest)
    for text, secret in [("MYSQL_ROOT_PASSWORD=hunter22", "hunter22"), ("app.db.main.password: s3cr3tpw", "s3cr3tpw"),
                         ("svc.prod.eu.db.api_key=abcdef123456", "abcdef123456"),
                         ("x" * 64 + "@corp.example.com", "x" * 64)]:
        red, _ = R.redact(f"see {text} now")
        assert secret not in red, red
    assert listed_options("Is the lamp amber-red, green, or off?", "green") == ["amber-red", "green", "off"]
