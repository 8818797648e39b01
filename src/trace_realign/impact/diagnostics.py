"""What the impact weights look like, and whether they find what they are meant to find (pure).

- `weight_profile`: the distribution of one set of weights, overall and per triage category: the
  share clamped to zero, quantiles, the effective number of conflicts `(Σw)²/Σw²` (how many
  equally weighted conflicts the weights amount to), the rank correlation of a weight with its
  responses' length, and, for conflicts that also sit in the gold batch, how much higher they
  weigh (their gradient is part of `g_J`, so `⟨g_J, ∇ℓ_i⟩` holds the self-term `‖∇ℓ_i‖²`).
- `separation`: how well weights tell two groups of conflicts apart (e.g. those whose verdict a
  noisy judge flipped against the clean ones): the AUC, the chance that a clean conflict outweighs a
  flipped one, with a bootstrap interval (docs/method.md, "What the weights look like").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as scipy_stats


def effective_n(weights: Sequence[float]) -> float:
    """`(Σw)²/Σw²`: N when every weight is equal, 1 when one conflict holds all the weight."""
    w = np.asarray(weights, dtype=float)
    s2 = float((w * w).sum())
    return float(w.sum() ** 2 / s2) if s2 > 0 else 0.0


def _spread(w: np.ndarray) -> dict[str, Any]:
    if w.size == 0:
        return {"n": 0}
    q = np.quantile(w, [0.1, 0.5, 0.9])
    return {
        "n": int(w.size),
        "zero_share": float((w == 0).mean()),
        "mean": float(w.mean()),
        "p10": float(q[0]),
        "median": float(q[1]),
        "p90": float(q[2]),
        "max": float(w.max()),
        "effective_n": effective_n(w),
    }


def weight_profile(
    weights: Mapping[str, float],
    categories: Mapping[str, str],
    lengths: Mapping[str, int],
    in_gold: set[str] | frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The distribution of `weights` (by conflict id): overall, per category (`categories[id]`),
    its Spearman correlation with the scored responses' length (`lengths[id]`, e.g. characters of
    both), and the mean weight of the conflicts in the gold batch (`in_gold`) against the rest."""
    ids = list(weights)
    w = np.array([weights[i] for i in ids], dtype=float)
    out: dict[str, Any] = {"all": _spread(w), "by_category": {}}
    for cat in sorted({categories[i] for i in ids}):
        out["by_category"][cat] = _spread(np.array([weights[i] for i in ids if categories[i] == cat]))
    n = np.array([lengths[i] for i in ids], dtype=float)
    if w.size >= 3 and np.ptp(w) > 0 and np.ptp(n) > 0:
        rho = scipy_stats.spearmanr(w, n)
        out["length_spearman"] = {"rho": float(rho.statistic), "p": float(rho.pvalue)}
    else:
        out["length_spearman"] = None
    gold = [weights[i] for i in ids if i in in_gold]
    rest = [weights[i] for i in ids if i not in in_gold and categories[i] == "INVERT"]
    out["gold_self_term"] = {
        "in_gold": len(gold),
        "mean_in_gold": float(np.mean(gold)) if gold else None,
        "mean_invert_not_in_gold": float(np.mean(rest)) if rest else None,
    }
    return out


def separation(
    weights: Mapping[str, float],
    positive: set[str] | frozenset[str],
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """AUC of `weights` for telling the ids NOT in `positive` (e.g. clean conflicts) from those in it
    (e.g. flipped): the chance a random clean one outweighs a random flipped one (ties count half;
    0.5 is no separation, 1 perfect down-weighting). 95% percentile bootstrap over conflicts,
    resampling each group apart. None when either group is empty."""
    pos = np.array([w for i, w in weights.items() if i in positive], dtype=float)
    neg = np.array([w for i, w in weights.items() if i not in positive], dtype=float)
    out: dict[str, Any] = {"auc": None, "ci95": None, "flipped": int(pos.size), "clean": int(neg.size)}
    if pos.size == 0 or neg.size == 0:
        return out

    def auc(clean: np.ndarray, flipped: np.ndarray) -> float:
        u = scipy_stats.mannwhitneyu(clean, flipped, alternative="two-sided").statistic
        return float(u / (clean.size * flipped.size))

    rng = np.random.default_rng(seed)
    boots = [
        auc(neg[rng.integers(0, neg.size, neg.size)], pos[rng.integers(0, pos.size, pos.size)])
        for _ in range(resamples)
    ]
    out["auc"] = auc(neg, pos)
    out["ci95"] = [float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))]
    return out
