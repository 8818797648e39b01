"""Verdicts read from the data's own columns (`labels:COL_CHOSEN,COL_REJECTED`, `labels:pku`).

Triage hands each item `meta = {"side": "chosen" | "rejected", "pair": pair.meta}`; the column for
that side is a dotted path into the pair's meta (`chosen.safe`, or a top-level column such as
`chosen_ok`). True, 1, "compliant", "safe", "yes" mean compliant; False, 0, "non_compliant",
"unsafe", "no" mean non-compliant; a missing or empty value is UNKNOWN, never a guess.

The same text can carry different labels in different rows, so these verdicts depend on `meta`,
not only on (prompt, response): the judge is not cacheable and folds no duplicates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trace_realign.errors import InputError
from trace_realign.judges.base import JudgeItem, OnVerdict
from trace_realign.judges.policy import Policy
from trace_realign.schema import Label, Verdict

# PKU-SafeRLHF: the adapter keeps each response's safety label under its side (docs/architecture.md).
SHORTHANDS = {"pku": ("chosen.safe", "rejected.safe")}

_TRUE = {"true", "1", "yes", "y", "compliant", "safe"}
_FALSE = {"false", "0", "no", "n", "non_compliant", "non-compliant", "noncompliant", "unsafe"}


def _lookup(meta: Any, path: str) -> tuple[bool, Any]:
    node = meta
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def to_label(value: Any) -> Label | None:
    """The verdict a column value means, or None when it means nothing we know."""
    if isinstance(value, bool):
        return Label.COMPLIANT if value else Label.NON_COMPLIANT
    if isinstance(value, (int, float)) and value in (0, 1):
        return Label.COMPLIANT if value == 1 else Label.NON_COMPLIANT
    if isinstance(value, str):
        v = value.strip().lower()
        if v in _TRUE:
            return Label.COMPLIANT
        if v in _FALSE:
            return Label.NON_COMPLIANT
    return None


class LabelJudge:
    cacheable = False

    def __init__(self, chosen: str, rejected: str) -> None:
        if not chosen or not rejected:
            raise InputError("labels judge needs two columns: labels:COL_CHOSEN,COL_REJECTED", field="judge")
        self.columns = {"chosen": chosen, "rejected": rejected}
        self.identity = f"labels:{chosen},{rejected}"

    @classmethod
    def from_spec(cls, arg: str) -> LabelJudge:
        """`pku` or `COL_CHOSEN,COL_REJECTED`."""
        if arg in SHORTHANDS:
            return cls(*SHORTHANDS[arg])
        cols = [c.strip() for c in arg.split(",")]
        if len(cols) != 2:
            raise InputError(f"labels judge needs COL_CHOSEN,COL_REJECTED or pku, got {arg!r}", field="judge")
        return cls(*cols)

    def verdict(self, item: JudgeItem) -> Verdict:
        side = item.meta.get("side")
        if side not in self.columns:
            return Verdict(Label.UNKNOWN, "item has no side (chosen/rejected) to read a label for")
        column = self.columns[side]
        found, value = _lookup(item.meta.get("pair", {}), column)
        if not found or value is None or value == "":
            return Verdict(Label.UNKNOWN, f"no value in column {column}")
        label = to_label(value)
        if label is None:
            return Verdict(Label.UNKNOWN, f"column {column} holds {value!r}, not a verdict", str(value))
        return Verdict(label, f"{column} = {value!r}", str(value))

    def judge(
        self, policy: Policy, items: Sequence[JudgeItem], on_verdict: OnVerdict | None = None
    ) -> list[Verdict]:
        out = []
        for i, it in enumerate(items):
            v = self.verdict(it)
            if on_verdict is not None:
                on_verdict(i, v)
            out.append(v)
        return out
