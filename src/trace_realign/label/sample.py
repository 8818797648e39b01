"""What the policy owners label: a seeded sample of the old pairs, or the pairs two judges disagree on.

`prepare_sample(out_dir, ...)` draws the items once and keeps them in `OUT/sample.json` with the
policy they are judged against, so every reviewer of OUT labels the same items in the same order,
a restart finds them unchanged, and the Label Studio export carries the same sample. The sources:

- `triaged`: a triage's `triaged.jsonl`, stratified by the judge's `category` (proportional
  allocation, largest remainders; seeded), so each category is represented as in the data and the
  audit's accuracy stays an unbiased estimate for the whole file;
- `data`: raw old pairs (anything `load_pairs` reads) when no triage exists yet: no strata;
- `disagreements`: a triage's `disagreements.jsonl` (`triage --judge2`): every pair, or a sample
  stratified by the first judge's category.

Items are shuffled (seeded) so categories interleave; the page never shows the judge's category
or verdicts, so labels are blind to them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trace_realign.data.loading import load_pairs
from trace_realign.errors import InputError
from trace_realign.io import read_json, read_jsonl, write_json_atomic
from trace_realign.judges.policy import Policy
from trace_realign.schema import Category, Message, Prompt
from trace_realign.triage.triage import read_triaged

SAMPLE_FILE = "sample.json"
KINDS = ("triaged", "data", "disagreements")


@dataclass(frozen=True)
class LabelItem:
    """One old pair to label: `chosen` is the old winner y_w, `rejected` the old loser y_l."""

    id: str
    prompt: Prompt
    chosen: str
    rejected: str
    category: str | None = None  # the judge's triage category (the stratum); None for raw pairs
    judges: dict[str, str] | None = None  # disagreements: each judge's identity -> its category

    @property
    def turns(self) -> list[Message]:
        """The prompt as conversation turns (a plain prompt is one user turn)."""
        if isinstance(self.prompt, str):
            return [{"role": "user", "content": self.prompt}]
        return [{"role": m["role"], "content": m["content"]} for m in self.prompt]

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": self.id,
            "prompt": self.prompt,
            "chosen": self.chosen,
            "rejected": self.rejected,
            "category": self.category,
        }
        if self.judges is not None:
            row["judges"] = self.judges
        return row

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelItem:
        return cls(d["id"], d["prompt"], d["chosen"], d["rejected"], d.get("category"), d.get("judges"))


@dataclass
class Sample:
    """The items of a labelling round and where they came from (`OUT/sample.json`)."""

    items: list[LabelItem]
    kind: str
    source: str  # absolute path of the file drawn from
    size: int | None  # --sample N; None for every pair (disagreements only)
    seed: int
    available: int  # distinct pairs in the source
    policy: str  # absolute path of the policy file
    policy_text: str
    strata: dict[str, int] = field(default_factory=dict)  # category -> pairs in the source

    @property
    def policy_name(self) -> str:
        return Path(self.policy).stem

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "sample": self.size,
            "seed": self.seed,
            "available": self.available,
            "strata": self.strata,
            "policy": self.policy,
            "policy_text": self.policy_text,
            "items": [x.to_dict() for x in self.items],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sample:
        return cls(
            items=[LabelItem.from_dict(x) for x in d["items"]],
            kind=d["kind"],
            source=d["source"],
            size=d.get("sample"),
            seed=int(d.get("seed", 0)),
            available=int(d.get("available", len(d["items"]))),
            policy=d["policy"],
            policy_text=d["policy_text"],
            strata=d.get("strata") or {},
        )


# ------------------------------------------------------------------------------ drawing


def stratified_indices(strata: Sequence[str | None], n: int, seed: int) -> list[int]:
    """`n` of the positions of `strata`, each stratum getting its proportional share (largest
    remainders, ties to the larger stratum, then by name), drawn and shuffled by `seed`."""
    if not 0 < n <= len(strata):
        raise ValueError(f"n must be in [1, {len(strata)}], got {n}")
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(strata):
        groups.setdefault(s or "", []).append(i)
    names = sorted(groups)
    exact = {g: n * len(groups[g]) / len(strata) for g in names}
    quota = {g: int(exact[g]) for g in names}
    by_remainder = sorted(names, key=lambda g: (-(exact[g] - quota[g]), -len(groups[g]), g))
    for g in by_remainder[: n - sum(quota.values())]:
        quota[g] += 1
    rng = random.Random(seed)
    picked = [i for g in names for i in rng.sample(groups[g], quota[g])]
    rng.shuffle(picked)
    return picked


def _distinct(items: list[LabelItem]) -> list[LabelItem]:
    """First occurrence of each pair id (a duplicated pair is labelled once)."""
    seen: set[str] = set()
    out = []
    for x in items:
        if x.id not in seen:
            seen.add(x.id)
            out.append(x)
    return out


def _draw(items: list[LabelItem], n: int | None, seed: int, path: str) -> list[LabelItem]:
    if n is None:
        rng = random.Random(seed)
        out = list(items)
        rng.shuffle(out)
        return out
    if n < 1:
        raise InputError(f"the sample needs at least one pair, got {n}", field="sample")
    if n > len(items):
        raise InputError(
            f"a sample of {n} is more than the {len(items)} distinct pairs in the file",
            path=path,
            field="sample",
        )
    return [items[i] for i in stratified_indices([x.category for x in items], n, seed)]


def read_triaged_items(path: str | Path) -> list[LabelItem]:

    rows = read_triaged(path)
    return _distinct(
        [LabelItem(r.id, r.pair.prompt, r.pair.chosen, r.pair.rejected, r.category.value) for r in rows]
    )


def read_pair_items(path: str | Path) -> list[LabelItem]:

    pairs = load_pairs(path).pairs
    return _distinct([LabelItem(p.id, p.prompt, p.chosen, p.rejected) for p in pairs])


def _is_prompt(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value)
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in value
        )
    )


def read_disagreements(path: str | Path) -> list[LabelItem]:
    """The pairs of a `disagreements.jsonl` (triage/agreement.py): `id`, `prompt`, `chosen`,
    `rejected` and one block per judge, `{judge identity: {"category": ...}}`; the first block's
    category is the stratum. A malformed row is an `InputError` naming file, line and field."""

    p = str(path)
    items = []
    for line, row in read_jsonl(path):
        if not _is_prompt(row.get("prompt")):
            what = "expected a non-empty string or a list of {role, content} messages"
            raise InputError(what, path=p, line=line, field="prompt")
        for key in ("id", "chosen", "rejected"):
            if not isinstance(row.get(key), str) or (key == "id" and not row[key]):
                raise InputError(
                    "missing" if key not in row else "expected a string", path=p, line=line, field=key
                )
        judges = {k: v for k, v in row.items() if isinstance(v, dict) and "category" in v}
        if len(judges) != 2:
            raise InputError(
                f"expected the two judges' blocks ({{judge: {{category, c_w, c_l, ...}}}}), found {len(judges)}",
                path=p,
                line=line,
                field="category",
            )
        for name, block in judges.items():
            if block["category"] not in Category._value2member_map_:
                raise InputError(
                    f"unknown category {block['category']!r}", path=p, line=line, field=f"{name}.category"
                )
        cats = {name: block["category"] for name, block in judges.items()}
        items.append(
            LabelItem(
                row["id"], row["prompt"], row["chosen"], row["rejected"], next(iter(cats.values())), cats
            )
        )
    if not items:
        raise InputError("no disagreements to label (the two judges agree on every pair)", path=p)
    return _distinct(items)


READERS = {"triaged": read_triaged_items, "data": read_pair_items, "disagreements": read_disagreements}


def draw_sample(
    kind: str, source: str | Path, policy: str | Path, size: int | None = None, seed: int = 0
) -> Sample:
    """Read `source` (a file of `kind`) and draw `size` of its pairs by `seed` (all of them when
    `size` is None, which only `disagreements` allows)."""

    if kind not in KINDS:
        raise InputError(f"unknown source kind {kind!r} (one of {', '.join(KINDS)})")
    if size is None and kind != "disagreements":
        raise InputError("how many pairs to label? pass --sample N", field="sample")
    pol = Policy.from_file(policy)
    items = READERS[kind](source)
    strata: dict[str, int] = {}
    for x in items:
        strata[x.category or "all"] = strata.get(x.category or "all", 0) + 1
    return Sample(
        items=_draw(items, size, seed, str(source)),
        kind=kind,
        source=str(Path(source).resolve()),
        size=size,
        seed=seed,
        available=len(items),
        policy=str(Path(policy).resolve()),
        policy_text=pol.text,
        strata=strata,
    )


# ------------------------------------------------------------------------------ the sample file


def load_sample(out_dir: str | Path) -> Sample:

    path = Path(out_dir) / SAMPLE_FILE
    doc = read_json(path)
    try:
        return Sample.from_dict(doc)
    except (KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"not a label sample ({exc})", path=str(path)) from None


def prepare_sample(
    out_dir: str | Path,
    *,
    triaged: str | Path | None = None,
    data: str | Path | None = None,
    disagreements: str | Path | None = None,
    size: int | None = None,
    seed: int | None = None,
    policy: str | Path | None = None,
) -> Sample:
    """The sample of `out_dir`: drawn and written on the first call, read back on every later one.

    A later call may leave out the source and the policy (a second reviewer, a restart); if it
    names them, they must be the ones the sample was drawn with."""

    sources = {k: v for k, v in (("triaged", triaged), ("data", data), ("disagreements", disagreements)) if v}
    if len(sources) > 1:
        raise InputError("give one of --triaged, --data or --disagreements", field=next(iter(sources)))
    path = Path(out_dir) / SAMPLE_FILE
    if path.is_file():
        sample = load_sample(out_dir)
        _check_same(sample, path, sources, size, seed, policy)
        return sample
    if not sources:
        raise InputError(
            f"no sample in {out_dir} yet: draw one with --triaged FILE, --data FILE or --disagreements FILE"
        )
    if policy is None:
        raise InputError("the reviewers label against a policy: pass --policy FILE", field="policy")
    kind, source = next(iter(sources.items()))
    sample = draw_sample(kind, source, policy, size, seed or 0)
    write_json_atomic(path, sample.to_dict())
    return sample


def _check_same(
    sample: Sample,
    path: Path,
    sources: dict[str, Any],
    size: int | None,
    seed: int | None,
    policy: str | Path | None,
) -> None:

    asked = []
    if sources:
        kind, source = next(iter(sources.items()))
        if kind != sample.kind or str(Path(source).resolve()) != sample.source:
            asked.append(f"--{kind} {source}")
    if size is not None and size != sample.size:
        asked.append(f"--sample {size}")
    if seed is not None and seed != sample.seed:
        asked.append(f"--seed {seed}")
    if policy is not None and Policy.from_file(policy).hash != Policy(sample.policy_text).hash:
        asked.append(f"--policy {policy} (other text)")
    if asked:
        drawn = f"--{sample.kind} {sample.source}" + (f" --sample {sample.size}" if sample.size else "")
        raise InputError(
            f"holds a sample drawn with {drawn} --seed {sample.seed} and its policy, not {' '.join(asked)}: "
            "rerun without those options to label it, or pass another --out",
            path=str(path),
        )
