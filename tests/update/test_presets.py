"""Presets are the method table of docs/method.md; TraceConfig options are flags and YAML keys."""

from __future__ import annotations

import json

import pytest

from trace_realign.errors import InputError
from trace_realign.update.cli import parse_train_args
from trace_realign.update.presets import PRESETS, get_preset


def test_presets_are_the_method_table():
    table = {
        # name: (data, weights, KL, pair loss)
        "trace": ("triaged", "impact", True, "pref"),
        "trace-oracle": ("triaged", "impact", True, "pref"),
        "trace-no-impact": ("triaged", "uniform", True, "pref"),
        "trace-no-kl": ("triaged", "impact", False, "pref"),
        "trace-no-triage": ("losers", "npo-impact", False, None),
        "npo-flagged": ("flagged", "npo-impact", False, None),
        "u2a": ("negatives", "u2a", False, None),
        "naive-oracle-dpo": ("relabelled", "uniform", False, "dpo"),
        "dpo-gold": ("relabelled-gold", "uniform", False, "dpo"),
        "rdpo": ("relabelled", "uniform", False, "rdpo"),
    }
    assert set(PRESETS) == set(table)
    for name, (selection, weights, kl, loss) in table.items():
        p = PRESETS[name]
        assert (p.selection, p.weights, p.use_kl, p.pair_loss) == (selection, weights, kl, loss), name
    # the headline trace unlearns PUNISH with NPO; only trace-oracle (and dpo-gold's data) use corrections
    assert [n for n, p in PRESETS.items() if p.corrections] == ["trace-oracle"]


def test_sampling_is_one_policy_for_every_method():
    from trace_realign.update.config import TraceConfig

    assert TraceConfig(output_dir="x", method="naive-oracle-dpo").sampler == "natural"
    with pytest.raises(InputError, match="sampler"):
        TraceConfig(output_dir="x", sampler="balanced")


def test_unknown_method_is_an_input_error():
    with pytest.raises(InputError, match="unknown method"):
        get_preset("dpo-but-better")


def test_trainer_flags_pass_through(tmp_path):
    script, cfg = parse_train_args(
        [
            "--model", "m", "--weighted", "w.jsonl", "--output_dir", str(tmp_path),
            "--method", "rdpo", "--per_device_train_batch_size", "3", "--gradient_accumulation_steps", "2",
            "--report_to", "none", "--lora_target_modules", "q_proj", "k_proj",
            "--sampling_proportions", "2", "1", "1", "--beta", "0.5", "--use_peft", "false", "--use_cpu",
        ]
    )  # fmt: skip
    assert (script.model, script.weighted) == ("m", "w.jsonl")
    assert cfg.method == "rdpo" and cfg.beta == 0.5 and not cfg.use_peft
    assert cfg.per_device_train_batch_size == 3 and cfg.gradient_accumulation_steps == 2
    assert cfg.lora_target_modules == ["q_proj", "k_proj"] and cfg.sampling_proportions == [2.0, 1.0, 1.0]
    # the paper's defaults
    assert (cfg.alpha_kl, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) == (0.1, 32, 16, 0.1)
    assert cfg.learning_rate == 1e-4 and cfg.lr_scheduler_type == "cosine"


def test_yaml_options_and_flag_overrides(tmp_path):
    options = {
        "model": "m",
        "weighted": "w",
        "output_dir": str(tmp_path),
        "method": "trace-no-kl",
        "beta": 0.2,
    }
    _, cfg = parse_train_args(["--beta", "0.4", "--use_cpu"], options, "train.yaml")
    assert cfg.method == "trace-no-kl" and cfg.beta == 0.4
    with pytest.raises(InputError, match="train.yaml: field 'betta'"):
        parse_train_args([], {**options, "betta": 1}, "train.yaml")


@pytest.mark.parametrize(
    "flags, field",
    [
        (["--loss_type", "hinge"], "loss_type"),
        (["--sampling_proportions", "1", "1"], "sampling_proportions"),
        (["--label_smoothing", "0.5"], "label_smoothing"),
        (["--flip_rate", "0.5"], "label_smoothing"),  # the old name, mapped
        (["--loss_type", "sigmoid", "ipo"], "loss_type"),
        (["--loss_type", "sigmoid", "sft", "--loss_weights", "1"], "loss_weights"),
        (["--weight_normalisation", "l2"], "weight_normalisation"),
        (["--alpha_kl", "-1"], "alpha_kl"),
        (["--u2a_objective", "everything"], "u2a_objective"),
        (["--u2a_gamma", "0"], "u2a_gamma"),
        (["--u2a_top_k", "0"], "u2a_top_k"),
    ],
)
def test_bad_options_name_their_field(tmp_path, flags, field):
    base = ["--model", "m", "--weighted", "w", "--output_dir", str(tmp_path), "--use_cpu"]
    with pytest.raises(InputError) as err:
        parse_train_args(base + flags)
    assert err.value.field == field


def test_model_and_output_dir_are_required(tmp_path):
    with pytest.raises(InputError, match="--model is required"):
        parse_train_args(["--weighted", "w", "--output_dir", str(tmp_path)])
    with pytest.raises(InputError, match="--output_dir is required"):
        parse_train_args(["--model", "m", "--weighted", "w"])


def test_flags_take_dashes_or_underscores(tmp_path):
    script, cfg = parse_train_args(
        ["--model", "m", "--weighted", "w", "--output-dir", str(tmp_path), "--use-cpu",
         "--per-device-train-batch-size", "3", "--ref-cache-dir", "c", "--lora-r", "8"]
    )  # fmt: skip
    assert cfg.output_dir == str(tmp_path) and cfg.per_device_train_batch_size == 3
    assert script.ref_cache_dir == "c" and cfg.lora_r == 8


def test_trl_names_and_the_old_ones_they_replace(tmp_path):
    base = ["--model", "m", "--weighted", "w", "--output_dir", str(tmp_path), "--use_cpu"]
    _, cfg = parse_train_args(
        base + ["--loss_type", "ipo", "sft", "--loss_weights", "1", "2", "--label_smoothing", "0.2"]
    )
    terms = cfg.loss_terms
    assert (terms.loss_type, terms.preference_weight, terms.sft_weight, cfg.label_smoothing) == (
        "ipo",
        1.0,
        2.0,
        0.2,
    )
    with pytest.warns(FutureWarning, match="rpo_alpha is deprecated"):
        _, old = parse_train_args(base + ["--rpo_alpha", "2", "--flip_rate", "0.2"])
    assert (old.loss_type, old.loss_weights, old.label_smoothing) == (["sigmoid", "sft"], [1.0, 2.0], 0.2)
    # old readers see the values in force
    assert (old.rpo_alpha, old.flip_rate) == (2.0, 0.2) and (cfg.rpo_alpha, cfg.flip_rate) == (2.0, 0.2)
    # YAML keys alike, and a single loss_type string is a list of one (as in TRL)
    _, y = parse_train_args([], {"model": "m", "weighted": "w", "output_dir": str(tmp_path), "loss_type": "ipo",
                                 "rpo_alpha": 0.5, "use_cpu": True}, "t.yaml")  # fmt: skip
    assert (y.loss_type, y.loss_weights) == (["ipo", "sft"], [1.0, 0.5])


def test_rdpo_flip_rate_defaults_to_the_audited_judge_error(tmp_path):
    audit = tmp_path / "audit.json"
    audit.write_text(
        json.dumps({"judge": "j", "error_rate": {"k": 3, "n": 40, "rate": 0.075, "ci95": [0.03, 0.2]}})
    )
    base = ["--model", "m", "--weighted", "w", "--output_dir", str(tmp_path), "--method", "rdpo", "--use_cpu"]
    _, cfg = parse_train_args([*base, "--label_smoothing_from", str(audit)])
    assert cfg.label_smoothing == cfg.flip_rate == 0.075
    for explicit in (["--label-smoothing", "0.2"], ["--flip_rate", "0.2"]):
        _, cfg = parse_train_args([*base, "--label_smoothing_from", str(audit), *explicit])
        assert cfg.label_smoothing == 0.2  # an explicit rate wins, under its new or old name
    _, cfg = parse_train_args(base)
    assert cfg.label_smoothing == 0.1  # no audit: the config's default
