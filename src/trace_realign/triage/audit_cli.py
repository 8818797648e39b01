"""`trace-realign audit`: measure a judge on a labelled sample before paying for the triage.

    trace-realign audit --labelled sample.jsonl --policy new_policy.md --judge openai:gpt-4o \\
        --out runs/x/triage/audit.json

Prints accuracy, precision and recall per verdict (95% Wilson intervals), Cohen's kappa (95%
percentile bootstrap interval), the confusion matrix and the rows the judge got wrong with its
reason; `--out` writes all of it as JSON, which `triage --audit`, the report and
`train --label_smoothing_from` read. The audit runs through the verdict cache, so the audited items
are not judged again by the real triage. The labelled file's shapes: `triage/labelled.py`.

    trace-realign audit --agreement labels/alice.jsonl labels/bob.jsonl

compares two reviewers instead (triage/reviewers.py): agreement and Cohen's kappa, with 95%
intervals, over the items both labelled; no judge is run.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.table import Table

from trace_realign.cache import VerdictCache
from trace_realign.errors import InputError
from trace_realign.io import write_json_atomic
from trace_realign.judges.policy import Policy
from trace_realign.judges.spec import make_judge
from trace_realign.schema import Label
from trace_realign.stats import format_kappa, format_rate
from trace_realign.triage.audit import audit_judge
from trace_realign.triage.labelled import read_labelled
from trace_realign.triage.reviewers import agreement_tables, reviewer_agreement


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "audit",
        help="measure a judge on labelled examples: accuracy, kappa, confusion matrix",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--labelled", help="JSONL of labelled items or pairs (required unless --agreement)")
    p.add_argument(
        "--policy", help="text file with the policy the judge applies (required unless --agreement)"
    )
    p.add_argument("--judge", help="judge spec, as for triage (required unless --agreement)")
    p.add_argument(
        "--agreement",
        nargs=2,
        metavar=("FIRST", "SECOND"),
        help="instead: Cohen's kappa between two reviewers' labelled files, over the items both labelled",
    )
    p.add_argument("--out", help="write the audit (every wrong row included) as JSON here")
    p.add_argument("--label-field", default="label", help="label field of item rows (default: label)")
    p.add_argument(
        "--pair-labels",
        default="chosen_label,rejected_label",
        help="label fields of pair rows, COL_CHOSEN,COL_REJECTED (dotted paths allowed)",
    )
    p.add_argument("--limit", type=int, help="audit only the first N rows")
    p.add_argument("--concurrency", type=int, help="judge requests in flight (endpoint judges)")
    p.add_argument("--cache", help="verdict cache file (default: $TRACE_REALIGN_CACHE/verdicts.sqlite)")
    p.add_argument("--no-cache", action="store_true", help="judge without reading or storing verdicts")
    p.add_argument("--show-wrong", type=int, default=10, help="wrong rows printed (all are in --out)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    if args.agreement:
        return _agreement(args)
    missing = [f"--{k}" for k in ("labelled", "policy", "judge") if not getattr(args, k)]
    if missing:
        raise InputError(f"{', '.join(missing)}: required (or --agreement FIRST SECOND)")

    cols = [c.strip() for c in args.pair_labels.split(",")]
    if len(cols) != 2 or not all(cols):
        raise InputError(f"expected COL_CHOSEN,COL_REJECTED, got {args.pair_labels!r}", field="pair-labels")
    if args.limit is not None and args.limit < 0:
        raise InputError("--limit must be >= 0", field="limit")
    labelled = read_labelled(
        args.labelled, label=args.label_field, pair_labels=(cols[0], cols[1]), limit=args.limit
    )
    policy = Policy.from_file(args.policy)
    spec: Any = args.judge
    if args.concurrency is not None:
        spec = {"spec": spec, "concurrency": args.concurrency}
    judge = make_judge(spec)
    cache = None if args.no_cache else VerdictCache(args.cache)
    try:
        report = audit_judge(
            judge, policy, labelled, cache=cache, out=args.out, progress=args.progress, source=args.labelled
        )
    finally:
        if cache is not None:
            cache.close()
        if callable(getattr(judge, "close", None)):
            judge.close()
    console = Console()
    print_audit(report, console, show_wrong=args.show_wrong)
    if args.out:
        console.print(f"wrote {args.out}", highlight=False, soft_wrap=True)
    return 0


def _agreement(args: argparse.Namespace) -> int:
    report = reviewer_agreement(*args.agreement)
    console = Console()
    for table in agreement_tables(report):
        console.print(table)
    for d in report["differ"][: args.show_wrong]:
        text = " ".join(d["response"].split())[:120]
        console.print(f"lines {d['lines'][0]} / {d['lines'][1]}: {d['first']} / {d['second']}: {text}",
                      highlight=False, soft_wrap=True)  # fmt: skip
    if args.out:
        write_json_atomic(args.out, report)
        console.print(f"wrote {args.out}", highlight=False, soft_wrap=True)
    return 0


# ------------------------------------------------------------------------------ printing


def audit_tables(report: dict[str, Any]) -> list[Any]:
    """The audit as rich tables: the headline numbers, per verdict, the confusion matrix, categories."""
    kappa = format_kappa(report["kappa"])
    head = Table(title=f"Audit of judge {report['judge']} on {report['items']} labelled items")
    head.add_column("measure", overflow="fold")
    head.add_column("value (95% interval)", overflow="fold")
    head.add_row("accuracy (Wilson)", format_rate(report["accuracy"], counts=True))
    head.add_row("error rate = flip rate (Wilson)", format_rate(report["error_rate"], counts=True))
    head.add_row("Cohen's kappa (bootstrap)", kappa)
    head.add_row("decided (not UNKNOWN)", format_rate(report["coverage"], counts=True))
    calls = report.get("judge_calls", {})
    head.add_row("judge calls / cache hits", f"{calls.get('calls', 0)} / {calls.get('cache_hits', 0)}")

    per = Table(title="Per verdict (Wilson intervals)")
    for col in ("verdict", "precision", "recall", "human support"):
        per.add_column(col, overflow="fold")
    for v, row in report["per_verdict"].items():
        per.add_row(
            v,
            format_rate(row["precision"], counts=True),
            format_rate(row["recall"], counts=True),
            str(row["support"]),
        )

    conf = Table(title="Confusion matrix (rows: human, columns: judge)")
    conf.add_column("human \\ judge")
    for j in Label:
        conf.add_column(j.value, justify="right")
    for t, row in report["confusion"].items():
        conf.add_row(t, *(str(row[j.value]) for j in Label))
    tables = [head, per, conf]

    cats = report.get("categories")
    if cats:
        c = Table(title=f"Triage categories of {cats['pairs']} pairs: judge against human labels")
        c.add_column("human category")
        c.add_column("judge agrees (Wilson)", overflow="fold")
        for cat, entry in cats["per_category"].items():
            c.add_row(cat, format_rate(entry, counts=True))
        c.add_row("all", format_rate(cats["agreement"], counts=True))
        tables.append(c)
    return tables


def print_audit(report: dict[str, Any], console: Any = None, show_wrong: int = 10) -> None:
    console = console or Console()
    for t in audit_tables(report):
        console.print(t)
    wrong = report["wrong"]
    for w in wrong[:show_wrong]:
        where = f"line {w['line']}" + (f" ({w['side']})" if "side" in w else "")
        reason = " ".join(str(w["reason"]).split())[:160]
        console.print(
            f"{where}: human {w['human']}, judge {w['judge']}: {reason}", highlight=False, soft_wrap=True
        )
    if len(wrong) > show_wrong:
        console.print(f"... and {len(wrong) - show_wrong} more, all in the audit JSON", highlight=False)
