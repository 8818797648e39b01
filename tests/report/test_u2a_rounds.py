"""The training section names U2A's J and ω by round; the studies' tests carry their Holm-adjusted p."""

from __future__ import annotations

from pathlib import Path

from trace_realign.report.collect import Run
from trace_realign.report.render import Table, Text, studies_section, training_section


def test_u2a_rounds_are_reported():
    rounds = [
        {"round": r, "step": 3 * r, "J": j, "omega": {"effective_n": n}}
        for r, (j, n) in enumerate([(0.6931, 5.0), (0.65, 4.2), (0.61, 3.7)])
    ]
    summary = {
        "method": "u2a",
        "global_step": 9,
        "log_history": [{"step": 1, "loss": 0.7}, {"step": 2, "loss": 0.6}],
        "reweighting": {
            "schedule": "u2a",
            "rounds": rounds,
            "omega": {"n": 5, "min": 0.2, "median": 1.0, "max": 2.5, "effective_n": 3.7},
        },
    }
    once = {**summary, "method": "trace-no-triage", "reweighting": {"schedule": "once", "rounds": rounds[:1]}}
    run = Run(Path("."), "run", training={"u2a": summary, "trace-no-triage": once})
    texts = [b.text for b in training_section([run]) if isinstance(b, Text) and not b.note]
    assert texts == [
        "u2a: J by round 0.6931 → 0.65 → 0.61; effective number of negatives under ω ((Σω)²/Σω²) by round "
        "5.0 → 4.2 → 3.7; final ω over 5 kept negatives: min 0.2, median 1, max 2.5, effective n 3.7."
    ]
    # a run stopped early names the state it went back to
    summary["reweighting"]["restored_best"] = {"round": 0, "step": 0, "J": 0.6931, "J_at_stop": 2.6}
    texts = [b.text for b in training_section([run]) if isinstance(b, Text) and not b.note]
    assert texts[0].endswith("; the round-0 state (lowest J, 0.6931) was restored at the stop.")


def test_the_studies_tests_show_the_holm_adjusted_p():
    test = {"diff": 0.05, "ci95": [0.01, 0.09], "p": 0.02, "p_holm": 0.06, "n_a": 5, "n_b": 5}
    comparison = {"pairs_tested": {"trace-noise20 vs trace-no-impact-noise20": {"tpa": test}}}
    run = Run(Path("."), "run", comparison=comparison)
    (table,) = [b for b in studies_section([run]) if isinstance(b, Table)]
    assert table.columns[3:5] == ["p (seeds)", "p Holm"]
    assert table.rows[0][3:5] == ["0.02", "0.06"]
