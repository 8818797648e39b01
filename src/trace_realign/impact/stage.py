"""The impact-scoring stage: `score()` turns a triaged file into `weighted.jsonl`.

    from trace_realign.impact.stage import ScoreConfig, score
    summary = score("models/m_ref", "run/triage/triaged.jsonl", "run/score/weighted.jsonl",
                    ScoreConfig(gold_size=64))

`trace-realign score` (impact/cli.py) parses its flags into `ScoreConfig` and calls `score`.
It writes `weighted.jsonl` (every triaged row plus one weight column per loss a method trains,
`triage.terms.WEIGHT_COLUMNS`: `impact_weight`, PUNISH as dual NPO (trace), and, when the file
carries oracle corrections, `impact_weight_corrected`, PUNISH as ℓ_pref(y_c ≻ y_w) (trace-oracle);
a float for INVERT and PUNISH rows, null otherwise) and a summary JSON with what the weights look
like (`impact.diagnostics`). One gold direction `g_J` serves both: only the corrected PUNISH terms
are scored twice. Work in progress lives in a hidden folder next to
`--out` (`g_J` and the raw impacts, appended batch by batch), so a killed run resumes where it
stopped when rerun with the same settings; the folder is removed once the outputs are written.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trace_realign.errors import InputError
from trace_realign.impact.diagnostics import weight_profile
from trace_realign.impact.gold import gold_batch
from trace_realign.io import read_json, read_jsonl, write_json_atomic, write_jsonl_atomic
from trace_realign.options import (
    MAX_LENGTH,
    NORMALISATIONS,
    SCORING_MODES,
    ModelConfig,
    fold_deprecated,
    loss_terms,
)
from trace_realign.schema import Category, content_id
from trace_realign.triage.terms import WEIGHT_COLUMNS
from trace_realign.triage.triage import read_triaged

# Imported inside functions: torch and the scoring code are imported inside `score`: `ScoreConfig` is what `score --help`
# parses, and it must not load torch (tests/test_cli_imports.py).

TOP_N = 10
HISTOGRAM_BINS = 10


@dataclass
class ScoreConfig(ModelConfig):
    """Options of the impact-scoring stage. The model, LoRA, loss, length and seed options carry the
    names and defaults `TraceConfig` (train) uses, so scoring sees the parameters and the loss that
    training will; `trace-realign run` passes the train block's values on."""

    mode: str = field(
        default="fd",
        metadata={"help": "fd (central difference), exact (forward-mode AD) or naive (one backward per pair).",
                  "choices": list(SCORING_MODES)},
    )  # fmt: skip
    gold_size: int = field(default=64, metadata={"help": "Gold batch size B (Algorithm 2)."})
    beta: float = field(default=0.3, metadata={"help": "β of the preference and NPO losses."})
    loss_type: list[str] = field(
        default_factory=lambda: ["sigmoid"],
        metadata={"help": "ℓ_pref: sigmoid (DPO, the paper's 'IPO') or ipo (true IPO). An 'sft' entry "
                  "(training's NLL term) is accepted and not scored: the weights score ℓ_pref alone."},
    )  # fmt: skip
    loss_weights: list[float] | None = field(
        default=None,
        metadata={"help": "As in train; scoring ignores them (the normalisation removes a scale)."},
    )
    gamma: float = field(default=1.0, metadata={"help": "Damping: w ← w/γ before clamping."})
    corrections: bool = field(
        default=True,
        metadata={
            "help": "Also score PUNISH pairs that carry an oracle correction with ℓ_pref(y_c ≻ y_w), the loss "
            "trace-oracle trains, into impact_weight_corrected (impact_weight always scores NPO on both "
            "responses, the loss trace trains). --no_corrections skips it."
        },
    )
    weight_normalisation: str = field(
        default="mean",
        metadata={"help": "mean: mean weight 1 over conflicts (default); paper: weights sum to 1.",
                  "choices": list(NORMALISATIONS)},
    )  # fmt: skip
    batch_size: int = field(default=8, metadata={"help": "Pairs per forward pass."})
    grad_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Gold pairs per g_J backward (default: half of batch_size; its activations set the peak)."
        },
    )
    max_length: int | None = field(
        default=MAX_LENGTH, metadata={"help": "Longest prompt+response, in tokens."}
    )
    seed: int = field(
        default=42,
        metadata={
            "help": "Gold batch draw and LoRA initialisation (42: TrainingArguments' default, as train)."
        },
    )
    # old names (options.DEPRECATED): accepted with a deprecation message
    loss: str | None = field(default=None, metadata={"help": "Deprecated: loss_type."})
    normalisation: str | None = field(default=None, metadata={"help": "Deprecated: weight_normalisation."})
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "Deprecated (TRL 1.16 removed it): prompt tokens kept when cutting (max_length // 2)."
        },
    )

    def __post_init__(self) -> None:
        fold_deprecated(self)
        self.loss_terms = loss_terms(self)  # resolved once, as train does
        if self.gold_size < 1:
            raise InputError(f"gold batch size must be at least 1, got {self.gold_size}", field="gold_size")

    def score_options(self) -> Any:
        """The `impact.scoring.ScoreOptions` of these settings (validated there)."""
        from trace_realign.impact.scoring import ScoreOptions

        return ScoreOptions(
            mode=self.mode,
            beta=self.beta,
            loss_type=self.loss_terms.loss_type,
            gamma=self.gamma,
            normalisation=self.weight_normalisation,
            batch_size=self.batch_size,
            grad_batch_size=self.grad_batch_size,
            max_length=self.max_length,
            max_prompt_length=self.max_prompt_length,
        )


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def load_conflicts(path: str | Path) -> tuple[list[dict[str, Any]], list[Any]]:
    """The raw rows of a triaged file (kept whole for the output) and their `TriagedPair`s."""

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


@dataclass(frozen=True)
class Variant:
    """One scored loss: the weights of one weighted.jsonl column (`triage.terms.WEIGHT_COLUMNS`)."""

    name: str
    column: str
    items: dict[str, Any]  # row id -> the ScoredItem of the loss this variant trains on that row


def conflict_variants(triaged: list[Any], corrections: bool) -> list[Variant]:
    """The losses to score: trace's (PUNISH as dual NPO), and, when some PUNISH row carries an oracle
    correction (and `corrections`), trace-oracle's. An item scored under both keeps one id, so it is
    scored once; a corrected PUNISH term gets `<id>:corrected`."""
    from trace_realign.impact.scoring import conflict_item

    conflicts = [t for t in triaged if t.category in (Category.INVERT, Category.PUNISH)]

    def items(with_corrections: bool) -> dict[str, Any]:
        out = {}
        for t in conflicts:
            corr = t.correction if with_corrections else None
            item = conflict_item(t.id, t.pair.prompt, t.pair.chosen, t.pair.rejected, t.category, corr)
            if corr and t.category is Category.PUNISH:
                item = replace(item, id=f"{t.id}:corrected")
            out[t.id] = item
        return out

    variants = [Variant("npo", WEIGHT_COLUMNS["npo"], items(False))]
    if corrections and any(t.correction and t.category is Category.PUNISH for t in conflicts):
        variants.append(Variant("corrected", WEIGHT_COLUMNS["corrected"], items(True)))
    return variants


def _scoring_model(model_name_or_path: str | Path, config: ScoreConfig) -> tuple[Any, Any, Any]:
    """M_ref on this process's accelerator (the batches follow the model's device), with the LoRA
    adapter training will train (seeded: its A matrices shape the weights); the tokenizer."""
    import torch

    from trace_realign.model.loading import (
        LoraOptions,
        apply_lora,
        compute_device,
        load_model,
        load_tokenizer,
    )

    torch.manual_seed(config.seed)
    tokenizer = load_tokenizer(model_name_or_path)
    model = load_model(model_name_or_path, dtype=config.dtype, device=compute_device())
    lora = LoraOptions.from_config(config)
    model = apply_lora(model, lora) if config.use_peft else model.requires_grad_(True)
    return model, tokenizer, lora


def _settings(
    model: Any, model_name_or_path: Any, triaged_path: Path, opts: Any, config: ScoreConfig, lora: Any
):
    """Everything the stage's numbers depend on: a rerun with other settings starts its work afresh."""
    from trace_realign.impact.reference import model_fingerprint

    return {
        "model": str(model_name_or_path),
        "model_fingerprint": model_fingerprint(model),
        "triaged": _file_hash(triaged_path),
        "mode": opts.mode,
        "beta": opts.beta,
        "loss": opts.loss_type,
        "gold_size": config.gold_size,
        "corrections": config.corrections,
        "seed": config.seed,
        "use_peft": config.use_peft,
        "lora": vars(lora) if config.use_peft else None,
        "max_length": opts.max_length,
        "max_prompt_length": opts.max_prompt_length,
        "dtype": config.dtype,
    }


def _open_work(work: Path, settings: dict[str, Any], state: Any) -> None:
    """The hidden work folder: kept when it holds work of these settings, emptied otherwise."""
    if state.is_main_process:
        stale = work.exists() and (
            not (work / "settings.json").exists() or read_json(work / "settings.json") != settings
        )
        if stale:
            shutil.rmtree(work)  # left by a run with other settings: its numbers do not apply
        work.mkdir(parents=True, exist_ok=True)
        write_json_atomic(work / "settings.json", settings)
    state.wait_for_everyone()


def _gold_direction(model, tokenizer, gold, opts, work: Path, state: Any, report, progress: bool):
    """`g_J`, computed once and saved in the work folder (a resumed run reads it back)."""
    import torch

    from trace_realign.impact.scoring import GoldDirection, gold_gradient

    gold_file = work / "g_J.pt"
    if gold_file.exists():
        saved = torch.load(gold_file, weights_only=True, map_location="cpu")
        return GoldDirection(saved["grad"], int(saved["n_items"]))
    direction = gold_gradient(
        model, tokenizer, gold, opts, exact_reference=opts.mode == "naive", report=report, progress=progress
    )
    if state.is_main_process:
        torch.save({"grad": direction.grad, "n_items": direction.n_items}, gold_file)
    return direction


def _raw_impacts(model, tokenizer, items, direction, opts, work: Path, state, report, progress: bool):
    """Raw impacts by item id, appended to the work folder batch by batch (a rerun resumes there)."""
    from trace_realign.impact.scoring import conflict_impacts

    done: dict[str, float] = {}
    for part in sorted(work.glob("raw.rank*.jsonl")):
        for line in part.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # cut short by a kill: recomputed
            done[rec["id"]] = float(rec["raw"])
    resumed = sum(it.id in done for it in items)
    if resumed and progress:
        print(f"resuming: {resumed}/{len(items)} conflicts already scored")
    raw_file = work / f"raw.rank{state.process_index}.jsonl"

    def save(batch: dict[str, float]) -> None:
        with raw_file.open("a", encoding="utf-8") as f:
            f.writelines(json.dumps({"id": k, "raw": v}) + "\n" for k, v in batch.items())

    return conflict_impacts(
        model, tokenizer, items, direction, opts, done=done, on_batch=save, report=report, progress=progress
    )


def _fill_reference_cache(model, tokenizer, items, opts, ref_cache_dir, progress: bool) -> Any:
    """log π_ref of every scored sequence, cached on disk: the trainer reads them instead of
    computing them again."""
    from trace_realign.impact.reference import open_cache, reference_logprobs

    store = open_cache(
        model, tokenizer, max_length=opts.max_length, max_prompt_length=opts.max_prompt_length,
        cache_dir=ref_cache_dir,
    )  # fmt: skip
    row_id = {it.id: it.id.removesuffix(":corrected") for it in items}
    reference_logprobs(
        model,
        tokenizer,
        [(row_id[it.id], it.prompt, r) for it in items for r in (it.a, it.b)],
        batch_size=2 * opts.batch_size,
        max_length=opts.max_length,
        max_prompt_length=opts.max_prompt_length,
        cache=store,
        progress=progress,
    )
    return store


def score(
    model_name_or_path: str | Path,
    triaged_path: str | Path,
    out: str | Path,
    config: ScoreConfig | None = None,
    *,
    summary_path: str | Path | None = None,
    ref_cache_dir: str | Path | None = None,
    ref_cache: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Score the conflicts of `triaged_path` against `model_name_or_path` (M_ref); write `out`
    (weighted.jsonl) and the summary (default: summary.json beside `out`); return the summary.

    `ref_cache` fills the reference log-prob cache (in `ref_cache_dir`, default the cache root)
    that `train` reads. Under several processes (`accelerate launch`) only the main one writes, and
    the others return an empty dict.
    """
    from trace_realign.impact.scoring import ScoredItem
    from trace_realign.model.loading import process_state
    from trace_realign.model.tokenize import TruncationReport

    started = time.time()
    config = config or ScoreConfig()
    triaged_path, out = Path(triaged_path), Path(out)
    summary_path = Path(summary_path) if summary_path else out.with_name("summary.json")
    opts = config.score_options()
    rows, triaged = load_conflicts(triaged_path)
    variants = conflict_variants(triaged, config.corrections)
    items = list({it.id: it for v in variants for it in v.items.values()}.values())
    gold_triples = gold_batch(triaged, config.gold_size, seed=config.seed)
    gold = [ScoredItem(g.pair_id, g.prompt, g.y_plus, g.y_minus, "pref") for g in gold_triples]

    model, tokenizer, lora = _scoring_model(model_name_or_path, config)
    settings = _settings(model, model_name_or_path, triaged_path, opts, config, lora)
    work, state, report = out.with_name(f".{out.name}.partial"), process_state(), TruncationReport()
    _open_work(work, settings, state)
    direction = _gold_direction(model, tokenizer, gold, opts, work, state, report, progress)
    raw_items = _raw_impacts(model, tokenizer, items, direction, opts, work, state, report, progress)
    if not state.is_main_process:
        return {}
    raw = {v.name: {rid: raw_items[it.id] for rid, it in v.items.items()} for v in variants}
    weights = {name: _normalised(r, opts) for name, r in raw.items()}
    store = (
        _fill_reference_cache(model, tokenizer, items, opts, ref_cache_dir, progress) if ref_cache else None
    )
    out_rows = []
    for row, t in zip(rows, triaged, strict=True):
        # read_triaged fills an id the file lacked; rows join on that id downstream
        cols = {v.column: weights[v.name].get(t.id) for v in variants}
        out_rows.append({**row, "id": t.id, **cols})
    summary = _summary(triaged, variants, raw, weights, opts, config, gold_triples, direction, report)
    summary.update(
        run_id=content_id(settings),
        wall_time_s=round(time.time() - started, 2),
        reference_cache=str(store.path) if store is not None else None,
    )
    write_jsonl_atomic(out, out_rows)
    write_json_atomic(summary_path, summary)
    shutil.rmtree(work, ignore_errors=True)
    if progress:
        print(
            f"scored {len(items)} conflict terms ({opts.mode}, {opts.normalisation} normalisation, "
            f"{', '.join(summary['columns'].values())}): {summary['zero_weight_share']:.0%} of "
            f"impact_weight clamped to zero; wrote {out} and {summary_path}"
        )
    return summary


def _normalised(raw: dict[str, float], opts: Any) -> dict[str, float]:
    """Algorithm 1 line 20 over one variant's conflicts: damp, clamp at 0, normalise."""
    from trace_realign.impact.scoring import normalise_weights

    w = normalise_weights(list(raw.values()), gamma=opts.gamma, normalisation=opts.normalisation)
    return dict(zip(raw, w, strict=True))


def _histogram(values: list[float]) -> dict[str, Any]:
    top = max(values, default=0.0)
    if top <= 0:
        return {"edges": [0.0, 0.0], "counts": [len(values)]}
    width = top / HISTOGRAM_BINS
    counts = [0] * HISTOGRAM_BINS
    for v in values:
        counts[min(HISTOGRAM_BINS - 1, int(v / width))] += 1
    return {"edges": [i * width for i in range(HISTOGRAM_BINS + 1)], "counts": counts}


def _profile(triaged: list[Any], variant: Variant, weights: dict[str, float], gold_triples) -> dict[str, Any]:
    """`impact.diagnostics.weight_profile` of one variant's weights."""
    by_id = {t.id: t for t in triaged}
    categories = {rid: by_id[rid].category.value for rid in weights}
    lengths = {rid: len(it.a) + len(it.b) for rid, it in variant.items.items()}
    # an INVERT conflict whose flipped pair is in the gold batch is part of g_J itself
    in_gold = {g.pair_id for g in gold_triples if g.source is Category.INVERT}
    return weight_profile(weights, categories, lengths, in_gold)


def _summary(triaged, variants, raw, weights, opts, config, gold_triples, direction, report) -> dict:
    """The stage's summary: the headline numbers of trace's weights (`impact_weight`), and for every
    scored loss what its weights look like."""
    by_id = {t.id: t for t in triaged}
    main = variants[0]
    values = list(weights[main.name].values())
    raw_values = [r for name in raw for r in raw[name].values()]
    kinds = {
        "INVERT": sum(t.category is Category.INVERT for t in by_id.values() if t.id in main.items),
        "PUNISH_npo": sum(it.kind == "npo" for it in main.items.values()),
        "PUNISH_corrected": sum(
            by_id[rid].category is Category.PUNISH and it.kind == "pref"
            for v in variants[1:]
            for rid, it in v.items.items()
        ),
    }
    top = sorted(weights[main.name], key=lambda rid: weights[main.name][rid], reverse=True)[:TOP_N]
    return {
        "mode": opts.mode,
        "normalisation": opts.normalisation,
        "normalisation_note": (
            "paper: weights sum to 1 over conflicts"
            if opts.normalisation == "paper"
            else "mean: mean weight 1 over conflicts (N * w / sum|w|)"
        ),
        "loss": opts.loss_type,
        "loss_note": "sigmoid is the DPO loss the paper calls IPO"
        if opts.loss_type == "sigmoid"
        else "true IPO",
        "beta": opts.beta,
        "gamma": opts.gamma,
        "use_peft": config.use_peft,
        "seed": config.seed,
        "conflicts": len(main.items),
        "conflict_kinds": kinds,
        "columns": {v.name: v.column for v in variants},
        "gold_size_requested": config.gold_size,
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
        "weights": {v.name: _profile(triaged, v, weights[v.name], gold_triples) for v in variants},
        "top_impact": [
            {
                "id": rid,
                "category": by_id[rid].category.value,
                "impact_weight": weights[main.name][rid],
                "raw_impact": raw[main.name][rid],
                "prompt": by_id[rid].pair.prompt_text[:120],
            }
            for rid in top
        ],
        "truncation": report.to_dict(),
        "finite": all(math.isfinite(v) for v in raw_values),
    }
