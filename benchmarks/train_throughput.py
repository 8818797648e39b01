"""Training throughput and peak memory: this trainer against TRL's DPOTrainer, side by side.

SmolLM2-135M-Instruct, LoRA r 16 on q/v, the same 64 pairs, batch 4, max_length 128, one epoch
(16 steps), float32, no gradient checkpointing, LoRA dropout 0.1 for both. Each contender runs in its
own fresh process so its peak RSS is its own. Two times: the loop (`*_speed_vs_trl`: everything after
the model is loaded: tokenisation, reference log-probs, training) and the whole process
(`*_process_speed_vs_trl`: from launch to exit, imports and model loading included). Two memories:
the peak (`*_peak_rss_vs_trl`) and what the training loop adds over the peak before its first step
(`*_train_added_rss_vs_trl`; imports and the model, read once after loading so that it is resident
in both, are a fixed cost both share). Prints ONE JSON
line: ratios against TRL's DPO and the raw numbers.

The 64 rows are 40 INVERT and 24 RETAIN pairs. `naive-oracle-dpo` and TRL see the same 64
relabelled pairs (INVERT swapped); `trace` sees the same rows as 40 weighted preferences and 24
RETAIN KL anchors (one sequence each, but a reference forward pass for the KL's logits).

    python benchmarks/train_throughput.py
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

N_PAIRS, BATCH, MAX_LENGTH, LORA_R = 64, 4, 128, 16
TOPICS = ["phishing", "lock picking", "SQL injection", "tax evasion", "grief", "historic battles", "vaccines",
          "encryption", "shoplifting", "chemistry homework", "stage combat", "money laundering"]  # fmt: skip


def rows() -> list[dict]:
    out = []
    for i in range(N_PAIRS):
        topic = TOPICS[i % len(TOPICS)]
        prompt = f"For a class report, can you explain how {topic} works and why it matters? (question {i})"
        helpful = (
            f"Here is an overview of {topic}: what it is, how it usually works, the main risks, and where "
            f"to read more. Reliable sources include textbooks and official guidance. Note {i}."
        )
        refusal = f"I'm sorry, but I can't help with questions about {topic}. Please ask something else."
        category = "INVERT" if i < 40 else "RETAIN"
        chosen, rejected = (refusal, helpful) if category == "INVERT" else (helpful, refusal)
        out.append({"id": f"p{i}", "prompt": prompt, "chosen": chosen, "rejected": rejected, "category": category,
                    "c_w": 0 if category == "INVERT" else 1, "c_l": 1 if category == "INVERT" else 0,
                    "impact_weight": 1.0 + 0.5 * (i % 3) if category == "INVERT" else None})  # fmt: skip
    return out


def _resident(model: Any) -> Any:
    """Read every weight once, so the model is resident before training in both contenders' processes.

    Loaded weights can stay file-backed pages until their first read: TRL's first read is its first
    training step, ours the reference log-probabilities before it, so without this the model's
    0.5 GB would count as memory TRL's training adds and ours does not. The peak is unchanged."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.sum()
    return model


def run_ours(method: str, model_dir: str, weighted: str, out: str) -> dict:
    from trace_realign.model.loading import LoraOptions, apply_lora, load_model, load_tokenizer
    from trace_realign.update.config import TraceConfig
    from trace_realign.update.data import TraceDataset, read_weighted, select_examples
    from trace_realign.update.presets import get_preset
    from trace_realign.update.trainer import TraceTrainer

    tok, model = load_tokenizer(model_dir), _resident(load_model(model_dir))
    model = apply_lora(
        model, LoraOptions(r=LORA_R, alpha=16, dropout=0.1, target_modules=["q_proj", "v_proj"])
    )
    cfg = TraceConfig(output_dir=out, method=method, per_device_train_batch_size=BATCH, num_train_epochs=1,
                      max_length=MAX_LENGTH, learning_rate=1e-4, save_strategy="no", report_to="none",
                      logging_steps=4, use_cpu=True, disable_tqdm=True, lora_r=LORA_R)  # fmt: skip
    start = time.perf_counter()
    sel = select_examples(read_weighted(weighted), get_preset(method), alpha_kl=cfg.alpha_kl)
    ds = TraceDataset(sel, tok, max_length=MAX_LENGTH)
    trainer = TraceTrainer(model, cfg, ds, tok, ref_cache_dir=Path(out) / "refcache")
    trainer.train()
    return {"seconds": time.perf_counter() - start, "pairs": len(ds), "steps": trainer.state.global_step,
            "shared_prompt": trainer.shared_prompt}  # fmt: skip


def run_trl(model_dir: str, weighted: str, out: str) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from trace_realign.model.loading import load_model, load_tokenizer

    tok, model = load_tokenizer(model_dir), _resident(load_model(model_dir))
    data = [json.loads(line) for line in Path(weighted).read_text().splitlines()]
    # the same relabelled pairs as naive-oracle-dpo: INVERT swapped, RETAIN kept
    pairs = [
        {"prompt": [{"role": "user", "content": r["prompt"]}],
         "chosen": [{"role": "assistant", "content": r["rejected"] if r["category"] == "INVERT" else r["chosen"]}],
         "rejected": [{"role": "assistant", "content": r["chosen"] if r["category"] == "INVERT" else r["rejected"]}]}
        for r in data
    ]  # fmt: skip
    args = DPOConfig(output_dir=out, per_device_train_batch_size=BATCH, num_train_epochs=1, max_length=MAX_LENGTH,
                     learning_rate=1e-4, beta=0.3, save_strategy="no", report_to="none", logging_steps=4,
                     use_cpu=True, disable_tqdm=True, lr_scheduler_type="cosine",
                     disable_dropout=False, bf16=False, gradient_checkpointing=False)  # fmt: skip
    # TRL's DPOConfig defaults to bf16, gradient checkpointing and no dropout; the three lines above set
    # the settings both trainers run with here: float32, no checkpointing, LoRA dropout 0.1
    peft = LoraConfig(r=LORA_R, lora_alpha=16, lora_dropout=0.1, target_modules=["q_proj", "v_proj"],
                      task_type="CAUSAL_LM")  # fmt: skip
    start = time.perf_counter()
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(pairs), processing_class=tok,
                         peft_config=peft)  # fmt: skip
    trainer.train()
    return {"seconds": time.perf_counter() - start, "pairs": len(pairs), "steps": trainer.state.global_step}


def _high_water_mb() -> float:
    """This process's peak resident memory so far (Linux: VmHWM; elsewhere ru_maxrss)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(which: str, model_dir: str, weighted: str, out: str) -> None:
    import torch
    import transformers

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    torch.manual_seed(0)
    # the peak before the first training step (imports, model, datasets, reference log-probs),
    # so the memory training itself adds can be told from the fixed cost both contenders share
    before: dict[str, float] = {}
    train = transformers.Trainer.train

    def marked_train(self, *args, **kwargs):
        before.setdefault("mb", _high_water_mb())
        return train(self, *args, **kwargs)

    transformers.Trainer.train = marked_train
    result = (
        run_trl(model_dir, weighted, out) if which == "trl-dpo" else run_ours(which, model_dir, weighted, out)
    )
    result["peak_rss_mb"] = _high_water_mb()
    result["before_train_rss_mb"] = before.get("mb")
    print("RESULT " + json.dumps(result))


def _added(r: dict) -> float:
    return r["peak_rss_mb"] - r["before_train_rss_mb"]


def main() -> None:
    from trace_realign.model.smollm2 import smollm2_path

    model_dir = os.environ.get("BENCH_MODEL") or str(
        smollm2_path()
    )  # BENCH_MODEL: a quick check of the script
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        weighted = Path(tmp) / "weighted.jsonl"
        weighted.write_text("".join(json.dumps(r) + "\n" for r in rows()))
        env = {**os.environ, "TRACE_REALIGN_CACHE": str(Path(tmp) / "cache"), "TOKENIZERS_PARALLELISM": "false",
               "HF_HUB_OFFLINE": "1"}  # fmt: skip
        for which in ("trl-dpo", "naive-oracle-dpo", "trace"):
            started = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, __file__, "--child", which, model_dir, str(weighted), str(Path(tmp) / which)],
                env=env, capture_output=True, text=True, check=False,
            )  # fmt: skip
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                sys.exit(f"{which} failed:\n{proc.stderr[-3000:]}")
            r = json.loads(line.removeprefix("RESULT "))
            r["process_seconds"] = time.perf_counter() - started
            r["pairs_per_s"] = r["pairs"] / r["seconds"]
            r["process_pairs_per_s"] = r["pairs"] / r["process_seconds"]
            results[which] = r
    trl = results["trl-dpo"]
    print(
        json.dumps(
            {
                "benchmark": "train_throughput",
                "setting": f"{Path(model_dir).name} LoRA r{LORA_R} q/v, {N_PAIRS} pairs, batch {BATCH}, "
                f"max_length {MAX_LENGTH}, 1 epoch, CPU",
                "dpo_speed_vs_trl": results["naive-oracle-dpo"]["pairs_per_s"] / trl["pairs_per_s"],
                "trace_speed_vs_trl": results["trace"]["pairs_per_s"] / trl["pairs_per_s"],
                "dpo_process_speed_vs_trl": results["naive-oracle-dpo"]["process_pairs_per_s"]
                / trl["process_pairs_per_s"],
                "trace_process_speed_vs_trl": results["trace"]["process_pairs_per_s"]
                / trl["process_pairs_per_s"],
                "dpo_peak_rss_vs_trl": results["naive-oracle-dpo"]["peak_rss_mb"] / trl["peak_rss_mb"],
                "trace_peak_rss_vs_trl": results["trace"]["peak_rss_mb"] / trl["peak_rss_mb"],
                # the memory the training loop adds over what was resident before its first step
                "dpo_train_added_rss_vs_trl": _added(results["naive-oracle-dpo"]) / _added(trl),
                "trace_train_added_rss_vs_trl": _added(results["trace"]) / _added(trl),
                "raw": results,
            }
        )
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
    else:
        main()
