"""Evaluate a model under the new policy (the API is in `evaluate.evaluate`).

    from trace_realign.evaluate import evaluate_model

Names are imported on first use, so `trace-realign --help` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "evaluate_model": "trace_realign.evaluate.evaluate",
    "read_prompts": "trace_realign.evaluate.evaluate",
    "check_prompts": "trace_realign.evaluate.evaluate",
    "GenerationSettings": "trace_realign.evaluate.generate",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'trace_realign.evaluate' has no attribute {name!r}")

    return getattr(importlib.import_module(_EXPORTS[name]), name)
