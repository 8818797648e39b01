"""`trace-realign report DIR [DIR ...]`: one self-contained HTML page and a Markdown twin.

    trace-realign report runs/x                    # writes runs/x/report.html and runs/x/report.md
    trace-realign report runs/a runs/b --out cmp   # compares two runs side by side

A DIR is a run directory (docs/architecture.md) or an evaluation folder holding metrics.json.
Missing parts (no training yet, no evaluation) are skipped with a note.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from trace_realign.errors import InputError
from trace_realign.report import build_report


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report",
        help="HTML + Markdown report of one or more run directories",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run directories or evaluation folders")
    p.add_argument("--out", help="folder for report.html and report.md (default: the first DIR)")
    p.add_argument(
        "--before", help="evaluation shown as 'before' in the examples (default: M_ref or the first)"
    )
    p.add_argument("--examples", type=int, default=6, help="example prompts to show (default 6)")
    return p


def run(args: argparse.Namespace) -> int:

    for d in args.dirs:
        if not Path(d).is_dir():
            raise InputError("not a folder", path=d)
    if args.examples < 0:
        raise InputError("--examples must be >= 0")
    html_path, md_path = build_report(args.dirs, args.out, before=args.before, examples=args.examples)
    print(f"wrote {html_path} and {md_path}")
    return 0
