"""The cost of one U2A round (re-estimating ω at the current parameters) on SmolLM2-135M-Instruct.

A round is: the gradient of J over its preferred pairs (one forward + one backward per J
sequence) and δω for every kept negative (`fd`: two forward passes per negative; `exact`: one
forward-mode pass). It is timed side by side with what it is weighed against: the training
passes (forward + backward) over the same negatives. The LoRA adapter is moved off θ_ref first,
so the coefficients are the current ones. Prints one JSON line:

    python benchmarks/u2a_round.py [--negatives 32] [--objective 16] [--batch-size 8] [--threads 2] [--tiny]

`--tiny` runs the tiny random model instead (no SmolLM2 needed).
"""

from __future__ import annotations

import argparse
import json
import random
import time


def synthetic(n_neg: int, n_obj: int, seed: int = 0):
    from trace_realign.impact.scoring import ScoredItem

    rng = random.Random(seed)
    topics = ["chemistry", "a bank account", "my neighbour", "a lock", "medication", "history", "a recipe"]
    filler = ("It depends on the context, and there are several things to weigh carefully here before acting. "
              "First consider who is affected, then what the rules say, and finally what a safe option would be. ")  # fmt: skip
    words = filler.split()

    def text(k: int) -> str:
        start = rng.randrange(len(words))
        return " ".join((words * 4)[start : start + k])

    negatives = [
        ScoredItem(f"n{i}", f"Please explain {rng.choice(topics)} ({i}).", r, r, "npo_a")
        for i in range(n_neg)
        for r in [f"I cannot. {text(rng.randint(30, 60))}"]
    ]
    objective = [
        ScoredItem(f"j{i}", f"Could you describe {rng.choice(topics)}? ({i})", f"Yes: {text(rng.randint(30, 60))}",
                   f"No. {text(rng.randint(30, 60))}")
        for i in range(n_obj)
    ]  # fmt: skip
    return negatives, objective


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--negatives", type=int, default=32)
    ap.add_argument("--objective", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from trace_realign.impact.reference import reference_logprobs
    from trace_realign.impact.scoring import (
        ScoreOptions,
        _current_batch,
        _logprobs,
        current_impacts,
        objective_gradient,
    )
    from trace_realign.losses import npo_loss
    from trace_realign.model.loading import LoraOptions, apply_lora, load_model, load_tokenizer

    if args.tiny:
        import tempfile

        from trace_realign.model.tiny import save_tiny_model

        path, name = save_tiny_model(tempfile.mkdtemp(), seed=0, chat_template=True), "tiny random Llama"
    else:
        from trace_realign.model.smollm2 import smollm2_path

        path, name = smollm2_path(), "SmolLM2-135M-Instruct"
    tok = load_tokenizer(path)
    torch.manual_seed(0)
    model = apply_lora(
        load_model(path), LoraOptions(r=16, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj"])
    )
    with torch.no_grad():  # off θ_ref, as after some training
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01)
    negatives, objective = synthetic(args.negatives, args.objective)

    def refs(items):
        seqs = [(it.id, it.prompt, r) for it in items for r in (it.a, it.b)]
        v = reference_logprobs(model, tok, seqs, batch_size=2 * args.batch_size, progress=False).tolist()
        return [(v[2 * i], v[2 * i + 1]) for i in range(len(items))]

    ref_n, ref_j = refs(negatives), refs(objective)
    lengths = []
    for s in range(0, len(negatives), args.batch_size):
        b, _ = _current_batch(tok, negatives[s : s + args.batch_size], ScoreOptions(), None)
        lengths += b["attention_mask"].sum(-1).tolist()

    # what a round is weighed against: forward + backward over the same negatives (a training pass)
    model.train()
    t = time.perf_counter()
    for s in range(0, len(negatives), args.batch_size):
        chunk = negatives[s : s + args.batch_size]
        b, _ = _current_batch(tok, chunk, ScoreOptions(), None)
        lp = _logprobs(model, b)
        ref = torch.tensor([r[0] for r in ref_n[s : s + args.batch_size]])
        npo_loss(lp, ref, 0.3).sum().backward()
    t_train = time.perf_counter() - t
    model.zero_grad()

    times, raw = {}, {}
    for mode in ("fd", "exact"):
        opts = ScoreOptions(mode=mode, batch_size=args.batch_size)
        t = time.perf_counter()
        direction, _ = objective_gradient(model, tok, objective, ref_j, opts)
        t_obj = time.perf_counter() - t
        t = time.perf_counter()
        raw[mode], _ = current_impacts(model, tok, negatives, ref_n, direction, opts)
        times[mode] = {"objective": round(t_obj, 2), "negatives": round(time.perf_counter() - t, 2)}
    a, b = torch.tensor(raw["fd"], dtype=torch.float64), torch.tensor(raw["exact"], dtype=torch.float64)
    n = len(negatives)
    print(json.dumps({
        "benchmark": "u2a_round",
        "model": name,
        "lora": "r16 q_proj,v_proj",
        "negatives": n,
        "objective_pairs": len(objective),
        "tokens_per_sequence": [int(min(lengths)), int(max(lengths))],
        "batch_size": args.batch_size,
        "threads": args.threads,
        "passes_per_negative_sequence": {"fd": "2 forward", "exact": "1 forward-mode (jvp)"},
        "passes_per_objective_sequence": "1 forward + 1 backward",
        "time_s": {"train_pass_over_negatives": round(t_train, 2), **times},
        "round_s": {m: round(v["objective"] + v["negatives"], 2) for m, v in times.items()},
        "ms_per_negative": {m: round(1000 * v["negatives"] / n, 1) for m, v in times.items()},
        "ratios": {
            "fd_negatives_over_train_pass": round(times["fd"]["negatives"] / t_train, 2),
            "exact_negatives_over_train_pass": round(times["exact"]["negatives"] / t_train, 2),
        },
        "fd_rel_error_vs_exact": float((a - b).norm() / b.norm()),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
