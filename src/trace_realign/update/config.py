"""`TraceConfig`: the hybrid update's options on top of `transformers.TrainingArguments`.

Every field is at once a Python attribute, a command-line flag (`--beta 0.3`) and a YAML key
(`beta: 0.3`), parsed by `HfArgumentParser` as TRL's scripts do, so the usual Trainer flags
(`--per_device_train_batch_size`, `--gradient_accumulation_steps`, `--report_to`, `--deepspeed`,
`--bf16`, `--gradient_checkpointing`) work unchanged. LoRA and length options carry TRL's names.
Defaults are the paper's (method.md): β 0.3, α_KL 0.1, γ 1, LoRA r 32 / α 16 / dropout 0.1 on
q/v, lr 1e-4, cosine schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from trace_realign.errors import InputError

LOSS_TYPES = ("sigmoid", "ipo")
NORMALISATIONS = ("mean", "paper", "none")
SAMPLINGS = ("natural", "stratified")


@dataclass
class TraceConfig(TrainingArguments):
    """Options of `TraceTrainer`. `method` names a preset (see `update.presets.PRESETS`)."""

    method: str = field(
        default="trace",
        metadata={
            "help": "trace, trace-oracle, trace-no-impact, trace-no-kl, trace-no-triage, u2a, naive-oracle-dpo, dpo-gold, "
            "rdpo"
        },
    )
    beta: float = field(default=0.3, metadata={"help": "β of the preference and NPO losses."})
    alpha_kl: float = field(
        default=0.1, metadata={"help": "α_KL, the weight of the RETAIN KL to the reference."}
    )
    rpo_alpha: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the per-token NLL of the preferred response added to each preference term "
            "(RPO, Pang et al. 2024; TRL's rpo_alpha). 0, the default, is the paper's objective."
        },
    )
    gamma: float = field(
        default=1.0,
        metadata={
            "help": "γ of the impact weights (w ← w/γ before clamping). Used by the score stage; the weights a "
            "weighted file carries are already divided by it."
        },
    )
    loss_type: str = field(
        default="sigmoid",
        metadata={
            "help": "ℓ_pref: 'sigmoid' (DPO, the paper's 'IPO') or 'ipo' (the true IPO (Δ − 1/(2β))²)."
        },
    )
    weight_normalisation: str = field(
        default="mean",
        metadata={
            "help": "Impact weights over the conflicts used in training: 'mean' (mean 1, the default), "
            "'paper' (the paper's w/Σ|w|, sums to 1) or 'none' (as in the weighted file)."
        },
    )
    sampling: str = field(
        default="natural",
        metadata={
            "help": "Batches of every method: 'natural' (shuffled, the data's own category proportions, as the "
            "paper's trainer) or 'stratified' (each batch in `sampling_proportions`)."
        },
    )
    sampling_proportions: list[float] = field(
        default_factory=lambda: [1.0, 1.0, 1.0],
        metadata={
            "help": "Shares of INVERT, PUNISH and RETAIN in each stratified batch (Algorithm 1 line 23); "
            "a missing category's share goes to the others."
        },
    )
    grad_norm_stop: float = field(
        default=0.0,
        metadata={
            "help": "ε: stop when the gradient norm of an update falls below it (0 turns the rule off)."
        },
    )
    flip_rate: float = field(
        default=0.1, metadata={"help": "ε of robust DPO (rdpo): the assumed label flip rate."}
    )
    max_length: int | None = field(default=512, metadata={"help": "Longest prompt+response, in tokens."})
    max_prompt_length: int | None = field(
        default=None, metadata={"help": "Prompt tokens kept when truncating (default max_length // 2)."}
    )
    precompute_ref_log_probs: bool = field(
        default=True,
        metadata={
            "help": "Compute the reference log-probabilities once before training (cached on disk) instead "
            "of a reference forward pass each step. The RETAIN KL still needs reference logits each step."
        },
    )
    use_peft: bool = field(default=True, metadata={"help": "Train a LoRA adapter (else full fine-tuning)."})
    lora_r: int = field(default=32, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "v_proj"], metadata={"help": "Modules that get a LoRA adapter."}
    )
    save_merged: bool = field(
        default=False, metadata={"help": "Also save the model with the adapter merged in."}
    )

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
        self.validate()

    def validate(self) -> None:
        """Raise `InputError` naming the field of the first bad option."""
        from trace_realign.update.presets import PRESETS

        if self.method not in PRESETS:
            raise InputError(
                f"unknown method {self.method!r}: use one of {', '.join(PRESETS)}", field="method"
            )
        if self.loss_type not in LOSS_TYPES:
            raise InputError(f"unknown loss_type {self.loss_type!r}: use sigmoid or ipo", field="loss_type")
        if self.weight_normalisation not in NORMALISATIONS:
            raise InputError(
                f"unknown weight_normalisation {self.weight_normalisation!r}: use mean, paper or none",
                field="weight_normalisation",
            )
        if self.sampling not in SAMPLINGS:
            raise InputError(
                f"unknown sampling {self.sampling!r}: use natural or stratified", field="sampling"
            )
        if self.beta <= 0:
            raise InputError(f"beta must be positive, got {self.beta}", field="beta")
        if self.alpha_kl < 0:
            raise InputError(f"alpha_kl must be >= 0, got {self.alpha_kl}", field="alpha_kl")
        if self.rpo_alpha < 0:
            raise InputError(f"rpo_alpha must be >= 0, got {self.rpo_alpha}", field="rpo_alpha")
        if self.gamma <= 0:
            raise InputError(f"gamma must be positive, got {self.gamma}", field="gamma")
        if not 0.0 <= self.flip_rate < 0.5:
            raise InputError(f"flip_rate must lie in [0, 0.5), got {self.flip_rate}", field="flip_rate")
        props = self.sampling_proportions
        if len(props) != 3 or any(p < 0 for p in props) or sum(props) <= 0:
            raise InputError(
                f"sampling_proportions needs three shares >= 0 (INVERT PUNISH RETAIN), not all 0; got {props}",
                field="sampling_proportions",
            )
        if self.grad_norm_stop < 0:
            raise InputError(
                f"grad_norm_stop must be >= 0, got {self.grad_norm_stop}", field="grad_norm_stop"
            )
        if self.max_length is not None and self.max_length < 2:
            raise InputError(f"max_length must be at least 2, got {self.max_length}", field="max_length")
        if self.remove_unused_columns:
            raise InputError("TraceTrainer needs remove_unused_columns=False", field="remove_unused_columns")
