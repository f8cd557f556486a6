"""Student and teacher prompts: pure strings.

The hard invariant: the privileged context appears in the teacher prompt only, never in a student
prompt, a rollout input or an evaluation prompt. ``student_prompt`` takes the task's question and
nothing else, and ``assert_no_leak`` is called on every rollout batch.

Prompts longer than ``rollout.max_prompt_tokens`` are never cut at either end (that loses the chat
template's assistant header and the response prefix, or the teacher's instruction): ``fit_student`` /
``fit_teacher`` shorten the question (and first the teacher's privileged context) in the MIDDLE, with the
visible marker ``CUT_MARKER``, until the rendered prompt fits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from rlsd.tasks import Task


def student_text(task: Task) -> str:
    """What the student (and every evaluation) is shown: the question only."""
    return task.prompt


def teacher_text(task: Task, template: str) -> str:
    """The teacher's prompt: question, privileged context, then the instruction (RLSD paper wording)."""
    return template.format(question=task.prompt, context=task.privileged_context)


def render(text: str, tokenizer: Any, chat_template: bool, response_prefix: str = "") -> str:
    """Wrap a user message in the tokenizer's chat template (instruct models) or keep it as is, then
    open the reply with ``response_prefix``."""
    if chat_template:
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    return text + response_prefix


CUT_MARKER = " [...] "


class PromptTooLongError(ValueError):
    """Even with the question and the context shortened to nothing the rendered prompt does not fit."""


def n_tokens(text: str, tokenizer: Any) -> int:
    return len(tokenizer(text, add_special_tokens=False).input_ids)


def cut_middle(text: str, keep: int) -> str:
    """``text`` with all but ``keep`` characters (half from each end) replaced by CUT_MARKER."""
    if keep >= len(text):
        return text
    head = keep // 2
    return text[:head] + CUT_MARKER + text[len(text) - (keep - head):]


def _fit(build: Callable[[dict[str, str]], str], parts: dict[str, str], order: list[str], tokenizer: Any,
         max_tokens: int) -> str:
    """build(parts) shortened to at most ``max_tokens`` tokens by cutting parts[order[0]] in the middle
    (binary search on the characters kept), then parts[order[1]], ..."""
    parts = dict(parts)
    text = build(parts)
    if n_tokens(text, tokenizer) <= max_tokens:
        return text
    for name in order:
        full = parts[name]
        parts[name] = cut_middle(full, 0)
        if n_tokens(build(parts), tokenizer) > max_tokens:
            continue  # not enough even without this part: keep it minimal and cut the next one too
        lo, hi = 0, len(full)  # invariant: keeping lo characters fits, keeping hi does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            parts[name] = cut_middle(full, mid)
            if n_tokens(build(parts), tokenizer) <= max_tokens:
                lo = mid
            else:
                hi = mid
        parts[name] = cut_middle(full, lo)
        return build(parts)
    raise PromptTooLongError(f"the prompt template alone needs {n_tokens(build(parts), tokenizer)} tokens, more "
                             f"than rollout.max_prompt_tokens={max_tokens}; raise rollout.max_prompt_tokens")


def fit_student(task: Task, tokenizer: Any, chat_template: bool, response_prefix: str, max_tokens: int) -> str:
    """The rendered student prompt, its question shortened in the middle if it exceeds ``max_tokens``."""
    return _fit(lambda p: render(p["question"], tokenizer, chat_template, response_prefix),
                {"question": student_text(task)}, ["question"], tokenizer, max_tokens)


def fit_teacher(task: Task, template: str, tokenizer: Any, chat_template: bool, response_prefix: str,
                max_tokens: int) -> str:
    """The rendered teacher prompt within ``max_tokens``: the privileged context is shortened first (in
    the middle), then the question; the template's instruction and the reply's opening stay whole."""
    def build(p: dict[str, str]) -> str:
        shortened = dataclasses.replace(task, prompt=p["question"], privileged_context=p["context"])
        return render(teacher_text(shortened, template), tokenizer, chat_template, response_prefix)

    return _fit(build, {"question": task.prompt, "context": task.privileged_context}, ["context", "question"],
                tokenizer, max_tokens)


def template_tail(tokenizer: Any, chat_template: bool, response_prefix: str) -> str:
    """What every rendered prompt ends with after the user's text: the chat template's assistant header
    (instruct models) and the response prefix."""
    sentinel = "<<rlsd-user-text-7f3a>>"
    return render(sentinel, tokenizer, chat_template, response_prefix).rsplit(sentinel, 1)[1]


class PrivilegedLeakError(AssertionError):
    pass


def assert_no_leak(tasks: list[Task], student_prompts: list[str], *, min_chars: int = 8) -> None:
    """Fail if any student prompt contains its task's privileged context (when that context is not
    already part of the question itself).

    Short contexts (under ``min_chars``, e.g. a bare number) are checked as whole lines so that the
    answer "12" does not fire on a question that happens to contain "12" as part of a number.
    """
    for task, prompt in zip(tasks, student_prompts, strict=True):
        ctx = task.privileged_context.strip()
        if not ctx or ctx in task.prompt:
            continue
        if len(ctx) >= min_chars:
            leaked = ctx in prompt
        else:
            leaked = any(line.strip() in (ctx, f"H:{ctx}") for line in prompt.splitlines())
        if leaked:
            raise PrivilegedLeakError(f"privileged context of task {task.id!r} reached a student prompt")
