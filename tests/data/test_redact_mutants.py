"""Exact-value tests of the checks inside rlsd.data.redact (card issuers, Luhn, IBAN, entropy, tokens, ids).

Every expected value here is derived by hand from the published rule, not from the code:

* card issuer ranges (IIN / BIN) and lengths: Visa 4 (13, 16, 19), Mastercard 51-55 and 2221-2720 (16),
  Amex 34/37 (15), Discover 6011 / 644-649 / 65 (16-19), JCB 35 (16-19; the published JCB range is 3528-3589),
  Diners 30/36/38/39 (14-19), UnionPay 62 (16-19), Maestro 50/56/57/58/67 (12-19), Mir 2200-2204
  (16-19), RuPay 60/81/82 (16). Numbers are either published
  processor test numbers (4111111111111111, 378282246310005, ...) or the prefix padded with zeros and a Luhn check
  digit computed by hand, one inside and one just outside each boundary;
* IBANs: the ISO 13616 / Wikipedia example IBANs of several countries (mod 97 == 1), each with one digit changed,
  and strings of a country outside the length table with check digits computed by ISO 7064 mod 97-10;
* Shannon entropy: H = -sum(p * log2 p) over the character frequencies.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections import Counter

import pytest

from rlsd.config import IngestConfig
from rlsd.data import redact as rd
from rlsd.data.redact import Redactor

R = Redactor.from_config(IngestConfig(), id_key=b"test-key")


def _red(text: str) -> str:
    return R.redact(text)[0]


# ---------------------------------------------------------------- card issuers: (digits, known issuer?, why)
ISSUER = [
    # Visa: leading 4, lengths 13, 16, 19 only
    ("4222222222222", True, "Visa 13 (published test number)"),
    ("4000000000006", True, "Visa 13"),
    ("40000000000002", False, "Visa prefix, 14 digits"),
    ("400000000000006", False, "Visa prefix, 15 digits"),
    ("4111111111111111", True, "Visa 16 (published)"),
    ("4012888888881881", True, "Visa 16 (published)"),
    ("4000000000000000006", True, "Visa 19"),
    ("40000000000000000002", False, "Visa prefix, 20 digits"),
    # Mastercard 51-55, 16 digits
    ("5105105105105100", True, "Mastercard 51 (published)"),
    ("5100000000000008", True, "Mastercard 51, low edge"),
    ("5500000000000004", True, "Mastercard 55, high edge"),
    ("5555555555554444", True, "Mastercard 55 (published)"),
    ("510000000000003", False, "Mastercard 51, 15 digits"),
    ("51000000000000003", False, "Mastercard 51, 17 digits"),
    ("510000000008", False, "51 is not Maestro: 12 digits"),
    ("550000000004", False, "55 is not Maestro: 12 digits"),
    # Mastercard 2221-2720, 16 digits
    ("2221000000000009", True, "Mastercard 2221, low edge"),
    ("2223003122003222", True, "Mastercard 2-series (published)"),
    ("2220000000000000", False, "2220, just below the 2-series"),
    ("2720000000000005", True, "Mastercard 2720, high edge"),
    ("2721000000000004", False, "2721, just above the 2-series"),
    ("222100000000000", False, "2221, 15 digits"),
    ("22210000000000000", False, "2221, 17 digits"),
    # Amex 34 / 37, 15 digits
    ("378282246310005", True, "Amex 37 (published)"),
    ("371449635398431", True, "Amex 37 (published)"),
    ("340000000000009", True, "Amex 34"),
    ("370000000000002", True, "Amex 37"),
    ("350000000000006", False, "35 is JCB, which has no 15-digit numbers"),
    ("330000000000001", False, "33, no issuer"),
    ("360000000000004", True, "Diners 36, 15 digits (Diners takes 14-19)"),
    ("3400000000000000", False, "Amex 34, 16 digits"),
    ("37000000000007", False, "Amex 37, 14 digits"),
    # Discover 6011 / 644-649 / 65, 16-19
    ("6011111111111117", True, "Discover 6011 (published)"),
    ("6011000990139424", True, "Discover 6011 (published)"),
    ("6011000000000004", True, "Discover 6011, 16"),
    ("6011000000000000001", True, "Discover 6011, 19"),
    ("601100000000001", False, "Discover 6011, 15 digits"),
    ("60110000000000000004", False, "Discover 6011, 20 digits"),
    ("6012000000000003", True, "6012 is not Discover, but RuPay takes 60 at 16 digits"),
    ("60120000000000009", False, "6012, 17 digits: neither Discover nor RuPay"),
    ("6500000000000002", True, "Discover 65, 16"),
    ("6555900000604105", True, "Discover 65 (published)"),
    ("6500000000000000003", True, "Discover 65, 19"),
    ("6440000000000005", True, "Discover 644, low edge"),
    ("6430000000000007", False, "643, just below 644"),
    ("6490000000000004", True, "Discover 649, high edge"),
    ("6490000000000000007", True, "Discover 649, 19"),
    ("644000000000002", False, "Discover 644, 15 digits"),
    ("6600000000000001", False, "66, no issuer"),
    # JCB 35, 16-19
    ("3530111333300000", True, "JCB (published)"),
    ("3566002020360505", True, "JCB (published)"),
    ("3528000000000007", True, "JCB 3528"),
    ("3589000000000003", True, "JCB 3589"),
    ("3500000000000009", True, "JCB 35, 16"),
    ("3500000000000000006", True, "JCB 35, 19"),
    ("35000000000000000009", False, "JCB 35, 20 digits"),
    # Diners 30 / 36 / 38 / 39, 14-19
    ("30569309025904", True, "Diners 30 (published)"),
    ("38520000023237", True, "Diners 38 (published)"),
    ("36227206271667", True, "Diners 36 (published)"),
    ("3056930009020004", True, "Diners 30, 16 (published)"),
    ("30000000000004", True, "Diners 30, 14"),
    ("36000000000008", True, "Diners 36, 14"),
    ("38000000000006", True, "Diners 38, 14"),
    ("39000000000005", True, "Diners 39, 14"),
    ("3000000000007", False, "Diners 30, 13 digits"),
    ("3900000000008", False, "Diners 39, 13 digits"),
    ("3000000000000000007", True, "Diners 30, 19"),
    ("3900000000000000008", True, "Diners 39, 19"),
    ("30000000000000000004", False, "Diners 30, 20 digits"),
    ("31000000000003", False, "31, no issuer"),
    ("37000000000007", False, "37 is Amex, not Diners"),
    # UnionPay 62, 16-19
    ("6200000000000005", True, "UnionPay (published)"),
    ("6205500000000000004", True, "UnionPay 19 (published)"),
    ("6200000000000000000", True, "UnionPay 62, 19"),
    ("620000000000000", False, "UnionPay 62, 15 digits"),
    ("62000000000000000005", False, "UnionPay 62, 20 digits"),
    ("6300000000000004", False, "63, no issuer"),
    # Maestro 50 / 56 / 57 / 58 / 67, 12-19
    ("6759649826438453", True, "Maestro 67 (published)"),
    ("500000000009", True, "Maestro 50, 12"),
    ("560000000003", True, "Maestro 56, 12"),
    ("570000000002", True, "Maestro 57, 12"),
    ("580000000001", True, "Maestro 58, 12"),
    ("670000000000", True, "Maestro 67, 12"),
    ("6700000000000000009", True, "Maestro 67, 19"),
    ("6799990100000000019", True, "Maestro 67, 19 (published)"),
    ("50000000005", False, "Maestro 50, 11 digits"),
    ("67000000000000000000", False, "Maestro 67, 20 digits"),
    ("590000000000", False, "59, no issuer"),
    ("680000000009", False, "68, no issuer"),
    ("5600000000000003", True, "Maestro 56, 16"),
    # Mir 2200-2204, 16-19
    ("2200000000000004", True, "Mir 2200, low edge"),
    ("2204000000000000006", True, "Mir 2204, 19, high edge"),
    ("2204000000000000", True, "Mir 2204, 16"),
    ("2199000000000007", False, "2199, just below Mir"),
    ("2205000000000009", False, "2205, just above Mir"),
    ("220000000000004", False, "Mir, 15 digits"),
    ("22000000000000000004", False, "Mir, 20 digits"),
    # RuPay 60 / 81 / 82, 16
    ("8100000000000002", True, "RuPay 81"),
    ("8200000000000001", True, "RuPay 82"),
    ("6080000000000000", True, "RuPay 60"),
    ("8300000000000000", False, "83, no issuer"),
    ("810000000000000", False, "RuPay 81, 15 digits"),
    ("81000000000000000", False, "RuPay 81, 17 digits"),
    # no issuer at all, each length
    ("800000000003", False, "8, 12 digits"),
    ("1000000000009", False, "1, 13 digits"),
    ("10000000000008", False, "1, 14 digits"),
    ("700000000000003", False, "7, 15 digits"),
    ("9000000000000001", False, "9, 16 digits"),
    ("7000000000000005", False, "70, 16 digits"),
]


@pytest.mark.parametrize("digits,known,why", ISSUER, ids=[f"{d}-{w}" for d, _, w in ISSUER])
def test_card_issuer_prefix_and_length(digits, known, why):
    assert rd._card_issuer(digits) is known


def _luhn_by_hand(digits: str) -> bool:
    # the textbook rule, written out differently from the module: double every second digit from the right,
    # add the digits of each product
    total = 0
    for pos, ch in enumerate(digits[::-1]):
        v = int(ch) * (2 if pos % 2 == 1 else 1)
        total += v // 10 + v % 10
    return total % 10 == 0


def test_all_issuer_rows_are_luhn_valid_so_only_the_issuer_rule_decides():
    assert all(_luhn_by_hand(d) for d, _, _ in ISSUER)


@pytest.mark.parametrize("digits,known,why", [r for r in ISSUER if 13 <= len(r[0]) <= 19],
                         ids=[f"{d}-{w}" for d, _, w in ISSUER if 13 <= len(d) <= 19])
def test_card_redaction_follows_the_issuer_rule(digits, known, why):
    text = f"paid with {digits} today"
    out, counts = R.redact(text)
    if known:
        assert out == "paid with [CARD] today"
        assert dict(counts) == {"CARD": 1}
    else:
        assert out == text
        assert dict(counts) == {}


def test_twelve_digit_maestro_is_known_but_too_short_to_be_redacted():
    assert rd._card_issuer("500000000009") is True
    assert _red("ref 500000000009 ok") == "ref 500000000009 ok"


@pytest.mark.parametrize("text,expected", [
    ("card 4222222222222.", "card [CARD]."),                      # 13 digits, the lowest length
    ("card 4000000000000000006.", "card [CARD]."),                # 19 digits, the highest
    ("card 6205500000000000004.", "card [CARD]."),
    ("card 4111 1111 1111 1111 end", "card [CARD] end"),
    ("card 4111-1111-1111-1111 end", "card [CARD] end"),
    ("card 3782 822463 10005 end", "card [CARD] end"),            # Amex 4-6-5
    ("card 4111 1111 1111 1112 end", "card 4111 1111 1111 1112 end"),  # Luhn fails: kept as it was
    ("card 4111111111111112 end", "card 4111111111111112 end"),
    ("card 1234 5678 9012 3452 end", "card 1234 5678 9012 3452 end"),  # Luhn ok, no issuer
])
def test_card_ok_lengths_and_groups(text, expected):
    assert _red(text) == expected


# ---------------------------------------------------------------- Luhn
@pytest.mark.parametrize("digits,ok", [
    ("79927398713", True),   # the textbook example
    ("79927398710", False),
    ("79927398711", False),
    ("0", True),
    ("18", True),            # 1*2 + 8 = 10
    ("59", True),            # 5*2 = 10 -> 1, + 9 = 10
    ("49", False),           # 4*2 + 9 = 17
    ("91", True),            # 9*2 = 18 -> 9, + 1 = 10
    ("4111111111111111", True),
    ("4111111111111121", False),
    ("378282246310005", True),
    ("378282246310006", False),
])
def test_luhn(digits, ok):
    assert rd.luhn_ok(digits) is ok


# ---------------------------------------------------------------- IBAN
REAL_IBANS = [
    "DE89 3704 0044 0532 0130 00",
    "GB82 WEST 1234 5698 7654 32",
    "FR14 2004 1010 0505 0001 3M02 606",
    "NL91 ABNA 0417 1643 00",
    "BE68 5390 0754 7034",
    "CH93 0076 2011 6238 5295 7",
    "NO93 8601 1117 947",          # Norway: 15, the shortest
    "MT84 MALT 0110 0001 2345 MTLC AST0 01S",  # Malta: 31
    "ES91 2100 0418 4502 0005 1332",
    "IT60 X054 2811 1010 0000 0123 456",
    "XK05 1212 0123 4567 8906",    # Kosovo: not in the length table
    "JO94 CBJO 0010 0000 0000 0131 0003 02",   # Jordan: not in the table
    "MU17 BOMM 0101 1010 3030 0200 000M UR",   # Mauritius: not in the table
    "LC55 HEMM 0001 0001 0012 0012 0002 3015",  # Saint Lucia: 32
    "RU02 0445 2560 0407 0281 0412 3456 7890 1",  # Russia: 33
]


@pytest.mark.parametrize("iban", REAL_IBANS)
def test_real_ibans_pass_with_and_without_spaces(iban):
    assert rd.iban_ok(iban) is True
    assert rd.iban_ok(iban.replace(" ", "")) is True
    assert rd.iban_ok(iban.lower()) is True


@pytest.mark.parametrize("iban", [
    "DE89 3704 0044 0532 0130 01",
    "DE88 3704 0044 0532 0130 00",
    "GB82 WEST 1234 5698 7654 33",
    "FR14 2004 1010 0505 0001 3M02 607",
    "NL91 ABNA 0417 1643 01",
    "BE68 5390 0754 7035",
    "NO93 8601 1117 948",
    "XK05 1212 0123 4567 8907",
    "LC55 HEMM 0001 0001 0012 0012 0002 3016",
])
def test_one_digit_changed_fails(iban):
    assert rd.iban_ok(iban) is False


@pytest.mark.parametrize("text,ok", [
    # valid mod 97 (check digits computed by hand) but the wrong length for Germany (22)
    ("DE5137040044053201300", False),        # 21
    ("DE813704004405320130000", False),      # 23
    ("de5137040044053201300", False),        # lower case: still the German length rule
    # a country outside the table: only 15-34 characters, each with valid check digits
    ("ZZ121234567890", False),               # 14
    ("ZZ8112345678901", True),               # 15
    ("ZZ971234567890123456789012345678AB", True),    # 34
    ("ZZ291234567890123456789012345678ABC", False),  # 35
])
def test_iban_length_rules(text, ok):
    assert rd.iban_ok(text) is ok


def test_iban_redaction_end_to_end():
    assert _red("pay to DE89 3704 0044 0532 0130 00 now") == "pay to [IBAN] now"
    assert _red("pay to NO9386011117947 now") == "pay to [IBAN] now"
    assert _red("pay to DE89 3704 0044 0532 0130 01 now") == "pay to DE89 3704 0044 0532 0130 01 now"


# ---------------------------------------------------------------- entropy and the bare AWS secret
@pytest.mark.parametrize("s,bits", [
    ("aabb", 1.0),
    ("abcd", 2.0),
    ("aaaa", 0.0),
    ("ab", 1.0),
    ("aaab", 2 - 0.75 * math.log2(3)),        # -(3/4 log2 3/4 + 1/4 log2 1/4)
    ("abcdefgh", 3.0),
    ("ABCDEFGHIJKLMNOPQRSTabcdefghijklmnopqrst", math.log2(40)),
])
def test_entropy_exact(s, bits):
    assert rd._entropy(s) == pytest.approx(bits, abs=1e-12)


# 18 characters twice and one four times: H = 0.9*log2(20) + 0.1*log2(10) = 4.2219 (>= 4.2)
ABOVE = "ABCDEFabcdef012345ABCDEFabcdef012345ZZZZ"
# 16 characters twice and two four times: H = 0.8*log2(20) + 0.2*log2(10) = 4.1219 (< 4.2)
BELOW = "ABCDEFabcdef0123ABCDEFabcdef0123YYYYZZZZ"


def test_entropy_of_the_threshold_strings():
    assert len(ABOVE) == len(BELOW) == 40
    assert rd._entropy(ABOVE) == pytest.approx(0.9 * math.log2(20) + 0.1 * math.log2(10), abs=1e-12)
    assert rd._entropy(BELOW) == pytest.approx(0.8 * math.log2(20) + 0.2 * math.log2(10), abs=1e-12)


@pytest.mark.parametrize("s,redacted", [
    ("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", True),  # AWS's documented example secret
    (ABOVE, True),
    (BELOW, False),                                      # all three classes, entropy just below 4.2
    ("ABCDEFGHIJKLMNOPQRSTabcdefghijklmnopqrst", False),  # no digit (entropy 5.32)
    ("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCD", False),  # no lower case (entropy 5.12)
    ("abcdefghijklmnopqrstuvwxyz0123456789abcd", False),  # no upper case
    ("Aa1" * 13 + "A", False),                           # entropy 1.58
    ("da39a3ee5e6b4b0d3255bfef95601890afd80709", False),  # a git SHA (hex, no upper case)
])
def test_bare_aws_secret(s, redacted):
    out, counts = R.redact(f"k {s} end")
    if redacted:
        assert out == "k [AWS_SECRET_KEY] end"
        assert dict(counts) == {"AWS_SECRET_KEY": 1}
    else:
        assert out == f"k {s} end"
        assert dict(counts) == {}


def test_bare_aws_secret_of_exactly_forty_characters_alone():
    assert R.redact("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY") == ("[AWS_SECRET_KEY]", Counter({"AWS_SECRET_KEY": 1}))
    assert R.redact(ABOVE) == ("[AWS_SECRET_KEY]", Counter({"AWS_SECRET_KEY": 1}))


def test_aws_bare_ok_directly():
    m = re.fullmatch(r".+", ABOVE)
    assert rd._aws_bare_ok(m) is True
    for s in (BELOW, "ABCDEFGHIJKLMNOPQRSTabcdefghijklmnopqrst", "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCD",
              "abcdefghijklmnopqrstuvwxyz0123456789abcd", "Aa1" * 13 + "A"):
        assert rd._aws_bare_ok(re.fullmatch(r".+", s)) is False, s


# ---------------------------------------------------------------- Bearer
@pytest.mark.parametrize("text,expected", [
    ("Authorization: Bearer abcdefghijklmnopqrst", "Authorization: Bearer [BEARER]"),  # 20 letters
    ("Authorization: Bearer abcdefghijklmnopqrs", "Authorization: Bearer abcdefghijklmnopqrs"),  # 19 letters
    ("Authorization: Bearer abcdefghijklmnopqrstu", "Authorization: Bearer [BEARER]"),
    ("Authorization: Bearer abcdefg1", "Authorization: Bearer [BEARER]"),  # short, but holds a digit
    ("Authorization: Bearer abcdefgh", "Authorization: Bearer abcdefgh"),
    ("the bearer tokenisation", "the bearer tokenisation"),
])
def test_bearer(text, expected):
    assert _red(text) == expected


# ---------------------------------------------------------------- password / prose
@pytest.mark.parametrize("text,expected", [
    ("the password is required", "the password is required"),
    ("the password is REQUIRED", "the password is REQUIRED"),
    ("the password is hunter2 ok", "the password is [PASSWORD] ok"),
    ("x password is hunter2", "x password is [PASSWORD]"),
    ("pwd: abc", "pwd: [PASSWORD]"),
    ("Password was Tr0ub4dor, sorry", "Password was [PASSWORD], sorry"),
])
def test_password(text, expected):
    assert _red(text) == expected


# ---------------------------------------------------------------- IPs
@pytest.mark.parametrize("text,expected", [
    ("host 10.0.0.1 up", "host [IPV4] up"),
    ("v 10.0.0.1", "v 10.0.0.1"),                      # the version word starts the text
    ("firmware 10.2.0.1 shipped", "firmware 10.2.0.1 shipped"),
    ("version" + " " * 17 + "10.0.0.1", "version" + " " * 17 + "10.0.0.1"),  # the word is 24 chars back
    ("version" + " " * 18 + "10.0.0.1", "version" + " " * 18 + "[IPV4]"),    # 25 chars back: out of reach
    ("not 999.1.1.1", "not 999.1.1.1"),
    ("v6 2001:db8::1 up", "v6 [IPV6] up"),
    ("at 10:30:00 ok", "at 10:30:00 ok"),
    ("a :: b", "a :: b"),
])
def test_ips(text, expected):
    assert _red(text) == expected


# ---------------------------------------------------------------- Redactor.redact plumbing
def test_counts_and_group_splice():
    out, counts = R.redact("a@x.com, b@y.org and pwd: abc")
    assert out == "[EMAIL], [EMAIL] and pwd: [PASSWORD]"
    assert counts == Counter({"EMAIL": 2, "PASSWORD": 1})


def test_disabled_and_empty():
    off = Redactor.from_config(IngestConfig(redact=False), id_key=b"k")
    assert off.enabled is False
    assert off.redact("a@x.com") == ("a@x.com", Counter())
    assert R.redact("") == ("", Counter())


def test_rules_from_config_and_extra_patterns():
    r = Redactor.from_config(IngestConfig(extra_patterns={"TICKET_REF": r"\bINC\d{6}\b"}), id_key=b"k")
    assert r.rules[: len(rd.BUILTIN_RULES)] == rd.BUILTIN_RULES
    assert [n for n, _, _ in r.rules[len(rd.BUILTIN_RULES):]] == ["EMPLOYEE_ID", "TICKET_REF"]
    assert r.redact("EMP-1234 INC123456") == ("[EMPLOYEE_ID] [TICKET_REF]",
                                             Counter({"EMPLOYEE_ID": 1, "TICKET_REF": 1}))


# ---------------------------------------------------------------- ids and keys
def _hash(key: bytes, s: str) -> str:
    return "pii-" + hmac.new(key, s.encode("utf-8"), hashlib.sha256).hexdigest()[:24]


def test_redact_id():
    assert R.redact_id("TICKET-42") == ("TICKET-42", Counter())
    out, counts = R.redact_id("jane@corp.example")
    assert out == _hash(b"test-key", "jane@corp.example")
    assert len(out) == 4 + 24
    assert counts == Counter({"EMAIL": 1, "ID_HASHED": 1})
    assert R.redact_id("jane@corp.example")[0] == out
    out2, _ = R.redact_id("für jane@corp.example")  # the HMAC is over the UTF-8 bytes of the id
    assert out2 == _hash(b"test-key", "für jane@corp.example")


def test_redact_id_without_a_key_makes_one():
    r = Redactor(rules=list(rd.BUILTIN_RULES))
    assert r.id_key == b""
    out, counts = r.redact_id("jane@corp.example")
    assert len(r.id_key) == 32
    assert out == _hash(r.id_key, "jane@corp.example")
    assert counts == Counter({"EMAIL": 1, "ID_HASHED": 1})


def test_id_key_sources(monkeypatch):
    monkeypatch.setenv("RLSD_ID_HASH_KEY", "from-env")
    assert rd.id_hash_key_from_env() == b"from-env"
    assert Redactor.from_config(IngestConfig()).id_key == b"from-env"
    assert Redactor.from_config(IngestConfig(), id_key=b"given").id_key == b"given"
    monkeypatch.setenv("RLSD_ID_HASH_KEY", "")
    assert rd.id_hash_key_from_env() is None
    monkeypatch.delenv("RLSD_ID_HASH_KEY")
    assert rd.id_hash_key_from_env() is None
    k1 = Redactor.from_config(IngestConfig()).id_key
    k2 = Redactor.from_config(IngestConfig()).id_key
    assert len(k1) == len(k2) == 32 and k1 != k2


# ---------------------------------------------------------------- memo
def test_redact_repeated_memo():
    r = Redactor.from_config(IngestConfig(), id_key=b"k")
    text = "mail a@x.com"
    out, counts = r.redact_repeated(text)
    assert (out, counts) == ("mail [EMAIL]", Counter({"EMAIL": 1}))
    counts["EMAIL"] += 5  # the caller's copy: the memo keeps its own
    r.rules = []  # a memo hit does not look at the rules again
    assert r.redact_repeated(text) == ("mail [EMAIL]", Counter({"EMAIL": 1}))
    assert r.redact(text) == (text, Counter())
    assert r.__dict__["_memo"][text] == ("mail [EMAIL]", Counter({"EMAIL": 1}))


def test_redact_repeated_memo_is_bounded_at_20000():
    r = Redactor.from_config(IngestConfig(), id_key=b"k")
    memo = r.__dict__.setdefault("_memo", {})
    memo.update({f"t{i}": (f"t{i}", Counter()) for i in range(19999)})
    assert r.redact_repeated("a@x.com") == ("[EMAIL]", Counter({"EMAIL": 1}))
    assert len(memo) == 20000
    assert r.redact_repeated("b@x.com") == ("[EMAIL]", Counter({"EMAIL": 1}))
    assert len(memo) == 20000
    assert "b@x.com" not in memo


def test_extra_pattern_with_a_v_group_replaces_only_that_group():
    # the built-in v patterns all end with the group; a custom one may have text after it
    r = Redactor.from_config(IngestConfig(extra_patterns={"ACCT": r"acct=(?P<v>\d{5});"}), id_key=b"k")
    assert r.redact("see acct=12345; then") == ("see acct=[ACCT]; then", Counter({"ACCT": 1}))
    assert r.redact("acct=12345; then") == ("acct=[ACCT]; then", Counter({"ACCT": 1}))
