"""Old preference data in: `load_pairs` (files, Hub ids, TRL formats) and the PKU-SafeRLHF adapter."""

from trace_realign.data.loading import LoadResult, SkippedRow, load_pairs
from trace_realign.data.pku import HARM_CATEGORIES, harm_code

__all__ = ["HARM_CATEGORIES", "LoadResult", "SkippedRow", "harm_code", "load_pairs"]
