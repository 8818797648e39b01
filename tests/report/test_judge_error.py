"""The judge's measured error (from `trace-realign audit`) shows next to the triage in the report."""

from __future__ import annotations

import json

from trace_realign.report import build_report

SUMMARY = {
    "policy": {"name": "p", "hash": "h"},
    "judge": "openai:m@http://x/v1|prompt=abc|max_tokens=512",
    "pairs": 4,
    "counts": {"INVERT": 1, "PUNISH": 1, "RETAIN": 2, "UNKNOWN": 0},
    "shares": {"INVERT": 0.25, "PUNISH": 0.25, "RETAIN": 0.5, "UNKNOWN": 0.0},
}
AUDIT = {
    "judge": SUMMARY["judge"],
    "source": "labelled.jsonl",
    "items": 50,
    "unknown": 0,
    "error_rate": {"k": 6, "n": 50, "rate": 0.12, "ci95": [0.056, 0.238]},
    "accuracy": {"k": 44, "n": 50, "rate": 0.88, "ci95": [0.762, 0.944]},
    "kappa": {"kappa": 0.74, "ci95": [0.55, 0.9], "interval": "percentile bootstrap, 2000 resamples"},
}


def _run(tmp_path, summary):
    run = tmp_path / "run"
    (run / "triage").mkdir(parents=True)
    (run / "triage" / "summary.json").write_text(json.dumps(summary))
    return run


def test_an_audit_beside_the_triage_is_shown_with_it(tmp_path):
    run = _run(tmp_path, SUMMARY)
    html, _ = build_report([run])
    assert "measured error" not in html.read_text()  # no audit, no claim
    (run / "triage" / "audit.json").write_text(json.dumps(AUDIT))
    html, md = build_report([run])
    text = html.read_text()
    assert "measured error 12.0% [5.6%, 23.8%] (95% Wilson, 6 wrong of 50 decided)" in text
    assert "Cohen&#x27;s kappa 0.74 [0.55, 0.90]" in text and "measured error 12.0%" in md.read_text()


def test_the_error_a_triage_summary_carries_wins_and_a_different_judge_is_flagged(tmp_path):
    block = {**AUDIT, "judge": "rules:x", "same_judge": False}
    run = _run(tmp_path, {**SUMMARY, "judge_error": block})
    html, _ = build_report([run])
    assert "judge audit (audited judge differs from this run&#x27;s judge) against" in html.read_text()
