"""`compare_evaluations` on hand-made evaluation folders: outcomes per prompt, cells over seeds,
paired tests, and the trade-off's subset rates, each checked against a count by hand."""

from __future__ import annotations

import json

import pytest

from trace_realign.evaluate.compare import adjust_family, compare_evaluations, row_outcomes, subset_rates
from trace_realign.stats import holm, mcnemar_exact

C, N, U = "compliant", "non_compliant", "unknown"
FIC, SUP = "fictional_scenario", "refusal_suppression"


def rows(plain: list[str], harmful: tuple[str, str, str, str, str, str], typed: list[str] | None = None):
    """Four plain prompts (i1 INVERT, r1 RETAIN, r2 RETAIN harmful, n1 RETAIN) and r2 wrapped twice.

    `harmful` = (policy label, attack label) for r2 plain, r2 fiction, r2 suppression.
    """
    ids = [("i1", "INVERT", False), ("r1", "RETAIN", False), ("r2", "RETAIN", True), ("n1", "RETAIN", False)]
    out = []
    for (pid, cat, harm), label in zip(ids, plain, strict=True):
        r = {"id": pid, "category": cat, "harmful": harm, "attack": None, "label": label}
        if harm:
            r["attack_label"] = harmful[1]
        if typed is not None:
            r["labels"] = {"typed": typed[len(out)]}
        out.append(r)
    for k, attack in ((2, FIC), (4, SUP)):
        out.append(
            {
                "id": f"r2:{attack}",
                "source_id": "r2",
                "category": "RETAIN",
                "harmful": True,
                "attack": attack,
                "label": harmful[k],
                "attack_label": harmful[k + 1],
            }
        )
    return out


def folder(tmp_path, name, responses, definition="operational", mc=0.5, ppl=10.0):
    d = tmp_path / name
    d.mkdir(parents=True)
    (d / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in responses))
    metrics = {
        "stress": {"definition": definition},
        "utility": {"headline": {"mc_accuracy": mc, "perplexity": ppl}, "mc": {"acc": {"k": 5, "n": 10}}},
    }
    (d / "metrics.json").write_text(json.dumps(metrics))
    return d


def test_row_outcomes_by_hand():
    # r2 plain: not declined, no operational help; fiction: operational; suppression: declined
    rs = rows([C, C, N, N], (N, C, N, N, C, C), typed=[C, N, N, U])
    out = row_outcomes(rs, "operational")
    assert out["tpa"] == {"i1": 1.0, "r1": 1.0, "r2": 0.0, "n1": 0.0}
    assert out["invert"] == {"i1": 1.0} and out["retain"] == {"r1": 1.0, "r2": 0.0, "n1": 0.0}
    assert out["asr_fiction"] == {f"r2:{FIC}": 1.0} and out["asr_suppression"] == {f"r2:{SUP}": 0.0}
    # not declined: plain r2 yes; fiction no (an attack success instead); suppression declined
    assert out["not_declined"] == {"r2": 1.0, f"r2:{FIC}": 0.0, f"r2:{SUP}": 0.0}
    assert out["tpa_typed"] == {"i1": 1.0, "r1": 0.0, "r2": 0.0, "n1": None}
    # the earlier definition: the wrapped rows' policy verdicts count
    old = row_outcomes(rs, "non_compliant")
    assert old["asr_fiction"] == {f"r2:{FIC}": 1.0} and old["asr_suppression"] == {f"r2:{SUP}": 0.0}
    rates = subset_rates(rs, {"r2"}, "operational")
    assert rates["asr"] == 0.5 and rates["tpa"] == 0.0 and rates["not_declined"] == pytest.approx(1 / 3)
    # the counts behind each rate, for its interval: [successes, known]
    assert rates["counts"]["asr"] == [1, 2] and rates["counts"]["not_declined"] == [1, 3]
    assert rates["counts"]["tpa"] == [0, 1] and rates["counts"]["invert"] == [0, 0]
    # an unknown verdict (n1 under the typed judge) is in neither count
    everything = subset_rates(rs)
    assert everything["counts"]["tpa_typed"] == [1, 3] and everything["tpa_typed"] == pytest.approx(1 / 3)


def test_cells_over_seeds_and_paired_tests(tmp_path):
    a_seeds = [
        rows([C, C, C, C], (C, C, C, C, C, C)),
        rows([C, C, C, N], (C, C, C, C, C, C)),
        rows([C, N, C, C], (C, C, N, N, C, C)),
    ]
    b_seeds = [rows([N, C, C, C], (C, C, N, C, C, C)), rows([N, C, N, C], (N, C, N, C, C, C))]
    groups = {
        "a": [folder(tmp_path, f"a{k}", r, mc=0.4 + 0.1 * k) for k, r in enumerate(a_seeds)],
        "b": [folder(tmp_path, f"b{k}", r) for k, r in enumerate(b_seeds)],
        "ref": [folder(tmp_path, "ref", rows([N, C, C, C], (C, C, C, C, C, C)))],
    }
    out = compare_evaluations(groups, reference="a", resamples=800)
    a, b = out["models"]["a"], out["models"]["b"]
    assert a["seeds"] == 3 and b["seeds"] == 2 and out["models"]["ref"]["seeds"] == 1
    # agreement per seed: a 4/4, 3/4, 3/4 -> mean 5/6; b 3/4, 2/4 -> 5/8
    assert a["cells"]["tpa"]["per_seed"] == pytest.approx([1.0, 0.75, 0.75])
    assert a["cells"]["tpa"]["mean"] == pytest.approx(5 / 6)
    assert b["cells"]["tpa"]["mean"] == pytest.approx(5 / 8)
    lo, hi = a["cells"]["tpa"]["ci95"]
    assert lo <= 5 / 6 <= hi
    # utility: t over seeds (a), Wilson of the one accuracy (ref)
    assert a["cells"]["mc"]["mean"] == pytest.approx(0.5) and a["cells"]["mc"]["interval"] == "t over seeds"
    assert out["models"]["ref"]["cells"]["mc"]["interval"] == "Wilson"
    assert out["models"]["ref"]["cells"]["perplexity"]["ci95"] is None
    assert a["cells"]["tpa"]["interval"] == "t over 3 seeds"
    assert out["models"]["ref"]["cells"]["tpa"]["interval"] == "Wilson over 4 prompts (one seed)"
    # tests of a against b and ref on every tested metric: over seeds (decides), prompt by prompt (describes)
    assert set(out["tests"]) == {"b", "ref"}
    tpa = out["tests"]["b"]["tpa"]
    assert tpa["seed"]["diff"] == pytest.approx(5 / 6 - 5 / 8) and tpa["seed"]["test"] == "Welch t over seeds"
    assert tpa["seed"]["n_a"] == 3 and tpa["seed"]["n_b"] == 2
    # against ref, which is one trained model (not named fixed): its training variance is unknown
    assert out["tests"]["ref"]["tpa"]["seed"]["p"] is None
    fixed = compare_evaluations(groups, reference="a", fixed=("ref",), resamples=200)
    assert fixed["tests"]["ref"]["tpa"]["seed"]["test"] == "one-sample t over A's seeds"
    # McNemar on seed-matched pairs: seed 0 (a all C; b i1 N) -> 1 a-only; seed 1 (a n1 N; b i1 N, r2 N)
    # -> 2 a-only, 1 b-only; a's third seed has no partner
    mc = tpa["prompt"]["mcnemar"]
    assert (mc["a_only"], mc["b_only"], mc["seed_pairs"]) == (3, 1, 2)
    assert mc["p"] == pytest.approx(mcnemar_exact(3, 1))
    assert tpa["prompt"]["diff"] == pytest.approx(5 / 6 - 5 / 8)
    # a harmful prompt's plain and wrapped rows are one prompt
    assert out["prompts"]["tpa"] == 4 and out["prompts"]["not_declined"] == 1
    assert out["tests"]["b"]["not_declined"]["prompt"]["mcnemar"] is None


def test_rows_not_in_every_evaluation_are_left_out_of_the_pairing(tmp_path):
    full = rows([C, C, C, C], (C, C, C, C, C, C))
    short = [r for r in full if r["id"] != "n1"]
    out = compare_evaluations(
        {"x": [folder(tmp_path, "x", full)], "y": [folder(tmp_path, "y", short)]},
        reference="x",
        resamples=200,
    )
    assert out["prompts"]["tpa"] == 3
    assert out["models"]["x"]["cells"]["tpa"]["prompts"] == 3


def test_holm_over_the_comparisons_family_counts_a_pair_tested_from_both_sides_once():
    def seed(p):
        return {"seed": {"p": p}, "prompt": {}}

    comparison = {
        "reference": "trace",
        "tests": {
            "M_ref": {"tpa": seed(0.001), "retain": seed(0.2)},
            "dpo-gold": {"tpa": seed(0.02), "retain": seed(0.01)},
            "trace-oracle": {"tpa": seed(0.03), "retain": seed(None)},
        },
        # trace-oracle's own row repeats its test against trace, from the other side
        "tests_also": {"trace-oracle": {"trace": {"tpa": seed(0.03)}, "dpo-gold": {"tpa": seed(0.04)}}},
        "pairs_tested": {"trace@25% vs trace": {"tpa": {"p": 0.5}}},
    }
    sizes = adjust_family(comparison)
    # tpa: M_ref, dpo-gold, trace-oracle (once), trace-oracle vs dpo-gold, trace@25%: five tests
    assert sizes == {"tpa": 5, "retain": 2} and comparison["holm"] == sizes
    want = dict(zip(["m", "d", "o", "od", "s"], holm([0.001, 0.02, 0.03, 0.04, 0.5]), strict=True))
    tests, also = comparison["tests"], comparison["tests_also"]["trace-oracle"]
    assert tests["M_ref"]["tpa"]["seed"]["p_holm"] == pytest.approx(want["m"])
    assert (
        tests["trace-oracle"]["tpa"]["seed"]["p_holm"] == also["trace"]["tpa"]["seed"]["p_holm"] == want["o"]
    )
    assert also["dpo-gold"]["tpa"]["seed"]["p_holm"] == pytest.approx(want["od"])
    assert comparison["pairs_tested"]["trace@25% vs trace"]["tpa"]["p_holm"] == pytest.approx(want["s"])
    # a test with no p gets none and does not enlarge its family
    assert tests["trace-oracle"]["retain"]["seed"]["p_holm"] is None
    assert tests["dpo-gold"]["retain"]["seed"]["p_holm"] == pytest.approx(0.02)


def test_holm_gives_each_study_a_family_of_its_own():
    def seed(p):
        return {"seed": {"p": p}, "prompt": {}}

    def study_of(a, b):
        return "noise" if "-noise" in a + b else ""

    comparison = {
        "reference": "trace",
        "tests": {
            "M_ref": {"tpa": seed(0.01)},
            "dpo-gold": {"tpa": seed(0.02)},
            "trace-noise20": {"tpa": seed(0.04)},
        },
        "pairs_tested": {"trace-noise20 vs trace-no-impact-noise20": {"tpa": {"p": 0.03}}},
    }
    sizes = adjust_family(comparison, study_of)
    assert sizes == {"tpa": 2, "noise:tpa": 2}
    tests = comparison["tests"]
    # the comparison's family is the two tests it has without the study
    assert [tests[m]["tpa"]["seed"]["p_holm"] for m in ("M_ref", "dpo-gold")] == pytest.approx(
        holm([0.01, 0.02])
    )
    noise = holm([0.04, 0.03])
    assert tests["trace-noise20"]["tpa"]["seed"]["p_holm"] == pytest.approx(noise[0])
    pair = comparison["pairs_tested"]["trace-noise20 vs trace-no-impact-noise20"]["tpa"]["p_holm"]
    assert pair == pytest.approx(noise[1])


def test_tests_also_in_one_pass_equal_each_reference_compared_on_its_own(tmp_path):
    good, bad = [C, C, N, C], [N, C, C, C]
    groups = {
        "M_ref": [folder(tmp_path, "m", rows(bad, (N, C, N, N, N, N)))],
        "trace": [folder(tmp_path, f"t{k}", rows(good if k else bad, (N, C, N, N, N, N))) for k in range(2)],
        "oracle": [folder(tmp_path, f"o{k}", rows(good, (C, C, N, N, N, N))) for k in range(2)],
        "trace-noise20": [folder(tmp_path, f"n{k}", rows(bad, (N, C, N, N, N, N))) for k in range(2)],
    }
    out = compare_evaluations(groups, reference="trace", also={"oracle": ["M_ref", "trace"]}, resamples=200)
    alone = compare_evaluations(groups, reference="oracle", resamples=200)["tests"]
    # only the models asked for, each test the one the reference gets when compared on its own
    assert out["tests_also"] == {"oracle": {m: alone[m] for m in ("M_ref", "trace")}}
    assert "tests_also" not in compare_evaluations(groups, reference="trace", resamples=200)
