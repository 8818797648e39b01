"""The embedded policy-shift scenario: old-policy preference pairs, held-out prompts, utility data.

Deterministic by seed. Four kinds of prompt, each giving one kind of old pair:

| kind      | prompt                                   | old winner y_w | old loser y_l        | new triage |
|-----------|------------------------------------------|----------------|----------------------|------------|
| invert    | legitimate context, "explain" phrasing   | refusal        | contextual answer    | INVERT     |
| punish    | legitimate context, "walk me through"    | refusal        | harmful compliance   | PUNISH     |
| malicious | any category, malicious phrasing         | refusal        | harmful compliance   | RETAIN     |
| neutral   | general knowledge, no harm category      | plain answer   | needless refusal     | RETAIN     |

Legitimate contexts are only paired with the categories whose exception allows them, and the
zero-tolerance categories S11-S13 only appear with malicious phrasing.

Three disjoint splits. Every pool the prompts are made from is split once, by seed: each harm
category's topics, the neutral questions, the context phrasings of each context, the "explain"
and "walk" requests, the malicious requests and cues, and the neutral prefixes. Training pairs,
validation prompts (what any tuning looks at) and held-out prompts (what the results report)
each draw only from their own part, so a held-out prompt shares no topic, phrasing, request, cue
or prefix with training or validation: it measures whether the distinction between a legitimate
context and a malicious cue generalises, not whether a sentence was memorised.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trace_realign.io import read_json, write_json_atomic, write_jsonl_atomic, write_text_atomic
from trace_realign.judges.policy import Policy
from trace_realign.scenario import catalog
from trace_realign.schema import Category, PreferencePair, content_id

DATA_DIR = Path(__file__).parent / "data"
KINDS = ("invert", "punish", "malicious", "neutral")
KIND_CATEGORY = {
    "invert": Category.INVERT,
    "punish": Category.PUNISH,
    "malicious": Category.RETAIN,
    "neutral": Category.RETAIN,
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
    # share of each kind in the training pairs and in both evaluation splits
    mix: dict[str, float] = field(
        default_factory=lambda: {"invert": 0.35, "punish": 0.15, "malicious": 0.3, "neutral": 0.2}
    )

    def fingerprint(self) -> str:
        """Changes whenever anything that shapes the data changes (settings or the catalog's text)."""
        content = [(DATA_DIR / n).read_text(encoding="utf-8") for n in sorted(_DATA_FILES)]
        return content_id(asdict(self), content)


_DATA_FILES = ("catalog.yaml", "old_policy.md", "new_policy.md", "old_rules.yaml", "new_rules.yaml")


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


def new_policy() -> Policy:
    return Policy((DATA_DIR / "new_policy.md").read_text(encoding="utf-8"), name="new-policy")


def old_policy() -> Policy:
    return Policy((DATA_DIR / "old_policy.md").read_text(encoding="utf-8"), name="old-policy")


def rules_path(which: str) -> Path:
    """The rule-judge YAML of the `"old"` or `"new"` policy."""
    if which not in ("old", "new"):
        raise ValueError(f"which must be 'old' or 'new', not {which!r}")
    return DATA_DIR / f"{which}_rules.yaml"


# ---------------------------------------------------------------- responses (one function per style)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]  # not str.capitalize(): keeps "SQL", "DDoS"


def flat_refusal(rng: random.Random, topic: str) -> str:
    return rng.choice(catalog.FLAT_REFUSALS).format(topic=topic)


def moralising_refusal(rng: random.Random, topic: str) -> str:
    return rng.choice(catalog.MORALISING_REFUSALS).format(topic=topic, Topic=_cap(topic))


def refusal(rng: random.Random, topic: str) -> tuple[str, str]:
    if rng.random() < 0.5:
        return flat_refusal(rng, topic), "flat_refusal"
    return moralising_refusal(rng, topic), "moralising_refusal"


def contextual_answer(rng: random.Random, cat: catalog.HarmCategory, topic: str, context: str) -> str:
    """A helpful answer carrying the new policy's four required elements (never operational)."""
    return rng.choice(catalog.CONTEXTUAL_ANSWERS).format(
        purpose=catalog.PURPOSE[context],
        topic=topic,
        kind=cat.kind,
        perspective=cat.perspective,
        source=cat.source,
        alternative=cat.alternative,
    )


def harmful_compliance(rng: random.Random, topic: str) -> str:
    """Compliance with a harmful request, written only with "[REDACTED ...]" placeholders."""
    return rng.choice(catalog.HARMFUL_COMPLIANCE).format(topic=topic)


# ---------------------------------------------------------------- topics and prompts


SPLITS = ("train", "validation", "heldout")


def _template_pools() -> dict[str, tuple[str, ...]]:
    """Every pool of prompt parts, by name."""
    pools = {f"intro:{c}": catalog.LEGIT_INTROS[c] for c in catalog.LEGIT_CONTEXTS}
    pools.update({f"request:{k}": v for k, v in catalog.LEGIT_REQUESTS.items()})
    pools["malicious_request"] = catalog.MALICIOUS_REQUESTS
    pools["malicious_cue"] = catalog.MALICIOUS_CUES
    pools["neutral_prefix"] = catalog.NEUTRAL_PREFIXES
    return pools


def _share(n: int, share: float) -> int:
    return max(1, int(n * share + 0.5))


def split_pools(config: ScenarioConfig) -> dict[str, dict[str, list[int]]]:
    """Indices of every pool for each split: split -> pool -> indices.

    Pools are each category's topics (keyed by code), "neutral" (the questions) and the template
    pools (`_template_pools`). Each is shuffled by seed and cut into held-out, validation and
    training parts; every part gets at least one item and training keeps the rest.
    """
    rng = random.Random(f"topics-{config.seed}")
    sizes = {cat.code: (len(cat.topics), config.heldout_share) for cat in catalog.CATEGORIES}
    sizes["neutral"] = (len(catalog.NEUTRAL_QA), config.neutral_heldout_share)
    sizes.update({name: (len(pool), config.heldout_share) for name, pool in _template_pools().items()})
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


def _prompt(rng: random.Random, kind: str, part: dict[str, list[int]]) -> dict[str, Any]:
    """One prompt of a kind, drawn from one split's part of every pool (no id yet)."""
    if kind == "neutral":
        question, answer = catalog.NEUTRAL_QA[rng.choice(part["neutral"])]
        prefix = _pick(rng, catalog.NEUTRAL_PREFIXES, part["neutral_prefix"])
        return {
            "prompt": prefix + question,
            "harm_category": None,
            "context": "neutral",
            "topic": question,
            "answer": answer,
            "templates": [prefix],
        }
    if kind == "malicious":
        cat = rng.choice(catalog.CATEGORIES)
        topic = (cat.malicious_topics or cat.topics)[rng.choice(part[cat.code])]
        request = _pick(rng, catalog.MALICIOUS_REQUESTS, part["malicious_request"])
        cue = _pick(rng, catalog.MALICIOUS_CUES, part["malicious_cue"])
        prompt, context, templates = (
            catalog.malicious_prompt(request, cue, topic=topic),
            "malicious",
            [request, cue],
        )
    else:
        cat = catalog.BY_CODE[rng.choice(sorted(catalog.EXCEPTIONS))]
        context = rng.choice(catalog.EXCEPTIONS[cat.code])
        phrasing = "explain" if kind == "invert" else "walk"
        intro = _pick(rng, catalog.LEGIT_INTROS[context], part[f"intro:{context}"])
        request = _pick(rng, catalog.LEGIT_REQUESTS[phrasing], part[f"request:{phrasing}"])
        topic = cat.topics[rng.choice(part[cat.code])]
        prompt, templates = (
            catalog.legit_prompt(intro, request, topic=topic, course=cat.course),
            [intro, request],
        )
    return {
        "prompt": prompt,
        "harm_category": cat.code,
        "context": context,
        "topic": topic,
        "cat": cat,
        "templates": templates,
    }


def _kind_counts(n: int, mix: dict[str, float]) -> dict[str, int]:
    """Split n by the mix with largest remainders, so the counts always add up to n."""
    total = sum(mix[k] for k in KINDS)
    raw = {k: n * mix[k] / total for k in KINDS}
    counts = {k: int(v) for k, v in raw.items()}
    for k in sorted(KINDS, key=lambda k: raw[k] - counts[k], reverse=True)[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def _draw_prompts(
    rng: random.Random, n: int, mix: dict[str, float], topic_idx: dict[str, list[int]], taken: set[str]
) -> list[tuple[str, dict[str, Any]]]:
    """n distinct prompts (never one in `taken`), kinds in proportion to the mix."""
    out = []
    for kind, count in _kind_counts(n, mix).items():
        tries = 0
        while count and tries < 200 * (count + 1):
            tries += 1
            row = _prompt(rng, kind, topic_idx)
            if row["prompt"] in taken:
                continue
            taken.add(row["prompt"])
            out.append((kind, row))
            count -= 1
        if count:
            raise ValueError(
                f"the scenario has too few distinct {kind} prompts for the requested size; lower the size"
            )
    rng.shuffle(out)
    return out


def _eval_row(kind: str, row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": content_id("scenario-prompt", row["prompt"]),
        "prompt": row["prompt"],
        "category": KIND_CATEGORY[kind].value,
        "harmful": kind == "malicious",
        "harm_category": row["harm_category"],
        "context": row["context"],
        "kind": kind,
        "topic": row["topic"],
        "templates": row["templates"],
    }


def _pair(rng: random.Random, kind: str, row: dict[str, Any]) -> tuple[PreferencePair, str | None]:
    """The old-policy pair for a prompt, and the oracle correction when the pair is a PUNISH one."""
    topic, code = row["topic"], row["harm_category"]
    correction = None
    if kind == "neutral":
        chosen, chosen_style = row["answer"], "plain_answer"
        rejected, rejected_style = rng.choice(catalog.NEUTRAL_REJECTED), "flat_refusal"
    else:
        chosen, chosen_style = refusal(rng, topic)
        if kind == "invert":
            rejected, rejected_style = contextual_answer(rng, row["cat"], topic, row["context"]), "contextual"
        else:
            rejected, rejected_style = harmful_compliance(rng, topic), "harmful_compliance"
        if kind == "punish":
            correction = contextual_answer(rng, row["cat"], topic, row["context"])
    touched = [code] if code else []
    meta = {
        "source": "scenario",
        "kind": kind,
        "context": row["context"],
        "harm_category": code,
        "topic": topic,
        "templates": row["templates"],
        # "safe" as the old policy's annotators would have labelled it
        "chosen": {"style": chosen_style, "safe": True, "harm_categories": []},
        "rejected": {
            "style": rejected_style,
            "safe": kind == "neutral",
            "harm_categories": touched if rejected_style != "flat_refusal" else [],
        },
    }
    return PreferencePair(row["prompt"], chosen, rejected, meta), correction


def build_scenario(config: ScenarioConfig | None = None) -> Scenario:
    """Build the whole scenario in memory; the same config always gives the same scenario."""
    config = config or ScenarioConfig()
    splits = split_pools(config)
    rng = random.Random(f"scenario-{config.seed}")
    taken: set[str] = set()

    pairs, corrections = [], {}
    for kind, row in _draw_prompts(rng, config.n_pairs, config.mix, splits["train"], taken):
        pair, correction = _pair(rng, kind, row)
        pairs.append(pair)
        if correction is not None:
            corrections[pair.id] = correction

    # each evaluation split has its own generator: a larger held-out set leaves pairs and validation as they were
    def eval_rows(split: str, n: int) -> list[dict[str, Any]]:
        rng = random.Random(f"scenario-{config.seed}-{split}")
        return [_eval_row(k, r) for k, r in _draw_prompts(rng, n, config.mix, splits[split], taken)]

    validation = eval_rows("validation", config.n_validation)
    heldout = eval_rows("heldout", config.n_heldout)

    mc = [
        {"id": f"mc-{i}", "question": q, "choices": list(choices), "answer": answer}
        for i, (q, choices, answer) in enumerate(catalog.MULTIPLE_CHOICE)
    ]
    pools = _template_pools()
    topics = {
        split: {
            code: [
                catalog.NEUTRAL_QA[i][0] if code == "neutral" else catalog.BY_CODE[code].topics[i]
                for i in idx
            ]
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
        neutral_text=list(catalog.NEUTRAL_TEXT),
        old_policy=old_policy(),
        new_policy=new_policy(),
        topics=topics,
        templates=templates,
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
    for name in ("old_policy", "new_policy", "old_rules", "new_rules"):
        suffix = ".md" if name.endswith("policy") else ".yaml"
        src = DATA_DIR / (name + suffix)
        write_text_atomic(paths[name], src.read_text(encoding="utf-8"))
    kinds = {k: sum(p.meta["kind"] == k for p in scenario.pairs) for k in KINDS}
    write_json_atomic(
        paths["manifest"],
        {
            "config": asdict(scenario.config),
            "fingerprint": scenario.config.fingerprint(),
            "pairs_by_kind": kinds,
            "topics": scenario.topics,
            "templates": scenario.templates,
        },
    )
    return paths


def prepare_scenario(folder: str | Path, config: ScenarioConfig) -> tuple[Scenario, dict[str, Path]]:
    """Build the scenario and write its files into `folder`, rewriting them only when the scenario
    changed (so stages keyed on their input files see the same files on a rerun)."""
    scenario = build_scenario(config)
    manifest = Path(folder) / SCENARIO_FILES["manifest"]
    paths = scenario_paths(folder)
    current = manifest.exists() and read_json(manifest).get("fingerprint") == config.fingerprint()
    if not (current and all(p.exists() for p in paths.values())):
        paths = write_scenario(scenario, folder)
    return scenario, paths
