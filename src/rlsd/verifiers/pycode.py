"""Python code answers run against the task's unit tests in the sandbox: ``python_code(completion, task)``.

The program is the last ```python (or unlabelled) fenced block of the completion, else the stated
answer (tag / answer line, itself possibly fenced). ``verifier_args``:
- ``tests``: a list of Python snippets (or one string), each run by the trusted runner with the
  program's top-level names bound (as plain data, or handles to its objects); a snippet passes when
  it runs without raising (typically ``assert f(2) == 4``);
- ``all_or_nothing`` (default false): score = fraction of tests passed (default) or 1/0;
- ``timeout_s`` (10), ``per_test_s`` (time limit per test, default 0 = none), ``memory_mb`` (512).
Each test's verdict is decided by a trusted runner outside the program's process, and the program
runs in a bubblewrap sandbox (rlsd.verifiers.sandbox says what is enforced and why). None when the
task has no tests or the sandbox broke before the runner reported; 0 when no program is found or it
fails to load. Where the sandbox cannot run, the verifier raises CodeSandboxUnavailable (it never
runs code unconfined) unless the operator chose the weaker process isolation
(``platform.code_sandbox: process``).
"""

from __future__ import annotations

from rlsd.tasks import Task
from rlsd.verifiers.extract import extract_answer, fenced_block, strip_fence
from rlsd.verifiers.sandbox import run_python_tests

MAX_CODE_CHARS = 50_000


def answer_code(completion: str, fmt: str = "any") -> str | None:
    block = fenced_block(completion, ("python", "py", "python3"))
    if block is not None:
        return block
    got = extract_answer(completion, fmt)
    return strip_fence(got) if got is not None else None


def python_code(completion: str, task: Task) -> float | None:
    args = task.verifier_args
    tests = args.get("tests")
    if isinstance(tests, str):
        tests = [tests]
    if not tests or not all(isinstance(t, str) for t in tests):
        return None
    code = answer_code(completion, args.get("format", "any"))
    if code is None or not code.strip() or len(code) > MAX_CODE_CHARS:
        return 0.0
    res = run_python_tests(code, tests, timeout_s=float(args.get("timeout_s", 10.0)),
                           per_test_s=float(args.get("per_test_s", 0.0)), memory_mb=int(args.get("memory_mb", 512)))
    if res.sandbox_failed:
        return None  # the sandbox broke before any verdict: not the program's fault, not a 0
    if args.get("all_or_nothing", False):
        return 1.0 if all(res.passed) else 0.0
    return res.fraction_passed
