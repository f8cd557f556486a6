#!/usr/bin/env bash
# ONE prepared GPU check of rlsd's rollout engine (H100 / H200; no network; torch 2.11 + transformers 5.17;
# no pytest or gguf needed). NOT YET RUN ON A GPU: it was written in a session without one.
#   bash benchmarks/gpu_rollout_check.sh [OUTDIR]     (OUTDIR defaults to $OUT/rollout_gpu, else /tmp/rollout_gpu)
# Budget: checks <= 200 s, benchmark <= 260 s (each under `timeout`; CHECK_TIMEOUT / BENCH_TIMEOUT change them),
# total under 8 minutes.
# The checks include rlsd.rollout.kernels (Triton) on the device and the engine with rollout.kernels=triton;
# the benchmark times the engine with kernels=torch and kernels=triton against generate.
# Dry run on CPU (no GPU; Triton kernels in the interpreter; ~3 minutes on 2 cores):
#   TRITON_INTERPRET=1 CHECK_ARGS="--device cpu --bf16-layers 2 --new-tokens 12 --kernel-batch 4 --bf16-rows 8" \
#   BENCH_ARGS="--device cpu --models tiny --batches 4 --new-tokens 4 --prompt-tokens 8 --kernels torch,triton \
#   --repeats 1" bash benchmarks/gpu_rollout_check.sh /tmp/rollout_dry
# Prints a short table last; writes OUTDIR/{check.log,check.json,bench.log,bench.json,rollout_gpu.md,summary.md}.
set -euo pipefail
cd "$(dirname "$0")/.."
OUTDIR="${1:-${OUT:-/tmp}/rollout_gpu}"
mkdir -p "$OUTDIR"
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
       TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, \
'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())" | tee "$OUTDIR/env.txt"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader >> "$OUTDIR/env.txt" 2>/dev/null || true

check_rc=0
# CHECK_ARGS / BENCH_ARGS override the defaults only for a dry run on CPU (see the report).
# shellcheck disable=SC2086
timeout "${CHECK_TIMEOUT:-200}" "$PY" benchmarks/gpu_rollout_check.py ${CHECK_ARGS:-} --json "$OUTDIR/check.json" 2>&1 | tee "$OUTDIR/check.log" \
  || check_rc=$?
bench_rc=0
# shellcheck disable=SC2086
timeout "${BENCH_TIMEOUT:-260}" "$PY" benchmarks/rollout.py ${BENCH_ARGS:---models smollm2,tiny --batches 64,256,1024 --new-tokens 256 \
  --prompt-tokens 128 --dtype bfloat16 --repeats 1 --kernels torch,triton} --out "$OUTDIR/rollout_gpu.md" --json "$OUTDIR/bench.json" \
  2>&1 | tee "$OUTDIR/bench.log" || bench_rc=$?

"$PY" - "$OUTDIR" "$check_rc" "$bench_rc" <<'PYEOF' | tee "$OUTDIR/summary.md"
import json, sys
from pathlib import Path
out, check_rc, bench_rc = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
lines = [f"## rollout engine on GPU (check rc={check_rc}, benchmark rc={bench_rc})", ""]
try:
    c = json.loads((out / "check.json").read_text())
    lines.append(f"device: {c.get('device')}; {c.get('versions')}")
    ok = [k for k, v in c["checks"].items() if v["pass"]]
    bad = [f"{k} ({v['info']})" for k, v in c["checks"].items() if not v["pass"]]
    lines.append(f"checks passed: {len(ok)}/{len(c['checks'])}" + (f"; FAILED: {'; '.join(bad)}" if bad else ""))
    lines += ["", "| bf16 135M shape, 64 x 128 new tokens | mean | p50 | p99 | max |", "|---|---|---|---|---|"]
    for init in ("default", "peaked"):
        for kern, suffix in (("torch", ""), ("triton", "_triton"), ("mixed", "_mixed")):
            s = c.get(f"bf16_logp_diff_{init}{suffix}")
            if s:
                lines.append(f"| abs(engine logp - trainer logp), {init} init, kernels={kern} | {s['mean']:.2e} | "
                             f"{s['p50']:.2e} | {s['p99']:.2e} | {s['max']:.2e} |")
    if c.get("kernel_times_us"):
        lines.append(f"\nkernel times, us per call (bf16, 135M heads, col 300): {c['kernel_times_us']}")
except Exception as e:  # noqa: BLE001
    lines.append(f"no check results: {e}")
try:
    b = json.loads((out / "bench.json").read_text())
    lines += ["", f"{b['dtype']}, prompt {b['prompt_tokens']} + {b['new_tokens']} new, copy bandwidth {b['bandwidth_gbs']:.0f} GB/s",
              "| model | batch | kernels | engine tok/s | generate tok/s | speedup | engine ms/step | % of memory bound |",
              "|---|---|---|---|---|---|---|---|"]
    for r in b["rows"]:
        lines.append(f"| {r['model']} | {r['batch']} | {r.get('kernels', 'torch')} | {r['engine_tok_s']:,.0f} | "
                     f"{r['generate_tok_s']:,.0f} | {r['speedup']:.1f}x | {r['engine_ms_step']:.2f} | "
                     f"{100 * r['frac_of_bound']:.1f}% |")
    for kern in sorted({r.get("kernels", "torch") for r in b["rows"]}):
        rs = [r for r in b["rows"] if r["model"] == "smollm2" and r.get("kernels", "torch") == kern]
        t = [r for r in rs if r["batch"] == 256]
        if t:
            lines.append(f"\ntarget (135M, batch 256, kernels={kern}): >= 30x generate -> {t[0]['speedup']:.1f}x; "
                         f"batch 1024 >= 40% of bound -> " + ", ".join(f"{100 * r['frac_of_bound']:.0f}%" for r in rs
                                                                      if r["batch"] == 1024))
except Exception as e:  # noqa: BLE001
    lines.append(f"no benchmark results: {e}")
print("\n".join(lines))
PYEOF
exit $(( check_rc != 0 || bench_rc != 0 ))
