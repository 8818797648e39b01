"""The methods compared in method.md, as settings of the one `TraceTrainer`.

| name               | data used (`selection`)                          | PUNISH loss                | weights | KL  |
|--------------------|--------------------------------------------------|----------------------------|---------|-----|
| `trace`            | triaged                                          | dual NPO (y_w and y_l)     | impact  | yes |
| `trace-oracle`     | triaged                                          | ℓ_pref(y_c ≻ y_w), oracle corrections | impact | yes |
| `trace-no-impact`  | triaged                                          | as trace                   | uniform | yes |
| `trace-no-kl`      | triaged (RETAIN drawn, with KL weight 0)          | as trace                   | impact  | no  |
| `trace-no-triage`  | all pairs: every response the judge flags        | NPO                        | impact  | no  |
| `u2a`              | all pairs: every response the judge flags        | NPO                        | impact  | no  |
| `naive-oracle-dpo` | relabelled: INVERT swapped, RETAIN kept, PUNISH dropped | DPO                 | uniform | no  |
| `dpo-gold`         | relabelled, PUNISH → (y_c, y_w)                  | DPO                        | uniform | no  |
| `rdpo`             | as naive-oracle-dpo                              | robust DPO, flip rate ε    | uniform | no  |

INVERT pairs always get ℓ_pref(y_l ≻ y_w). `trace` is the paper's main method and the headline:
PUNISH pairs are unlearned with NPO on both responses whatever corrections the triage file
carries; `trace-oracle` (the paper's second TRACE row) prefers the oracle correction y_c over y_w
where the row has one (NPO where it has none).

Equal exposure. Every method trains for the same steps, batch size, schedule and sampler policy
(`TraceConfig.sampling`, the same for every method: natural category proportions by default, as
the paper's trainer does). `trace-no-kl` therefore still draws its RETAIN rows, with KL weight 0,
so it sees no more conflicts per step than `trace`.

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
    - `use_kl`: False forces α_KL = 0 (RETAIN rows are still drawn, so exposure stays equal).
    - `pair_loss`: `"pref"` is ℓ_pref with the config's `loss_type`; `"dpo"` is the DPO sigmoid loss
      whatever `loss_type` says; `"rdpo"` is robust DPO with the config's `flip_rate`.
    - `corrections`: PUNISH rows with an oracle correction become ℓ_pref(y_c ≻ y_w) (`trace-oracle`;
      the relabelled-gold selection always uses them); False unlearns them with NPO.
    """

    name: str
    selection: Selection
    weights: Literal["impact", "uniform"]
    use_kl: bool
    pair_loss: Literal["pref", "dpo", "rdpo"]
    summary: str
    corrections: bool = False


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "trace", "triaged", "impact", True, "pref", "TRACE: triage, impact weights, dual NPO on PUNISH"
        ),
        Preset(
            "trace-oracle",
            "triaged",
            "impact",
            True,
            "pref",
            "TRACE with oracle corrections on PUNISH",
            corrections=True,
        ),
        Preset("trace-no-impact", "triaged", "uniform", True, "pref", "TRACE with uniform weights"),
        Preset("trace-no-kl", "triaged", "impact", False, "pref", "TRACE without the RETAIN KL"),
        Preset("trace-no-triage", "flagged", "impact", False, "pref", "NPO on every flagged response"),
        Preset("u2a", "flagged", "impact", False, "pref", "Unlearning-to-Align, first-order weights"),
        Preset("naive-oracle-dpo", "relabelled", "uniform", False, "dpo", "DPO on the relabelled pairs"),
        Preset("dpo-gold", "relabelled-gold", "uniform", False, "dpo", "DPO with oracle corrections"),
        Preset("rdpo", "relabelled", "uniform", False, "rdpo", "robust DPO on the relabelled pairs"),
    ]
}


def get_preset(name: str) -> Preset:
    from trace_realign.errors import InputError

    if name not in PRESETS:
        raise InputError(f"unknown method {name!r}: use one of {', '.join(PRESETS)}", field="method")
    return PRESETS[name]
