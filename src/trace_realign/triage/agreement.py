"""Two judges on the same pairs: how far do their triages agree, and what to do where they do not.

`compare_triage(a, b)` measures the second triage against the first: agreement per triage category
of the first (share of its pairs the second puts in the same category, 95% Wilson interval),
Cohen's kappa on the categories and on the individual verdicts (95% percentile bootstrap), and
the pairs where they disagree. `combine(a, b, on_disagreement)` then keeps the first judge's
triage (`"keep"`), only the pairs both agree on (`"drop"`), or routes the disagreements to
UNKNOWN (`"unknown"`), which training leaves out like any other unknown pair.

A second triage run compared after the fact works the same way: `compare_triaged_files(A, B)`
reads two triaged.jsonl files and joins them on pair id.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.table import Table

from trace_realign.errors import InputError
from trace_realign.io import write_jsonl_atomic
from trace_realign.judges.spec import make_judge
from trace_realign.schema import Category
from trace_realign.stats import format_kappa, format_rate, kappa_with_ci
from trace_realign.triage.audit import category_table
from trace_realign.triage.triage import TriagedPair, TriageResult, read_triaged, triage_pairs

ON_DISAGREEMENT = ("keep", "drop", "unknown")


def compare_rows(a: list[TriagedPair], b: list[TriagedPair], names: tuple[str, str]) -> dict[str, Any]:
    """Agreement of two triages of the same pairs (joined on id; pairs only one of them has are counted)."""
    by_id = {r.id: r for r in b}
    joined = [(r, by_id[r.id]) for r in a if r.id in by_id]
    if not joined:
        raise InputError("the two triages share no pair (joined on id)")
    table = category_table(
        [x.category.value for x, _ in joined], [y.category.value for _, y in joined], names[0]
    )
    # verdict-level kappa over the verdicts both judges gave
    va, vb = [], []
    for x, y in joined:
        for cx, cy in ((x.c_w, y.c_w), (x.c_l, y.c_l)):
            if cx is not None and cy is not None:
                va.append(cx)
                vb.append(cy)
    disagreements = [
        {
            "id": x.id,
            "prompt": x.pair.prompt,
            "chosen": x.pair.chosen,
            "rejected": x.pair.rejected,
            names[0]: {
                "category": x.category.value,
                "c_w": x.c_w,
                "c_l": x.c_l,
                "reason_w": x.reason_w,
                "reason_l": x.reason_l,
            },
            names[1]: {
                "category": y.category.value,
                "c_w": y.c_w,
                "c_l": y.c_l,
                "reason_w": y.reason_w,
                "reason_l": y.reason_l,
            },
        }
        for x, y in joined
        if x.category is not y.category
    ]
    return {
        "judges": list(names),
        "pairs": len(joined),
        "only_in_first": len(a) - len(joined),
        "only_in_second": len(b) - len(joined),
        "categories": table,
        "verdict_kappa": kappa_with_ci(va, vb),
        "disagreements": disagreements,
    }


def compare_triage(a: TriageResult, b: TriageResult) -> dict[str, Any]:
    return compare_rows(a.rows, b.rows, (a.judge_identity, b.judge_identity))


def compare_triaged_files(first: str | Path, second: str | Path) -> dict[str, Any]:
    """Two triaged.jsonl files (e.g. two runs with different judges) compared; see `compare_rows`."""
    return compare_rows(read_triaged(first), read_triaged(second), (str(first), str(second)))


def combine(a: TriageResult, b: TriageResult, on_disagreement: str = "keep") -> TriageResult:
    """The first triage, with pairs the second disagrees on kept, dropped or made UNKNOWN."""
    if on_disagreement not in ON_DISAGREEMENT:
        raise InputError(
            f"on_disagreement must be one of {', '.join(ON_DISAGREEMENT)}, got {on_disagreement!r}"
        )
    other = {r.id: r.category for r in b.rows}
    rows = []
    for r in a.rows:
        agree = other.get(r.id) is r.category
        if agree or on_disagreement == "keep":
            rows.append(r)
        elif on_disagreement == "unknown":
            said = other[r.id].value if r.id in other else "nothing"
            note = f"[judges disagree: {b.judge_identity} says {said}]"
            rows.append(
                replace(
                    r,
                    category=Category.UNKNOWN,
                    reason_w=f"{note} {r.reason_w}".strip(),
                    correction=None,
                )
            )
    return replace(a, rows=rows)


def agreement_summary(
    comparison: dict[str, Any], on_disagreement: str, written_to: str | None
) -> dict[str, Any]:
    """What the triage summary keeps of a comparison (the disagreeing pairs go to their own file)."""
    out = {k: v for k, v in comparison.items() if k != "disagreements"}
    out["disagreeing_pairs"] = len(comparison["disagreements"])
    out["on_disagreement"] = on_disagreement
    if written_to:
        out["disagreements_file"] = written_to
    return out


def agreement_table(agreement: dict[str, Any]) -> Any:

    cats = agreement["categories"]
    kappa = format_kappa(cats["kappa"])
    t = Table(title=f"Two judges: {agreement['judges'][1]} against {agreement['judges'][0]}")
    t.add_column("category (first judge)", overflow="fold")
    t.add_column("second agrees (95% Wilson)", overflow="fold")
    for cat, e in cats["per_category"].items():
        t.add_row(cat, format_rate(e, counts=True))
    e = cats["agreement"]
    t.add_row("all pairs", format_rate(e, counts=True))
    t.add_row("kappa, categories (bootstrap)", kappa)
    vk = agreement["verdict_kappa"]
    if vk["kappa"] is not None:
        ci = f" [{vk['ci95'][0]:.3f}, {vk['ci95'][1]:.3f}]" if vk.get("ci95") else ""
        t.add_row("kappa, verdicts (bootstrap)", f"{vk['kappa']:.3f}{ci}")
    t.add_row("disagreeing pairs", f"{agreement['disagreeing_pairs']}: {agreement['on_disagreement']}")
    return t


def second_opinion(
    pairs: Any,
    first: TriageResult,
    judge2: Any,
    policy: Any,
    cache: Any,
    *,
    on_disagreement: str = "keep",
    disagreements_path: str | Path | None = None,
    progress: bool = True,
) -> tuple[TriageResult, dict[str, Any]]:
    """Triage `pairs` again with `judge2` (a spec or a judge), compare, write the disagreeing pairs,
    and combine: `(the triage to use, the agreement block for the summary)`. What `triage --judge2` runs."""

    judge = judge2 if hasattr(judge2, "judge") else make_judge(judge2)
    try:
        second = triage_pairs(pairs, judge, policy, cache, unknown_as=first.unknown_as, progress=progress)
    finally:
        if judge is not judge2 and callable(getattr(judge, "close", None)):
            judge.close()
    comparison = compare_triage(first, second)
    if disagreements_path is not None:
        write_jsonl_atomic(disagreements_path, comparison["disagreements"])
    summary = agreement_summary(
        comparison, on_disagreement, None if disagreements_path is None else str(disagreements_path)
    )
    return combine(first, second, on_disagreement), summary


def disagreements_path_for(out: str | Path) -> Path:
    """`disagreements.jsonl` beside `triaged.jsonl`, else `<stem>.disagreements.jsonl`."""
    out = Path(out)
    if out.name == "triaged.jsonl":
        return out.with_name("disagreements.jsonl")
    return out.with_name(out.name.removesuffix(".jsonl") + ".disagreements.jsonl")
