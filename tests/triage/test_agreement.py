"""Two judges on the same pairs: agreement, disagreements written out, keep / drop / UNKNOWN."""

from __future__ import annotations

import json

import pytest

from trace_realign.cli import main
from trace_realign.data import EXAMPLES_DIR
from trace_realign.judges.policy import Policy
from trace_realign.schema import Category
from trace_realign.triage.agreement import combine, compare_triage, compare_triaged_files
from trace_realign.triage.triage import triage_pairs, write_triaged

from .fakes import TableJudge, make_pairs
from .test_triage_cli import example_args

POLICY = Policy("p")


def _two_triages():
    # pair 0: both INVERT; 1: both PUNISH; 2: RETAIN vs PUNISH; 3: INVERT vs RETAIN; 4: both RETAIN
    pairs, t1 = make_pairs([("n", "c"), ("n", "n"), ("c", "n"), ("n", "c"), ("c", "c")])
    t2 = dict(t1)
    t2[pairs[2].chosen] = "n"
    t2[pairs[3].chosen] = "c"
    a = triage_pairs(pairs, TableJudge(t1, "judge-a"), POLICY, None, progress=False)
    b = triage_pairs(pairs, TableJudge(t2, "judge-b"), POLICY, None, progress=False)
    return pairs, a, b


def test_agreement_per_category_and_disagreements():
    _, a, b = _two_triages()
    cmp = compare_triage(a, b)
    cats = cmp["categories"]
    assert cats["agreement"]["k"] == 3 and cats["agreement"]["n"] == 5
    assert {c: (e["k"], e["n"]) for c, e in cats["per_category"].items()} == {
        "INVERT": (1, 2),
        "PUNISH": (1, 1),
        "RETAIN": (1, 2),
    }
    assert [d["id"] for d in cmp["disagreements"]] == [a.rows[2].id, a.rows[3].id]
    assert cmp["disagreements"][0]["judge-b"]["category"] == "PUNISH"
    # 10 verdicts, 2 differ
    assert cmp["verdict_kappa"]["n"] == 10 and cmp["verdict_kappa"]["kappa"] < 1


@pytest.mark.parametrize("mode,n,unknown", [("keep", 5, 0), ("drop", 3, 0), ("unknown", 5, 2)])
def test_combine_keeps_drops_or_routes_to_unknown(mode, n, unknown):
    _, a, b = _two_triages()
    rows = combine(a, b, mode).rows
    assert len(rows) == n and sum(r.category is Category.UNKNOWN for r in rows) == unknown
    if mode == "unknown":
        assert "judges disagree: judge-b says PUNISH" in rows[2].reason_w


def test_a_second_run_compared_from_files(tmp_path):
    _, a, b = _two_triages()
    write_triaged(tmp_path / "a.jsonl", a.rows)
    write_triaged(tmp_path / "b.jsonl", b.rows)
    cmp = compare_triaged_files(tmp_path / "a.jsonl", tmp_path / "b.jsonl")
    assert cmp["categories"]["agreement"]["k"] == 3 and len(cmp["disagreements"]) == 2


def test_triage_cli_with_a_noisy_second_judge_and_the_audit(tmp_path, capsys):
    rules = f"rules:{EXAMPLES_DIR / 'rules.yaml'}"
    audit = tmp_path / "audit.json"
    audit.write_text(
        json.dumps(
            {
                "judge": "rules:other",
                "source": "labelled.jsonl",
                "items": 50,
                "unknown": 0,
                "error_rate": {"k": 4, "n": 50, "rate": 0.08, "ci95": [0.032, 0.188]},
                "kappa": {"kappa": 0.81, "ci95": [0.6, 0.95]},
            }
        )
    )
    args = example_args(tmp_path, "--judge2", f"noisy:0.3:{rules}", "--on-disagreement", "unknown")
    assert main([*args, "--audit", str(audit)]) == 0
    printed = capsys.readouterr().out
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    agreement = summary["agreement"]
    disagreements = [json.loads(line) for line in (run / "disagreements.jsonl").read_text().splitlines()]
    assert agreement["disagreeing_pairs"] == len(disagreements) > 0
    assert summary["counts"]["UNKNOWN"] == len(disagreements)  # routed to UNKNOWN
    assert "Two judges" in printed
    err = summary["judge_error"]
    assert err["error_rate"]["rate"] == 0.08 and err["same_judge"] is False
    assert "measured error 8.0% [3.2%, 18.8%]" in printed
