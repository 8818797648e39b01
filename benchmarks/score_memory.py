"""Peak memory of `trace-realign score` against `trace-realign train` on the same model, LoRA and data.

The demo scenario's pairs (`scenario/generate.py`, seed 0), triaged by the new policy's rule judge,
then `score --mode fd` and `train --method trace` on SmolLM2-135M-Instruct with the demo's
settings (LoRA r16 / alpha 32 on q/v, max_length 512, gold batch 32, score batch 8 pairs, train
batch 6, float32). Each stage runs as the CLI in its own fresh process; its peak resident set
(`ru_maxrss` of that child alone) is read with `os.wait4`. Training reads the reference
log-probabilities the score stage cached, as in the pipeline. Prints ONE JSON line.

    python benchmarks/score_memory.py [--pairs 48] [--train-steps 6] [--threads 2]

Target (issue 15): score's peak at most 1.2x train's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LORA = ["--lora_r", "16", "--lora_alpha", "32", "--lora_target_modules", "q_proj", "v_proj"]


def run_stage(argv: list[str], env: dict[str, str]) -> dict:
    """Run `trace-realign ARGV` in a fresh process; its wall time and its own peak RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "trace_realign.cli", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # wait4 reports the rusage of this child alone (RUSAGE_CHILDREN would mix the stages)
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"trace-realign {argv[0]} failed ({proc.returncode}):\n{err[-3000:]}\n{out[-1000:]}")
    return {"seconds": round(time.perf_counter() - start, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=48, help="scenario pairs to triage, score and train on")
    ap.add_argument("--train-steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", help="checkpoint folder (default: SmolLM2-135M-Instruct)")
    args = ap.parse_args()

    from trace_realign.model.smollm2 import smollm2_path
    from trace_realign.scenario.generate import ScenarioConfig, build_scenario, write_scenario

    model = args.model or str(smollm2_path())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = write_scenario(build_scenario(ScenarioConfig()), tmp / "scenario")
        env = {**os.environ, "TRACE_REALIGN_CACHE": str(tmp / "cache"), "OMP_NUM_THREADS": str(args.threads),
               "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}  # fmt: skip
        triaged, weighted = tmp / "triaged.jsonl", tmp / "weighted.jsonl"
        run_stage(
            ["triage", "--data", str(paths["pairs"]), "--policy", str(paths["new_policy"]),
             "--judge", f"rules:{paths['new_rules']}", "--corrections", f"file:{paths['corrections']}",
             "--limit", str(args.pairs), "--out", str(triaged), "--no-progress"], env,
        )  # fmt: skip
        counts = {}
        for line in triaged.read_text().splitlines():
            cat = json.loads(line)["category"]
            counts[cat] = counts.get(cat, 0) + 1
        score = run_stage(
            ["score", "--model", model, "--triaged", str(triaged), "--out", str(weighted), "--mode", "fd",
             "--use_peft", *LORA, "--gold-size", "32", "--batch-size", "8", "--max-length", "512",
             "--no-progress"], env,
        )  # fmt: skip
        train = run_stage(
            ["train", "--model", model, "--weighted", str(weighted), "--method", "trace",
             "--output_dir", str(tmp / "train"), "--use_peft", *LORA, "--max_length", "512",
             "--per_device_train_batch_size", "6", "--max_steps", str(args.train_steps),
             "--learning_rate", "5e-4", "--rpo_alpha", "2", "--alpha_kl", "2", "--save_strategy", "no",
             "--report_to", "none", "--use_cpu", "--disable_tqdm", "true"], env,
        )  # fmt: skip
    ratio = score["peak_rss_mb"] / train["peak_rss_mb"]
    print(json.dumps({
        "benchmark": "score_memory",
        "setting": f"{Path(model).name}, LoRA r16 q/v, {args.pairs} demo pairs {counts}, fd, gold 32, "
                   f"score batch 8, train batch 6, max_length 512, float32, {args.threads} threads",
        "score_peak_rss_mb": score["peak_rss_mb"],
        "train_peak_rss_mb": train["peak_rss_mb"],
        "score_over_train": round(ratio, 3),
        "target_met": {"score_at_most_1.2x_train": ratio <= 1.2},
        "seconds": {"score": score["seconds"], "train": train["seconds"]},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
