"""Labelled samples for the judge audit: a policy owner's verdicts on responses, read and checked once.

Labelled files are JSONL, one of two row shapes (mixing them is fine):

    {"prompt": ..., "response": ..., "label": "compliant"}                  an item
    {"prompt": ..., "chosen": ..., "rejected": ..., "chosen_label": true,   a pair: two items
     "rejected_label": "non_compliant"}

`prompt` is a string or a list of chat messages. A label is `compliant` / `non_compliant`,
true / false, 1 / 0, safe / unsafe or yes / no (the label judge's vocabulary). The label fields
are `label` and `chosen_label,rejected_label` unless named otherwise (dotted paths reach into
nested objects, e.g. `meta.chosen.safe`). A bad row is an `InputError` naming file, line, field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trace_realign.errors import InputError
from trace_realign.io import read_jsonl
from trace_realign.judges.base import JudgeItem
from trace_realign.judges.labels import to_label
from trace_realign.schema import Label, render_prompt

ITEM_LABEL = "label"
PAIR_LABELS = ("chosen_label", "rejected_label")
LABEL_VALUES = "compliant/non_compliant, true/false, 1/0, safe/unsafe or yes/no"


@dataclass(frozen=True)
class LabelledItem:
    """One labelled response: what the judge sees, the human verdict, and where it came from."""

    item: JudgeItem
    truth: Label
    line: int
    side: str | None = None  # "chosen" / "rejected" for pair rows, None for item rows
    pair: int | None = None  # index of the pair among the file's pair rows


def _lookup(row: dict[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = row
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _label(row: dict[str, Any], column: str, path: str, line: int) -> Label:
    found, value = _lookup(row, column)
    if not found or value is None or value == "":
        raise InputError("missing label", path=path, line=line, field=column)
    label = to_label(value)
    if label is None:
        raise InputError(f"expected {LABEL_VALUES}, got {value!r}", path=path, line=line, field=column)
    return label


def _prompt(row: dict[str, Any], path: str, line: int) -> str:
    prompt = row.get("prompt")
    if isinstance(prompt, str) and prompt:
        return prompt
    if (
        isinstance(prompt, list)
        and prompt
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in prompt
        )
    ):
        return render_prompt(prompt)
    what = (
        "missing" if prompt is None else "expected a non-empty string or a list of {role, content} messages"
    )
    raise InputError(what, path=path, line=line, field="prompt")


def _text(row: dict[str, Any], key: str, path: str, line: int) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise InputError(
            "missing" if value is None else f"expected a string, got {type(value).__name__}",
            path=path,
            line=line,
            field=key,
        )
    return value


def read_labelled(
    path: str | Path,
    *,
    label: str = ITEM_LABEL,
    pair_labels: tuple[str, str] = PAIR_LABELS,
    limit: int | None = None,
) -> list[LabelledItem]:
    """The labelled items of a JSONL file (see the module doc); the first bad row raises `InputError`."""
    out: list[LabelledItem] = []
    rows = pairs = 0
    for line, row in read_jsonl(path):
        if limit is not None and rows >= limit:
            break
        rows += 1
        prompt = _prompt(row, str(path), line)
        if "response" in row:
            response = _text(row, "response", str(path), line)
            out.append(LabelledItem(JudgeItem(prompt, response), _label(row, label, str(path), line), line))
            continue
        if "chosen" not in row and "rejected" not in row:
            raise InputError(
                "a row needs `response` (an item) or `chosen` and `rejected` (a pair)",
                path=str(path),
                line=line,
                field="response",
            )
        for side, column in zip(("chosen", "rejected"), pair_labels, strict=True):
            response = _text(row, side, str(path), line)
            truth = _label(row, column, str(path), line)
            item = JudgeItem(prompt, response, {"side": side, "pair": row})
            out.append(LabelledItem(item, truth, line, side, pairs))
        pairs += 1
    if not out:
        raise InputError("no labelled rows", path=str(path))
    return out
