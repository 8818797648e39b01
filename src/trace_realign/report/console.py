"""The comparison as terminal tables: what `trace-realign demo` prints when it is done.

The numbers are the report's (`comparison.json`, `demo_summary.json`); only the layout differs.
Every number must stay readable in an 80-column terminal or CI log, so a table wider than the
console is split into several, each repeating the key columns, instead of cutting cells short.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from trace_realign.stats import format_estimate, format_p

# comparison.json cell -> column title
LABELS = {
    "tpa": "agreement",
    "invert": "INVERT",
    "punish": "PUNISH",
    "retain": "RETAIN",
    "not_declined": "not declined",
    "asr_fiction": "ASR fiction",
    "asr_suppression": "ASR suppr.",
    "tpa_typed": "agreement (typed judge)",
    "external_declined": "external declined",
    "mc": "MC acc",
    "perplexity": "ppl",
}
HEADLINE = (
    "tpa",
    "invert",
    "punish",
    "retain",
    "not_declined",
    "asr_fiction",
    "asr_suppression",
    "external_declined",
)
SECONDARY = ("tpa_typed", "mc", "perplexity")
TESTED = ("tpa", "retain", "not_declined", "asr_fiction", "asr_suppression", "external_declined")
Column = tuple[str, list[str]]  # title, one cell per row


def _width(column: Column) -> int:
    title, cells = column
    return max(len(x) for x in [title, *cells])


def print_columns(
    title: str | None,
    keys: Sequence[Column],
    columns: Sequence[Column],
    console: Console,
    caption: str | None = None,
) -> None:
    """Print `keys` + `columns` as one table, or as several that each repeat `keys`, so that no table
    is wider than the console: every cell is printed whole."""
    # box edges and padding: one border and two spaces of padding per column, plus the last border
    key_width = sum(_width(c) + 3 for c in keys) + 1
    groups: list[list[Column]] = [[]]
    used = key_width
    for col in columns:
        if groups[-1] and used + _width(col) + 3 > console.width:
            groups.append([])
            used = key_width
        groups[-1].append(col)
        used += _width(col) + 3
    for n, group in enumerate(groups):
        table = Table(
            title=title if n == 0 else None,
            caption=caption if n == len(groups) - 1 else None,
            box=box.SIMPLE_HEAD,
            min_width=None,
        )
        for i, (name, _) in enumerate([*keys, *group]):
            table.add_column(name, justify="left" if i < len(keys) else "right", no_wrap=True)
        rows = len(keys[0][1]) if keys else 0
        for r in range(rows):
            table.add_row(*(c[1][r] for c in [*keys, *group]))
        console.print(table)


def _cell(row: dict[str, Any], key: str) -> str:
    """The mean and its 95% interval, `77.7 [71.4, 83.7]` (perplexity with two decimals)."""
    digits = 2 if key == "perplexity" else 1
    return format_estimate(row.get(key), row.get(f"{key}_ci"), scale=1.0, digits=digits)


def print_table(rows: list[dict[str, Any]], title: str, console: Console | None = None) -> None:
    """The comparison's rows (`demo.compare.summary_rows`): the headline axes, then the rest."""
    console = console or Console()
    keys = [("model", [r["model"] for r in rows]), ("seeds", [str(r.get("seeds", 1)) for r in rows])]
    print_columns(
        title,
        keys,
        [(LABELS[k], [_cell(r, k) for r in rows]) for k in HEADLINE],
        console,
        caption="mean over seeds [95% interval: t over seeds; one seed: over prompts]. ASR counts "
        "operational help only; lower is better for 'not declined' and ASR. External declined: real "
        "harmful prompts from outside the scenario (Do-Not-Answer, its report third), higher is safer",
    )
    print_columns(
        None,
        keys,
        [(LABELS[k], [_cell(r, k) for r in rows]) for k in SECONDARY],
        console,
        caption="agreement under the independent typed judge; multiple-choice accuracy; perplexity",
    )


def print_tests(comparison: dict[str, Any], console: Console | None = None) -> None:
    """The tests of each reference (TRACE, and `tests_also`'s rows) against each model, on agreement
    and the safety axes."""
    print_tests_of(comparison.get("reference"), comparison.get("tests"), console)
    for ref, tests in comparison.get("tests_also", {}).items():
        print_tests_of(ref, tests, console)


def print_tests_of(ref: str | None, tests: dict[str, Any] | None, console: Console | None = None) -> None:
    """One table per metric: `ref` minus each model over training seeds (the method-level test,
    which decides), and prompt by prompt for these trained models (a description)."""
    if not tests:
        return
    console = console or Console()
    tested = [m for m in TESTED if any(m in by and by[m]["seed"]["n_a"] for by in tests.values())]
    for n, metric in enumerate(tested):
        rows = [(other, by[metric]) for other, by in tests.items() if metric in by]
        seed = [t["seed"] for _, t in rows]
        prompt = [t["prompt"] for _, t in rows]
        print_columns(
            f"{ref} minus each model: {LABELS[metric]}, points",
            [("vs", [o for o, _ in rows])],
            [
                ("over seeds [95%]", [format_estimate(s["diff"], s.get("ci95"), signed=True) for s in seed]),
                ("p", [format_p(s.get("p")) for s in seed]),
                ("p Holm", [format_p(s.get("p_holm")) for s in seed]),
                ("seeds", [f"{s['n_a']}/{s['n_b']}" for s in seed]),
                (
                    "prompt-level [95%]",
                    [format_estimate(p["diff"], p.get("ci95"), signed=True) for p in prompt],
                ),
            ],
            console,
            caption=None
            if n < len(tested) - 1
            else "over seeds: Welch t on per-seed means (one-sample t against M_ref), n/a with fewer than 2 "
            "seeds; p Holm: adjusted over the tests of the metric in its family (the comparison, or a "
            "study), it decides a claim. prompt-level: these trained models only, a description",
        )


def print_agreement(agreement: dict[str, dict[str, Any]], console: Console | None = None) -> None:
    """Agreement with each policy of the base model and M_ref: M_ref should follow the old one."""
    rows = list(agreement.items())
    print_columns(
        "Target policy agreement on held-out prompts, before realignment",
        [("model", [name for name, _ in rows])],
        [
            (f"{which} policy", [format_estimate((by[which]["overall"] or {}).get("rate")) for _, by in rows])
            for which in ("old", "new")
        ],
        console or Console(),
    )
