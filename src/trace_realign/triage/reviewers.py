"""Two reviewers' labels of the same items: how far do the people who own the policy agree?

`reviewer_agreement(first, second)` reads two labelled files (any shape `audit` reads, e.g. two
`trace-realign label` files `OUT/alice.jsonl`, `OUT/bob.jsonl`), joins their items on (prompt,
response) and reports, over the items both labelled: the raw agreement with its 95% Wilson
interval, Cohen's kappa with its 95% percentile bootstrap interval (`kappa_with_ci`, the audit's),
the confusion matrix and the items they label differently. An item one reviewer skipped is not
in their file, so it is counted in `only_in_first` / `only_in_second`, never as a disagreement.
Within one file the last line about an item counts.

Kappa near the judge's kappa against one reviewer says the judge errs about as people do; a low
kappa between reviewers says the policy text leaves the question open.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from trace_realign.errors import InputError
from trace_realign.stats import format_kappa, format_rate, kappa_with_ci, proportion
from trace_realign.triage.audit import VERDICTS
from trace_realign.triage.labelled import read_labelled


def _by_item(path: str | Path) -> dict[tuple[str, str], tuple[str, int]]:
    return {(x.item.prompt, x.item.response): (x.truth.value, x.line) for x in read_labelled(path)}


def reviewer_agreement(
    first: str | Path, second: str | Path, *, n_boot: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Agreement of the labels in `second` with those in `first`, over the items both labelled."""
    a, b = _by_item(first), _by_item(second)
    both = [k for k in a if k in b]
    if not both:
        raise InputError(f"no item is labelled in both {first} and {second} (joined on prompt and response)")
    la = [a[k][0] for k in both]
    lb = [b[k][0] for k in both]
    agree = sum(x == y for x, y in zip(la, lb, strict=True))
    values = [v.value for v in VERDICTS]
    return {
        "reviewers": [str(first), str(second)],
        "items": len(both),
        "only_in_first": len(a) - len(both),
        "only_in_second": len(b) - len(both),
        "agreement": proportion(agree, len(both)),
        "kappa": kappa_with_ci(la, lb, n_boot, seed),
        "confusion": {
            x: {y: sum(p == x and q == y for p, q in zip(la, lb, strict=True)) for y in values}
            for x in values
        },
        "differ": [
            {
                "prompt": k[0],
                "response": k[1],
                "first": a[k][0],
                "second": b[k][0],
                "lines": [a[k][1], b[k][1]],
            }
            for k in both
            if a[k][0] != b[k][0]
        ],
    }


def agreement_tables(report: dict[str, Any]) -> list[Any]:
    """The agreement as rich tables: the headline numbers, then the confusion matrix."""

    first, second = report["reviewers"]
    head = Table(title=f"Two reviewers on {report['items']} items both labelled")
    head.add_column("measure", overflow="fold")
    head.add_column("value (95% interval)", overflow="fold")
    head.add_row("agreement (Wilson)", format_rate(report["agreement"], counts=True))
    head.add_row("Cohen's kappa (bootstrap)", format_kappa(report["kappa"]))
    head.add_row("labelled only by the first", str(report["only_in_first"]))
    head.add_row("labelled only by the second", str(report["only_in_second"]))
    conf = Table(title=f"rows: {first}, columns: {second}")
    conf.add_column("first \\ second")
    for v in VERDICTS:
        conf.add_column(v.value, justify="right")
    for x, row in report["confusion"].items():
        conf.add_row(x, *(str(n) for n in row.values()))
    return [head, conf]
