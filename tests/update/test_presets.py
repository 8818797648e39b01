"""Presets are the method table of method.md; TraceConfig options are flags and YAML keys."""

from __future__ import annotations

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
        "trace-no-triage": ("flagged", "impact", False, "pref"),
        "u2a": ("flagged", "impact", False, "pref"),
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

    assert TraceConfig(output_dir="x", method="naive-oracle-dpo").sampling == "natural"
    with pytest.raises(InputError, match="sampling"):
        TraceConfig(output_dir="x", sampling="balanced")


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
        (["--flip_rate", "0.5"], "flip_rate"),
        (["--weight_normalisation", "l2"], "weight_normalisation"),
        (["--alpha_kl", "-1"], "alpha_kl"),
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
