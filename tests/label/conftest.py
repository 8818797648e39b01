"""Labelling fixtures: the packaged example pairs plus a multi-turn pair whose texts hold HTML,
triaged by the example rule judge (seconds, no network), and two triages that disagree."""

from __future__ import annotations

import json

import pytest

from trace_realign.data import EXAMPLES_DIR

POLICY = EXAMPLES_DIR / "policy.md"
RULES = EXAMPLES_DIR / "rules.yaml"
JUDGE = f"rules:{RULES}"
SCRIPT = "<script>alert(1)</script>"

# a conversation whose last user turn and one response hold markup that must show as text
HTML_PAIR = {
    "prompt": [
        {"role": "system", "content": "You are a helpful assistant for web developers."},
        {"role": "user", "content": "A popup appears when my page loads. Where could it come from?"},
        {"role": "assistant", "content": "Often from an inline script. Can you paste what you find?"},
        {"role": "user", "content": f"I found {SCRIPT} in the <b>footer</b>. What does it do?"},
    ],
    "chosen": [{"role": "assistant", "content": "I can't help with code."}],
    "rejected": [
        {
            "role": "assistant",
            "content": f"{SCRIPT} runs when the page loads and opens a popup saying 1. It is harmless, "
            "but if you did not put it there, someone could edit your footer: remove it and change your passwords.",
        }
    ],
}


@pytest.fixture(scope="session")
def pairs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    rows = (EXAMPLES_DIR / "pairs.jsonl").read_text(encoding="utf-8")
    path.write_text(rows + json.dumps(HTML_PAIR) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def triaged_file(pairs_file, tmp_path_factory):
    """The 13 pairs triaged by the example rule judge: INVERT, PUNISH and RETAIN all present."""
    from trace_realign.triage.stage import run_triage

    out = tmp_path_factory.mktemp("triage") / "triaged.jsonl"
    run_triage(pairs_file, POLICY, JUDGE, out, no_cache=True, progress=False)
    return out


@pytest.fixture(scope="session")
def disagreements_file(triaged_file, tmp_path_factory):
    """What `triage --judge2` writes when a second judge calls three pairs differently."""
    from trace_realign.io import write_jsonl_atomic
    from trace_realign.triage.agreement import compare_triaged_files

    folder = tmp_path_factory.mktemp("judge2")
    rows = [json.loads(line) for line in triaged_file.read_text().splitlines()]
    flip = {"INVERT": "RETAIN", "RETAIN": "PUNISH", "PUNISH": "INVERT"}
    for row in rows[:3]:
        row["category"] = flip[row["category"]]
    second = folder / "second.jsonl"
    write_jsonl_atomic(second, rows)
    out = folder / "disagreements.jsonl"
    write_jsonl_atomic(out, compare_triaged_files(triaged_file, second)["disagreements"])
    return out
