"""Algorithm 2 (gold batch) composition and the category-stratified split."""

from __future__ import annotations

from collections import Counter

import pytest

from trace_realign.impact.gold import gold_batch
from trace_realign.schema import Category, PreferencePair
from trace_realign.triage.triage import TriagedPair

BITS = {
    Category.RETAIN: (1, 0),
    Category.INVERT: (0, 1),
    Category.PUNISH: (0, 0),
    Category.UNKNOWN: (None, 1),
}


def rows(**counts: int) -> list[TriagedPair]:
    out = []
    for name, n in counts.items():
        cat = Category[name.upper()]
        for i in range(n):
            pair = PreferencePair(f"{name} prompt {i}", f"{name} w{i}", f"{name} l{i}")
            out.append(TriagedPair(pair, cat, *BITS[cat]))
    return out


def test_composition_follows_algorithm_2():
    triaged = rows(retain=10, invert=10, punish=10, unknown=5)
    by_id = {r.id: r for r in triaged}
    gold = gold_batch(triaged, size=14, seed=0)
    assert Counter(g.source for g in gold) == {Category.RETAIN: 4, Category.INVERT: 4, Category.PUNISH: 6}
    compliant = {r.pair.chosen for r in triaged if r.category is Category.RETAIN} | {
        r.pair.rejected for r in triaged if r.category is Category.INVERT
    }
    for g in gold:
        src = by_id[g.pair_id]
        assert src.category is g.source and g.prompt == src.pair.prompt
        if g.source is Category.RETAIN:
            assert (g.y_plus, g.y_minus) == (src.pair.chosen, src.pair.rejected)
        elif g.source is Category.INVERT:
            assert (g.y_plus, g.y_minus) == (src.pair.rejected, src.pair.chosen)  # flipped
        else:
            assert g.y_minus == src.pair.chosen and g.y_plus in compliant
            donor = by_id[g.y_plus_from]
            assert g.y_plus == (
                donor.pair.chosen if donor.category is Category.RETAIN else donor.pair.rejected
            )
    assert len({g.pair_id for g in gold}) == len(gold)  # sampled without replacement
    assert gold == gold_batch(triaged, size=14, seed=0)
    assert gold != gold_batch(triaged, size=14, seed=1)


@pytest.mark.parametrize(
    ("counts", "size", "expected"),
    [
        ({"retain": 1, "invert": 0, "punish": 20}, 9, {Category.RETAIN: 1, Category.PUNISH: 8}),
        (
            {"retain": 5, "invert": 5, "punish": 2},
            12,
            {Category.RETAIN: 4, Category.INVERT: 4, Category.PUNISH: 2},
        ),
        ({"retain": 0, "invert": 0, "punish": 5}, 6, {}),  # no compliant response to pair PUNISH with
        ({"retain": 5, "invert": 5, "punish": 0}, 30, {Category.RETAIN: 5, Category.INVERT: 5}),
        ({"retain": 0, "invert": 3, "punish": 3}, 2, {Category.PUNISH: 2}),  # floor(2/3) = 0
    ],
)
def test_sizes_when_categories_are_short(counts, size, expected):
    gold = gold_batch(rows(**counts), size=size, seed=3)
    assert Counter(g.source for g in gold) == expected
    assert len(gold) <= size
