"""Graders for free-text answers, and their composition: ``text(completion, task)``.

A free-text task (``task.verifier == "text"``) carries the verified resolution as ``task.answer`` and a
grader spec in ``verifier_args["grader"]`` (or the recipe's ``rewards.grader``, copied there by
build-tasks). The same spec pays the reward in training and scores evaluation. A spec is a dict (or a
metric name as shorthand for ``{"grader": "similarity", "metric": name}``):

- ``{"grader": "similarity", "metric": m}`` against the reference, m one of
  ``rouge_l`` (F-measure of the longest common subsequence; rouge-score), ``bleu`` (sentence BLEU with
  exponential smoothing, /100; sacrebleu), ``token_f1`` (bag-of-words F1, SQuAD's definition, over
  Unicode words; a few lines, so not a dependency), ``fuzzy`` (token-sort ratio /100; rapidfuzz: the
  token-set ratio is not offered because a superset of the reference scores 100), ``embedding`` (cosine
  of mean-pooled last hidden states of a local model at ``model``; nothing is downloaded).
- ``{"grader": "rubric", "items": [...]}``: each item ``{"phrase": p}`` (matched as whole normalised
  words) or ``{"pattern": regex}`` (case-insensitive, on the raw answer), optional ``weight`` (default 1;
  negative for a wrong step, which costs when named). Score = matched positive weight minus matched
  negative weight, over the total positive weight, in [0, 1].
- ``{"grader": "judge", "model": path}``: a local causal LM scores the answer against the reference with a
  fixed prompt (:data:`JUDGE_PROMPT`), greedy, batched, cached by content hash, time-bounded; rules in
  :class:`Judge`.
- ``model: base`` (judge or embedding) is the run's base model. It stays ``base`` in the recipe and the task
  files, because each step has its own copy of the model (or none): a step names its folder with
  :func:`use_base_model` (config load does when ``model.path`` is a local folder; train, evaluate, build-tasks
  and ``rlsd grade`` fetch a store / registry reference first), and grading without one fails naming it.
- ``{"grader": "verifier", "name": v}``: one of rlsd.verifiers' exact verifiers (e.g. ``json``), on the
  same task.
- combinations: ``{"grader": "min" | "mean" | "product", "of": [specs]}``, ``{"grader": "weighted",
  "of": [specs], "weights": [w...]}`` (weighted mean, weights >= 0, not all 0), and the gate
  ``{"grader": "gate", "if": spec, "threshold": t, "then": spec}``: 0 unless ``if`` scores >= t
  (default 1), else ``then``'s score ("the JSON must parse, then similarity").

Rules every similarity and rubric score passes through (the reward hacks of free text):
- the answer is the text after the last ``Answer:`` marker if there is one, else the whole completion,
  cut at :data:`MAX_ANSWER_CHARS`; an empty answer scores 0;
- length: an answer of n words against a reference of r pays at most ``min(1, L / n)`` with
  ``L = max(3 r, r + 30)`` (padding does not pay);
- repetition: the score is scaled by ``min(1, distinct word trigrams / trigrams / 0.8)`` (answers of 3+
  trigrams; "queue queue queue" pays little);
- echo: an answer whose token F1 against the question is at least 0.5 and higher than against the
  reference scores 0 (copying the prompt does not pay).
Keyword stuffing against a rubric is met three ways: the stuffing factor of :func:`rubric` (an answer made
mostly of rubric phrases pays little), negative items (naming every step names the wrong ones too), and
composing the rubric with similarity (``min``). Filler words between the phrases get past the first; the
other two, and the local judge, are what is left against them. build-tasks refuses a grader that pays an empty answer or the
question echoed back (:func:`check_grader`).

``validate_spec`` raises ``ValueError`` with one line naming the place (``rewards.grader.of[1]``) for an
unknown grader or metric, a rubric without items, a judge or embedding model path that does not exist
(other than ``base``).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from rlsd.tasks import Task
from rlsd.verifiers.extract import words

MAX_ANSWER_CHARS = 8000
METRICS = ("rouge_l", "bleu", "token_f1", "fuzzy", "embedding")
COMBINATORS = ("min", "mean", "product", "weighted")
GRADERS = ("similarity", "rubric", "judge", "verifier", "gate") + COMBINATORS
_MARKER = re.compile(r"answer\s*:", re.IGNORECASE)
BASE = "base"  # ``model: base``: the run's base model, wherever the step has it (:func:`model_folder`)
BASE_ENV = "RLSD_BASE_MODEL"  # its folder in this process and its children (ranks, sandboxes)


# ----------------------------------------------------------------------------------------------
# spec validation
# ----------------------------------------------------------------------------------------------


def normalise_spec(spec: Any) -> dict[str, Any]:
    return {"grader": "similarity", "metric": spec} if isinstance(spec, str) else spec


def validate_spec(spec: Any, where: str = "grader") -> dict[str, Any]:
    """The spec, normalised, or ValueError naming ``where`` and what is wrong (one line)."""
    from rlsd.verifiers import VERIFIERS

    spec = normalise_spec(spec)
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: a grader spec is a metric name or a mapping, got {type(spec).__name__}")
    kind = spec.get("grader")
    if kind not in GRADERS:
        raise ValueError(f"{where}: unknown grader {kind!r}; known: {', '.join(GRADERS)} (or a metric name: "
                         f"{', '.join(METRICS)})")
    out = dict(spec)
    if kind == "similarity":
        if spec.get("metric") not in METRICS:
            raise ValueError(f"{where}: unknown similarity metric {spec.get('metric')!r}; known: {', '.join(METRICS)}")
        if spec["metric"] == "embedding":
            _model_path(spec, where)
    elif kind == "rubric":
        items = spec.get("items")
        if not isinstance(items, list) or not items:
            raise ValueError(f"{where}: a rubric needs a non-empty list of items")
        for i, it in enumerate(items):
            if not isinstance(it, dict) or ("phrase" in it) == ("pattern" in it):
                raise ValueError(f"{where}.items[{i}]: an item has exactly one of 'phrase' or 'pattern'")
            if "phrase" in it and not _words(str(it["phrase"])):
                raise ValueError(f"{where}.items[{i}]: the phrase has no words")
            if "pattern" in it:
                try:
                    re.compile(str(it["pattern"]))
                except re.error as e:
                    raise ValueError(f"{where}.items[{i}]: bad pattern: {e}") from None
            if not isinstance(it.get("weight", 1), (int, float)) or it.get("weight", 1) != it.get("weight", 1):
                raise ValueError(f"{where}.items[{i}]: weight must be a number")
        if sum(max(0.0, float(it.get("weight", 1))) for it in items) <= 0:
            raise ValueError(f"{where}: a rubric needs at least one item of positive weight")
    elif kind == "judge":
        _model_path(spec, where)
    elif kind == "verifier":
        if spec.get("name") not in VERIFIERS or spec.get("name") == "text":
            raise ValueError(f"{where}: unknown verifier {spec.get('name')!r}; known: "
                             f"{', '.join(sorted(set(VERIFIERS) - {'text'}))}")
    elif kind == "gate":
        for key in ("if", "then"):
            if key not in spec:
                raise ValueError(f"{where}: a gate needs 'if' and 'then'")
        out["if"] = validate_spec(spec["if"], f"{where}.if")
        out["then"] = validate_spec(spec["then"], f"{where}.then")
        t = spec.get("threshold", 1.0)
        if not isinstance(t, (int, float)) or not 0 <= t <= 1:
            raise ValueError(f"{where}.threshold: a number in [0, 1], got {t!r}")
    else:  # combinators
        parts = spec.get("of")
        if not isinstance(parts, list) or not parts:
            raise ValueError(f"{where}: '{kind}' needs a non-empty list 'of' graders")
        out["of"] = [validate_spec(p, f"{where}.of[{i}]") for i, p in enumerate(parts)]
        if kind == "weighted":
            w = spec.get("weights")
            if not isinstance(w, list) or len(w) != len(parts) or not all(
                    isinstance(x, (int, float)) and 0 <= x < float("inf") for x in w) or not sum(w) > 0:
                raise ValueError(f"{where}.weights: one finite weight >= 0 per grader of 'of', not all 0")
    return out


def needs_base(spec: Any) -> bool:
    """Whether grading with this spec needs the run's base model (a ``model: base`` anywhere in it)."""
    spec = normalise_spec(spec)
    if not isinstance(spec, dict):
        return False
    subs = list(spec.get("of") or []) + [spec[k] for k in ("if", "then") if k in spec]
    return spec.get("model") == BASE or any(needs_base(s) for s in subs)


def tasks_need_base(tasks: list[Task]) -> bool:
    """Whether grading these tasks needs the run's base model (a free-text task whose grader names ``base``)."""
    return any(t.verifier == "text" and needs_base(t.verifier_args.get("grader") or "") for t in tasks)


def use_base_model(folder: str | Path | None) -> None:
    """Name the folder ``model: base`` grades with in this process and the processes it starts (None: none)."""
    if folder is None:
        os.environ.pop(BASE_ENV, None)
    else:
        os.environ[BASE_ENV] = str(Path(folder).resolve())


class GraderModelMissing(ValueError):
    """A grader's model folder is not in this step (an operator's setup error: raised through ``score``, never
    turned into a reward of None or 0)."""


@contextmanager
def base_folder(folder: str | Path) -> Iterator[None]:
    """:func:`use_base_model` for a block (a temporary copy), then what was named before."""
    before = os.environ.get(BASE_ENV)
    use_base_model(folder)
    try:
        yield
    finally:
        use_base_model(before)


def model_folder(name: Any) -> str:
    """The folder a judge or embedding grader loads: its ``model`` path, or for ``model: base`` the run's base
    model as the step named it (:func:`use_base_model`); ValueError when the step has no such folder."""
    if name != BASE:
        return str(name)
    folder = os.environ.get(BASE_ENV, "")
    if not folder or not Path(folder).is_dir():
        raise GraderModelMissing("grader model: base names the run's base model, and this step has no folder of it "
                         f"({'its model.path is not a local folder and was not fetched' if not folder else 'gone: ' + folder}); "
                         "give the grader a model folder, or run the step through rlsd's entry points, which fetch it")
    return folder


def _model_path(spec: dict, where: str) -> None:
    p = spec.get("model")
    if p == BASE:  # the run's base model: found when grading (a step without a local copy fetches it first)
        return
    if not p or not Path(str(p)).is_dir():
        raise ValueError(f"{where}.model: no model folder at {p!r} (a local path or 'base'; nothing is downloaded)")


# ----------------------------------------------------------------------------------------------
# text helpers and the anti-hacking rules
# ----------------------------------------------------------------------------------------------


_words = words  # shared with the leakage check (rlsd.verifiers.extract.words)


def answer_text(completion: str) -> str:
    """The answer: after the last 'Answer:' marker when there is one, else the whole completion; capped."""
    completion = completion[: MAX_ANSWER_CHARS * 4]
    marks = list(_MARKER.finditer(completion))
    text = completion[marks[-1].end():] if marks else completion
    return text.strip()[:MAX_ANSWER_CHARS]


def token_f1(pred: str, ref: str) -> float:
    p, r = _words(pred), _words(ref)
    if not p or not r:
        return 0.0
    common = sum((Counter(p) & Counter(r)).values())
    if not common:
        return 0.0
    prec, rec = common / len(p), common / len(r)
    return 2 * prec * rec / (prec + rec)


def length_factor(answer: str, ref: str) -> float:
    n, r = len(_words(answer)), len(_words(ref))
    allowed = max(3 * r, r + 30)
    return 1.0 if n <= allowed else allowed / n


def repetition_factor(answer: str) -> float:
    w = _words(answer)
    tri = list(zip(w, w[1:], w[2:]))
    if len(tri) < 3:
        return 1.0
    return min(1.0, len(set(tri)) / len(tri) / 0.8)


def is_echo(answer: str, task: Task) -> bool:
    to_prompt = token_f1(answer, task.prompt)
    return to_prompt >= 0.5 and to_prompt > token_f1(answer, task.answer)


# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------


class _Tokenizer:
    """Unicode words, case-folded, Porter-stemmed (rouge-score's own tokenizer drops non-ASCII text)."""

    def __init__(self):
        from nltk.stem.porter import PorterStemmer

        self._stem = PorterStemmer()

    def tokenize(self, text: str) -> list[str]:
        return [self._stem.stem(w) if w.isascii() and len(w) > 3 else w for w in _words(text)]


@lru_cache(maxsize=1)
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Tokenizer())


def similarity(metric: str, answer: str, ref: str, model: str | None = None) -> float:
    if not answer.strip() or not ref.strip():
        return 0.0
    if metric == "rouge_l":
        return float(_rouge().score(ref, answer)["rougeL"].fmeasure)
    if metric == "bleu":
        import sacrebleu

        return float(sacrebleu.sentence_bleu(answer, [ref], smooth_method="exp", lowercase=True).score) / 100.0
    if metric == "token_f1":
        return token_f1(answer, ref)
    if metric == "fuzzy":
        from rapidfuzz import fuzz

        return float(fuzz.token_sort_ratio(" ".join(_words(answer)), " ".join(_words(ref)))) / 100.0
    if metric == "embedding":
        return max(0.0, _embedder(model_folder(model)).cosine(answer, ref))
    raise ValueError(f"unknown similarity metric {metric!r}")


class _Embedder:
    def __init__(self, path: str):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()

    def embed(self, text: str):
        with self.torch.no_grad():
            enc = self.tok(text, return_tensors="pt", truncation=True, max_length=512)
            h = self.model(**enc).last_hidden_state[0]
            return h.mean(0)

    def cosine(self, a: str, b: str) -> float:
        x, y = self.embed(a), self.embed(b)
        return float(self.torch.nn.functional.cosine_similarity(x, y, dim=0))


@lru_cache(maxsize=4)
def _embedder(path: str) -> _Embedder:
    return _Embedder(path)


def rubric(items: list[dict], answer: str) -> float:
    """Matched positive weight minus matched negative weight over the positive total, times the stuffing
    factor ``min(1, (1 - d) / 0.3)`` where d is the share of the answer's words inside rubric matches
    (every occurrence): a bare list of key phrases (d near 1) pays nothing, a written answer (d <= 0.7)
    is not touched."""
    aw = _words(answer)
    words = f" {' '.join(aw)} "
    got = total = 0.0
    inside = 0
    for it in items:
        w = float(it.get("weight", 1))
        if "phrase" in it:
            pw = _words(str(it["phrase"]))
            n = words.count(f" {' '.join(pw)} ")
            inside += n * len(pw)
        else:
            # whole matches (findall would give a pattern's groups, and "re-(added|installed) the printer" would
            # count one word of four as inside, so a bare list of key phrases kept its full pay)
            found = [m.group(0) for m in re.finditer(str(it["pattern"]), answer[:MAX_ANSWER_CHARS], re.IGNORECASE)]
            n = len(found)
            inside += sum(len(_words(f)) for f in found)
        total += max(0.0, w)
        got += w if n else 0.0
    if total <= 0 or not aw:
        return 0.0
    density = min(1.0, inside / len(aw))
    return min(1.0, max(0.0, got / total)) * min(1.0, (1.0 - density) / 0.3)


# ----------------------------------------------------------------------------------------------
# the local judge
# ----------------------------------------------------------------------------------------------

JUDGE_PROMPT = (
    "You grade a support answer against the verified resolution.\n"
    "Verified resolution: {reference}\n"
    "Answer to grade: {answer}\n"
    "Does the answer give the same resolution? Reply with one integer from 0 (wrong or unrelated) "
    "to 10 (the same resolution).\nScore:")
_SCORE = re.compile(r"\b(10|[0-9])\b")


class Judge:
    """A local causal LM as a grader. Rules: the prompt is :data:`JUDGE_PROMPT` (resolution and answer each
    cut to 1,500 characters, each put on one line with the tokenizer's special and added tokens removed, so
    an answer cannot write chat turns or prompt lines) in the model's chat template when it has one; greedy, ``max_new_tokens`` (4);
    batches of ``batch_size``; results cached by sha256 of (model folder, prompt); the first integer 0-10 in
    the reply, /10, is the score; a reply without one (or a batch not started before ``timeout_s`` has
    passed since the call began) scores 0 and is counted in ``parse_failures`` / ``timeouts`` (a judge
    that cannot be read must not pay)."""

    def __init__(self, path: str, *, batch_size: int = 16, max_new_tokens: int = 4, timeout_s: float = 120.0):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch, self.path = torch, str(path)
        self.tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
        self.batch_size, self.max_new_tokens, self.timeout_s = batch_size, max_new_tokens, timeout_s
        self.cache: dict[str, float] = {}
        self.parse_failures = self.timeouts = self.calls = 0

    def _plain(self, s: str) -> str:
        """s on one line, without the tokenizer's added tokens (<|im_start|>, <|im_end|>, ...): written into an
        answer they would be read as real turns, and its line breaks as lines of the prompt, so an answer could
        close its own turn or add "Score:" lines and write the judge's reply (a 135M judge then pays 1.0)."""
        marks = getattr(self, "_marks", None)
        if marks is None:
            marks = self._marks = sorted({str(t) for t in (*self.tok.all_special_tokens,
                                                             *self.tok.get_added_vocab())} - {""}, key=len, reverse=True)
        while True:  # until stable: removing one may join the pieces of another ("<|im_<|im_end|>start|>")
            out = s
            for m in marks:
                out = out.replace(m, "")
            if out == s:
                return " ".join(s.split())
            s = out

    def prompt(self, answer: str, reference: str) -> str:
        text = JUDGE_PROMPT.format(reference=self._plain(reference[:1500]), answer=self._plain(answer[:1500]))
        if getattr(self.tok, "chat_template", None):
            return self.tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                add_generation_prompt=True)
        return text

    def key(self, prompt: str) -> str:
        return hashlib.sha256(f"{self.path}\0{prompt}".encode()).hexdigest()

    @staticmethod
    def parse(reply: str) -> float | None:
        m = _SCORE.search(reply)
        return int(m.group(1)) / 10.0 if m else None

    def score_many(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Scores of (answer, reference) pairs, in order."""
        t0 = time.monotonic()
        prompts = [self.prompt(a, r) for a, r in pairs]
        todo = list(dict.fromkeys(p for p in prompts if self.key(p) not in self.cache))
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i:i + self.batch_size]
            if time.monotonic() - t0 > self.timeout_s:
                self.timeouts += len(chunk)
                for p in chunk:
                    self.cache[self.key(p)] = 0.0
                continue
            enc = self.tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            with self.torch.no_grad():
                out = self.model.generate(**enc, do_sample=False, max_new_tokens=self.max_new_tokens,
                                          pad_token_id=self.tok.pad_token_id)
            self.calls += len(chunk)
            for p, row in zip(chunk, out[:, enc["input_ids"].shape[1]:]):
                s = self.parse(self.tok.decode(row, skip_special_tokens=True))
                if s is None:
                    self.parse_failures += 1
                self.cache[self.key(p)] = 0.0 if s is None else s
        return [self.cache[self.key(p)] for p in prompts]


@lru_cache(maxsize=2)
def judge_for(path: str) -> Judge:
    return Judge(path)


# ----------------------------------------------------------------------------------------------
# grading
# ----------------------------------------------------------------------------------------------


def grade(spec: Any, completion: str, task: Task) -> float | None:
    """The spec's score of one completion of a task, in [0, 1] (None: the task cannot be graded)."""
    from rlsd.verifiers import VERIFIERS

    spec = normalise_spec(spec)
    kind = spec["grader"]
    if kind == "verifier":
        return VERIFIERS[spec["name"]](completion, task)
    if kind == "gate":
        g = grade(spec["if"], completion, task)
        return 0.0 if g is None or g < float(spec.get("threshold", 1.0)) else grade(spec["then"], completion, task)
    if kind in COMBINATORS:
        parts = [grade(p, completion, task) for p in spec["of"]]
        if any(p is None for p in parts):
            return None
        if kind == "min":
            return min(parts)
        if kind == "mean":
            return sum(parts) / len(parts)
        if kind == "product":
            out = 1.0
            for p in parts:
                out *= p
            return out
        w = [float(x) for x in spec["weights"]]
        return sum(p * x for p, x in zip(parts, w)) / sum(w)
    if not task.answer.strip():
        return None
    answer = answer_text(completion)
    if not answer or is_echo(answer, task):
        return 0.0
    if kind == "similarity":
        raw = similarity(spec["metric"], answer, task.answer, spec.get("model"))
    elif kind == "rubric":
        raw = rubric(spec["items"], answer)
    else:  # judge
        raw = judge_for(model_folder(spec["model"])).score_many([(answer, task.answer)])[0]
    return raw * length_factor(answer, task.answer) * repetition_factor(answer)


DEFAULT_SPEC: dict[str, Any] = {"grader": "similarity", "metric": "rouge_l"}


def text(completion: str, task: Task) -> float | None:
    """The ``text`` verifier: the task's grader spec (``verifier_args['grader']``, default ROUGE-L)."""
    return grade(task.verifier_args.get("grader") or DEFAULT_SPEC, completion, task)


def judge_specs(spec: Any) -> list[dict]:
    """Every judge node of a spec (for batching their calls ahead of per-completion grading)."""
    spec = normalise_spec(spec)
    if spec.get("grader") == "judge":
        return [spec]
    subs = spec.get("of", []) + [spec[k] for k in ("if", "then") if k in spec]
    return [j for s in subs for j in judge_specs(s)]


def prefetch(tasks: list[Task], completions: list[str]) -> None:
    """Batch every judge call that grading these completions will make (the results land in the cache)."""
    by_model: dict[str, list[tuple[str, str]]] = {}
    for t, c in zip(tasks, completions):
        if t.verifier != "text":
            continue
        answer = answer_text(c)
        if not answer or not t.answer.strip() or is_echo(answer, t):
            continue
        for j in judge_specs(t.verifier_args.get("grader") or DEFAULT_SPEC):
            by_model.setdefault(model_folder(j["model"]), []).append((answer, t.answer))
    for path, pairs in by_model.items():
        judge_for(path).score_many(pairs)


def check_grader(spec: Any, task: Task) -> dict[str, float | None]:
    """What the grader pays on this task for the reference itself, an empty answer and the question echoed
    back. build-tasks refuses a grader that pays the empty answer or the echo more than 0.2, or pays the
    reference less than 0.5 (``grader_ok``)."""
    ref = grade(spec, f"Answer: {task.answer}", task)
    empty = grade(spec, "", task)
    echo = grade(spec, "Answer: " + _MARKER.sub(" ", task.prompt), task)
    return {"reference": ref, "empty": empty, "echo": echo}


def grader_ok(check: dict[str, float | None]) -> bool:
    return (check["reference"] or 0.0) >= 0.5 and (check["empty"] or 0.0) <= 0.2 and (check["echo"] or 0.0) <= 0.2
