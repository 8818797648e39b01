"""Evaluation generation speed on SmolLM2-135M-Instruct: batched (length-sorted, left-padded)
against one prompt at a time, and a rerun served from the generation cache. Same prompts, same
settings, side by side in one process. Prints one JSON line:

    python benchmarks/generation.py [--prompts 12] [--batch-size 6] [--max-new-tokens 24] [--threads 2]

`outputs_equal` checks that batching changed no greedy output.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep: the CPU is shared


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=6)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from trace_realign.cache import GenerationCache
    from trace_realign.evaluate.generate import GenerationSettings, HFBackend, generate_responses
    from trace_realign.model.smollm2 import smollm2_path

    torch.set_num_threads(args.threads)
    topics = ["baking bread", "the French revolution", "photosynthesis", "a bicycle gear", "tax returns",
              "chess openings", "volcanoes", "the stock market", "knitting", "black holes"]  # fmt: skip
    prompts = [
        f"In {2 + i % 3} sentences, explain {topics[i % len(topics)]}" + " to a child" * (i % 4)
        for i in range(args.prompts)
    ]
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    path = smollm2_path()
    one = HFBackend(path, batch_size=1)
    batched = HFBackend(path, batch_size=args.batch_size, model=one.model, tokenizer=one.tokenizer)
    one.generate(prompts[:1], GenerationSettings(max_new_tokens=2))  # warm-up

    t = time.perf_counter()
    sequential = one.generate(prompts, settings)
    t_one = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        cache = GenerationCache(os.path.join(tmp, "gen.sqlite"))
        t = time.perf_counter()
        together = generate_responses(batched, prompts, settings, cache=cache, progress=False)
        t_batched = time.perf_counter() - t
        t = time.perf_counter()
        again = generate_responses(batched, prompts, settings, cache=cache, progress=False)
        t_cached = time.perf_counter() - t
    print(
        json.dumps(
            {
                "benchmark": "generation",
                "model": "SmolLM2-135M-Instruct",
                "prompts": args.prompts,
                "batch_size": args.batch_size,
                "max_new_tokens": args.max_new_tokens,
                "threads": args.threads,
                "sequential_s": round(t_one, 2),
                "batched_s": round(t_batched, 2),
                "cached_rerun_s": round(t_cached, 4),
                "speedup_batched_vs_sequential": round(t_one / t_batched, 2),
                "speedup_cached_vs_batched": round(t_batched / max(t_cached, 1e-9), 1),
                "outputs_equal": sequential == together == again,
            }
        )
    )


if __name__ == "__main__":
    main()
