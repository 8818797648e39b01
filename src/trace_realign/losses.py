"""The loss math of TRACE on tensors, named as docs/method.md names it.

Every function takes summed sequence log-probabilities (shape `[N]`) of the policy
`π_θ` and of the reference `π_ref` and returns per-sequence losses (shape `[N]`): the
caller decides how to weight and reduce them (impact weights, means, sums).

`term_losses` is the one place a triage category's loss is assembled from these pieces: impact
scoring scores exactly what the trainer trains, because both call it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

LossType = Literal["sigmoid", "ipo", "robust"]

# The loss term each triage category calls for (`triage.terms.category_term` names them), as the
# integers a batch carries in one tensor
PREF, NPO, KL = 0, 1, 2
TERM_KINDS = {"pref": PREF, "npo": NPO, "kl": KL}


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
    loss_type: LossType = "sigmoid",
    *,
    label_smoothing: float = 0.0,
    pos_len: torch.Tensor | None = None,
    neg_len: torch.Tensor | None = None,
) -> torch.Tensor:
    """`ℓ_pref(x, y+, y−)`, preferring `y+` over `y−`, under TRL's `loss_type` names.

    - `"sigmoid"`: `−log σ(β Δ_θ)`, the DPO loss. The paper calls it "IPO"; it is DPO.
    - `"ipo"`: the true IPO loss `(Δ_θ − 1/(2β))²`. With `pos_len`/`neg_len` (response token
      counts) each log-ratio is first divided by its length, the per-token form TRL's
      `loss_type="ipo"` uses; without them it is the sequence-level form of the IPO paper.
    - `"robust"`: robust DPO with the flip rate `label_smoothing` (`robust_dpo_loss`).
    """
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * delta(pol_pos, ref_pos, pol_neg, ref_neg))
    if loss_type == "ipo":
        pos, neg = pol_pos - ref_pos, pol_neg - ref_neg
        if pos_len is not None and neg_len is not None:
            pos, neg = pos / pos_len.clamp(min=1), neg / neg_len.clamp(min=1)
        return (pos - neg - 1 / (2 * beta)) ** 2
    if loss_type == "robust":
        return robust_dpo_loss(pol_pos, ref_pos, pol_neg, ref_neg, beta, label_smoothing)
    raise ValueError(f"unknown loss_type {loss_type!r}: use 'sigmoid', 'ipo' or 'robust'")


def npo_loss(
    pol: torch.Tensor,
    ref: torch.Tensor,
    beta: float,
    *,
    length: torch.Tensor | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """`−log σ(−β log π_θ(y|x)/π_ref(y|x))` for one response.

    PUNISH applies it to both responses: `npo_loss(y_w) + npo_loss(y_l)` is docs/method.md's
    `ℓ_NPO(x, y_w, y_l)`. (The NPO paper scales by `2/β`; TRACE's formula does not.) With `length`
    (the response's token count) the log-ratio is read per token, and `scale` multiplies the loss:
    U2A's form (`NpoForm.u2a`).
    """
    ratio = pol - ref
    if length is not None:
        ratio = ratio / length.clamp(min=1).to(ratio.dtype)
    return scale * -F.logsigmoid(-beta * ratio)


@dataclass(frozen=True)
class NpoForm:
    """How NPO reads a response: TRACE's formula (the sequence log-ratio, the run's β, no scale), or
    U2A's (`u2a`: the mean log-ratio per token, its own β, scaled by 2/β, as the authors' code)."""

    beta: float | None = None  # None: the run's β
    per_token: bool = False
    scale: float = 1.0

    @classmethod
    def u2a(cls, beta: float = 0.1) -> NpoForm:
        return cls(beta, True, 2.0 / beta)


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


def term_losses(
    kind: torch.Tensor,
    pol_a: torch.Tensor,
    ref_a: torch.Tensor,
    pol_b: torch.Tensor,
    ref_b: torch.Tensor,
    *,
    beta: float,
    loss_type: LossType = "sigmoid",
    label_smoothing: float = 0.0,
    npo_a: torch.Tensor | None = None,
    npo_b: torch.Tensor | None = None,
    kl: torch.Tensor | None = None,
    alpha_kl: float = 0.0,
    preference_weight: float = 1.0,
    sft_weight: float = 0.0,
    npo: NpoForm = NpoForm(),
    len_a: torch.Tensor | None = None,
    len_b: torch.Tensor | None = None,
) -> torch.Tensor:
    """Each example's loss `[N]`, by the term its category calls for (`kind`: PREF, NPO or KL):

    - PREF: `preference_weight · ℓ_pref(a ≻ b) + sft_weight · NLL(a)`, the NLL per token of the
      preferred response (`len_a` its token count; TRL's `loss_type [.., "sft"]`);
    - NPO: `ℓ_NPO` of `a` where `npo_a` and of `b` where `npo_b` (both by default): PUNISH unlearns
      both responses, a single negative (U2A) only `a`; `npo` says which form (`NpoForm`; U2A's
      reads each response per token and needs `len_a`, `len_b`);
    - KL: `alpha_kl · kl`, the token KL of `a` to the reference (RETAIN's anchor).

    Batched with no loop over examples: every branch is computed for every row and `kind` picks
    one, so a row's loss does not depend on what else is in its batch.
    """
    ones = torch.ones_like(pol_a)
    pref = preference_loss(pol_a, ref_a, pol_b, ref_b, beta, loss_type, label_smoothing=label_smoothing)
    if preference_weight != 1.0:
        pref = preference_weight * pref
    if sft_weight > 0:
        if len_a is None:
            raise ValueError("an sft term needs the preferred responses' token counts (len_a)")
        pref = pref + sft_weight * (-pol_a / len_a.clamp(min=1).to(pol_a.dtype))
    on_a = ones if npo_a is None else npo_a.to(pol_a.dtype)
    on_b = ones if npo_b is None else npo_b.to(pol_a.dtype)
    nb = beta if npo.beta is None else npo.beta
    if npo.per_token and (len_a is None or len_b is None):
        raise ValueError("a per-token NPO needs both responses' token counts (len_a, len_b)")
    la, lb = (len_a, len_b) if npo.per_token else (None, None)
    unlearn = npo_loss(pol_a, ref_a, nb, length=la, scale=npo.scale) * on_a
    unlearn = unlearn + npo_loss(pol_b, ref_b, nb, length=lb, scale=npo.scale) * on_b
    anchor = alpha_kl * (torch.zeros_like(pol_a) if kl is None else kl.to(pol_a.dtype))
    return torch.where(kind == PREF, pref, torch.where(kind == NPO, unlearn, anchor))
