#!/usr/bin/env bash
# Every GPU check of issue #10 in ONE device call of under 10 minutes (a session has 15 minutes of device time,
# machine start included): the rollout engine's checks and benchmark, then the trainer's end-to-end RLSD step
# (256 rollouts x 256 new tokens, 135M shape), with tighter time limits than the two scripts alone.
#   bash benchmarks/gpu_wheels.sh            # here, once: DeepSpeed wheels into .whl/ (git-ignored)
#   then on the device, carrying .whl:  bash benchmarks/gpu_all.sh      (results under $OUT/rollout_gpu, $OUT/gpu_check)
# Dry run on CPU: the CHECK_ARGS / BENCH_ARGS of gpu_rollout_check.sh's header, TRITON_INTERPRET=1 and
# GPU_CHECK_ARGS="--device cpu" (about 2 minutes).
# Budget: rollout checks 120 s + benchmark 150 s + trainer and update mechanics 240 s (no retry) + attention probe 90 s
# = 600 s at most
# (measured 2026-11-29 on an H200: checks 36 s, the benchmark below ~60 s, trainer 57 s).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp}"
t0=$(date +%s)
CHECK_TIMEOUT=120 BENCH_TIMEOUT=150 BENCH_ARGS="${BENCH_ARGS:---models smollm2 --batches 256,1024 --new-tokens 256 \
  --prompt-tokens 128 --dtype bfloat16 --repeats 1 --kernels torch,mixed,triton}" \
  bash benchmarks/gpu_rollout_check.sh "$OUT/rollout_gpu"
rollout_rc=$?
echo "rollout part: rc=$rollout_rc after $(( $(date +%s) - t0 )) s"
MAIN_TIMEOUT=240 RETRY_TIMEOUT=0 GPU_CHECK_ARGS="${GPU_CHECK_ARGS:---shape smollm2 --prompts 32 --group 8 --new-tokens 256 --steps 3 --reps 1}" \
  bash benchmarks/gpu_check.sh "$OUT/gpu_check"
trainer_rc=$?
echo "trainer part: rc=$trainer_rc after $(( $(date +%s) - t0 )) s"
# every decode-attention variant (blocks, warps, stages, splits, torch ops, SDPA) timed inside CUDA graphs (~40 s)
mkdir -p "$OUT/attention_probe"
PYTHONPATH="$PWD/src" timeout 90 "${PYTHON:-python3}" benchmarks/gpu_attention_probe.py \
  --json "$OUT/attention_probe/attention_probe.json" > "$OUT/attention_probe/attention_probe.log" 2>&1 || true
echo "attention probe: after $(( $(date +%s) - t0 )) s"
cat "$OUT/rollout_gpu/summary.md" "$OUT/gpu_check/summary.md" > "$OUT/summary.md" 2>/dev/null || true
exit $(( rollout_rc != 0 || trainer_rc != 0 ))
