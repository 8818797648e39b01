"""Impact scoring speed and accuracy on SmolLM2-135M-Instruct with LoRA r16 on q/v.

Scores the same conflict pairs (64-128 tokens per sequence) with every mode, against one
shared `g_J`, and times one no-grad forward pass over the same sequences: the floor, since
every scored sequence must be read at least once. Prints one JSON line:

    python benchmarks/impact_scoring.py [--pairs 32] [--batch-size 8] [--threads 2]

Targets (issue 3): fd >= 3x faster than naive and within 2.5x of the floor; exact >= 1.5x
faster than naive. Errors are ||w_mode - w_naive|| / ||w_naive|| over the raw impacts.
"""

from __future__ import annotations

import argparse
import json
import random
import time


def synthetic_pairs(n: int, seed: int = 0):
    """Conflict pairs of varied wording; INVERT, NPO-PUNISH and corrected PUNISH in turn."""
    from trace_realign.impact.scoring import ScoredItem, conflict_item
    from trace_realign.schema import Category

    rng = random.Random(seed)
    topics = ["chemistry", "a bank account", "my neighbour", "a lock", "medication", "a password", "history",
              "a protest", "a video game", "a recipe", "tax forms", "a car engine"]  # fmt: skip
    verbs = ["explain", "describe", "walk me through", "tell me about", "summarise", "help me with"]
    filler = ("It depends on the context, and there are several things to weigh carefully here before acting. "
              "First consider who is affected, then what the rules say, and finally what a safe option would be. ")  # fmt: skip

    def text(k: int) -> str:
        words = filler.split()
        start = rng.randrange(len(words))
        return " ".join((words * 4)[start : start + k])

    conflicts, gold = [], []
    for i in range(n):
        prompt = f"Please {rng.choice(verbs)} {rng.choice(topics)} in detail ({i})."
        yw, yl = f"Sure. {text(rng.randint(30, 60))}", f"I cannot. {text(rng.randint(30, 60))}"
        cat = Category.INVERT if i % 3 == 0 else Category.PUNISH
        corr = f"Here is a safer way. {text(rng.randint(30, 60))}" if i % 3 == 2 else None
        conflicts.append(conflict_item(f"c{i}", prompt, yw, yl, cat, corr))
    for i in range(max(8, n // 2)):
        prompt = f"Could you {rng.choice(verbs)} {rng.choice(topics)}? ({i})"
        gold.append(
            ScoredItem(
                f"g{i}", prompt, f"Yes: {text(rng.randint(30, 60))}", f"No. {text(rng.randint(30, 60))}"
            )
        )
    return conflicts, gold


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from trace_realign.impact.scoring import ScoreOptions, _batch, conflict_impacts, gold_gradient
    from trace_realign.model.loading import LoraOptions, apply_lora, load_model, load_tokenizer
    from trace_realign.model.logprobs import batch_logprobs
    from trace_realign.model.smollm2 import smollm2_path

    path = smollm2_path()
    tok = load_tokenizer(path)
    torch.manual_seed(0)
    model = apply_lora(
        load_model(path), LoraOptions(r=16, alpha=16, dropout=0.1, target_modules=["q_proj", "v_proj"])
    )
    conflicts, gold_items = synthetic_pairs(args.pairs)

    opts = {m: ScoreOptions(mode=m, batch_size=args.batch_size) for m in ("naive", "exact", "fd")}
    lengths = []
    for start in range(0, len(conflicts), args.batch_size):
        b = _batch(tok, conflicts[start : start + args.batch_size], opts["fd"], None)
        lengths += b["attention_mask"].sum(-1).tolist()

    t = time.perf_counter()
    gold = gold_gradient(model, tok, gold_items, opts["fd"], progress=False)
    t_gold = time.perf_counter() - t

    model.eval()
    t = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(conflicts), args.batch_size):
            batch_logprobs(model, _batch(tok, conflicts[start : start + args.batch_size], opts["fd"], None))
    t_floor = time.perf_counter() - t

    times, raw = {}, {}
    for mode in ("fd", "exact", "naive"):
        t = time.perf_counter()
        out = conflict_impacts(model, tok, conflicts, gold, opts[mode], progress=False)
        times[mode] = time.perf_counter() - t
        raw[mode] = torch.tensor(list(out.values()), dtype=torch.float64)

    def rel(mode: str) -> float:
        return float((raw[mode] - raw["naive"]).norm() / raw["naive"].norm())

    ratios = {
        "naive_over_fd": times["naive"] / times["fd"],
        "fd_over_floor": times["fd"] / t_floor,
        "naive_over_exact": times["naive"] / times["exact"],
    }
    print(json.dumps({
        "benchmark": "impact_scoring",
        "model": "SmolLM2-135M-Instruct",
        "lora": "r16 q_proj,v_proj",
        "pairs": len(conflicts),
        "gold_items": len(gold_items),
        "tokens_per_sequence": [int(min(lengths)), int(max(lengths))],
        "batch_size": args.batch_size,
        "threads": args.threads,
        "time_s": {"floor_forward": round(t_floor, 2), "g_J": round(t_gold, 2),
                   **{m: round(v, 2) for m, v in times.items()}},
        "rel_error_vs_naive": {"exact": rel("exact"), "fd": rel("fd")},
        "ratios": {k: round(v, 2) for k, v in ratios.items()},
        "targets_met": {
            "fd_3x_faster_than_naive": ratios["naive_over_fd"] >= 3,
            "fd_within_2.5x_of_floor": ratios["fd_over_floor"] <= 2.5,
            "exact_1.5x_faster_than_naive": ratios["naive_over_exact"] >= 1.5,
        },
    }))  # fmt: skip


if __name__ == "__main__":
    main()
