"""trace-realign: realign an aligned language model when its policy changes (TRACE)."""

from trace_realign.schema import Category, Label, PreferencePair, Verdict

__version__ = "0.1.0"

__all__ = ["Category", "Label", "PreferencePair", "Verdict", "__version__"]
