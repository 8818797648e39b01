"""A judge for tests: verdicts looked up from a table, every call recorded."""

from __future__ import annotations

from collections.abc import Sequence

from trace_realign.judges.base import JudgeItem, OnVerdict
from trace_realign.judges.policy import Policy
from trace_realign.schema import Label, PreferencePair, Verdict


class TableJudge:
    """Verdict by response text: `table[response]` is "c" (compliant), "n" (non-compliant) or "u"."""

    cacheable = True

    def __init__(self, table: dict[str, str], identity: str = "table-judge") -> None:
        self.table = table
        self.identity = identity
        self.seen: list[JudgeItem] = []

    def judge(
        self, policy: Policy, items: Sequence[JudgeItem], on_verdict: OnVerdict | None = None
    ) -> list[Verdict]:
        out = []
        for i, it in enumerate(items):
            self.seen.append(it)
            code = self.table[it.response]
            label = {"c": Label.COMPLIANT, "n": Label.NON_COMPLIANT, "u": Label.UNKNOWN}[code]
            v = Verdict(label, reason=f"{code} because table", raw=code)
            if on_verdict is not None:
                on_verdict(i, v)
            out.append(v)
        return out


def make_pairs(
    spec: Sequence[tuple[str, str]], meta: dict | None = None
) -> tuple[list[PreferencePair], dict]:
    """Pairs whose chosen/rejected verdicts are given as codes, e.g. ("n", "c") is an INVERT pair."""
    pairs, table = [], {}
    for i, (cw, cl) in enumerate(spec):
        chosen, rejected = f"winner {i} [{cw}]", f"loser {i} [{cl}]"
        table[chosen], table[rejected] = cw, cl
        pairs.append(PreferencePair(f"prompt {i}", chosen, rejected, dict(meta or {})))
    return pairs, table
