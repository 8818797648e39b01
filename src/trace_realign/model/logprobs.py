"""Log-probabilities of responses under a causal LM, from logits and labels.

Logits at position `t` predict token `t + 1`, so labels are shifted by one. Positions whose
label is `IGNORE_INDEX` (prompt and padding) never count.

`sequence_logprobs` works on logits a caller already has. `batch_logprobs` (and
`response_logprobs`) run the model and project only the response positions through the LM head,
in chunks, so no `[N, T, V]` logits tensor is ever held: on a 49k vocabulary those logits, not the
weights, set the peak memory of scoring.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

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


def batch_logprobs(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed response log-probabilities of a collated batch under `model`, `[N]` (grad as the caller set).

    Never holds the full-vocabulary logits of the batch: see `response_logprobs`."""
    return response_logprobs(model, batch)


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
    model: Any, batch: dict[str, torch.Tensor], *, chunk_rows: int = CHUNK_ROWS
) -> torch.Tensor:
    """Summed response log-probabilities `[N]` of a collated batch, computed through the decoder and
    `chunked_head_logprobs` (grad as the caller set). Models whose logits are not a plain LM head over
    the last hidden state fall back to the full logits, with `logits_to_keep` trimming the prompt."""
    device = next(model.parameters()).device
    ids, attn = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    return logprobs_and_logits(model, ids, attn, batch["labels"].to(device), chunk_rows=chunk_rows)[0]


def logprobs_and_logits(
    model: Any,
    ids: torch.Tensor,
    attn: torch.Tensor,
    labels: torch.Tensor,
    rows: torch.Tensor | None = None,
    *,
    plain: bool = False,
    chunk_rows: int = CHUNK_ROWS,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Summed response log-probabilities `[N]`, and the full logits `[K, keep - 1, V]` of the batch
    rows `rows` (None without them), over the last `positions_to_keep(labels)` positions.

    Through the decoder and `chunked_head_logprobs` where `decoder_and_head` finds a plain LM head
    (only `rows` then ever hold full-vocabulary logits); through one forward pass returning every
    row's logits otherwise, or with `plain` (a caller whose wrapper owns the forward, as FSDP's).
    The two routes give the same numbers."""
    keep = positions_to_keep(labels)
    labels = labels[:, labels.shape[1] - keep :]
    wanted = rows is not None and rows.numel() > 0
    parts = None if plain else decoder_and_head(model)
    if parts is None:
        logits = model(input_ids=ids, attention_mask=attn, use_cache=False, logits_to_keep=keep).logits
        return sequence_logprobs(logits, labels), (logits[rows, :-1] if wanted else None)
    decoder, head = parts
    hidden = decoder(input_ids=ids, attention_mask=attn, use_cache=False).last_hidden_state
    hidden = hidden[:, hidden.shape[1] - keep :]
    return chunked_head_logprobs(head, hidden, labels, chunk_rows), (
        head(hidden[rows, :-1]) if wanted else None
    )


def positions_to_keep(labels: torch.Tensor) -> int:
    """How many final positions hold every logit that predicts a response token (`logits_to_keep`).

    The logit at position t predicts label t + 1, so the first response label at position p needs
    the logit at p - 1; keeping the last `T - p + 1` positions covers the earliest such p in the batch.
    """
    scored = (labels != IGNORE_INDEX).any(0).nonzero()
    first = int(scored[0]) if scored.numel() else labels.shape[1] - 1
    return labels.shape[1] - max(first - 1, 0)
