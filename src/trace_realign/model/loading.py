"""Load the model to realign (`M_ref`), put LoRA on it, and reach its reference `θ_ref`.

A path or Hub id is a plain checkpoint; a folder holding `adapter_config.json` is a PEFT
adapter, loaded on its base model and merged, because that merged network *is* `M_ref`.
Training then puts a fresh LoRA on top, so "adapter disabled" means exactly `θ_ref`.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from trace_realign.errors import InputError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoraOptions:
    """LoRA settings; the defaults are the paper's (r 32, α 16, dropout 0.1 on q/v projections)."""

    r: int = 32
    alpha: int = 16
    dropout: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])

    @classmethod
    def from_config(cls, config: Any) -> LoraOptions:
        """From an `options.ModelConfig` (`ScoreConfig`, `TraceConfig`): `lora_r`, `lora_alpha`, ..."""
        return cls(config.lora_r, config.lora_alpha, config.lora_dropout, list(config.lora_target_modules))


@contextmanager
def eval_mode(model: Any) -> Iterator[Any]:
    """`model` in eval mode (dropout, LoRA dropout included, off), its training flag restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def adapter_base(path: str | Path) -> str | None:
    """The base model an adapter folder was trained on, or None when `path` is not an adapter."""
    cfg = Path(path) / "adapter_config.json"
    if not cfg.is_file():
        return None
    base = json.loads(cfg.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise InputError(
            "adapter has no base_model_name_or_path", path=str(cfg), field="base_model_name_or_path"
        )
    return base


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)} or auto", field="dtype")
    return DTYPES[dtype]


def load_tokenizer(path_or_id: str | Path) -> Any:
    """The tokenizer of a checkpoint or adapter folder (an adapter without one uses its base's)."""

    src = str(path_or_id)
    base = adapter_base(src) if Path(src).is_dir() else None
    if base is not None and not (Path(src) / "tokenizer_config.json").is_file():
        src = base
    try:
        return AutoTokenizer.from_pretrained(src)
    except OSError as exc:
        raise InputError(f"cannot load a tokenizer: {str(exc).splitlines()[0]}", path=src) from None


def has_accelerator() -> bool:
    accel = getattr(torch, "accelerator", None)
    return accel.is_available() if accel is not None else torch.cuda.is_available()


def deepspeed_on_cpu_if_no_accelerator() -> None:
    """accelerate imports DeepSpeed whenever it is installed, and DeepSpeed probes for an accelerator
    and warns when it finds none; on a machine without one, tell it so first (`DS_ACCELERATOR`, a
    value already set is kept). Called by `process_state` and by the trainer (without a DeepSpeed
    config)."""
    if not has_accelerator():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def process_state() -> Any:
    """accelerate's `PartialState`: this process's rank, world and device. On a machine without
    an accelerator (or under `accelerate launch --cpu`) a multi-process world is a CPU (gloo)
    world, which `PartialState()` alone would not start."""
    deepspeed_on_cpu_if_no_accelerator()
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not has_accelerator())


def compute_device() -> torch.device:
    """Where a stage that is not a `Trainer` (scoring, evaluation, a model judge) puts its model:
    this process's accelerator (`cuda:LOCAL_RANK` under `accelerate launch`), else the CPU. The
    `Trainer` stages place their models themselves."""
    return torch.device(process_state().device)


def load_model(
    path_or_id: str | Path,
    *,
    dtype: str | torch.dtype = "float32",
    attn_implementation: str | None = None,
    device: str | torch.device | None = None,
) -> Any:
    """Load a causal LM from a path, a Hub id, or an adapter folder (merged onto its base).

    `attn_implementation="eager"` is needed for double backward on CPU (the SDPA kernels have none).
    """

    src = str(path_or_id)
    base = adapter_base(src) if Path(src).is_dir() else None
    kwargs: dict[str, Any] = {"dtype": _resolve_dtype(dtype)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(base or src, **kwargs)
    except OSError as exc:
        raise InputError(f"cannot load a model: {str(exc).splitlines()[0]}", path=base or src) from None
    if base is not None:
        model = PeftModel.from_pretrained(model, src).merge_and_unload()
    if device is not None:
        model.to(device)
    return model


def apply_lora(model: Any, options: LoraOptions | None = None) -> Any:
    """Wrap `model` in a fresh PEFT LoRA adapter; only the adapter is trainable.

    PEFT initialises `B = 0`, so the wrapped model computes exactly `θ_ref` until trained.
    """

    o = options or LoraOptions()
    config = LoraConfig(
        r=o.r,
        lora_alpha=o.alpha,
        lora_dropout=o.dropout,
        target_modules=list(o.target_modules),
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise InputError(f"cannot apply LoRA: {exc}", field="lora_target_modules") from None


def is_peft(model: Any) -> bool:

    return isinstance(model, PeftModel)


def trainable_parameters(model: Any) -> dict[str, torch.nn.Parameter]:
    """The parameters gradients are taken over: the LoRA ones under PEFT, else all that require grad."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


class Reference:
    """The reference model `π_ref` of a policy being trained.

    Under PEFT it is the same network with the adapter disabled (no second copy in memory);
    for full fine-tuning it is a frozen copy taken when this object is made (so make it
    before the first update), or `copy` when given (a copy loaded separately, as ZeRO-3 needs).
    Use `with ref() as m:`; inside, `m` is in eval mode and the caller should run it under
    `torch.no_grad()`. Under FSDP pass the wrapped policy, `ref(wrapped)`: the adapter is switched
    off on the PEFT model and the pass goes through the wrapper, which gathers the shards.
    """

    def __init__(self, model: Any, copy_: Any = None) -> None:
        self.model = model
        if is_peft(model):
            self.copy = None
        else:
            self.copy = copy_ if copy_ is not None else copy.deepcopy(model)
            self.copy.eval().requires_grad_(False)

    @contextmanager
    def __call__(self, runner: Any = None) -> Iterator[Any]:
        if self.copy is not None:
            yield self.copy
            return
        runner = runner if runner is not None else self.model
        with eval_mode(runner), self.model.disable_adapter():
            yield runner
