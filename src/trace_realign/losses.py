"""The loss math of TRACE on tensors, named as docs/method.md names it.

Every function takes summed sequence log-probabilities (shape `[N]`) of the policy
`π_θ` and of the reference `π_ref` and returns per-sequence losses (shape `[N]`): the
caller decides how to weight and reduce them (impact weights, means, sums).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

PreferenceVariant = Literal["sigmoid", "ipo"]


def delta(
    pol_pos: torch.Tensor, ref_pos: torch.Tensor, pol_neg: torch.Tensor, ref_neg: torch.Tensor
) -> torch.Tensor:
    """`Δ_θ(x, y+, y−) = log π_θ(y+|x)/π_ref(y+|x) − log π_θ(y−|x)/π_ref(y−|x)`."""
    return (pol_pos - ref_pos) - (pol_neg - ref_neg)


def preference_loss(
    pol_pos: torch.Tensor,
    ref_pos: torch.Tensor,
    pol_neg: torch.Tensor,
    ref_neg: torch.Tensor,
    beta: float,
    variant: PreferenceVariant = "sigmoid",
    *,
    pos_len: torch.Tensor | None = None,
    neg_len: torch.Tensor | None = None,
) -> torch.Tensor:
    """`ℓ_pref(x, y+, y−)`, preferring `y+` over `y−`.

    - `"sigmoid"`: `−log σ(β Δ_θ)`, the DPO loss. The paper calls it "IPO"; it is DPO.
    - `"ipo"`: the true IPO loss `(Δ_θ − 1/(2β))²`. With `pos_len`/`neg_len` (response token
      counts) each log-ratio is first divided by its length, the per-token form TRL's
      `loss_type="ipo"` uses; without them it is the sequence-level form of the IPO paper.
    """
    if variant == "sigmoid":
        return -F.logsigmoid(beta * delta(pol_pos, ref_pos, pol_neg, ref_neg))
    if variant == "ipo":
        pos, neg = pol_pos - ref_pos, pol_neg - ref_neg
        if pos_len is not None and neg_len is not None:
            pos, neg = pos / pos_len.clamp(min=1), neg / neg_len.clamp(min=1)
        return (pos - neg - 1 / (2 * beta)) ** 2
    raise ValueError(f"unknown preference loss variant {variant!r}: use 'sigmoid' or 'ipo'")


def npo_loss(pol: torch.Tensor, ref: torch.Tensor, beta: float) -> torch.Tensor:
    """`−log σ(−β log π_θ(y|x)/π_ref(y|x))` for one response.

    PUNISH applies it to both responses: `npo_loss(y_w) + npo_loss(y_l)` is docs/method.md's
    `ℓ_NPO(x, y_w, y_l)`. (The NPO paper scales by `2/β`; TRACE's formula does not.)
    """
    return -F.logsigmoid(-beta * (pol - ref))


def robust_dpo_loss(
    pol_pos: torch.Tensor,
    ref_pos: torch.Tensor,
    pol_neg: torch.Tensor,
    ref_neg: torch.Tensor,
    beta: float,
    flip_rate: float,
) -> torch.Tensor:
    """Robust DPO (Chowdhury et al. 2024) for labels flipped with probability `ε = flip_rate`:

    `[(1−ε)·(−log σ(βΔ)) − ε·(−log σ(−βΔ))] / (1 − 2ε)`, an unbiased estimate of the clean loss.
    """
    if not 0.0 <= flip_rate < 0.5:
        raise ValueError(f"flip_rate must lie in [0, 0.5), got {flip_rate}")
    z = beta * delta(pol_pos, ref_pos, pol_neg, ref_neg)
    return ((1 - flip_rate) * -F.logsigmoid(z) - flip_rate * -F.logsigmoid(-z)) / (1 - 2 * flip_rate)


def token_kl(ref_logits: torch.Tensor, pol_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`KL(π_ref(·|x, y_<t) ‖ π_θ(·|x, y_<t))` over the vocabulary, averaged over the masked tokens.

    `ref_logits`, `pol_logits`: `[N, T, V]`; `mask`: `[N, T]`, true where the logits at that
    position predict a response token (see `model.logprobs.token_logprobs`). Returns `[N]`;
    a sequence with no response token gets 0.
    """
    ref_logp = F.log_softmax(ref_logits.float(), dim=-1)
    pol_logp = F.log_softmax(pol_logits.float(), dim=-1)
    per_token = (ref_logp.exp() * (ref_logp - pol_logp)).sum(-1)
    m = mask.to(per_token.dtype)
    return (per_token * m).sum(-1) / m.sum(-1).clamp(min=1)
