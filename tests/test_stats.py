"""The comparison's statistics against numbers worked out by hand (and scipy where it is installed)."""

from __future__ import annotations

import math

import pytest

from trace_realign.stats import (
    cell_estimate,
    cohen_kappa,
    compare_paired,
    kappa_with_ci,
    mcnemar_exact,
    mcnemar_paired,
    paired_bootstrap,
    proportion,
    t_interval,
    t_quantile,
    wilson_interval,
)


def test_wilson_at_zero_successes_is_z2_over_n_plus_z2():
    z2 = 1.959963984540054**2
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(z2 / (10 + z2))
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_t_quantiles_from_their_closed_forms():
    # df 1 is the Cauchy distribution: the 0.975 quantile is tan(0.475 pi)
    assert t_quantile(0.975, 1) == pytest.approx(math.tan(0.475 * math.pi), rel=1e-9)
    # df 2: t = (2p - 1) sqrt(2 / (4 p (1 - p)))
    p = 0.975
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) * math.sqrt(2 / (4 * p * (1 - p))), rel=1e-9)
    # textbook table values
    assert t_quantile(0.975, 4) == pytest.approx(2.7764, abs=1e-4)
    assert t_quantile(0.975, 10) == pytest.approx(2.2281, abs=1e-4)
    assert t_quantile(0.975, 30) == pytest.approx(2.0423, abs=1e-4)
    with pytest.raises(ValueError):
        t_quantile(0.975, 0)


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 5, 7, 8, 19, 40):
        for p in (0.9, 0.975, 0.995):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-8)


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


def test_paired_bootstrap_degenerate_cases():
    same = [[1, 0, 1, 1, 0, 0, 1, 0]]
    out = paired_bootstrap(same, same, resamples=500)
    assert out["diff"] == 0 and out["ci95"] == [0.0, 0.0] and out["p"] == 1.0
    out = paired_bootstrap([[1] * 20], [[0] * 20], resamples=500)
    assert out["diff"] == 1 and out["ci95"] == [1.0, 1.0]
    assert out["p"] == pytest.approx(2 / 501)  # never exactly 0


def test_paired_bootstrap_matches_the_normal_approximation_of_a_paired_difference():
    # 100 prompts: 30 only A gets right, 10 only B, 60 concordant. d_i in {+1, -1, 0}:
    # mean 0.2, var(d) = 0.4 - 0.04 = 0.36, so se = 0.06 and the interval is about 0.2 +- 0.118
    a = [1] * 30 + [0] * 10 + [1] * 30 + [0] * 30
    b = [0] * 30 + [1] * 10 + [1] * 30 + [0] * 30
    out = paired_bootstrap([a], [b], resamples=8000, seed=1)
    assert out["diff"] == pytest.approx(0.2)
    lo, hi = out["ci95"]
    assert lo == pytest.approx(0.2 - 1.96 * 0.06, abs=0.015)
    assert hi == pytest.approx(0.2 + 1.96 * 0.06, abs=0.015)
    assert out["p"] < 0.01
    # unpaired, the same two rates would not be told apart this well: the pairing is what counts
    both = compare_paired([a], [b], resamples=2000)
    assert both["mcnemar"]["a_only"] == 30 and both["mcnemar"]["b_only"] == 10
    assert both["mcnemar"]["p"] == pytest.approx(mcnemar_exact(30, 10))


def test_paired_bootstrap_with_seeds_widens_with_seed_spread():
    base = [1, 0] * 20
    steady = [base, base, base]
    # the same mean over seeds, but seeds that disagree with each other
    shaky = [[1] * 40, [0] * 40, base]
    tight = paired_bootstrap(steady, [[0] * 40], resamples=2000)
    wide = paired_bootstrap(shaky, [[0] * 40], resamples=2000)
    assert tight["diff"] == pytest.approx(wide["diff"]) == pytest.approx(0.5)
    assert (wide["ci95"][1] - wide["ci95"][0]) > 2 * (tight["ci95"][1] - tight["ci95"][0])


def test_cell_estimate_one_seed_is_a_bootstrap_over_prompts():
    out = cell_estimate([[1] * 32 + [0] * 32], resamples=8000)
    assert out["mean"] == 0.5 and out["seeds"] == 1 and out["prompts"] == 64
    # close to the binomial interval 0.5 +- 1.96 * sqrt(0.25 / 64) = 0.5 +- 0.1225
    assert out["ci95"][0] == pytest.approx(0.5 - 0.1225, abs=0.015)
    assert out["ci95"][1] == pytest.approx(0.5 + 0.1225, abs=0.015)
    assert out["seed_t"]["ci95"] is None


def test_cell_estimate_over_seeds_leaves_missing_outcomes_out():
    out = cell_estimate([[1, 1, None, 0], [1, 0, 0, 0], [1, 1, 1, 1]], resamples=500)
    assert out["per_seed"] == pytest.approx([2 / 3, 0.25, 1.0])
    assert out["mean"] == pytest.approx((2 / 3 + 0.25 + 1.0) / 3)
    assert out["seed_t"]["n"] == 3 and out["seed_t"]["ci95"] is not None
    assert 0 <= out["ci95"][0] <= out["mean"] <= out["ci95"][1] <= 1
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
