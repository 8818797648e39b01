"""`trace-realign label`: a local review page where the policy's owners label pairs for the audit.

    trace-realign label --triaged runs/x/triage/triaged.jsonl --sample 60 --policy new_policy.md \\
        --reviewer alice --judge rules:new_rules.yaml --out runs/x/labels
    trace-realign label --out runs/x/labels --reviewer bob          # the same sample, a second reviewer
    trace-realign label --disagreements runs/x/triage/disagreements.jsonl --policy new_policy.md \\
        --reviewer alice --out runs/x/disagreements-labels
    trace-realign label --out runs/x/labels --export-labelstudio ls/      # tasks.json + config.xml
    trace-realign label --out runs/x/labels --import-labelstudio export.json

The sample is drawn once into OUT/sample.json (stratified by the judge's category, seeded); each
answer is saved at once to OUT/<reviewer>.jsonl, which `trace-realign audit --labelled` reads as it
is; a restart resumes at the first unanswered pair. Formats: label/store.py, label/labelstudio.py.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from trace_realign.errors import InputError
from trace_realign.label.labelstudio import export_tasks, import_export
from trace_realign.label.sample import prepare_sample
from trace_realign.label.stage import audit_commands, label
from trace_realign.label.store import check_reviewer, shown


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "label",
        help="a local review page: the policy's owners label pairs for the audit",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("what to label (first run in OUT; later runs reuse OUT/sample.json)")
    src.add_argument("--triaged", help="a triage's triaged.jsonl: sample stratified by its category")
    src.add_argument(
        "--data", help="old pairs (any file `triage --data` reads) when there is no triage: no strata"
    )
    src.add_argument(
        "--disagreements", help="a triage's disagreements.jsonl (triage --judge2): every pair by default"
    )
    src.add_argument("--sample", type=int, help="how many pairs to draw (required with --triaged and --data)")
    src.add_argument("--seed", type=int, help="seed of the draw (default 0)")
    src.add_argument("--policy", help="the new policy the reviewers label against (first run)")
    p.add_argument("--out", default="labels", help="folder for the sample and the labels (default: labels)")
    p.add_argument("--reviewer", help="your name; your labels go to OUT/<reviewer>.jsonl (asked if missing)")
    p.add_argument(
        "--judge",
        action="append",
        default=[],
        help="judge spec for the printed audit line (repeat for two judges)",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)"
    )
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument(
        "--export-labelstudio", metavar="DIR", help="write Label Studio tasks.json + config.xml, then exit"
    )
    p.add_argument(
        "--import-labelstudio",
        metavar="EXPORT",
        help="read a Label Studio JSON export into OUT/<annotator>.jsonl, then exit",
    )
    return p


def _reviewer(name: str | None) -> str:

    if name is None:
        if not sys.stdin.isatty():
            raise InputError("who is labelling? pass --reviewer NAME", field="reviewer")
        name = input("reviewer name (your labels go to OUT/<name>.jsonl): ").strip()
    return check_reviewer(name)


def run(args: argparse.Namespace) -> int:

    if not 0 <= args.port <= 65535:
        raise InputError(f"expected a port in 0-65535, got {args.port}", field="port")
    options = {
        "triaged": args.triaged,
        "data": args.data,
        "disagreements": args.disagreements,
        "size": args.sample,
        "seed": args.seed,
        "policy": args.policy,
    }
    if args.export_labelstudio or args.import_labelstudio:
        sample = prepare_sample(args.out, **options)
        if args.export_labelstudio:
            tasks, config = export_tasks(sample, args.export_labelstudio)
            print(
                f"wrote {shown(tasks)} ({len(sample.items)} tasks) and {shown(config)} (the labelling config)"
            )
        if args.import_labelstudio:
            for reviewer, path in import_export(args.import_labelstudio, sample, args.out).items():
                print(f"{reviewer}: {shown(path)}")
                for line in audit_commands(path, sample.policy, args.judge):
                    print(f"  {line}")
        return 0

    reviewer = _reviewer(args.reviewer)

    def ready(url: str, sample: Any, store: Any, lines: list[str]) -> None:
        p = store.progress()
        print(
            f"{len(sample.items)} pairs to label in {shown(args.out)} ({p['done']} answered); labels go to {shown(store.path)}"
        )
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            print(
                f"listening on {args.host}: anyone who can reach this machine can open the page and label as {reviewer}"
            )
        print(f"open {url} (Ctrl-C stops; the same command resumes)", flush=True)

    result = label(
        args.out, reviewer, judges=args.judge, host=args.host, port=args.port, on_ready=ready, **options
    )
    p = result["progress"]
    print(
        f"\n{p['done']} of {p['total']} pairs answered ({p['skipped']} skipped whole); labels in {shown(result['labels'])}"
    )
    print("measure the judge on them with:")
    for line in result["audit"]:
        print(f"  {line}")
    if result["agreement"]:
        print(f"and the agreement between reviewers with:\n  {result['agreement']}")
    return 0
