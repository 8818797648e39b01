"""Every statistic the project reports, as pure functions (no model, no files): the one home of
each, used by the evaluation, the comparison, the judge audit and the report alike.

One rate:
- `wilson_interval`, `proportion`: k successes in n with a 95% Wilson interval, which stays inside
  [0, 1] and is exact at 0 and n (where the normal interval collapses).
- `format_estimate`, `format_rate`: the one way a rate or a mean is printed with its interval.

Agreement of two raters:
- `cohen_kappa`, `kappa_with_ci`: Cohen's kappa, with a percentile bootstrap interval.

Means over training seeds and paired comparisons:
- `t_interval`: the mean of a few numbers (one per training seed) with a Student-t 95% interval;
  it measures training noise only, the held-out prompts being fixed.
- `cell_estimate`: the mean of a table cell over seeds and prompts with a two-stage bootstrap 95%
  interval (seeds resampled, then prompts), so one interval carries both sources of variation:
  which seed trained the model and which prompts were drawn for the test. With one seed it is a
  bootstrap over prompts, so every cell of a table is computed the same way.
- `mcnemar_exact`: the exact two-sided McNemar test of two methods on the same prompts (a
  binomial test on the discordant pairs).
- `paired_bootstrap`: the difference of two methods on the same prompts, with a 95% interval and
  a two-sided p-value, resampling prompts jointly for both methods (the pairing) and seeds
  independently for each.

Outcomes come as a `[seeds][prompts]` table of 0/1 (or any numbers): one row per training seed,
one column per prompt, the columns in the same prompt order for every method compared. `None`
marks a missing outcome (an unknown verdict): it is left out of that seed's mean.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Z95 = 1.959963984540054
BOOTSTRAP_RESAMPLES = 4000

Outcomes = Sequence[Sequence[float | int | bool | None]]


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval for a binomial proportion; None when there are no trials.

    Exact at the edges: 0 successes give a lower end of exactly 0 and n successes an upper end of
    exactly 1 (the closed form leaves them about 1e-17 off)."""
    if n <= 0:
        return None
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, {n}], got {successes}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def proportion(successes: int, n: int) -> dict[str, Any]:
    """`{"rate", "ci95", "k", "n"}`: a rate with its Wilson interval (both None when n is 0)."""
    ci = wilson_interval(successes, n)
    return {"rate": successes / n if n else None, "ci95": list(ci) if ci else None, "k": successes, "n": n}


# ---- printing ----------------------------------------------------------------------------------


def format_estimate(
    value: float | None,
    ci: Sequence[float] | None = None,
    *,
    scale: float = 100.0,
    digits: int = 1,
    unit: str = "",
    ci_digits: int | None = None,
) -> str:
    """A number and its 95% interval, `68.8 [60.2, 76.6]`: the one way every table prints an
    estimate. `scale` 100 shows a share in points, `unit` follows the number (`"%"`); `n/a` when
    there is no value."""
    if value is None:
        return "n/a"
    d = digits if ci_digits is None else ci_digits
    text = f"{scale * value:.{digits}f}{unit}"
    if ci:
        text += f" [{scale * ci[0]:.{d}f}, {scale * ci[1]:.{d}f}]"
    return text


def format_rate(entry: Mapping[str, Any] | None, *, interval: bool = True, counts: bool = False) -> str:
    """A `proportion` entry as `12.5% [4.2, 30.1]`, with `(3/24)` after it when `counts` (and the
    unknown verdicts the entry records, `(3/24, 2 unknown)`)."""
    if not entry or entry.get("rate") is None:
        return "n/a"
    text = format_estimate(entry["rate"], entry.get("ci95") if interval else None, unit="%")
    if counts:
        unknown = f", {entry['unknown']} unknown" if entry.get("unknown") else ""
        text += f" ({entry['k']}/{entry['n']}{unknown})"
    return text


# ---- Student t ---------------------------------------------------------------------------------


def _t_two_sided_mass(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with an integer number of degrees of freedom.

    The closed forms of Abramowitz and Stegun 26.7.3 / 26.7.4 in theta = atan(t / sqrt(df)):
    a finite sum of powers of cos(theta), exact for every integer df (no special functions needed).
    """
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2 == 1:
        total, term = 1.0, 1.0
        for k in range(1, (df - 1) // 2):
            term *= (2 * k) / (2 * k + 1) * c * c
            total += term
        return (2 / math.pi) * (theta + (s * c * total if df > 1 else 0.0))
    total, term = 1.0, 1.0
    for k in range(1, df // 2):
        term *= (2 * k - 1) / (2 * k) * c * c
        total += term
    return s * total


def t_quantile(p: float, df: int) -> float:
    """The p-quantile (p > 0.5) of Student's t with integer `df` >= 1, by bisection on the exact CDF."""
    if not 0.5 < p < 1:
        raise ValueError(f"p must lie in (0.5, 1), got {p}")
    if df < 1 or int(df) != df:
        raise ValueError(f"df must be a positive integer, got {df}")
    target = 2 * p - 1
    lo, hi = 0.0, 1.0
    while _t_two_sided_mass(hi, int(df)) < target:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if _t_two_sided_mass(mid, int(df)) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def t_interval(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Mean of `values` (e.g. one rate per training seed) with a Student-t interval.

    `{"mean", "ci95", "sd", "n"}`; with a single value the interval is None (no spread to measure).
    """
    xs = [float(v) for v in values if v is not None]
    n = len(xs)
    if n == 0:
        return {"mean": None, "ci95": None, "sd": None, "n": 0}
    mean = sum(xs) / n
    if n == 1:
        return {"mean": mean, "ci95": None, "sd": None, "n": 1}
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "ci95": [mean - half, mean + half], "sd": sd, "n": n}


# ---- bootstrap ---------------------------------------------------------------------------------


def _table(outcomes: Outcomes, what: str = "outcomes") -> np.ndarray:
    """A float [seeds, prompts] array with NaN for missing outcomes."""
    rows = [list(r) for r in outcomes]
    if not rows or not rows[0]:
        raise ValueError(f"{what}: need at least one seed and one prompt")
    width = len(rows[0])
    if any(len(r) != width for r in rows):
        raise ValueError(f"{what}: every seed needs an outcome for the same {width} prompts")
    return np.array([[np.nan if v is None else float(v) for v in r] for r in rows], dtype=float)


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    """Mean over `axis` leaving NaN out; NaN (without a warning) where everything is NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def _means(table: np.ndarray, seed_idx: np.ndarray, prompt_idx: np.ndarray) -> np.ndarray:
    """Mean over resampled seeds of the per-seed mean over resampled prompts, one per resample.

    `seed_idx` is [B, S], `prompt_idx` [B, P]; missing outcomes are left out of each seed's mean.
    """
    picked = table[seed_idx[:, :, None], prompt_idx[:, None, :]]  # [B, S, P]
    per_seed = _nanmean(picked, 2)  # a seed whose resample is all missing: NaN
    return _nanmean(per_seed, 1)


def _point(table: np.ndarray) -> float | None:
    per_seed = _nanmean(table, 1)
    per_seed = per_seed[~np.isnan(per_seed)]
    return float(per_seed.mean()) if per_seed.size else None


def cell_estimate(
    outcomes: Outcomes, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """Mean of a cell over seeds (each seed's mean over prompts) with a two-stage bootstrap interval.

    Returns `{"mean", "ci95", "per_seed", "seeds", "prompts", "seed_t"}`; `seed_t` is the
    t-interval over the per-seed means (training noise alone) for comparison.
    """
    table = _table(outcomes)
    s, p = table.shape
    rng = np.random.default_rng(seed)
    per_seed = [None if np.isnan(v) else float(v) for v in _nanmean(table, 1)]
    mean = _point(table)
    if mean is None:
        return {"mean": None, "ci95": None, "per_seed": per_seed, "seeds": s, "prompts": p, "seed_t": None}
    boots = _means(table, rng.integers(0, s, (resamples, s)), rng.integers(0, p, (resamples, p)))
    boots = boots[~np.isnan(boots)]
    tail = (1 - level) / 2
    ci = [float(np.quantile(boots, tail)), float(np.quantile(boots, 1 - tail))]
    return {
        "mean": mean,
        "ci95": ci,
        "per_seed": per_seed,
        "seeds": s,
        "prompts": p,
        "seed_t": t_interval([v for v in per_seed if v is not None]),
    }


def paired_bootstrap(
    a: Outcomes,
    b: Outcomes,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Mean of A minus mean of B on the same prompts, with a bootstrap interval and p-value.

    Each resample draws one set of prompt indices for both methods (the pairing: a hard prompt is
    hard for both) and the seeds of each method independently (their training runs are not
    paired). `p` is two-sided: twice the smaller share of resampled differences on either side of
    0, counted as (k + 1) / (resamples + 1) so it is never exactly 0.
    """
    ta, tb = _table(a, "a"), _table(b, "b")
    if ta.shape[1] != tb.shape[1]:
        raise ValueError(f"a has {ta.shape[1]} prompts and b {tb.shape[1]}: a paired test needs the same")
    pa, pb = _point(ta), _point(tb)
    if pa is None or pb is None:
        return {"diff": None, "ci95": None, "p": None, "resamples": 0}
    rng = np.random.default_rng(seed)
    n_prompts = ta.shape[1]
    prompts = rng.integers(0, n_prompts, (resamples, n_prompts))
    da = _means(ta, rng.integers(0, ta.shape[0], (resamples, ta.shape[0])), prompts)
    db = _means(tb, rng.integers(0, tb.shape[0], (resamples, tb.shape[0])), prompts)
    diffs = da - db
    diffs = diffs[~np.isnan(diffs)]
    tail = (1 - level) / 2
    below = int((diffs <= 0).sum())
    above = int((diffs >= 0).sum())
    p = min(1.0, 2 * (min(below, above) + 1) / (diffs.size + 1))
    return {
        "diff": pa - pb,
        "ci95": [float(np.quantile(diffs, tail)), float(np.quantile(diffs, 1 - tail))],
        "p": p,
        "resamples": int(diffs.size),
    }


# ---- McNemar -----------------------------------------------------------------------------------


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts.

    `b`: prompts where A succeeds and B fails; `c`: the reverse. Under the null each discordant
    prompt goes either way with probability 1/2, so p = min(1, 2 P(X <= min(b, c))), X ~ Bin(b + c, 1/2).
    No discordant pair at all gives p = 1.
    """
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be >= 0")
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def mcnemar_paired(a: Outcomes, b: Outcomes) -> dict[str, Any]:
    """Exact McNemar on the prompts both methods answered, seed k of A against seed k of B.

    With several seeds the seed-matched pairs are pooled (k up to the smaller number of seeds):
    exact under the null that A and B are exchangeable on every (prompt, seed) pair; the paired
    bootstrap is the test that also lets the seeds vary. Outcomes are read as success when > 0.5.
    """
    ta, tb = _table(a, "a"), _table(b, "b")
    if ta.shape[1] != tb.shape[1]:
        raise ValueError(f"a has {ta.shape[1]} prompts and b {tb.shape[1]}: a paired test needs the same")
    k = min(ta.shape[0], tb.shape[0])
    x, y = ta[:k], tb[:k]
    both = ~np.isnan(x) & ~np.isnan(y)
    xa, yb = x[both] > 0.5, y[both] > 0.5
    a_only, b_only = int((xa & ~yb).sum()), int((~xa & yb).sum())
    return {
        "a_only": a_only,
        "b_only": b_only,
        "pairs": int(both.sum()),
        "seed_pairs": k,
        "p": mcnemar_exact(a_only, b_only),
    }


def compare_paired(
    a: Outcomes, b: Outcomes, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> dict[str, Any]:
    """Both paired tests of A against B: `{"bootstrap": paired_bootstrap, "mcnemar": mcnemar_paired}`."""
    return {
        "bootstrap": paired_bootstrap(a, b, resamples=resamples, seed=seed),
        "mcnemar": mcnemar_paired(a, b),
    }


def cohen_kappa(a: Sequence[Any], b: Sequence[Any]) -> float | None:
    """Cohen's kappa of two raters' labels on the same items; None when undefined (no items, or
    both raters give one and the same label throughout, so chance agreement is 1)."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} labels against {len(b)}")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    labels = set(a) | set(b)
    chance = sum((sum(x == lab for x in a) / n) * (sum(y == lab for y in b) / n) for lab in labels)
    if chance >= 1:
        return None
    return (observed - chance) / (1 - chance)


def kappa_with_ci(a: Sequence[Any], b: Sequence[Any], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Kappa and its 95% percentile bootstrap interval over items (resamples where kappa is
    undefined are dropped; it collapses to [1, 1] at perfect agreement)."""
    k = cohen_kappa(a, b)
    n = len(a)
    out: dict[str, Any] = {
        "kappa": k,
        "n": n,
        "ci95": None,
        "interval": f"percentile bootstrap, {n_boot} resamples",
    }
    if k is None or n < 2:
        return out
    codes = {c: i for i, c in enumerate(sorted(set(a) | set(b), key=str))}
    xa = np.array([codes[x] for x in a])
    xb = np.array([codes[y] for y in b])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    ra, rb = xa[idx], xb[idx]
    p_o = (ra == rb).mean(axis=1)
    p_e = sum((ra == c).mean(axis=1) * (rb == c).mean(axis=1) for c in codes.values())
    ok = p_e < 1.0
    kappas = (p_o[ok] - p_e[ok]) / (1 - p_e[ok])
    if kappas.size:
        out["ci95"] = [float(np.percentile(kappas, 2.5)), float(np.percentile(kappas, 97.5))]
    return out


def format_kappa(k: Mapping[str, Any]) -> str:
    """`{"kappa", "ci95"}` as `0.812 [0.700, 0.905]`, or `undefined`."""
    text = "undefined" if k.get("kappa") is None else f"{k['kappa']:.3f}"
    if k.get("ci95"):
        text += f" [{k['ci95'][0]:.3f}, {k['ci95'][1]:.3f}]"
    return text
