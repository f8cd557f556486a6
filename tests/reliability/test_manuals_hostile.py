"""Hostile manuals folders (issue 18 item 5): a symlink that leaves the folder is refused (and recorded), one
that stays inside is followed; a binary file with a text suffix is quarantined by its content; files of an
unsupported type are listed in the manifest with their SHA-256, even by an ingest that stores nothing new.
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from rlsd.config import IngestConfig, load_config
from rlsd.data.ingest import ingest, load_snapshot
from rlsd.data.readers import binary_reason, decode_text, parse_manual
from rlsd.data.redact import Redactor
from rlsd.data.store import LocalStore

RAW = Redactor(enabled=False)
SECRET_LINE = "The root password of the payroll server: hunter2-outside-the-folder"


def _all_store_text(root) -> str:
    return "\n".join(f.read_bytes().decode("utf-8", "replace") for f in root.rglob("*") if f.is_file())


@pytest.fixture
def folder(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text(f"# Secret\n{SECRET_LINE}\n")
    (outside / "dir").mkdir()
    (outside / "dir" / "more.md").write_text(f"# More\n{SECRET_LINE}\n")
    m = tmp_path / "manuals"
    (m / "sub").mkdir(parents=True)
    (m / "guide.md").write_text("# Guide\nPlug it in.\n")
    (m / "sub" / "real.md").write_text("# Real\nInside text.\n")
    os.symlink(outside / "secret.md", m / "escape.md")  # a file outside
    os.symlink("../../outside/secret.md", m / "sub" / "relative-escape.md")  # the same, relative
    os.symlink(outside / "dir", m / "escape-dir")  # a folder outside
    os.symlink(m / "sub" / "real.md", m / "alias.md")  # inside: followed
    return m


def test_symlinks_out_of_the_folder_are_refused_and_recorded(tmp_path, folder):
    st_ = LocalStore(tmp_path / "st")
    rep = ingest(load_config(), manuals=[folder], store=st_)
    texts = [s["text"] for s in load_snapshot(st_)[1]]
    assert "Inside text." in texts and "Plug it in." in texts
    assert not any("hunter2" in t for t in texts)
    store_text = _all_store_text(tmp_path / "st")
    assert "hunter2" not in store_text and "hunter2" not in json.dumps(rep)
    refused = sorted(s["path"].rsplit("/", 1)[-1] for s in rep["sources"] if s["format"] == "symlink")
    assert refused == ["escape-dir", "escape.md", "relative-escape.md"]
    for s in rep["sources"]:
        if s["format"] == "symlink":
            assert (s["read"], s["stored"], s["quarantined"]) == (1, 0, 1) and s["reasons"] == {"symlink refused": 1}
    man = st_.read_manifest()
    assert sum(s["format"] == "symlink" for s in man["sources"]) == len(refused)
    # the followed alias inside the folder is a document of its own
    assert {s["doc_id"] for s in load_snapshot(st_)[1]} == {"guide", "real", "alias"}


def test_a_folder_symlink_out_of_the_folder_is_not_walked(tmp_path, folder):
    rep = ingest(load_config(), manuals=[folder], store=LocalStore(tmp_path / "st"))
    assert not any("more.md" in s["path"] for s in rep["sources"] if s["format"] != "symlink")


@pytest.mark.parametrize("name,data,why", [
    ("nul.md", b"# Title\n" + b"\x00" * 100 + b"text", "NUL bytes"),
    ("elf.txt", b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 20, "NUL bytes"),
    ("random.html", bytes((i * 131 + 7) % 256 for i in range(5000)).replace(b"\x00", b"\x01"), "not UTF-8"),
    ("utf16.md", "# Title\nhello".encode("utf-16"), "NUL bytes"),
    ("controls.txt", b"\x01\x02\x03\x04\x05\x06\x07\x08" * 50 + b"some text", "control characters"),
])
def test_binary_files_named_as_text_are_quarantined_by_content(tmp_path, name, data, why):
    (tmp_path / name).write_bytes(data)
    secs, q, rep = parse_manual(tmp_path / name, cfg=IngestConfig(), redactor=RAW)
    assert secs == [] and (rep.read, rep.quarantined) == (1, 1) and why in q[0]["reason"]
    assert q[0]["reason"].startswith("binary content")


@pytest.mark.parametrize("data", [
    "# Café\nLatin-1 bytes: ".encode() + "déjà vu, naïve, señor".encode("latin-1") + b"\n" + b"plain text " * 30,
    "# Ünïcödé\n日本語のマニュアル。\n".encode() * 20,
    b"# Tabs\n\tindented\r\n\x0cform feed page break\n",
])
def test_text_with_a_few_odd_bytes_is_not_binary(tmp_path, data):
    text, bad = decode_text(data)
    assert binary_reason(data, text, bad) == ""
    (tmp_path / "ok.md").write_bytes(data)
    secs, q, rep = parse_manual(tmp_path / "ok.md", cfg=IngestConfig(), redactor=RAW)
    assert secs and not q


def test_a_binary_md_in_a_folder_is_quarantined_not_stored(tmp_path):
    m = tmp_path / "m"
    m.mkdir()
    (m / "a.md").write_text("# A\ntext")
    (m / "blob.md").write_bytes(b"\x00" * 4096)
    st_ = LocalStore(tmp_path / "st")
    rep = ingest(load_config(), manuals=[m], store=st_)
    assert [s["doc_id"] for s in load_snapshot(st_)[1]] == ["a"]
    (b,) = [s for s in rep["sources"] if s["path"].endswith("blob.md")]
    assert b["reasons"] == {"binary content": 1}
    assert "\\u0000" not in _all_store_text(tmp_path / "st")


def test_unsupported_files_are_in_the_manifest_with_their_hash(tmp_path):
    m = tmp_path / "m"
    m.mkdir()
    (m / "a.md").write_text("# A\ntext")
    (m / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 100)
    (m / "notes.docx").write_bytes(b"PK\x03\x04" + b"y" * 50)
    st_ = LocalStore(tmp_path / "st")
    want = {str(m / n): hashlib.sha256((m / n).read_bytes()).hexdigest() for n in ("image.png", "notes.docx")}
    r1 = ingest(load_config(), manuals=[m], store=st_)
    got = {e["path"]: e["sha256"] for e in st_.read_manifest()["skipped"]}
    assert got == want and r1["counts"]["skipped_files"] == 2
    # the same folder again: no record is new, but the skipped files are still named by a manifest
    r2 = ingest(load_config(), manuals=[m], store=st_)
    assert r2["unchanged"] and r2["snapshot_written"] and r2["previous"] == r1["snapshot_id"]
    assert {e["path"]: e["sha256"] for e in st_.read_manifest()["skipped"]} == want


@pytest.mark.parametrize("secret", ["AKIAIOSFODNN7EXAMPLE", "jane.doe@corp.example"])
def test_a_secret_across_a_section_part_boundary_is_redacted(tmp_path, secret):
    """Sections over ingest.max_section_chars are cut into parts; the parts were redacted one by one, so a
    secret that the cut split in two matched in neither part and both halves were stored."""
    cfg = load_config(text="ingest: {max_section_chars: 200}")
    for shift in range(len(secret) + 1):  # the cut falls at every place in the secret
        text = "x " * 90 + "y" * (20 - shift) + " " + secret + " tail"
        sections, _, rep = parse_manual(_write(tmp_path / f"m{shift}.md", "# Setup\n\n" + text + "\n"),
                                        cfg=cfg.ingest, redactor=Redactor.from_config(cfg.ingest))
        assert len(sections) >= 1
        joined = "".join(s["text"] for s in sections)
        assert not any(secret[i:i + 6] in joined for i in range(len(secret) - 5)), (shift, joined[-80:])


def _write(path, text):
    path.write_text(text)
    return path
