"""One vocabulary: an option that means the same thing in two commands is spelt the same in both.

The test walks every command's parser (argparse for most, the dataclasses `HfArgumentParser` reads
for `score` and `train`) and checks each shared meaning below against it, and that an ordinary
run prints no third-party warning on stderr."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import fields

import pytest

from trace_realign.cli import COMMANDS, build_parser

# meaning -> the commands that take it (label and report show no progress bars; run reads its
# output folder and options from its YAML file)
SHARED = {
    "no_progress": ["triage", "audit", "score", "train", "run", "evaluate", "demo"],
    "out": ["triage", "audit", "label", "score", "train", "evaluate", "report", "demo"],
    "config": ["triage", "train", "run", "demo"],
}


def options_of(command: str) -> set[str]:
    """Every option `command` takes, with `-` and `_` alike (positional arguments by name)."""
    if command in ("score", "train"):
        from trace_realign.impact.cli import ScoreScriptArguments
        from trace_realign.impact.stage import ScoreConfig
        from trace_realign.update.cli import TrainScriptArguments
        from trace_realign.update.config import TraceConfig

        classes = (
            (ScoreScriptArguments, ScoreConfig) if command == "score" else (TrainScriptArguments, TraceConfig)
        )
        found = {f.name for cls in classes for f in fields(cls)}
        found.add("config") if command == "train" else None
        return found
    parser, _ = build_parser([command])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    names = set()
    for action in sub._actions:
        names.update(o.lstrip("-").replace("-", "_") for o in action.option_strings if o.startswith("--"))
        if not action.option_strings:
            names.add(action.dest)
    return names


@pytest.mark.parametrize("meaning", sorted(SHARED))
def test_shared_options_are_spelt_alike(meaning):
    missing = [c for c in SHARED[meaning] if meaning not in options_of(c)]
    assert not missing, f"--{meaning.replace('_', '-')} is refused by: {', '.join(missing)}"


def test_every_command_is_walked():
    assert {c for cs in SHARED.values() for c in cs} == set(COMMANDS)


@pytest.mark.slow
def test_an_ordinary_run_prints_no_third_party_warning(tmp_path):
    """The quick demo end to end (triage, score, train, evaluate, report) in a fresh process: stderr
    holds our own stage lines and nothing that warns."""
    env = {**os.environ, "TRACE_REALIGN_CACHE": str(tmp_path / "cache")}
    env.pop("TRACE_REALIGN_VERBOSE", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trace_realign.cli",
            "demo",
            "--quick",
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    noisy = [
        line for line in proc.stderr.splitlines() if "warn" in line.lower() or "deprecat" in line.lower()
    ]
    assert not noisy, "\n".join(noisy[:10])
    # --verbose shows the rest again
    loud = subprocess.run(
        [sys.executable, "-m", "trace_realign.cli", "--verbose", "demo", "--quick", "--out", str(tmp_path / "run"),
         "--no-progress"],
        capture_output=True, text=True, env=env, check=False, timeout=600,
    )  # fmt: skip
    assert loud.returncode == 0


def test_deepspeed_is_told_there_is_no_accelerator_before_any_stage_asks():
    """Evaluation alone (`run --stages evaluate`, no training first) reaches accelerate through
    `process_state`; on a machine without an accelerator DeepSpeed, when installed, then warned
    "Setting accelerator to CPU" while an adapter was converted for CTranslate2. Checked in a fresh
    process: `process_state` sets `DS_ACCELERATOR` as training does, and keeps a user's choice."""
    code = (
        "import os, torch\n"
        "from trace_realign.model.loading import process_state\n"
        "process_state()\n"
        "print(torch.accelerator.is_available(), os.environ.get('DS_ACCELERATOR'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    has_accelerator, value = out.stdout.split()
    assert value == ("None" if has_accelerator == "True" else "cpu")
    mine = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**env, "DS_ACCELERATOR": "mps"},
        check=True,
    )
    assert mine.stdout.split()[1] == "mps"
