"""`trace-realign train`: the hybrid update (or a baseline) from a weighted file.

    trace-realign train --model PATH --weighted FILE --method NAME --output_dir DIR [flags]
    trace-realign train --config train.yaml [flags that override the file]

Every `TraceConfig` field, `TrainingArguments` included, is a flag and a YAML key
(`--per_device_train_batch_size`, `--gradient_accumulation_steps`, `--report_to`, `--deepspeed`,
`--bf16`, ...), parsed by `HfArgumentParser` as TRL's scripts do; `--flag_name` and `--flag-name` are
the same flag. The model and LoRA options (`options.ModelConfig`) are those `score` takes. The work
is done by `update.train()`. Under several processes:
`accelerate launch -m trace_realign.cli train ...`.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field, fields
from typing import Any

from trace_realign.errors import InputError
from trace_realign.io import load_yaml
from trace_realign.triage.audit import measured_flip_rate

# Imported inside functions: transformers and the trainer are imported inside the functions that parse and train: `train --help`
# and the other commands stay light.


@dataclass
class TrainScriptArguments:
    """What `train` needs besides the `TraceConfig`."""

    model: str | None = field(
        default=None, metadata={"help": "Model to realign: a path, Hub id or adapter folder."}
    )
    weighted: str | None = field(
        default=None, metadata={"help": "weighted.jsonl from `trace-realign score`."}
    )
    ref_cache_dir: str | None = field(
        default=None, metadata={"help": "Folder of the reference log-prob cache (default: the cache root)."}
    )
    out: str | None = field(
        default=None, metadata={"help": "The output folder (the other commands' name for --output_dir)."}
    )
    no_progress: bool = field(
        default=False,
        metadata={"help": "No progress bars (TrainingArguments' --disable_tqdm, as other commands say it)."},
    )
    label_smoothing_from: str | None = field(
        default=None,
        metadata={
            "help": "audit.json from `trace-realign audit` (or a triage summary.json carrying one): rdpo's "
            "flip rate (label_smoothing) defaults to the judge's measured error rate there; an explicit "
            "--label_smoothing (or the old --flip_rate) wins."
        },
    )


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        add_help=False,
        help="realign a model with TRACE or a baseline method",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-h", "--help", action="store_true", help="show every option and exit")
    p.add_argument("--config", help="YAML file of options (flags given as well override it)")
    p.set_defaults(accepts_extra=True)


def parse_train_args(
    argv: list[str], yaml_options: dict[str, Any] | None = None, yaml_path: str | None = None
) -> tuple[TrainScriptArguments, Any]:
    """`(script args, TraceConfig)` from flags over YAML options (flags win)."""
    from transformers import HfArgumentParser

    from trace_realign.update.config import TraceConfig

    parser = HfArgumentParser((TrainScriptArguments, TraceConfig))
    if yaml_options:
        known = {f.name for f in fields(TrainScriptArguments)} | {f.name for f in fields(TraceConfig)}
        for key in yaml_options:
            if key not in known:
                raise InputError("unknown option", path=yaml_path, field=key)
        # list options arrive as YAML lists; argparse defaults take them as they are
        parser.set_defaults(**yaml_options)
    try:
        script, config, rest = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except InputError:
        raise
    except ValueError as exc:
        raise InputError(str(exc).splitlines()[0], path=yaml_path) from None
    if rest:
        raise InputError(f"unrecognized arguments: {' '.join(rest)}")
    for name in ("model", "weighted"):
        if not getattr(script, name):
            raise InputError(f"--{name} is required (or `{name}:` in the config file)", field=name)
    flags = {a.split("=")[0] for a in argv}
    if script.out:
        config.output_dir = script.out
    if script.no_progress:
        config.disable_tqdm = True
    given = (
        bool(script.out)
        or "output_dir" in (yaml_options or {})
        or bool(flags & {"--output_dir", "--output-dir"})
    )
    if not given:
        raise InputError("--output_dir is required (or `output_dir:` in the config file)", field="output_dir")
    rate_keys = {"label_smoothing", "flip_rate"}
    explicit = bool(rate_keys & set(yaml_options or {})) or any(
        a.split("=")[0].lstrip("-").replace("-", "_") in rate_keys for a in argv if a.startswith("--")
    )
    if script.label_smoothing_from and not explicit:
        config.label_smoothing = config.flip_rate = measured_flip_rate(script.label_smoothing_from)
    return script, config


def run(args: argparse.Namespace) -> int:
    from transformers import HfArgumentParser

    from trace_realign.update.config import TraceConfig

    if args.help:
        HfArgumentParser((TrainScriptArguments, TraceConfig), prog="trace-realign train").print_help()
        return 0
    options = load_yaml(args.config) if args.config else None
    if options:
        options = {str(k).replace("-", "_"): v for k, v in options.items()}
    script, config = parse_train_args(list(args.extra), options, args.config)
    from trace_realign.update.trainer import train

    summary = train(script.model, script.weighted, config, ref_cache_dir=script.ref_cache_dir)
    if os.environ.get("RANK", "0") != "0":  # under DDP one line is enough
        return 0
    metrics = summary["final_metrics"]
    print(
        f"{summary['method']}: {summary['global_step']} steps ({summary['stop_reason']}), "
        f"train loss {metrics.get('train_loss', float('nan')):.4g}, "
        f"{summary['wall_time_s']:.0f} s -> {config.output_dir}",
        file=sys.stderr,
    )
    return 0
