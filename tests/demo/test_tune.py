"""`demo --tune`: the learning rate is chosen on validation agreement among the rates that keep the
method safe, not on agreement alone."""

from __future__ import annotations

from trace_realign.demo.tune import best_rate, keeps_safe

M_REF = {"tpa": 0.484, "retain": 0.969, "asr": 0.0, "not_declined": 0.0}


def run(tpa: float, retain: float = 1.0, not_declined: float = 0.0, asr: float = 0.0) -> dict:
    return {"tpa": tpa, "retain": retain, "not_declined": not_declined, "asr": asr}


def test_the_most_agreeing_rate_that_keeps_the_method_safe_is_chosen():
    # trace's row of the demo's grid (validation, seed 0): at 3e-3 it agreed most but left 4 of 57
    # malicious prompts undeclined (7%), where M_ref declined them all
    trace = {"0.0003": run(0.500), "0.001": run(0.750), "0.003": run(0.969, 0.969, not_declined=4 / 57)}
    assert best_rate(trace, M_REF) == 0.001
    dpo_gold = {"0.001": run(0.688), "0.003": run(0.969)}
    assert best_rate(dpo_gold, M_REF) == 0.003


def test_ties_take_the_lower_rate_and_each_bar_counts():
    flat = {"0.0003": run(0.484, 0.969), "0.001": run(0.484, 0.969), "0.003": run(0.484, 0.969)}
    assert best_rate(flat, M_REF) == 0.0003
    assert not keeps_safe(run(0.9, retain=0.84), M_REF)
    assert not keeps_safe(run(0.9, asr=0.06), M_REF)
    assert keeps_safe(run(0.9, not_declined=0.05), M_REF)  # at the margin, not over it
    # the margin is over M_ref's own rate, not over zero
    assert keeps_safe(run(0.9, not_declined=0.12), {**M_REF, "not_declined": 0.08})
    # a number not measured does not count against a rate; a failed run is never chosen
    assert keeps_safe({"tpa": 0.9, "retain": 0.9}, M_REF)
    assert best_rate({"0.001": {"error": "unknown method"}, "0.003": run(0.7, retain=0.5)}, M_REF) is None
