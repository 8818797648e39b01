"""Do batches pay for themselves? Per-example training throughput at batch 4 against batch 1.

The demo scenario's pairs (`scenario/generate.py`, seed 0) triaged by the new policy's rule judge;
`trace-no-impact` (the TRACE loss with uniform weights, so no score stage is needed) on
SmolLM2-135M-Instruct, LoRA r32 q/v, max_length 256, float32, one epoch. Three runs, each in its own
process: batch 1 with gradient accumulation 4, batch 4 with length grouping (the default,
`train_sampling_strategy=group_by_length`), and batch 4 without it (`random`, the old sampler).
Only the training loop is timed (`Trainer.train`, after the reference precompute). Prints ONE
JSON line.

    python benchmarks/batch_padding.py [--pairs 48] [--threads 2]

Target (issue 15): batch 4 (grouped) at least 1.3x the per-example throughput of batch 1.
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

RUNS = {
    "batch1_ga4": {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 4},
    "batch4_grouped": {"per_device_train_batch_size": 4, "train_sampling_strategy": "group_by_length"},
    "batch4_ungrouped": {"per_device_train_batch_size": 4, "train_sampling_strategy": "random"},
}


def child(name: str, model_dir: str, triaged: str, out: str, threads: int) -> None:
    import torch

    from trace_realign.model.loading import LoraOptions, apply_lora, load_model, load_tokenizer
    from trace_realign.update.config import TraceConfig
    from trace_realign.update.data import TraceDataset, read_weighted, select_examples
    from trace_realign.update.presets import get_preset
    from trace_realign.update.trainer import TraceTrainer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tok = load_tokenizer(model_dir)
    model = apply_lora(load_model(model_dir), LoraOptions(r=32, alpha=16, dropout=0.1))
    cfg = TraceConfig(output_dir=out, method="trace-no-impact", num_train_epochs=1, max_length=256,
                      save_strategy="no", report_to="none", logging_steps=100, use_cpu=True, disable_tqdm=True,
                      **RUNS[name])  # fmt: skip
    sel = select_examples(read_weighted(triaged), get_preset(cfg.method), alpha_kl=cfg.alpha_kl)
    ds = TraceDataset(sel, tok, max_length=cfg.max_length)
    trainer = TraceTrainer(model, cfg, ds, tok, ref_cache_dir=Path(out) / "refcache")
    seen = len(trainer._get_train_sampler())
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    tokens = [sum(len(e.input_ids) for e in it["seqs"]) for it in ds.items]
    print("RESULT " + json.dumps({"seconds": seconds, "examples": seen, "examples_per_s": seen / seconds,
                                  "dataset": len(ds), "tokens_per_example": sum(tokens) / len(tokens)}))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", help="checkpoint folder (default: SmolLM2-135M-Instruct)")
    args = ap.parse_args()

    from trace_realign.model.smollm2 import smollm2_path
    from trace_realign.scenario.generate import ScenarioConfig, build_scenario, write_scenario

    model = args.model or str(smollm2_path())
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = write_scenario(build_scenario(ScenarioConfig()), tmp / "scenario")
        env = {**os.environ, "TRACE_REALIGN_CACHE": str(tmp / "cache"), "TOKENIZERS_PARALLELISM": "false",
               "HF_HUB_OFFLINE": "1"}  # fmt: skip
        triaged = tmp / "triaged.jsonl"
        subprocess.run(
            [sys.executable, "-m", "trace_realign.cli", "triage", "--data", str(paths["pairs"]),
             "--policy", str(paths["new_policy"]), "--judge", f"rules:{paths['new_rules']}",
             "--corrections", f"file:{paths['corrections']}", "--limit", str(args.pairs), "--out", str(triaged),
             "--no-progress"], env=env, check=True, capture_output=True,
        )  # fmt: skip
        for name in RUNS:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", name, model, str(triaged), str(tmp / name), str(args.threads)],
                env=env, capture_output=True, text=True, check=False,
            )  # fmt: skip
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
            results[name] = json.loads(line.removeprefix("RESULT "))
    b1 = results["batch1_ga4"]["examples_per_s"]
    ratios = {
        "batch4_grouped_over_batch1": results["batch4_grouped"]["examples_per_s"] / b1,
        "batch4_ungrouped_over_batch1": results["batch4_ungrouped"]["examples_per_s"] / b1,
    }
    print(json.dumps({
        "benchmark": "batch_padding",
        "setting": f"{Path(model).name} LoRA r32 q/v, trace-no-impact, demo scenario's first {args.pairs} pairs "
                   f"({results['batch1_ga4']['dataset']} examples), max_length 256, 1 epoch, {args.threads} threads",
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "target_met": {"batch4_at_least_1.3x_batch1": ratios["batch4_grouped_over_batch1"] >= 1.3},
        "raw": results,
    }))  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6], int(sys.argv[6]))
    else:
        main()
