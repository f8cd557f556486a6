"""Redaction of everything stored (issue 18 item 3): planted secrets and personal data of every kind the issue
names, false-positive traps beside them, checksums (Luhn, IBAN mod 97) tested both ways, ids that hold
personal data hashed with a key, and a byte scan of the whole store and of the report after a hostile ingest.

PLANTED and TRAPS are also read by benchmarks/reliability.py, which prints the recall and the false positives.
"""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlsd.config import IngestConfig, load_config
from rlsd.data.ingest import format_report, ingest, load_snapshot
from rlsd.data.redact import Redactor, iban_ok, luhn_ok
from rlsd.data.store import LocalStore

R = Redactor.from_config(IngestConfig(), id_key=b"test-key")

# (kind, text around it, the secret value that must disappear)
PLANTED: list[tuple[str, str, str]] = [
    ("AWS_SECRET_KEY", "aws_secret_access_key = {v}", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("AWS_SECRET_KEY", "AWS secret: {v}", "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY"),
    ("AWS_SECRET_KEY", "export SECRET {v} now", "Qx9vL2mN8pR4tY6wZ1aB3cD5eF7gH0iJ+kLmNoPq"),
    ("SECRET", "key id {v}", "AKIAIOSFODNN7EXAMPLE"),
    ("BEARER", "Authorization: Bearer {v}", "mF_9.B5f-4.1JqM"),
    ("BEARER", "curl -H 'authorization: bearer {v}'", "a8f5f167f44f4964e6c998dee827110c"),
    ("JWT", "token {v} expired", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
                                 "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
    ("PASSWORD", "my password is {v}", "hunter2"),
    ("PASSWORD", "password={v}", "abc123"),
    ("PASSWORD", "the wifi password is {v}.", "x7"),
    ("PASSWORD", "pwd: {v}", "Q1"),
    ("PASSWORD", "Password was {v} until Monday", "Tr0ub4dor&3"),
    ("SSN", "SSN {v} on file", "123-45-6789"),
    ("SSN", "social security number: {v}", "078051120"),
    ("CARD", "card {v} declined", "4111 1111 1111 1111"),
    ("CARD", "paid with {v}", "5500-0000-0000-0004"),
    ("CARD", "amex {v}", "378282246310005"),
    ("CARD", "visa {v}.", "4012888888881881"),
    ("IBAN", "IBAN {v} for the refund", "DE89 3704 0044 0532 0130 00"),
    ("IBAN", "pay to {v}", "GB82WEST12345698765432"),
    ("IBAN", "FR: {v}", "FR1420041010050500013M02606"),
    # an IBAN whose length is a multiple of 4 followed by a short word: the pattern's last group took the word in
    # and the whole match failed the length check (leaked until the longest-prefix cut)
    ("IBAN", "pay {v} EUR today", "BE68 5390 0754 7034"),
    ("IBAN", "{v} EUR", "ES91 2100 0418 4502 0005 1332"),
    ("IBAN", "pay {v} PLN", "PL61 1090 1014 0000 0712 1981 2874"),
    ("IBAN", "pay {v} BANK", "AT61 1904 3002 3457 3201"),
    ("IBAN", "pay {v} EUR", "BE68539007547034"),
    ("IBAN", "lower case {v} too", "de89 3704 0044 0532 0130 00"),
    ("GITHUB_TOKEN", "token {v}", "github_pat_11ABCDEFG0aBcDeFgHiJkL_mNoPqRsTuVwXyZ0123456789abcdefghijklmnopqrstuv"),
    ("GITHUB_TOKEN", "GH {v}", "ghp_aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5"),
    ("EMAIL", "mail {v} today", "jane.doe+billing@corp.example.co.uk"),
    ("EMAIL", "mail {v} today", "müller@firma.de"),
    ("EMAIL", "mail {v} today", "jane@müller.de"),
    ("PHONE", "call {v} after 5", "+1 415 555 0199"),
    ("PHONE", "or {v}", "(415) 555-0100"),
    ("IPV4", "host {v} is down", "10.20.30.40"),
    # passwords in URLs: the host part is no e-mail (no dot, an IP address), so nothing else took them
    ("PASSWORD", "DATABASE_URL=postgres://admin:{v}@10.0.0.5:5432/db", "S3cr3t!"),
    ("PASSWORD", "clone https://deploy:{v}@localhost:8080/repo.git", "pa55word"),
    ("PASSWORD", "mysql://root:{v}@db-host/x", "hunter2"),
    ("PASSWORD", "redis://:{v}@cache:6379/0", "p@ss@word"),
    # names with a prefix (environment variables, config keys) and quoted names (pasted JSON)
    ("SECRET", "DB_PASSWORD={v}", "Sup3rS3cret"),
    ("SECRET", "MYSQL_ROOT_PASSWORD: {v}", "rootpw123"),
    ("SECRET", "client_secret={v}", "abcdef123456"),
    ("SECRET", "x-api-key: {v}", "abcdefgh12345678"),
    ("SECRET", '{{"password": "{v}"}}', "hunter2"),
    ("SECRET", "{{'api_key': '{v}'}}", "abcd1234efgh"),
    ("PASSWORD", '{{"pwd": "{v}"}}', "Q1"),
    ("BEARER", "Authorization: Basic {v}", "YWRtaW46cGFzc3dvcmQxMjM="),
    # names glued to a prefix, and the short 'pass' after one
    ("SECRET", "export PGPASSWORD={v}", "pgS3cret99"),
    ("SECRET", "SMTP_PASS={v}", "mailpw2024"),
    ("PASSWORD", "dbpassword is {v}", "x7"),
    # groups split by dashes; a phone number split by spaces only
    ("IBAN", "IBAN {v} for the refund", "DE89-3704-0044-0532-0130-00"),
    ("PHONE", "call me on {v} after 5", "415 555 0199"),
]

# Text that must come out unchanged.
TRAPS: list[str] = [
    "upgrade to version 1.2.3.4 first",
    "firmware 10.2.0.45 and v1.2.3.4 and release 2.0.0.1",
    "dates 2024-03-01, 01-02-2024, 03/01/2024 and 2024.03.01",
    "order 4111111111111112 (16 digits, fails Luhn)",
    "order #1234567890123456 shipped",
    "tracking 9400110200881234567890",
    "invoice INV-2024-000123, PO 4500012345",
    "commit 3f786850e387550fdab836ed7e6dc881de23001b",
    "checksum e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "the password is required and the password is case-sensitive",
    "reset the password: open Settings",
    "use Bearer authentication with a token",
    "DE89 3704 0044 0532 0130 01 is not an IBAN (bad check digits)",
    "BE68 5390 0754 7035 EUR is not one either, nor any prefix of it",
    "order AB12 CDEF GHIJ KLMN OPQR shipped",
    "isbn 978-3-16-148410-0",
    "hold 30 seconds, port 8443, 36 months, 128 clients, 1500 MTU",
    "at 10:30:00 on 2024-03-01 UTC",
    "error 0x80070005 in build 19045.3803",
    "part number 12-345-6789",
    "ModelNumberABCDEFGHIJKLMNOPQRSTUVWXYZabcd",
    # signed amounts and ranges are not phone numbers; section numbers are not addresses
    "the balance changed by +12.50 EUR, the rate by +15.75% and the answer is +100.00",
    "a range of +10-20 degrees",
    "see section 3.2.1.4 of the manual, chapter 1.1.2.3",
    "see https://docs.example.com:8443/page?next=/a:b and ftp://host:21/x",
    "the boarding pass is ready; pass: the ball; compass: north",
    "DE89-3704-0044-0532-0130-01 fails its check digits; rows 100 200 3000 4000 and 120 340 5600 7 are a table",
]


@pytest.mark.parametrize("kind,template,value", PLANTED, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(PLANTED)])
def test_planted_value_is_redacted(kind, template, value):
    out, counts = R.redact(template.format(v=value))
    assert value not in out, out
    # the type named, or the generic ``name: value`` secret rule that took the whole pair first
    assert f"[{kind}]" in out or (counts["SECRET"] and "[SECRET]" in out), out


@pytest.mark.parametrize("text", TRAPS)
def test_false_positive_trap_is_left_alone(text):
    assert R.redact(text) == (text, {})


def _luhn_complete(prefix: str) -> str:
    for d in "0123456789":
        if luhn_ok(prefix + d):
            return prefix + d
    raise AssertionError


@settings(max_examples=200, deadline=None)
@given(body=st.text(alphabet="0123456789", min_size=14, max_size=14), bad=st.integers(1, 9))
def test_luhn_decides_between_a_card_and_an_order_number(body, bad):
    good = _luhn_complete("4" + body)  # a 16-digit Visa-shaped number that passes Luhn
    wrong = good[:-1] + str((int(good[-1]) + bad) % 10)  # the same with a wrong check digit
    assert R.redact(f"card {good} ok")[0] == "card [CARD] ok"
    assert R.redact(f"order {wrong} ok")[0] == f"order {wrong} ok"


def test_iban_checksum_both_ways():
    rng = random.Random(7)
    for _ in range(200):
        bban = "".join(rng.choice("0123456789") for _ in range(18))
        check = 98 - int("".join(str(int(c, 36)) for c in bban + "DE00")) % 97
        iban = f"DE{check:02d}{bban}"
        assert iban_ok(iban) and R.redact(f"iban {iban} x")[0] == "iban [IBAN] x"
        broken = iban[:10] + str((int(iban[10]) + 1) % 10) + iban[11:]
        assert not iban_ok(broken) and R.redact(f"iban {broken} x")[0] == f"iban {broken} x"


def test_the_word_after_an_iban_is_kept_exactly():
    """Only the IBAN goes: the word the pattern took in after it comes back as it was, with its space."""
    assert R.redact("pay BE68 5390 0754 7034 EUR today") == ("pay [IBAN] EUR today", {"IBAN": 1})
    assert R.redact("pay BE68539007547034 EUR") == ("pay [IBAN] EUR", {"IBAN": 1})
    # a run-together word is cut at the country's length (Belgium: 16 characters)
    assert R.redact("ref BE68539007547034EUR") == ("ref [IBAN]EUR", {"IBAN": 1})
    # the whole match is tried first: a German IBAN ends in a 2-character group that the pattern takes as its own
    assert R.redact("DE89 3704 0044 0532 0130 00 EUR") == ("[IBAN] EUR", {"IBAN": 1})
    # one character past the IBAN (the longest cut, at len - 1) and Norway's 15 characters (the shortest IBAN)
    assert R.redact("ref BE68539007547034E") == ("ref [IBAN]E", {"IBAN": 1})
    assert R.redact("ref NO9386011117947AB") == ("ref [IBAN]AB", {"IBAN": 1})
    # a country without a known length (Kosovo, 20 characters) is cut only before a space
    assert R.redact("pay XK05 1212 0123 4567 8906 EUR") == ("pay [IBAN] EUR", {"IBAN": 1})


def test_ids_with_personal_data_become_a_stable_keyed_hash():
    a, _ = R.redact_id("jane.doe@corp.example")
    b, _ = R.redact_id("jane.doe@corp.example")
    other, _ = Redactor.from_config(IngestConfig(), id_key=b"another key").redact_id("jane.doe@corp.example")
    assert a == b and a.startswith("pii-") and "jane" not in a and other != a
    assert R.redact_id("T-1001") == ("T-1001", {})


# ---------------------------------------------------------------------------------------------- the whole store

def _hostile_export(tmp_path):
    vals = {k + str(i): v for i, (k, _, v) in enumerate(PLANTED)}
    recs = [
        # an id that is an e-mail; secrets in every text field, in a link, in the status
        {"id": "jane.doe@corp.example", "updated": "2024-03-01T10:00:00Z", "title": "card 4111 1111 1111 1111",
         "body": " ; ".join(t.format(v=v) for _, t, v in PLANTED), "resolution": "password is hunter2",
         "status": "resolved", "links": ["doc/a", "mail jane.doe+billing@corp.example.co.uk"],
         "answer": "7", "answer_type": "numeric", "resolution_verified": True},
        # quarantined with a reason that quotes the value
        {"id": "T-2", "updated": "call +1 415 555 0199", "title": "t", "body": "b"},
        {"id": "T-3", "updated": "2024-03-01T10:00:00Z", "answer_type": "password=abc123", "body": "b"},
        {"id": "T-4", "updated": "2024-03-01T10:00:00Z", "body": "b", "unknown col jane.doe@corp.example": 1},
    ]
    lines = [json.dumps(r) for r in recs] + ["{broken json with AKIAIOSFODNN7EXAMPLE and 123-45-6789"]
    p = tmp_path / "export.jsonl"
    p.write_text("\n".join(lines) + "\n")
    c = tmp_path / "export.csv"  # a torn CSV row with a secret: its raw text is quarantined
    c.write_text('id,updated,body\nT-9,2024-03-01T10:00:00Z,"open quote Bearer a8f5f167f44f4964e6c998dee827110c\n'
                 "T-10,2024-03-01T10:00:00Z,fine\n")
    return [p, c], vals


def test_no_planted_value_anywhere_in_the_store_or_the_report(tmp_path):
    files, vals = _hostile_export(tmp_path)
    st_ = LocalStore(tmp_path / "st")
    rep = ingest(load_config(), tickets=files, store=st_)
    assert rep["counts"]["quarantined"] == 4 and rep["counts"]["stored"] == 3
    texts = [format_report(rep), json.dumps(rep)]
    texts += [f.read_bytes().decode("utf-8", "replace") for f in (tmp_path / "st").rglob("*") if f.is_file()]
    needles = [*vals.values(), "jane.doe", "415 555 0199", "hunter2", "abc123"]
    hits = [n for n in needles for t in texts if n in t]
    assert hits == [], hits
    # the e-mail id became a keyed hash, in the index shard and the record, and updates still find it
    (t,) = [t for t in load_snapshot(st_)[2] if t["id"].startswith("pii-")]
    assert t["links"][0] == "doc/a" and "[EMAIL]" in t["links"][1]
    again = tmp_path / "again.jsonl"
    again.write_text(json.dumps({"id": "jane.doe@corp.example", "updated": "2024-04-01T10:00:00Z", "body": "newer"}))
    r2 = ingest(load_config(), tickets=[again], store=st_)
    assert r2["counts"]["updated_tickets"] == 1 and r2["counts"]["new_tickets"] == 0


def test_id_key_from_the_environment_is_not_stored(tmp_path, monkeypatch):
    monkeypatch.setenv("RLSD_ID_HASH_KEY", "operator-secret-key")
    p = tmp_path / "e.jsonl"
    p.write_text(json.dumps({"id": "bob@corp.example", "updated": "2024-03-01T10:00:00Z", "body": "b"}) + "\n")
    st_ = LocalStore(tmp_path / "st")
    ingest(load_config(), tickets=[p], store=st_)
    assert not (tmp_path / "st" / "keys").exists()
    (t,) = load_snapshot(st_)[2]
    assert t["id"] == Redactor.from_config(IngestConfig(), id_key=b"operator-secret-key").redact_id("bob@corp.example")[0]


def test_a_secret_across_the_body_cut_is_not_half_kept(tmp_path):
    key = "AKIAIOSFODNN7EXAMPLE"
    body = "x" * 90 + " " + key + " tail"  # the cut at 100 chars falls inside the key
    p = tmp_path / "e.jsonl"
    p.write_text(json.dumps({"id": "T-1", "updated": "2024-03-01T10:00:00Z", "body": body}) + "\n")
    st_ = LocalStore(tmp_path / "st")
    ingest(load_config(text="ingest: {max_body_chars: 100}"), tickets=[p], store=st_)
    (t,) = load_snapshot(st_)[2]
    assert "AKIAIOSF" not in t["body"] and len(t["body"]) == 100 and "[SECRET]" in t["body"]


@pytest.mark.parametrize("lines", [1, 2, 3])
def test_a_private_key_block_without_its_end_line_is_redacted(lines):
    """A key pasted without its END line (or cut by ingest.max_body_chars / the 8,000-character window of a
    quarantined record) matched nothing: its base64 lines were stored. They go up to the first line that is not
    base64 (or a header line such as Proc-Type); the text after it stays."""
    body = ["Proc-Type: 4,ENCRYPTED", "MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM2Hz", "Qm2nXp0vWk8Ls4ZrT7b1YcJd9EfGhKl+/="]
    text = "see the key:\n-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(body[:lines]) + "\nthanks, Bob"
    out, counts = R.redact(text)
    assert out == "see the key:\n[PRIVATE_KEY]\nthanks, Bob" and counts == {"PRIVATE_KEY": 1}, out
