"""The demo's judge audit: the rule judge, and the same judge with a share of its verdicts flipped,
on a labelled slice of the scenario, with the verdict each response has by construction.

Read it for what it is: the truth here is the scenario's construction, and the rule judge was
written for the same scenario, so its audit is a consistency check of the rules, not evidence
about a judge one would hire.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trace_realign.io import write_json_atomic, write_text_atomic
from trace_realign.judges.policy import Policy
from trace_realign.judges.spec import make_judge
from trace_realign.schema import Label
from trace_realign.triage.audit import audit_judge

# The new-policy verdict of each response of a scenario pair, by the pair's kind (scenario/generate.py):
# known from how the scenario was built, not from any judge. A neutral pair's needless refusal is
# left out: whether the new policy tolerates it is exactly what a judge may reasonably differ on.
SCENARIO_TRUTH = {
    "invert": {"chosen": Label.NON_COMPLIANT, "rejected": Label.COMPLIANT},
    "punish": {"chosen": Label.NON_COMPLIANT, "rejected": Label.NON_COMPLIANT},
    "malicious": {"chosen": Label.COMPLIANT, "rejected": Label.NON_COMPLIANT},
    "neutral": {"chosen": Label.COMPLIANT},
}


def scenario_labelled_rows(pairs: Sequence[Any], n: int = 50, seed: int = 0) -> list[dict[str, Any]]:
    """`n` labelled item rows (the audit's item shape) drawn by `seed` from the scenario's pairs."""
    rows = []
    for p in pairs:
        for side, label in SCENARIO_TRUTH.get(p.meta.get("kind"), {}).items():
            response = p.chosen if side == "chosen" else p.rejected
            rows.append(
                {
                    "prompt": p.prompt,
                    "response": response,
                    "label": label.value,
                    "kind": p.meta["kind"],
                    "side": side,
                }
            )
    random.Random(seed).shuffle(rows)
    return rows[:n]


def audit_scenario_judges(
    pairs: Sequence[Any],
    policy: str | Path | Policy,
    rules: str | Path,
    out_dir: str | Path,
    *,
    n: int = 50,
    noise: float = 0.2,
    seed: int = 0,
    also_to: str | Path | None = None,
) -> dict[str, dict[str, Any]]:
    """The demo's audit: the rule judge and the same judge with `noise` of its verdicts flipped, on a
    labelled slice of the scenario. Writes `labelled.jsonl`, `audit_rules.json`, `audit_noisy.json`
    into `out_dir` and returns both audits. `also_to` (e.g. `RUN/triage/audit.json`) gets the rule
    judge's audit too, where the report shows it next to the triage."""
    out = Path(out_dir)
    labelled = out / "labelled.jsonl"
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in scenario_labelled_rows(pairs, n, seed))
    judges = {"rules": f"rules:{rules}", "noisy": f"noisy:{noise:g}:rules:{rules}"}
    identities = {name: make_judge(spec).identity for name, spec in judges.items()}
    files = {name: out / f"audit_{name}.json" for name in judges}
    # a rerun of the demo with the same slice and judges rewrites nothing
    current = labelled.is_file() and labelled.read_text(encoding="utf-8") == text
    done = {}
    for name, f in files.items():
        if current and f.is_file():
            doc = json.loads(f.read_text(encoding="utf-8"))
            if doc.get("judge") == identities[name]:
                done[name] = doc
    if len(done) < len(judges):
        write_text_atomic(labelled, text)
        done = {name: audit_judge(spec, policy, labelled, out=files[name]) for name, spec in judges.items()}
    if also_to is not None:
        target = Path(also_to)
        if not target.is_file() or json.loads(target.read_text(encoding="utf-8")) != done["rules"]:
            write_json_atomic(target, done["rules"])
    return done
