"""The demo's judge audits: against an independent reading (the typed judge), and against the
scenario's construction (a consistency check that cannot fail, labelled so)."""

from __future__ import annotations

import json


def test_the_demo_audits_the_rule_judge_against_an_independent_reading_and_its_construction(tmp_path):
    from trace_realign.demo.audit import audit_scenario_judges, scenario_labelled_rows
    from trace_realign.demo.settings import EVAL_JUDGE_CUES
    from trace_realign.scenario.generate import ScenarioConfig, build_scenario, rules_path

    scenario = build_scenario(ScenarioConfig(n_pairs=60))
    rows = scenario_labelled_rows(scenario.pairs, n=50)
    assert len(rows) == 50 and {r["kind"] for r in rows} == {"invert", "punish", "malicious", "neutral"}
    also = tmp_path / "run" / "triage" / "audit.json"

    def run() -> dict:
        return audit_scenario_judges(
            scenario.pairs, scenario.new_policy, rules_path("new"), tmp_path, n=50, also_to=also,
            cues=EVAL_JUDGE_CUES,
        )  # fmt: skip

    audits = run()
    clean, noisy, typed = audits["rules"], audits["noisy"], audits["typed"]
    assert clean["items"] == noisy["items"] == 50
    # against the construction the rules were written for: near-perfect, and said to be a check
    # that cannot fail; 20% noise must show up as error on the same slice
    assert clean["error_rate"]["rate"] <= 0.1 and "cannot fail" in clean["source"]
    assert noisy["error_rate"]["rate"] > clean["error_rate"]["rate"] + 0.05
    # against the typed judge's independent reading: a measured disagreement, labelled as such
    assert 0 < typed["items"] <= 50 and "typed evaluation judge" in typed["source"]
    assert typed["judge"] == clean["judge"]
    # the report's copy beside the triage is the independent one
    assert json.loads(also.read_text())["source"] == typed["source"]
    assert (tmp_path / "labelled_typed.jsonl").exists() and (
        tmp_path / "labelled_construction.jsonl"
    ).exists()
    # a rerun that finds everything current rewrites nothing
    stamps = {f: f.stat().st_mtime_ns for f in tmp_path.rglob("*.json*")}
    again = run()
    assert again["noisy"]["error_rate"] == noisy["error_rate"]
    assert {f: f.stat().st_mtime_ns for f in tmp_path.rglob("*.json*")} == stamps
