"""`trace-realign score`: impact weights for the conflicts of a triaged file.

    trace-realign score --model M_REF --triaged triaged.jsonl --out weighted.jsonl [--gold_size 64 ...]

Every `ScoreConfig` field (impact/stage.py) is a flag, parsed by `HfArgumentParser` as `train`'s
are: the model and LoRA options are the ones `train` takes (`--use_peft`, `--lora_r`, `--dtype`, ...),
with the same defaults. `--flag_name` and `--flag-name` are the same flag. The work is done by
`impact.stage.score`, which writes `weighted.jsonl` and a summary and resumes a killed run.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from trace_realign.errors import InputError
from trace_realign.impact.stage import ScoreConfig, score

# Imported inside functions: transformers and the scoring code are imported inside `run`: `score --help` stays light.


@dataclass
class ScoreScriptArguments:
    """What `score` needs besides the `ScoreConfig`."""

    model: str | None = field(
        default=None, metadata={"help": "M_ref: checkpoint folder, Hub id, or adapter folder."}
    )
    triaged: str | None = field(
        default=None, metadata={"help": "triaged.jsonl written by `trace-realign triage`."}
    )
    out: str | None = field(default=None, metadata={"help": "weighted.jsonl to write."})
    summary: str | None = field(
        default=None, metadata={"help": "Summary JSON (default: summary.json beside --out)."}
    )
    ref_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Reference log-prob cache that `train` reads (default: the cache root)."},
    )
    no_ref_cache: bool = field(
        default=False, metadata={"help": "Do not fill the reference log-prob cache for training."}
    )
    no_progress: bool = field(default=False, metadata={"help": "No progress bars."})


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "score",
        add_help=False,
        help="alignment impact: weight each conflict pair by its agreement with the gold direction",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-h", "--help", action="store_true", help="show every option and exit")
    p.set_defaults(accepts_extra=True)


def _parser() -> Any:
    from transformers import HfArgumentParser

    return HfArgumentParser((ScoreScriptArguments, ScoreConfig), prog="trace-realign score")


def parse_score_args(argv: list[str]) -> tuple[ScoreScriptArguments, Any]:
    """`(script args, ScoreConfig)` from the command line."""
    try:
        script, config, rest = _parser().parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except InputError:
        raise
    except ValueError as exc:
        raise InputError(str(exc).splitlines()[0]) from None
    if rest:
        raise InputError(f"unrecognized arguments: {' '.join(rest)}")
    for name in ("model", "triaged", "out"):
        if not getattr(script, name):
            raise InputError(f"--{name} is required", field=name)
    return script, config


def run(args: argparse.Namespace) -> int:
    if args.help:
        _parser().print_help()
        return 0

    script, config = parse_score_args(list(args.extra))
    score(
        script.model,
        script.triaged,
        script.out,
        config,
        summary_path=script.summary,
        ref_cache_dir=script.ref_cache_dir,
        ref_cache=not script.no_ref_cache,
        progress=not script.no_progress,
    )
    return 0
