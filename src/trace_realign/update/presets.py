"""The methods compared in docs/method.md, as settings of the one `TraceTrainer`.

| name               | data used (`selection`)                          | PUNISH loss                | weights | KL  |
|--------------------|--------------------------------------------------|----------------------------|---------|-----|
| `trace`            | triaged                                          | dual NPO (y_w and y_l)     | impact  | yes |
| `trace-oracle`     | triaged                                          | ℓ_pref(y_c ≻ y_w), oracle corrections | impact | yes |
| `trace-no-impact`  | triaged                                          | as trace                   | uniform | yes |
| `trace-no-kl`      | triaged (RETAIN drawn, with KL weight 0)         | as trace                   | impact  | no  |
| `trace-no-triage`  | all pairs as they were: every old loser y_l      | NPO on y_l                 | impact of that NPO term | no |
| `npo-flagged`      | all pairs: every response the judge flags        | NPO                        | impact of that NPO term | no |
| `u2a`              | single negatives: one per flagged response       | NPO                        | bi-level ω, re-estimated | no |
| `naive-oracle-dpo` | relabelled: INVERT swapped, RETAIN kept, PUNISH dropped | DPO                 | uniform | no  |
| `dpo-gold`         | relabelled, PUNISH → (y_c, y_w)                  | DPO                        | uniform | no  |
| `rdpo`             | as naive-oracle-dpo                              | robust DPO, flip rate ε    | uniform | no  |

INVERT pairs always get ℓ_pref(y_l ≻ y_w). `trace` is the paper's main method and the headline:
PUNISH pairs are unlearned with NPO on both responses whatever corrections the triage file
carries; `trace-oracle` (the paper's second TRACE row) prefers the oracle correction y_c over y_w
where the row has one (NPO where it has none).

Equal exposure. Every method trains for the same steps, batch size, schedule and sampler policy
(`TraceConfig.sampler`, the same for every method: natural category proportions by default, as
the paper's trainer does). `trace-no-kl` therefore still draws its RETAIN rows, with KL weight 0,
so it sees no more conflicts per step than `trace`.

`trace-no-triage` is the paper's ablation ("punish all", as the authors' code runs it): the judge is
not read. Every pair of the old data is kept as it was, and its old loser y_l gets the NPO loss
`−log σ(−β log π_θ(y_l|x)/π_ref(y_l|x))`, weighted by the impact of *that* NPO term at θ_ref,
`⟨g_J, ∇ℓ_NPO⟩`, clamped and normalised like TRACE's weights; no KL anchor. The weighted file's
`impact_weight` is the impact of TRACE's loss, so it is not used: the trainer computes the NPO
impacts once before the first step (`update.u2a.ImpactWeights`, with the score stage's machinery).
Rows the judge could not triage (UNKNOWN) are left out, as for every method.

`npo-flagged` is what an earlier version called trace-no-triage: NPO on every response the judge
flagged (c = 0), the verdicts read but not their categories, weighted by the impact of that NPO
term, no anchor. It mixes "no triage" with "no anchor", so it is not the paper's ablation.

`u2a` is Unlearning-to-Align (arXiv 2504.06659; docs/method.md, U2A): the forget set is single negative
responses, one example per flagged response; weights ω over them come from the implicit gradient
of an alignment objective J (the preference loss on the gold batch or on the relabelled pairs,
against the frozen reference), `δω_i = ⟨∇J, ∇ℓ_NPO,i⟩/γ` at the *current* parameters. The top-k
negatives by δω are kept, then every K steps ω is re-estimated (`ω ← ω·exp(η δω)`, mean 1),
and training stops when J stops improving or the rounds are spent. The weights are re-estimated
by a `TrainerCallback`, so the trainer itself is the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from trace_realign.errors import InputError

Selection = Literal["triaged", "losers", "flagged", "negatives", "relabelled", "relabelled-gold"]


@dataclass(frozen=True)
class Preset:
    """How one method uses the one trainer.

    - `selection`: which rows of weighted.jsonl become which training examples (see `update.data`).
    - `weights`: `"impact"` uses the file's `impact_weight`, `"uniform"` gives every example 1,
      `"npo-impact"` is the impact of the NPO term trained, computed before the first step, and
      `"u2a"` is U2A's ω, re-estimated while training (both by `update.u2a.ImpactWeights`).
    - `use_kl`: False forces α_KL = 0 (RETAIN rows are still drawn, so exposure stays equal).
    - `pair_loss`: `"pref"` is ℓ_pref with the config's `loss_type`; `"dpo"` is the DPO sigmoid loss
      whatever `loss_type` says; `"rdpo"` is robust DPO with the config's `label_smoothing`; None for
      the presets that build no preference pairs (NPO only).
    - `corrections`: PUNISH rows with an oracle correction become ℓ_pref(y_c ≻ y_w) (`trace-oracle`;
      the relabelled-gold selection always uses them); False unlearns them with NPO.
    """

    name: str
    selection: Selection
    weights: Literal["impact", "uniform", "npo-impact", "u2a"]
    use_kl: bool
    pair_loss: Literal["pref", "dpo", "rdpo"] | None
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
        Preset(
            "trace-no-triage",
            "losers",
            "npo-impact",
            False,
            None,
            "no triage (the paper's ablation): NPO on every old loser, weighted by the impact of that NPO term",
        ),
        Preset(
            "npo-flagged",
            "flagged",
            "npo-impact",
            False,
            None,
            "NPO on every response the judge flags, weighted by the impact of that NPO term, no anchor",
        ),
        Preset(
            "u2a",
            "negatives",
            "u2a",
            False,
            None,
            "Unlearning-to-Align: NPO on single negatives, bi-level weights re-estimated every K steps",
        ),
        Preset("naive-oracle-dpo", "relabelled", "uniform", False, "dpo", "DPO on the relabelled pairs"),
        Preset("dpo-gold", "relabelled-gold", "uniform", False, "dpo", "DPO with oracle corrections"),
        Preset("rdpo", "relabelled", "uniform", False, "rdpo", "robust DPO on the relabelled pairs"),
    ]
}


def pair_loss_type(preset: Preset, configured: str) -> str:
    """The `losses.preference_loss` a preset trains its pairs with: `configured` (the run's
    `loss_type`, sigmoid or ipo) for the TRACE rows, DPO's sigmoid for the DPO baselines whatever
    `loss_type` says, robust DPO for rdpo."""
    return {"dpo": "sigmoid", "rdpo": "robust"}.get(preset.pair_loss or "", configured)


def get_preset(name: str) -> Preset:

    if name not in PRESETS:
        raise InputError(f"unknown method {name!r}: use one of {', '.join(PRESETS)}", field="method")
    return PRESETS[name]
