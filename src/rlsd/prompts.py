"""Student and teacher prompts: pure strings.

The hard invariant: the privileged context appears in the teacher prompt only, never in a student
prompt, a rollout input or an evaluation prompt. ``student_prompt`` takes the task's question and
nothing else, and ``assert_no_leak`` is called on every rollout batch.
"""

from __future__ import annotations

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
