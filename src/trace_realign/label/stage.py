"""Labels from the policy's owners, from Python: `label(...)` draws (or reopens) the sample and
serves the review page; `audit_commands` is the `trace-realign audit` line that reads the result.

    from trace_realign.label.stage import label
    label("runs/x/labels", "alice", triaged="runs/x/triage/triaged.jsonl", size=60,
          policy="new_policy.md", judges=["rules:new_rules.yaml"])

`trace-realign label` (label/cli.py) parses flags into these arguments.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from trace_realign.label.app import LabelSession, serve
from trace_realign.label.sample import SAMPLE_FILE, Sample, prepare_sample
from trace_realign.label.store import LabelStore, shown

JUDGE_PLACEHOLDER = "JUDGE_SPEC"


def audit_commands(labels: str | Path, policy: str | Path, judges: Sequence[str] = ()) -> list[str]:
    """The `trace-realign audit` line for each judge (a placeholder spec when none is known)."""
    return [
        shlex.join(
            ["trace-realign", "audit", "--labelled", shown(labels), "--policy", shown(policy), "--judge", j]
        )
        for j in (list(judges) or [JUDGE_PLACEHOLDER])
    ]


def other_reviewers(out_dir: str | Path, reviewer: str) -> list[Path]:
    """The other reviewers' labels files in `out_dir`."""
    return sorted(
        p
        for p in Path(out_dir).glob("*.jsonl")
        if p.stem != reviewer and not p.name.endswith(".skipped.jsonl") and not p.name.startswith(".")
    )


def agreement_command(out_dir: str | Path, reviewer: str) -> str | None:
    """`trace-realign audit --agreement` between this reviewer and the first other one, if any."""
    others = other_reviewers(out_dir, reviewer)
    if not others:
        return None
    mine = Path(out_dir) / f"{reviewer}.jsonl"
    return shlex.join(["trace-realign", "audit", "--agreement", shown(mine), shown(others[0])])


def label(
    out: str | Path,
    reviewer: str,
    *,
    triaged: str | Path | None = None,
    data: str | Path | None = None,
    disagreements: str | Path | None = None,
    size: int | None = None,
    seed: int | None = None,
    policy: str | Path | None = None,
    judges: Sequence[str] = (),
    host: str = "127.0.0.1",
    port: int = 8765,
    on_ready: Callable[[str, Sample, LabelStore, list[str]], None] | None = None,
) -> dict[str, Any]:
    """Serve the review page for `reviewer` over the sample in `out` (drawn first if there is none)
    until Ctrl-C; return where the labels are, the progress and the audit lines.

    `on_ready(url, sample, store, audit_lines)` is called once the page listens (the CLI prints)."""

    sample = prepare_sample(
        out, triaged=triaged, data=data, disagreements=disagreements, size=size, seed=seed, policy=policy
    )
    store = LabelStore(out, reviewer, sample)
    try:
        lines = audit_commands(store.path, sample.policy, judges)
        session = LabelSession(sample, store, lines, agreement_command(out, reviewer))
        serve(
            session, host, port, None if on_ready is None else lambda url: on_ready(url, sample, store, lines)
        )
    finally:
        store.close()
    return {
        "labels": str(store.path),
        "sample": str(Path(out) / SAMPLE_FILE),
        "progress": store.progress(),
        "audit": lines,
        "agreement": agreement_command(out, reviewer),
    }
