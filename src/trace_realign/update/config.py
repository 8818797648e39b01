"""`TraceConfig`: the hybrid update's options on top of `transformers.TrainingArguments`.

Every field is at once a Python attribute, a command-line flag (`--beta 0.3`) and a YAML key
(`beta: 0.3`), parsed by `HfArgumentParser` as TRL's scripts do, so the usual Trainer flags
(`--per_device_train_batch_size`, `--gradient_accumulation_steps`, `--report_to`, `--deepspeed`,
`--bf16`, `--gradient_checkpointing`) work unchanged. The model and LoRA options come from
`options.ModelConfig`, shared with `score`; loss options carry TRL 1.16's names (`loss_type` as a
list with `"sft"` and `loss_weights`, `label_smoothing`); the old names are mapped in
`options.fold_deprecated`. Defaults are the paper's (docs/method.md): β 0.3, α_KL 0.1, LoRA r 32 /
α 16 / dropout 0.1 on q/v, lr 1e-4, cosine schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from trace_realign.errors import InputError
from trace_realign.losses import NpoForm
from trace_realign.options import (
    MAX_LENGTH,
    NORMALISATIONS,
    SCORING_MODES,
    LossTerms,
    ModelConfig,
    fold_deprecated,
    loss_terms,
)
from trace_realign.update.presets import PRESETS

# training's impact-weight normalisations: the scoring stage's, or the weights as the file holds them
WEIGHT_NORMALISATIONS = (*NORMALISATIONS, "none")
SAMPLERS = ("natural", "stratified")
# TrainingArguments.train_sampling_strategy values this trainer implements (in its own sampler)
SAMPLING_STRATEGIES = ("group_by_length", "random")
U2A_OBJECTIVES = ("gold", "relabelled")


@dataclass
class TraceConfig(TrainingArguments, ModelConfig):
    """Options of `TraceTrainer`. `method` names a preset (see `update.presets.PRESETS`)."""

    method: str = field(
        default="trace",
        metadata={
            "help": "trace, trace-oracle, trace-no-impact, trace-no-kl, trace-no-triage, npo-flagged, u2a, "
            "naive-oracle-dpo, dpo-gold, rdpo"
        },
    )
    beta: float = field(default=0.3, metadata={"help": "β of the preference and NPO losses."})
    alpha_kl: float = field(
        default=0.1, metadata={"help": "α_KL, the weight of the RETAIN KL to the reference."}
    )
    loss_type: list[str] = field(
        default_factory=lambda: ["sigmoid"],
        metadata={
            "help": "ℓ_pref: 'sigmoid' (DPO, the paper's 'IPO') or 'ipo' (the true IPO (Δ − 1/(2β))²), and "
            "optionally 'sft': the per-token NLL of the preferred response added to every preference term "
            "(RPO, Pang et al. 2024). ['sigmoid'], the default, is the paper's objective."
        },
    )
    loss_weights: list[float] | None = field(
        default=None,
        metadata={"help": "One weight per loss_type entry (default: 1 each), as in TRL's DPOConfig."},
    )
    weight_normalisation: str = field(
        default="mean",
        metadata={
            "help": "Impact weights over the conflicts used in training: 'mean' (mean 1, the default), "
            "'paper' (the paper's w/Σ|w|, sums to 1) or 'none' (as in the weighted file)."
        },
    )
    sampling_proportions: list[float] = field(
        default_factory=lambda: [1.0, 1.0, 1.0],
        metadata={
            "help": "Shares of INVERT, PUNISH and RETAIN in each stratified batch (Algorithm 1 line 23); "
            "a missing category's share goes to the others."
        },
    )
    sampler: str = field(
        default="natural",
        metadata={
            "help": "How batches are drawn, the same for every method (equal exposure): 'natural' (every "
            "example once per epoch in random order, the data's own category proportions, as the paper's "
            "trainer; the default) or 'stratified' (each batch takes INVERT, PUNISH and RETAIN in "
            "sampling_proportions).",
            "choices": list(SAMPLERS),
        },
    )
    train_sampling_strategy: str = field(
        default="group_by_length",
        metadata={
            "help": "TrainingArguments' option, applied inside either sampler: 'group_by_length' (the default "
            "here) puts examples of similar length in the same batch, keeping each batch's strata and each "
            "example's draws per epoch, so batches pay less for padding; 'random' does not group.",
            "choices": list(SAMPLING_STRATEGIES),
        },
    )
    grad_norm_stop: float = field(
        default=0.0,
        metadata={
            "help": "ε: stop when the gradient norm of an update falls below it (0 turns the rule off)."
        },
    )
    label_smoothing: float = field(
        default=0.1,
        metadata={"help": "ε of robust DPO (rdpo): the assumed label flip rate (read by rdpo only)."},
    )
    max_length: int | None = field(
        default=MAX_LENGTH, metadata={"help": "Longest prompt+response, in tokens."}
    )
    # old names (options.DEPRECATED): accepted with a deprecation message, folded into the above
    rpo_alpha: float | None = field(
        default=None, metadata={"help": "Deprecated: loss_type [sigmoid, sft] with loss_weights [1, A]."}
    )
    flip_rate: float | None = field(default=None, metadata={"help": "Deprecated: label_smoothing."})
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "Deprecated (TRL 1.16 removed it): prompt tokens kept when cutting (max_length // 2)."
        },
    )
    precompute_ref_log_probs: bool = field(
        default=True,
        metadata={
            "help": "Compute the reference log-probabilities once before training (cached on disk) instead "
            "of a reference forward pass each step. The RETAIN KL still needs reference logits each step."
        },
    )
    shared_prompt: bool = field(
        default=True,
        metadata={
            "help": "Run the prompt a pair's two responses share once for both (its key/value cache, kept with "
            "its gradients), in the policy and the reference pass: the same numbers as one pass per sequence, "
            "to float rounding. It applies without FSDP, DeepSpeed, DDP (reference pass only there) and "
            "gradient checkpointing (reference pass only), with eager or sdpa attention; elsewhere every "
            "sequence runs whole. run_summary.json says which."
        },
    )
    retain_answers: str | None = field(
        default=None,
        metadata={
            "help": "A retain set: a JSONL of prompt and response rows, the reference model's own answers to "
            "extra prompts (e.g. generic harmful requests), each anchored by the KL to the reference like a "
            "RETAIN row (methods built on triage only). `trace-realign run` makes it from `retain_prompts`. "
            "Not in the paper (docs/method.md, 'The retain set')."
        },
    )
    retain_prompts: str | None = field(
        default=None,
        metadata={
            "help": "For `trace-realign run`: prompts whose answers by the reference model (greedy, cached) "
            "become retain_answers: a JSONL of prompt rows or external:NAME:SPLIT (e.g. "
            "external:donotanswer:anchor)."
        },
    )
    retain_max_new_tokens: int = field(
        default=64, metadata={"help": "New tokens of each reference answer made for retain_prompts."}
    )
    save_merged: bool = field(
        default=False, metadata={"help": "Also save the model with the adapter merged in."}
    )

    # ---- U2A (method u2a; docs/method.md, U2A). Names follow the public U2A scripts where they have one;
    # trace-no-triage uses u2a_objective, u2a_objective_size and u2a_scoring for its one estimate.
    u2a_rounds: int = field(
        default=3,
        metadata={
            "help": "U2A: rounds of weight re-estimation after the first (U2A's max_steps, 3 in its scripts)."
        },
    )
    u2a_steps_per_round: int = field(
        default=0,
        metadata={
            "help": "U2A: K, the training steps between two estimates of ω. 0: the run's steps split evenly over "
            "the first phase and the rounds (max_steps / (u2a_rounds + 1))."
        },
    )
    u2a_eta: float = field(
        default=1e-2, metadata={"help": "U2A: η of the update ω ← ω·exp(η·δω) (U2A's weights_lr, 1e-2)."}
    )
    u2a_gamma: float = field(
        default=1.0, metadata={"help": "U2A: γ of the implicit gradient, H⁻¹ ≈ I/γ (δω = ⟨∇J, ∇ℓ_i⟩/γ)."}
    )
    u2a_top_k: int = field(
        default=1024, metadata={"help": "U2A: negatives kept by the first estimate of δω (largest first)."}
    )
    u2a_top_k_fraction: float = field(
        default=0.0,
        metadata={
            "help": "U2A: keep this share of the negatives instead of u2a_top_k (0 < share <= 1; 0: use u2a_top_k). "
            "U2A's 1024 of tens of thousands is a few percent; of a few hundred it keeps them all."
        },
    )
    u2a_eta_per_sd: float = field(
        default=0.0,
        metadata={
            "help": "U2A: set η each round so that η·sd(δω) equals this (0: the fixed u2a_eta). With δω's scale "
            "unknown in advance, this is what keeps ω ← ω·exp(η δω) from doing nothing or everything."
        },
    )
    u2a_npo_form: str = field(
        default="trace",
        metadata={
            "help": "U2A: 'u2a', its authors' NPO (the log-ratio per token, β u2a_npo_beta, scaled by 2/β), or "
            "'trace', TRACE's NPO (the sequence log-ratio, β of the run).",
            "choices": ["trace", "u2a"],
        },
    )
    u2a_npo_beta: float = field(
        default=0.1, metadata={"help": "U2A: β of its NPO form (npo_beta, 0.1 in its code)."}
    )
    u2a_sparsity: float = field(
        default=0.0,
        metadata={
            "help": "U2A: λ of the sparsity term λ·Σ√ω_i on the outer objective (subtracts λ/(2√ω_i) from δω_i); "
            "0, as U2A's NPO scripts run it, turns it off."
        },
    )
    u2a_es_threshold: float = field(
        default=0.0,
        metadata={
            "help": "U2A: stop when J falls by no more than this between two rounds (U2A's es_threshold); "
            "0 stops as soon as J stops improving."
        },
    )
    u2a_objective: str = field(
        default="gold",
        metadata={
            "help": "J's data: 'gold' (the gold batch of Algorithm 2 built from the rows) or 'relabelled' "
            "(INVERT pairs swapped and RETAIN pairs, as naive-oracle-dpo trains on)."
        },
    )
    u2a_objective_size: int = field(
        default=64,
        metadata={"help": "Pairs in J (gold batch size B; a random subset of the relabelled pairs)."},
    )
    u2a_scoring: str = field(
        default="fd",
        metadata={
            "help": "How δω is computed: fd (two forward passes), exact (forward-mode AD) or naive (loop)."
        },
    )
    u2a_batch_size: int = field(default=8, metadata={"help": "Sequences' items per scoring forward pass."})

    # TrainingArguments defaults changed to the paper's / this trainer's needs
    learning_rate: float = field(default=1e-4, metadata={"help": "The initial learning rate."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "The learning rate schedule."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N update steps."})
    # the collator needs the example fields the model's forward does not name
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep False: the collator reads them."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        # pinned memory only helps a copy to an accelerator; without one torch warns every epoch
        if self.dataloader_pin_memory and not torch.accelerator.is_available():
            self.dataloader_pin_memory = False
        fold_deprecated(self)
        self.validate()
        # resolved once: the trainer and the loss read these, never loss_type's list again
        self.loss_terms: LossTerms = loss_terms(self)

    def validate(self) -> None:
        """Raise `InputError` naming the field of the first bad option."""

        if self.method not in PRESETS:
            raise InputError(
                f"unknown method {self.method!r}: use one of {', '.join(PRESETS)}", field="method"
            )
        if self.weight_normalisation not in WEIGHT_NORMALISATIONS:
            raise InputError(
                f"unknown weight_normalisation {self.weight_normalisation!r}: use mean, paper or none",
                field="weight_normalisation",
            )
        if self.beta <= 0:
            raise InputError(f"beta must be positive, got {self.beta}", field="beta")
        if self.alpha_kl < 0:
            raise InputError(f"alpha_kl must be >= 0, got {self.alpha_kl}", field="alpha_kl")
        if any(w < 0 for w in self.loss_weights or []):
            raise InputError(f"loss_weights must be >= 0, got {self.loss_weights}", field="loss_weights")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise InputError(
                f"label_smoothing must lie in [0, 0.5), got {self.label_smoothing}", field="label_smoothing"
            )
        props = self.sampling_proportions
        if len(props) != 3 or any(p < 0 for p in props) or sum(props) <= 0:
            raise InputError(
                f"sampling_proportions needs three shares >= 0 (INVERT PUNISH RETAIN), not all 0; got {props}",
                field="sampling_proportions",
            )
        if self.sampler not in SAMPLERS:
            raise InputError(f"unknown sampler {self.sampler!r}: use natural or stratified", field="sampler")
        if self.train_sampling_strategy not in SAMPLING_STRATEGIES:
            raise InputError(
                f"train_sampling_strategy {self.train_sampling_strategy!r} is not supported here: "
                "use group_by_length or random",
                field="train_sampling_strategy",
            )
        if self.grad_norm_stop < 0:
            raise InputError(
                f"grad_norm_stop must be >= 0, got {self.grad_norm_stop}", field="grad_norm_stop"
            )
        if self.max_length is not None and self.max_length < 2:
            raise InputError(f"max_length must be at least 2, got {self.max_length}", field="max_length")
        self._validate_u2a()
        if self.remove_unused_columns:
            raise InputError("TraceTrainer needs remove_unused_columns=False", field="remove_unused_columns")

    def _validate_u2a(self) -> None:
        if self.u2a_rounds < 0:
            raise InputError(f"u2a_rounds must be >= 0, got {self.u2a_rounds}", field="u2a_rounds")
        if self.u2a_steps_per_round < 0:
            raise InputError(
                f"u2a_steps_per_round must be >= 0, got {self.u2a_steps_per_round}",
                field="u2a_steps_per_round",
            )
        if self.u2a_eta < 0:
            raise InputError(f"u2a_eta must be >= 0, got {self.u2a_eta}", field="u2a_eta")
        if self.u2a_gamma <= 0:
            raise InputError(f"u2a_gamma must be positive, got {self.u2a_gamma}", field="u2a_gamma")
        if self.u2a_top_k < 1:
            raise InputError(f"u2a_top_k must be at least 1, got {self.u2a_top_k}", field="u2a_top_k")
        if not 0.0 <= self.u2a_top_k_fraction <= 1.0:
            raise InputError(
                f"u2a_top_k_fraction must lie in [0, 1], got {self.u2a_top_k_fraction}",
                field="u2a_top_k_fraction",
            )
        if self.u2a_eta_per_sd < 0:
            raise InputError(
                f"u2a_eta_per_sd must be >= 0, got {self.u2a_eta_per_sd}", field="u2a_eta_per_sd"
            )
        if self.u2a_npo_form not in ("trace", "u2a"):
            raise InputError(
                f"unknown u2a_npo_form {self.u2a_npo_form!r}: use trace or u2a", field="u2a_npo_form"
            )
        if self.u2a_npo_beta <= 0:
            raise InputError(f"u2a_npo_beta must be positive, got {self.u2a_npo_beta}", field="u2a_npo_beta")
        if self.u2a_sparsity < 0:
            raise InputError(f"u2a_sparsity must be >= 0, got {self.u2a_sparsity}", field="u2a_sparsity")
        if self.u2a_objective not in U2A_OBJECTIVES:
            raise InputError(
                f"unknown u2a_objective {self.u2a_objective!r}: use gold or relabelled", field="u2a_objective"
            )
        if self.u2a_objective_size < 1:
            raise InputError(
                f"u2a_objective_size must be at least 1, got {self.u2a_objective_size}",
                field="u2a_objective_size",
            )
        if self.u2a_scoring not in SCORING_MODES:
            raise InputError(
                f"unknown u2a_scoring {self.u2a_scoring!r}: use fd, exact or naive", field="u2a_scoring"
            )
        if self.u2a_batch_size < 1:
            raise InputError(
                f"u2a_batch_size must be at least 1, got {self.u2a_batch_size}", field="u2a_batch_size"
            )


def npo_form(config: TraceConfig) -> NpoForm:
    """The NPO form a run trains with: U2A's when `u2a` asks for it, else TRACE's."""
    if config.method == "u2a" and config.u2a_npo_form == "u2a":
        return NpoForm.u2a(config.u2a_npo_beta)
    return NpoForm()
