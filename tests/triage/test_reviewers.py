"""Two reviewers on the same items: kappa and agreement over what both labelled, from any audit file."""

from __future__ import annotations

import json

import pytest

from trace_realign.cli import main
from trace_realign.errors import InputError
from trace_realign.stats import cohen_kappa
from trace_realign.triage.reviewers import reviewer_agreement


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_kappa_is_over_the_items_both_labelled(tmp_path):
    a = [
        {"prompt": f"p{i}", "response": f"r{i}", "label": "compliant" if i % 2 else "non_compliant"}
        for i in range(12)
    ]
    b = [dict(r) for r in a[2:]]  # the second reviewer skipped the first two items
    for r in b[:3]:  # and calls three of the others differently
        r["label"] = "compliant" if r["label"] == "non_compliant" else "non_compliant"
    b.append({"prompt": "extra", "response": "only here", "label": "compliant"})
    # a pair row covers two items; the same items as item rows in the other file join with them
    a.append({"prompt": "q", "chosen": "c", "rejected": "r", "chosen_label": True, "rejected_label": False})
    b += [
        {"prompt": "q", "response": "c", "label": "compliant"},
        {"prompt": "q", "response": "r", "label": "unsafe"},
    ]
    report = reviewer_agreement(write(tmp_path / "alice.jsonl", a), write(tmp_path / "bob.jsonl", b))
    assert report["items"] == 12 and report["only_in_first"] == 2 and report["only_in_second"] == 1
    assert report["agreement"]["k"] == 9 and len(report["differ"]) == 3
    la = [r["label"] for r in a[2:12]] + ["compliant", "non_compliant"]
    lb = [r["label"] for r in b[:10]] + ["compliant", "non_compliant"]
    assert report["kappa"]["kappa"] == pytest.approx(cohen_kappa(la, lb))
    lo, hi = report["kappa"]["ci95"]
    assert lo <= report["kappa"]["kappa"] <= hi
    assert sum(sum(row.values()) for row in report["confusion"].values()) == 12


def test_no_shared_item_is_an_input_error_and_the_cli_reports_kappa(tmp_path, capsys):
    a = write(tmp_path / "a.jsonl", [{"prompt": "p", "response": "r", "label": "compliant"}])
    b = write(tmp_path / "b.jsonl", [{"prompt": "p", "response": "other", "label": "compliant"}])
    with pytest.raises(InputError, match="no item is labelled in both"):
        reviewer_agreement(a, b)
    rows = [
        {"prompt": f"p{i}", "response": "r", "label": ["compliant", "non_compliant"][i % 2]} for i in range(6)
    ]
    c = write(tmp_path / "c.jsonl", rows)
    rows[0]["label"] = "non_compliant"
    d = write(tmp_path / "d.jsonl", rows)
    assert main(["audit", "--agreement", str(c), str(d), "--out", str(tmp_path / "agree.json")]) == 0
    out = capsys.readouterr().out
    assert "Cohen's kappa" in out and "83.3%" in out
    assert json.loads((tmp_path / "agree.json").read_text())["items"] == 6
    assert main(["audit", "--labelled", str(c)]) == 2  # the judge audit still needs its options
    assert "--policy, --judge: required" in capsys.readouterr().err
