"""Sharded training: the accelerate configs parse into the engines they name, the reference copy's
DeepSpeed config passes DeepSpeed's own checker, and under FSDP (two CPU processes, gloo) the
trainer's reference pass gives the same loss as without sharding, for LoRA and for a sharded copy.

accelerate 1.15 runs FSDP only on accelerators (`accelerate launch --cpu` starts one plain
process, and its FSDP plugin is switched on only for GPU-like process groups), so the two-process
run goes through torchrun with the FSDP settings that `accelerate launch` derives from our config
file, sharding with torch's own FSDP2 (`fully_shard`) and FSDP1, which run on CPU with gloo.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trace_realign.update.sharding import reference_deepspeed_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"


def launch_env(name: str) -> tuple[object, dict[str, str]]:
    """What `accelerate launch --config_file configs/accelerate/NAME.yaml` decides: its args and env."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / f"{name}.yaml"), "x.py"])
    args, _, _ = _validate_launch_command(args)
    return args, ({} if args.use_deepspeed else prepare_multi_gpu_env(args))


def test_ddp_config_is_plain_data_parallel():
    args, env = launch_env("ddp")
    assert args.multi_gpu and not args.use_fsdp and not args.use_deepspeed
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"


@pytest.mark.parametrize("name", ["fsdp-lora", "fsdp-full"])
def test_fsdp_configs_are_fsdp2_full_shard(name):
    args, env = launch_env(name)
    assert args.use_fsdp
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    assert env["FSDP_SHARDING_STRATEGY"] == "FULL_SHARD" and env["FSDP_RESHARD_AFTER_FORWARD"] == "true"
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    # every rank needs the weights to take the reference from (rank-0-only loading would leave them empty)
    assert env["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "false"
    assert env["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT"


def test_zero3_config_points_at_its_deepspeed_file():
    args, _ = launch_env("zero3")
    assert args.use_deepspeed and args.zero3_init_flag
    # the path in the YAML is relative to the repository root, where the README's commands run
    ds_file = Path(args.deepspeed_config_file)
    assert ds_file == Path("configs/accelerate/zero3.json")
    cfg = json.loads((CONFIGS.parents[1] / ds_file).read_text())
    assert cfg["zero_optimization"]["stage"] == 3
    # the trainer's own optimizer and schedule run, as on one GPU
    assert "optimizer" not in cfg and "scheduler" not in cfg


def test_reference_deepspeed_config():
    run = {
        "train_micro_batch_size_per_gpu": 2,
        "optimizer": {"type": "AdamW"},
        "scheduler": {"type": "WarmupLR"},
        "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "cpu"}},
    }  # fmt: skip
    ref = reference_deepspeed_config(run, hidden_size=64)
    assert "optimizer" not in ref and "scheduler" not in ref
    zero = ref["zero_optimization"]
    assert (
        zero["stage"] == 3 and "offload_optimizer" not in zero and zero["offload_param"] == {"device": "cpu"}
    )
    assert zero["reduce_bucket_size"] == 64 * 64 and zero["stage3_param_persistence_threshold"] == 640
    assert run["optimizer"] and run["zero_optimization"]["offload_optimizer"]  # the run's config is untouched
    # ZeRO-1/2 shard optimizer state only: a frozen copy has none, so it runs with ZeRO off
    assert (
        reference_deepspeed_config({"zero_optimization": {"stage": 2}}, 64)["zero_optimization"]["stage"] == 0
    )


@pytest.mark.slow
def test_zero3_config_passes_deepspeeds_checker(tmp_path):
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers import TrainingArguments

    from trace_realign.model.tiny import tiny_llama

    args = TrainingArguments(
        output_dir=str(tmp_path), deepspeed=str(CONFIGS / "zero3.json"), bf16=True,
        per_device_train_batch_size=2, gradient_accumulation_steps=4, use_cpu=True, report_to="none",
    )  # fmt: skip
    hf = args.hf_deepspeed_config
    model = tiny_llama(300)
    hf.trainer_config_finalize(
        args, model, num_training_steps=10
    )  # the "auto" values, as the trainer fills them
    policy = DeepSpeedConfig(hf.config)
    assert policy.zero_optimization_stage == 3 and policy.train_batch_size == 8
    ref = DeepSpeedConfig(reference_deepspeed_config(hf.config, model.config.hidden_size))
    assert ref.zero_optimization_stage == 3
    # the checker does reject a bad config (so passing it means something)
    bad = {**hf.config, "train_batch_size": 3}
    with pytest.raises(AssertionError):
        DeepSpeedConfig(bad)


CHILD = textwrap.dedent(
    """
    import copy, json, os, sys
    from types import SimpleNamespace
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[2])
    from tests.update.rows import weighted_rows, write_rows
    from tests.update.test_trainer import config, make_trainer
    from trace_realign.model.loading import load_model, load_tokenizer
    from trace_realign.update.data import TraceDataset, read_weighted, select_examples
    from trace_realign.update.presets import PRESETS
    from trace_realign.update.trainer import TraceTrainer
    from pathlib import Path
    import torch.distributed as dist
    from accelerate.utils import FullyShardedDataParallelPlugin
    from trace_realign.update.sharding import _shard_fsdp1, is_sharded, shard_fsdp2

    tmp, model_dir = Path(sys.argv[1]), sys.argv[3]
    rank = int(os.environ["RANK"])
    rows = weighted_rows(2)
    out = {}

    def loss_of(trainer, model, batch):
        return trainer.batch_loss(model, batch).loss

    # LoRA: the reference is the policy with its adapter off, run through the sharded policy
    for version in (2, 1):
        (tmp / f"lora{version}-{rank}").mkdir()
        # the same LoRA start on every rank (train() seeds before apply_lora; a sharded model whose
        # ranks started apart would mix their halves)
        torch.manual_seed(0)
        trainer, ds = make_trainer(tmp / f"lora{version}-{rank}", model_dir, rows, precompute_ref_log_probs=False)
        batch = trainer.data_collator(ds.items)
        model = trainer.model.eval()
        want = loss_of(trainer, model, batch).item()
        os.environ["FSDP_VERSION"] = str(version)
        plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* settings accelerate derives from our config
        if version == 2:
            sharded = shard_fsdp2(model, plugin)
        else:
            plugin.use_orig_params = True
            sharded = _shard_fsdp1(model, SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin), device=torch.device("cpu")))
        trainer.is_fsdp_enabled = True
        got = loss_of(trainer, sharded, batch)
        got.backward()
        grads = [p.grad for p in sharded.parameters() if p.requires_grad]
        out[f"lora_fsdp{version}"] = {"want": want, "got": got.item(), "sharded": is_sharded(sharded),
                                      "grads": all(g is not None for g in grads) and len(grads) > 0}
        del trainer, model, sharded

    # full fine-tuning: the frozen copy is sharded like the policy, not replicated
    cfg = config(tmp / f"full-{rank}", precompute_ref_log_probs=False, use_peft=False)
    (tmp / f"full-{rank}").mkdir(parents=True, exist_ok=True)
    sel = select_examples(read_weighted(write_rows(tmp / f"full-{rank}" / "w.jsonl", rows)), PRESETS["trace"], alpha_kl=cfg.alpha_kl)
    tok = load_tokenizer(model_dir)
    ds = TraceDataset(sel, tok, max_length=cfg.max_length)
    trainer = TraceTrainer(load_model(model_dir), cfg, ds, tok)
    with torch.no_grad():  # move the policy off θ_ref so the reference terms matter
        torch.manual_seed(1)
        for p in trainer.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    batch = trainer.data_collator(ds.items)
    model = trainer.model.eval()
    want = loss_of(trainer, model, batch).item()
    full_numel = sum(p.numel() for p in trainer.reference.copy.parameters())
    os.environ["FSDP_VERSION"] = "2"
    trainer.reference.copy = shard_fsdp2(trainer.reference.copy, FullyShardedDataParallelPlugin()).eval()
    local = sum(p.to_local().numel() for p in trainer.reference.copy.parameters())
    got = loss_of(trainer, model, batch).item()
    out["full_fsdp2"] = {"want": want, "got": got, "sharded": is_sharded(trainer.reference.copy),
                         "local_share": local / full_numel}
    if rank == 0:
        Path(sys.argv[4]).write_text(json.dumps(out))
    dist.barrier()
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
def test_two_process_fsdp_reference_on_cpu(tmp_path, tiny_model_dir):
    here = str(Path(__file__).resolve().parents[2])
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    _, fsdp_env = launch_env("fsdp-lora")
    fsdp_env = {k: v for k, v in fsdp_env.items() if k.startswith("FSDP_")}
    # accelerate's plugin places `sync_module_states`' buffers on an accelerator and refuses a CPU;
    # every rank here loads the same weights, so there is nothing to sync
    fsdp_env["FSDP_SYNC_MODULE_STATES"] = "false"
    env = {**os.environ, **fsdp_env, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "ACCELERATE_USE_CPU": "1", "TRACE_REALIGN_CACHE": str(tmp_path / "cache")}  # fmt: skip
    out = tmp_path / "out.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(29700 + os.getpid() % 1000), str(script), str(tmp_path), here,
           str(tiny_model_dir), str(out)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(out.read_text())
    for key in ("lora_fsdp2", "lora_fsdp1", "full_fsdp2"):
        r = res[key]
        assert r["sharded"], key
        assert r["got"] == pytest.approx(r["want"], rel=1e-5, abs=1e-6), key
    assert res["lora_fsdp2"]["grads"] and res["lora_fsdp1"]["grads"]
    # each of the two ranks holds about half of the reference copy
    assert res["full_fsdp2"]["local_share"] == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("engine", ["is_fsdp_enabled", "is_deepspeed_enabled"])
def test_no_precompute_under_fsdp_or_deepspeed(tmp_path, tiny_model_dir, monkeypatch, engine):
    """Under FSDP / DeepSpeed the main process must not run the reference alone before training (on the
    CPU under FSDP, a deadlock under ZeRO-3): the reference pass runs in the step instead."""
    from transformers import Trainer

    from .rows import weighted_rows
    from .test_trainer import make_trainer

    made = Trainer.create_accelerator_and_postprocess

    def as_if_sharded(self):
        made(self)
        setattr(self, engine, True)

    monkeypatch.setattr(Trainer, "create_accelerator_and_postprocess", as_if_sharded)
    trainer, ds = make_trainer(tmp_path, tiny_model_dir, weighted_rows(2))
    assert trainer.reference_stats["precomputed"] == 0 and "precompute_skipped" in trainer.reference_stats
    assert all(
        math.isnan(v) for it in ds.items for v in it["ref"]
    )  # nothing precomputed: NaN, computed in the step
