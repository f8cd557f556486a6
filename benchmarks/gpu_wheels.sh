#!/usr/bin/env bash
# Download (on a machine WITH network) the wheels that make DeepSpeed work on the GPU machines, which have
# no network and no deepspeed (Python 3.12, torch 2.11, transformers 5.17; see ../shared/notes/gpu-facts.md):
# a pure-Python deepspeed wheel (ops are JIT-built or unused) and its small dependencies, the versions of the
# project venv. They land in .whl/ (git-ignored); benchmarks/gpu_check.sh installs them there with
# --no-index --no-deps into a throw-away venv on top of the system site-packages.
#   bash benchmarks/gpu_wheels.sh          # then carry .whl to the GPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
mkdir -p .whl
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps deepspeed==0.19.8 -w .whl
"$PY" -m pip download -q --no-deps -d .whl hjson==3.1.0 pydantic==2.14.4 annotated-types==0.8.0 \
  typing-inspection==0.4.5 typing-extensions==4.16.0
# pydantic-core is compiled: fetch the CPython 3.12 manylinux build whatever Python runs this script
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl pydantic-core==2.50.5
ls -l .whl
