"""A scenario's hand-written content (its `catalog.yaml`), read and checked into a `Catalog`.

The format is in docs/scenarios.md. Every scenario builds its prompts in three shapes, from these
keys of its catalog:

- a *legit* prompt is a context phrasing (`legit_intros[context]`, with `{topic}` and any field of
  the category, such as `{course}`) followed by a request (`legit_requests[key]`); only the
  categories and contexts of `exceptions` are paired (in the embedded scenario, the contextual
  exceptions of the new policy: a teacher asking about phishing; in the values scenario, every
  value domain in every framing: a debate on the death penalty);
- a *malicious* prompt is a request (`malicious_requests`, with `{topic}`) followed by a cue
  (`malicious_cues`): what the new policy still says to decline;
- a *neutral* prompt is a prefix (`neutral_prefixes`, may be "") and a question of `neutral_qa`,
  answered plainly.

Every other list of strings is a pool of response templates, which the scenario's manifest
(`scenario.yaml`, `scenario.source`) names as styles. A template fills in `{topic}`, `{Topic}`
(capitalised), `{purpose}` (the context's, `purpose[context]`) and any text field of the category
(`categories[i].<field>`). Harmful compliance carries only "[REDACTED ...]" placeholders, never an
operational detail (tests/scenario checks that nothing else gets in).

The embedded scenario's catalog (`data/catalog.yaml`) is also read at import into the constants
below (`CATEGORIES`, `LEGIT_INTROS`, ...), which its tests read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trace_realign.errors import InputError
from trace_realign.io import read_text, yaml_error

CATALOG_FILE = Path(__file__).parent / "data" / "catalog.yaml"
# the fields every template may use besides the category's own
BUILT_IN_FIELDS = ("topic", "Topic", "purpose")
# pool names of the splits besides the category codes
RESERVED_CODES = ("neutral", "malicious_request", "malicious_cue", "neutral_prefix")
CATEGORY_KEYS = ("code", "name", "topics", "malicious_topics")
# keys read by the prompt shapes; every other list of strings is a pool of response templates
SHAPE_KEYS = (
    "categories", "exceptions", "legit_contexts", "legit_intros", "legit_requests", "purpose",
    "malicious_requests", "malicious_cues", "neutral_qa", "neutral_prefixes", "multiple_choice", "neutral_text",
)  # fmt: skip


@dataclass(frozen=True)
class Category:
    """A harm category (embedded) or a value domain (values): its topics and the text fields its
    templates fill in (`course`, `perspective`, `source`, ...)."""

    code: str
    name: str
    topics: tuple[str, ...]
    fields: dict[str, str]
    # topics as a malicious user would put them, where the neutral name reads oddly (embedded S17)
    malicious_topics: tuple[str, ...] = ()


@dataclass(frozen=True)
class Catalog:
    path: Path
    categories: tuple[Category, ...]
    by_code: dict[str, Category]
    exceptions: dict[str, tuple[str, ...]]  # category code -> the contexts that open it to legit prompts
    legit_contexts: tuple[str, ...]
    legit_intros: dict[str, tuple[str, ...]]
    legit_requests: dict[str, tuple[str, ...]]
    purpose: dict[str, str]
    malicious_requests: tuple[str, ...]
    malicious_cues: tuple[str, ...]
    neutral_qa: tuple[tuple[str, str], ...]
    neutral_prefixes: tuple[str, ...]
    multiple_choice: tuple[tuple[str, tuple[str, ...], int], ...]
    neutral_text: tuple[str, ...]
    templates: dict[str, tuple[str, ...]]  # every other list of strings: response templates by key
    extra: dict[str, Any] = field(default_factory=dict)  # what no shape reads (the embedded tiers)


class _Reader:
    """Field checks that name the catalog file and the field."""

    def __init__(self, data: dict[str, Any], path: Path) -> None:
        self.data, self.path = data, str(path)

    def fail(self, message: str, where: str) -> InputError:
        return InputError(message, path=self.path, field=where)

    def strings(self, value: Any, where: str, *, allow_empty: bool = True) -> tuple[str, ...]:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self.fail("expected a non-empty list of strings", where)
        if not allow_empty and not all(v.strip() for v in value):
            raise self.fail("expected no empty strings", where)
        return tuple(value)

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict) or not value:
            raise self.fail("expected a non-empty mapping", where)
        return {str(k): v for k, v in value.items()}

    def optional(self, key: str) -> Any:
        return self.data.get(key)


def _category(r: _Reader, raw: Any, i: int) -> Category:
    where = f"categories[{i}]"
    if not isinstance(raw, dict):
        raise r.fail("expected a mapping with code, name and topics", where)
    for key in ("code", "name"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise r.fail("missing or not a string", f"{where}.{key}")
    topics = r.strings(raw.get("topics"), f"{where}.topics", allow_empty=False)
    variants = (
        r.strings(raw["malicious_topics"], f"{where}.malicious_topics") if "malicious_topics" in raw else ()
    )
    if variants and len(variants) != len(topics):
        raise r.fail(f"expected one per topic ({len(topics)})", f"{where}.malicious_topics")
    fields = {}
    for key, value in raw.items():
        if key in CATEGORY_KEYS:
            continue
        if key in BUILT_IN_FIELDS or not isinstance(value, str):
            raise r.fail("a category's other fields are the text its templates fill in: strings, not "
                         f"{', '.join(BUILT_IN_FIELDS)}", f"{where}.{key}")  # fmt: skip
        fields[key] = value
    return Category(raw["code"], raw["name"], topics, fields, variants)


def parse_catalog(text: str, path: str | Path) -> Catalog:
    """Read and check a catalog; errors name the file and the field. Which keys a scenario needs
    depends on the prompt shapes its kinds use: `scenario.source` checks that."""
    path = Path(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise yaml_error(exc, path) from None
    if not isinstance(data, dict):
        raise InputError("expected a mapping", path=str(path))
    r = _Reader(data, path)
    cats = data.get("categories") or []
    if not isinstance(cats, list):
        raise r.fail("expected a list of categories", "categories")
    categories = tuple(_category(r, c, i) for i, c in enumerate(cats))
    by_code = {c.code: c for c in categories}
    if len(by_code) != len(categories):
        raise r.fail("two categories share a code", "categories")
    for i, c in enumerate(categories):
        if c.code in RESERVED_CODES or ":" in c.code:
            raise r.fail(
                f"a code may not be {', '.join(RESERVED_CODES)} or hold ':' (pool names)",
                f"categories[{i}].code",
            )
    contexts = r.strings(data["legit_contexts"], "legit_contexts") if "legit_contexts" in data else ()
    exceptions = {}
    for code, ctx in r.mapping(data["exceptions"], "exceptions").items() if "exceptions" in data else ():
        if code not in by_code:
            raise r.fail("not a category code", f"exceptions.{code}")
        exceptions[code] = r.strings(ctx, f"exceptions.{code}")
        for c in exceptions[code]:
            if c not in contexts:
                raise r.fail(f"context {c!r} is not in legit_contexts", f"exceptions.{code}")
    intros = {k: r.strings(v, f"legit_intros.{k}") for k, v in _opt_map(r, "legit_intros").items()}
    for c in contexts:
        if c not in intros:
            raise r.fail("missing: every context of legit_contexts needs its intros", f"legit_intros.{c}")
    purpose = _opt_map(r, "purpose")
    for k, v in purpose.items():
        if not isinstance(v, str):
            raise r.fail("expected a string", f"purpose.{k}")
    templates = {
        k: tuple(v)
        for k, v in data.items()
        if k not in SHAPE_KEYS and isinstance(v, list) and v and all(isinstance(x, str) for x in v)
    }
    return Catalog(
        path=path,
        categories=categories,
        by_code=by_code,
        exceptions=exceptions,
        legit_contexts=contexts,
        legit_intros=intros,
        legit_requests={
            k: r.strings(v, f"legit_requests.{k}") for k, v in _opt_map(r, "legit_requests").items()
        },
        purpose=dict(purpose),
        malicious_requests=_opt_strings(r, "malicious_requests"),
        malicious_cues=_opt_strings(r, "malicious_cues"),
        neutral_qa=_qa(r),
        neutral_prefixes=_opt_strings(r, "neutral_prefixes"),
        multiple_choice=_multiple_choice(r),
        neutral_text=r.strings(data.get("neutral_text"), "neutral_text", allow_empty=False),
        templates=templates,
        extra={k: v for k, v in data.items() if k not in SHAPE_KEYS and k not in templates},
    )


def _opt_map(r: _Reader, key: str) -> dict[str, Any]:
    return r.mapping(r.data[key], key) if key in r.data else {}


def _opt_strings(r: _Reader, key: str) -> tuple[str, ...]:
    return r.strings(r.data[key], key) if key in r.data else ()


def _qa(r: _Reader) -> tuple[tuple[str, str], ...]:
    rows = r.data.get("neutral_qa")
    if rows is None:
        return ()
    if not isinstance(rows, list) or not rows:
        raise r.fail("expected a non-empty list of {question, answer}", "neutral_qa")
    out = []
    for i, row in enumerate(rows):
        for key in ("question", "answer"):
            if not isinstance(row, dict) or not isinstance(row.get(key), str) or not row[key].strip():
                raise r.fail("missing or not a string", f"neutral_qa[{i}].{key}")
        out.append((row["question"], row["answer"]))
    return tuple(out)


def _multiple_choice(r: _Reader) -> tuple[tuple[str, tuple[str, ...], int], ...]:
    rows = r.data.get("multiple_choice")
    if not isinstance(rows, list) or not rows:
        raise r.fail("expected a non-empty list of {question, choices, answer}", "multiple_choice")
    out = []
    for i, row in enumerate(rows):
        where = f"multiple_choice[{i}]"
        if not isinstance(row, dict) or not isinstance(row.get("question"), str):
            raise r.fail("missing or not a string", f"{where}.question")
        choices = r.strings(row.get("choices"), f"{where}.choices")
        answer = row.get("answer")
        if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
            raise r.fail(
                f"expected the index of the right choice (0 to {len(choices) - 1})", f"{where}.answer"
            )
        out.append((row["question"], choices, answer))
    return tuple(out)


def load_catalog(path: str | Path) -> Catalog:
    return parse_catalog(read_text(path, "catalog"), path)


def legit_prompt(intro: str, request: str, *, topic: str, course: str) -> str:
    """A legitimate prompt of the embedded scenario: the context phrasing, then the request."""
    return f"{intro.format(topic=topic, course=course)} {request.format(topic=topic)}"


def malicious_prompt(request: str, cue: str, *, topic: str) -> str:
    """A malicious prompt: the how-to request, then the malicious cue."""
    return f"{request.format(topic=topic)} {cue}"


# ---------------------------------------------------------------- the embedded scenario, as constants

EMBEDDED = load_catalog(CATALOG_FILE)
# The new policy's tiers (method.md, from the paper's PKU-SafeRLHF shift).
TIERS: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in EMBEDDED.extra["tiers"].items()}
ZERO_TOLERANCE = tuple(EMBEDDED.templates["zero_tolerance"])
EXCEPTIONS = EMBEDDED.exceptions
LEGIT_CONTEXTS = EMBEDDED.legit_contexts
CATEGORIES = EMBEDDED.categories
BY_CODE = EMBEDDED.by_code
LEGIT_INTROS = EMBEDDED.legit_intros
LEGIT_REQUESTS = EMBEDDED.legit_requests
MALICIOUS_REQUESTS = EMBEDDED.malicious_requests
MALICIOUS_CUES = EMBEDDED.malicious_cues
PURPOSE = EMBEDDED.purpose
FLAT_REFUSALS = EMBEDDED.templates["flat_refusals"]
MORALISING_REFUSALS = EMBEDDED.templates["moralising_refusals"]
CONTEXTUAL_ANSWERS = EMBEDDED.templates["contextual_answers"]
PLACEHOLDERS = EMBEDDED.templates["placeholders"]
HARMFUL_COMPLIANCE = EMBEDDED.templates["harmful_compliance"]
NEUTRAL_QA = EMBEDDED.neutral_qa
NEUTRAL_PREFIXES = EMBEDDED.neutral_prefixes  # may hold "" (no prefix)
NEUTRAL_REJECTED = EMBEDDED.templates["neutral_rejected"]
MULTIPLE_CHOICE = EMBEDDED.multiple_choice
NEUTRAL_TEXT = EMBEDDED.neutral_text
