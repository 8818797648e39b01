"""Log-probabilities of responses under a causal LM, from logits and labels.

Logits at position `t` predict token `t + 1`, so labels are shifted by one. Positions whose
label is `IGNORE_INDEX` (prompt and padding) never count.
"""

from __future__ import annotations

from typing import Any

import torch

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
    """Summed response log-probabilities of a collated batch under `model`, `[N]` (grad as the caller set)."""
    logits = forward_logits(model, batch)
    return sequence_logprobs(logits, batch["labels"].to(logits.device))
