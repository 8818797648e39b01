"""Is the method-level test honest? Its false-positive rate and power, simulated.

Two methods drawn from one and the same process (256 held-out prompts of varied difficulty; each
training seed moves every prompt, so per-seed means spread by about 4.7 points, like the demo's own
`trace` seeds 73.0 / 77.7 / 82.4) are compared `--sims` times by each test; then B is moved by
`--effect` (+8 points by default) and the share of runs that find it is the power. Prints one JSON
line: the rejection rate at p < 0.05 of the seed-level test (`stats.seed_test`, which decides a
claim) and of the pooled exact McNemar (which only describes trained models), with Monte-Carlo
standard errors, at 3 and 5 seeds. A comparison adjusts each p by Holm over its `--family` tests of
one metric (9 in the demo's comparison), so the power is also given at the strictest step of that
adjustment, p < 0.05 / family: what a difference must clear when every other test of its metric is
null.

    python benchmarks/stats_calibration.py [--sims 2000] [--effect 0.08] [--seed-sd 0.047] [--family 9]
"""

from __future__ import annotations

import argparse
import json
import time

from trace_realign.stats import rejection_rate, simulate_methods


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sims", type=int, default=2000)
    ap.add_argument("--effect", type=float, default=0.08)
    ap.add_argument("--seed-sd", type=float, default=0.047)
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--family", type=int, default=9)
    args = ap.parse_args()
    started = time.time()
    out: dict = {
        "sims": args.sims,
        "prompts": args.prompts,
        "seed_sd": args.seed_sd,
        "effect": args.effect,
        "family": args.family,
    }
    for seeds in (3, 5):
        null = simulate_methods(
            seeds, n_prompts=args.prompts, seed_sd=args.seed_sd, sims=args.sims, seed=seeds
        )
        moved = simulate_methods(
            seeds,
            n_prompts=args.prompts,
            seed_sd=args.seed_sd,
            effect=args.effect,
            sims=args.sims,
            seed=100 + seeds,
        )
        out[f"seeds{seeds}"] = {
            "false_positive_seed_test": rejection_rate(null, "seed"),
            "false_positive_pooled_mcnemar": rejection_rate(null, "mcnemar"),
            "power_seed_test": rejection_rate(moved, "seed"),
            "power_seed_test_holm_strictest": rejection_rate(moved, "seed", alpha=0.05 / args.family),
        }
    out["wall_s"] = round(time.time() - started, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
