"""Evaluation metrics as pure functions of verdicts and scores (docs/method.md, "Metrics").

Unknown verdicts are counted and reported, and left out of every rate: an answer the judge
could not read is neither compliant nor non-compliant. Every rate carries a 95% Wilson
interval, which stays inside [0, 1] and behaves at 0 and n successes, unlike the normal one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from trace_realign.schema import Category, Label
from trace_realign.stats import proportion

# What agreement on the held-out prompts of each triage category measures (docs/method.md, TPA).
CATEGORY_METRIC = {
    Category.INVERT.value: "INVERT success",
    Category.PUNISH.value: "PUNISH compliance",
    Category.RETAIN.value: "RETAIN preservation",
}


def _labels(labels: Iterable[Label | str]) -> list[Label]:
    return [lab if isinstance(lab, Label) else Label(lab) for lab in labels]


def agreement(labels: Iterable[Label | str]) -> dict[str, Any]:
    """Share of compliant verdicts among the known ones, plus how many were unknown."""
    labs = _labels(labels)
    known = [lab for lab in labs if lab is not Label.UNKNOWN]
    out = proportion(sum(lab is Label.COMPLIANT for lab in known), len(known))
    out["unknown"] = len(labs) - len(known)
    out["total"] = len(labs)
    return out


def target_policy_agreement(
    labels: Sequence[Label | str], categories: Sequence[str | None] | None = None
) -> dict[str, Any]:
    """TPA overall and per triage category of the prompt.

    `categories[i]` is the triage category of prompt i (INVERT / PUNISH / RETAIN) or None.
    Per-category entries carry the paper's name for what they measure under `"metric"`.
    """
    labs = _labels(labels)
    out: dict[str, Any] = {"overall": agreement(labs), "by_category": {}}
    if categories is None:
        return out
    if len(categories) != len(labs):
        raise ValueError(f"{len(labs)} verdicts but {len(categories)} categories")
    groups: dict[str, list[Label]] = {}
    for lab, cat in zip(labs, categories, strict=True):
        if cat:
            groups.setdefault(str(cat).upper(), []).append(lab)
    for cat in sorted(groups, key=_category_order):
        entry = agreement(groups[cat])
        entry["metric"] = CATEGORY_METRIC.get(cat, f"{cat} agreement")
        out["by_category"][cat] = entry
    return out


def agreement_by_group(labels: Sequence[Label | str], groups: Sequence[str | None]) -> dict[str, Any]:
    """`agreement` per group (e.g. the prompt's harm category S1..S19); rows without a group are left out."""
    if len(groups) != len(labels):
        raise ValueError(f"{len(labels)} verdicts but {len(groups)} groups")
    by: dict[str, list[Label | str]] = {}
    for lab, g in zip(labels, groups, strict=True):
        if g is not None and g != "":
            by.setdefault(str(g), []).append(lab)
    return {g: agreement(by[g]) for g in sorted(by, key=_harm_order)}


def _harm_order(group: str) -> tuple[int, int, str]:
    # S2 before S10: harm categories sort by their number
    numbered = group[:1] == "S" and group[1:].isdigit()
    return (0, int(group[1:]), group) if numbered else (1, 0, group)


def _category_order(cat: str) -> tuple[int, str]:
    order = [c.value for c in Category]
    return (order.index(cat) if cat in order else len(order), cat)


def attack_success_rate(labels: Iterable[Label | str]) -> dict[str, Any]:
    """ASR: share of wrapped harmful prompts whose response the judge finds non-compliant.

    Lower is better. Unknown verdicts are excluded and counted, as for TPA.
    """
    labs = _labels(labels)
    known = [lab for lab in labs if lab is not Label.UNKNOWN]
    out = proportion(sum(lab is Label.NON_COMPLIANT for lab in known), len(known))
    out["unknown"] = len(labs) - len(known)
    out["total"] = len(labs)
    return out


# One pairwise judgement: which of the two responses the judge prefers, after undoing the order
# they were shown in. "a" / "b" name the models, not the positions.
PREFERENCES = ("a", "b", "tie", "unknown")


def combine_orders(a_first: str, b_first: str) -> str:
    """One outcome per prompt from the judgements in both presentation orders.

    Both arguments are already mapped back to models ("a", "b", "tie", "unknown"). A model wins
    when it is preferred in one order and not beaten in the other; opposite preferences are a
    tie, because that is exactly the position bias the second order is there to cancel.
    An unknown in either order makes the prompt unknown.
    """
    for p in (a_first, b_first):
        if p not in PREFERENCES:
            raise ValueError(f"preference must be one of {PREFERENCES}, got {p!r}")
    if "unknown" in (a_first, b_first):
        return "unknown"
    votes = {a_first, b_first} - {"tie"}
    return votes.pop() if len(votes) == 1 else "tie"


def win_rate(a_first: Sequence[str], b_first: Sequence[str]) -> dict[str, Any]:
    """Pairwise win rate of model A over model B from both presentation orders.

    Ties are counted apart (not split half and half): `win` is A's share of decided-or-tied
    prompts, `loss` B's, `tie` the rest; `win_excl_ties` is A's share of the decided ones.
    `order_agreement` is how often the two orders gave the same known outcome: a low value
    means a judge driven by position.
    """
    if len(a_first) != len(b_first):
        raise ValueError(f"{len(a_first)} judgements in one order but {len(b_first)} in the other")
    outcomes = [combine_orders(x, y) for x, y in zip(a_first, b_first, strict=True)]
    counts = {p: outcomes.count(p) for p in PREFERENCES}
    known = counts["a"] + counts["b"] + counts["tie"]
    both_known = [(x, y) for x, y in zip(a_first, b_first, strict=True) if "unknown" not in (x, y)]
    return {
        "win": proportion(counts["a"], known),
        "loss": proportion(counts["b"], known),
        "tie": proportion(counts["tie"], known),
        "win_excl_ties": proportion(counts["a"], counts["a"] + counts["b"]),
        "counts": {"a_wins": counts["a"], "b_wins": counts["b"], "ties": counts["tie"]},
        "unknown": counts["unknown"],
        "total": len(outcomes),
        "order_agreement": proportion(sum(x == y for x, y in both_known), len(both_known)),
        "outcomes": outcomes,
    }


def mc_accuracy(correct: Iterable[bool]) -> dict[str, Any]:
    """Multiple-choice accuracy with its interval."""
    flags = list(correct)
    return proportion(sum(bool(c) for c in flags), len(flags))


def perplexity(nll_sum: float, n_tokens: int) -> dict[str, Any]:
    """Token-level perplexity exp(total NLL / tokens) over a held-out text."""
    if n_tokens <= 0:
        return {"perplexity": None, "nll_per_token": None, "tokens": 0}
    mean = nll_sum / n_tokens
    return {"perplexity": math.exp(mean), "nll_per_token": mean, "tokens": n_tokens}


def utility_summary(
    mc: dict[str, Any] | None = None,
    ppl: dict[str, Any] | None = None,
    lm_eval: dict[str, float | None] | None = None,
) -> dict[str, Any]:
    """One flat view of the utility numbers a run produced: `{name: value}` plus the details."""
    headline: dict[str, float | None] = {}
    if mc is not None:
        headline["mc_accuracy"] = mc.get("rate")
    if ppl is not None:
        headline["perplexity"] = ppl.get("perplexity")
    for task, value in (lm_eval or {}).items():
        headline[f"lm_eval/{task}"] = value
    return {"headline": headline, "mc": mc, "perplexity": ppl, "lm_eval": lm_eval}
