"""`trace-realign triage`: judge every old pair under the new policy and write triaged.jsonl
(`triage.stage.run_triage` does the work; this module only reads flags and `--config`).

    trace-realign triage --data pairs.jsonl --policy new_policy.md --judge rules:rules.yaml \\
        --out runs/x/triage/triaged.jsonl

Writes OUT (one row per pair, docs/architecture.md) and, beside it, the summary as JSON:
`summary.json` in OUT's folder when OUT is named `triaged.jsonl` (the run-directory layout),
otherwise `<OUT stem>.summary.json`; `--summary PATH` chooses another place. The summary is also
printed as tables. Every verdict is committed to the verdict cache as it arrives, so a run
stopped by Ctrl-C, a kill or an unreachable judge (exit 3) resumes where it stopped when the same
command is run again.

Options can also come from `--config FILE.yaml`: the same names as the flags (`data`, `policy`,
`judge`, `out`, `format`, `cache`, `corrections`, ...; `-` or `_` alike) at the top level or in
a `triage:` block, with `judge:` and `corrections:` either a spec string or a block. Flags given
on the command line win. Relative paths in the file are read from the file's folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from trace_realign.data import EXAMPLES_DIR
from trace_realign.errors import InputError
from trace_realign.io import load_yaml
from trace_realign.judges.spec import split_path_spec
from trace_realign.triage.stage import OPTIONS, REQUIRED, run_triage

PATH_OPTIONS = ("policy", "out", "summary", "cache", "audit")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `trace-realign triage` to `subparsers` and return its parser.

    Long because it declares every flag of the command, one after another, in the order `--help`
    lists them: read top to bottom it is the command's reference, and a split would only scatter it.
    """
    p = subparsers.add_parser(
        "triage",
        help="Stage 1: judge old pairs under the new policy (INVERT / PUNISH / RETAIN)",
        description=__doc__.split("\n\n")[0],
        epilog=_example(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # default=None everywhere: a flag left out must not hide the value from --config.
    p.add_argument("--data", help="JSONL/JSON/Parquet/CSV file, dataset folder or Hub dataset id")
    p.add_argument("--policy", help="text file with the new policy the judge applies")
    p.add_argument(
        "--judge",
        help="judge spec: openai:MODEL[@URL], hf:PATH, rules:FILE, labels:COL_W,COL_L, noisy:RATE:SPEC",
    )
    p.add_argument("--out", help="triaged JSONL to write")
    p.add_argument("--config", help="YAML file with these options and a judge: block")
    p.add_argument(
        "--format",
        choices=["auto", "trl", "pku"],
        default=None,
        help="row format (default: from the columns)",
    )
    p.add_argument("--split", default=None, help="dataset split for folders and Hub ids (default: train)")
    p.add_argument(
        "--dataset-config", default=None, help="dataset configuration of a Hub id (e.g. alpaca-7b)"
    )
    p.add_argument("--limit", type=int, default=None, help="triage only the first N pairs")
    p.add_argument(
        "--skip-bad-rows",
        action="store_true",
        default=None,
        help="skip malformed rows (listed in the summary)",
    )
    p.add_argument("--concurrency", type=int, default=None, help="judge requests in flight (endpoint judges)")
    p.add_argument(
        "--cache", default=None, help="verdict cache file (default: $TRACE_REALIGN_CACHE/verdicts.sqlite)"
    )
    p.add_argument(
        "--no-cache", action="store_true", default=None, help="judge without reading or storing verdicts"
    )
    p.add_argument(
        "--corrections", default=None, help="generator spec for oracle corrections y_c of PUNISH pairs"
    )
    p.add_argument(
        "--unknown-as",
        choices=["compliant", "non_compliant"],
        default=None,
        help="keep pairs with unknown verdicts by reading those verdicts as this (default: leave them out)",
    )
    p.add_argument("--summary", default=None, help="where to write the summary JSON")
    p.add_argument(
        "--dry-run", action="store_true", default=None, help="print the judge calls and tokens, call nothing"
    )
    p.add_argument(
        "--no-progress", dest="progress", action="store_false", default=None, help="no progress bar"
    )
    p.add_argument(
        "--judge2", default=None, help="a second judge: agreement in the summary, disagreements written out"
    )
    p.add_argument(
        "--on-disagreement",
        choices=["keep", "drop", "unknown"],
        default=None,
        help="pairs the two judges triage differently: keep the first judge's (default), drop them, or make them UNKNOWN",
    )
    p.add_argument(
        "--audit", default=None, help="audit.json of this judge: its measured error goes into the summary"
    )
    p.add_argument(
        "--batch", action="store_true", default=None, help="judge through the Batch API (openai judges)"
    )
    p.add_argument(
        "--batch-poll", type=float, default=None, help="seconds between job status checks (default 60)"
    )
    p.add_argument(
        "--batch-wait",
        type=float,
        default=None,
        help="give up waiting after this many seconds, exit 4 and keep the job id (default: wait)",
    )
    p.add_argument(
        "--price", default=None, help="USD per million tokens IN,OUT: the dry run prices both modes"
    )
    p.add_argument(
        "--batch-discount", type=float, default=None, help="batch price / normal price (default 0.5)"
    )
    return p


def _example() -> str:

    ex = EXAMPLES_DIR
    return (
        "a bundled example (12 old pairs, a new policy, that policy as rules):\n"
        f"  trace-realign triage --data {ex / 'pairs.jsonl'} --policy {ex / 'policy.md'} \\\n"
        f"      --judge rules:{ex / 'rules.yaml'} --out triaged.jsonl"
    )


def resolve_options(args: argparse.Namespace) -> dict[str, Any]:
    """Flags over `--config` over defaults; checks that the required ones are there."""
    opts = dict(OPTIONS)
    if getattr(args, "config", None):
        opts.update(_read_config(Path(args.config)))
    for key in OPTIONS:
        value = getattr(args, key, None)
        if value is not None:
            opts[key] = value
    for key in REQUIRED:
        if opts[key] in (None, ""):
            raise InputError(f"missing: give --{key} or put '{key}:' in --config")
    if opts["limit"] is not None and int(opts["limit"]) < 0:
        raise InputError("--limit must be >= 0")
    return opts


def _read_config(path: Path) -> dict[str, Any]:
    doc = load_yaml(path)
    found: dict[str, Any] = {}
    # Top-level keys may belong to other stages (a whole run config): take only ours from there.
    for key, value in doc.items():
        name = str(key).replace("-", "_")
        if name in OPTIONS:
            found[name] = value
    block = doc.get("triage")
    if block is not None:
        if not isinstance(block, dict):
            raise InputError("expected a mapping", path=str(path), field="triage")
        for key, value in block.items():
            name = str(key).replace("-", "_")
            if name not in OPTIONS:
                raise InputError(
                    f"unknown option (known: {', '.join(OPTIONS)})", path=str(path), field=f"triage.{key}"
                )
            found[name] = value
    for name in PATH_OPTIONS:
        if isinstance(found.get(name), str) and not Path(found[name]).is_absolute():
            found[name] = str(path.parent / found[name])
    # Data may be a Hub id and a judge's file may sit in the working folder: those are read
    # from the config's folder only when a file of that name is there.
    found["data"] = _beside(path, found.get("data"))
    for name in ("judge", "corrections"):
        spec = found.get(name)
        if isinstance(spec, dict) and "file" in spec:
            found[name] = {**spec, "file": _beside(path, spec["file"])}
        elif isinstance(spec, str):  # the file behind rules:, hf:, file:, noisy:RATE:...
            prefix, rest = split_path_spec(spec)
            if prefix:
                found[name] = prefix + str(_beside(path, rest))
    return {k: v for k, v in found.items() if v is not None}


def _beside(config: Path, value: Any) -> Any:
    if isinstance(value, str) and not Path(value).is_absolute() and (config.parent / value).exists():
        return str(config.parent / value)
    return value


def run(args: argparse.Namespace) -> int:

    run_triage(**resolve_options(args))
    return 0
