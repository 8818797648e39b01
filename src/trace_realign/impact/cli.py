"""`trace-realign score`: impact weights for the conflicts of a triaged file.

Writes `weighted.jsonl` (every triaged row plus `impact_weight`: a float for INVERT and PUNISH
rows, null otherwise) and a summary JSON. Work in progress lives in a hidden folder next to
`--out` (`g_J` and the raw impacts, appended batch by batch), so a killed run resumes where it
stopped when rerun with the same settings; the folder is removed once the outputs are written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

from trace_realign.errors import InputError
from trace_realign.io import read_json, read_jsonl, write_json_atomic, write_jsonl_atomic
from trace_realign.schema import Category, content_id

TOP_N = 10
HISTOGRAM_BINS = 10


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "score",
        help="alignment impact: weight each conflict pair by its agreement with the gold direction",
        description="Compute TRACE impact weights (Algorithm 1, lines 8-20) for INVERT and PUNISH pairs.",
    )
    p.add_argument("--model", required=True, help="M_ref: checkpoint folder, Hub id, or adapter folder")
    p.add_argument("--triaged", required=True, help="triaged.jsonl written by `trace-realign triage`")
    p.add_argument("--out", required=True, help="weighted.jsonl to write")
    p.add_argument("--summary", help="summary JSON to write (default: summary.json beside --out)")
    p.add_argument(
        "--mode", choices=["exact", "fd", "naive"], default="fd", help="how to compute the weights"
    )
    p.add_argument("--gold-size", type=int, default=64, help="gold batch size B (Algorithm 2)")
    p.add_argument("--beta", type=float, default=0.3)
    p.add_argument(
        "--loss",
        choices=["sigmoid", "ipo"],
        default="sigmoid",
        help="preference loss: DPO sigmoid (the paper's 'IPO') or true IPO",
    )
    p.add_argument("--gamma", type=float, default=1.0, help="damping: w <- w / gamma before clamping")
    p.add_argument(
        "--normalisation",
        choices=["mean", "paper"],
        default="mean",
        help="mean: mean weight 1 over conflicts (default); paper: weights sum to 1",
    )
    p.add_argument("--use_peft", action="store_true", help="score over LoRA parameters (else all parameters)")
    p.add_argument("--lora_r", type=int, default=32)
    p.add_argument("--lora_alpha", type=int, default=16)
    p.add_argument("--lora_dropout", type=float, default=0.1)
    p.add_argument("--lora_target_modules", nargs="+", default=["q_proj", "v_proj"])
    p.add_argument("--batch-size", type=int, default=8, help="pairs per forward pass")
    p.add_argument("--max-length", type=int, default=1024, help="tokens per sequence (prompt + response)")
    p.add_argument("--max-prompt-length", type=int, default=None, help="prompt tokens kept when cutting")
    p.add_argument("--dtype", default="float32", help="float32 (default), bfloat16, float16 or auto")
    p.add_argument("--seed", type=int, default=0, help="gold batch draw and LoRA initialisation")
    p.add_argument(
        "--ref-cache-dir", help="reference log-prob cache that `train` reads (default: the cache root)"
    )
    p.add_argument(
        "--no-ref-cache", action="store_true", help="do not fill the reference log-prob cache for training"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def load_conflicts(path: str | Path) -> tuple[list[dict[str, Any]], list[Any]]:
    """The raw rows of a triaged file (kept whole for the output) and their `TriagedPair`s."""
    from trace_realign.triage.triage import read_triaged

    triaged = read_triaged(path)
    rows = [row for _, row in read_jsonl(path)]
    seen: dict[str, int] = {}
    for n, t in enumerate(triaged, start=1):
        for name in ("prompt", "chosen", "rejected"):
            value = getattr(t.pair, name)
            if name != "prompt" and not isinstance(value, str):
                raise InputError("expected a string", path=str(path), line=n, field=name)
        if t.id in seen and t.category in (Category.INVERT, Category.PUNISH):
            raise InputError(f"duplicate id (also on row {seen[t.id]})", path=str(path), line=n, field="id")
        seen.setdefault(t.id, n)
    if not any(t.category in (Category.INVERT, Category.PUNISH) for t in triaged):
        counts = {c.value: sum(t.category is c for t in triaged) for c in Category}
        raise InputError(
            f"no conflicts to score: no INVERT or PUNISH rows (categories: {counts})",
            path=str(path),
            field="category",
        )
    return rows, triaged


def run(args: argparse.Namespace) -> int:
    import torch

    from trace_realign.impact.gold import gold_batch
    from trace_realign.impact.reference import model_fingerprint, open_cache, reference_logprobs
    from trace_realign.impact.scoring import (
        GoldDirection,
        ScoredItem,
        ScoreOptions,
        conflict_impacts,
        conflict_item,
        gold_gradient,
        normalise_weights,
        process_state,
    )
    from trace_realign.model.loading import LoraOptions, apply_lora, load_model, load_tokenizer
    from trace_realign.model.tokenize import TruncationReport

    started = time.time()
    triaged_path, out = Path(args.triaged), Path(args.out)
    summary_path = Path(args.summary) if args.summary else out.with_name("summary.json")
    progress = not args.no_progress
    opts = ScoreOptions(
        mode=args.mode,
        beta=args.beta,
        variant=args.loss,
        gamma=args.gamma,
        normalisation=args.normalisation,
        batch_size=args.batch_size,
        max_length=args.max_length,
        max_prompt_length=args.max_prompt_length,
    )
    if args.gold_size < 1:
        raise InputError(f"gold batch size must be at least 1, got {args.gold_size}", field="gold-size")
    rows, triaged = load_conflicts(triaged_path)
    conflicts = [
        conflict_item(t.id, t.pair.prompt, t.pair.chosen, t.pair.rejected, t.category, t.correction)
        for t in triaged
        if t.category in (Category.INVERT, Category.PUNISH)
    ]
    gold_triples = gold_batch(triaged, args.gold_size, seed=args.seed)
    gold = [ScoredItem(g.pair_id, g.prompt, g.y_plus, g.y_minus, "pref") for g in gold_triples]

    torch.manual_seed(args.seed)  # the LoRA A matrices, which the weights depend on
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model, dtype=args.dtype)
    lora = LoraOptions(args.lora_r, args.lora_alpha, args.lora_dropout, list(args.lora_target_modules))
    if args.use_peft:
        model = apply_lora(model, lora)
    else:
        model.requires_grad_(True)

    settings = {
        "model": str(args.model),
        "model_fingerprint": model_fingerprint(model),
        "triaged": _file_hash(triaged_path),
        "mode": opts.mode,
        "beta": opts.beta,
        "loss": opts.variant,
        "gold_size": args.gold_size,
        "seed": args.seed,
        "use_peft": args.use_peft,
        "lora": vars(lora) if args.use_peft else None,
        "max_length": opts.max_length,
        "max_prompt_length": opts.max_prompt_length,
        "dtype": args.dtype,
    }
    work = out.with_name(f".{out.name}.partial")
    run_id = content_id(settings)
    state = process_state()
    if state.is_main_process:
        stale = work.exists() and (
            not (work / "settings.json").exists() or read_json(work / "settings.json") != settings
        )
        if stale:
            shutil.rmtree(work)  # left by a run with other settings: its numbers do not apply
        work.mkdir(parents=True, exist_ok=True)
        write_json_atomic(work / "settings.json", settings)
    state.wait_for_everyone()

    report = TruncationReport()
    gold_file = work / "g_J.pt"
    if gold_file.exists():
        saved = torch.load(gold_file, weights_only=True, map_location="cpu")
        direction = GoldDirection(saved["grad"], int(saved["n_items"]))
    else:
        direction = gold_gradient(
            model,
            tokenizer,
            gold,
            opts,
            exact_reference=opts.mode == "naive",
            report=report,
            progress=progress,
        )
        if state.is_main_process:
            torch.save({"grad": direction.grad, "n_items": direction.n_items}, gold_file)

    done: dict[str, float] = {}
    for part in sorted(work.glob("raw.rank*.jsonl")):
        for line in part.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # cut short by a kill: recomputed
            done[rec["id"]] = float(rec["raw"])
    resumed = sum(c.id in done for c in conflicts)
    if resumed and progress:
        print(f"resuming: {resumed}/{len(conflicts)} conflicts already scored")
    raw_file = work / f"raw.rank{state.process_index}.jsonl"

    def save(batch: dict[str, float]) -> None:
        with raw_file.open("a", encoding="utf-8") as f:
            f.writelines(json.dumps({"id": k, "raw": v}) + "\n" for k, v in batch.items())

    raw = conflict_impacts(
        model,
        tokenizer,
        conflicts,
        direction,
        opts,
        done=done,
        on_batch=save,
        report=report,
        progress=progress,
    )
    weights = dict(
        zip(
            raw,
            normalise_weights(list(raw.values()), gamma=opts.gamma, normalisation=opts.normalisation),
            strict=True,
        )
    )
    if not state.is_main_process:
        _leave(state)
        return 0

    ref_cache = None
    if not args.no_ref_cache:
        # the trainer needs log π_ref of exactly these sequences; computed once here, read there
        ref_cache = open_cache(
            model,
            tokenizer,
            max_length=opts.max_length,
            max_prompt_length=opts.max_prompt_length,
            cache_dir=args.ref_cache_dir,
        )
        reference_logprobs(
            model,
            tokenizer,
            [(c.id, c.prompt, r) for c in conflicts for r in (c.a, c.b)],
            batch_size=2 * opts.batch_size,
            max_length=opts.max_length,
            max_prompt_length=opts.max_prompt_length,
            cache=ref_cache,
            progress=progress,
        )

    out_rows = []
    for row, t in zip(rows, triaged, strict=True):
        conflict = t.category in (Category.INVERT, Category.PUNISH)
        # read_triaged fills an id the file lacked; rows join on that id downstream
        out_rows.append({**row, "id": t.id, "impact_weight": weights[t.id] if conflict else None})
    summary = _summary(
        triaged,
        conflicts,
        raw,
        weights,
        opts,
        args,
        gold_triples,
        direction,
        report,
        run_id,
        time.time() - started,
    )
    summary["reference_cache"] = str(ref_cache.path) if ref_cache is not None else None
    write_jsonl_atomic(out, out_rows)
    write_json_atomic(summary_path, summary)
    shutil.rmtree(work, ignore_errors=True)
    if progress:
        print(
            f"scored {len(conflicts)} conflicts ({opts.mode}, {opts.normalisation} normalisation): "
            f"{summary['zero_weight_share']:.0%} clamped to zero; wrote {out} and {summary_path}"
        )
    _leave(state)
    return 0


def _leave(state: Any) -> None:
    """Wait until every process is done (the main one writes the outputs), then close the process
    group: a process that exits while another still holds the group can make that one abort."""
    state.wait_for_everyone()
    state.destroy_process_group()


def _histogram(values: list[float]) -> dict[str, Any]:
    top = max(values, default=0.0)
    if top <= 0:
        return {"edges": [0.0, 0.0], "counts": [len(values)]}
    width = top / HISTOGRAM_BINS
    counts = [0] * HISTOGRAM_BINS
    for v in values:
        counts[min(HISTOGRAM_BINS - 1, int(v / width))] += 1
    return {"edges": [i * width for i in range(HISTOGRAM_BINS + 1)], "counts": counts}


def _summary(
    triaged, conflicts, raw, weights, opts, args, gold_triples, direction, report, run_id, wall
) -> dict:
    by_id = {t.id: t for t in triaged}
    values = [weights[c.id] for c in conflicts]
    kinds = {
        "INVERT": sum(by_id[c.id].category is Category.INVERT for c in conflicts),
        "PUNISH_npo": sum(c.kind == "npo" for c in conflicts),
        "PUNISH_corrected": sum(
            by_id[c.id].category is Category.PUNISH and c.kind == "pref" for c in conflicts
        ),
    }
    top = sorted(conflicts, key=lambda c: weights[c.id], reverse=True)[:TOP_N]
    raw_values = list(raw.values())
    return {
        "run_id": run_id,
        "mode": opts.mode,
        "normalisation": opts.normalisation,
        "normalisation_note": (
            "paper: weights sum to 1 over conflicts"
            if opts.normalisation == "paper"
            else "mean: mean weight 1 over conflicts (N * w / sum|w|)"
        ),
        "loss": opts.variant,
        "loss_note": "sigmoid is the DPO loss the paper calls IPO"
        if opts.variant == "sigmoid"
        else "true IPO",
        "beta": opts.beta,
        "gamma": opts.gamma,
        "use_peft": args.use_peft,
        "seed": args.seed,
        "conflicts": len(conflicts),
        "conflict_kinds": kinds,
        "gold_size_requested": args.gold_size,
        "gold_size": len(gold_triples),
        "gold_sources": {
            c.value: sum(g.source is c for g in gold_triples) for c in Category if c != Category.UNKNOWN
        },
        "g_J_norm": direction.norm,
        "raw_impact": {
            "min": min(raw_values),
            "max": max(raw_values),
            "mean": sum(raw_values) / len(raw_values),
        },
        "zero_weight_share": sum(v == 0 for v in values) / len(values),
        "all_weights_zero": all(v == 0 for v in values),
        "weight_histogram": _histogram(values),
        "top_impact": [
            {
                "id": c.id,
                "category": by_id[c.id].category.value,
                "impact_weight": weights[c.id],
                "raw_impact": raw[c.id],
                "prompt": by_id[c.id].pair.prompt_text[:120],
            }
            for c in top
        ],
        "truncation": report.to_dict(),
        "wall_time_s": round(wall, 2),
        "finite": all(math.isfinite(v) for v in raw_values),
    }
