"""Verifier cost on hostile and ordinary completions (issue 17's performance targets).

- numeric: a 1 MB completion of each shape below through ``rlsd.verifiers.score`` (best of 3); target
  <= 50 ms each. Completions are capped at MAX_COMPLETION_CHARS (100,000) before any parsing.
- code: the verdict on a small correct program (one function, three asserts) through ``score``: the
  program and the trusted test runner each in their own bubblewrap sandbox (rlsd.verifiers.sandbox);
  the first call (which also probes bwrap once per process) apart, then best and median of 5;
  target <= 0.5 s (median).

    OMP_NUM_THREADS=1 python benchmarks/verifiers.py --out benchmarks/results/verifiers.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_line, md_table  # noqa: E402

M = 1_000_000
SHAPES = {
    "digits": "9" * M,
    "prose": "the printer queue is stuck again " * (M // 33),
    "'the answer is 5.' repeated": "the answer is 5. " * (M // 17),
    "'#### 5' lines": "#### 5\n" * (M // 7),
    "'x = 5' lines": "x = 5\n" * (M // 6),
    "unclosed \\boxed{": "\\boxed{" * (M // 7),
    "unclosed <answer>": "<answer>" * (M // 8),
    "newlines": "\n" * M,
    "'a=' repeated": "a=" * (M // 2),
    "answer line + 1 MB of x": "Answer: 5\n" + "x" * M,
    "'5 km' + unit-like tail": "Answer: 5" + " kmkm" * (M // 5),
}

PROGRAM = "```python\ndef add(a, b):\n    return a + b\n```"
TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4"]


def best_of(fn, n: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    from rlsd.tasks import Task
    from rlsd.verifiers import score

    task = Task(id="t", prompt="What is 2 + 3?", privileged_context="", answer="5", verifier="numeric")
    rows = [["1 MB completion", "numeric ms (best of 3)", "score"]]
    worst = 0.0
    for name, text in SHAPES.items():
        t, _ = best_of(lambda text=text: score(task, text), 3)
        worst = max(worst, t)
        rows.append([name, f"{1000 * t:.1f}", str(score(task, text))])
    code_task = Task(id="c", prompt="Write add(a, b).", privileged_context="", answer="-", verifier="code",
                     verifier_args={"tests": TESTS})
    from rlsd.verifiers.sandbox import configured_mode

    t_first, _ = best_of(lambda: score(code_task, PROGRAM), 1)
    assert score(code_task, PROGRAM) == 1.0
    t_code, times = best_of(lambda: score(code_task, PROGRAM), 5)
    lines = [f"# Verifier cost\n\n{machine_line()}\n", md_table(rows),
             f"\nnumeric, worst 1 MB shape: {1000 * worst:.1f} ms (target <= 50 ms: {'met' if worst <= 0.05 else 'NOT met'})",
             f"\ncode ({configured_mode()} sandbox), verdict on a small correct program: best {t_code:.3f} s, median "
             f"{statistics.median(times):.3f} s of 5 (target <= 0.5 s: {'met' if statistics.median(times) <= 0.5 else 'NOT met'}); "
             f"first call of the process {t_first:.3f} s (includes the one-time sandbox probe)"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
