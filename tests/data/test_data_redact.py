import pytest

from rlsd.config import IngestConfig
from rlsd.data.redact import Redactor

R = Redactor.from_config(IngestConfig(extra_patterns={"TICKET_REF": r"\bINC\d{6}\b"}))

TABLE = [
    ("mail jane.doe+x@corp.example.co.uk now", "mail [EMAIL] now", {"EMAIL": 1}),
    ("call +1 415 555 0199 or (415) 555-0100", "call [PHONE] or [PHONE]", {"PHONE": 2}),
    ("or 415-555-0100.", "or [PHONE].", {"PHONE": 1}),
    ("host 10.0.0.254 and 192.168.1.1", "host [IPV4] and [IPV4]", {"IPV4": 2}),
    ("not an ip 999.1.1.1 nor version 1.2.3", "not an ip 999.1.1.1 nor version 1.2.3", {}),
    ("v6 2001:db8::1 and fe80::1ff:fe23:4567:890a", "v6 [IPV6] and [IPV6]", {"IPV6": 2}),
    ("at 10:30:00 on 2024-03-01", "at 10:30:00 on 2024-03-01", {}),
    ("emp EMP-20417 said", "emp [EMPLOYEE_ID] said", {"EMPLOYEE_ID": 1}),
    ("api_key: sk_live_abcdef0123456789abcd", "[SECRET]", {"SECRET": 1}),
    ("key AKIAIOSFODNN7EXAMPLE here", "key [SECRET] here", {"SECRET": 1}),
    ("password=hunter22 ok", "[SECRET] ok", {"SECRET": 1}),
    ("see INC123456", "see [TICKET_REF]", {"TICKET_REF": 1}),
    ("hold 30 seconds, port 8443, 36 months, 128 clients", "hold 30 seconds, port 8443, 36 months, 128 clients", {}),
]


@pytest.mark.parametrize("text,expected,counts", TABLE)
def test_redaction_table(text, expected, counts):
    out, c = R.redact(text)
    assert out == expected
    assert dict(c) == counts


def test_redaction_off_returns_text_unchanged():
    r = Redactor.from_config(IngestConfig(redact=False))
    assert r.redact("jane@x.com 10.0.0.1") == ("jane@x.com 10.0.0.1", {})


def test_bad_pattern_is_a_config_error():
    from rlsd.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="not a valid regex"):
        load_config(text="ingest: {extra_patterns: {BAD: '(unclosed'}}")
    with pytest.raises(ConfigError, match="UPPER_CASE"):
        load_config(text="ingest: {extra_patterns: {lower: 'x'}}")
