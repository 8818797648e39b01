"""The comparison's statistics against numbers worked out by hand (and scipy where it is installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trace_realign.stats import (
    cell_estimate,
    cohen_kappa,
    holm,
    kappa_with_ci,
    mcnemar_exact,
    mcnemar_paired,
    prompt_test,
    proportion,
    rejection_rate,
    seed_test,
    simulate_methods,
    t_interval,
    wilson_interval,
)


def test_wilson_at_zero_successes_is_z2_over_n_plus_z2():
    z2 = 1.959963984540054**2
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(z2 / (10 + z2))
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_t_interval_by_hand():
    out = t_interval([0.5, 0.6, 0.7])
    assert out["mean"] == pytest.approx(0.6) and out["sd"] == pytest.approx(0.1) and out["n"] == 3
    half = 4.302652729911275 * 0.1 / math.sqrt(3)
    assert out["ci95"] == pytest.approx([0.6 - half, 0.6 + half], rel=1e-6)
    single = t_interval([0.4])
    assert single["mean"] == 0.4 and single["ci95"] is None
    assert t_interval([])["mean"] is None


def test_mcnemar_exact_by_hand():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)  # both tails of Bin(5, 1/2) at 0 and 5
    assert mcnemar_exact(6, 1) == pytest.approx(2 * (1 + 7) / 128)
    assert mcnemar_exact(3, 3) == 1.0  # capped
    assert mcnemar_exact(10, 2) == mcnemar_exact(2, 10)
    # 2 of 12 discordant: (1 + 12 + 66) / 4096, doubled
    assert mcnemar_exact(2, 10) == pytest.approx(2 * 79 / 4096)


def test_mcnemar_paired_counts_discordant_prompts_and_pools_matched_seeds():
    a = [[1, 1, 0, 1, None], [1, 0, 0, 1, 1]]
    b = [[0, 1, 1, 0, 1], [0, 0, 0, 1, 0], [1, 1, 1, 1, 1]]  # a third seed has no partner: unused
    out = mcnemar_paired(a, b)
    # seed 0: prompts 0 and 3 A only, prompt 2 B only, prompt 4 missing; seed 1: prompts 0 and 4 A only
    assert (out["a_only"], out["b_only"], out["pairs"], out["seed_pairs"]) == (4, 1, 9, 2)
    assert out["p"] == pytest.approx(mcnemar_exact(4, 1))
    with pytest.raises(ValueError):
        mcnemar_paired([[1, 0]], [[1, 0, 1]])


def test_prompt_test_degenerate_cases():
    same = [[1, 0, 1, 1, 0, 0, 1, 0]]
    out = prompt_test(same, same, resamples=500)
    assert out["diff"] == 0 and out["ci95"] == [0.0, 0.0] and out["p"] == 1.0
    out = prompt_test([[1] * 20], [[0] * 20], resamples=500)
    assert out["diff"] == 1 and out["ci95"] == [1.0, 1.0]
    assert out["p"] == pytest.approx(2 / 501)  # never exactly 0


def test_prompt_test_matches_the_normal_approximation_of_a_paired_difference():
    # 100 prompts: 30 only A gets right, 10 only B, 60 concordant. d_i in {+1, -1, 0}:
    # mean 0.2, var(d) = 0.4 - 0.04 = 0.36, so se = 0.06 and the interval is about 0.2 +- 0.118
    a = [1] * 30 + [0] * 10 + [1] * 30 + [0] * 30
    b = [0] * 30 + [1] * 10 + [1] * 30 + [0] * 30
    out = prompt_test([a], [b], resamples=8000, seed=1)
    assert out["diff"] == pytest.approx(0.2)
    lo, hi = out["ci95"]
    assert lo == pytest.approx(0.2 - 1.96 * 0.06, abs=0.015)
    assert hi == pytest.approx(0.2 + 1.96 * 0.06, abs=0.015)
    assert out["p"] < 0.01
    assert out["mcnemar"]["a_only"] == 30 and out["mcnemar"]["b_only"] == 10
    assert out["mcnemar"]["p"] == pytest.approx(mcnemar_exact(30, 10))


def test_a_prompt_with_several_rows_keeps_them_together():
    """A harmful prompt asked plain and under two wrappers is one prompt: its outcome is the mean of
    its rows, McNemar (which needs one yes/no per prompt) is not computed, and the one-seed interval
    is a bootstrap over prompts, not a Wilson interval over rows."""
    a = [[1.0, 2 / 3, 0.0, 1 / 3]]
    b = [[0.0, 1 / 3, 0.0, 0.0]]
    out = prompt_test(a, b, resamples=500)
    assert out["mcnemar"] is None and out["prompts"] == 4
    cell = cell_estimate(a, resamples=500)
    assert cell["interval"] == "bootstrap over 4 prompts (one seed)"
    assert cell_estimate([[1, 0, 1, 1]])["interval"] == "Wilson over 4 prompts (one seed)"


def test_seed_test_is_welch_by_hand():
    a, b = [0.73, 0.777, 0.824], [0.82, 0.762, 0.824]
    out = seed_test(a, b)
    ma, mb = sum(a) / 3, sum(b) / 3
    va = sum((x - ma) ** 2 for x in a) / 2
    vb = sum((x - mb) ** 2 for x in b) / 2
    se = math.sqrt(va / 3 + vb / 3)
    df = se**4 / ((va / 3) ** 2 / 2 + (vb / 3) ** 2 / 2)  # Welch-Satterthwaite
    assert out["diff"] == pytest.approx(ma - mb) and out["df"] == pytest.approx(df)
    t = (ma - mb) / se
    from scipy import stats as scipy_stats

    assert out["p"] == pytest.approx(2 * scipy_stats.t.sf(abs(t), df))
    half = scipy_stats.t.ppf(0.975, df) * se
    assert out["ci95"] == pytest.approx([ma - mb - half, ma - mb + half])
    assert out["test"] == "Welch t over seeds"


def test_seed_test_against_a_model_no_seed_trained_and_where_seeds_cannot_say():
    one = seed_test([0.70, 0.75, 0.80], [0.60], b_fixed=True)
    assert one["test"] == "one-sample t over A's seeds" and one["diff"] == pytest.approx(0.15)
    assert one["ci95"][0] < 0.15 < one["ci95"][1] and one["p"] < 0.05
    # a trained model with one seed: its training variance is unknown, so no method-level test
    none = seed_test([0.70, 0.75, 0.80], [0.60])
    assert none["p"] is None and "2 or more" in none["reason"]
    flat = seed_test([0.0, 0.0, 0.0], [0.0, 0.0])
    assert flat["p"] == 1.0 and flat["diff"] == 0.0


@pytest.mark.parametrize("n_seeds", [3, 5])
def test_the_seed_test_keeps_its_false_positive_rate_where_the_prompt_level_test_does_not(n_seeds):
    """Two methods drawn from one and the same process (256 prompts, per-seed spread like the demo's
    trace seeds): the method-level test calls them different at most 5% of the time, within
    Monte-Carlo error; the pooled McNemar, which treats seed-matched prompts as independent, does so
    far more often, which is why it only describes trained models and never decides a claim."""
    tables = simulate_methods(n_seeds, sims=2000, seed=n_seeds)
    seed = rejection_rate(tables, "seed")
    assert seed["rate"] <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / seed["sims"]), seed
    assert rejection_rate(tables, "mcnemar")["rate"] > 0.2


def test_simulated_seed_spread_and_effect_are_what_was_asked():
    tables = simulate_methods(5, sims=400, effect=0.08, seed=1)
    per_seed = tables["a"].mean(2)
    assert per_seed.std(axis=1, ddof=1).mean() == pytest.approx(0.047, abs=0.006)
    assert (tables["b"].mean() - tables["a"].mean()) == pytest.approx(0.08, abs=0.01)


def test_cell_estimate_one_seed_is_a_wilson_interval_over_prompts():
    out = cell_estimate([[1] * 32 + [0] * 32])
    assert out["mean"] == 0.5 and out["seeds"] == 1 and out["prompts"] == 64
    assert out["ci95"] == pytest.approx(list(wilson_interval(32, 64)))
    assert out["interval"] == "Wilson over 64 prompts (one seed)"


def test_cell_estimate_over_seeds_is_a_t_interval_and_leaves_missing_outcomes_out():
    out = cell_estimate([[1, 1, None, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    assert out["per_seed"] == pytest.approx([2 / 3, 0.25, 1.0])
    t = t_interval([2 / 3, 0.25, 1.0])
    assert out["mean"] == pytest.approx(t["mean"]) and out["ci95"] == pytest.approx(t["ci95"])
    assert out["interval"] == "t over 3 seeds"
    assert cell_estimate([[None, None]])["mean"] is None
    with pytest.raises(ValueError):
        cell_estimate([[1, 0], [1]])


def test_wilson_matches_the_textbook_formula():
    # Wilson (1927) for 8 of 10 at z = 1.96: [0.4902, 0.9433] (Newcombe 1998, method 3)
    w = proportion(8, 10)
    assert w["rate"] == 0.8
    assert w["ci95"][0] == pytest.approx(0.4902, abs=1e-4) and w["ci95"][1] == pytest.approx(0.9433, abs=1e-4)
    assert proportion(0, 0)["rate"] is None
    lo, hi = proportion(0, 20)["ci95"]
    assert lo == 0.0 and 0 < hi < 0.17  # never a zero-width interval at the edge


def test_kappa_matches_a_hand_computed_table():
    # 2x2 table: yes/yes 20, yes/no 5, no/yes 10, no/no 15 (n 50): p_o 0.7, p_e 0.5*0.6+0.5*0.4 = 0.5
    a = ["y"] * 25 + ["n"] * 25
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(a, b) == pytest.approx((0.7 - 0.5) / (1 - 0.5))
    assert cohen_kappa(a, a) == 1.0
    assert cohen_kappa(["y"] * 5, ["y"] * 5) is None  # chance agreement 1: undefined, not 0 or 1
    k = kappa_with_ci(a, b)
    lo, hi = k["ci95"]
    assert lo < k["kappa"] < hi and 0.1 < hi - lo < 0.7
    assert kappa_with_ci(a, b) == k  # the bootstrap is seeded: the same interval every run


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 of m = 4: 4 x 0.005, 3 x 0.01, 2 x 0.03, then max(0.06, 1 x 0.04)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # a missing p stays missing and does not enlarge the family; nothing exceeds 1
    assert holm([None, 0.02, 0.5]) == [None, pytest.approx(0.04), pytest.approx(0.5)]
    assert holm([0.6, 0.7]) == [1.0, 1.0] and holm([]) == []


def test_holm_keeps_the_family_wise_error_rate_of_independent_null_tests():
    rng = np.random.default_rng(0)
    families = rng.random((4000, 9))  # nine true nulls per family, as the comparison's tests of one metric
    any_rejected = np.mean([min(holm(list(f))) < 0.05 for f in families])
    assert any_rejected <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 4000)
    unadjusted = np.mean((families < 0.05).any(axis=1))
    assert unadjusted > 0.3  # without it one of nine null tests "wins" about 37% of the time
