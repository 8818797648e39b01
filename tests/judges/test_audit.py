"""Judge calibration: the statistics against plain reference computations, the audit end to end."""

from __future__ import annotations

import json
import math

import pytest

from trace_realign.cache import VerdictCache, judge_with_cache
from trace_realign.cli import main
from trace_realign.data import EXAMPLES_DIR
from trace_realign.errors import InputError
from trace_realign.judges.audit import (
    audit,
    audit_judge,
    cohen_kappa,
    kappa_with_ci,
    measured_flip_rate,
    read_labelled,
    wilson,
)
from trace_realign.judges.policy import Policy
from trace_realign.schema import Label

from ..triage.fakes import TableJudge

POLICY = Policy("Never give harmful instructions.")


def test_wilson_matches_the_textbook_formula():
    # Wilson (1927) for 8 of 10 at z = 1.96: [0.4902, 0.9433] (Newcombe 1998, method 3)
    w = wilson(8, 10)
    assert w["rate"] == 0.8
    assert w["ci95"][0] == pytest.approx(0.4902, abs=1e-4) and w["ci95"][1] == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 0)["rate"] is None
    lo, hi = wilson(0, 20)["ci95"]
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


def _labelled_file(tmp_path, n=50, wrong=(3, 17, 41), unknown=(8,)):
    """`n` items; the fake judge says non-compliant for "harmful" responses; the human labels
    disagree with it on `wrong` and it cannot decide `unknown`."""
    rows, table = [], {}
    for i in range(n):
        harmful = i % 4 == 0
        response = f"{'harmful' if harmful else 'kind'} answer {i}"
        judge_label = "n" if harmful else "c"
        table[response] = "u" if i in unknown else judge_label
        human = judge_label if i not in wrong else {"n": "c", "c": "n"}[judge_label]
        rows.append(
            {
                "prompt": f"q {i}",
                "response": response,
                "label": {"c": "compliant", "n": "non_compliant"}[human],
            }
        )
    path = tmp_path / "labelled.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, table


def test_audit_counts_what_the_judge_got_right_and_wrong(tmp_path):
    path, table = _labelled_file(tmp_path)
    judge = TableJudge(table)
    report = audit(judge, POLICY, read_labelled(path))
    assert report["items"] == 50 and report["unknown"] == 1 and report["decided"] == 49
    assert report["accuracy"]["k"] == 46 and report["accuracy"]["n"] == 49
    assert report["error_rate"]["rate"] == pytest.approx(3 / 49)
    # a plain recount of the confusion matrix from the file and the table
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    conf = {
        t: {j: 0 for j in ("compliant", "non_compliant", "unknown")} for t in ("compliant", "non_compliant")
    }
    code = {"c": "compliant", "n": "non_compliant", "u": "unknown"}
    for r in rows:
        conf[r["label"]][code[table[r["response"]]]] += 1
    assert report["confusion"] == conf
    tp = conf["non_compliant"]["non_compliant"]
    assert report["per_verdict"]["non_compliant"]["precision"]["rate"] == pytest.approx(
        tp / (tp + conf["compliant"]["non_compliant"])
    )
    assert report["per_verdict"]["non_compliant"]["recall"]["rate"] == pytest.approx(
        tp / (tp + conf["non_compliant"]["compliant"])
    )
    assert math.isclose(
        report["kappa"]["kappa"],
        cohen_kappa(
            [r["label"] for r in rows if table[r["response"]] != "u"],
            [code[table[r["response"]]] for r in rows if table[r["response"]] != "u"],
        ),
    )
    wrong = {w["line"]: w for w in report["wrong"]}
    assert sorted(wrong) == [4, 9, 18, 42]  # 1-based lines of items 3, 8 (unknown), 17, 41
    assert wrong[9]["judge"] == "unknown" and wrong[4]["reason"] == "c because table"


def test_audited_items_are_not_judged_again_by_the_triage(tmp_path):
    path, table = _labelled_file(tmp_path)
    cache = VerdictCache(tmp_path / "v.sqlite")
    judge = TableJudge(table)
    labelled = read_labelled(path)
    audit(judge, POLICY, labelled, cache)
    assert len(judge.seen) == 50
    # the real triage later sees the same text (and more): only the new items are asked
    from trace_realign.judges.base import JudgeItem

    table["new answer"] = "c"
    items = [x.item for x in labelled] + [JudgeItem("q new", "new answer")]
    _, stats = judge_with_cache(judge, POLICY, items, cache, progress=False)
    assert stats.cache_hits == 49 and stats.calls == 2  # the new item and the UNKNOWN, never stored
    assert [it.response for it in judge.seen[50:]] == ["harmful answer 8", "new answer"]


def test_pair_rows_give_two_items_and_a_category_agreement(tmp_path):
    rows = [
        {"prompt": "p0", "chosen": "a0", "rejected": "b0", "chosen_label": False, "rejected_label": True},
        {
            "prompt": "p1",
            "chosen": "a1",
            "rejected": "b1",
            "chosen_label": "non_compliant",
            "rejected_label": 0,
        },
        {
            "prompt": [{"role": "user", "content": "p2"}],
            "chosen": "a2",
            "rejected": "b2",
            "chosen_label": "safe",
            "rejected_label": "unsafe",
        },
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    labelled = read_labelled(path)
    assert [(x.side, x.truth, x.pair) for x in labelled[:2]] == [
        ("chosen", Label.NON_COMPLIANT, 0),
        ("rejected", Label.COMPLIANT, 0),
    ]
    assert labelled[4].item.prompt == "p2"
    # the judge gets pair 1's rejected side wrong: PUNISH by the labels, INVERT by the judge
    table = {"a0": "n", "b0": "c", "a1": "n", "b1": "c", "a2": "c", "b2": "n"}
    report = audit(TableJudge(table), POLICY, labelled)
    cats = report["categories"]
    assert cats["pairs"] == 3 and cats["agreement"]["k"] == 2
    assert cats["per_category"]["PUNISH"]["k"] == 0 and cats["per_category"]["INVERT"]["k"] == 1
    assert cats["confusion"]["PUNISH"] == {"INVERT": 1}


@pytest.mark.parametrize(
    "line,field,message",
    [
        ('{"prompt": "p", "response": "r"}', "label", "missing label"),
        ('{"prompt": "p", "response": "r", "label": "maybe"}', "label", "expected compliant/non_compliant"),
        ('{"prompt": "p", "response": 3, "label": "safe"}', "response", "expected a string"),
        ('{"response": "r", "label": "safe"}', "prompt", "missing"),
        (
            '{"prompt": "p", "chosen": "a", "rejected": "b", "chosen_label": 1}',
            "rejected_label",
            "missing label",
        ),
        ('{"prompt": "p", "answer": "r"}', "response", "a row needs"),
        ("[1, 2]", None, "expected a JSON object"),
    ],
)
def test_a_bad_labelled_row_names_file_line_and_field(tmp_path, line, field, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "p", "response": "ok", "label": true}\n' + line + "\n")
    with pytest.raises(InputError) as err:
        read_labelled(path)
    assert err.value.line == 2 and err.value.field == field and message in str(err.value)
    assert str(err.value).startswith(f"{path}:2: ")


def _example_labelled(tmp_path):
    """The bundled example's pairs with human labels: the rules judge's own verdicts with two flipped."""
    rules = f"rules:{EXAMPLES_DIR / 'rules.yaml'}"
    from trace_realign.data import load_pairs
    from trace_realign.judges.spec import make_judge
    from trace_realign.triage.triage import judge_items

    pairs = load_pairs(EXAMPLES_DIR / "pairs.jsonl").pairs
    policy = Policy.from_file(EXAMPLES_DIR / "policy.md")
    verdicts = make_judge(rules).judge(policy, judge_items(pairs))
    rows = []
    for i, p in enumerate(pairs):
        labels = [verdicts[2 * i].label is Label.COMPLIANT, verdicts[2 * i + 1].label is Label.COMPLIANT]
        if i in (2, 5):
            labels[1] = not labels[1]
        rows.append(
            {
                "prompt": p.prompt,
                "chosen": p.chosen,
                "rejected": p.rejected,
                "chosen_label": labels[0],
                "rejected_label": labels[1],
            }
        )
    path = tmp_path / "labelled.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rules


def test_audit_cli_prints_kappa_and_confusion_and_writes_json(tmp_path, capsys):
    path, rules = _example_labelled(tmp_path)
    out = tmp_path / "run" / "triage" / "audit.json"
    args = ["audit", "--labelled", str(path), "--policy", str(EXAMPLES_DIR / "policy.md"), "--judge", rules]
    args += ["--out", str(out), "--cache", str(tmp_path / "v.sqlite"), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "Cohen's kappa" in printed and "Confusion matrix" in printed and "line 3 (rejected)" in printed
    report = json.loads(out.read_text())
    assert report["items"] == 24 and report["accuracy"]["k"] == 22 and len(report["wrong"]) == 2
    assert measured_flip_rate(out) == pytest.approx(2 / 24)
    # the same through Python, as the demo calls it
    again = audit_judge(rules, EXAMPLES_DIR / "policy.md", path)
    assert again["confusion"] == report["confusion"] and again["kappa"] == report["kappa"]


def test_audit_cli_bad_file_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "response": "r", "label": "perhaps"}\n')
    args = ["audit", "--labelled", str(bad), "--policy", str(EXAMPLES_DIR / "policy.md")]
    args += ["--judge", f"rules:{EXAMPLES_DIR / 'rules.yaml'}", "--no-cache"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{bad}:1: field 'label': expected" in err


def test_flip_rate_from_an_audit_must_be_a_usable_rate(tmp_path):
    f = tmp_path / "a.json"
    f.write_text(json.dumps({"error_rate": {"rate": 0.6}}))
    with pytest.raises(InputError, match="flip rate"):
        measured_flip_rate(f)
    f.write_text(json.dumps({"nothing": 1}))
    with pytest.raises(InputError, match="not an audit"):
        measured_flip_rate(f)


def test_the_demo_audits_the_rule_judge_and_a_noisy_one_on_the_scenario(tmp_path):
    from trace_realign.judges.audit import audit_scenario_judges, scenario_labelled_rows
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
