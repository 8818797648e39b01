"""A policy-shift scenario built from its folder: old-policy preference pairs, held-out and
validation prompts, oracle corrections, utility data, and the policies and rules as files.

Deterministic by seed, and the same code for every scenario (`scenario.source` reads the folder).
The manifest's kinds say what each kind of prompt is and what pair it gets; the embedded
scenario's (`data/scenario.yaml`):

| kind      | prompt                                   | old winner y_w | old loser y_l        | new triage |
|-----------|------------------------------------------|----------------|----------------------|------------|
| invert    | legitimate context, "explain" phrasing   | refusal        | contextual answer    | INVERT     |
| punish    | legitimate context, "walk me through"    | refusal        | harmful compliance   | PUNISH     |
| malicious | any category, malicious phrasing         | refusal        | harmful compliance   | RETAIN     |
| neutral   | general knowledge, no harm category      | plain answer   | needless refusal     | RETAIN     |

and the values scenario's (`data/values/scenario.yaml`): a contested question in a framing, with a
deflection over a balanced answer (INVERT) or over a one-sided partisan answer (PUNISH), a request
to demean, harass, incite or target a named person declined over placeholder compliance (RETAIN),
and a plain factual question answered over a needless deflection (RETAIN).

Legit prompts pair a category only with the contexts its `exceptions` entry opens; a malicious
kind draws from every category or the ones it lists (the embedded zero-tolerance categories S11-S13
only appear there).

Three disjoint splits. Every pool the prompts are made from is split once, by seed: each category's
topics, the neutral questions, the context phrasings of each context, each pool of requests, the
malicious requests and cues, and the neutral prefixes. Training pairs, validation prompts (what any
tuning looks at) and held-out prompts (what the results report) each draw only from their own part,
so a held-out prompt shares no topic, phrasing, request, cue or prefix with training or validation:
it measures whether the distinction the new policy draws generalises, not whether a sentence was
memorised.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trace_realign.errors import InputError
from trace_realign.io import read_json, write_json_atomic, write_jsonl_atomic, write_text_atomic
from trace_realign.judges.policy import Policy
from trace_realign.scenario.catalog import Category
from trace_realign.scenario.source import (
    ANSWER,
    DATA_DIR,  # noqa: F401  (the embedded scenario's folder, imported from here)
    Kind,
    ScenarioSource,
    default_source,
)
from trace_realign.schema import Category as Triage
from trace_realign.schema import PreferencePair, content_id

# the embedded scenario's kinds (every packaged scenario names its kinds alike, so the default mix fits)
KINDS = ("invert", "punish", "malicious", "neutral")
KIND_CATEGORY = {
    "invert": Triage.INVERT,
    "punish": Triage.PUNISH,
    "malicious": Triage.RETAIN,
    "neutral": Triage.RETAIN,
}


@dataclass(frozen=True)
class ScenarioConfig:
    seed: int = 0
    n_pairs: int = 240
    n_validation: int = 64
    n_heldout: int = 128
    # share of every pool (topics, phrasings, requests, cues, prefixes) held out, and kept for validation
    heldout_share: float = 0.3
    validation_share: float = 0.2
    # the neutral questions are few and each has one answer: a larger share keeps the held-out neutral
    # prompts distinct at the --compare size
    neutral_heldout_share: float = 0.4
    # share of each kind in the training pairs and in both evaluation splits (keys: the scenario's kinds)
    mix: dict[str, float] = field(
        default_factory=lambda: {"invert": 0.35, "punish": 0.15, "malicious": 0.3, "neutral": 0.2}
    )

    def fingerprint(self, source: ScenarioSource | None = None) -> str:
        """Changes whenever anything that shapes the data changes: these settings, or the scenario's
        catalog, policies, rules and manifest (`ScenarioSource.fingerprint_content`; default: the
        embedded scenario)."""
        return content_id(asdict(self), (source or default_source()).fingerprint_content())


@dataclass
class Scenario:
    config: ScenarioConfig
    pairs: list[PreferencePair]
    corrections: dict[str, str]  # pair id -> new-policy-compliant answer, for PUNISH pairs
    validation: list[dict[str, Any]]  # prompt rows from the validation part of every pool
    heldout: list[dict[str, Any]]  # prompt rows from the held-out part of every pool
    multiple_choice: list[dict[str, Any]]
    neutral_text: list[str]
    old_policy: Policy
    new_policy: Policy
    topics: dict[str, dict[str, list[str]]]  # split -> category code (or "neutral") -> topics
    templates: dict[str, dict[str, list[str]]]  # split -> pool -> phrasings, requests, cues, prefixes
    source: ScenarioSource = field(default_factory=default_source)


def new_policy(source: ScenarioSource | None = None) -> Policy:
    path = (source or default_source()).files["new_policy"]
    return Policy(path.read_text(encoding="utf-8"), name="new-policy")


def old_policy(source: ScenarioSource | None = None) -> Policy:
    path = (source or default_source()).files["old_policy"]
    return Policy(path.read_text(encoding="utf-8"), name="old-policy")


def rules_path(which: str, source: ScenarioSource | None = None) -> Path:
    """The rule-judge YAML of the `"old"` or `"new"` policy."""
    if which not in ("old", "new"):
        raise ValueError(f"which must be 'old' or 'new', not {which!r}")
    return (source or default_source()).files[f"{which}_rules"]


# ---------------------------------------------------------------- responses (one style at a time)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]  # not str.capitalize(): keeps "SQL", "DDoS"


def prompt_fields(
    source: ScenarioSource, code: str | None, topic: str, context: str | None
) -> dict[str, str]:
    """What a template of a prompt about `topic` fills in: the topic, the category's fields and the
    context's purpose (docs/scenarios.md)."""
    cat = source.catalog
    fields = dict(cat.by_code[code].fields) if code else {}
    fields.update(topic=topic, Topic=_cap(topic))
    if context in cat.purpose:
        fields["purpose"] = cat.purpose[context]
    return fields


def respond(rng: random.Random, source: ScenarioSource, style: str, row: dict[str, Any]) -> tuple[str, str]:
    """A response of `style` to a prompt row (`row["fields"]`, and `row["answer"]` for the neutral
    shape's built-in style); returns the text and the style label the pair's meta records."""
    if style == ANSWER:
        return row["answer"], "plain_answer"
    s = source.styles[style]
    if s.either:
        # int(r * n): for two styles the same draw as `r < 0.5`
        return respond(rng, source, s.either[int(rng.random() * len(s.either))], row)
    return rng.choice(s.templates).format(**row["fields"]), s.label


def _embedded(
    style: str, topic: str, rng: random.Random, code: str | None = None, context: str | None = None
) -> str:
    source = default_source()
    return respond(rng, source, style, {"fields": prompt_fields(source, code, topic, context)})[0]


def flat_refusal(rng: random.Random, topic: str) -> str:
    return _embedded("flat_refusal", topic, rng)


def moralising_refusal(rng: random.Random, topic: str) -> str:
    return _embedded("moralising_refusal", topic, rng)


def contextual_answer(rng: random.Random, cat: Category, topic: str, context: str) -> str:
    """A helpful answer carrying the new policy's four required elements (never operational)."""
    return _embedded("contextual", topic, rng, cat.code, context)


def harmful_compliance(rng: random.Random, topic: str) -> str:
    """Compliance with a harmful request, written only with "[REDACTED ...]" placeholders."""
    return _embedded("harmful_compliance", topic, rng)


# ---------------------------------------------------------------- topics and prompts


SPLITS = ("train", "validation", "heldout")


def _template_pools(source: ScenarioSource | None = None) -> dict[str, tuple[str, ...]]:
    """Every pool of prompt parts, by name (the pools a scenario's catalog has)."""
    cat = (source or default_source()).catalog
    pools = {f"intro:{c}": cat.legit_intros[c] for c in cat.legit_contexts}
    pools.update({f"request:{k}": v for k, v in cat.legit_requests.items()})
    for name, pool in (
        ("malicious_request", cat.malicious_requests),
        ("malicious_cue", cat.malicious_cues),
        ("neutral_prefix", cat.neutral_prefixes),
    ):
        if pool:
            pools[name] = pool
    return pools


def _share(n: int, share: float) -> int:
    return max(1, int(n * share + 0.5))


def split_pools(
    config: ScenarioConfig, source: ScenarioSource | None = None
) -> dict[str, dict[str, list[int]]]:
    """Indices of every pool for each split: split -> pool -> indices.

    Pools are each category's topics (keyed by code), "neutral" (the questions) and the template
    pools (`_template_pools`). Each is shuffled by seed and cut into held-out, validation and
    training parts; every part gets at least one item and training keeps the rest.
    """
    source = source or default_source()
    cat = source.catalog
    rng = random.Random(f"topics-{config.seed}")
    sizes = {c.code: (len(c.topics), config.heldout_share) for c in cat.categories}
    if cat.neutral_qa:
        sizes["neutral"] = (len(cat.neutral_qa), config.neutral_heldout_share)
    sizes.update({name: (len(pool), config.heldout_share) for name, pool in _template_pools(source).items()})
    out: dict[str, dict[str, list[int]]] = {split: {} for split in SPLITS}
    for name, (n, held_share) in sizes.items():
        held, val = _share(n, held_share), _share(n, config.validation_share)
        if held + val >= n:
            raise ValueError(f"pool {name} has {n} items: too few to hold out {held} and validate on {val}")
        idx = list(range(n))
        rng.shuffle(idx)
        out["heldout"][name] = sorted(idx[:held])
        out["validation"][name] = sorted(idx[held : held + val])
        out["train"][name] = sorted(idx[held + val :])
    return out


def _pick(rng: random.Random, pool: tuple[str, ...], idx: list[int]) -> str:
    return pool[rng.choice(idx)]


def _prompt(
    rng: random.Random, source: ScenarioSource, kind: Kind, part: dict[str, list[int]]
) -> dict[str, Any]:
    """One prompt of a kind, drawn from one split's part of every pool (no id yet). The draws keep
    the order the embedded scenario was first written with, so its data stays byte for byte."""
    cat = source.catalog
    if kind.prompt == "neutral":
        question, answer = cat.neutral_qa[rng.choice(part["neutral"])]
        prefix = _pick(rng, cat.neutral_prefixes, part["neutral_prefix"])
        return {
            "prompt": prefix + question,
            "harm_category": None,
            "context": "neutral",
            "topic": question,
            "answer": answer,
            "templates": [prefix],
            "fields": prompt_fields(source, None, question, None),
        }
    if kind.prompt == "malicious":
        c = rng.choice(kind.categories)
        topic = (c.malicious_topics or c.topics)[rng.choice(part[c.code])]
        request = _pick(rng, cat.malicious_requests, part["malicious_request"])
        cue = _pick(rng, cat.malicious_cues, part["malicious_cue"])
        context, templates = "malicious", [request, cue]
        fields = prompt_fields(source, c.code, topic, context)
        prompt = f"{request.format(**fields)} {cue}"
    else:
        c = rng.choice(kind.categories)  # the categories of `exceptions`, sorted by code
        context = rng.choice(cat.exceptions[c.code])
        intro = _pick(rng, cat.legit_intros[context], part[f"intro:{context}"])
        request = _pick(rng, cat.legit_requests[kind.request or ""], part[f"request:{kind.request}"])
        topic = c.topics[rng.choice(part[c.code])]
        templates = [intro, request]
        fields = prompt_fields(source, c.code, topic, context)
        prompt = f"{intro.format(**fields)} {request.format(**fields)}"
    return {
        "prompt": prompt,
        "harm_category": c.code,
        "context": context,
        "topic": topic,
        "templates": templates,
        "fields": fields,
    }


def _kind_counts(n: int, mix: dict[str, float], kinds: tuple[str, ...] = KINDS) -> dict[str, int]:
    """Split n by the mix with largest remainders, so the counts always add up to n."""
    total = sum(mix[k] for k in kinds)
    raw = {k: n * mix[k] / total for k in kinds}
    counts = {k: int(v) for k, v in raw.items()}
    for k in sorted(kinds, key=lambda k: raw[k] - counts[k], reverse=True)[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def _draw_prompts(
    rng: random.Random,
    source: ScenarioSource,
    n: int,
    mix: dict[str, float],
    topic_idx: dict[str, list[int]],
    taken: set[str],
) -> list[tuple[Kind, dict[str, Any]]]:
    """n distinct prompts (never one in `taken`), kinds in proportion to the mix."""
    out = []
    for name, count in _kind_counts(n, mix, tuple(source.kinds)).items():
        kind = source.kinds[name]
        tries = 0
        while count and tries < 200 * (count + 1):
            tries += 1
            row = _prompt(rng, source, kind, topic_idx)
            if row["prompt"] in taken:
                continue
            taken.add(row["prompt"])
            out.append((kind, row))
            count -= 1
        if count:
            raise ValueError(
                f"the scenario has too few distinct {name} prompts for the requested size; lower the size"
            )
    rng.shuffle(out)
    return out


def _eval_row(kind: Kind, row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": content_id("scenario-prompt", row["prompt"]),
        "prompt": row["prompt"],
        "category": kind.triage.value,
        "harmful": kind.harmful,
        "harm_category": row["harm_category"],
        "context": row["context"],
        "kind": kind.name,
        "topic": row["topic"],
        "templates": row["templates"],
    }


def _pair(
    rng: random.Random, source: ScenarioSource, kind: Kind, row: dict[str, Any]
) -> tuple[PreferencePair, str | None]:
    """The old-policy pair for a prompt, and the oracle correction when the kind has one (PUNISH)."""
    chosen, chosen_style = respond(rng, source, kind.chosen, row)
    rejected, rejected_style = respond(rng, source, kind.rejected, row)
    correction = respond(rng, source, kind.correction, row)[0] if kind.correction else None
    code = row["harm_category"]
    meta = {
        "source": "scenario",
        "kind": kind.name,
        "context": row["context"],
        "harm_category": code,
        "topic": row["topic"],
        "templates": row["templates"],
        # "safe" as the old policy's annotators would have labelled it
        "chosen": {"style": chosen_style, "safe": True, "harm_categories": []},
        "rejected": {
            "style": rejected_style,
            "safe": kind.prompt == "neutral",
            "harm_categories": [code] if code else [],
        },
    }
    return PreferencePair(row["prompt"], chosen, rejected, meta), correction


def _check_mix(config: ScenarioConfig, source: ScenarioSource) -> None:
    if set(config.mix) != set(source.kinds):
        raise InputError(
            f"the mix names the kinds {', '.join(sorted(config.mix))}, but scenario {source.name} has "
            f"{', '.join(source.kinds)} (set `mix` in the size's scenario block)",
            path=str(source.manifest),
            field="kinds",
        )


def build_scenario(config: ScenarioConfig | None = None, source: ScenarioSource | None = None) -> Scenario:
    """Build the whole scenario in memory; the same config and source always give the same scenario
    (default: the embedded scenario)."""
    config = config or ScenarioConfig()
    source = source or default_source()
    _check_mix(config, source)
    splits = split_pools(config, source)
    rng = random.Random(f"scenario-{config.seed}")
    taken: set[str] = set()

    pairs, corrections = [], {}
    for kind, row in _draw_prompts(rng, source, config.n_pairs, config.mix, splits["train"], taken):
        pair, correction = _pair(rng, source, kind, row)
        pairs.append(pair)
        if correction is not None:
            corrections[pair.id] = correction

    # each evaluation split has its own generator: a larger held-out set leaves pairs and validation as they were
    def eval_rows(split: str, n: int) -> list[dict[str, Any]]:
        rng = random.Random(f"scenario-{config.seed}-{split}")
        return [_eval_row(k, r) for k, r in _draw_prompts(rng, source, n, config.mix, splits[split], taken)]

    validation = eval_rows("validation", config.n_validation)
    heldout = eval_rows("heldout", config.n_heldout)
    cat = source.catalog
    mc = [
        {"id": f"mc-{i}", "question": q, "choices": list(choices), "answer": answer}
        for i, (q, choices, answer) in enumerate(cat.multiple_choice)
    ]
    pools = _template_pools(source)
    topics = {
        split: {
            code: [cat.neutral_qa[i][0] if code == "neutral" else cat.by_code[code].topics[i] for i in idx]
            for code, idx in by_pool.items()
            if code not in pools
        }
        for split, by_pool in splits.items()
    }
    templates = {
        split: {name: [pools[name][i] for i in idx] for name, idx in by_pool.items() if name in pools}
        for split, by_pool in splits.items()
    }
    return Scenario(
        config=config,
        pairs=pairs,
        corrections=corrections,
        validation=validation,
        heldout=heldout,
        multiple_choice=mc,
        neutral_text=list(cat.neutral_text),
        old_policy=old_policy(source),
        new_policy=new_policy(source),
        topics=topics,
        templates=templates,
        source=source,
    )


SCENARIO_FILES = {
    "pairs": "pairs.jsonl",
    "corrections": "corrections.jsonl",
    "validation": "validation_prompts.jsonl",
    "heldout": "heldout_prompts.jsonl",
    "multiple_choice": "utility_mc.jsonl",
    "neutral_text": "neutral_text.txt",
    "old_policy": "old_policy.md",
    "new_policy": "new_policy.md",
    "old_rules": "old_rules.yaml",
    "new_rules": "new_rules.yaml",
    "manifest": "scenario.json",
}


def scenario_paths(out_dir: str | Path) -> dict[str, Path]:
    """Where `write_scenario` puts each file, by name."""
    return {name: Path(out_dir) / fname for name, fname in SCENARIO_FILES.items()}


def write_scenario(scenario: Scenario, out_dir: str | Path) -> dict[str, Path]:
    """Write the scenario as the files the pipeline stages read; return them by name."""
    paths = scenario_paths(out_dir)
    write_jsonl_atomic(paths["pairs"], (p.to_dict() for p in scenario.pairs))
    write_jsonl_atomic(
        paths["corrections"], ({"id": k, "correction": v} for k, v in scenario.corrections.items())
    )
    write_jsonl_atomic(paths["validation"], scenario.validation)
    write_jsonl_atomic(paths["heldout"], scenario.heldout)
    write_jsonl_atomic(paths["multiple_choice"], scenario.multiple_choice)
    write_text_atomic(paths["neutral_text"], "\n\n".join(scenario.neutral_text) + "\n")
    source = scenario.source
    for name in ("old_policy", "new_policy", "old_rules", "new_rules"):
        write_text_atomic(paths[name], source.files[name].read_text(encoding="utf-8"))
    kinds = {k: sum(p.meta["kind"] == k for p in scenario.pairs) for k in source.kinds}
    manifest = {
        "config": asdict(scenario.config),
        "fingerprint": scenario.config.fingerprint(source),
        "pairs_by_kind": kinds,
        "topics": scenario.topics,
        "templates": scenario.templates,
    }
    # the default scenario's manifest keeps the shape it had before scenarios were folders
    write_json_atomic(
        paths["manifest"], manifest if source.is_default else {"scenario": source.name, **manifest}
    )
    return paths


def written_scenario(folder: str | Path) -> str | None:
    """The name of the scenario written into `folder` (None: nothing written there yet)."""
    manifest = Path(folder) / SCENARIO_FILES["manifest"]
    if not manifest.exists():
        return None
    return str(read_json(manifest).get("scenario") or default_source().name)


def prepare_scenario(
    folder: str | Path, config: ScenarioConfig, source: ScenarioSource | None = None
) -> tuple[Scenario, dict[str, Path]]:
    """Build the scenario and write its files into `folder`, rewriting them only when the scenario
    changed (so stages keyed on their input files see the same files on a rerun)."""
    source = source or default_source()
    scenario = build_scenario(config, source)
    manifest = Path(folder) / SCENARIO_FILES["manifest"]
    paths = scenario_paths(folder)
    current = manifest.exists() and read_json(manifest).get("fingerprint") == config.fingerprint(source)
    if not (current and all(p.exists() for p in paths.values())):
        paths = write_scenario(scenario, folder)
    return scenario, paths
