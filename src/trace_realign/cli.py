"""`trace-realign` command line: a thin layer over the Python API.

Each subcommand lives beside the stage it drives and exposes `add_parser(subparsers)`
and `run(args) -> int`; `run` parses and calls the stage's Python function. Every flag takes
either spelling, `--flag_name` or `--flag-name` (`score` and `train` get this from
`HfArgumentParser`, the others from `FlagParser`). Expected failures (`TraceError`) print one
line and exit with their code; nothing else is caught.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from trace_realign import __version__
from trace_realign.errors import TraceError
from trace_realign.verbosity import quiet_third_party, verbose_requested

# subcommand -> module that implements it (imported lazily: `--help` stays fast, torch loads on demand)
COMMANDS = {
    "triage": "trace_realign.triage.cli",
    "audit": "trace_realign.triage.audit_cli",
    "label": "trace_realign.label.cli",
    "score": "trace_realign.impact.cli",
    "train": "trace_realign.update.cli",
    "run": "trace_realign.pipeline",
    "evaluate": "trace_realign.evaluate.cli",
    "report": "trace_realign.report.cli",
    "demo": "trace_realign.demo.cli",
}


class FlagParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose long options also answer to their other spelling: `--dry-run`
    and `--dry_run` are one flag. Subcommand parsers are of this class too."""

    def add_argument(self, *names: str, **kwargs):  # type: ignore[override]
        extra = []
        for name in names:
            if name.startswith("--"):
                body = name[2:]
                for other in (body.replace("-", "_"), body.replace("_", "-")):
                    if other != body and f"--{other}" not in names and f"--{other}" not in extra:
                        extra.append(f"--{other}")
        return super().add_argument(*names, *extra, **kwargs)


def _command(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, object]:
    parser = FlagParser(
        prog="trace-realign",
        description="Realign an aligned LLM to a changed policy with TRACE: triage, impact, update.",
    )
    parser.add_argument("--version", action="version", version=f"trace-realign {__version__}")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show other packages' warnings and progress bars (or set TRACE_REALIGN_VERBOSE=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Only the chosen subcommand's module is imported; the others get a placeholder parser for --help.
    chosen = _command(argv)
    module = None
    for name, path in COMMANDS.items():
        if name == chosen:
            module = importlib.import_module(path)
            module.add_parser(sub)
        else:
            sub.add_parser(name, help=f"see `trace-realign {name} --help`", add_help=False)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --verbose anywhere on the line (before or after the command) means the same
    verbose = "--verbose" in argv
    argv = [a for a in argv if a != "--verbose"]
    if not verbose_requested(verbose):
        quiet_third_party()  # before any command loads transformers, PEFT or DeepSpeed
    parser, module = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        code = int(module.run(args) or 0)
    except TraceError as exc:
        print(f"trace-realign {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"trace-realign {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    _leave_process_group()
    return code


def _leave_process_group() -> None:
    """Under `accelerate launch` or torchrun: wait until every process has finished the command (the
    main one writes the outputs), then close the process group, as the process exits. A process
    that exits while another still holds the group can make that one abort (gloo's "terminate
    called without an active exception"). The stages themselves leave the group open, so a script
    that calls `score` and then `train` keeps it. Without a process group, nothing (and no import)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
