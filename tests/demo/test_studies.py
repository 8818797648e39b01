"""The studies of `demo --compare` (rows from a noisy judge, rows on a share of the data): how their
rows are named and told apart, and that each is a Holm family of its own, on hand-made evaluations."""

from __future__ import annotations

import copy

from tests.evaluate.test_compare import C, N, folder, rows
from trace_realign.demo.compare import comparison_of
from trace_realign.demo.settings import load_settings
from trace_realign.evaluate.compare import adjust_family, noise_tag, scale_row, scale_tag, study_of
from trace_realign.update.presets import PRESETS


def test_study_of_every_row_name_the_demo_makes():
    for name in [*PRESETS, "M_ref"]:
        assert study_of(name) == "", name
    assert noise_tag(0.2) == "-noise20" and scale_tag(0.25) == "@25%"
    assert study_of("trace" + noise_tag(0.2)) == study_of("trace-no-impact" + noise_tag(0.1)) == "noise"
    assert study_of("naive-oracle-dpo" + scale_tag(0.25)) == "scale"
    # a test is in a study when either of its rows is; a name that only contains the word is not
    assert study_of("trace", "trace@50%") == "scale" and study_of("trace-noiseless") == ""
    # the report reads a share row's method and fraction back from its name
    assert scale_row("naive-oracle-dpo" + scale_tag(0.25)) == ("naive-oracle-dpo", 0.25)
    assert scale_row("trace") is None and scale_row("trace@x%") is None


def test_a_study_leaves_the_comparisons_tests_and_their_holm_p_as_they_were(tmp_path):
    good, bad, half = [C, C, N, C], [N, C, C, C], [C, N, N, C]
    harm = (N, C, N, N, N, N)

    def seeds(name, answers):
        return [folder(tmp_path, f"{name}{k}", rows(a, harm)) for k, a in enumerate(answers)]

    comparison_rows = {
        "M_ref": [folder(tmp_path, "m", rows(bad, harm))],
        "trace": seeds("t", [good, half, good]),
        "trace-oracle": seeds("o", [good, good, half]),
        "dpo-gold": seeds("d", [half, bad, half]),
    }
    noisy = {
        "trace-noise20": seeds("n", [half, bad, half]),
        "trace-no-impact-noise20": seeds("x", [bad, bad, half]),
    }
    protocol = load_settings().compare
    alone = comparison_of(comparison_rows, protocol, seed=0, not_trained={})
    both = comparison_of({**comparison_rows, **noisy}, protocol, seed=0, not_trained={})
    # trace-oracle is not tested against the study's rows; trace is (the noise drop), in the study's family
    assert set(both["tests_also"]["trace-oracle"]) == {"M_ref", "trace", "dpo-gold"}
    assert set(both["tests"]) == {"M_ref", "trace-oracle", "dpo-gold", *noisy}
    assert "trace-noise20 vs trace-no-impact-noise20" in both["pairs_tested"]
    # every test the comparison had, Holm's p included, is unchanged by the study
    assert both["tests_also"] == alone["tests_also"]
    assert {m: both["tests"][m] for m in alone["tests"]} == alone["tests"]
    assert both["holm"]["tpa"] == alone["holm"]["tpa"] == 5  # trace: 3, trace-oracle: M_ref and dpo-gold
    assert both["holm"]["noise:tpa"] == 3
    # and the study's own family is Holm over its tests only
    study = copy.deepcopy(both)
    study["tests"] = {m: t for m, t in study["tests"].items() if study_of(m)}
    study["tests_also"] = {}
    adjust_family(study, study_of)
    for m in noisy:
        assert study["tests"][m]["tpa"]["seed"]["p_holm"] == both["tests"][m]["tpa"]["seed"]["p_holm"]
