"""A deterministic sample enterprise corpus: a fictional company's manuals and support tickets.

Halvorsen Devices sells five products; each has a manual (Markdown, HTML, plain text or PDF) whose
sections state product-specific facts: warranty months, session timeouts, ports, reset hold times,
LED colours, licence tiers, error-code categories, syslog settings. Every fact value is drawn per
product from a small set of plausible values, so a model that has not read the manual can only
guess from its prior (numbers with a strong prior such as 12/24/36 months; labels from a short list
named in the question), while a model that reads the linked section or the verified resolution can
copy the value. Tickets ask about one fact each and carry a verified answer of type numeric, label
or json; a share of them is open, unverified or answerless (not turned into tasks), some appear in
both exports with a later update, and bodies hold personal data for redaction to remove.

Outputs under ``out_dir``: ``manuals/`` (4 formats) and ``tickets/`` (one JSONL and one CSV export
with different column names and order, CRLF, quoted newlines). The PDF is written by a tiny PDF
writer here (one font, text lines), which pypdf reads back.
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path
from typing import Any

PRODUCTS = [
    ("Tessel Gateway", "tessel-gateway-admin-guide", "md"),
    ("Orrin Sensor Hub", "orrin-sensor-hub-manual", "html"),
    ("Kestrel Backup Appliance", "kestrel-backup-appliance-guide", "txt"),
    ("Lumen Badge Reader", "lumen-badge-reader-guide", "pdf"),
    ("Marlow Print Server", "marlow-print-server-guide", "md"),
]
NUMERIC_KEYS = ["max_temp", "max_clients", "session_timeout", "admin_port", "reset_seconds", "update_hours",
                "retention_days", "warranty"]
LABEL_KEYS = ["update_led", "tier", "error_codes"]
COLOURS = ["amber", "blue", "green", "red"]
TIERS = ["Basic", "Plus", "Enterprise"]
CATEGORIES = ["power", "network", "storage", "firmware"]
FEATURES = ["single sign-on", "audit export", "remote wipe", "API access", "high availability"]

# Sections of every manual: heading path (below the title) -> fact keys stated there.
SECTIONS: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    (("Overview",), ()),
    (("Specifications",), ("max_temp", "max_clients")),
    (("Security", "Sessions"), ("session_timeout", "admin_port")),
    (("Maintenance", "Factory reset"), ("reset_seconds",)),
    (("Maintenance", "Firmware updates"), ("update_hours", "update_led")),
    (("Logging",), ("retention_days", "syslog")),
    (("Licensing",), ("tier",)),
    (("Troubleshooting", "Error codes"), ("error_codes",)),
    (("Warranty",), ("warranty",)),
]

FILLER = [
    "Read this section completely before changing the configuration.",
    "Settings changed in the web console take effect after the next restart unless stated otherwise.",
    "Keep a copy of the configuration file before any maintenance work.",
    "Contact Halvorsen support if the behaviour differs from this description.",
    "Administrators can review these settings at any time from the console.",
    "The values below apply to the current hardware revision.",
]


def _facts(rng: random.Random, product: str) -> dict[str, Any]:
    codes = rng.sample(range(10, 99), 3)
    return {
        "max_temp": rng.choice([40, 45, 50, 55, 60]),
        "max_clients": rng.choice([8, 16, 32, 64, 128]),
        "session_timeout": rng.choice([5, 10, 15, 30, 60]),
        "admin_port": rng.choice([443, 8080, 8443, 9443]),
        "reset_seconds": rng.choice([5, 10, 15, 20, 30]),
        "update_hours": rng.choice([6, 12, 24, 48]),
        "update_led": rng.choice(COLOURS),
        "retention_days": rng.choice([7, 14, 30, 90]),
        "syslog": {"protocol": rng.choice(["TCP", "UDP"]), "port": rng.choice([514, 601, 1514, 6514])},
        "tier_feature": rng.choice(FEATURES),
        "tier": rng.choice(TIERS),
        "error_codes": {f"E-{c}": rng.choice(CATEGORIES) for c in codes},
        "warranty": rng.choice([12, 24, 36, 48]),
    }


def _manual_sentences(key: str, P: str, f: dict[str, Any]) -> list[str]:
    v = f[key]
    if key == "syslog":
        return [f"Remote syslog forwarding uses {v['protocol']} on port {v['port']} by default."]
    if key == "tier":
        return [f"The {f['tier_feature']} feature of the {P} requires the {v} licence tier."]
    if key == "error_codes":
        return [f"Error {c} belongs to the {cat} category." for c, cat in v.items()]
    return [{
        "max_temp": f"The {P} operates at ambient temperatures up to {v} degrees Celsius.",
        "max_clients": f"A single {P} serves at most {v} concurrent client connections.",
        "session_timeout": f"Idle administrator sessions on the {P} are signed out after {v} minutes.",
        "admin_port": f"The web console of the {P} listens on TCP port {v}.",
        "reset_seconds": f"To restore factory settings, hold the recessed reset button for {v} seconds "
                         "until the unit restarts.",
        "update_hours": f"The {P} checks for new firmware every {v} hours.",
        "update_led": f"While a firmware update is installed, the status LED blinks {v}; do not remove power.",
        "retention_days": f"Event logs are kept on the device for {v} days before they are overwritten.",
        "warranty": f"The {P} carries a limited hardware warranty of {v} months from the date of shipment.",
    }[key]]


# Ticket templates per fact: (title, question, answer_type, resolution). {P} = product.
def _ticket_text(key: str, P: str, f: dict[str, Any], rng: random.Random) -> tuple[str, str, str, Any, str, list]:
    """(title, question, answer_type, answer, resolution, label choices)."""
    v = f[key]
    if key == "error_codes":
        code = rng.choice(sorted(v))
        opts = list(CATEGORIES)
        rng.shuffle(opts)
        return (f"Error {code} on {P}",
                rng.choice([f"Our {P} shows error {code} on its display. Which category does this error belong to: "
                            f"{', '.join(opts[:-1])} or {opts[-1]}?",
                            f"We keep seeing {code} on the {P}. Is that a {', '.join(opts[:-1])} or {opts[-1]} problem?"]),
                "label", v[code], f"Looked up {code} in the {P} error code table: it is a {v[code]} error. "
                f"Customer confirmed after checking.", opts)
    if key == "update_led":
        opts = list(COLOURS)
        rng.shuffle(opts)
        return ("Which LED colour means updating?",
                rng.choice([f"Which colour does the status LED of the {P} blink while firmware is being installed: "
                            f"{', '.join(opts[:-1])} or {opts[-1]}?",
                            f"Before I unplug our {P}: what LED colour shows a firmware update in progress "
                            f"({', '.join(opts)})?"]),
                "label", v, f"During firmware installation the {P} LED blinks {v}. Verified on a lab unit.", opts)
    if key == "tier":
        opts = list(TIERS)
        feat = f["tier_feature"]
        return (f"Licence needed for {feat}",
                rng.choice([f"Which licence tier do we need to use {feat} on the {P}: Basic, Plus or Enterprise?",
                            f"We want to turn on {feat} for our {P}. Is that Basic, Plus or Enterprise?"]),
                "label", v, f"{feat} on the {P} is part of the {v} tier; licence key sent to the customer.", opts)
    if key == "syslog":
        return ("Syslog forwarding settings",
                rng.choice([f"What are the default transport protocol and port for remote syslog on the {P}?",
                            f"Our SIEM team needs the default syslog protocol and port used by the {P}."]),
                "json", v, f"Default remote syslog for the {P} is {v['protocol']} port {v['port']}; "
                "the SIEM now receives events.", [])
    numeric = {
        "max_temp": ("Operating temperature", [f"What is the highest ambient temperature in degrees Celsius the {P} "
                                               "is rated for?",
                                               f"Our server room gets warm. Up to how many degrees Celsius can the {P} "
                                               "run?"],
                     f"The {P} is rated up to {v} degrees Celsius ambient; advised the customer on cooling."),
        "max_clients": ("Connection limit", [f"How many concurrent client connections can one {P} handle?",
                                             f"What is the maximum number of simultaneous clients on a {P}?"],
                        f"One {P} supports {v} concurrent clients; suggested a second unit for growth."),
        "session_timeout": ("Console keeps logging me out", [f"After how many idle minutes does the {P} console sign "
                                                             "me out?",
                                                             f"The {P} admin console logs us out when idle. How many "
                                                             "minutes is the timeout?"],
                            f"The idle timeout of the {P} console is {v} minutes and cannot be raised."),
        "admin_port": ("Cannot reach web console", [f"Which TCP port does the web console of the {P} listen on?",
                                                    f"Our firewall blocks the {P} console. What port must we open "
                                                    "for it?"],
                       f"Console of the {P} is on TCP port {v}; the firewall rule fixed access."),
        "reset_seconds": ("Factory reset", [f"How many seconds must I hold the reset button to factory reset the {P}?",
                                            f"I need to wipe our {P}. For how many seconds do I press the reset "
                                            "button?"],
                          f"Factory reset on the {P}: hold reset for {v} seconds. Customer reset the unit."),
        "update_hours": ("Firmware update schedule", [f"How often, in hours, does the {P} look for new firmware?",
                                                      f"Every how many hours does our {P} check for firmware "
                                                      "updates?"],
                         f"The {P} polls for firmware every {v} hours."),
        "retention_days": ("Log retention", [f"For how many days does the {P} keep its event logs?",
                                             f"Auditors ask how long the {P} retains event logs on the device, in "
                                             "days."],
                           f"Event logs on the {P} are kept {v} days; suggested syslog for longer retention."),
        "warranty": ("Warranty question", [f"How many months of hardware warranty does the {P} come with?",
                                           f"Is our {P} still covered? How long is its hardware warranty in months?"],
                     f"Hardware warranty for the {P} is {v} months from shipment; RMA opened."),
    }[key]
    title, questions, resolution = numeric
    return title, rng.choice(questions), "numeric", v, resolution, []


GREETINGS = ["Hi team,", "Hello,", "Good morning,", "Hi support,", "Dear Halvorsen support,"]
CLOSINGS = ["Thanks!", "Thank you.", "Regards,", "Best,", "Cheers,"]
NAMES = ["Jane Doe", "Ravi Patel", "Mia Chen", "Tom Berg", "Ana Silva", "Lars Holm", "Ines Costa", "Kofi Mensah"]


def _pii_line(rng: random.Random, name: str) -> str:
    user = name.lower().replace(" ", ".")
    choices = [
        f"You can reach me at {user}@example.com or +1 415 555 {rng.randint(1000, 9999)}.",
        f"The unit sits at 10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)} on our network.",
        f"Call me on ({rng.randint(200, 989)}) 555-{rng.randint(1000, 9999)} if needed.",
        f"Our management address is 2001:db8::{rng.randint(1, 65535):x}.",
        f"My employee number is EMP-{rng.randint(10000, 99999)}.",
        f"In case it helps, our config has api_key: sk_live_{''.join(rng.choices('abcdef0123456789', k=24))}.",
        "",
    ]
    return rng.choice(choices)


def _pdf_bytes(lines: list[str]) -> bytes:
    """A minimal PDF: Helvetica 10 pt, 60 lines a page, plain text (pypdf extracts it line by line)."""
    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    pages = [lines[i:i + 60] for i in range(0, len(lines), 60)] or [[]]
    objs: list[bytes] = []
    n_pages = len(pages)
    # 1 catalog, 2 pages, 3 font, then (page, content) pairs
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n_pages))
    objs.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objs.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    for i, page in enumerate(pages):
        body = "BT /F1 10 Tf 12 TL 50 800 Td\n" + "".join(f"({esc(l)}) Tj T*\n" for l in page) + "ET"
        stream = body.encode("latin-1", errors="replace")
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> "
                    f"/Contents {5 + 2 * i} 0 R >>".encode())
        objs.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for k, o in enumerate(objs, 1):
        offsets.append(out.tell())
        out.write(f"{k} 0 obj\n".encode() + o + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode())
    for off in offsets:
        out.write(f"{off:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def _wrap(text: str, width: int = 90) -> list[str]:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    return lines + ([cur] if cur else [])


def _write_manual(path: Path, title: str, fmt: str, sections: list[tuple[tuple[str, ...], list[str]]]) -> None:
    if fmt == "md":
        out, last = [f"# {title}", ""], ()
        for hp, paras in sections:
            for lvl, h in enumerate(hp):
                if last[: lvl + 1] != hp[: lvl + 1]:
                    out += ["#" * (lvl + 2) + " " + h, ""]
            out += [" ".join(paras), ""]
            last = hp
        path.write_text("\n".join(out), encoding="utf-8")
    elif fmt == "html":
        out, last = [f"<!DOCTYPE html><html><head><title>{title}</title><style>p{{margin:0}}</style></head><body>",
                     f"<h1>{title}</h1>"], ()
        for hp, paras in sections:
            for lvl, h in enumerate(hp):
                if last[: lvl + 1] != hp[: lvl + 1]:
                    out.append(f"<h{lvl + 2}>{h}</h{lvl + 2}>")
            out.append("<p>" + " ".join(paras).replace("&", "&amp;") + "</p>")
            last = hp
        out.append("<script>var analytics = false;</script></body></html>")
        path.write_text("\n".join(out), encoding="utf-8")
    else:
        lines, last, num = [title, "=" * len(title), ""], (), [0, 0]
        for hp, paras in sections:
            for lvl, h in enumerate(hp):
                if last[: lvl + 1] != hp[: lvl + 1]:
                    num[lvl] += 1
                    if lvl == 0:
                        num[1] = 0
                    label = ".".join(str(n) for n in num[: lvl + 1])
                    lines += [f"{label} {h}", ""]
            lines += _wrap(" ".join(paras)) + [""]
            last = hp
        if fmt == "txt":
            path.write_text("\r\n".join(lines), encoding="utf-8")  # a Windows-made file
        else:
            path.write_bytes(_pdf_bytes(lines))


def make_corpus(out_dir: str | Path, *, n_tickets: int = 300, seed: int = 0) -> dict[str, Any]:
    """Write the sample corpus; returns counts and the paths. Same seed -> byte-identical files."""
    from rlsd.config import IngestConfig
    from rlsd.data.ingest import parse_manual
    from rlsd.data.redact import Redactor

    rng = random.Random(seed)
    out = Path(out_dir)
    (out / "manuals").mkdir(parents=True, exist_ok=True)
    (out / "tickets").mkdir(parents=True, exist_ok=True)
    facts: dict[str, dict[str, Any]] = {}
    fact_section: dict[tuple[str, str], str] = {}
    cfg = IngestConfig(redact=False)
    for P, doc, fmt in PRODUCTS:
        f = facts[P] = _facts(rng, P)
        secs = []
        for hp, keys in SECTIONS:
            paras = [rng.choice(FILLER)]
            for k in keys:
                paras += _manual_sentences(k, P, f)
            if not keys:
                paras = [f"The {P} is part of the Halvorsen Devices line of network equipment.",
                         "This guide covers installation, security, maintenance and troubleshooting."]
            paras.append(rng.choice(FILLER))
            secs.append((hp, paras))
        path = out / "manuals" / f"{doc}.{fmt}"
        _write_manual(path, f"{P} Guide", fmt, secs)
        # Learn the section ids the ingest will assign, by parsing the file we just wrote.
        parsed, _, _ = parse_manual(path, cfg=cfg, redactor=Redactor(enabled=False))
        for hp, keys in SECTIONS:
            for k in keys:
                probe = " ".join(_manual_sentences(k, P, f)[0].split()[:6])
                hits = [s["id"] for s in parsed if probe in " ".join(s["text"].split())]
                if len(hits) != 1:
                    raise RuntimeError(f"corpus: fact {k} of {P} found in {len(hits)} sections of {path}")
                fact_section[(P, k)] = hits[0]

    tickets: list[dict[str, Any]] = []
    for i in range(n_tickets):
        P = PRODUCTS[rng.randrange(len(PRODUCTS))][0]
        r = rng.random()
        key = rng.choice(NUMERIC_KEYS if r < 0.45 else LABEL_KEYS if r < 0.85 else ["syslog"])
        title, question, atype, answer, resolution, choices = _ticket_text(key, P, facts[P], rng)
        name = rng.choice(NAMES)
        body = "\n".join(x for x in [rng.choice(GREETINGS), question, _pii_line(rng, name), rng.choice(CLOSINGS),
                                      name] if x)
        created = 1_704_067_200 + i * 3_600 * 7 + rng.randint(0, 3_000)
        kind = rng.random()
        status, verified, ans, res = "resolved", True, answer, resolution
        if kind < 0.08:
            status, verified, ans, res = "open", False, "", ""
        elif kind < 0.14:
            verified = False  # resolved but nobody verified the resolution
        elif kind < 0.18:
            ans, atype = "", ""  # a how-to with no checkable answer
        links = [fact_section[(P, key)]] if rng.random() < 0.7 else []
        tickets.append({
            "id": f"HD-{10001 + i}", "created": created, "updated": created + rng.randint(600, 86_400),
            "title": title, "body": body, "status": status, "resolution": res, "resolution_verified": verified,
            "links": links, "answer": ans, "answer_type": atype if ans != "" else "",
            "choices": choices, "product": P,
        })

    def iso(t: int) -> str:
        import datetime as dt

        return dt.datetime.fromtimestamp(t, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    # Export 1 (JSONL): the first 60%, plus an earlier, still-open version of some later tickets.
    # Export 2 (CSV, another tool's column names and order): the rest.
    cut = int(n_tickets * 0.6)
    dup_ids = {t["id"] for t in tickets[cut:] if rng.random() < 0.08}
    with (out / "tickets" / "export-2024-h1.jsonl").open("w", encoding="utf-8", newline="\n") as fh:
        for t in tickets[:cut] + [t for t in tickets[cut:] if t["id"] in dup_ids]:
            early = t["id"] in dup_ids
            rec = {"id": t["id"], "created": iso(t["created"]),
                   "updated": iso(t["created"] + 300 if early else t["updated"]),
                   "title": t["title"], "body": t["body"], "status": "open" if early else t["status"],
                   "resolution": "" if early else t["resolution"],
                   "resolution_verified": False if early else t["resolution_verified"],
                   "links": t["links"], "answer": "" if early else t["answer"],
                   "answer_type": "" if early else t["answer_type"], "product": t["product"]}
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    cols = ["ticket_id", "Subject", "Description", "State", "Resolution", "Verified", "Linked Sections",
            "Answer", "Answer Type", "Created At", "Updated At", "Priority", "Assignee"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(cols)
    for t in tickets[cut:]:
        ans = json.dumps(t["answer"]) if t["answer_type"] == "json" else t["answer"]
        w.writerow([t["id"], t["title"], t["body"], t["status"].upper(), t["resolution"],
                    "yes" if t["resolution_verified"] else "no", ";".join(t["links"]), ans, t["answer_type"],
                    iso(t["created"]), iso(t["updated"]), rng.choice(["P2", "P3", "P4"]),
                    rng.choice(["L1 queue", "L2 queue"])])
    (out / "tickets" / "export-2024-h2.csv").write_text(buf.getvalue(), encoding="utf-8", newline="")
    n_verified = sum(1 for t in tickets if t["status"] == "resolved" and t["resolution_verified"] and t["answer"] != "")
    by_type: dict[str, int] = {}
    for t in tickets:
        if t["answer"] != "" and t["resolution_verified"]:
            by_type[t["answer_type"]] = by_type.get(t["answer_type"], 0) + 1
    return {"out_dir": str(out), "manuals": len(PRODUCTS), "tickets": n_tickets, "duplicates": len(dup_ids),
            "verified_with_answer": n_verified, "by_answer_type": by_type,
            "label_choices": {t["id"]: t["choices"] for t in tickets if t["choices"]}}
