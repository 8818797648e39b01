"""What an ordinary run prints: our progress and results, not third-party notices a user cannot act on.

The command line calls `quiet_third_party()` unless `--verbose` is given (or `TRACE_REALIGN_VERBOSE=1`).
Where a notice is ours to fix, it is fixed at its cause instead (pinned memory is only asked for
with an accelerator, `update.config`; DeepSpeed is told there is no accelerator to probe when it is
imported without a DeepSpeed config, `update.trainer`). What is left is other packages talking to
each other, and only that is silenced:

- `is_gradient_checkpointing is deprecated`: PEFT reads the property transformers 5 renamed;
- transformers' and huggingface_hub's own progress bars and advisory logging (loading weights,
  writing shards): set `TRANSFORMERS_VERBOSITY` or `HF_HUB_DISABLE_PROGRESS_BARS` yourself and
  your choice is kept.
"""

from __future__ import annotations

import os
import warnings

VERBOSE_ENV = "TRACE_REALIGN_VERBOSE"
# (category, message regex) of third-party warnings nobody running trace-realign can act on
THIRD_PARTY = ((FutureWarning, r".*`is_gradient_checkpointing` is deprecated"),)


def verbose_requested(flag: bool = False) -> bool:
    return flag or os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes")


def quiet_third_party() -> None:
    """Silence the third-party notices above for this process, before those packages load."""
    for category, message in THIRD_PARTY:
        warnings.filterwarnings("ignore", message=message, category=category)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
