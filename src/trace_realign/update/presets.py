"""The methods compared in docs/method.md, as settings of the one `TraceTrainer`.

| name               | data used (`selection`)                          | loss                       | weights | KL  |
|--------------------|--------------------------------------------------|----------------------------|---------|-----|
| `trace`            | triaged                                          | INVERT ℓ_pref, PUNISH NPO / oracle ℓ_pref | impact | yes |
| `trace-no-impact`  | triaged                                          | as trace                   | uniform | yes |
| `trace-no-kl`      | triaged (RETAIN not drawn: it would add nothing) | as trace                   | impact  | no  |
| `trace-no-triage`  | all pairs: every response the judge flags        | NPO                        | impact  | no  |
| `u2a`              | all pairs: every response the judge flags        | NPO                        | impact  | no  |
| `naive-oracle-dpo` | relabelled: INVERT swapped, RETAIN kept, PUNISH dropped | DPO                 | uniform | no  |
| `dpo-gold`         | relabelled, PUNISH → (y_c, y_w)                  | DPO                        | uniform | no  |
| `rdpo`             | as naive-oracle-dpo                              | robust DPO, flip rate ε    | uniform | no  |

What `trace-no-triage` and `u2a` implement, precisely. Both drop the triage structure: no pair is
inverted and nothing is anchored by a KL. For every pair whose verdicts are known, each response
the judge found non-compliant (c = 0) gets the NPO loss `−log σ(−β log π_θ(y|x)/π_ref(y|x))`; the
pair's terms are multiplied by its impact weight from the weighted file. A RETAIN pair whose
loser is flagged (c_w = 1, c_l = 0) has no impact weight (the score stage weighs conflicts only)
and gets weight 1, the mean conflict weight under the default normalisation; pairs with no
flagged response contribute nothing and are left out.

`u2a` stands for Unlearning-to-Align (Feng et al., 2025): sample-weighted NPO unlearning of the
negative examples with weights chosen by bi-level optimisation (the outer problem is the
alignment objective, the inner one the weighted unlearning, with weights refined by implicit
gradients while training). Here the weights are the first-order, fixed-before-training
version of that implicit gradient, i.e. the impact weight `⟨g_J, g_i⟩` at `θ_ref`; they are not
re-estimated during training and there is no inner/outer loop, and the weight is per pair
rather than per negative response. With those simplifications the method table gives
`trace-no-triage` and `u2a` the same data, loss, weights and KL, so in this trainer they run
the same computation under two labels (the ablation and the baseline); results differ only
where their configs do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Selection = Literal["triaged", "flagged", "relabelled", "relabelled-gold"]


@dataclass(frozen=True)
class Preset:
    """How one method uses the one trainer.

    - `selection`: which rows of weighted.jsonl become which training examples (see `update.data`).
    - `weights`: `"impact"` uses the file's `impact_weight`, `"uniform"` gives every example 1.
    - `use_kl`: False forces α_KL = 0 (and RETAIN is then not drawn at all).
    - `pair_loss`: `"pref"` is ℓ_pref with the config's `loss_type`; `"dpo"` is the DPO sigmoid loss
      whatever `loss_type` says; `"rdpo"` is robust DPO with the config's `label_smoothing`; None for
      the presets that build no preference pairs (NPO only).
    - `stratified`: draw each batch from INVERT, PUNISH and RETAIN in the configured proportions.
    """

    name: str
    selection: Selection
    weights: Literal["impact", "uniform"]
    use_kl: bool
    pair_loss: Literal["pref", "dpo", "rdpo"] | None
    stratified: bool
    summary: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "trace", "triaged", "impact", True, "pref", True, "TRACE: triage, impact weights, hybrid update"
        ),
        Preset("trace-no-impact", "triaged", "uniform", True, "pref", True, "TRACE with uniform weights"),
        Preset("trace-no-kl", "triaged", "impact", False, "pref", True, "TRACE without the RETAIN KL"),
        Preset("trace-no-triage", "flagged", "impact", False, None, False, "NPO on every flagged response"),
        Preset("u2a", "flagged", "impact", False, None, False, "Unlearning-to-Align, first-order weights"),
        Preset(
            "naive-oracle-dpo", "relabelled", "uniform", False, "dpo", False, "DPO on the relabelled pairs"
        ),
        Preset("dpo-gold", "relabelled-gold", "uniform", False, "dpo", False, "DPO with oracle corrections"),
        Preset("rdpo", "relabelled", "uniform", False, "rdpo", False, "robust DPO on the relabelled pairs"),
    ]
}


def get_preset(name: str) -> Preset:
    from trace_realign.errors import InputError

    if name not in PRESETS:
        raise InputError(f"unknown method {name!r}: use one of {', '.join(PRESETS)}", field="method")
    return PRESETS[name]
