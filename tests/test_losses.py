"""The pure losses on hand-made tensors, and DPO/IPO against TRL 1.16's DPOTrainer."""

from __future__ import annotations

import math

import pytest
import torch

from trace_realign.losses import delta, npo_loss, preference_loss, robust_dpo_loss, token_kl


def sig(z: float) -> float:
    return 1 / (1 + math.exp(-z))


POL_POS = torch.tensor([-10.0, -3.0, -7.5])
REF_POS = torch.tensor([-11.0, -3.0, -6.0])
POL_NEG = torch.tensor([-12.0, -4.0, -5.0])
REF_NEG = torch.tensor([-11.5, -2.0, -5.5])


def test_delta_by_hand():
    # (pol_pos - ref_pos) - (pol_neg - ref_neg)
    assert delta(POL_POS, REF_POS, POL_NEG, REF_NEG).tolist() == [1.5, 2.0, -2.0]


def test_sigmoid_preference_loss_by_hand():
    beta = 0.3
    got = preference_loss(POL_POS, REF_POS, POL_NEG, REF_NEG, beta)
    want = [-math.log(sig(beta * d)) for d in (1.5, 2.0, -2.0)]
    assert got.tolist() == pytest.approx(want, rel=1e-6)


def test_ipo_loss_by_hand_sequence_and_per_token():
    beta = 0.5
    got = preference_loss(POL_POS, REF_POS, POL_NEG, REF_NEG, beta, "ipo")
    assert got.tolist() == pytest.approx([(d - 1.0) ** 2 for d in (1.5, 2.0, -2.0)], rel=1e-6)
    lens_pos, lens_neg = torch.tensor([2.0, 4.0, 3.0]), torch.tensor([1.0, 2.0, 5.0])
    got = preference_loss(POL_POS, REF_POS, POL_NEG, REF_NEG, beta, "ipo", pos_len=lens_pos, neg_len=lens_neg)
    want = [
        (1.0 / 2 - (-0.5) / 1 - 1.0) ** 2,
        (0.0 / 4 - (-2.0) / 2 - 1.0) ** 2,
        (-1.5 / 3 - 0.5 / 5 - 1.0) ** 2,
    ]
    assert got.tolist() == pytest.approx(want, rel=1e-6)


def test_unknown_loss_type_is_refused():
    with pytest.raises(ValueError, match="loss_type"):
        preference_loss(POL_POS, REF_POS, POL_NEG, REF_NEG, 0.1, "dpo")


def test_npo_by_hand_and_at_reference():
    beta = 0.3
    got = npo_loss(POL_POS, REF_POS, beta)
    want = [-math.log(sig(-beta * r)) for r in (1.0, 0.0, -1.5)]
    assert got.tolist() == pytest.approx(want, rel=1e-6)
    # at θ_ref the log-ratio is 0 and the loss is log 2 whatever β
    assert npo_loss(REF_POS, REF_POS, 5.0).tolist() == pytest.approx([math.log(2)] * 3)


def test_robust_dpo_by_hand_and_reduces_to_dpo():
    beta, eps = 0.3, 0.2
    got = robust_dpo_loss(POL_POS, REF_POS, POL_NEG, REF_NEG, beta, eps)
    want = [
        ((1 - eps) * -math.log(sig(beta * d)) - eps * -math.log(sig(-beta * d))) / (1 - 2 * eps)
        for d in (1.5, 2.0, -2.0)
    ]
    assert got.tolist() == pytest.approx(want, rel=1e-6)
    assert torch.allclose(
        robust_dpo_loss(POL_POS, REF_POS, POL_NEG, REF_NEG, beta, 0.0),
        preference_loss(POL_POS, REF_POS, POL_NEG, REF_NEG, beta),
    )
    with pytest.raises(ValueError, match="flip_rate"):
        robust_dpo_loss(POL_POS, REF_POS, POL_NEG, REF_NEG, beta, 0.5)


def test_gradient_at_reference_is_half_beta_times_logprob_gradients():
    # docs/method.md: at θ_ref Δ = 0 and ∂ℓ_pref/∂logπ(y+) = −β/2, ∂/∂logπ(y−) = +β/2
    beta = 0.3
    pos = torch.tensor([-4.0], requires_grad=True)
    neg = torch.tensor([-6.0], requires_grad=True)
    loss = preference_loss(pos, pos.detach(), neg, neg.detach(), beta)
    assert loss.item() == pytest.approx(math.log(2))
    gp, gn = torch.autograd.grad(loss.sum(), (pos, neg))
    assert gp.item() == pytest.approx(-beta / 2) and gn.item() == pytest.approx(beta / 2)


def test_token_kl_by_hand():
    ref = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [5.0, 5.0]]])  # one sequence, three positions, V=2
    pol = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [0.0, 9.0]]])
    mask = torch.tensor([[False, True, True]])

    def kl(p, q):
        return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))

    def soft(z):
        e = [math.exp(v) for v in z]
        return [v / sum(e) for v in e]

    want = (kl(soft([2, 0]), soft([0, 0])) + kl(soft([5, 5]), soft([0, 9]))) / 2
    assert token_kl(ref, pol, mask).tolist() == pytest.approx([want], rel=1e-5)
    assert token_kl(ref, ref, mask).tolist() == pytest.approx([0.0], abs=1e-7)
    assert token_kl(ref, pol, torch.zeros_like(mask)).tolist() == [0.0]


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_equals_trl_dpo_trainer(tiny_model_dir, tmp_path, loss_type):
    """Same tiny model, same batch: our loss on our log-probs equals TRL's DPOTrainer.compute_loss."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from trace_realign.model.logprobs import batch_logprobs

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    pol = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(1)
    with torch.no_grad():  # move the policy off the reference so Δ ≠ 0
        for p in pol.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pol.eval()
    rows = [
        {"prompt": "Is the sky blue?", "chosen": " Yes, mostly.", "rejected": " No."},
        {"prompt": "Name a fruit", "chosen": " An apple", "rejected": " A carrot is not one"},
        {"prompt": "2+2?", "chosen": " 4", "rejected": " five, I think"},
    ]
    beta = 0.3
    args = DPOConfig(
        output_dir=str(tmp_path),
        loss_type=[loss_type],
        beta=beta,
        per_device_train_batch_size=len(rows),
        report_to=[],
        use_cpu=True,
    )
    trainer = DPOTrainer(
        model=pol, ref_model=ref, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok
    )
    trainer.model.eval()
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch)

    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    ours_batch = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "labels": labels,
    }
    with torch.no_grad():
        pol_lp = batch_logprobs(pol, ours_batch)
        ref_lp = batch_logprobs(ref, ours_batch)
    n = len(rows)
    lens = batch["completion_mask"].sum(-1).float()
    ours = preference_loss(
        pol_lp[:n], ref_lp[:n], pol_lp[n:], ref_lp[n:], beta, loss_type, pos_len=lens[:n], neg_len=lens[n:]
    ).mean()
    assert abs(ours.item()) > 1e-4  # a real, non-trivial loss
    assert ours.item() == pytest.approx(trl_loss.item(), rel=1e-5, abs=1e-6)
