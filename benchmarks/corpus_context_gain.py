"""Does the sample corpus's privileged context matter? Greedy accuracy of a model on N tasks built
from data/sample, without the privileged context (the student prompt) and with it (the teacher
prompt of the recipe: question + context).

    PYTHONPATH=src:. python benchmarks/corpus_context_gain.py --model artifacts/smollm2 [--n 60] [--split eval]

Target for the demo model (SmolLM2-135M-Instruct): 10-60% without, much higher with. Scores use
rlsd.verifiers.score (the training reward); tasks whose verifier is not registered yet (e.g. "json"
before the verifier lands) are counted separately as "not scorable", never as right or wrong.
Writes benchmarks/results/corpus_context_gain.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="local model folder (or .gguf)")
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--split", choices=["train", "eval"], default="eval")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--chat-template", type=int, default=1)
    ap.add_argument("--response-prefix", default=None, help="text that opens the model's reply (default: the recipe's)")
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"),
                    help="recipe whose teacher.template and model.response_prefix are used")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from rlsd import offline

    offline.apply()
    from rlsd.config import load_config
    from rlsd.data.build import build_tasks
    from rlsd.data.ingest import ingest
    from rlsd.data.store import LocalStore
    from rlsd.models import load_model, load_tokenizer
    from rlsd.prompts import render, student_text, teacher_text
    from rlsd.rollout import sample
    from rlsd.tasks import read_tasks
    from rlsd.verifiers import VERIFIERS, score

    cfg = load_config(args.config)
    if args.response_prefix is None:
        args.response_prefix = cfg.model.response_prefix
    with tempfile.TemporaryDirectory() as d:
        st = LocalStore(Path(d) / "st")
        ingest(cfg, manuals=[ROOT / "data/sample/manuals"], tickets=[ROOT / "data/sample/tickets"], store=st)
        out = build_tasks(cfg, out_dir=Path(d) / "tasks", store=st)
        tasks = read_tasks(out[f"{args.split}_path"])
    # a balanced pick over answer types, deterministic
    by_type = defaultdict(list)
    for t in tasks:
        by_type[t.meta["answer_type"]].append(t)
    pick, i = [], 0
    while len(pick) < min(args.n, len(tasks)):
        for k in sorted(by_type):
            if i < len(by_type[k]) and len(pick) < args.n:
                pick.append(by_type[k][i])
        i += 1
    tok = load_tokenizer(args.model)
    model = load_model(args.model)
    model.eval()
    results = {}
    for cond, text_fn in (("without context", student_text),
                          ("with context", lambda t: teacher_text(t, cfg.teacher.template))):
        prompts = [render(text_fn(t), tok, bool(args.chat_template), args.response_prefix) for t in pick]
        t0 = time.perf_counter()
        texts = []
        for b in range(0, len(prompts), args.batch):
            ro = sample(model, tok, prompts[b:b + args.batch], num_samples=1, max_new_tokens=args.max_new_tokens,
                        greedy=True, max_prompt_tokens=1024, engine="generate")
            texts += [args.response_prefix + x for x in ro.texts]
        acc = defaultdict(lambda: [0, 0])
        unscorable = defaultdict(int)
        for t, c in zip(pick, texts):
            if t.verifier not in VERIFIERS:
                unscorable[t.meta["answer_type"]] += 1
                continue
            s = score(t, c) or 0.0
            acc[t.meta["answer_type"]][0] += s
            acc[t.meta["answer_type"]][1] += 1
        results[cond] = (acc, unscorable, time.perf_counter() - t0, texts[:3])
    lines = ["| condition | " + " | ".join(f"{k} acc" for k in sorted(by_type)) + " | all scorable | not scorable | s |",
             "|---|" + "---|" * (len(by_type) + 3)]
    for cond, (acc, uns, secs, _) in results.items():
        tot = [sum(v[0] for v in acc.values()), sum(v[1] for v in acc.values())]
        cells = [f"{acc[k][0] / acc[k][1]:.0%} (n={acc[k][1]})" if acc[k][1] else "-" for k in sorted(by_type)]
        lines.append(f"| {cond} | " + " | ".join(cells) + f" | {tot[0] / max(1, tot[1]):.0%} (n={tot[1]}) | "
                     f"{dict(uns) or 0} | {secs:.0f} |")
    table = "\n".join(lines)
    print(table)
    for cond, (_, _, _, ex) in results.items():
        print(f"\n{cond}, first completions: {ex!r}")
    out = ROOT / "benchmarks" / "results" / "corpus_context_gain.md"
    out.write_text(f"# Privileged-context gain on the sample corpus\n\nModel `{args.model}`, {len(pick)} "
                   f"{args.split} tasks, greedy, max_new_tokens={args.max_new_tokens}, chat template "
                   f"{bool(args.chat_template)}, reply opened with {args.response_prefix!r}.\n\n{table}\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
