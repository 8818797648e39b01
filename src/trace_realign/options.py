"""Options every stage shares, under TRL 1.16's names, and the one place old names are mapped.

`ModelConfig` holds what a stage that loads and adapts a model needs (`score`, `train`): the
dtype and the LoRA adapter, with the fields and names of TRL's `ModelConfig`. `TraceConfig`
(train) and `ScoreConfig` (score) both extend it, so the two stages parse the same flags and
YAML keys with the same defaults; the impact weights are gradients over exactly the LoRA
parameters training then trains.

Defaults (the same on every command; docs/method.md, "Defaults"):

- `use_peft` on (TRL: off): the paper trains LoRA, and impact scoring over all parameters of a
  full model is rarely what one wants on the hardware this runs on.
- LoRA r 32, α 16, dropout 0.1 on `q_proj`/`v_proj`: the paper's (TRL: r 16, α 32, 0.05, all
  linear layers picked by PEFT).
- `dtype` float32 (as TRL); `max_length` 512 (TRL: 1024) for score and train alike.

Old names (TRL before 1.16, or this project's own before it followed TRL) still work and print
a deprecation message; `fold_deprecated` is the one place that maps them:

| old                    | now                                                                   |
|------------------------|-----------------------------------------------------------------------|
| `rpo_alpha A`          | `loss_type [<pref>, sft]`, `loss_weights [1, A]` (TRL 1.16 removed `rpo_alpha`) |
| `flip_rate E`          | `label_smoothing E` (TRL's name for the robust-DPO flip rate)         |
| `loss` (score)         | `loss_type`                                                           |
| `normalisation` (score)| `weight_normalisation`                                                |
| `max_prompt_length`    | removed from TRL 1.16; still honoured here, with a warning            |

After folding, `rpo_alpha` and `flip_rate` read back the values in force (the `sft` weight and
`label_smoothing`), so code that still reads the old attributes keeps working.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from trace_realign.errors import InputError

DTYPES = ("float32", "bfloat16", "float16", "auto")
MAX_LENGTH = 512  # longest prompt + response, the default of every stage (half TRL's 1024: CPU memory)
PREFERENCE_LOSSES = ("sigmoid", "ipo")
SFT = "sft"
# how impact weights are computed, and normalised over the conflicts (impact.scoring); training also
# takes `weight_normalisation: none` (the weights as the file holds them)
SCORING_MODES = ("fd", "exact", "naive")
NORMALISATIONS = ("mean", "paper")

# old name -> what replaces it (the deprecation message)
DEPRECATED = {
    "rpo_alpha": "use loss_type [sigmoid, sft] with loss_weights [1, RPO_ALPHA] (TRL 1.16's names)",
    "flip_rate": "use label_smoothing (TRL 1.16's name for the robust-DPO flip rate)",
    "loss": "use loss_type",
    "normalisation": "use weight_normalisation",
    "max_prompt_length": "TRL 1.16 removed it; prompts keep max_length // 2 tokens when it is not set",
}


class TraceDeprecationWarning(FutureWarning):
    """An option under a name TRL (or this project) no longer uses; shown once per name."""


@dataclass
class ModelConfig:
    """How a stage loads the model and which parameters it adapts (TRL's `ModelConfig` names)."""

    dtype: str = field(
        default="float32",
        metadata={"help": "Load the model in this dtype.", "choices": list(DTYPES)},
    )
    use_peft: bool = field(
        default=True, metadata={"help": "Adapt a LoRA adapter (else every parameter: full fine-tuning)."}
    )
    lora_r: int = field(default=32, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "v_proj"], metadata={"help": "Modules that get a LoRA adapter."}
    )


def deprecated(old: str, where: str = "") -> None:
    """Say once that `old` is deprecated and what replaces it."""
    place = f" ({where})" if where else ""
    warnings.warn(f"{old} is deprecated{place}: {DEPRECATED[old]}", TraceDeprecationWarning, stacklevel=3)


def normalise_loss_type(value: Any, field_name: str = "loss_type") -> list[str]:
    """`loss_type` as TRL 1.16 takes it: a list (a single name is a list of one). One preference loss
    (sigmoid or ipo), optionally with `sft`, the NLL of the preferred response."""
    names = [value] if isinstance(value, str) else list(value or [])
    prefs = [n for n in names if n in PREFERENCE_LOSSES]
    unknown = [n for n in names if n not in PREFERENCE_LOSSES and n != SFT]
    if unknown or len(prefs) != 1 or names.count(SFT) > 1:
        raise InputError(
            f"loss_type must name one of {', '.join(PREFERENCE_LOSSES)} and optionally {SFT}, got {names}",
            field=field_name,
        )
    return names


def fold_deprecated(cfg: Any) -> None:
    """Map the old option names a config object carries (`DEPRECATED`) onto the current ones, in place.

    A field left at None was not given. `rpo_alpha` and `flip_rate` are then set to the values in
    force, so old readers see what the run uses.
    """
    if getattr(cfg, "loss", None) is not None:
        deprecated("loss")
        cfg.loss_type = [cfg.loss]
        cfg.loss = None
    if getattr(cfg, "normalisation", None) is not None:
        deprecated("normalisation")
        cfg.weight_normalisation = cfg.normalisation
        cfg.normalisation = None
    if hasattr(cfg, "loss_type"):
        cfg.loss_type = normalise_loss_type(cfg.loss_type)
        if getattr(cfg, "loss_weights", None) is not None and len(cfg.loss_weights) != len(cfg.loss_type):
            raise InputError(
                f"loss_weights needs one weight per loss_type entry ({cfg.loss_type}), got {cfg.loss_weights}",
                field="loss_weights",
            )
    if hasattr(cfg, "rpo_alpha"):
        if cfg.rpo_alpha is not None and cfg.rpo_alpha != sft_weight(cfg):
            deprecated("rpo_alpha")
            set_sft_weight(cfg, float(cfg.rpo_alpha))
        cfg.rpo_alpha = sft_weight(cfg)
    if hasattr(cfg, "flip_rate"):
        if cfg.flip_rate is not None and cfg.flip_rate != cfg.label_smoothing:
            deprecated("flip_rate")
            cfg.label_smoothing = float(cfg.flip_rate)
        cfg.flip_rate = cfg.label_smoothing
    if getattr(cfg, "max_prompt_length", None) is not None:
        deprecated("max_prompt_length")


@dataclass(frozen=True)
class LossTerms:
    """`loss_type` and `loss_weights` resolved once, when a config is built: the preference loss
    (sigmoid or ipo) and the weight of each term (the `sft` NLL's is 0 when it is not listed)."""

    loss_type: str
    preference_weight: float
    sft_weight: float


def loss_terms(cfg: Any) -> LossTerms:
    """The `LossTerms` of a config whose `loss_type` (and `loss_weights`) `fold_deprecated` checked."""
    pref = preference_loss_type(cfg)
    return LossTerms(pref, loss_weight(cfg, pref), sft_weight(cfg))


def preference_loss_type(cfg: Any) -> str:
    """The preference loss of `loss_type` (sigmoid or ipo), whatever else the list holds."""
    return next(n for n in normalise_loss_type(cfg.loss_type) if n != SFT)


def loss_weight(cfg: Any, name: str) -> float:
    """The weight of `name` in `loss_type` (0 when absent; 1 when `loss_weights` is not given)."""
    names = normalise_loss_type(cfg.loss_type)
    if name not in names:
        return 0.0
    weights = getattr(cfg, "loss_weights", None)
    return 1.0 if weights is None else float(weights[names.index(name)])


def sft_weight(cfg: Any) -> float:
    return loss_weight(cfg, SFT)


def set_sft_weight(cfg: Any, weight: float) -> None:
    """Put the `sft` term at `weight` (0 removes it), keeping every other term's weight."""
    names = normalise_loss_type(cfg.loss_type)
    weights = list(cfg.loss_weights) if cfg.loss_weights is not None else [1.0] * len(names)
    if SFT in names:
        i = names.index(SFT)
        del names[i], weights[i]
    if weight:
        names.append(SFT)
        weights.append(weight)
    cfg.loss_type = names
    cfg.loss_weights = None if all(w == 1.0 for w in weights) else weights
