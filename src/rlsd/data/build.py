"""Resolved, verified tickets -> verifiable tasks (rlsd.tasks.Task), split train / eval by ticket id.

- ``prompt`` (what the student and a deployed assistant see): the product support framing, the
  ticket's title and body as the customer wrote them (redacted at ingest), and the answer format.
- ``privileged_context`` (teacher only): the verified resolution, then the linked manual sections;
  when a ticket links none, the ``ingest.retrieve_k`` sections that BM25 ranks highest for the
  ticket's title and body (retrieved sections are marked as such in ``meta``).
- ``answer`` and ``verifier``: numeric -> "numeric"; label -> "label" (``verifier_args.choices``
  lists the known labels the question names, so the leak guard knows the answer is one of the
  listed options); json -> "json" (``verifier_args.schema``: a JSON Schema inferred from the
  answer's keys and value types, ``verifier_args.expected``: the answer object); expression (the
  verified answer is a formula such as "(120 - 20) / 4") -> "expression" (``verifier_args.numbers``: the
  formula's numbers, ``target``: its exact value; any expression of those numbers reaching it scores).
- free text (``ingest.text_grader`` set): a verified ticket without a number, label, JSON or formula
  answer but with a written resolution becomes a ``text`` task whose answer is the resolution (the teacher
  sees it as privileged context, as for every task) graded by that spec (rlsd.verifiers.graders). Before
  any is written, the grader is checked on every text task: it must pay the reference >= 0.5 and an empty
  answer and the question echoed back <= 0.2 (``check_grader``), else build-tasks refuses the grader;
  the mean / worst figures are in ``counts["text_grader"]``.
- Split: ``sha256("rlsd-split:" + ticket_id)`` mapped to [0, 1) < ``ingest.eval_fraction`` -> eval.
  It depends on the ticket id only, so a ticket stays on its side in every snapshot.

Departure: retrieval is a small BM25 (k1=1.2, b=0.75) written here over the snapshot's sections,
not a vector index; it is deterministic and needs no model.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from array import array
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from rlsd.config import RLSDConfig
from rlsd.data.index import read_index
from rlsd.data.store import Store, open_store
from rlsd.tasks import Task, task_writer

VERIFIER_OF = {"numeric": "numeric", "label": "label", "json": "json", "expression": "expression"}
ELIGIBLE_STATUSES = ("resolved", "closed")
_STOP = set(["a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how", "i", "if", "in", "is", "it", "its", "me", "my", "of", "on", "or", "our", "the", "this", "to", "we", "what", "when", "which", "with", "you", "your"])

FORMAT_HINT = {
    "numeric": 'Reply on one line: "Answer:" followed by the number only.',
    # {options}: the options the question lists (small models copy a "<option>" placeholder verbatim)
    # {example}: one of the options picked by a hash of the ticket id (right by chance only)
    "label": 'Reply on one line: "Answer:" followed by one of: {options}. For example: "Answer: {example}".',
    "json": 'Reply with a JSON object only, on one line: "Answer: {json}".',
    "text": 'Reply with "Answer:" followed by what resolves the ticket, in one to three sentences.',
    "expression": 'Reply on one line: "Answer:" followed by the calculation as an arithmetic expression of the '
                  'numbers {numbers} (each at most as often as listed; + - * / and parentheses), not its result.',
}


def split_of(ticket_id: str, eval_fraction: float) -> str:
    """'train' or 'eval' from a hash of the ticket id alone (stable across snapshots)."""
    h = int.from_bytes(hashlib.sha256(f"rlsd-split:{ticket_id}".encode()).digest()[:8], "big") / 2.0**64
    return "eval" if h < eval_fraction else "train"


def tokenize(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP]


class BM25:
    """Okapi BM25 over a list of documents (token lists), scored through postings: a query touches only
    the documents that contain its words, and each (document, word) weight is computed once.

    Scores equal the textbook per-document sum bit for bit (same expression, the query's words added in
    the same order), so rankings and ties do not depend on the implementation."""

    def __init__(self, docs: Iterable[list[str]], *, k1: float = 1.2, b: float = 0.75) -> None:
        import numpy as np

        self.vocab: dict[str, int] = {}
        doc_of, term_of, tf_of, lens_of = array("i"), array("i"), array("i"), array("d")
        for i, d in enumerate(docs):  # one document's tokens in memory at a time
            lens_of.append(len(d))
            for w, f in Counter(d).items():
                doc_of.append(i)
                term_of.append(self.vocab.setdefault(w, len(self.vocab)))
                tf_of.append(f)
        docs_a, terms, tf = (np.frombuffer(a, dtype=np.int32) for a in (doc_of, term_of, tf_of))
        lens = np.frombuffer(lens_of, dtype=np.float64)
        n = self.n = len(lens)
        avg = float(lens.sum() / n) if n else 0.0
        norm = k1 * (1 - b + b * lens / (avg or 1))
        df = np.bincount(terms, minlength=len(self.vocab))
        start = np.concatenate([[0], np.cumsum(df)])
        order = np.argsort(terms, kind="stable")  # by word, documents in increasing order within a word
        # A word in more than 2/3 of the documents is kept as a dense row (8 bytes a document, less than its
        # postings' 12) and added with one contiguous add; the documents without it get + 0.0, which is exact.
        sparse = df * 3 <= 2 * n
        self._start = np.concatenate([[0], np.cumsum(np.where(sparse, df, 0))])
        self._docs = np.empty(self._start[-1], dtype=np.int32)
        self._weights = np.empty(self._start[-1], dtype=np.float64)
        self._dense: dict[int, Any] = {}
        for j, c in enumerate(df.tolist()):  # one word's postings at a time (bounded temporaries)
            sel = order[start[j]:start[j + 1]]
            d, f = docs_a[sel], tf[sel].astype(np.float64)
            idf = math.log(1 + (n - c + 0.5) / (c + 0.5))  # libm, as the textbook loop would
            w = idf * f * (k1 + 1) / (f + norm[d])
            if sparse[j]:
                self._docs[self._start[j]:self._start[j + 1]] = d
                self._weights[self._start[j]:self._start[j + 1]] = w
            else:
                row = np.zeros(n, dtype=np.float64)
                row[d] = w
                self._dense[j] = row

    def scores(self, query: list[str]):
        """(n_docs,) float64 scores of one query (a numpy array)."""
        import numpy as np

        acc = np.zeros(self.n, dtype=np.float64)
        for w in query:
            j = self.vocab.get(w)
            if j in self._dense:
                acc += self._dense[j]
            elif j is not None:
                s, e = self._start[j], self._start[j + 1]
                acc[self._docs[s:e]] += self._weights[s:e]  # a document appears once per posting list
        return acc

    def top(self, query: list[str], k: int) -> list[int]:
        """The k best documents with a positive score, best first; ties by document index."""
        import numpy as np

        sc = self.scores(query)
        cand = np.flatnonzero(sc > 0)
        if k <= 0 or cand.size == 0:
            return []
        if cand.size > k:  # keep every candidate tied with the k-th best, then order exactly
            kth = np.partition(sc[cand], cand.size - k)[cand.size - k]
            cand = cand[sc[cand] >= kth]
        order = np.lexsort((cand, -sc[cand]))
        return [int(i) for i in cand[order[:k]]]


def _json_schema(obj: Any) -> dict[str, Any]:
    if isinstance(obj, bool):
        return {"type": "boolean"}
    if isinstance(obj, int):
        return {"type": "integer"}
    if isinstance(obj, float):
        return {"type": "number"}
    if isinstance(obj, str):
        return {"type": "string"}
    if isinstance(obj, list):
        return {"type": "array"}
    if isinstance(obj, dict):
        return {"type": "object", "properties": {k: _json_schema(v) for k, v in obj.items()},
                "required": sorted(obj), "additionalProperties": False}
    return {}


def _json_template(obj: dict[str, Any]) -> str:
    """'{"port": <integer>, "protocol": "<string>"}': the shape of the answer without its values."""
    parts = []
    for k in sorted(obj):
        v = obj[k]
        parts.append(f'"{k}": ' + ('"<text>"' if isinstance(v, str) else "<number>" if isinstance(v, (int, float))
                                   else "<value>"))
    return "{" + ", ".join(parts) + "}"


def student_prompt(ticket: dict[str, Any], answer_hint: str) -> str:
    """The customer's question as a deployed support assistant would receive it, plus the format."""
    return (f"You are the support assistant of Halvorsen Devices. A customer opened this ticket.\n"
            f"Subject: {ticket['title']}\n{ticket['body'].strip()}\n\n{answer_hint}")


def _section_block(sec: dict[str, Any]) -> str:
    return f"Manual: {' > '.join(sec['heading_path'])}\n{sec['text']}"


# At most 24 options, and a list starts where a run of word characters does: bounded retries per start keep
# both linear in the question (a hostile "x, x, x, ..." cost the square of its length).
_OR_LIST = re.compile(r"(?<![\w-])([\w-]+(?:, [\w-]+){1,23},? or [\w-]+)\b")
_PAREN_LIST = re.compile(r"\(([\w -]+(?:, [\w -]+){1,23})\)")


def listed_options(question: str, answer: str) -> list[str]:
    """The options a question lists explicitly ("amber, green or red", "(Basic, Plus, Enterprise)"),
    when one of them is the answer; [] otherwise.

    >>> listed_options("Is that a Network, Power or Storage problem?", "Power")
    ['Network', 'Power', 'Storage']
    """
    for m in list(_PAREN_LIST.finditer(question)) + list(_OR_LIST.finditer(question)):
        opts = [o.strip() for o in re.split(r",\s*(?:or\s+)?|\s+or\s+", m.group(1)) if o.strip()]
        if len(opts) >= 2 and answer.strip().lower() in {o.lower() for o in opts}:
            return opts
    return []


def ticket_to_task(ticket: dict[str, Any], sections: Mapping[str, dict[str, Any]], bm25: BM25 | None,
                   section_ids: list[str], *, label_set: set[str], snapshot_id: str, retrieve_k: int,
                   max_context_chars: int, text_grader: Any = "") -> Task:
    atype = ticket["answer_type"]
    answer = ticket["answer"]
    verifier_args: dict[str, Any] = {}
    if is_text_ticket(ticket, text_grader):
        from rlsd.verifiers.graders import normalise_spec

        atype, answer, verifier_args = "text", ticket["resolution"].strip(), {"grader": normalise_spec(text_grader)}
    hint = FORMAT_HINT[atype]
    if atype == "json":
        obj = json.loads(answer)
        verifier_args = {"schema": _json_schema(obj), "expected": obj}
        hint = hint.format(json=_json_template(obj) if isinstance(obj, dict) else "<json>")
    if atype == "expression":  # the verified formula fixes the target and the numbers it may use
        from rlsd.verifiers.expression import evaluate_expression

        value, used = evaluate_expression(answer)
        numbers = [str(n) for n in used]
        verifier_args = {"numbers": numbers, "target": str(value)}
        hint = hint.format(numbers=", ".join(numbers))
    question = f"{ticket['title']}\n{ticket['body']}"
    if atype == "label":
        listed = listed_options(question, answer)
        if listed:
            verifier_args["choices"] = listed
        else:  # no explicit list: the corpus's known labels that the question mentions
            low = question.lower()
            choices = sorted((low.find(lbl.lower()), lbl) for lbl in label_set
                             if re.search(rf"\b{re.escape(lbl.lower())}\b", low))
            if len(choices) >= 2:
                verifier_args["choices"] = [c for _, c in choices]
        opts = verifier_args.get("choices") or ["the options the question lists"]
        example = opts[int(hashlib.sha256(ticket["id"].encode()).hexdigest(), 16) % len(opts)]
        hint = hint.format(options=", ".join(opts), example=example)
    linked = [s for s in ticket["links"] if s in sections]
    retrieved = False
    if not linked and bm25 is not None and retrieve_k > 0:
        linked = [section_ids[i] for i in bm25.top(tokenize(question), retrieve_k)]
        retrieved = True
    ctx = [f"Verified resolution: {ticket['resolution'].strip()}"] if ticket["resolution"].strip() else []
    ctx += [_section_block(sections[s]) for s in linked]
    context = "\n\n".join(ctx)[:max_context_chars]
    return Task(
        id=f"ticket-{ticket['id']}",
        prompt=student_prompt(ticket, hint),
        privileged_context=context,
        answer=answer,
        verifier="text" if atype == "text" else VERIFIER_OF[atype],
        verifier_args=verifier_args,
        meta={"ticket_id": ticket["id"], "answer_type": atype, "snapshot_id": snapshot_id,
              "section_ids": linked, "retrieved": retrieved, "missing_links": [s for s in ticket["links"]
                                                                                if s not in sections]},
    )


def is_text_ticket(ticket: dict[str, Any], text_grader: Any) -> bool:
    """A free-text task: a grader is set, the ticket has no exact answer and a written resolution."""
    return bool(text_grader) and (not ticket["answer"] or ticket["answer_type"] not in VERIFIER_OF) and \
        len(ticket["resolution"].split()) >= 3


def eligibility(ticket: dict[str, Any], text_grader: Any = "") -> str:
    """'' when the ticket becomes a task, else why not."""
    if ticket["status"] not in ELIGIBLE_STATUSES:
        return f"status {ticket['status'] or 'empty'} (not resolved)"
    if not ticket["resolution_verified"]:
        return "resolution not verified"
    if (not ticket["answer"] or ticket["answer_type"] not in VERIFIER_OF) and not is_text_ticket(ticket, text_grader):
        return "no verifiable answer" + ("" if text_grader else " (ingest.text_grader would make free-text tasks)")
    return ""


def _check_text_grader(task: Task) -> dict[str, float]:
    """The grader's pay for the reference, an empty answer and the echoed question on this task; raises
    (the build writes nothing: the task files are replaced only when the build completes) when the grader
    pays the empty answer or the echo, or not the reference."""
    from rlsd.verifiers.graders import check_grader, grader_ok

    c = check_grader(task.verifier_args["grader"], task)
    if not grader_ok(c):
        raise ValueError(f"ingest.text_grader refused on task {task.id}: it pays the reference {c['reference']}, "
                         f"an empty answer {c['empty']}, the question echoed back {c['echo']} (needs >= 0.5, "
                         "<= 0.2, <= 0.2)")
    return {k: float(v or 0.0) for k, v in c.items()}


class _Sections(Mapping):
    """The sections of a snapshot by id, read from the store when asked (a few thousand kept), so task
    building does not hold the manuals in memory."""

    def __init__(self, store: Store, index: dict[str, str], keep: int = 4096) -> None:
        self.store, self.index, self.keep = store, index, keep
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def __getitem__(self, sid: str) -> dict[str, Any]:
        if sid in self._cache:
            self._cache.move_to_end(sid)
            return self._cache[sid]
        sec = json.loads(self.store.get_object(self.index[sid]))
        self._cache[sid] = sec
        if len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return sec

    def __contains__(self, sid: object) -> bool:
        return sid in self.index

    def __iter__(self) -> Iterator[str]:
        return iter(self.index)

    def __len__(self) -> int:
        return len(self.index)


def build_tasks(cfg: RLSDConfig, *, snapshot: str = "latest", out_dir: str | Path,
                store: Store | None = None) -> dict[str, Any]:
    """Write ``train.jsonl`` and ``eval.jsonl`` under ``out_dir`` from a snapshot; returns
    ``{"train_path", "eval_path", "counts", "snapshot_id"}``. Counts name every skipped ticket's reason.

    Memory is bounded by the id -> hash index, BM25's postings and one chunk of records: sections and
    tickets are streamed from the store, tasks are written as they are made."""
    from rlsd.data.ingest import iter_records

    store = store or open_store(cfg.store)
    man = store.read_manifest(snapshot)
    sid = man["snapshot_id"]
    sec_index = read_index(store, man, "sections")
    section_ids = sorted(sec_index)
    bm25 = None
    if section_ids:
        bm25 = BM25(tokenize(" ".join(s["heading_path"]) + " " + s["text"])
                    for chunk in iter_records(store, man, "sections") for s in chunk)
    sections = _Sections(store, sec_index)
    label_set = {t["answer"] for chunk in iter_records(store, man, "tickets") for t in chunk
                 if t["answer_type"] == "label" and t["answer"]}
    out_dir = Path(out_dir)
    paths = {"train": out_dir / "train.jsonl", "eval": out_dir / "eval.jsonl"}
    n = Counter()
    skipped: Counter = Counter()
    by_type: Counter = Counter()
    retrieved = missing = n_tickets = 0
    checks: list[dict[str, Any]] = []
    with task_writer(paths["train"]) as write_train, task_writer(paths["eval"]) as write_eval:
        writers = {"train": write_train, "eval": write_eval}
        for chunk in iter_records(store, man, "tickets"):
            for t in chunk:
                n_tickets += 1
                why = eligibility(t, cfg.ingest.text_grader)
                if why:
                    skipped[why] += 1
                    continue
                task = ticket_to_task(t, sections, bm25, section_ids, label_set=label_set, snapshot_id=sid,
                                      retrieve_k=cfg.ingest.retrieve_k, max_context_chars=cfg.ingest.max_context_chars,
                                      text_grader=cfg.ingest.text_grader)
                if task.verifier == "text":
                    checks.append(_check_text_grader(task))
                retrieved += task.meta["retrieved"]
                missing += bool(task.meta["missing_links"])
                by_type[task.meta["answer_type"]] += 1
                split = split_of(t["id"], cfg.ingest.eval_fraction)
                writers[split](task)
                n[split] += 1
    counts = {"tickets": n_tickets, "tasks": n["train"] + n["eval"], "train": n["train"], "eval": n["eval"],
              "skipped": dict(skipped), "retrieved_context": retrieved, "tickets_with_missing_links": missing,
              "by_answer_type": dict(by_type)}
    if checks:
        counts["text_grader"] = {"tasks": len(checks),
                                 "reference_mean": sum(c["reference"] for c in checks) / len(checks),
                                 "reference_min": min(c["reference"] for c in checks),
                                 "empty_max": max(c["empty"] for c in checks),
                                 "echo_max": max(c["echo"] for c in checks)}
    return {"train_path": str(paths["train"]), "eval_path": str(paths["eval"]), "counts": counts, "snapshot_id": sid}
