"""Ingest from store prefixes and the configured inbox (issue 15, item 1) against a real S3 server (SeaweedFS):
the same snapshot as a local ingest of the same files, nothing re-parsed on a second run, exactly the new file's
tickets on a third, the inbox untouched, and bad input refused in one line with nothing written."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
from minio import Minio

import rlsd.data.ingest as ingest_mod
from rlsd.cli import main
from rlsd.config import load_config
from rlsd.data.inbox import InboxError, configured_inbox, parse_s3_uri, put
from rlsd.data.ingest import ingest
from rlsd.data.store import LocalStore, open_store

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"
SAMPLE_TICKETS = sorted((SAMPLE / "tickets").iterdir())
SAMPLE_MANUALS = sorted((SAMPLE / "manuals").iterdir())


def _s3_cfg(server, bucket: str, *extra: str):
    return load_config(None, ["store.backend=s3", f"store.endpoint={server.endpoint}", f"store.bucket={bucket}",
                              "store.retries=1", *extra])


def _client(server) -> Minio:
    return Minio(server.endpoint, access_key=server.access_key, secret_key=server.secret_key, secure=False)


def _objects(server, bucket: str, prefix: str) -> dict[str, str]:
    """{key: sha256 of the bytes} under prefix."""
    c, out = _client(server), {}
    for o in c.list_objects(bucket, prefix=prefix, recursive=True):
        r = c.get_object(bucket, o.object_name)
        try:
            out[o.object_name] = hashlib.sha256(r.read()).hexdigest()
        finally:
            r.close()
            r.release_conn()
    return out


class ParseCounter:
    """Counts the calls of the readers ingest uses (a file skipped as already ingested is never parsed)."""

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        for name in ("parse_manual", "iter_tickets"):
            real = getattr(ingest_mod, name)
            monkeypatch.setattr(ingest_mod, name, self._wrap(name, real))

    def _wrap(self, name, real):
        def wrapped(path, *a, **kw):
            self.calls.append(f"{name}:{Path(path).name}")
            return real(path, *a, **kw)
        return wrapped


def _new_tickets(path: Path, n: int, verified: int) -> Path:
    rows = [{"id": f"NEW-{i:04d}", "created": "2025-03-01T10:00:00Z", "updated": "2025-03-02T10:00:00Z",
             "title": f"Fan noise {i}", "body": f"The unit {i} is loud. How many fans does it have?",
             "status": "resolved", "resolution": "It has 3 fans.", "resolution_verified": i < verified,
             "links": [], "answer": 3, "answer_type": "numeric"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.integration
def test_s3_inbox_ingests_what_a_local_ingest_does_then_only_what_is_new(s3_env, tmp_path, monkeypatch):
    bucket = f"rlsd-{uuid.uuid4().hex[:10]}"
    cfg = _s3_cfg(s3_env, bucket)
    assert put(cfg, "tickets", SAMPLE_TICKETS)[0]["status"] == "uploaded"
    odd = tmp_path / "slides.docx"  # a type ingest does not read: listed as skipped once, then known
    odd.write_bytes(b"PK\x03\x04 not a manual")
    put(cfg, "manuals", SAMPLE_MANUALS + [odd])
    inbox_before = _objects(s3_env, bucket, "inbox/")
    assert len(inbox_before) == len(SAMPLE_TICKETS) + len(SAMPLE_MANUALS) + 1
    assert sorted(inbox_before.values()) == sorted(hashlib.sha256(p.read_bytes()).hexdigest()
                                                   for p in SAMPLE_TICKETS + SAMPLE_MANUALS + [odd])

    # the reference: the same files ingested from local paths into a local store
    local = ingest(load_config(), manuals=[SAMPLE / "manuals"], tickets=[SAMPLE / "tickets"],
                   store=LocalStore(tmp_path / "ref-store"))
    assert local["counts"]["tickets"] == 300 and local["new_verified_tickets"] > 100

    parsed = ParseCounter(monkeypatch)
    first = ingest(cfg)  # no inputs: the configured inbox
    assert {k: first["counts"][k] for k in ("sections", "tickets", "new_tickets", "quarantined", "read", "stored")} == \
        {k: local["counts"][k] for k in ("sections", "tickets", "new_tickets", "quarantined", "read", "stored")}
    assert first["new_verified_tickets"] == local["new_verified_tickets"]
    assert len(parsed.calls) == len(SAMPLE_TICKETS) + len(SAMPLE_MANUALS)
    store = open_store(cfg.store)
    man = store.read_manifest(first["snapshot_id"])
    assert sorted(s["path"] for s in man["sources"]) == sorted(
        [f"s3://{bucket}/inbox/tickets/{p.name}" for p in SAMPLE_TICKETS]
        + [f"s3://{bucket}/inbox/manuals/{p.name}" for p in SAMPLE_MANUALS])
    assert sorted(s["sha256"] for s in man["sources"] + man["skipped"]) == sorted(inbox_before.values())
    assert store.latest() == first["snapshot_id"]
    assert [e["path"] for e in man["skipped"]] == [f"s3://{bucket}/inbox/manuals/slides.docx"]

    # again, nothing new: nothing parsed, nothing written, the same snapshot
    parsed.calls.clear()
    snapshots = store.list_snapshots()
    again = ingest(cfg)
    assert parsed.calls == []
    assert (again["snapshot_id"], again["new_verified_tickets"], again["snapshot_written"]) == \
        (first["snapshot_id"], 0, False)
    assert len(again["already_ingested"]) == len(inbox_before)
    assert store.list_snapshots() == snapshots and store.latest() == first["snapshot_id"]

    # one new export: exactly its verified tickets are new, and only it is parsed
    new_file = _new_tickets(tmp_path / "export-2025-03.jsonl", 7, verified=5)
    put(cfg, "tickets", [new_file])
    third = ingest(cfg)
    assert parsed.calls == ["iter_tickets:export-2025-03.jsonl"]
    assert third["new_verified_tickets"] == 5 and third["counts"]["new_tickets"] == 7
    assert third["counts"]["tickets"] == first["counts"]["tickets"] + 7
    assert third["previous"] == first["snapshot_id"] and store.latest() == third["snapshot_id"]
    assert [s["path"] for s in third["sources"]] == [f"s3://{bucket}/inbox/tickets/export-2025-03.jsonl"]
    # and again: files recorded by earlier snapshots (not only the latest) stay known
    parsed.calls.clear()
    fourth = ingest(cfg)
    assert parsed.calls == [] and fourth["snapshot_written"] is False and store.latest() == third["snapshot_id"]
    assert len(fourth["already_ingested"]) == len(inbox_before) + 1

    # the inbox is never emptied or changed by ingest
    after = _objects(s3_env, bucket, "inbox/")
    assert {k: v for k, v in after.items() if k in inbox_before} == inbox_before and len(after) == len(inbox_before) + 1


@pytest.mark.integration
def test_explicit_s3_prefix_and_single_object(s3_env, tmp_path):
    bucket = f"rlsd-{uuid.uuid4().hex[:10]}"
    cfg = _s3_cfg(s3_env, bucket, "store.inbox=drop/zone")
    put(cfg, "tickets", SAMPLE_TICKETS)
    assert configured_inbox(cfg, "tickets") == f"s3://{bucket}/drop/zone/tickets/"
    one = SAMPLE_TICKETS[0]
    rep = ingest(cfg, tickets=[f"s3://{bucket}/drop/zone/tickets/{one.name}"])  # one object, named exactly
    ref = ingest(load_config(), tickets=[one], store=LocalStore(tmp_path / "ref"))
    assert rep["counts"]["tickets"] == ref["counts"]["tickets"] and len(rep["sources"]) == 1
    # a prefix without the trailing slash is a prefix (not "drop/zone/tickets-old"); the file above is known
    rep2 = ingest(cfg, tickets=[f"s3://{bucket}/drop/zone/tickets"])
    assert [s["path"].rsplit("/", 1)[-1] for s in rep2["sources"]] == [SAMPLE_TICKETS[1].name]
    assert [a["path"].rsplit("/", 1)[-1] for a in rep2["already_ingested"]] == [one.name]


@pytest.mark.integration
def test_empty_inbox_is_zero_new_tickets_not_an_error(s3_env, capsys):
    bucket = f"rlsd-{uuid.uuid4().hex[:10]}"
    cfg = _s3_cfg(s3_env, bucket)
    open_store(cfg.store)  # the bucket exists, the inbox prefix holds nothing
    rep = ingest(cfg)
    assert (rep["new_verified_tickets"], rep["snapshot_written"], rep["snapshot_id"]) == (0, False, None)
    assert open_store(cfg.store).list_snapshots() == []
    sets = ["--set", "store.backend=s3", "--set", f"store.endpoint={s3_env.endpoint}", "--set", f"store.bucket={bucket}"]
    capsys.readouterr()
    assert main(["ingest", *sets]) == 0
    assert "nothing new to ingest (0 files already ingested); snapshot (none yet)" in capsys.readouterr().out


def _bad(capsys, argv) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.integration
def test_bad_inbox_input_is_one_line_and_writes_nothing(s3_env, tmp_path, capsys, monkeypatch):
    bucket = f"rlsd-{uuid.uuid4().hex[:10]}"
    cfg = _s3_cfg(s3_env, bucket)
    put(cfg, "tickets", SAMPLE_TICKETS[:1])
    first = ingest(cfg)
    store = open_store(cfg.store)
    keys_before = set(_objects(s3_env, bucket, ""))
    sets = ["--set", "store.backend=s3", "--set", f"store.endpoint={s3_env.endpoint}", "--set", f"store.bucket={bucket}",
            "--set", "store.retries=1"]

    missing = f"nosuch-{uuid.uuid4().hex[:8]}"
    err = _bad(capsys, ["ingest", *sets, "--tickets", f"s3://{missing}/inbox/tickets/"])
    assert f"s3://{missing}/inbox/tickets/" in err and "does not exist" in err
    assert not _client(s3_env).bucket_exists(missing)  # not created by the attempt

    err = _bad(capsys, ["ingest", *sets, "--tickets", "s3://Bad_Bucket/x/"])
    assert "malformed store URI" in err and "Bad_Bucket" in err
    err = _bad(capsys, ["ingest", *sets, "--tickets", f"s3://{bucket}/a/../b/"])
    assert "malformed store URI" in err
    err = _bad(capsys, ["ingest", *sets, "--manuals", "http://example.com/manuals/"])
    assert "malformed store URI" in err and "http://example.com/manuals/" in err

    # the configured inbox of a bucket that does not exist (no inputs given)
    err = _bad(capsys, ["ingest", *sets[:-4], "--set", f"store.bucket={missing}"])
    assert f"s3://{missing}/inbox/manuals/" in err and "does not exist" in err
    assert not _client(s3_env).bucket_exists(missing)

    # credentials the server refuses
    with monkeypatch.context() as m:
        m.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-0123456789")
        err = _bad(capsys, ["ingest", *sets, "--tickets", f"s3://{bucket}/inbox/tickets/"])
    assert f"s3://{bucket}/inbox/tickets/" in err and "refused" in err

    assert store.latest() == first["snapshot_id"] and store.list_snapshots() == [first["snapshot_id"]]
    assert set(_objects(s3_env, bucket, "")) == keys_before  # not one key added anywhere in the store


def test_parse_s3_uri():
    assert parse_s3_uri("s3://rlsd/inbox/tickets/") == ("rlsd", "inbox/tickets/")
    assert parse_s3_uri("s3://rlsd") == ("rlsd", "")
    assert parse_s3_uri("s3://my.bucket-1/a/b.jsonl") == ("my.bucket-1", "a/b.jsonl")
    for bad in ["s3:/rlsd/x", "s3://", "s3:///x", "s3://ab/x", "s3://UPPER/x", "s3://a_b_c/x", "s3://x..y/z",
                "s3://10.0.0.1/x", "s3://rlsd//x", "s3://rlsd/./x", "s3://rlsd/../x", "s3://rlsd/a\\b",
                "s3://rlsd/a\nb", "s3://-rlsd/x"]:
        with pytest.raises(InboxError, match="malformed store URI"):
            parse_s3_uri(bad)


def test_local_inbox_put_refuses_other_content_and_ingests_only_new(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, [f"store.root={tmp_path / 'store'}"])
    folder = Path(configured_inbox(cfg, "tickets"))
    assert folder == tmp_path / "store" / "inbox" / "tickets"
    assert ingest(cfg)["new_verified_tickets"] == 0  # a local inbox not made yet is empty, not an error
    assert not (tmp_path / "store" / "refs").exists()
    assert [r["status"] for r in put(cfg, "tickets", SAMPLE_TICKETS)] == ["uploaded"] * len(SAMPLE_TICKETS)
    assert [r["status"] for r in put(cfg, "tickets", SAMPLE_TICKETS)] == ["unchanged"] * len(SAMPLE_TICKETS)
    clash = tmp_path / SAMPLE_TICKETS[0].name
    clash.write_text(SAMPLE_TICKETS[0].read_text(encoding="utf-8") + "\n", encoding="utf-8")
    new_file = _new_tickets(tmp_path / "new.jsonl", 3, verified=2)
    with pytest.raises(InboxError, match="already holds other content.*nothing was copied"):
        put(cfg, "tickets", [new_file, clash])
    assert not (folder / "new.jsonl").exists()  # refused as a whole
    assert (folder / clash.name).read_bytes() == SAMPLE_TICKETS[0].read_bytes()
    first = ingest(cfg)
    assert first["new_verified_tickets"] > 100
    parsed = ParseCounter(monkeypatch)
    assert ingest(cfg)["snapshot_written"] is False and parsed.calls == []
    assert main(["inbox", "put", "--kind", "tickets", "--set", f"store.root={tmp_path / 'store'}", str(new_file)]) == 0
    rep = ingest(cfg)
    assert rep["new_verified_tickets"] == 2 and parsed.calls == ["iter_tickets:new.jsonl"]
    assert sorted(p.name for p in folder.iterdir()) == sorted([p.name for p in SAMPLE_TICKETS] + ["new.jsonl"])


def _skipped_then_renamed(cfg, tmp_path):
    """An export put with a suffix ingest does not read, and a manual put in the tickets inbox: skipped (and
    known as skipped: not listed again); then the same bytes under a name that is read, and the manual in the
    manuals inbox: new, parsed, their tickets and sections in the snapshot."""
    export = _new_tickets(tmp_path / "export.txt", 5, verified=5)
    manual = tmp_path / "fans.md"
    manual.write_text("# Fans\n\nThe unit has 3 fans behind the front grille.\n", encoding="utf-8")
    put(cfg, "tickets", [export, manual])
    first = ingest(cfg)
    assert first["new_verified_tickets"] == 0 and len(first["skipped"]) == 2
    assert ingest(cfg)["snapshot_written"] is False  # the skipped files are known as such
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    (renamed / "export.jsonl").write_bytes(export.read_bytes())
    put(cfg, "tickets", [renamed / "export.jsonl"])
    put(cfg, "manuals", [manual])
    rep = ingest(cfg)
    assert rep["new_verified_tickets"] == 5, rep["already_ingested"]
    assert sorted(Path(s["path"]).name for s in rep["sources"]) == ["export.jsonl", "fans.md"]
    assert rep["counts"]["sections"] > first["counts"]["sections"]


def test_a_file_skipped_for_its_type_is_read_once_renamed_to_a_type_that_is_read(tmp_path):
    _skipped_then_renamed(load_config(None, [f"store.root={tmp_path / 'store'}"]), tmp_path)


@pytest.mark.integration
def test_s3_a_file_skipped_for_its_type_is_read_once_renamed(s3_env, tmp_path):
    _skipped_then_renamed(_s3_cfg(s3_env, f"rlsd-{uuid.uuid4().hex[:10]}"), tmp_path)


@pytest.mark.integration
def test_s3_inbox_put_refuses_other_content(s3_env, tmp_path, capsys):
    bucket = f"rlsd-{uuid.uuid4().hex[:10]}"
    cfg = _s3_cfg(s3_env, bucket)
    put(cfg, "tickets", SAMPLE_TICKETS[:1])
    before = _objects(s3_env, bucket, "inbox/")
    clash = tmp_path / SAMPLE_TICKETS[0].name
    clash.write_bytes(SAMPLE_TICKETS[0].read_bytes() + b"\n")
    sets = ["--set", "store.backend=s3", "--set", f"store.endpoint={s3_env.endpoint}", "--set", f"store.bucket={bucket}"]
    err = _bad(capsys, ["inbox", "put", "--kind", "tickets", *sets, str(clash)])
    assert f"s3://{bucket}/inbox/tickets/{clash.name}" in err and "already holds other content" in err
    assert _objects(s3_env, bucket, "inbox/") == before
    assert put(cfg, "tickets", SAMPLE_TICKETS[:1])[0]["status"] == "unchanged"


@pytest.mark.slow
@pytest.mark.integration
def test_pipeline_with_no_input_parameters_ingests_the_s3_inbox_then_nothing(s3_env, tmp_path, monkeypatch):
    """The compiled pipeline through kfp.local with the real ingest / validate / build-tasks steps and its default
    (empty) manuals / tickets parameters, as a schedule runs it: the first run ingests the inbox, the second finds
    nothing new (0 new verified tickets, the same snapshot; the gate still counts the first run's, none of which
    was trained on); training is gated off by min_new_tickets here."""
    import os

    from rlsd.pipeline_local import run_local

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "src"), str(REPO)]))
    (tmp_path / "model").mkdir()
    bucket = f"rlsd-{uuid.uuid4().hex[:10]}"
    sets = ["store.backend=s3", f"store.endpoint={s3_env.endpoint}", f"store.bucket={bucket}", "store.retries=2",
            "model.path=model", "platform.min_new_tickets=1000000", f"tracking.uri=sqlite:///{tmp_path / 'ml.db'}"]
    cfg = load_config(None, sets)
    put(cfg, "tickets", SAMPLE_TICKETS)
    put(cfg, "manuals", SAMPLE_MANUALS)
    inbox = _objects(s3_env, bucket, "inbox/")
    expected = ingest(load_config(), manuals=[SAMPLE / "manuals"], tickets=[SAMPLE / "tickets"],
                      store=LocalStore(tmp_path / "ref"))["new_verified_tickets"]

    first = run_local(None, sets, str(tmp_path / "runs"), inbox=True, quiet=True)
    store = open_store(cfg.store)
    sid = store.latest()
    assert first["untrained_verified_tickets"] == expected > 0 and not first["trained"]
    assert first["validation_report"] and sid
    report = json.loads((Path(first["run_dir"]) / "ingest" / "snapshot").read_text())
    assert report["snapshot_id"] == sid and all(s["path"].startswith(f"s3://{bucket}/inbox/") for s in report["sources"])

    second = run_local(None, sets, str(tmp_path / "runs"), inbox=True, quiet=True)
    # nothing new, and nothing trained yet (gated off): the gate still counts the first run's tickets
    assert second["untrained_verified_tickets"] == expected and not second["trained"]
    assert json.loads((Path(second["run_dir"]) / "ingest" / "snapshot").read_text())["new_verified_tickets"] == 0
    assert store.latest() == sid and store.list_snapshots() == [sid]
    assert _objects(s3_env, bucket, "inbox/") == inbox
