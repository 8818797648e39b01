"""The command line: every flag answers to `--flag_name` and `--flag-name` on every command."""

from __future__ import annotations

import pytest

from trace_realign.cli import build_parser, main


@pytest.mark.parametrize(
    "argv, attr, value",
    [
        (["triage", "--dataset_config", "x"], "dataset_config", "x"),
        (["triage", "--dataset-config", "x"], "dataset_config", "x"),
        (["triage", "--skip_bad_rows"], "skip_bad_rows", True),
        (["triage", "--unknown_as", "compliant"], "unknown_as", "compliant"),
        (
            [
                "evaluate",
                "--model",
                "m",
                "--prompts",
                "p",
                "--policy",
                "p",
                "--judge",
                "j",
                "--out",
                "o",
                "--max_new_tokens",
                "5",
                "--lm_eval",
                "mmlu",
            ],
            "max_new_tokens",
            5,
        ),  # fmt: skip
        (["demo", "--no_progress"], "no_progress", True),
        (
            ["evaluate", "--model", "m", "--prompts", "p", "--policy", "p", "--judge", "j", "--out", "o"],
            "dtype",
            "float32",
        ),  # the model options' default, as for score and train
        (["run", "c.yaml", "--stages", "triage"], "stages", ["triage"]),
        (["label", "--export_labelstudio", "ls"], "export_labelstudio", "ls"),
        (["label", "--import-labelstudio", "e.json"], "import_labelstudio", "e.json"),
        (["audit", "--agreement", "a.jsonl", "b.jsonl"], "agreement", ["a.jsonl", "b.jsonl"]),
    ],
)
def test_both_spellings_of_a_flag(argv, attr, value):
    parser, _ = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    assert not extra and getattr(args, attr) == value


def test_train_and_score_take_both_spellings(tmp_path):
    from trace_realign.impact.cli import parse_score_args
    from trace_realign.update.cli import parse_train_args

    _, train = parse_train_args(
        ["--model", "m", "--weighted", "w", "--output-dir", str(tmp_path), "--use-cpu", "--lora-r", "4"]
    )
    script, score = parse_score_args(
        ["--model", "m", "--triaged", "t", "--out", "o", "--gold-size", "5", "--lora-r", "4", "--no-progress"]
    )
    assert train.lora_r == score.lora_r == 4 and score.gold_size == 5 and script.no_progress


def test_score_and_train_share_model_defaults(tmp_path):
    from dataclasses import fields

    from trace_realign.impact.cli import parse_score_args
    from trace_realign.options import ModelConfig
    from trace_realign.update.cli import parse_train_args

    _, train = parse_train_args(
        ["--model", "m", "--weighted", "w", "--output_dir", str(tmp_path), "--use_cpu"]
    )
    _, score = parse_score_args(["--model", "m", "--triaged", "t", "--out", "o"])
    for f in fields(ModelConfig):
        assert getattr(train, f.name) == getattr(score, f.name) == getattr(ModelConfig(), f.name), f.name
    assert (train.max_length, train.seed, train.beta) == (score.max_length, score.seed, score.beta)
    assert train.loss_type == score.loss_type == ["sigmoid"]


def test_a_missing_score_input_is_exit_2(capsys):
    assert main(["score", "--model", "m", "--triaged", "t"]) == 2
    assert "--out is required" in capsys.readouterr().err
