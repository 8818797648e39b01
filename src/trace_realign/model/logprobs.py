"""Log-probabilities of responses under a causal LM, from logits and labels.

Logits at position `t` predict token `t + 1`, so labels are shifted by one. Positions whose
label is `IGNORE_INDEX` (prompt and padding) never count.

`sequence_logprobs` works on logits a caller already has. `batch_logprobs` (and
`response_logprobs`) run the model and project only the response positions through the LM head,
in chunks, so no `[N, T, V]` logits tensor is ever held: on a 49k vocabulary those logits, not the
weights, set the peak memory of scoring.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint
from transformers import DynamicCache

from trace_realign.model.tokenize import IGNORE_INDEX


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token `log π(y_t | x, y_<t)` and the mask of response tokens, both `[N, T-1]`.

    Position `t` of the outputs belongs to the logits at `t` (predicting label `t + 1`), which is
    the alignment `losses.token_kl` expects for its `mask`. Masked positions hold 0.
    """
    logits = logits[:, :-1].float()
    target = labels[:, 1:]
    mask = target != IGNORE_INDEX
    safe = target.masked_fill(~mask, 0)
    # gather minus logsumexp: the same as log_softmax then gather, without a second [N, T, V] tensor
    picked = torch.gather(logits, -1, safe.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return picked * mask, mask


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed `log π(y | x)` per sequence, `[N]`."""
    logps, _ = token_logprobs(logits, labels)
    return logps.sum(-1)


def forward_logits(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Run `model` on a collated batch (see `tokenize.collate`) and return its logits."""
    device = next(model.parameters()).device
    out = model(
        input_ids=batch["input_ids"].to(device),
        attention_mask=batch["attention_mask"].to(device),
        use_cache=False,
    )
    return out.logits


def batch_logprobs(
    model: Any, batch: dict[str, torch.Tensor], *, share_prompts: bool = False
) -> torch.Tensor:
    """Summed response log-probabilities of a collated batch under `model`, `[N]` (grad as the caller set).

    Never holds the full-vocabulary logits of the batch: see `response_logprobs`."""
    return response_logprobs(model, batch, share_prompts=share_prompts)


# ---- without full-vocabulary logits --------------------------------------------------------------

# Rows of logits (one per scored position) projected through the LM head at a time: 512 rows of a 49k
# vocabulary are 100 MB in float32, where a batch of 16 sequences of 200 tokens would be 630 MB.
CHUNK_ROWS = 512


def _head_logprobs(head: Any, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`log softmax(head(hidden))[target]` per row, `[M]`."""
    logits = head(hidden).float()
    return torch.gather(logits, -1, target.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def chunked_head_logprobs(
    head: Any, hidden: torch.Tensor, labels: torch.Tensor, chunk_rows: int = CHUNK_ROWS
) -> torch.Tensor:
    """Summed response log-probabilities `[N]` from the final hidden states `[N, T, H]`, the same
    numbers as `sequence_logprobs(head(hidden), labels)` without its `[N, T, V]` logits.

    Only the positions that predict a response token go through `head` (prompt and padding never
    do), `chunk_rows` of them at a time. Under autograd each chunk is checkpointed: its logits are
    freed after the forward pass and recomputed in the backward one, so the graph keeps the hidden
    states (`H` numbers per position) rather than the logits (`V`).
    """
    target = labels[:, 1:]
    mask = target != IGNORE_INDEX
    rows = mask.nonzero(as_tuple=True)
    h = hidden[:, :-1][rows]  # [M, H]: the scored positions only
    t = target[rows]
    seq = rows[0]
    keep_graph = torch.is_grad_enabled() and h.requires_grad
    parts = []
    for start in range(0, h.shape[0], chunk_rows):
        hc, tc = h[start : start + chunk_rows], t[start : start + chunk_rows]
        if keep_graph:
            parts.append(checkpoint(_head_logprobs, head, hc, tc, use_reentrant=False))
        else:
            parts.append(_head_logprobs(head, hc, tc))
    per_row = torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)
    out = torch.zeros(labels.shape[0], dtype=per_row.dtype, device=per_row.device)
    return out.index_add(0, seq, per_row)


def _wrapped(module: Any) -> bool:
    """Whether calling `module` does more than its class's forward: an instance-level forward (as
    accelerate's mixed-precision autocast installs) or forward hooks, which the decoder-and-head
    route would bypass."""
    state = vars(module)
    return (
        "forward" in state
        or "_original_forward" in state
        or bool(getattr(module, "_forward_hooks", None))
        or bool(getattr(module, "_forward_pre_hooks", None))
    )


def decoder_and_head(model: Any) -> tuple[Any, Any] | None:
    """`(decoder, lm_head)` of a causal LM (PEFT-wrapped or not), or None when its logits are more than
    `lm_head(hidden)` (soft-capped or scaled, as in Gemma 2 or Cohere) or its forward is wrapped (see
    `_wrapped`): those take the plain path."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if _wrapped(model) or _wrapped(base):
        return None
    cfg = getattr(base, "config", None)
    if cfg is None or getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
        return None
    get_decoder = getattr(base, "get_decoder", None)
    decoder = get_decoder() if get_decoder is not None else None
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if decoder is None or head is None or decoder is base:
        return None
    return decoder, head


def response_logprobs(
    model: Any, batch: dict[str, torch.Tensor], *, chunk_rows: int = CHUNK_ROWS, share_prompts: bool = False
) -> torch.Tensor:
    """Summed response log-probabilities `[N]` of a collated batch, computed through the decoder and
    `chunked_head_logprobs` (grad as the caller set). Models whose logits are not a plain LM head over
    the last hidden state fall back to the full logits, with `logits_to_keep` trimming the prompt.
    `share_prompts`: rows with the same prompt run it once (see `logprobs_and_logits`)."""
    device = next(model.parameters()).device
    ids, attn, labels = (batch[k].to(device) for k in ("input_ids", "attention_mask", "labels"))
    logps, _ = logprobs_and_logits(
        model, ids, attn, labels, chunk_rows=chunk_rows, share_prompts=share_prompts
    )
    return logps


def logprobs_and_logits(
    model: Any,
    ids: torch.Tensor,
    attn: torch.Tensor,
    labels: torch.Tensor,
    rows: torch.Tensor | None = None,
    *,
    plain: bool = False,
    chunk_rows: int = CHUNK_ROWS,
    share_prompts: bool = False,
    keep: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Summed response log-probabilities `[N]`, and the full logits `[K, keep - 1, V]` of the batch
    rows `rows` (None without them), over the last `keep` positions (`positions_to_keep(labels)`
    unless given; a caller that lines these logits up with another pass's gives that pass's).

    Through the decoder and `chunked_head_logprobs` where `decoder_and_head` finds a plain LM head
    (only `rows` then ever hold full-vocabulary logits); through one forward pass returning every
    row's logits otherwise, or with `plain` (a caller whose wrapper owns the forward, as FSDP's).
    With `share_prompts`, rows whose prompts are the same tokens (a preference pair's two responses)
    run that prompt once (`shared_prompt_logprobs`), where `prefix_cache_blocker` finds nothing
    against it; `rows` always take the one-pass route. Every route gives the same numbers."""
    keep = positions_to_keep(labels) if keep is None else keep
    wanted = rows is not None and rows.numel() > 0
    parts = None if plain else decoder_and_head(model)
    if parts is None:
        logits = model(input_ids=ids, attention_mask=attn, use_cache=False, logits_to_keep=keep).logits
        window = labels[:, labels.shape[1] - keep :]
        return sequence_logprobs(logits, window), (logits[rows, :-1] if wanted else None)
    decoder, head = parts
    out = torch.zeros(ids.shape[0], dtype=torch.float32, device=ids.device)
    rest = torch.arange(ids.shape[0], device=ids.device)
    if share_prompts and prefix_cache_blocker(decoder) is None:
        groups = prompt_groups(ids, labels, exclude=rows)
        shared = (
            shared_prompt_logprobs(decoder, head, ids, attn, labels, groups, chunk_rows) if groups else None
        )
        if shared is not None:
            done = torch.tensor([r for g in groups for r in g], device=ids.device)
            out = out.index_copy(0, done, shared.to(out.dtype))
            rest = rest[~torch.isin(rest, done)]
    if rest.numel() == 0:
        return out, None
    # position of each batch row among the rest, for the rows whose logits are wanted
    at = torch.full((ids.shape[0],), -1, dtype=torch.long, device=ids.device)
    at[rest] = torch.arange(rest.numel(), device=ids.device)
    hidden = decoder(input_ids=ids[rest], attention_mask=attn[rest], use_cache=False).last_hidden_state
    hidden = hidden[:, hidden.shape[1] - keep :]
    window = labels[rest, labels.shape[1] - keep :]
    out = out.index_copy(0, rest, chunked_head_logprobs(head, hidden, window, chunk_rows).to(out.dtype))
    return out, (head(hidden[at[rows], :-1]) if wanted else None)


# ---- a prompt shared by several responses, run once ------------------------------------------


def prompt_lengths(labels: torch.Tensor) -> torch.Tensor:
    """Prompt tokens of each row, `[N]`: labels mask exactly the prompt, and a response has a token."""
    return (labels != IGNORE_INDEX).int().argmax(-1)


def prompt_groups(
    ids: torch.Tensor, labels: torch.Tensor, exclude: torch.Tensor | None = None
) -> list[list[int]]:
    """Rows whose prompts are the same tokens, in groups of two or more (rows in `exclude` left out).

    A preference pair's two responses share their prompt, unless truncation cut it differently for
    a long and a short response; that pair then simply runs its prompts apart."""
    skip = set() if exclude is None else set(exclude.tolist())
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for r, (row, n) in enumerate(zip(ids.tolist(), prompt_lengths(labels).tolist(), strict=True)):
        if r not in skip:
            by_prompt.setdefault(tuple(row[:n]), []).append(r)
    return [g for g in by_prompt.values() if len(g) > 1]


# attention implementations whose mask is built from the 2D padding mask and the cache's length, as
# `shared_prompt_logprobs` needs (both tested against whole sequences in tests/model/test_logprobs.py)
PREFIX_ATTENTION = ("eager", "sdpa")


def prefix_cache_blocker(decoder: Any) -> str | None:
    """Why a prompt cannot run once for its responses through `decoder` (None: it can).

    Gradient checkpointing drops the key/value cache inside each checkpointed layer (transformers
    sets `cache=None` there while training with gradients); sliding-window and other non-full
    attention layers keep only part of it; attention kernels other than `PREFIX_ATTENTION` read
    the padding mask their own way. Those keep one forward pass per sequence."""
    if (
        torch.is_grad_enabled()
        and decoder.training
        and any(getattr(m, "gradient_checkpointing", False) for m in decoder.modules())
    ):
        return "gradient checkpointing drops the key/value cache"
    config = decoder.config
    attn = getattr(config, "_attn_implementation", None)
    if attn not in PREFIX_ATTENTION:
        return f"attention implementation {attn!r} (the prompt cache is checked with {', '.join(PREFIX_ATTENTION)})"
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and any(t != "full_attention" for t in layer_types):
        return "not every layer is full attention"
    if (
        layer_types is None
        and getattr(config, "sliding_window", None)
        and getattr(config, "use_sliding_window", True)
    ):
        return "sliding-window attention"
    if _cache_argument(decoder) is None:
        return "the decoder takes no key/value cache"
    return None


def _cache_argument(decoder: Any) -> str | None:
    """The decoder's name for its key/value cache: `cache` (transformers 5.25 deprecates the old name),
    else `past_key_values`."""
    params = inspect.signature(decoder.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in params), None)


def shared_prompt_logprobs(
    decoder: Any,
    head: Any,
    ids: torch.Tensor,
    attn: torch.Tensor,
    labels: torch.Tensor,
    groups: Sequence[Sequence[int]],
    chunk_rows: int = CHUNK_ROWS,
) -> torch.Tensor | None:
    """Summed response log-probabilities of the rows of `groups` (in that order, flattened), each
    group's prompt run once: the same numbers as one forward pass per row, to float rounding.

    The prompts (one row per group, from the group's first row) run right-padded to the longest,
    filling a `DynamicCache` whose keys and values keep their autograd graph (LoRA on q/v makes
    them depend on the adapter). `batch_select_indices` then gives each response row its group's
    cache, and the responses run as its continuation: position ids start at each prompt's own
    length, and the 2D mask (prompt slots, then response slots) hides the padding after a short
    prompt, so every response attends to exactly its prompt and its own earlier tokens. A padded
    query always sees a real key (the prompts are right-padded), so no softmax row is all masked.
    The first response token is predicted from the prompt pass's last real position, the others
    from the response pass; only those positions reach `head`. None if the cache was not filled
    (a decoder that ignores it): the caller then runs the rows whole."""
    device = ids.device
    first = torch.tensor([g[0] for g in groups], device=device)
    src = torch.tensor([k for k, g in enumerate(groups) for _ in g], device=device)
    rows = torch.tensor([r for g in groups for r in g], device=device)
    plen = prompt_lengths(labels)[first]  # [G]
    width = int(plen.max())
    prompt_mask = (torch.arange(width, device=device) < plen[:, None]).to(attn.dtype)
    cache = DynamicCache(config=decoder.config)
    name = _cache_argument(decoder)
    prompt = decoder(
        input_ids=ids[first, :width], attention_mask=prompt_mask, use_cache=True, **{name: cache}
    )
    if cache.get_seq_length() != width:
        return None
    start = plen[src]  # [R]: where each response begins in its own sequence
    length = attn[rows].sum(-1) - start
    steps = torch.arange(int(length.max()), device=device)
    at = (start[:, None] + steps).clamp(max=ids.shape[1] - 1)
    real = steps < length[:, None]
    resp_ids = ids[rows].gather(1, at)
    resp_labels = labels[rows].gather(1, at).masked_fill(~real, IGNORE_INDEX)
    cache.batch_select_indices(src)
    hidden = decoder(
        input_ids=resp_ids,
        attention_mask=torch.cat([prompt_mask[src], real.to(attn.dtype)], 1),
        position_ids=start[:, None] + steps,
        use_cache=True,
        **{name: cache},
    ).last_hidden_state
    last = prompt.last_hidden_state[src, start - 1]  # [R, H]: predicts the first response token
    hidden = torch.cat([last[:, None], hidden], 1)
    labels = torch.cat([torch.full_like(resp_labels[:, :1], IGNORE_INDEX), resp_labels], 1)
    return chunked_head_logprobs(head, hidden, labels, chunk_rows)


def positions_to_keep(labels: torch.Tensor) -> int:
    """How many final positions hold every logit that predicts a response token (`logits_to_keep`).

    The logit at position t predicts label t + 1, so the first response label at position p needs
    the logit at p - 1; keeping the last `T - p + 1` positions covers the earliest such p in the batch.
    """
    scored = (labels != IGNORE_INDEX).any(0).nonzero()
    first = int(scored[0]) if scored.numel() else labels.shape[1] - 1
    return labels.shape[1] - max(first - 1, 0)
