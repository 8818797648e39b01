"""The comparison as terminal tables: what `trace-realign demo` prints when it is done.

The numbers are the report's (`comparison.json`, `demo_summary.json`); only the layout differs.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

# comparison.json cell -> column title
LABELS = {
    "tpa": "agreement",
    "invert": "INVERT",
    "punish": "PUNISH",
    "retain": "RETAIN",
    "not_declined": "not declined",
    "asr_fiction": "ASR fiction",
    "asr_suppression": "ASR suppr.",
    "tpa_typed": "agreement, typed judge",
    "mc": "MC acc",
    "perplexity": "ppl",
}
# the headline table, then the second judge and utility
HEADLINE = ("tpa", "invert", "punish", "retain", "not_declined", "asr_fiction", "asr_suppression")
SECONDARY = ("tpa_typed", "mc", "perplexity")
TESTED = ("tpa", "retain", "not_declined", "asr_fiction", "asr_suppression")


def _cell(value: float | None, ci: list[float] | None, digits: int = 1) -> str:
    """`59.4 (47-71)`: the mean and its 95% interval, the interval's ends rounded to whole points."""
    if value is None:
        return "-"
    if not ci:
        return f"{value:.{digits}f}"
    d = 2 if digits > 1 else 0
    return f"{value:.{digits}f} ({ci[0]:.{d}f}-{ci[1]:.{d}f})"


def print_table(rows: list[dict[str, Any]], title: str, console: Console | None = None) -> None:
    """The comparison's rows (`demo.compare.summary_rows`): the headline axes, then the rest."""
    console = console or Console()
    for keys, caption in (
        (HEADLINE, "mean over seeds (95% interval); ASR counts operational help only; lower is better for "
         "'not declined' and ASR"),
        (SECONDARY, "agreement under the independent typed judge; multiple-choice accuracy; perplexity"),
    ):  # fmt: skip
        table = Table(title=title if keys is HEADLINE else None, caption=caption)
        table.add_column("model", no_wrap=True)
        table.add_column("seeds", justify="right")
        for key in keys:
            table.add_column(LABELS[key], justify="right")
        for r in rows:
            cells = [_cell(r[k], r.get(f"{k}_ci"), 2 if k == "perplexity" else 1) for k in keys]
            table.add_row(r["model"], str(r.get("seeds", 1)), *cells)
        console.print(table)


def print_tests(comparison: dict[str, Any], console: Console | None = None) -> None:
    """The paired tests of each reference (TRACE, and `tests_also`'s rows) against each model, on
    agreement and the safety axes."""
    print_tests_of(comparison.get("reference"), comparison.get("tests"), console)
    for ref, tests in comparison.get("tests_also", {}).items():
        print_tests_of(ref, tests, console)


def print_tests_of(ref: str | None, tests: dict[str, Any] | None, console: Console | None = None) -> None:
    if not tests:
        return
    table = Table(
        title=f"{ref} minus each model on the same prompts: points (95% interval), p",
        caption="p: paired bootstrap (seeds resampled) / exact McNemar (seed-matched pairs)",
    )
    table.add_column("vs", no_wrap=True)
    for m in TESTED:
        table.add_column(LABELS[m], justify="right")
    for other, by_metric in tests.items():
        cells = [other]
        for m in TESTED:
            t = by_metric.get(m)
            if not t or t["bootstrap"]["diff"] is None:
                cells.append("-")
                continue
            b = t["bootstrap"]
            lo, hi = (100 * x for x in b["ci95"])
            cells.append(
                f"{100 * b['diff']:+.1f} ({lo:+.0f}, {hi:+.0f})\np {b['p']:.3f} / {t['mcnemar']['p']:.3f}"
            )
        table.add_row(*cells)
    (console or Console()).print(table)


def print_agreement(agreement: dict[str, dict[str, Any]], console: Console | None = None) -> None:
    """Agreement with each policy of the base model and M_ref: M_ref should follow the old one."""
    table = Table(title="Target policy agreement on held-out prompts, before realignment")
    for label in ("model", "old policy", "new policy"):
        table.add_column(label, justify="left" if label == "model" else "right")
    for name, by_policy in agreement.items():
        table.add_row(name, *(_rate(by_policy[w]["overall"]) for w in ("old", "new")))
    (console or Console()).print(table)


def _rate(entry: dict[str, Any] | None) -> str:
    return "-" if not entry or entry.get("rate") is None else f"{100.0 * entry['rate']:.1f}"
