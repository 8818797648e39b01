"""The records every stage passes on: preference pairs, verdicts, triage categories.

On disk every stage writes JSONL whose rows are `PreferencePair.to_dict()` plus the
stage's own fields (triage: `category`, `c_w`, `c_l`, `reason_w`, `reason_l`,
optionally `correction`; impact: `impact_weight`). Rows join on `id`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

Message = dict[str, str]
Prompt = str | list[Message]


class Category(str, Enum):
    """Stage-1 triage of an old pair under the new policy (docs/method.md, table in Stage 1)."""

    INVERT = "INVERT"  # c_w = 0, c_l = 1
    PUNISH = "PUNISH"  # c_w = 0, c_l = 0
    RETAIN = "RETAIN"  # c_w = 1
    UNKNOWN = "UNKNOWN"  # a verdict the judge could not give


class Label(str, Enum):
    COMPLIANT = "compliant"
    NON_COMPLIANT = "non_compliant"
    UNKNOWN = "unknown"

    @property
    def bit(self) -> int | None:
        """1 compliant, 0 non-compliant, None unknown (never silently 0 or 1)."""
        return {Label.COMPLIANT: 1, Label.NON_COMPLIANT: 0}.get(self)


@dataclass(frozen=True)
class Verdict:
    label: Label
    reason: str = ""
    raw: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label.value, "reason": self.reason, "raw": self.raw}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Verdict:
        return cls(Label(d["label"]), d.get("reason", ""), d.get("raw", ""))


def canonical_hash(*parts: Any) -> str:
    """SHA-256 (64 hex) of the canonical JSON of `parts`: sorted keys, no spaces, UTF-8."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def content_id(*parts: Any) -> str:
    """A stable 16-hex id of JSON-serialisable content."""
    return canonical_hash(*parts)[:16]


@dataclass(frozen=True)
class PreferencePair:
    """One old preference `(x, y_w, y_l)`: `chosen` is the old winner y_w, `rejected` the old loser y_l.

    `prompt` is a string or a list of chat messages (multi-turn kept whole); `chosen` and
    `rejected` are the text of the final assistant turn. `meta` carries what came with the row
    (PKU-SafeRLHF safety labels and harm categories per response, source row, ...).
    """

    prompt: Prompt
    chosen: str
    rejected: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", content_id(self.prompt, self.chosen, self.rejected))

    @property
    def prompt_text(self) -> str:
        """The prompt as plain text (conversations rendered as `role: content` lines)."""
        return render_prompt(self.prompt)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prompt": self.prompt,
            "chosen": self.chosen,
            "rejected": self.rejected,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreferencePair:
        return cls(d["prompt"], d["chosen"], d["rejected"], d.get("meta") or {}, d.get("id", ""))


def render_prompt(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1 and prompt[0].get("role") == "user":
        return prompt[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)
