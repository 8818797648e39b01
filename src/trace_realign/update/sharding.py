"""The frozen reference copy of full fine-tuning, placed the way the policy is under each engine.

With LoRA there is no copy: the reference is the policy with its adapter switched off, and the
trainer runs that pass through the wrapped (DDP / FSDP / DeepSpeed) model, so it is sharded
exactly as the policy is. With full fine-tuning `θ_ref` is a second network, and replicating it
in full on every rank would undo what FSDP or ZeRO-3 saves on the policy. So:

| engine (`accelerator.distributed_type`) | the reference copy |
|---|---|
| none, DDP (`MULTI_GPU`, `MULTI_CPU`) | moved whole to the device: it takes no gradient, so DDP has nothing to synchronise |
| FSDP (version 2) | `fully_shard` on every decoder layer, then on the root, with the plugin's mixed precision and resharding |
| FSDP (version 1) | wrapped in `FullyShardedDataParallel` with the plugin's settings and auto-wrap policy |
| DeepSpeed ZeRO-3 | `deepspeed.initialize` with the run's ZeRO-3 config, training-only blocks removed: parameters partitioned across ranks |
| DeepSpeed ZeRO-1/2 | `deepspeed.initialize` with ZeRO off (stage 0): those stages shard optimizer state, which a frozen copy has none of |

These are the facts TRL 1.16's `DPOTrainer` uses for its `ref_model`; the code is our own.
Under every engine the copy is called in eval mode under `torch.no_grad()`, on every rank at
the same step (sharded forwards gather parameters collectively).
"""

from __future__ import annotations

import copy
from typing import Any

# Imported inside functions: FSDP, DeepSpeed and accelerate are imported inside the functions that run under those engines.

# The ZeRO-3 buckets scaled to the model's width (DeepSpeed's own advice for inference engines;
# its "auto" values are filled from the hidden size the same way by transformers for the policy).
_ZERO3_BUCKETS = {
    "reduce_bucket_size": lambda h: h * h,
    "stage3_param_persistence_threshold": lambda h: 10 * h,
    "stage3_prefetch_bucket_size": lambda h: int(0.9 * h * h),
}


def reference_deepspeed_config(ds_config: dict[str, Any], hidden_size: int | None) -> dict[str, Any]:
    """The DeepSpeed config for a frozen reference copy, from the run's (policy's) config.

    No optimizer ever steps the copy: the `optimizer`, `scheduler` and `zero_optimization.offload_optimizer`
    blocks are dropped (DeepSpeed would otherwise build them). ZeRO-3 keeps stage 3, so the copy is
    partitioned like the policy; any other stage becomes 0. The input is not modified.
    """
    cfg = copy.deepcopy(ds_config)
    cfg.pop("optimizer", None)
    cfg.pop("scheduler", None)
    zero = cfg.setdefault("zero_optimization", {})
    zero.pop("offload_optimizer", None)
    stage = int(zero.get("stage", 0))
    if stage == 3:
        if hidden_size:
            for key, size in _ZERO3_BUCKETS.items():
                zero[key] = size(hidden_size)
    else:
        zero["stage"] = 0
    return cfg


def _hidden_size(model: Any) -> int | None:
    config = getattr(model, "config", None)
    sizes = getattr(config, "hidden_sizes", None)
    return max(sizes) if sizes else getattr(config, "hidden_size", None)


def _layer_classes(model: Any, plugin: Any) -> set[str]:
    """Names of the module classes sharded one by one: the plugin's, else the model's `_no_split_modules`."""
    names = getattr(plugin, "transformer_cls_names_to_wrap", None) or getattr(
        model, "_no_split_modules", None
    )
    return set(names or ())


def shard_fsdp2(model: Any, plugin: Any = None, mesh: Any = None) -> Any:
    """`fully_shard` each decoder layer (so a forward gathers one layer at a time), then the root.

    `plugin` is accelerate's `FullyShardedDataParallelPlugin` (its mixed precision and
    `reshard_after_forward` are used); None shards with FSDP2's defaults.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, OffloadPolicy, fully_shard

    kwargs: dict[str, Any] = {
        "reshard_after_forward": getattr(plugin, "reshard_after_forward", True),
        "mp_policy": getattr(plugin, "mixed_precision_policy", None) or MixedPrecisionPolicy(),
    }
    offload = getattr(plugin, "cpu_offload", None)
    if isinstance(offload, OffloadPolicy):
        kwargs["offload_policy"] = offload
    if mesh is not None:
        kwargs["mesh"] = mesh
    classes = _layer_classes(model, plugin)
    for module in model.modules():
        if module is not model and type(module).__name__ in classes:
            fully_shard(module, **kwargs)
    fully_shard(model, **kwargs)
    return model


def _shard_fsdp1(model: Any, accelerator: Any) -> Any:
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    plugin = accelerator.state.fsdp_plugin
    plugin.set_auto_wrap_policy(model)
    return FSDP(
        model,
        sharding_strategy=plugin.sharding_strategy or plugin.reshard_after_forward,
        cpu_offload=plugin.cpu_offload,
        auto_wrap_policy=plugin.auto_wrap_policy,
        mixed_precision=plugin.mixed_precision_policy,
        sync_module_states=plugin.sync_module_states,
        use_orig_params=plugin.use_orig_params,
        limit_all_gathers=plugin.limit_all_gathers,
        device_id=accelerator.device,
    )


def _deepspeed_engine(model: Any, accelerator: Any) -> Any:
    import deepspeed

    ds_config = accelerator.state.deepspeed_plugin.deepspeed_config
    engine, *_ = deepspeed.initialize(
        model=model, config=reference_deepspeed_config(ds_config, _hidden_size(model))
    )
    return engine


def prepare_reference(model: Any, accelerator: Any) -> Any:
    """Place the frozen reference copy `model` for `accelerator`'s engine (see the module's table).

    Returns the module to call for the reference's forward pass, in eval mode, no parameter
    requiring grad.
    """
    from accelerate.utils import DistributedType

    model.eval().requires_grad_(False)
    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED:
        out = _deepspeed_engine(model, accelerator)
    elif kind == DistributedType.FSDP:
        plugin = accelerator.state.fsdp_plugin
        if getattr(plugin, "fsdp_version", 1) == 2:
            mesh = getattr(accelerator, "torch_device_mesh", None)
            dims = getattr(getattr(accelerator, "parallelism_config", None), "fsdp_dim_names", None)
            out = shard_fsdp2(model, plugin, mesh[tuple(dims)] if mesh is not None and dims else None)
        else:
            out = _shard_fsdp1(model, accelerator)
    else:
        out = model.to(accelerator.device)
    return out.eval()


def is_sharded(model: Any) -> bool:
    """Whether `model`'s parameters are sharded across ranks (FSDP1/2 or a ZeRO-3 engine)."""
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    if isinstance(model, (FSDP, FSDPModule)):
        return True
    inner = getattr(model, "module", None)
    return any(hasattr(p, "ds_id") for p in (inner or model).parameters())
