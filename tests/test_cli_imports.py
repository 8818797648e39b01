"""Start-up cost of the CLI: printing help and triaging with a rules judge never import torch (or
transformers), which would add seconds and hundreds of MB to commands that need neither."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from trace_realign.data import EXAMPLES_DIR

HEAVY = ("torch", "transformers", "peft", "accelerate", "datasets", "trl")
WEB = ("starlette", "uvicorn", "jinja2", "multipart", "python_multipart")  # only `label` serving needs them

PROBE = """
import json, sys
from trace_realign.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("MODULES " + json.dumps({"code": code, "loaded": sorted(m for m in {heavy} if m in sys.modules)}))
"""


def loaded_after(argv: list[str], tmp_path, heavy: tuple[str, ...] = HEAVY) -> dict:
    env = {**os.environ, "TRACE_REALIGN_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.replace("{heavy}", repr(heavy)), *argv],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    line = next(x for x in proc.stdout.splitlines() if x.startswith("MODULES "))
    return json.loads(line.removeprefix("MODULES "))


@pytest.mark.parametrize(
    ("argv", "allowed"),
    [
        (["--help"], []),
        (["triage", "--help"], []),
        (["label", "--help"], []),
        # score's options are parsed by transformers' HfArgumentParser (one vocabulary with train):
        # that light module may load, torch and the rest may not
        (["score", "--help"], ["transformers"]),
    ],
)
def test_help_does_not_import_torch(argv, allowed, tmp_path):
    got = loaded_after(argv, tmp_path)
    assert got["code"] == 0 and got["loaded"] == allowed, got


def test_triage_with_a_rules_judge_does_not_import_torch(tmp_path):
    argv = ["triage", "--data", str(EXAMPLES_DIR / "pairs.jsonl"), "--policy", str(EXAMPLES_DIR / "policy.md"),
            "--judge", f"rules:{EXAMPLES_DIR / 'rules.yaml'}", "--out", str(tmp_path / "triaged.jsonl"),
            "--no-progress"]  # fmt: skip
    got = loaded_after(argv, tmp_path)
    assert got["code"] == 0 and (tmp_path / "triaged.jsonl").exists()
    assert got["loaded"] == [], got


def test_label_help_loads_no_web_framework(tmp_path):
    got = loaded_after(["label", "--help"], tmp_path, HEAVY + WEB)
    assert got["code"] == 0 and got["loaded"] == [], got
