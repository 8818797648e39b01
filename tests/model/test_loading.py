"""Loading, LoRA, adapters, and the reference model (adapter off, or a frozen copy)."""

from __future__ import annotations

import pytest
import torch

from trace_realign.errors import InputError
from trace_realign.model.loading import (
    LoraOptions,
    Reference,
    apply_lora,
    is_peft,
    load_model,
    load_tokenizer,
    trainable_parameters,
)

IDS = torch.tensor([[5, 60, 70, 80, 90, 100]])


def _logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def test_load_model_options(tiny_model_dir):
    model = load_model(tiny_model_dir, dtype="bfloat16", attn_implementation="eager")
    tok = load_tokenizer(tiny_model_dir)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert model.config._attn_implementation == "eager"
    assert tok.chat_template
    with pytest.raises(InputError, match="dtype"):
        load_model(tiny_model_dir, dtype="float8")
    with pytest.raises(InputError):
        load_model("/nonexistent/model/dir")


def test_lora_defaults_are_the_papers_and_only_lora_trains(tiny_model_dir):
    opts = LoraOptions()
    assert (opts.r, opts.alpha, opts.dropout, opts.target_modules) == (32, 16, 0.1, ["q_proj", "v_proj"])
    base = load_model(tiny_model_dir)
    before = _logits(base)
    model = apply_lora(base, LoraOptions(r=4, alpha=8, dropout=0.0))
    assert is_peft(model)
    names = list(trainable_parameters(model))
    assert names and all("lora_" in n for n in names)
    assert any("q_proj" in n for n in names) and any("v_proj" in n for n in names)
    assert torch.equal(_logits(model), before)  # B = 0: exactly θ_ref
    with pytest.raises(InputError):
        apply_lora(load_model(tiny_model_dir), LoraOptions(target_modules=["no_such_module"]))


def test_reference_under_peft_is_the_adapter_switched_off(tiny_model_dir):
    model = apply_lora(load_model(tiny_model_dir), LoraOptions(r=4, dropout=0.0))
    base_logits = _logits(model)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(0.5)
    assert not torch.allclose(_logits(model), base_logits)
    ref = Reference(model)
    assert ref.copy is None  # no second copy of the network
    model.train()
    with ref() as m:
        assert m is model and not m.training
        assert torch.allclose(_logits(m), base_logits)
    assert model.training  # training mode restored
    assert not torch.allclose(_logits(model), base_logits)  # adapter back on


def test_reference_for_full_finetuning_is_a_frozen_copy(tiny_model_dir):
    model = load_model(tiny_model_dir)
    before = _logits(model)
    ref = Reference(model)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.1)
    with ref() as m:
        assert m is not model and not any(p.requires_grad for p in m.parameters())
        assert torch.equal(_logits(m), before)


def test_adapter_folder_loads_merged_on_its_base(tiny_model_dir, tmp_path):
    model = apply_lora(load_model(tiny_model_dir), LoraOptions(r=4, dropout=0.0))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    want = _logits(model)
    model.save_pretrained(tmp_path / "adapter")  # records base_model_name_or_path = tiny_model_dir
    loaded = load_model(tmp_path / "adapter")
    assert not is_peft(loaded)
    assert torch.allclose(_logits(loaded), want, atol=1e-5)
    assert load_tokenizer(tmp_path / "adapter").chat_template  # falls back to the base's tokenizer


def test_stages_without_a_trainer_place_models_on_this_process_accelerator():
    """Scoring, evaluation and the model judge use `compute_device`: this process's accelerator,
    the CPU on a machine without one."""
    import torch

    from trace_realign.model.loading import compute_device

    want = (
        torch.accelerator.current_accelerator() if torch.accelerator.is_available() else torch.device("cpu")
    )
    assert compute_device().type == want.type
