"""The update each triage category calls for (docs/method.md, Stage 1 table and Algorithm 1).

One function, read by impact scoring (the loss whose gradient is scored) and by training (the
loss that is trained), so the two cannot disagree about what a category means.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from trace_realign.schema import Category

TermKind = Literal["pref", "npo", "kl"]


class Term(NamedTuple):
    """`pref`: ℓ_pref(x, a, b), prefer `a` over `b`; `npo`: ℓ_NPO on both `a` (y_w) and `b` (y_l);
    `kl`: the KL anchor on `a` (y_w), `b` is None."""

    kind: TermKind
    a: str
    b: str | None


def category_term(category: Category, chosen: str, rejected: str, correction: str | None = None) -> Term:
    """INVERT: prefer y_l over y_w. PUNISH: prefer the oracle correction y_c over y_w when there is
    one, else NPO on both responses. RETAIN: KL to the reference on y_w. UNKNOWN: `ValueError`."""
    if category is Category.INVERT:
        return Term("pref", rejected, chosen)
    if category is Category.PUNISH:
        if correction:
            return Term("pref", correction, chosen)
        return Term("npo", chosen, rejected)
    if category is Category.RETAIN:
        return Term("kl", chosen, None)
    raise ValueError(f"{category} pairs are not trained")


# The impact weights of each scored loss, a column each in weighted.jsonl: a method's weights must
# come from the loss it trains. `trace` unlearns PUNISH with NPO on both responses; `trace-oracle`
# prefers the oracle correction y_c over y_w where a PUNISH row has one (NPO where it has none).
WEIGHT_COLUMNS = {"npo": "impact_weight", "corrected": "impact_weight_corrected"}


def weight_column(corrections: bool) -> str:
    """The weighted.jsonl column of a method's impact weights: its PUNISH term with or without the
    oracle corrections (`category_term`)."""
    return WEIGHT_COLUMNS["corrected" if corrections else "npo"]
