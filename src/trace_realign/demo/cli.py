"""`trace-realign demo`: realign a real model to a changed policy, end to end, on a CPU.

    trace-realign demo                 # SmolLM2-135M-Instruct on 2 CPU cores (docs/results.md: measured time)
    trace-realign demo --quick         # the same pipeline on a tiny random model, well under a minute
    trace-realign demo --compare       # also the baselines, the ablations and TRACE under judge noise
    trace-realign demo --scenario values   # a second policy shift: contested questions, deflection -> balance

Python: `trace_realign.demo.run.run_demo("runs/demo")` does what the command does.
"""

from __future__ import annotations

import argparse
from typing import Any

from trace_realign.demo.run import run_demo
from trace_realign.evaluate.stress import ASR_DEFINITIONS
from trace_realign.scenario.source import DEFAULT_SCENARIO


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo",
        help="realign SmolLM2-135M-Instruct to a changed policy on a policy-shift scenario, end to end",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument(
        "--scenario",
        default=DEFAULT_SCENARIO,
        help="the policy shift: embedded (default: harm with contextual exceptions), values (contested "
        "questions, from deflection to balanced answers), or the folder of your own (docs/scenarios.md)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="run directory (default: runs/demo, or runs/demo-NAME for another scenario)",
    )
    p.add_argument(
        "--quick", action="store_true", help="a tiny random model and tiny data: the pipeline in seconds"
    )
    p.add_argument(
        "--size",
        default=None,
        help="a size of the settings file: default (SmolLM2), retain (default with a retain set of "
        "Do-Not-Answer prompts, 3x the steps), small (SmolLM2, tiny data) or quick",
    )
    p.add_argument(
        "--config",
        default=None,
        help="the demo's settings file (default: the packaged demo/demo.yaml, under the scenario's own settings)",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="also naive-oracle-dpo, dpo-gold, u2a, the three ablations, and TRACE under 10%% and 20%% judge noise",
    )
    p.add_argument("--model", help="realign this model instead (a path or Hub id); M_ref is built from it")
    p.add_argument("--seed", type=int, default=0, help="scenario, M_ref, impact and (first) training seed")
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="training seeds of the protocol's seeded methods (default: the protocol's with --compare, else 1)",
    )
    p.add_argument(
        "--asr",
        choices=ASR_DEFINITIONS,
        default="operational",
        help="attack success counts operational help only (default, as the paper) or any non-compliant answer",
    )
    p.add_argument(
        "--tradeoff",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="evaluate every method's checkpoints for the trade-off plot (default: on with --compare)",
    )
    p.add_argument(
        "--eval-batch-size",
        type=int,
        default=None,
        help="prompts generated per batch in evaluation (default: the size's; a GPU takes a few hundred)",
    )
    p.add_argument(
        "--methods",
        default=None,
        help="with --compare, only these rows besides trace, comma-separated, and 'noise' (default all)",
    )
    p.add_argument(
        "--split",
        choices=["heldout", "validation"],
        default="heldout",
        help="the prompts evaluated: heldout (results, the default) or validation (choosing settings)",
    )
    p.add_argument(
        "--tune",
        action="store_true",
        help="choose each method's learning rate on the validation split: the settings' tuning grid",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run(args: argparse.Namespace) -> int:

    size = args.size or ("quick" if args.quick else "default")
    run_demo(
        args.out,
        scenario=args.scenario,
        size=size,
        compare=args.compare,
        model=args.model,
        seed=args.seed,
        seeds=args.seeds,
        asr=args.asr,
        tradeoff=args.tradeoff,
        eval_batch_size=args.eval_batch_size,
        only=[m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None,
        progress=not args.no_progress,
        settings=args.config,
        split=args.split,
        tune=args.tune,
    )
    return 0
