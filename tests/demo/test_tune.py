"""`demo --tune`: the learning rate is chosen on validation agreement among the rates that keep the
method safe, not on agreement alone."""

from __future__ import annotations

import types

import pytest

from trace_realign.demo import tune as tune_mod
from trace_realign.demo.settings import SETTINGS_FILE, load_settings
from trace_realign.demo.tune import best_rate, keeps_safe
from trace_realign.errors import InputError
from trace_realign.io import read_json

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


def test_a_method_with_extra_rates_trains_at_them_and_the_others_do_not(tmp_path, monkeypatch):
    settings = load_settings()  # the packaged grid: U2A reaches below the shared rates
    assert settings.tuning.rates("u2a") == (3e-5, 1e-4, 3e-4, 1e-3, 3e-3)
    assert settings.tuning.rates("trace") == (3e-4, 1e-3, 3e-3)
    trained: list[tuple[str, float]] = []
    options: dict[str, dict] = {}

    def configure(folder, *, methods, seed, score_seed=None, evaluate_reference=True, method_train=None):
        return {"folder": str(folder), "methods": methods, "method_train": method_train or {}}

    def fake_run(cfg, stages):
        for m in cfg["methods"]:
            trained.append((m, cfg["method_train"][m]["learning_rate"]))
            options[m] = cfg["method_train"][m]

    monkeypatch.setattr(
        tune_mod, "run_pipeline", lambda cfg, stages: fake_run(cfg, stages) if cfg["methods"] else None
    )
    monkeypatch.setattr(tune_mod, "share_scoring", lambda src, dst: None)
    monkeypatch.setattr(tune_mod, "_validation", lambda folder: run(0.484, 0.969))
    demo = types.SimpleNamespace(run_dir=tmp_path, protocol=settings.compare, configure=configure)
    out = tune_mod.tune(demo, settings, seed=0, step=lambda msg: None)
    assert sorted(lr for m, lr in trained if m == "u2a") == [3e-5, 1e-4, 3e-4, 1e-3, 3e-3]
    assert sorted(lr for m, lr in trained if m == "trace") == [3e-4, 1e-3, 3e-3]
    # the protocol's own options of the method travel with each grid rate
    assert options["u2a"]["u2a_npo_form"] == "u2a"
    assert out["chosen"]["u2a"] == 3e-5 and out["extra_rates"] == {"u2a": [3e-5, 1e-4]}
    assert set(out["runs"]["trace"]) == {"0.0003", "0.001", "0.003"}
    assert read_json(tmp_path / "tuning.json")["learning_rates"] == [3e-5, 1e-4, 3e-4, 1e-3, 3e-3]


def test_extra_rates_for_a_method_outside_the_grid_is_refused(tmp_path):
    text = SETTINGS_FILE.read_text().replace("extra_rates: {u2a:", "extra_rates: {dpo:")
    bad = tmp_path / "demo.yaml"
    bad.write_text(text)
    with pytest.raises(InputError, match="tuning.extra_rates.dpo"):
        load_settings(bad)


def test_a_scenarios_settings_lay_over_the_packaged_ones(tmp_path):
    over = tmp_path / "tuned.yaml"
    over.write_text(
        "sizes: {default: {learning_rate: 0.003, scenario: {n_heldout: 32}}}\n"
        "compare: {method_train: {dpo-gold: {learning_rate: 0.01}, u2a: {learning_rate: 0.0001}}}\n"
        "tuning: {methods: [trace], learning_rates: [0.001]}\n"
    )
    packaged, laid = load_settings(), load_settings(overlay=over)
    default = laid.sizes["default"]
    assert default.learning_rate == 0.003 and default.train_steps == packaged.sizes["default"].train_steps
    # a nested block merges key by key: the scenario's other sizes stay the packaged ones
    assert default.scenario.n_heldout == 32
    assert default.scenario.n_pairs == packaged.sizes["default"].scenario.n_pairs
    assert laid.compare.method_train["dpo-gold"] == {"learning_rate": 0.01}
    # down to one method's options: U2A's rate changes and its own options stay
    assert laid.compare.method_train["u2a"] == {**packaged.compare.method_train["u2a"], "learning_rate": 1e-4}
    assert laid.compare.method_train["u2a"]["u2a_npo_form"] == "u2a"
    # the tuning block replaces the packaged grid whole (U2A's extra rates would name no method)
    assert laid.tuning.methods == ("trace",) and laid.tuning.extra_rates == {}


@pytest.mark.parametrize(
    "text,error",
    [
        ("colours: {a: 1}\n", r"tuned.yaml: field 'colours': unknown key"),
        ("compare: [1]\n", r"tuned.yaml: field 'compare': expected a mapping"),
        ("compare: {seeded: {trace: 0}}\n", r"tuned.yaml \(over .*demo.yaml\): field 'compare.seeded'"),
        ("tuning: {learning_rates: [0.001]}\n", r"tuned.yaml \(over .*demo.yaml\): field 'tuning.methods'"),
    ],
)
def test_bad_scenario_settings_name_the_file_and_the_field(tmp_path, text, error):
    over = tmp_path / "tuned.yaml"
    over.write_text(text)
    with pytest.raises(InputError, match=error) as exc:
        load_settings(overlay=over)
    assert "\n" not in str(exc.value)


def test_the_demo_takes_the_scenarios_settings_unless_a_file_is_given(tmp_path, monkeypatch):
    from trace_realign.demo import run as run_mod
    from trace_realign.scenario.source import load_scenario

    seen = []

    def stop(run_dir, settings, *args, **kwargs):
        seen.append(settings)
        raise InputError("stop here")

    monkeypatch.setattr(run_mod, "prepare", stop)
    values = load_scenario("values")
    for config in (None, SETTINGS_FILE):
        with pytest.raises(InputError, match="stop here"):
            run_mod.run_demo(tmp_path / "run", scenario=values, settings=config, size="quick", progress=False)
    scenario_own, packaged = seen
    assert values.settings is not None and scenario_own.source.startswith(str(values.settings))
    assert scenario_own.sizes["default"].learning_rate == 0.003  # values' trace rate
    assert packaged.source == str(SETTINGS_FILE)
