"""The demo's printed tables at 80 columns: every number whole, no cell cut short."""

from __future__ import annotations

import io
import re

from rich.console import Console

from trace_realign.report.console import print_agreement, print_table, print_tests


def _rows():
    rows = []
    for name in ("M_ref", "trace", "trace-oracle", "naive-oracle-dpo", "dpo-gold", "trace-no-triage"):
        row = {"model": name, "seeds": 5}
        for key in ("tpa", "invert", "punish", "retain", "not_declined", "asr_fiction", "asr_suppression",
                    "external_declined", "tpa_typed", "mc"):  # fmt: skip
            row[key], row[f"{key}_ci"] = 68.75, [60.25, 76.55]
        row["perplexity"], row["perplexity_ci"] = 30.29, [29.34, 31.24]
        rows.append(row)
    return rows


def _tests():
    seed = {"diff": 0.03, "ci95": [-0.031, 0.091], "p": 0.34, "n_a": 5, "n_b": 5}
    prompt = {"diff": 0.03, "ci95": [-0.02, 0.08], "p": 0.2, "mcnemar": None}
    metrics = ("tpa", "retain", "not_declined", "asr_fiction", "asr_suppression", "external_declined")
    by = {m: {"seed": seed, "prompt": prompt} for m in metrics}
    return {"reference": "trace", "tests": {"naive-oracle-dpo": by, "dpo-gold": by}}


def test_every_number_is_readable_in_80_columns():
    buf = io.StringIO()
    console = Console(file=buf, width=80, color_system=None)
    print_agreement(
        {"M_ref": {"old": {"overall": {"rate": 0.953}}, "new": {"overall": {"rate": 0.469}}}}, console
    )
    print_table(_rows(), "Held-out prompts under the new policy (256 prompts, 5 training seeds)", console)
    print_tests(_tests(), console)
    text = buf.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text  # rich's sign of a cell cut short
    # every cell whole, with its interval
    assert text.count("68.8 [60.2, 76.5]") == 6 * 10 and text.count("30.29 [29.34, 31.24]") == 6
    assert len(re.findall(r"\+3\.0 \[-3\.1, \+9\.1\]", text)) == 2 * 6
    for name in ("naive-oracle-dpo", "trace-no-triage", "external declined", "95.3"):
        assert name in text
