"""Stage 1: triage every old pair under the new policy (docs/method.md, "Stage 1 - triage").

`c_w = pi_new(y_w|x)` and `c_l = pi_new(y_l|x)` come from the judge; `categorise` maps them to
INVERT (0, 1), PUNISH (0, 0) or RETAIN (c_w = 1, whatever c_l). A verdict the judge could not give
is unknown (None), never 0 or 1: a pair that needs it is UNKNOWN, reported in the summary and left
out of training. `unknown_as="non_compliant"` (or `"compliant"`) is the explicit opt-in that keeps
such pairs by reading their unknown verdicts as that label; their rows then carry `unknown_as`.

Every distinct (prompt, response) is judged once, through `judges.cached.judge_with_cache`, which commits
each verdict as it arrives: a killed run resumes without repeating a stored verdict.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from trace_realign.cache import VerdictCache
from trace_realign.data.pku import HARM_CATEGORIES
from trace_realign.errors import InputError
from trace_realign.io import read_jsonl, write_jsonl_atomic
from trace_realign.judges.base import Judge, JudgeItem
from trace_realign.judges.cached import JudgeStats, judge_with_cache
from trace_realign.judges.openai import estimate_tokens
from trace_realign.judges.policy import Policy
from trace_realign.schema import Category, Label, PreferencePair, Verdict

CATEGORIES = (Category.INVERT, Category.PUNISH, Category.RETAIN, Category.UNKNOWN)
UNKNOWN_AS = {"compliant": 1, "non_compliant": 0}

# (policy, PUNISH pairs) -> one correction y_c per pair (None where none could be made)
CorrectionFn = Callable[[Policy, Sequence[PreferencePair]], list[str | None]]


def categorise(c_w: int | None, c_l: int | None) -> Category:
    """Triage rule of docs/method.md. `c_w = 1` alone decides RETAIN, so `c_l` may then be unknown."""
    for name, c in (("c_w", c_w), ("c_l", c_l)):
        if c not in (0, 1, None) or isinstance(c, bool):
            raise ValueError(f"{name} must be 1, 0 or None, got {c!r}")
    if c_w == 1:
        return Category.RETAIN
    if c_w is None or c_l is None:
        return Category.UNKNOWN
    return Category.INVERT if c_l == 1 else Category.PUNISH


@dataclass(frozen=True)
class TriagedPair:
    """A pair with its triage; `to_dict()` is one row of triaged.jsonl (docs/architecture.md)."""

    pair: PreferencePair
    category: Category
    c_w: int | None
    c_l: int | None
    reason_w: str = ""
    reason_l: str = ""
    correction: str | None = None
    unknown_as: str | None = None  # set when an unknown verdict was read as this label

    @property
    def id(self) -> str:
        return self.pair.id

    def to_dict(self) -> dict[str, Any]:
        row = self.pair.to_dict()
        row.update(
            category=self.category.value,
            c_w=self.c_w,
            c_l=self.c_l,
            reason_w=self.reason_w,
            reason_l=self.reason_l,
        )
        if self.correction is not None:
            row["correction"] = self.correction
        if self.unknown_as is not None:
            row["unknown_as"] = self.unknown_as
        return row

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> TriagedPair:
        return cls(
            pair=PreferencePair.from_dict(row),
            category=Category(row["category"]),
            c_w=row.get("c_w"),
            c_l=row.get("c_l"),
            reason_w=row.get("reason_w") or "",
            reason_l=row.get("reason_l") or "",
            correction=row.get("correction"),
            unknown_as=row.get("unknown_as"),
        )


@dataclass
class TriageResult:
    rows: list[TriagedPair]
    judge_stats: JudgeStats
    policy: Policy
    judge_identity: str
    unknown_as: str | None = None
    correction_stats: dict[str, Any] = field(default_factory=dict)

    def by_category(self, category: Category) -> list[TriagedPair]:
        return [r for r in self.rows if r.category is category]


def judge_items(pairs: Sequence[PreferencePair]) -> list[JudgeItem]:
    """Two items per pair, y_w then y_l, with the context base.py documents (never judged text)."""
    items = []
    for p in pairs:
        for side, response in (("chosen", p.chosen), ("rejected", p.rejected)):
            items.append(JudgeItem(p.prompt_text, response, {"side": side, "pair": p.meta}))
    return items


def triage_pairs(
    pairs: Sequence[PreferencePair],
    judge: Judge,
    policy: Policy,
    cache: VerdictCache | None,
    *,
    corrections: CorrectionFn | None = None,
    unknown_as: str | None = None,
    progress: bool = True,
) -> TriageResult:
    """Judge y_w and y_l of every pair under `policy` and categorise the pair.

    `cache=None` judges without storing (tests, one-off notebooks). `corrections`, when given, is
    asked for an oracle correction y_c of every PUNISH pair (docs/method.md, `y_c <- O(x, pi_new)`).
    """
    if unknown_as is not None and unknown_as not in UNKNOWN_AS:
        raise InputError(f"unknown_as must be one of {', '.join(UNKNOWN_AS)}, got '{unknown_as}'")
    verdicts, stats = judge_with_cache(judge, policy, judge_items(pairs), cache, progress=progress)
    rows = [_triage_one(p, verdicts[2 * i], verdicts[2 * i + 1], unknown_as) for i, p in enumerate(pairs)]
    result = TriageResult(rows, stats, policy, judge.identity, unknown_as)
    if corrections is not None:
        punish = [i for i, r in enumerate(rows) if r.category is Category.PUNISH]
        made = corrections(policy, [rows[i].pair for i in punish]) if punish else []
        for i, y_c in zip(punish, made, strict=True):
            if y_c is not None:
                rows[i] = replace(rows[i], correction=y_c)
        result.correction_stats = {
            "punish_pairs": len(punish),
            "corrections": sum(y is not None for y in made),
        }
        if hasattr(corrections, "identity"):
            result.correction_stats["generator"] = corrections.identity
        if hasattr(corrections, "stats"):  # the oracle's calls and cache hits
            result.correction_stats["calls"] = corrections.stats.to_dict()
    return result


def plan_triage(
    pairs: Sequence[PreferencePair], judge: Judge, policy: Policy, cache: VerdictCache | None
) -> dict[str, Any]:
    """What `triage_pairs` would cost, without calling the judge (`--dry-run`).

    Runs the same dedup and cache lookup as a real run, with a stand-in judge that records the
    items it is handed and answers UNKNOWN, which the cache never stores: nothing is written.
    """

    # A wrapper (the noise judge) costs what the judge it wraps costs, cached under that judge's identity.
    while getattr(judge, "wraps", None) is not None:
        judge = judge.wraps
    recorder = _RecordingJudge(judge)
    _, stats = judge_with_cache(recorder, policy, judge_items(pairs), cache, progress=False)
    tokens = estimate_tokens(policy, recorder.items, answer_tokens=getattr(judge, "max_tokens", 512))
    return {
        "pairs": len(pairs),
        "items": stats.items,
        "duplicates": stats.duplicates,
        "cache_hits": stats.cache_hits,
        "calls": stats.calls,
        "prompt_tokens": tokens["prompt_tokens"],
        "max_answer_tokens": tokens["max_answer_tokens"],
    }


class _RecordingJudge:
    def __init__(self, judge: Judge) -> None:
        self.identity = judge.identity
        self.cacheable = getattr(judge, "cacheable", True)
        self.items: list[JudgeItem] = []

    def judge(self, policy: Policy, items: Sequence[JudgeItem], on_verdict: Any = None) -> list[Verdict]:
        self.items.extend(items)
        return [Verdict(Label.UNKNOWN, "dry run") for _ in items]


def _triage_one(pair: PreferencePair, v_w: Verdict, v_l: Verdict, unknown_as: str | None) -> TriagedPair:
    c_w, c_l = v_w.label.bit, v_l.label.bit
    category, assumed = categorise(c_w, c_l), None
    if category is Category.UNKNOWN and unknown_as is not None:
        fill = UNKNOWN_AS[unknown_as]
        category = categorise(fill if c_w is None else c_w, fill if c_l is None else c_l)
        assumed = unknown_as
    return TriagedPair(pair, category, c_w, c_l, v_w.reason, v_l.reason, unknown_as=assumed)


# ------------------------------------------------------------------------------------ summary


def summarise(result: TriageResult, load: Any = None) -> dict[str, Any]:
    """Counts, shares, unknowns, judge calls made / saved, skipped rows and the harm-category audit.

    `load` is the `LoadResult` the pairs came from (its skipped and dropped rows are reported).
    """
    rows = result.rows
    n = len(rows)
    counts = Counter(r.category for r in rows)
    stats = result.judge_stats
    unknown_verdicts = sum((r.c_w is None) + (r.c_l is None) for r in rows)
    summary: dict[str, Any] = {
        "policy": {"name": result.policy.name, "hash": result.policy.hash},
        "judge": result.judge_identity,
        "pairs": n,
        "counts": {c.value: counts.get(c, 0) for c in CATEGORIES},
        "shares": {c.value: (counts.get(c, 0) / n if n else 0.0) for c in CATEGORIES},
        "unknown": {
            "pairs": counts.get(Category.UNKNOWN, 0),
            "verdicts": unknown_verdicts,
            "read_as": result.unknown_as,
            "pairs_kept_by_reading_as": sum(r.unknown_as is not None for r in rows),
            "handling": (
                "left out of training"
                if result.unknown_as is None
                else f"unknown verdicts read as {result.unknown_as}"
            ),
        },
        "judge_calls": {
            "items": stats.items,
            "calls": stats.calls,
            "cache_hits": stats.cache_hits,
            "duplicates": stats.duplicates,
            "saved": stats.cache_hits + stats.duplicates,
        },
    }
    if load is not None:
        data = load.summary()
        summary["data"] = {
            k: data[k] for k in ("source", "format", "rows_read", "duplicate_pairs", "dropped")
        }
        summary["skipped_rows"] = {"count": data["skipped_rows"], "rows": data["skipped"]}
    if result.correction_stats:
        summary["corrections"] = dict(result.correction_stats)
    audit = harm_breakdown(rows)
    if audit:
        summary["harm_categories"] = audit
    return summary


def harm_breakdown(rows: Iterable[TriagedPair]) -> dict[str, dict[str, Any]]:
    """Categories by harm category: where the policy change bites, worth reading before training.

    A pair counts under every harm category either of its responses carries (PKU-SafeRLHF and
    the scenario keep them in `meta[side]["harm_categories"]`), and under "none" when neither has
    one. Empty when the data has no such metadata.
    """

    table: dict[str, Counter] = {}
    seen_metadata = False
    for r in rows:
        tags: set[str] = set()
        for side in ("chosen", "rejected"):
            info = r.pair.meta.get(side)
            if isinstance(info, dict) and isinstance(info.get("harm_categories"), list):
                seen_metadata = True
                tags.update(str(t) for t in info["harm_categories"])
        for tag in tags or {"none"}:
            table.setdefault(tag, Counter())[r.category] += 1
    if not seen_metadata:
        return {}

    def order(tag: str) -> tuple[int, str]:
        return (int(tag[1:]), tag) if tag in HARM_CATEGORIES else (1000 if tag == "none" else 999, tag)

    out = {}
    for tag in sorted(table, key=order):
        c = table[tag]
        total = sum(c.values())
        out[tag] = {
            "name": HARM_CATEGORIES.get(tag, tag),
            "pairs": total,
            **{cat.value: c.get(cat, 0) for cat in CATEGORIES},
            "changed_share": (c.get(Category.INVERT, 0) + c.get(Category.PUNISH, 0)) / total,
        }
    return out


def summary_tables(summary: dict[str, Any]) -> list[Any]:
    """The summary as rich tables: categories, judge calls, and the harm audit when present."""

    t = Table(title=f"Triage under policy '{summary['policy']['name']}' ({summary['policy']['hash']})")
    t.add_column("category", overflow="fold")
    t.add_column("pairs", justify="right")
    t.add_column("share", justify="right")
    for cat, count in summary["counts"].items():
        t.add_row(cat, str(count), f"{summary['shares'][cat]:.1%}")
    t.add_row("total", str(summary["pairs"]), "", end_section=True)
    unknown = summary["unknown"]
    t.add_row("unknown verdicts", str(unknown["verdicts"]), unknown["handling"])
    if "skipped_rows" in summary:
        t.add_row("skipped bad rows", str(summary["skipped_rows"]["count"]), "")
    for reason, count in summary.get("data", {}).get("dropped", {}).items():
        t.add_row(f"dropped: {reason}", str(count), "")
    if "corrections" in summary:
        c = summary["corrections"]
        t.add_row("corrections y_c", str(c["corrections"]), f"of {c['punish_pairs']} PUNISH")

    calls = summary["judge_calls"]
    j = Table(title=f"Judge {summary['judge']}")
    for col in ("items", "calls made", "cache hits", "duplicates", "saved"):
        j.add_column(col, justify="right")
    j.add_row(*(str(calls[k]) for k in ("items", "calls", "cache_hits", "duplicates", "saved")))
    tables = [t, j]

    if summary.get("harm_categories"):
        h = Table(title="By harm category (a pair counts under each category of either response)")
        h.add_column("harm category", overflow="fold")
        for col in ("pairs", "INVERT", "PUNISH", "RETAIN", "UNKNOWN", "changed"):
            h.add_column(col, justify="right")
        for tag, row in summary["harm_categories"].items():
            label = tag if row["name"] == tag else f"{tag} {row['name']}"
            counts = (str(row[k]) for k in ("pairs", "INVERT", "PUNISH", "RETAIN", "UNKNOWN"))
            h.add_row(label, *counts, f"{row['changed_share']:.0%}")
        tables.append(h)
    return tables


def print_summary(summary: dict[str, Any], console: Any = None) -> None:

    console = console or Console()
    for table in summary_tables(summary):
        console.print(table)


# ------------------------------------------------------------------------------------- files


def write_triaged(path: str | Path, rows: Iterable[TriagedPair]) -> None:
    write_jsonl_atomic(path, (r.to_dict() for r in rows))


def read_triaged(path: str | Path) -> list[TriagedPair]:
    """Read triaged.jsonl back (what `score` and `train` start from), naming any bad line."""
    out = []
    for n, row in read_jsonl(path):
        for key in ("prompt", "chosen", "rejected", "category"):
            if key not in row:
                raise InputError("missing", path=str(path), line=n, field=key)
        try:
            out.append(TriagedPair.from_dict(row))
        except ValueError as exc:
            raise InputError(str(exc), path=str(path), line=n, field="category") from None
    return out
