"""Free-text graders on the sample corpus (issue 20): what each pays for five kinds of answer, how fast, and
how far the local judge agrees with a rubric.

For every verified resolution-only ticket of data/sample (the free-text tasks build-tasks makes with
ingest.text_grader set), five answers are graded: the reference resolution, its first half ("partial"),
another ticket's resolution ("wrong"), the question echoed back and an empty answer. Graders: ROUGE-L,
BLEU, token F1, fuzzy, a rubric derived from the reference (its three longest words of 5+ letters, each a
phrase item; a stand-in for the rubric a support lead would write), and, with --judge MODEL_DIR, the local
judge. Printed: mean score per grader and answer kind, the share of tasks where the grader ranks
reference > partial > wrong, seconds per graded answer, the judge's answers per second, and Spearman's
rank correlation between judge and rubric over all graded answers.

    python benchmarks/graders.py [--judge artifacts/smollm2] [--out benchmarks/results/graders.md]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rlsd import offline  # noqa: E402

offline.apply()

import dataclasses  # noqa: E402

from rlsd.config import load_config  # noqa: E402
from rlsd.data.build import build_tasks  # noqa: E402
from rlsd.data.ingest import ingest  # noqa: E402
from rlsd.data.store import LocalStore  # noqa: E402
from rlsd.tasks import read_tasks  # noqa: E402
from rlsd.verifiers import graders as G  # noqa: E402

KINDS = ("reference", "partial", "wrong", "echo", "empty")


def text_tasks() -> list:
    cfg = load_config()
    cfg = dataclasses.replace(cfg, ingest=dataclasses.replace(cfg.ingest, text_grader="rouge_l"))
    with tempfile.TemporaryDirectory() as tmp:
        st = LocalStore(Path(tmp) / "st")
        ingest(cfg, manuals=[ROOT / "data/sample/manuals"], tickets=[ROOT / "data/sample/tickets"], store=st)
        out = build_tasks(cfg, out_dir=Path(tmp) / "tasks", store=st)
        return [t for t in read_tasks(out["train_path"]) + read_tasks(out["eval_path"]) if t.verifier == "text"]


def answers(tasks: list) -> list[tuple[object, str, str]]:
    rng = random.Random(0)
    out = []
    for i, t in enumerate(tasks):
        words = t.answer.split()
        other = tasks[(i + 1 + rng.randrange(len(tasks) - 1)) % len(tasks)].answer
        out += [(t, "reference", t.answer), (t, "partial", " ".join(words[:max(1, len(words) // 2)])),
                (t, "wrong", other), (t, "echo", t.prompt.split("\n\n")[0]), (t, "empty", "")]
    return out


def rubric_for(t) -> dict:
    words = sorted({w.strip(".,;:()").lower() for w in t.answer.split() if len(w.strip(".,;:()")) >= 5},
                   key=lambda w: (-len(w), w))[:3]
    return {"grader": "rubric", "items": [{"phrase": w} for w in words] or [{"phrase": t.answer.split()[0]}]}


def spearman(x: list[float], y: list[float]) -> float:
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sx = sum((a - mx) ** 2 for a in rx) ** 0.5
    sy = sum((b - my) ** 2 for b in ry) ** 0.5
    return cov / (sx * sy) if sx and sy else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--judge", help="a local causal LM folder for the judge (e.g. artifacts/smollm2)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    tasks = text_tasks()
    pairs = answers(tasks)
    specs = {m: m for m in ("rouge_l", "bleu", "token_f1", "fuzzy")}
    specs["rubric (derived)"] = None
    if args.judge:
        specs["judge"] = {"grader": "judge", "model": str(Path(args.judge).resolve())}
    scores: dict[str, list[float]] = {}
    secs: dict[str, float] = {}
    for name, spec in specs.items():
        G.grade("token_f1", "warm up", pairs[0][0])
        if name == "judge":
            G.judge_for(spec["model"])  # load outside the timing
        t0 = time.perf_counter()
        if name == "judge":
            G.prefetch([dataclasses.replace(t, verifier_args={"grader": spec}) for t, _, _ in pairs],
                       [f"Answer: {a}" for _, _, a in pairs])
        scores[name] = [G.grade(spec or rubric_for(t), f"Answer: {a}", t) or 0.0 for t, _, a in pairs]
        secs[name] = (time.perf_counter() - t0) / len(pairs)
    lines = [f"# Free-text graders on the sample corpus ({len(tasks)} text tasks x {len(KINDS)} answers)", "",
             "`python benchmarks/graders.py" + (f" --judge {args.judge}" if args.judge else "") + "` on 2 cores", "",
             "| grader | " + " | ".join(KINDS) + " | ref > partial > wrong | ms / answer |",
             "|---|" + "---|" * (len(KINDS) + 2)]
    for name, s in scores.items():
        by = {k: [v for (_, kind, _), v in zip(pairs, s) if kind == k] for k in KINDS}
        means = " | ".join(f"{sum(v) / len(v):.3f}" for v in by.values())
        order = sum(r > p > w for r, p, w in zip(by["reference"], by["partial"], by["wrong"])) / len(tasks)
        lines.append(f"| {name} | {means} | {order:.0%} | {secs[name] * 1e3:.1f} |")
    if "judge" in scores:
        j = G.judge_for(specs["judge"]["model"])
        lines += ["", f"judge: {1 / secs['judge']:.1f} answers/s (batched, greedy, {j.max_new_tokens} new tokens), "
                      f"{j.parse_failures} of {j.calls} replies unreadable (scored 0); Spearman judge vs derived rubric "
                      f"over {len(pairs)} answers: {spearman(scores['judge'], scores['rubric (derived)']):.2f}"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
