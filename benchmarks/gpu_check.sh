#!/usr/bin/env bash
# ONE prepared GPU check of the trainer (H100 / H200; no network; torch 2.11 + transformers 5.17 there).
# NOT YET RUN ON A GPU: written in a session without one. Needs the wheels of benchmarks/gpu_wheels.sh in .whl/
# when deepspeed is not installed there (carry .whl with the run).
#   bash benchmarks/gpu_check.sh [OUTDIR]      (OUTDIR defaults to $OUT/gpu_check, else /tmp/gpu_check)
# Builds a random-init Llama of SmolLM2-135M's shape from rlsd's own code, runs RLSD and GRPO steps (32 prompts
# x 8 samples x 256 new tokens; the issue's end-to-end target is <= 2 s for RLSD) alternately with DeepSpeed
# ZeRO-2 in bf16 on one GPU, and prints rollout tokens/s, training tokens/s, step time, the RLSD/GRPO
# step-time ratio and MFU against the bf16 matmul peak measured in the same run. Budget: < 8 minutes
# (main run under `timeout 300`; if it fails, one retry with transformers generate as the rollout engine
# under `timeout 150`; MAIN_TIMEOUT / RETRY_TIMEOUT change them). Prints a short table last; writes OUTDIR/{env.txt,run.log,gpu_check.json,summary.md}.
# Dry run of the Python part on a CPU: GPU_CHECK_ARGS="--device cpu" bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR="${1:-${OUT:-/tmp}/gpu_check}"
mkdir -p "$OUTDIR"
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
       TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
if ! "$PY" -c "import deepspeed" >/dev/null 2>&1; then
  if ls .whl/deepspeed-*.whl >/dev/null 2>&1; then
    # --target, not a venv: python3 there may itself be a venv, whose packages (torch) a
    # `venv --system-site-packages` does not see (measured on the H200: "No module named 'torch'")
    "$PY" -m pip install -q --no-index --no-deps --target /tmp/rlsd-gpu-wheels .whl/*.whl || exit 2
    export PYTHONPATH="$PYTHONPATH:/tmp/rlsd-gpu-wheels"
  else
    echo "deepspeed is not installed and .whl/ holds no wheels: run benchmarks/gpu_wheels.sh where there is network, then carry .whl" >&2
    exit 2
  fi
fi
"$PY" -c "import torch, transformers, deepspeed; print('torch', torch.__version__, 'transformers', transformers.__version__, \
'deepspeed', deepspeed.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())" | tee "$OUTDIR/env.txt"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader >> "$OUTDIR/env.txt" 2>/dev/null || true

rm -f "$OUTDIR/gpu_check.json"
WORK="${WORKDIR:-/tmp/rlsd-gpu-check-work}"  # the model (0.5 GB) and run folders: not under $OUT, which comes back
# The issue's end-to-end target: one RLSD step of 256 rollouts x 256 new tokens on the 135M shape in <= 2 s.
DEFAULT_ARGS="--shape smollm2 --prompts 32 --group 8 --new-tokens 256 --steps 3 --reps 2"
# shellcheck disable=SC2086
timeout "${MAIN_TIMEOUT:-300}" "$PY" benchmarks/gpu_check.py ${GPU_CHECK_ARGS:-$DEFAULT_ARGS} --json "$OUTDIR/gpu_check.json" --workdir "$WORK" \
  2>&1 | tee "$OUTDIR/run.log"
rc=${PIPESTATUS[0]}
if [ ! -s "$OUTDIR/gpu_check.json" ] && [ "${RETRY_TIMEOUT:-150}" -gt 0 ]; then  # RETRY_TIMEOUT=0: no retry
  echo "main run failed (rc=$rc); retrying once with --engine generate" | tee -a "$OUTDIR/run.log"
  # shellcheck disable=SC2086
  timeout "${RETRY_TIMEOUT:-150}" "$PY" benchmarks/gpu_check.py ${GPU_CHECK_ARGS:-$DEFAULT_ARGS} --engine generate \
    --steps 2 --reps 1 --json "$OUTDIR/gpu_check.json" --workdir "$WORK" 2>&1 | tee -a "$OUTDIR/run.log"
  rc=${PIPESTATUS[0]}
fi

"$PY" - "$OUTDIR" "$rc" <<'PYEOF' | tee "$OUTDIR/summary.md"
import json, sys
from pathlib import Path
out, rc = Path(sys.argv[1]), sys.argv[2]
try:
    r = json.loads((out / "gpu_check.json").read_text())
    s = r["settings"]
    print(f"## trainer on GPU: {r['device']} (rc={rc})\n")
    print(f"{r['machine']}\n")
    print(f"{r['params'] / 1e6:.1f}M params, ZeRO-{s['zero']}, engine {s['engine']}, {s['prompts']} x G={s['group']} rollouts x "
          f"<= {s['new_tokens']} new tokens, {s['reps']} reps x {s['steps'] - 1} kept steps; measured bf16 peak "
          f"{r['peak_flops'] / 1e12:.1f} TFLOP/s\n")
    print(r["table"])
    print(f"\nRLSD/GRPO step time: min {r['ratio_min']:.2f}x, median {r['ratio_median']:.2f}x")
    if "target" in r:
        print(r["target"])
    if "mechanics" in r:
        print("\n## update mechanics on GPU\n\n" + r["mechanics"]["table"])
except Exception as e:  # noqa: BLE001
    print(f"## trainer on GPU: no results (rc={rc}): {e}; see {out}/run.log")
PYEOF
exit "$rc"
