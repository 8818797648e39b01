"""The gold batch of Algorithm 2.

`gold_batch` builds D_gold, whose summed preference loss gives the global alignment direction
g_J of the impact stage (docs/method.md, "Gold batch (Algorithm 2)"):

1. Y_compliant = {y_w : D_R} U {y_l : D_I}
2. B_R = min(|D_R|, floor(B/3)), B_I = min(|D_I|, floor(B/3))
3. B_R RETAIN pairs as (x, y_w, y_l)
4. B_I INVERT pairs flipped, (x, y_l, y_w)
5. if Y_compliant and D_II are non-empty: B - |D_gold| PUNISH pairs as (x, y_random_compliant, y_w)

All sampling is without replacement, so with fewer PUNISH pairs than B - |D_gold| all of them are
taken and the batch is smaller than B; y_random_compliant is drawn uniformly (with replacement)
from Y_compliant for each PUNISH pair.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trace_realign.schema import Category, Prompt
from trace_realign.triage.triage import TriagedPair


@dataclass(frozen=True)
class GoldTriple:
    """One (x, y+, y-) of D_gold, with the category and pair it came from."""

    prompt: Prompt
    y_plus: str
    y_minus: str
    source: Category
    pair_id: str
    # for PUNISH triples: the pair whose compliant response became y+ (it answers another prompt)
    y_plus_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "y_plus": self.y_plus,
            "y_minus": self.y_minus,
            "source": self.source.value,
            "pair_id": self.pair_id,
            "y_plus_from": self.y_plus_from,
        }


def gold_batch(triaged: Sequence[TriagedPair], size: int, seed: int = 0) -> list[GoldTriple]:
    """Algorithm 2: D_gold of at most `size` triples from RETAIN, INVERT and PUNISH pairs."""
    if size < 0:
        raise ValueError(f"gold batch size must be >= 0, got {size}")
    rng = random.Random(seed)
    retain = [r for r in triaged if r.category is Category.RETAIN]
    invert = [r for r in triaged if r.category is Category.INVERT]
    punish = [r for r in triaged if r.category is Category.PUNISH]
    compliant = [(r.pair.chosen, r.id) for r in retain] + [(r.pair.rejected, r.id) for r in invert]

    b_r = min(len(retain), size // 3)
    b_i = min(len(invert), size // 3)
    gold = [
        GoldTriple(r.pair.prompt, r.pair.chosen, r.pair.rejected, Category.RETAIN, r.id)
        for r in rng.sample(retain, b_r)
    ]
    gold += [
        GoldTriple(r.pair.prompt, r.pair.rejected, r.pair.chosen, Category.INVERT, r.id)
        for r in rng.sample(invert, b_i)
    ]
    if compliant and punish:
        for r in rng.sample(punish, min(len(punish), size - len(gold))):
            y_plus, source_id = rng.choice(compliant)
            gold.append(GoldTriple(r.pair.prompt, y_plus, r.pair.chosen, Category.PUNISH, r.id, source_id))
    return gold
