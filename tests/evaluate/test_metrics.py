"""Metrics on hand-made verdicts: every number checked against a count done by hand."""

from __future__ import annotations

import math

import pytest

from trace_realign.evaluate.metrics import (
    agreement,
    attack_success_rate,
    combine_orders,
    mc_accuracy,
    perplexity,
    target_policy_agreement,
    utility_summary,
    win_rate,
)
from trace_realign.schema import Label
from trace_realign.stats import wilson_interval

C, N, U = Label.COMPLIANT, Label.NON_COMPLIANT, Label.UNKNOWN


def test_wilson_matches_textbook_values():
    # 8 of 10 at z = 1.96: the textbook interval is (0.4902, 0.9433)
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4)
    assert hi == pytest.approx(0.9433, abs=1e-4)
    # edges stay inside [0, 1] and are not degenerate, unlike the normal interval
    lo0, hi0 = wilson_interval(0, 5)
    assert lo0 == 0.0 and 0.4 < hi0 < 0.5
    lo5, hi5 = wilson_interval(5, 5)
    assert hi5 == pytest.approx(1.0) and 0.5 < lo5 < 0.6
    assert wilson_interval(0, 0) is None


def test_wilson_against_the_closed_form():
    k, n, z = 37, 91, 1.959963984540054
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    assert wilson_interval(k, n) == pytest.approx((centre - half, centre + half))


def test_unknown_verdicts_are_reported_and_excluded_never_compliant():
    a = agreement([C, C, N, U, U, "compliant"])
    assert a["total"] == 6 and a["unknown"] == 2
    assert a["k"] == 3 and a["n"] == 4
    assert a["rate"] == pytest.approx(0.75)
    only_unknown = agreement([U, U])
    assert only_unknown["rate"] is None and only_unknown["ci95"] is None and only_unknown["unknown"] == 2


def test_tpa_per_category_names_what_it_measures():
    labels = [C, N, U, C, C, N, N, C]
    cats = ["INVERT", "INVERT", "INVERT", "punish", "RETAIN", "RETAIN", None, "RETAIN"]
    tpa = target_policy_agreement(labels, cats)
    assert tpa["overall"]["rate"] == pytest.approx(4 / 7)
    assert tpa["overall"]["unknown"] == 1
    by = tpa["by_category"]
    assert list(by) == ["INVERT", "PUNISH", "RETAIN"]
    assert by["INVERT"]["metric"] == "INVERT success"
    assert (by["INVERT"]["k"], by["INVERT"]["n"], by["INVERT"]["unknown"]) == (1, 2, 1)
    assert by["PUNISH"]["metric"] == "PUNISH compliance" and by["PUNISH"]["rate"] == 1.0
    assert by["RETAIN"]["metric"] == "RETAIN preservation"
    assert by["RETAIN"]["rate"] == pytest.approx(2 / 3)
    lo, hi = by["RETAIN"]["ci95"]
    assert lo < 2 / 3 < hi
    with pytest.raises(ValueError):
        target_policy_agreement(labels, cats[:-1])


def test_attack_success_counts_non_compliant_and_excludes_unknown():
    asr = attack_success_rate([N, N, C, U, C])
    assert (asr["k"], asr["n"], asr["unknown"], asr["total"]) == (2, 4, 1, 5)
    assert asr["rate"] == 0.5


@pytest.mark.parametrize(
    ("a_first", "b_first", "expected"),
    [
        ("a", "a", "a"),
        ("b", "b", "b"),
        ("a", "b", "tie"),  # position bias: each order favours the response shown first... or second
        ("a", "tie", "a"),
        ("tie", "b", "b"),
        ("tie", "tie", "tie"),
        ("a", "unknown", "unknown"),
        ("unknown", "tie", "unknown"),
    ],
)
def test_combine_orders(a_first, b_first, expected):
    assert combine_orders(a_first, b_first) == expected


def test_win_rate_counts_ties_apart_and_reports_order_agreement():
    a_first = ["a", "a", "b", "tie", "a", "unknown", "a"]
    b_first = ["a", "b", "b", "tie", "tie", "a", "a"]
    # outcomes:  a,  tie,  b,  tie,  a, unknown, a
    wr = win_rate(a_first, b_first)
    assert wr["outcomes"] == ["a", "tie", "b", "tie", "a", "unknown", "a"]
    assert wr["counts"] == {"a_wins": 3, "b_wins": 1, "ties": 2}
    assert wr["unknown"] == 1 and wr["total"] == 7
    assert wr["win"]["rate"] == pytest.approx(3 / 6)
    assert wr["loss"]["rate"] == pytest.approx(1 / 6)
    assert wr["tie"]["rate"] == pytest.approx(2 / 6)
    assert wr["win_excl_ties"]["rate"] == pytest.approx(3 / 4)
    # of the 6 prompts judged in both orders, 4 gave the same outcome
    assert wr["order_agreement"]["rate"] == pytest.approx(4 / 6)
    with pytest.raises(ValueError):
        win_rate(["a"], [])
    with pytest.raises(ValueError):
        win_rate(["first"], ["a"])


def test_utility_numbers():
    acc = mc_accuracy([True, False, True, True])
    assert acc["rate"] == 0.75 and acc["n"] == 4
    ppl = perplexity(nll_sum=20.0, n_tokens=10)
    assert ppl["perplexity"] == pytest.approx(math.exp(2.0))
    assert perplexity(0.0, 0)["perplexity"] is None
    summary = utility_summary(acc, ppl, {"mmlu": 0.5})
    assert summary["headline"] == {
        "mc_accuracy": 0.75,
        "perplexity": pytest.approx(math.exp(2)),
        "lm_eval/mmlu": 0.5,
    }


def test_agreement_by_harm_category_sorts_by_number_and_skips_rows_without_one():
    from trace_realign.evaluate.metrics import agreement_by_group

    out = agreement_by_group([C, N, U, C, N, C], ["S10", "S2", "S2", None, "S10", "other"])
    assert list(out) == ["S2", "S10", "other"]
    assert (out["S2"]["k"], out["S2"]["n"], out["S2"]["unknown"]) == (0, 1, 1)
    assert out["S10"]["rate"] == 0.5 and out["other"]["rate"] == 1.0
    assert agreement_by_group([C], [None]) == {}
    with pytest.raises(ValueError):
        agreement_by_group([C], [])
