"""Training data of the hybrid update: which rows each method uses, batches, tensors.

1. `read_weighted` validates weighted.jsonl (or triaged.jsonl for methods without impact
   weights) once, naming the file, line and field of any problem.
2. `select_examples` turns rows into `Example`s as the method's preset says (`update.presets`):
   a preference pair `(y+, y−)`, an NPO pair (one or both responses unlearned), or a RETAIN
   anchor `y_w` for the KL.
3. `TraceDataset` encodes every example once (`model.tokenize`), and
   holds its cached reference log-probabilities; `collate` pads a batch into tensors.
4. `StratifiedSampler` orders indices so that each batch of `batch_size` consecutive indices
   draws INVERT, PUNISH and RETAIN in the configured proportions (Algorithm 1 line 23), or, as
   `StratifiedSampler.natural` (`sampler="natural"`, the default, the same for every method),
   every example once per epoch at the data's own proportions; either can group batches by
   length, so that a batch does not pay for padding to one long outlier.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from trace_realign.errors import InputError
from trace_realign.impact.scoring import normalise_weights
from trace_realign.io import read_jsonl
from trace_realign.losses import KL, NPO, PREF, TERM_KINDS
from trace_realign.model.tokenize import Encoded, TruncationReport, collate, encode, pad_id
from trace_realign.schema import Category, Prompt, content_id
from trace_realign.triage.terms import WEIGHT_COLUMNS, category_term, weight_column
from trace_realign.update.presets import Preset

# Example kinds: the loss terms of `losses`, as integers so a batch carries them as one tensor
KIND = TERM_KINDS
KIND_NAMES = {kind: name for name, kind in TERM_KINDS.items()}
# Stratum of each category in `sampling_proportions` and in the batch tensor `stratum`
STRATA = (Category.INVERT, Category.PUNISH, Category.RETAIN)
STRATUM = {c: i for i, c in enumerate(STRATA)}


@dataclass(frozen=True)
class WeightedRow:
    """One validated row of weighted.jsonl (or triaged.jsonl)."""

    line: int
    id: str
    prompt: Prompt
    chosen: str  # y_w, the old winner
    rejected: str  # y_l, the old loser
    category: Category
    c_w: int | None
    c_l: int | None
    correction: str | None
    impact_weight: float | None  # trace's weights (PUNISH scored as dual NPO)
    impact_weights: dict[str, float | None] = field(default_factory=dict)  # every weight column, by name


@dataclass(frozen=True)
class Example:
    """One training example. `pos`/`neg` are the preferred/dispreferred responses of a PREF example;
    for NPO they are `y_w`/`y_l`, unlearned where `npo_pos`/`npo_neg` say; KL uses `pos` = `y_w` alone."""

    kind: int
    category: Category
    row_id: str
    prompt: Prompt
    pos: str
    neg: str | None
    weight: float
    npo_pos: bool = False
    npo_neg: bool = False


@dataclass
class Selection:
    """The examples of one method, and what happened to every row on the way (for run_summary.json)."""

    examples: list[Example]
    counts: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def by_stratum(self) -> list[list[int]]:
        groups: list[list[int]] = [[] for _ in STRATA]
        for i, e in enumerate(self.examples):
            groups[STRATUM[e.category]].append(i)
        return groups


def _as_bit(row: dict[str, Any], key: str, path: str, line: int) -> int | None:
    v = row.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or v not in (0, 1):
        raise InputError(f"must be 1, 0 or null, got {v!r}", path=path, line=line, field=key)
    return int(v)


def read_weighted(path: str | Path) -> list[WeightedRow]:
    """Read and validate the rows of a weighted (or triaged) JSONL file."""
    p = str(path)
    rows = []
    for line, row in read_jsonl(path):
        for key in ("prompt", "chosen", "rejected"):
            if key not in row:
                raise InputError("missing", path=p, line=line, field=key)
        for key in ("chosen", "rejected"):
            if not isinstance(row[key], str) or not row[key]:
                raise InputError("must be a non-empty string", path=p, line=line, field=key)
        if "category" not in row:
            raise InputError(
                "missing: this file has not been triaged (run `trace-realign triage` then `score`)",
                path=p,
                line=line,
                field="category",
            )
        try:
            category = Category(row["category"])
        except ValueError:
            raise InputError(
                f"unknown category {row['category']!r}: use INVERT, PUNISH, RETAIN or UNKNOWN",
                path=p,
                line=line,
                field="category",
            ) from None
        weights = {col: _weight(row, col, p, line) for col in WEIGHT_COLUMNS.values()}
        correction = row.get("correction")
        if correction is not None and (not isinstance(correction, str) or not correction):
            raise InputError("must be a non-empty string or null", path=p, line=line, field="correction")
        rows.append(
            WeightedRow(
                line=line,
                id=str(row.get("id") or content_id(row["prompt"], row["chosen"], row["rejected"])),
                prompt=row["prompt"],
                chosen=row["chosen"],
                rejected=row["rejected"],
                category=category,
                c_w=_as_bit(row, "c_w", p, line),
                c_l=_as_bit(row, "c_l", p, line),
                correction=correction,
                impact_weight=weights[WEIGHT_COLUMNS["npo"]],
                impact_weights=weights,
            )
        )
    if not rows:
        raise InputError("no rows", path=p)
    return rows


def _weight(row: dict[str, Any], column: str, path: str, line: int) -> float | None:
    w = row.get(column)
    if w is None:
        return None
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
        raise InputError(f"must be a finite number >= 0, got {w!r}", path=path, line=line, field=column)
    return float(w)


def _flags(r: WeightedRow) -> tuple[bool, bool]:
    """Which responses the judge flagged (c = 0). A missing verdict follows from the category where it
    can (INVERT: 0/1, PUNISH: 0/0); an unknown one is never read as a flag."""
    implied = {Category.INVERT: (0, 1), Category.PUNISH: (0, 0)}.get(r.category, (r.c_w, None))
    c_w = r.c_w if r.c_w is not None else implied[0]
    c_l = r.c_l if r.c_l is not None else implied[1]
    return c_w == 0, c_l == 0


def select_examples(
    rows: Sequence[WeightedRow],
    preset: Preset,
    *,
    alpha_kl: float,
    normalisation: str = "mean",
    path: str = "weighted file",
) -> Selection:
    """The training examples of `preset` (docs/method.md, table of methods) from validated rows.

    Raises `InputError` when nothing would be trained: no usable rows, impact weights missing on a
    conflict row (run `score`, or use trace-no-impact), or every impact weight 0 after clamping.
    """
    counts: Counter[str] = Counter()
    notes: list[str] = []
    out: list[Example] = []
    for r in rows:
        counts[f"rows_{r.category.value}"] += 1
    counts["rows"] = len(rows)
    usable = [r for r in rows if r.category is not Category.UNKNOWN]
    if counts["rows_UNKNOWN"]:
        notes.append(f"{counts['rows_UNKNOWN']} UNKNOWN rows (verdict not given) are left out")

    if preset.selection == "triaged":
        for r in usable:
            # trace unlearns PUNISH with dual NPO whatever corrections the file carries; trace-oracle
            # prefers the correction where there is one (category_term, shared with impact scoring)
            term = category_term(
                r.category, r.chosen, r.rejected, r.correction if preset.corrections else None
            )
            npo = term.kind == "npo"
            out.append(Example(KIND[term.kind], r.category, r.id, r.prompt, term.a, term.b, 1.0, npo, npo))
            if r.category is Category.PUNISH and term.kind == "pref":
                counts["punish_with_correction"] += 1
            if term.kind == "kl" and not (alpha_kl > 0 and preset.use_kl):
                # drawn even when the KL weighs 0 (trace-no-kl, alpha_kl 0): equal exposure, the
                # conflicts per step do not grow because RETAIN rows were left out
                counts["retain_kl_weight_0"] += 1
    elif preset.selection == "losers":
        # no triage: every old pair as it was, its old loser unlearned; the verdicts are not read
        for r in usable:
            out.append(Example(NPO, r.category, r.id, r.prompt, r.rejected, None, 1.0, True, False))
    elif preset.selection == "negatives":
        out.extend(select_negatives(usable, counts))
    elif preset.selection == "flagged":
        for r in usable:
            fw, fl = _flags(r)
            if not (fw or fl):
                counts["no_flagged_response"] += 1
                continue
            out.append(Example(NPO, r.category, r.id, r.prompt, r.chosen, r.rejected, 1.0, fw, fl))
    else:
        out.extend(_relabelled(usable, preset, counts, notes, path))
    if not out:
        raise InputError(
            f"method {preset.name} has nothing to train on: {dict(counts)}", path=path, field="category"
        )
    if preset.selection == "triaged" and not any(e.category is not Category.RETAIN for e in out):
        raise InputError("nothing to realign: there is no INVERT or PUNISH pair", path=path, field="category")
    if preset.weights == "impact":
        column = weight_column(preset.corrections)
        out = _impact_weighted(out, {r.id: r for r in usable}, normalisation, path, column)
    for e in out:
        counts[f"examples_{e.category.value}_{KIND_NAMES[e.kind]}"] += 1
    counts["examples"] = len(out)
    return Selection(out, dict(counts), notes)


def _relabelled(
    usable: Sequence[WeightedRow], preset: Preset, counts: Counter[str], notes: list[str], path: str
) -> list[Example]:
    """The DPO baselines' pairs: INVERT swapped, RETAIN kept, PUNISH dropped (naive-oracle-dpo) or
    preferring its oracle correction (dpo-gold)."""
    out: list[Example] = []
    for r in usable:
        if r.category is Category.INVERT:
            out.append(Example(PREF, r.category, r.id, r.prompt, r.rejected, r.chosen, 1.0))
        elif r.category is Category.RETAIN:
            out.append(Example(PREF, r.category, r.id, r.prompt, r.chosen, r.rejected, 1.0))
        elif preset.selection == "relabelled-gold" and r.correction is not None:
            out.append(Example(PREF, r.category, r.id, r.prompt, r.correction, r.chosen, 1.0))
        else:
            counts["punish_dropped"] += 1
    if preset.selection == "relabelled-gold" and counts["rows_PUNISH"] and counts["punish_dropped"]:
        if counts["punish_dropped"] == counts["rows_PUNISH"]:
            raise InputError(
                "dpo-gold needs oracle corrections and no PUNISH row has one (run triage with corrections, "
                "or use naive-oracle-dpo)",
                path=path,
                field="correction",
            )
        notes.append(f"{counts['punish_dropped']} PUNISH rows without a correction are left out")
    return out


def read_retain_answers(path: str | Path) -> list[tuple[str, Prompt, str]]:
    """The reference model's own answers to extra prompts, `(id, prompt, response)`, from a JSONL file
    of `prompt` and `response` rows (what `trace-realign evaluate` writes as responses.jsonl, or
    the pipeline's `retain_prompts`). Checked once, naming the line and field of a bad row."""
    out = []
    for line, row in read_jsonl(path):
        for key in ("prompt", "response"):
            if key not in row:
                raise InputError("missing", path=str(path), line=line, field=key)
        if not isinstance(row["response"], str) or not row["response"].strip():
            raise InputError("must be a non-empty string", path=str(path), line=line, field="response")
        rid = str(row.get("id") or content_id(row["prompt"], row["response"]))
        out.append((f"retain:{rid}", row["prompt"], row["response"]))
    if not out:
        raise InputError("no rows", path=str(path), field="retain_answers")
    return out


def add_retain_anchors(
    selection: Selection, answers: Sequence[tuple[str, Prompt, str]], preset: Preset
) -> Selection:
    """The retain set: each answer of the reference model becomes one more RETAIN anchor (the KL to
    the reference on that answer), drawn like the data's own RETAIN rows. Only the methods built on
    triage have an anchor to extend (`trace-no-kl` draws them at KL weight 0, as it draws RETAIN);
    for the others the answers are left out and the notes say so."""
    if preset.selection != "triaged":
        selection.notes.append(f"retain answers left out: {preset.name} has no KL anchor")
        return selection
    extra = [
        Example(KL, Category.RETAIN, rid, prompt, response, None, 1.0) for rid, prompt, response in answers
    ]
    counts = dict(selection.counts)
    counts["retain_anchor_answers"] = len(extra)
    counts["examples"] = counts.get("examples", 0) + len(extra)
    counts["examples_RETAIN_kl"] = counts.get("examples_RETAIN_kl", 0) + len(extra)
    return Selection(selection.examples + extra, counts, selection.notes)


def select_negatives(rows: Sequence[WeightedRow], counts: Counter[str]) -> list[Example]:
    """U2A's forget set: one NPO example per response the judge flagged (c = 0), not pairs.

    `pos` is the flagged response and there is no second one; two flagged responses of a row
    become two examples (each gets its own weight ω). Rows with no flagged response are counted.
    """
    out = []
    for r in rows:
        fw, fl = _flags(r)
        if not (fw or fl):
            counts["no_flagged_response"] += 1
        for flagged, resp in ((fw, r.chosen), (fl, r.rejected)):
            if flagged:
                out.append(Example(NPO, r.category, r.id, r.prompt, resp, None, 1.0, True, False))
    return out


def _impact_weighted(
    examples: list[Example], rows: dict[str, WeightedRow], normalisation: str, path: str, column: str
) -> list[Example]:
    """Put each conflict's impact weight (from `column`: the weights of the loss this method trains)
    on its example, re-normalised over the conflicts used."""
    scored = [i for i, e in enumerate(examples) if e.category is not Category.RETAIN]
    raw = []
    for i in scored:
        r = rows[examples[i].row_id]
        w = r.impact_weights.get(column)
        if w is None:
            why = (
                "the file was scored without the oracle corrections this method trains (rerun "
                "`trace-realign score` on a triage with corrections)"
                if column != WEIGHT_COLUMNS["npo"] and r.impact_weight is not None
                else "run `trace-realign score`, or use --method trace-no-impact for uniform weights"
            )
            raise InputError(
                f"no {column} on this {r.category.value} row: {why}", path=path, line=r.line, field=column
            )
        raw.append(w)
    if raw and sum(raw) == 0:
        raise InputError(
            f"all {len(raw)} impact weights are 0 after clamping: no conflict agrees with the gold direction, "
            "so this run would train nothing. Rescore with a larger gold batch, or use --method trace-no-impact "
            "(uniform weights)",
            path=path,
            field=column,
        )
    weights = raw if normalisation == "none" else normalise_weights(raw, normalisation=normalisation)
    out = list(examples)
    for i, w in zip(scored, weights, strict=True):
        out[i] = _with_weight(out[i], w)
    # RETAIN examples (KL anchors, or flagged RETAIN losers under npo-flagged/u2a) keep weight 1,
    # the mean conflict weight under the default normalisation
    return out


def _with_weight(e: Example, w: float) -> Example:
    return Example(e.kind, e.category, e.row_id, e.prompt, e.pos, e.neg, float(w), e.npo_pos, e.npo_neg)


def weight_summary(selection: Selection) -> dict[str, Any]:
    """Mean, min, max and count of the weights per category (for run_summary.json)."""
    out: dict[str, Any] = {}
    for c in STRATA:
        ws = [e.weight for e in selection.examples if e.category is c]
        if ws:
            out[c.value] = {"n": len(ws), "mean": sum(ws) / len(ws), "min": min(ws), "max": max(ws)}
    return out


# ---- batches -------------------------------------------------------------------------------


def batch_counts(proportions: Sequence[float], batch_size: int, num_batches: int) -> list[list[int]]:
    """How many examples of each stratum every batch draws.

    Exact shares `batch_size · p` are rarely integers; the fractional part is carried to the next
    batch (largest remainder first), so over many batches each stratum gets its share exactly,
    rather than the first stratum always winning the rounding.
    """
    total = sum(proportions)
    shares = [batch_size * p / total for p in proportions]
    carry = [0.0] * len(shares)
    out = []
    for _ in range(num_batches):
        quota = [s + c for s, c in zip(shares, carry, strict=True)]
        counts = [math.floor(q + 1e-9) for q in quota]
        order = sorted(range(len(quota)), key=lambda i: (-(quota[i] - counts[i]), i))
        for i in order[: batch_size - sum(counts)]:
            counts[i] += 1
        carry = [q - n for q, n in zip(quota, counts, strict=True)]
        out.append(counts)
    return out


def effective_proportions(proportions: Sequence[float], groups: Sequence[Sequence[int]]) -> list[float]:
    """The configured shares with empty strata set to 0, so their share goes to the others."""
    eff = [p if g else 0.0 for p, g in zip(proportions, groups, strict=True)]
    if sum(eff) <= 0:
        raise InputError(
            "sampling_proportions give a share only to categories with no examples "
            f"(shares {list(proportions)}, examples per INVERT/PUNISH/RETAIN {[len(g) for g in groups]})",
            field="sampling_proportions",
        )
    return eff


class StratifiedSampler(Sampler[int]):
    """Indices in batches of `batch_size`, each batch drawing its strata in the given proportions.

    An epoch is `ceil(N / batch_size)` batches. Each stratum is read in a fresh random order
    and reshuffled when used up, so a small stratum repeats within an epoch rather than running
    dry. The order depends only on `seed` and the epoch (`set_epoch`), so a resumed run sees the
    same batches as an uninterrupted one, and every DDP process builds the same order.

    With `lengths` (one per example: its longest sequence, in tokens) the batches are grouped by
    length, so a batch pads to a length its members share rather than to one long outlier:
    within each window of `length_window` batches, the examples each stratum drew for that window
    are handed back to the same stratum's slots shortest first, and the window's batches are then
    shuffled. Every batch keeps its per-stratum counts and every example its draws per epoch; only
    which examples share a batch changes.
    """

    def __init__(
        self,
        groups: Sequence[Sequence[int]],
        proportions: Sequence[float],
        batch_size: int,
        seed: int = 0,
        *,
        lengths: Sequence[int] | None = None,
        length_window: int = 50,
    ) -> None:
        self.groups = [list(g) for g in groups]
        self.proportions = effective_proportions(proportions, self.groups)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.lengths = list(lengths) if lengths is not None else None
        self.length_window = max(1, length_window)
        n = sum(len(g) for g in self.groups)
        self.num_batches = max(1, math.ceil(n / batch_size))

    @classmethod
    def natural(
        cls, n: int, batch_size: int, seed: int = 0, *, lengths: Sequence[int] | None = None
    ) -> StratifiedSampler:
        """Every example once per epoch in a random order (one stratum): the data's own proportions."""
        return cls([list(range(n))], [1.0], batch_size, seed, lengths=lengths)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def batches(self) -> list[list[list[int]]]:
        """This epoch's batches, each as one list of indices per stratum."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        streams = [_cycle(g, gen) for g in self.groups]
        out = [
            [[next(stream) for _ in range(k)] for stream, k in zip(streams, counts, strict=True)]
            for counts in batch_counts(self.proportions, self.batch_size, self.num_batches)
        ]
        if self.lengths is not None:
            out = self._grouped_by_length(out, gen)
        return out

    def _grouped_by_length(
        self, batches: list[list[list[int]]], gen: torch.Generator
    ) -> list[list[list[int]]]:
        lengths = self.lengths
        assert lengths is not None
        out = []
        for start in range(0, len(batches), self.length_window):
            window = [[list(part) for part in b] for b in batches[start : start + self.length_window]]
            for s in range(len(self.groups)):
                # draw order breaks ties, so equal lengths stay randomly mixed (a stable sort)
                drawn = sorted((i for b in window for i in b[s]), key=lambda i: lengths[i])
                for b in window:
                    k = len(b[s])
                    b[s], drawn = drawn[:k], drawn[k:]
            out += [window[j] for j in torch.randperm(len(window), generator=gen).tolist()]
        return out

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches():
            for part in batch:
                yield from part


def _cycle(group: list[int], gen: torch.Generator) -> Iterator[int]:
    while group:
        for j in torch.randperm(len(group), generator=gen).tolist():
            yield group[j]


class TraceDataset(Dataset):
    """Examples encoded once, with the reference log-probabilities of their responses when known.

    Each item: `kind`, `stratum`, `weight`, `npo` (two flags), `seqs` (one or two `Encoded`: pos, neg)
    and `ref` (their `log π_ref`, NaN where the trainer must compute it).
    """

    def __init__(
        self,
        selection: Selection,
        tokenizer: Any,
        *,
        max_length: int | None = None,
        max_prompt_length: int | None = None,
    ) -> None:
        self.selection = selection
        self.pad_token_id = pad_id(tokenizer)
        self.truncation = TruncationReport()
        self.items: list[dict[str, Any]] = []
        for e in selection.examples:
            seqs = []
            for resp in (e.pos, e.neg):
                if resp is None:
                    continue
                enc = encode(
                    tokenizer, e.prompt, resp, max_length=max_length, max_prompt_length=max_prompt_length
                )
                self.truncation.add(enc)
                seqs.append(enc)
            self.items.append(
                {
                    "index": len(self.items),
                    "kind": e.kind,
                    "stratum": STRATUM[e.category],
                    "weight": e.weight,
                    "npo": (e.npo_pos, e.npo_neg),
                    "seqs": seqs,
                    "ref": [math.nan] * len(seqs),
                }
            )

    def __len__(self) -> int:
        return len(self.items)

    def lengths(self) -> list[int]:
        """Each example's longest sequence, in tokens: what a batch holding it pads to at least."""
        return [max(len(enc.input_ids) for enc in it["seqs"]) for it in self.items]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]

    def ref_items(self) -> list[tuple[int, int, str, Prompt, str]]:
        """`(item, slot, pair id, prompt, response)` of every sequence, for the reference cache."""
        out = []
        for i, e in enumerate(self.selection.examples):
            for slot, resp in enumerate(r for r in (e.pos, e.neg) if r is not None):
                out.append((i, slot, e.row_id, e.prompt, resp))
        return out

    def set_reference(self, values: Sequence[tuple[int, int, float]]) -> None:
        for i, slot, v in values:
            self.items[i]["ref"][slot] = float(v)


def collate_examples(items: Sequence[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch of `TraceDataset` items into one forward pass worth of tensors.

    Sequences of all examples are stacked (`input_ids`, `attention_mask`, `labels`: `[S, T]`, and
    `ref_logps`: `[S]`, NaN where unknown); per example (`[B]`): `kind`, `stratum`, `weight`,
    `pos_idx`/`neg_idx` (rows of the sequence tensors; `neg_idx` repeats `pos_idx` when there is
    no second response, masked by `has_neg`), `npo_mask` `[B, 2]`.
    """
    encs: list[Encoded] = []
    ref: list[float] = []
    pos_idx, neg_idx, has_neg = [], [], []
    for it in items:
        pos_idx.append(len(encs))
        encs.append(it["seqs"][0])
        ref.append(it["ref"][0])
        if len(it["seqs"]) > 1:
            neg_idx.append(len(encs))
            encs.append(it["seqs"][1])
            ref.append(it["ref"][1])
            has_neg.append(True)
        else:
            neg_idx.append(pos_idx[-1])
            has_neg.append(False)
    batch = collate(encs, pad_token_id)
    batch.update(
        ref_logps=torch.tensor(ref, dtype=torch.float32),
        kind=torch.tensor([it["kind"] for it in items], dtype=torch.long),
        stratum=torch.tensor([it["stratum"] for it in items], dtype=torch.long),
        weight=torch.tensor([it["weight"] for it in items], dtype=torch.float32),
        pos_idx=torch.tensor(pos_idx, dtype=torch.long),
        neg_idx=torch.tensor(neg_idx, dtype=torch.long),
        has_neg=torch.tensor(has_neg, dtype=torch.bool),
        npo_mask=torch.tensor([it["npo"] for it in items], dtype=torch.bool),
        # position of each example in its dataset: weights re-estimated while training (U2A) are read by it
        example=torch.tensor([it.get("index", -1) for it in items], dtype=torch.long),
    )
    return batch


class TraceCollator:
    """`collate_examples` with the tokenizer's pad id bound (a picklable callable for DataLoader workers)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return collate_examples(items, self.pad_token_id)
