"""Stage 2, the hybrid update (Algorithm 1 lines 21-29), and the baselines, as one trainer.

    from trace_realign.update import TraceConfig, train
    summary = train("models/m_ref", "run/score/weighted.jsonl",
                    TraceConfig(output_dir="run/train/trace", method="trace", max_steps=100))

Names are imported on first use, so `trace-realign --help` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TraceConfig": "trace_realign.update.config",
    "PRESETS": "trace_realign.update.presets",
    "Preset": "trace_realign.update.presets",
    "get_preset": "trace_realign.update.presets",
    "TraceTrainer": "trace_realign.update.trainer",
    "hybrid_loss": "trace_realign.update.trainer",
    "train": "trace_realign.update.trainer",
    "read_weighted": "trace_realign.update.data",
    "select_examples": "trace_realign.update.data",
    "TraceDataset": "trace_realign.update.data",
    "StratifiedSampler": "trace_realign.update.data",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'trace_realign.update' has no attribute {name!r}")

    return getattr(importlib.import_module(_EXPORTS[name]), name)
