"""Build `M_ref`: the base model taught the old policy, so that the demo has something to realign.

SmolLM2-135M-Instruct as shipped answers most questions rather than refusing, so it is not an
"old policy" model. `M_ref` is made the way preference data usually comes about, in two short
LoRA SFT phases on the scenario's old pairs:

1. pre-alignment SFT on *both* responses of every pair: the responses of a preference set are
   samples of the model being aligned (PKU-SafeRLHF's come from Alpaca-7B), so the model before
   alignment writes every style the pairs hold (refusals, contextual answers, placeholder
   compliance, plain answers);
2. old-policy alignment, SFT on the old winners only (refusals for anything that touches a harm
   category, plain answers for general knowledge).

The old policy thus suppresses behaviour the model has, which is what realignment has to undo
(or keep suppressed). The adapter is merged, because the merged network *is* `M_ref`, and saved
as a plain checkpoint under the cache folder, keyed by the base model, the pairs and these
settings; a rerun with the same inputs loads it instead of training again.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from trace_realign.io import cache_root, write_json_atomic
from trace_realign.schema import PreferencePair, content_id

# Imported inside functions: torch and the model code are imported inside the functions that train M_ref
# (below `build_mref`): a cached M_ref is found without them.


# one SFT phase: (description, steps, examples, streams); a stream (pool, k) puts k examples of pool
# (indices into examples) in every batch
Phase = tuple[str, int, list[Any], list[tuple[Sequence[int], int]]]


@dataclass(frozen=True)
class MrefSettings:
    """SFT settings, measured on SmolLM2 (2 cores, about 4 minutes at these defaults).

    Phase 1 must really teach every style: after one epoch (120 steps at batch 4 over 240 pairs)
    the contextual answers' frame words cost under 1 nat per token, after 48 steps 3-5, and a
    style the model cannot write is not one realignment can bring back. 24 steps of phase 2 then
    make greedy decoding follow the old policy (agreement 95.8 on the validation prompts).
    """

    pretrain_steps: int = 120  # phase 1, both responses of every pair
    steps: int = 24  # phase 2, the old winners
    batch_size: int = 4
    learning_rate: float = 1e-3
    lora_r: int = 16
    lora_alpha: int = 32
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    max_length: int = 160
    # share of each phase-2 batch drawn from pairs whose winner is a plain answer (meta kind
    # "neutral"): with 80% refusals in the data, uniform batches teach it to refuse everything
    answer_share: float = 0.5
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # free-form, enters the cache key


def _base_identity(base: Path) -> str:
    """Name the base checkpoint by its config and the size of its weights (cheap, changes on retrain)."""
    parts = [(base / "config.json").read_text(encoding="utf-8") if (base / "config.json").exists() else ""]
    parts += sorted(f"{p.name}:{p.stat().st_size}" for p in base.glob("*.safetensors"))
    return content_id(str(base.resolve()), parts)


def mref_key(base: str | Path, pairs: Sequence[PreferencePair], settings: MrefSettings) -> str:
    return content_id("mref-v2", _base_identity(Path(base)), [p.id for p in pairs], asdict(settings))


def build_mref(
    base: str | Path,
    pairs: Sequence[PreferencePair],
    settings: MrefSettings | None = None,
    *,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Return a plain checkpoint of `M_ref`, training it on the pairs' old winners unless cached.

    `pairs` are old-policy preference pairs: both responses in phase 1, the winners in phase 2.
    """
    settings = settings or MrefSettings()
    base = Path(base)
    key = mref_key(base, pairs, settings)
    out = Path(out_dir) if out_dir else cache_root() / "mref" / key
    if (out / "mref.json").exists():
        return out

    rng = random.Random(settings.seed)
    model, tokenizer, device = _lora_model(base, settings)
    phases = _phases(tokenizer, pairs, settings)
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    for phase in phases:
        losses += _sft(model, tokenizer, device, phase, settings, rng, progress)
    seconds = time.perf_counter() - start

    info = {
        "base": str(base),
        "key": key,
        "settings": asdict(settings),
        "pairs": len(pairs),
        "train_seconds": round(seconds, 1),
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
    }
    _save_merged(model, tokenizer, out, info)
    return out


def _lora_model(base: Path, settings: MrefSettings) -> tuple[Any, Any, Any]:
    """The base model with fresh LoRA adapters, its tokenizer and the device it sits on. The seed is
    set first: it decides the adapters' initial weights."""
    import torch

    from trace_realign.model.loading import (
        LoraOptions,
        apply_lora,
        compute_device,
        load_model,
        load_tokenizer,
    )

    torch.manual_seed(settings.seed)
    tokenizer = load_tokenizer(base)
    device = compute_device()
    model = load_model(base, device=device)
    model = apply_lora(
        model,
        LoraOptions(
            r=settings.lora_r,
            alpha=settings.lora_alpha,
            dropout=0.0,
            target_modules=list(settings.target_modules),
        ),
    )
    return model, tokenizer, device


def _phases(tokenizer: Any, pairs: Sequence[PreferencePair], settings: MrefSettings) -> list[Phase]:
    """The two SFT phases, the pairs encoded: both responses first, then the old winners with a set
    share of plain answers in every batch."""
    from trace_realign.model.tokenize import encode

    winners = [encode(tokenizer, p.prompt, p.chosen, max_length=settings.max_length) for p in pairs]
    losers = [encode(tokenizer, p.prompt, p.rejected, max_length=settings.max_length) for p in pairs]
    answers = [i for i, p in enumerate(pairs) if p.meta.get("kind") == "neutral"]
    others = [i for i, p in enumerate(pairs) if p.meta.get("kind") != "neutral"]
    n_answers = round(settings.batch_size * settings.answer_share) if answers and others else 0
    return [
        ("M_ref 1/2: pre-alignment SFT", settings.pretrain_steps, winners + losers, [(range(2 * len(pairs)), settings.batch_size)]),
        ("M_ref 2/2: old-policy SFT", settings.steps, winners, [(answers, n_answers), (others or answers, settings.batch_size - n_answers)]),
    ]  # fmt: skip


def _sft(
    model: Any,
    tokenizer: Any,
    device: Any,
    phase: Phase,
    settings: MrefSettings,
    rng: random.Random,
    progress: bool,
) -> list[float]:
    """Train `model` through one phase of `_phases`; return the loss of every step."""
    import torch

    from trace_realign.model.tokenize import collate, pad_id

    desc, steps, examples, streams = phase
    losses: list[float] = []
    if steps <= 0:
        return losses
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate
    )
    # linear decay: the last steps settle the style instead of overshooting it
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step, n=steps: 1.0 - step / n)
    queues: list[list[int]] = [[] for _ in streams]
    bar = tqdm(range(steps), desc=desc, disable=not progress)
    for _ in bar:
        picked = _next_batch(streams, queues, rng)
        batch = {
            k: v.to(device) for k, v in collate([examples[i] for i in picked], pad_id(tokenizer)).items()
        }
        loss = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        ).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses


def _next_batch(
    streams: list[tuple[Sequence[int], int]], queues: list[list[int]], rng: random.Random
) -> list[int]:
    """The example indices of the next batch: `k` from each stream `(pool, k)`. Each stream walks
    its pool in shuffled epochs, its `queue` holding what is left of the current ones."""
    picked = []
    for (pool, k), queue in zip(streams, queues, strict=True):
        while len(queue) < k:
            fresh = list(pool)
            rng.shuffle(fresh)
            queue += fresh
        picked += queue[:k]
        del queue[:k]
    return picked


def _save_merged(model: Any, tokenizer: Any, out: Path, info: dict[str, Any]) -> None:
    """Merge the adapters into the network and save it with the tokenizer and `mref.json` (`info`)
    as a plain checkpoint at `out`. Written beside it first and moved into place, so that a run
    killed while saving leaves no `out` a later run would take for a finished M_ref."""
    merged = model.merge_and_unload().to("cpu")
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    write_json_atomic(tmp / "mref.json", info)
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)
