"""Reference log-probabilities `log π_ref(y|x)`, computed once and kept on disk.

`θ_ref` never changes during a realignment, so every stage that needs `log π_ref` (impact
scoring, every epoch of the hybrid update) reads it from one cache. The cache file is named by
a fingerprint of the reference weights and of the encoding (tokenizer, template, lengths);
inside, each row is keyed by the pair id and the response text. Rows are appended and flushed
batch by batch, so a killed run keeps what it computed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from trace_realign.io import cache_root
from trace_realign.model.loading import eval_mode, is_peft
from trace_realign.model.logprobs import batch_logprobs
from trace_realign.model.tokenize import PLAIN_SEPARATOR, TruncationReport, collate, encode_many, pad_id
from trace_realign.schema import Prompt, content_id

# (pair id, prompt, response): the sequence whose reference log-probability is wanted
RefItem = tuple[str, Prompt, str]


@contextmanager
def reference_view(model: Any) -> Iterator[Any]:
    """`π_ref` from `model` without a copy: a PEFT model with its adapter switched off; any other
    model is taken to be at `θ_ref` already (for full fine-tuning, pass the frozen copy)."""
    with eval_mode(model), model.disable_adapter() if is_peft(model) else nullcontext():
        yield model


def _base_parameters(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """The reference weights under names that do not depend on a PEFT wrapper."""
    adapters = tuple(f".{name}." for name in getattr(model, "peft_config", {}) or {})
    for name, p in model.named_parameters():
        if adapters and any(a in name for a in adapters):
            continue
        yield name.removeprefix("base_model.model.").replace(".base_layer.", "."), p


def model_fingerprint(model: Any) -> str:
    """A hash of the reference network's weights (adapters excluded), dtype and shapes included."""
    h = hashlib.blake2b(digest_size=8)
    for name, p in _base_parameters(model):
        h.update(f"{name}:{p.dtype}:{tuple(p.shape)}".encode())
        t = p.detach()
        t = t if t.dtype == torch.float32 else t.float()
        # the tensor's own buffer, not a bytes copy: copies of every weight pushed the score stage's peak
        h.update(t.cpu().contiguous().numpy())
    return h.hexdigest()


def encoding_fingerprint(tokenizer: Any, max_length: int | None, max_prompt_length: int | None) -> str:
    """What else changes a log-probability: the tokenizer, its template and the truncation lengths."""
    return content_id(
        type(tokenizer).__name__,
        len(tokenizer),
        getattr(tokenizer, "chat_template", None),
        tokenizer.bos_token,
        tokenizer.eos_token,
        PLAIN_SEPARATOR,
        max_length,
        max_prompt_length,
    )


def item_key(pair_id: str, response: str) -> str:
    return content_id(pair_id, response)


class ReferenceCache:
    """An append-only JSONL file of `{"key": ..., "logp": ...}` rows, read whole on open."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._values: dict[str, float] = {}
        text = self.path.read_text(encoding="utf-8") if self.path.exists() else ""
        # a line cut short by a killed run is skipped (recomputed on demand) and closed before appending
        self._open_line = bool(text) and not text.endswith("\n")
        for line in text.splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            self._values[row["key"]] = float(row["logp"])

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: str) -> float | None:
        return self._values.get(key)

    def put(self, values: dict[str, float]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            if self._open_line:
                f.write("\n")
                self._open_line = False
            f.writelines(json.dumps({"key": k, "logp": v}) + "\n" for k, v in values.items())
            f.flush()
        self._values.update(values)


def open_cache(
    model: Any,
    tokenizer: Any,
    *,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    cache_dir: str | Path | None = None,
) -> ReferenceCache:
    """The cache for this reference network and encoding, under `cache_dir` (default: the cache root)."""
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "reference-logps"
    fp = content_id(model_fingerprint(model), encoding_fingerprint(tokenizer, max_length, max_prompt_length))
    return ReferenceCache(folder / f"{fp}.jsonl")


def reference_logprobs(
    model: Any,
    tokenizer: Any,
    items: Sequence[RefItem],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    cache: ReferenceCache | None = None,
    report: TruncationReport | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """`log π_ref(response | prompt)` for each item, `[N]` float32, from `cache` where present.

    `model` is the reference (see `reference_view`). Items missing from the cache are computed
    in batches of `batch_size` and stored as each batch finishes.
    """
    keys = [item_key(pid, resp) for pid, _, resp in items]
    out = [cache.get(k) if cache is not None else None for k in keys]
    todo = [i for i, v in enumerate(out) if v is None]
    bar = tqdm(total=len(todo), desc="reference log-probs", unit="seq", disable=not progress or not todo)
    with reference_view(model) as ref, torch.no_grad():
        for start in range(0, len(todo), batch_size):
            idx = todo[start : start + batch_size]
            encs = encode_many(
                tokenizer,
                [(items[i][1], items[i][2]) for i in idx],
                max_length=max_length,
                max_prompt_length=max_prompt_length,
                report=report,
            )
            # a pair's two responses sit side by side: their prompt runs once (same numbers, to rounding)
            batch = collate(encs, pad_id(tokenizer))
            values = batch_logprobs(ref, batch, share_prompts=True).float().cpu().tolist()
            for i, v in zip(idx, values, strict=True):
                out[i] = v
            if cache is not None:
                cache.put({keys[i]: v for i, v in zip(idx, values, strict=True)})
            bar.update(len(idx))
    bar.close()
    return torch.tensor(out, dtype=torch.float32)
