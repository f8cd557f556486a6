"""Data contracts with Great Expectations 1.x for sections, tickets and tasks; quarantine and report.

Each table runs one ExpectationSuite through a ValidationDefinition on an ephemeral context with a
pandas data source (GX_ANALYTICS_ENABLED=false). Column-map expectations name their failing rows
(``unexpected_index_list``); those rows go to a quarantine object with the reasons, the others go on.
A table-level failure (a missing column) fails the whole table. The step fails when a table's
failure rate passes ``validation.max_failure_rate``.

The **leak guard** is a custom row check, not a GX expectation: GX 1.x has no cross-column
"column A does not contain column B or a long span of column C" expectation for pandas (its
UnexpectedRowsExpectation is SQL-only). A task leaks when its student prompt contains
- its answer (numbers as whole numbers, text case-insensitively; skipped for label tasks whose
  ``verifier_args.choices`` lists the options, since the question names them all), or
- ``validation.leak_span_words`` consecutive words of its privileged context.
Its results are reported beside the GX results and quarantine rows the same way.
"""

from __future__ import annotations

import html
import itertools
import json
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rlsd.config import RLSDConfig, ValidationConfig

ANSWER_TYPES = ["numeric", "label", "json", "expression"]
VERIFIERS = ["numeric", "label", "json", "expression"]
STATUSES = ["open", "pending", "in_progress", "resolved", "closed"]
_ISO = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z$"


class ValidationFailed(RuntimeError):
    """A table's failure rate passed validation.max_failure_rate (the report is still written)."""

    def __init__(self, msg: str, report: dict[str, Any]) -> None:
        super().__init__(msg)
        self.report = report


# ----------------------------------------------------------------------------------------------
# Leak guard (custom check)
# ----------------------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def leak_reason(prompt: str, answer: str, context: str, *, span_words: int,
                choices: list[str] | None = None) -> str:
    """'' when clean, else what leaked."""
    a = answer.strip()
    if a and not (choices and any(a.lower() == c.lower() for c in choices)):
        if re.fullmatch(r"-?[\d,]*\.?\d+", a):
            pat = rf"(?<![\w.]){re.escape(a)}(?![\w]|\.\d)"
            if re.search(pat, prompt):
                return f"answer leak: the prompt contains the answer {a!r}"
        elif a.lower() in prompt.lower():
            return f"answer leak: the prompt contains the answer {a[:40]!r}"
    pw, cw = _words(prompt), _words(context)
    n = span_words
    if len(pw) >= n and len(cw) >= n:
        grams = {tuple(pw[i:i + n]) for i in range(len(pw) - n + 1)}
        for i in range(len(cw) - n + 1):
            if tuple(cw[i:i + n]) in grams:
                return f"context leak: the prompt contains {n} consecutive words of the privileged context " \
                       f"({' '.join(cw[i:i + n])[:60]!r}...)"
    return ""


# ----------------------------------------------------------------------------------------------
# GX plumbing
# ----------------------------------------------------------------------------------------------


def _gx_context() -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    ctx = gx.get_context(mode="ephemeral")
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    except Exception:  # older/newer layouts: progress bars are cosmetic
        pass
    return ctx


def _expectations(table: str, v: ValidationConfig) -> list[Any]:
    import great_expectations.expectations as gxe

    if table == "sections":
        cols = ["id", "doc_id", "heading_path", "text", "checksum"]
        return [gxe.ExpectTableColumnsToMatchSet(column_set=cols, exact_match=False),
                *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in cols],
                gxe.ExpectColumnValuesToBeUnique(column="id"),
                gxe.ExpectColumnValuesToBeOfType(column="text", type_="str"),
                gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=v.min_section_chars,
                                                        max_value=v.max_section_chars),
                gxe.ExpectColumnValueLengthsToBeBetween(column="id", min_value=1, max_value=400),
                gxe.ExpectColumnValuesToMatchRegex(column="checksum", regex=r"^[0-9a-f]{64}$")]
    if table == "tickets":
        cols = ["id", "created", "updated", "title", "body", "status", "resolution", "resolution_verified",
                "links", "answer", "answer_type"]
        return [gxe.ExpectTableColumnsToMatchSet(column_set=cols, exact_match=False),
                *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in cols],
                gxe.ExpectColumnValuesToBeUnique(column="id"),
                gxe.ExpectColumnValueLengthsToBeBetween(column="id", min_value=1, max_value=200),
                gxe.ExpectColumnValuesToMatchRegex(column="created", regex=_ISO),
                gxe.ExpectColumnValuesToMatchRegex(column="updated", regex=_ISO),
                gxe.ExpectColumnValuesToBeOfType(column="resolution_verified", type_="bool"),
                gxe.ExpectColumnValuesToBeInSet(column="status", value_set=STATUSES),
                gxe.ExpectColumnValuesToBeInSet(column="answer_type", value_set=["", *ANSWER_TYPES]),
                gxe.ExpectColumnValueLengthsToBeBetween(column="title", min_value=0, max_value=v.max_title_chars),
                gxe.ExpectColumnValueLengthsToBeBetween(column="body", min_value=1, max_value=v.max_body_chars)]
    if table == "tasks":
        cols = ["id", "prompt", "privileged_context", "answer", "verifier", "answer_type", "ticket_id"]
        return [gxe.ExpectTableColumnsToMatchSet(column_set=cols, exact_match=False),
                *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in cols],
                gxe.ExpectColumnValuesToBeUnique(column="id"),
                gxe.ExpectColumnValuesToBeInSet(column="verifier", value_set=VERIFIERS),
                gxe.ExpectColumnValuesToBeInSet(column="answer_type", value_set=ANSWER_TYPES),
                gxe.ExpectColumnValueLengthsToBeBetween(column="prompt", min_value=v.min_prompt_chars,
                                                        max_value=v.max_prompt_chars),
                gxe.ExpectColumnValueLengthsToBeBetween(column="privileged_context", min_value=1,
                                                        max_value=v.max_context_chars),
                gxe.ExpectColumnValueLengthsToBeBetween(column="answer", min_value=1, max_value=2000)]
    raise ValueError(f"unknown table {table!r}; one of sections, tickets, tasks")


def run_suite(ctx: Any, table: str, chunks: Iterable[list[dict[str, Any]]], v: ValidationConfig, *,
              custom: Callable[[dict[str, Any]], str] | None = None) -> dict[str, Any]:
    """Validate a table given as chunks of records (one dict per row, ``id`` in each) with the table's
    suite: one GX batch per chunk, results summed, so memory is bounded by a chunk, not the table.
    ``id`` uniqueness is also checked across chunks (the ids seen so far are kept).

    Returns {"table", "rows", "failed_rows", "failure_rate", "table_ok", "expectations": [{name, column,
    success, unexpected}], "failed": [(id, [reasons])]}.
    """
    import great_expectations as gx
    import pandas as pd

    ds = ctx.data_sources.add_pandas(f"{table}-source")
    bd = ds.add_dataframe_asset(f"{table}-asset").add_batch_definition_whole_dataframe(f"{table}-batch")
    suite = ctx.suites.add(gx.ExpectationSuite(name=f"rlsd-{table}"))
    for e in _expectations(table, v):
        suite.add_expectation(e)
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"rlsd-{table}", data=bd, suite=suite))
    exps: list[dict[str, Any]] = []
    failed: list[tuple[Any, list[str]]] = []
    # id -> (its first row's entry in `failed` or -1, whether that row is already flagged as a duplicate)
    seen: dict[Any, tuple[int, bool]] = {}
    table_ok, n, n_custom_bad, ran = True, 0, 0, False
    for records in itertools.chain(chunks, [None]):
        if records is None:  # the end; an empty table still runs once (its column checks fail)
            if ran:
                break
            records = []
        if not records and ran:
            continue
        ran = True
        df = pd.DataFrame.from_records(records) if records else pd.DataFrame({"id": pd.Series(dtype=object)})
        df = df.reset_index(drop=True)
        res = vd.run(batch_parameters={"dataframe": df}, result_format={"result_format": "COMPLETE"})
        row_reasons: dict[int, list[str]] = defaultdict(list)
        earlier_dups: list[tuple[Any, str, int]] = []  # (id, reason, expectation) of rows in earlier chunks
        for k, r in enumerate(res.results):
            c = r.expectation_config
            col = c.kwargs.get("column")
            idx = [int(i) for i in (r.result.get("unexpected_index_list") or [])]
            if k == len(exps):
                exps.append({"expectation": c.type, "column": col, "success": True, "unexpected": 0})
            if c.type == "expect_column_values_to_be_unique" and col == "id" and seen:
                # as one batch would: every row of a duplicated id fails, earlier chunks' rows included
                dup = [i for i, rec in enumerate(records) if rec.get("id") in seen]
                idx = sorted(set(idx) | set(dup))
                for i in dup:
                    rid = records[i].get("id")
                    pos, flagged = seen[rid]
                    if not flagged:
                        earlier_dups.append((rid, f"{c.type}({col})", k))
                        seen[rid] = (pos, True)
            ok = bool(r.success) and not idx
            exps[k]["success"] &= ok
            exps[k]["unexpected"] += len(idx)
            if ok:
                continue
            if col is None or not idx:  # table-level (or the column is missing): the whole table fails
                table_ok = False
                continue
            for i in idx:
                row_reasons[i].append(f"{c.type}({col})")
        for rid, reason, k in earlier_dups:
            pos, _ = seen[rid]
            exps[k]["success"] = False
            exps[k]["unexpected"] += 1
            if pos >= 0:
                failed[pos][1].append(reason)
            else:
                failed.append((rid, [reason]))
        if custom is not None:
            for i, rec in enumerate(records):
                why = custom(rec)
                if why:
                    row_reasons[i].append(why)
                    n_custom_bad += 1
        unique_reason = "expect_column_values_to_be_unique(id)"
        for i, rec in enumerate(records):
            rid = rec.get("id")
            if rid not in seen:
                seen[rid] = (len(failed) if i in row_reasons else -1, unique_reason in row_reasons.get(i, ()))
            if i in row_reasons:
                failed.append((rid, row_reasons[i]))
        n += len(records)
    if custom is not None:
        exps.append({"expectation": "custom: leak guard (not a GX expectation)", "column": "prompt",
                     "success": n_custom_bad == 0, "unexpected": n_custom_bad})
    return {"table": table, "rows": n, "failed_rows": len(failed),
            "failure_rate": (len(failed) / n) if n else 0.0, "table_ok": table_ok,
            "expectations": exps, "failed": failed}


# ----------------------------------------------------------------------------------------------
# The step
# ----------------------------------------------------------------------------------------------


def task_rows(tasks: list[Any]) -> list[dict[str, Any]]:
    return [{"id": t.id, "prompt": t.prompt, "privileged_context": t.privileged_context, "answer": t.answer,
             "verifier": t.verifier, "answer_type": t.meta.get("answer_type"), "ticket_id": t.meta.get("ticket_id"),
             "choices": t.verifier_args.get("choices")} for t in tasks]


def validate(cfg: RLSDConfig, *, snapshot: str | None = "latest", tasks_dir: str | Path | None = None,
             out_dir: str | Path, store: Any = None) -> dict[str, Any]:
    """Validate a snapshot's sections and tickets and/or the tasks under ``tasks_dir``.

    Writes under ``out_dir``: ``report.md``, ``report.html``, ``report.json``, ``quarantine.jsonl``
    and, when tasks were given, the valid tasks as ``train.jsonl`` / ``eval.jsonl``. The quarantine
    also goes to the store as an object (its hash in the report). Tasks of a ticket that failed are
    quarantined too. Raises :class:`ValidationFailed` (after writing the report) when a table's
    failure rate passes ``validation.max_failure_rate`` or a table-level expectation fails.
    """
    from rlsd.data.ingest import iter_records
    from rlsd.data.store import canonical_json, open_store
    from rlsd.tasks import read_tasks, write_tasks

    v = cfg.validation
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = _gx_context()
    tables: list[dict[str, Any]] = []
    quarantine: list[dict[str, Any]] = []
    bad_tickets: set[str] = set()
    snapshot_id = None
    if snapshot:
        store = store or open_store(cfg.store)
        man = store.read_manifest(snapshot)
        snapshot_id = man["snapshot_id"]
        for name in ("sections", "tickets"):
            r = run_suite(ctx, name, iter_records(store, man, name, v.chunk_rows), v)
            tables.append(r)
            for rid, reasons in r["failed"]:
                quarantine.append({"table": name, "id": rid, "reasons": reasons})
                if name == "tickets":
                    bad_tickets.add(str(rid))
    valid_counts = {}
    if tasks_dir is not None:
        split_tasks = {}
        for split in ("train", "eval"):
            p = Path(tasks_dir) / f"{split}.jsonl"
            split_tasks[split] = read_tasks(p) if p.is_file() else []
        all_tasks = split_tasks["train"] + split_tasks["eval"]
        rows = task_rows(all_tasks)

        def guard(rec: dict[str, Any]) -> str:
            why = leak_reason(rec["prompt"] or "", rec["answer"] or "", rec["privileged_context"] or "",
                              span_words=v.leak_span_words, choices=rec.get("choices"))
            if not why and str(rec.get("ticket_id")) in bad_tickets:
                why = f"source ticket {rec.get('ticket_id')} failed validation"
            return why

        r = run_suite(ctx, "tasks", [rows], v, custom=guard)
        tables.append(r)
        bad_ids = set()
        for rid, reasons in r["failed"]:
            quarantine.append({"table": "tasks", "id": rid, "reasons": reasons})
            bad_ids.add(rid)
        for split, ts in split_tasks.items():
            keep = [t for t in ts if t.id not in bad_ids]
            valid_counts[split] = len(keep)
            if keep:
                write_tasks(keep, out / f"{split}.jsonl")
    q_digest = None
    if quarantine and store is not None:
        q_digest, _ = store.put_object(canonical_json(quarantine))
    with (out / "quarantine.jsonl").open("w", encoding="utf-8") as f:
        for q in quarantine:
            f.write(json.dumps(q, ensure_ascii=False) + "\n")
    failing = [t for t in tables if t["failure_rate"] > v.max_failure_rate or not t["table_ok"]]
    report = {"snapshot_id": snapshot_id, "max_failure_rate": v.max_failure_rate, "passed": not failing,
              "tables": [{k: t[k] for k in ("table", "rows", "failed_rows", "failure_rate", "table_ok", "expectations")}
                         for t in tables],
              "quarantined": len(quarantine), "quarantine_object": q_digest, "valid_tasks": valid_counts,
              "quarantine_sample": quarantine[:20]}
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    md = render_markdown(report)
    (out / "report.md").write_text(md, encoding="utf-8")
    (out / "report.html").write_text(render_html(report), encoding="utf-8")
    if failing:
        names = ", ".join(f"{t['table']} ({t['failed_rows']}/{t['rows']} rows failed"
                          + ("" if t["table_ok"] else ", table-level expectation failed") + ")" for t in failing)
        raise ValidationFailed(f"validation failed: {names}; max_failure_rate={v.max_failure_rate}; "
                               f"see {out / 'report.md'}", report)
    return report


def render_markdown(rep: dict[str, Any]) -> str:
    lines = ["# Data validation report", "",
             f"Snapshot: `{rep['snapshot_id']}` | result: **{'PASSED' if rep['passed'] else 'FAILED'}** | "
             f"max failure rate {rep['max_failure_rate']:.0%} | quarantined rows: {rep['quarantined']}"
             + (f" (object `{rep['quarantine_object'][:16]}`)" if rep["quarantine_object"] else ""), ""]
    for t in rep["tables"]:
        lines += [f"## {t['table']}: {t['rows']} rows, {t['failed_rows']} failed ({t['failure_rate']:.1%})", "",
                  "| expectation | column | result | failing rows |", "|---|---|---|---|"]
        for e in t["expectations"]:
            lines.append(f"| {e['expectation']} | {e['column'] or '(table)'} | {'ok' if e['success'] else 'FAIL'} | "
                         f"{e['unexpected']} |")
        lines.append("")
    if rep["valid_tasks"]:
        lines += [f"Valid tasks written: {rep['valid_tasks']}", ""]
    if rep["quarantine_sample"]:
        lines += ["## Quarantine (first 20)", "", "| table | id | reasons |", "|---|---|---|"]
        for q in rep["quarantine_sample"]:
            lines.append(f"| {q['table']} | {q['id']} | {'; '.join(q['reasons']).replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def render_html(rep: dict[str, Any]) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>rlsd data validation</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
             "padding:3px 8px}.FAIL{color:#b00;font-weight:bold}.ok{color:#070}</style></head><body>",
             f"<h1>Data validation: <span class='{'ok' if rep['passed'] else 'FAIL'}'>"
             f"{'PASSED' if rep['passed'] else 'FAILED'}</span></h1>",
             f"<p>Snapshot <code>{e(str(rep['snapshot_id']))}</code>; max failure rate {rep['max_failure_rate']:.0%}; "
             f"quarantined rows: {rep['quarantined']}</p>"]
    for t in rep["tables"]:
        parts.append(f"<h2>{e(t['table'])}: {t['rows']} rows, {t['failed_rows']} failed ({t['failure_rate']:.1%})</h2>"
                     "<table><tr><th>expectation</th><th>column</th><th>result</th><th>failing rows</th></tr>")
        for x in t["expectations"]:
            ok = "ok" if x["success"] else "FAIL"
            parts.append(f"<tr><td>{e(x['expectation'])}</td><td>{e(str(x['column'] or '(table)'))}</td>"
                         f"<td class='{ok}'>{ok}</td><td>{x['unexpected']}</td></tr>")
        parts.append("</table>")
    if rep["quarantine_sample"]:
        parts.append("<h2>Quarantine (first 20)</h2><table><tr><th>table</th><th>id</th><th>reasons</th></tr>")
        for q in rep["quarantine_sample"]:
            parts.append(f"<tr><td>{e(q['table'])}</td><td>{e(str(q['id']))}</td><td>{e('; '.join(q['reasons']))}</td></tr>")
        parts.append("</table>")
    return "".join(parts) + "</body></html>\n"
