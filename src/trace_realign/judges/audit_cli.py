"""`trace-realign audit`: measure a judge on a labelled sample before paying for the triage.

    trace-realign audit --labelled sample.jsonl --policy new_policy.md --judge openai:gpt-4o \\
        --out runs/x/triage/audit.json

Prints accuracy, precision and recall per verdict (95% Wilson intervals), Cohen's kappa (95%
percentile bootstrap interval), the confusion matrix and the rows the judge got wrong with its
reason; `--out` writes all of it as JSON, which `triage --audit`, the report and
`train --label_smoothing_from` read. The audit runs through the verdict cache, so the audited items
are not judged again by the real triage. The labelled file's shapes: `judges/audit.py`.

    trace-realign audit --agreement labels/alice.jsonl labels/bob.jsonl

compares two reviewers instead (judges/reviewers.py): agreement and Cohen's kappa, with 95%
intervals, over the items both labelled; no judge is run.
"""

from __future__ import annotations

import argparse
from typing import Any

from trace_realign.errors import InputError


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
    from rich.console import Console

    if args.agreement:
        return _agreement(args)
    missing = [f"--{k}" for k in ("labelled", "policy", "judge") if not getattr(args, k)]
    if missing:
        raise InputError(f"{', '.join(missing)}: required (or --agreement FIRST SECOND)")

    from trace_realign.cache import VerdictCache
    from trace_realign.judges.audit import audit_judge, print_audit, read_labelled
    from trace_realign.judges.policy import Policy
    from trace_realign.judges.spec import make_judge

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
    from rich.console import Console

    from trace_realign.judges.reviewers import agreement_tables, reviewer_agreement

    report = reviewer_agreement(*args.agreement)
    console = Console()
    for table in agreement_tables(report):
        console.print(table)
    for d in report["differ"][: args.show_wrong]:
        text = " ".join(d["response"].split())[:120]
        console.print(f"lines {d['lines'][0]} / {d['lines'][1]}: {d['first']} / {d['second']}: {text}",
                      highlight=False, soft_wrap=True)  # fmt: skip
    if args.out:
        from trace_realign.io import write_json_atomic

        write_json_atomic(args.out, report)
        console.print(f"wrote {args.out}", highlight=False, soft_wrap=True)
    return 0
