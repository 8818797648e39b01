"""Old preference data in: `load_pairs` (files, Hub ids, TRL formats) and the PKU-SafeRLHF adapter."""

from pathlib import Path

from trace_realign.data.loading import LoadResult, SkippedRow, load_pairs
from trace_realign.data.pku import HARM_CATEGORIES, harm_code

# A dozen old pairs, a new policy and that policy as rules, installed with the package:
#   trace-realign triage --data $EXAMPLES/pairs.jsonl --policy $EXAMPLES/policy.md \
#       --judge rules:$EXAMPLES/rules.yaml --out triaged.jsonl
EXAMPLES_DIR = Path(__file__).parent / "examples"

__all__ = ["EXAMPLES_DIR", "HARM_CATEGORIES", "LoadResult", "SkippedRow", "harm_code", "load_pairs"]
