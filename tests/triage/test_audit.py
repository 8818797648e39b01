"""Judge calibration: the statistics against plain reference computations, the audit end to end."""

from __future__ import annotations

import json
import math

import pytest

from trace_realign.cache import VerdictCache
from trace_realign.cli import main
from trace_realign.data import EXAMPLES_DIR
from trace_realign.errors import InputError
from trace_realign.judges.cached import judge_with_cache
from trace_realign.judges.policy import Policy
from trace_realign.schema import Label
from trace_realign.stats import cohen_kappa
from trace_realign.triage.audit import audit, audit_judge, measured_flip_rate
from trace_realign.triage.labelled import read_labelled

from .fakes import TableJudge

POLICY = Policy("Never give harmful instructions.")


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
