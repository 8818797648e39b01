"""The demo's judge audit on the scenario's construction."""

from __future__ import annotations

import json


def test_the_demo_audits_the_rule_judge_and_a_noisy_one_on_the_scenario(tmp_path):
    from trace_realign.demo.audit import audit_scenario_judges, scenario_labelled_rows
    from trace_realign.scenario.generate import ScenarioConfig, build_scenario, rules_path

    scenario = build_scenario(ScenarioConfig(n_pairs=60))
    rows = scenario_labelled_rows(scenario.pairs, n=50)
    assert len(rows) == 50 and {r["kind"] for r in rows} == {"invert", "punish", "malicious", "neutral"}
    audits = audit_scenario_judges(scenario.pairs, scenario.new_policy, rules_path("new"), tmp_path, n=50)
    clean, noisy = audits["rules"], audits["noisy"]
    assert clean["items"] == noisy["items"] == 50
    # the rules were written for this scenario: near-perfect; 20% noise must show up as error
    assert clean["error_rate"]["rate"] <= 0.1
    assert noisy["error_rate"]["rate"] > clean["error_rate"]["rate"] + 0.05
    assert noisy["kappa"]["kappa"] < clean["kappa"]["kappa"]
    assert (tmp_path / "audit_rules.json").exists() and (tmp_path / "labelled.jsonl").exists()
    # the report's copy, and a rerun that finds everything current rewrites nothing
    also = tmp_path / "run" / "triage" / "audit.json"
    audit_scenario_judges(
        scenario.pairs, scenario.new_policy, rules_path("new"), tmp_path, n=50, also_to=also
    )
    assert json.loads(also.read_text())["judge"] == clean["judge"]
    stamps = {f: f.stat().st_mtime_ns for f in tmp_path.rglob("*.json*")}
    again = audit_scenario_judges(
        scenario.pairs, scenario.new_policy, rules_path("new"), tmp_path, n=50, also_to=also
    )
    assert again["noisy"]["error_rate"] == noisy["error_rate"]
    assert {f: f.stat().st_mtime_ns for f in tmp_path.rglob("*.json*")} == stamps
