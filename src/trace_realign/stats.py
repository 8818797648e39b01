"""Every statistic the project reports, as pure functions (no model, no files): the one home of
each, used by the evaluation, the comparison, the judge audit and the report alike.

One rate:
- `wilson_interval`, `proportion`: k successes in n with a 95% Wilson interval, which stays inside
  [0, 1] and is exact at 0 and n (where the normal interval collapses).
- `format_estimate`, `format_rate`: the one way a rate or a mean is printed with its interval.

Agreement of two raters:
- `cohen_kappa`, `kappa_with_ci`: Cohen's kappa, with a percentile bootstrap interval.

Methods compared (docs/method.md, "How methods are compared"). The unit of a method-level claim is
the training seed: a method is a distribution over trained models, and one trained model tells
nothing about how far another seed would land. So:
- `cell_estimate`: a table cell, the mean over seeds of each seed's mean over prompts, with a
  t-interval over the seeds (2 or more), or, for one seed, an interval over the prompts that is
  labelled as such (it knows nothing of training variance).
- `seed_test`: A against B on one metric, Welch's t-test on the per-seed means (a one-sample t-test
  against a model that no seed trained, such as `M_ref`). This is the test that decides a claim;
  `benchmarks/stats_calibration.py` and `tests/test_stats.py` simulate two methods drawn from one
  process and check that it calls them different no more than 5% of the time.
- `prompt_test`: a description of these particular trained models, prompt by prompt: the paired
  difference with a bootstrap over prompts (a prompt's rows stay together), and the exact McNemar
  counts where a prompt has one yes/no row. It never decides a claim about the methods.

Outcomes come as a `[seeds][prompts]` table: one row per training seed, one column per prompt (the
same prompt order for every method compared), each value the prompt's outcome in [0, 1] (the mean
of its rows when a prompt has several, as a harmful prompt has plain and wrapped). `None` marks a
missing outcome (an unknown verdict): it is left out of that seed's mean.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

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
    signed: bool = False,
) -> str:
    """A number and its 95% interval, `68.8 [60.2, 76.6]`: the one way every table prints an
    estimate. `scale` 100 shows a share in points, `unit` follows the number (`"%"`), `signed`
    writes a difference's sign (`+3.0 [-3.1, +9.1]`); `n/a` when there is no value."""
    if value is None:
        return "n/a"
    d = digits if ci_digits is None else ci_digits
    sign = "+" if signed else ""
    text = f"{scale * value:{sign}.{digits}f}{unit}"
    if ci:
        text += f" [{scale * ci[0]:{sign}.{d}f}, {scale * ci[1]:{sign}.{d}f}]"
    return text


def format_p(p: float | None) -> str:
    """A p-value as every table prints it: three significant digits, `n/a` when there is none."""
    return "n/a" if p is None else f"{p:.3g}"


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


# ---- a few numbers, one per training seed -------------------------------------------------------


def t_interval(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Mean of `values` (e.g. one rate per training seed) with a Student-t interval (SciPy's quantile).

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
    half = float(scipy_stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "ci95": [mean - half, mean + half], "sd": sd, "n": n}


def seed_test(
    a: Sequence[float | None],
    b: Sequence[float | None],
    *,
    a_fixed: bool = False,
    b_fixed: bool = False,
    level: float = 0.95,
) -> dict[str, Any]:
    """A minus B on one metric with the training seed as the unit: the method-level test.

    `a`, `b`: one value per training seed (each seed's mean over the held-out prompts). Welch's
    t-test (unequal variances) when both have 2 or more seeds; a one-sample t-test of the other's
    seeds against a model no seed trained (`*_fixed`, e.g. `M_ref`: one model, no training noise).
    Returns `{"diff", "ci95", "p", "df", "n_a", "n_b", "test"}`; `p` None, with `reason`, when the
    seeds cannot say (fewer than 2 seeds of a trained model). No spread at all on either side
    (every seed the same value): `p` 1 when the means agree, else None (a t-test is undefined).
    """
    xa = [float(v) for v in a if v is not None]
    xb = [float(v) for v in b if v is not None]
    out: dict[str, Any] = {"diff": None, "ci95": None, "p": None, "df": None, "n_a": len(xa), "n_b": len(xb)}
    if not xa or not xb:
        return {**out, "test": None, "reason": "no outcome"}
    out["diff"] = float(np.mean(xa) - np.mean(xb))
    if len(xa) >= 2 and len(xb) >= 2:
        test = "Welch t over seeds"
    elif len(xa) >= 2 and len(xb) == 1 and b_fixed:
        test = "one-sample t over A's seeds"
    elif len(xb) >= 2 and len(xa) == 1 and a_fixed:
        test = "one-sample t over B's seeds"
    else:
        return {**out, "test": None, "reason": "needs 2 or more training seeds of each trained model"}
    spread = np.var(xa) + np.var(xb)
    if spread == 0:
        p = 1.0 if out["diff"] == 0 else None
        ci = [out["diff"], out["diff"]] if p == 1.0 else None
        return {**out, "ci95": ci, "p": p, "test": test, "reason": "no spread over seeds"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if test.startswith("Welch"):
            res = scipy_stats.ttest_ind(xa, xb, equal_var=False)
            ci = res.confidence_interval(level)
            lo, hi = float(ci.low), float(ci.high)
        elif len(xb) == 1:
            res = scipy_stats.ttest_1samp(xa, xb[0])
            ci = res.confidence_interval(level)
            lo, hi = float(ci.low) - xb[0], float(ci.high) - xb[0]
        else:
            res = scipy_stats.ttest_1samp(xb, xa[0])
            ci = res.confidence_interval(level)
            lo, hi = xa[0] - float(ci.high), xa[0] - float(ci.low)
    return {**out, "ci95": [lo, hi], "p": float(res.pvalue), "df": float(res.df), "test": test}


# ---- a table of outcomes: [seeds][prompts] -----------------------------------------------------


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None stays None and does not count):
    the i-th smallest of m becomes max over j <= i of min(1, (m - j + 1) p_(j)). A family-wise
    error rate of at most alpha when every adjusted p below alpha is called a difference."""
    known = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(known):
        running = max(running, min(1.0, (len(known) - rank) * p))
        out[i] = running
    return out


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


def per_seed_means(outcomes: Outcomes) -> list[float | None]:
    """Each seed's mean over its known prompts (None where it has none)."""
    return [None if np.isnan(v) else float(v) for v in _nanmean(_table(outcomes), 1)]


def _bootstrap_prompts(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of `values` (one per prompt, NaN left out) over prompts drawn with replacement."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, (resamples, values.size))
    boots = _nanmean(values[idx], 1)
    return boots[~np.isnan(boots)]


def prompt_interval(
    values: Sequence[float | None],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[list[float] | None, str]:
    """An interval for one trained model's mean over prompts (prompt sampling only): Wilson when every
    prompt is a single yes/no outcome, else a percentile bootstrap over prompts (a prompt's rows
    stay together, so a harmful prompt asked plain and wrapped counts once)."""
    xs = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    known = xs[~np.isnan(xs)]
    if known.size == 0:
        return None, "none"
    if np.all((known == 0) | (known == 1)):
        ci = wilson_interval(int(known.sum()), int(known.size))
        return (list(ci) if ci else None), f"Wilson over {known.size} prompts (one seed)"
    boots = _bootstrap_prompts(known, resamples, seed)
    tail = (1 - level) / 2
    ci = [float(np.quantile(boots, tail)), float(np.quantile(boots, 1 - tail))]
    return ci, f"bootstrap over {known.size} prompts (one seed)"


def cell_estimate(
    outcomes: Outcomes, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """A table cell: the mean over seeds of each seed's mean over prompts, with its 95% interval.

    Two or more seeds: a t-interval over the per-seed means (training noise, the prompts fixed).
    One seed: `prompt_interval`, prompt sampling only, and `interval` says so. Returns `{"mean",
    "ci95", "interval", "per_seed", "seeds", "prompts"}`.
    """
    table = _table(outcomes)
    s, p = table.shape
    per_seed = per_seed_means(outcomes)
    known = [v for v in per_seed if v is not None]
    out: dict[str, Any] = {
        "mean": None,
        "ci95": None,
        "interval": None,
        "per_seed": per_seed,
        "seeds": s,
        "prompts": p,
    }
    if not known:
        return out
    if len(known) >= 2:
        t = t_interval(known, level)
        return {**out, "mean": t["mean"], "ci95": t["ci95"], "interval": f"t over {len(known)} seeds"}
    row = table[[i for i, v in enumerate(per_seed) if v is not None][0]]
    ci, how = prompt_interval(
        [None if np.isnan(v) else float(v) for v in row], resamples=resamples, seed=seed, level=level
    )
    return {**out, "mean": known[0], "ci95": ci, "interval": how}


# ---- prompt by prompt: a description of these trained models ---------------------------------


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
    return float(min(1.0, scipy_stats.binomtest(min(b, c), n, 0.5).pvalue))


def mcnemar_paired(a: Outcomes, b: Outcomes) -> dict[str, Any] | None:
    """Exact McNemar on the prompts both answered, seed k of A against seed k of B, pooled over the
    seed-matched pairs: counts that describe these trained models. None when an outcome is not a
    single yes/no (a prompt with several rows has no discordant pair to count)."""
    ta, tb = _table(a, "a"), _table(b, "b")
    if ta.shape[1] != tb.shape[1]:
        raise ValueError(f"a has {ta.shape[1]} prompts and b {tb.shape[1]}: a paired test needs the same")
    k = min(ta.shape[0], tb.shape[0])
    x, y = ta[:k], tb[:k]
    both = ~np.isnan(x) & ~np.isnan(y)
    xs, ys = x[both], y[both]
    if not (np.all((xs == 0) | (xs == 1)) and np.all((ys == 0) | (ys == 1))):
        return None
    a_only, b_only = int(((xs == 1) & (ys == 0)).sum()), int(((xs == 0) & (ys == 1)).sum())
    return {
        "a_only": a_only,
        "b_only": b_only,
        "pairs": int(both.sum()),
        "seed_pairs": k,
        "p": mcnemar_exact(a_only, b_only),
    }


def prompt_test(
    a: Outcomes, b: Outcomes, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """A minus B prompt by prompt, for these trained models: each prompt's outcome averaged over the
    seeds of each model, the paired difference with a bootstrap over prompts (interval, two-sided
    p), and the exact McNemar counts where outcomes are single yes/no. A description, not a test of
    the methods: the training seeds are held fixed."""
    ta, tb = _table(a, "a"), _table(b, "b")
    if ta.shape[1] != tb.shape[1]:
        raise ValueError(f"a has {ta.shape[1]} prompts and b {tb.shape[1]}: a paired test needs the same")
    diff = _nanmean(ta, 0) - _nanmean(tb, 0)
    known = diff[~np.isnan(diff)]
    out: dict[str, Any] = {"diff": None, "ci95": None, "p": None, "prompts": int(known.size)}
    if known.size:
        boots = _bootstrap_prompts(known, resamples, seed)
        tail = (1 - level) / 2
        below, above = int((boots <= 0).sum()), int((boots >= 0).sum())
        out.update(
            diff=float(known.mean()),
            ci95=[float(np.quantile(boots, tail)), float(np.quantile(boots, 1 - tail))],
            p=float(min(1.0, 2 * (min(below, above) + 1) / (boots.size + 1))),
        )
    out["mcnemar"] = mcnemar_paired(a, b)
    return out


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


# ---- calibration: does the method-level test keep its false-positive rate? -----------------------


def simulate_methods(
    n_seeds: int,
    *,
    n_prompts: int = 256,
    base_rate: float = 0.78,
    seed_sd: float = 0.047,
    effect: float = 0.0,
    sims: int = 2000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Outcome tables of two methods, `sims` times: `{"a", "b"}`, each `[sims, n_seeds, n_prompts]`.

    Prompts differ in difficulty (logit-normal around `base_rate`, the same prompts for both
    methods, as a held-out set is); each training seed shifts every prompt's logit by one draw, sized
    so the per-seed means spread by about `seed_sd` (0.047: the demo's `trace` seeds, 73.0, 77.7,
    82.4); each outcome is then a coin with the prompt's probability. B is A's process moved by
    `effect` on the mean (0: one and the same process, where any "difference" is a false positive)."""
    rng = np.random.default_rng(seed)
    logit = np.log(base_rate / (1 - base_rate))
    prompts = rng.normal(logit, 2.0, n_prompts)
    # the seed shift whose spread of per-seed means is seed_sd: the slope of the mean rate in the shift
    slope = float(np.mean(_sigmoid(prompts) * (1 - _sigmoid(prompts))))
    tau = seed_sd / slope
    # the shift of B that moves the mean rate by `effect`, found by bisection on the prompts' logits
    lo, hi = -10.0, 10.0
    target = float(np.mean(_sigmoid(prompts))) + effect
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.mean(_sigmoid(prompts + mid)) < target else (lo, mid)
    shift_b = (lo + hi) / 2

    def draw(shift: float) -> np.ndarray:
        u = rng.normal(0.0, tau, (sims, n_seeds, 1))
        p = _sigmoid(prompts[None, None, :] + shift + u)
        return (rng.random((sims, n_seeds, n_prompts)) < p).astype(float)

    return {"a": draw(0.0), "b": draw(shift_b)}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def rejection_rate(
    tables: dict[str, np.ndarray], test: str = "seed", alpha: float = 0.05
) -> dict[str, float]:
    """How often a test calls A and B of `simulate_methods` different at `alpha`, with the Monte-Carlo
    standard error: `seed` (`seed_test`, the method-level test) or `mcnemar` (the pooled prompt-level
    McNemar, which treats seed-matched pairs as independent)."""
    a, b = tables["a"], tables["b"]
    hits = 0
    for k in range(a.shape[0]):
        if test == "seed":
            p = seed_test(a[k].mean(1), b[k].mean(1))["p"]
        elif test == "mcnemar":
            p = (mcnemar_paired(a[k], b[k]) or {}).get("p")
        else:
            raise ValueError(f"unknown test {test!r}: use seed or mcnemar")
        hits += p is not None and p < alpha
    rate = hits / a.shape[0]
    return {"rate": rate, "mc_se": math.sqrt(max(rate * (1 - rate), 1e-12) / a.shape[0]), "sims": a.shape[0]}
