"""The demo's judge audits, on a slice of the scenario's responses:

- against an independent reading (`typed`): the rule judge that triages the data, measured against
  the typed evaluation judge, which reads each prompt's recorded type and the response with cues
  of its own written from the policy text (`evaluate.typed_judge`). Neither made the other, so their
  disagreement is a measured error of one against the other; it is what the report shows beside the
  triage (the source says it is not a human's label);
- against the scenario's construction (`rules`, `noisy`): the verdict each response has by how the
  scenario built it. The rule judge was written for that same construction, so this audit is a
  consistency check that cannot fail, not a measurement of the judge; the noisy judge (a share of
  verdicts flipped) shows what a real error looks like on the same slice.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trace_realign.evaluate.typed_judge import TypedJudge
from trace_realign.io import write_json_atomic, write_text_atomic
from trace_realign.judges.policy import Policy
from trace_realign.judges.spec import make_judge
from trace_realign.scenario.source import ScenarioSource, default_source
from trace_realign.schema import Label
from trace_realign.triage.audit import audit_judge


def scenario_truth(source: ScenarioSource | None = None) -> dict[str, dict[str, Label]]:
    """The new-policy verdict of each response of a scenario pair, by the pair's kind (`Kind.truth`):
    known from how the scenario was built, not from any judge. A neutral pair's needless refusal is
    left out: whether the new policy tolerates it is exactly what a judge may reasonably differ on."""
    return {name: kind.truth for name, kind in (source or default_source()).kinds.items()}


def scenario_labelled_rows(
    pairs: Sequence[Any], n: int = 50, seed: int = 0, source: ScenarioSource | None = None
) -> list[dict[str, Any]]:
    """`n` labelled item rows (the audit's item shape) drawn by `seed` from the scenario's pairs."""
    truth = scenario_truth(source)
    rows = []
    for p in pairs:
        for side, label in truth.get(p.meta.get("kind"), {}).items():
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


def typed_labelled_rows(
    rows: Sequence[dict[str, Any]],
    pairs: Sequence[Any],
    cues: str | Path,
    source: ScenarioSource | None = None,
) -> list[dict[str, Any]]:
    """The same items, labelled by the typed evaluation judge instead of the construction (items it
    cannot type are left out): an independent judgement to audit the rule judge against."""
    kinds = (source or default_source()).kinds
    judge = TypedJudge.from_file(cues)
    by_prompt = {p.prompt if isinstance(p.prompt, str) else json.dumps(p.prompt): p for p in pairs}
    out = []
    for r in rows:
        meta = by_prompt[r["prompt"]].meta
        harmful = meta.get("kind") in kinds and kinds[meta["kind"]].harmful
        typed = {
            "harm_category": meta.get("harm_category"),
            "harmful": harmful,
            "context": meta.get("context"),
        }
        verdict = judge.verdict(typed, r["response"])
        if verdict.label is not Label.UNKNOWN:
            out.append({**r, "label": verdict.label.value, "labelled_by": judge.identity})
    return out


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
    cues: str | Path | None = None,
    source: ScenarioSource | None = None,
) -> dict[str, dict[str, Any]]:
    """The demo's audits (module doc) on `n` responses drawn by `seed`: `typed` (the rule judge against
    the typed judge's reading, when `cues` names its cues file), `rules` and `noisy` (against the
    construction). Writes the labelled files and `audit_<name>.json` into `out_dir` and returns the
    audits. `also_to` (e.g. `RUN/triage/audit.json`) gets the one the report shows next to the
    triage: the independent `typed` audit when there is one, else `rules`. `source`: the scenario the
    pairs come from (default: the embedded one), whose kinds say what each response is by construction."""
    out = Path(out_dir)
    rows = scenario_labelled_rows(pairs, n, seed, source)
    labels = {"construction": rows}
    plan = {
        "rules": (f"rules:{rules}", "construction"),
        "noisy": (f"noisy:{noise:g}:rules:{rules}", "construction"),
    }
    if cues is not None:
        labels["typed"] = typed_labelled_rows(rows, pairs, cues, source)
        plan["typed"] = (f"rules:{rules}", "typed")
    done = {name: _audit_once(out, name, spec, labels[by], by, policy) for name, (spec, by) in plan.items()}
    if also_to is not None:
        shown = done.get("typed") or done["rules"]
        target = Path(also_to)
        if not target.is_file() or json.loads(target.read_text(encoding="utf-8")) != shown:
            write_json_atomic(target, shown)
    return done


def _audit_once(
    out: Path, name: str, spec: str, rows: list[dict[str, Any]], by: str, policy: Any
) -> dict[str, Any]:
    """`audit_<name>.json` of `spec` on `rows` (labelled `by`), reused when nothing changed (a rerun
    of the demo with the same slice and judges rewrites nothing)."""
    labelled = out / f"labelled_{by}.jsonl"
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    target = out / f"audit_{name}.json"
    if labelled.is_file() and labelled.read_text(encoding="utf-8") == text and target.is_file():
        doc = json.loads(target.read_text(encoding="utf-8"))
        if doc.get("judge") == make_judge(spec).identity:
            return doc
    write_text_atomic(labelled, text)
    source = (
        "the typed evaluation judge's reading (independent cues written from the policy text; not a human label)"
        if by == "typed"
        else "the scenario's construction (the rules were written for it: a consistency check that cannot fail)"
    )
    return audit_judge(spec, policy, labelled, out=target, source=source)
