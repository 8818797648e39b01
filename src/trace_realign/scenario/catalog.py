"""The scenario's hand-written content, read from `data/catalog.yaml` into typed constants.

Everything in the file was written for this project. Prompts and responses are built so that a
rule judge can read them (see `data/new_rules.yaml`):

- a legitimate prompt is a *context phrasing* (`legit_intros`: a teacher, a historian, a
  therapist, a journalist ..., each with words the rule judge looks for) followed by a *request*
  (`legit_requests`: "explain" requests make INVERT prompts, "walk" requests PUNISH prompts, where
  the old loser was harmful compliance);
- a malicious prompt is a how-to *request* (`malicious_requests`) followed by a malicious *cue*
  (`malicious_cues`: "without getting caught", "revenge on ...");
- refusals say "I can't"/"I won't"; contextual answers name their perspectives, uncertainty,
  sources and a constructive alternative (one frame, short enough that a generation cut at
  `max_new_tokens` still carries all four); harmful compliance carries only "[REDACTED ...]"
  placeholders, never an operational detail (tests/scenario checks that nothing else gets in).

The scenario holds out whole topics, context phrasings, requests, cues and neutral prefixes
(`scenario.generate.split_pools`), so every pool is large enough to split three ways.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CATALOG_FILE = Path(__file__).parent / "data" / "catalog.yaml"


@dataclass(frozen=True)
class HarmCategory:
    code: str
    name: str
    topics: tuple[str, ...]
    course: str  # the subject a teacher or student would file the topic under
    kind: str  # "Topic is {kind}." in the contextual answer
    perspective: str
    alternative: str
    source: str
    # topics as a malicious user would put them, where the neutral name reads oddly (S17)
    malicious_topics: tuple[str, ...] = ()

    @property
    def tier(self) -> str:
        return next(t for t, codes in TIERS.items() if self.code in codes)


def _strings(data: dict[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{CATALOG_FILE}: field {key!r} must be a non-empty list of strings")
    return tuple(value)


def _load(path: Path = CATALOG_FILE) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: must be a mapping")
    return data


_DATA = _load()

# The new policy's tiers (method.md, from the paper's PKU-SafeRLHF shift).
TIERS: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in _DATA["tiers"].items()}
ZERO_TOLERANCE = _strings(_DATA, "zero_tolerance")
# Which legitimate contexts each category's exception allows; categories absent here have none.
EXCEPTIONS: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in _DATA["exceptions"].items()}
LEGIT_CONTEXTS = _strings(_DATA, "legit_contexts")

CATEGORIES: tuple[HarmCategory, ...] = tuple(
    HarmCategory(
        code=c["code"],
        name=c["name"],
        topics=tuple(c["topics"]),
        course=c["course"],
        kind=c["kind"],
        perspective=c["perspective"],
        alternative=c["alternative"],
        source=c["source"],
        malicious_topics=tuple(c.get("malicious_topics", ())),
    )
    for c in _DATA["categories"]
)
BY_CODE = {c.code: c for c in CATEGORIES}

# Context phrasings ({course}, {topic}) by context, and the requests that follow them ("it" is the topic).
LEGIT_INTROS: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in _DATA["legit_intros"].items()}
LEGIT_REQUESTS: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in _DATA["legit_requests"].items()}
MALICIOUS_REQUESTS = _strings(_DATA, "malicious_requests")
MALICIOUS_CUES = _strings(_DATA, "malicious_cues")

# What the contextual answer says the user is working on, by context.
PURPOSE: dict[str, str] = dict(_DATA["purpose"])
FLAT_REFUSALS = _strings(_DATA, "flat_refusals")
MORALISING_REFUSALS = _strings(_DATA, "moralising_refusals")
CONTEXTUAL_ANSWERS = _strings(_DATA, "contextual_answers")
PLACEHOLDERS = _strings(_DATA, "placeholders")
HARMFUL_COMPLIANCE = _strings(_DATA, "harmful_compliance")

# Neutral general-knowledge questions with plain answers (no harm category, no context marker).
NEUTRAL_QA: tuple[tuple[str, str], ...] = tuple((r["question"], r["answer"]) for r in _DATA["neutral_qa"])
NEUTRAL_PREFIXES = tuple(_DATA["neutral_prefixes"])  # may hold "" (no prefix)
# Old-policy losers on neutral prompts: a needless refusal (the old model's other option).
NEUTRAL_REJECTED = _strings(_DATA, "neutral_rejected")

# Utility checks: a small general-knowledge multiple-choice set (scored by log-likelihood of each
# choice) and a neutral text sample (scored by perplexity).
MULTIPLE_CHOICE: tuple[tuple[str, tuple[str, ...], int], ...] = tuple(
    (r["question"], tuple(r["choices"]), int(r["answer"])) for r in _DATA["multiple_choice"]
)
NEUTRAL_TEXT = _strings(_DATA, "neutral_text")


def legit_prompt(intro: str, request: str, *, topic: str, course: str) -> str:
    """A legitimate prompt: the context phrasing, then the request."""
    return f"{intro.format(topic=topic, course=course)} {request.format(topic=topic)}"


def malicious_prompt(request: str, cue: str, *, topic: str) -> str:
    """A malicious prompt: the how-to request, then the malicious cue."""
    return f"{request.format(topic=topic)} {cue}"
