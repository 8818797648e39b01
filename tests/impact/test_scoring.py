"""Impact scoring: exact and fd against the naive oracle, the θ_ref identities, invariances, errors."""

from __future__ import annotations

import random

import pytest
import torch

from trace_realign.errors import InputError
from trace_realign.impact.scoring import (
    ScoredItem,
    ScoreOptions,
    conflict_impacts,
    conflict_item,
    gold_gradient,
    impact_weights,
    normalise_weights,
    reference_coefficients,
)
from trace_realign.losses import preference_loss
from trace_realign.model.loading import LoraOptions, Reference, apply_lora, trainable_parameters
from trace_realign.model.logprobs import batch_logprobs
from trace_realign.model.tiny import tiny_llama, tiny_tokenizer
from trace_realign.model.tokenize import collate, encode_many, pad_id
from trace_realign.schema import Category

BETA = 0.3


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def make_model(tok, lora: bool):
    torch.manual_seed(0)
    model = tiny_llama(len(tok), seed=0)
    if lora:
        # the paper's dropout stays on: scoring must switch it off itself
        model = apply_lora(model, LoraOptions(r=4, alpha=8, dropout=0.1))
    return model


GOLD = [
    ScoredItem(f"g{i}", f"Tell me about topic {i}.", f"Here is a careful answer {i}.", f"No way, {i}!")
    for i in range(5)
]


def conflicts() -> list[ScoredItem]:
    out = []
    for i in range(9):
        cat = Category.INVERT if i % 3 == 0 else Category.PUNISH
        correction = f"A safe alternative {i}." if i % 3 == 1 else None
        prompt = (
            [{"role": "system", "content": "Be kind."}, {"role": "user", "content": f"q{i}?"}]
            if i == 4
            else f"q{i}?"
        )
        out.append(
            conflict_item(
                f"c{i}", prompt, f"old winner {i} " * (1 + i % 2), f"old loser {i}", cat, correction
            )
        )
    return out


def test_conflict_items_follow_algorithm_1():
    inv = conflict_item("a", "x", "yw", "yl", Category.INVERT)
    pun = conflict_item("b", "x", "yw", "yl", Category.PUNISH)
    cor = conflict_item("c", "x", "yw", "yl", Category.PUNISH, "yc")
    assert (inv.a, inv.b, inv.kind) == ("yl", "yw", "pref")
    assert (pun.a, pun.b, pun.kind) == ("yw", "yl", "npo")
    assert (cor.a, cor.b, cor.kind) == ("yc", "yw", "pref")
    with pytest.raises(ValueError):
        conflict_item("d", "x", "yw", "yl", Category.RETAIN)


def test_reference_coefficients():
    assert reference_coefficients("pref", BETA) == pytest.approx((-BETA / 2, BETA / 2))
    assert reference_coefficients("pref", BETA, "ipo") == pytest.approx((-1 / BETA, 1 / BETA))
    assert reference_coefficients("npo", BETA) == pytest.approx((BETA / 2, BETA / 2))


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_exact_and_fd_match_the_naive_oracle(tok, lora):
    model = make_model(tok, lora)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    items = conflicts()
    assert {it.kind for it in items} == {"pref", "npo"} and any(it.a.startswith("A safe") for it in items)
    out = {}
    for mode in ("naive", "exact", "fd"):
        opts = ScoreOptions(mode=mode, beta=BETA, batch_size=4)
        gold = gold_gradient(model, tok, GOLD, opts, exact_reference=mode == "naive", progress=False)
        out[mode] = torch.tensor(
            list(conflict_impacts(model, tok, items, gold, opts, progress=False).values())
        )
    naive = out["naive"].double()
    assert (naive > 0).any() and (naive < 0).any()  # a real spread, not a constant
    scale = naive.abs().max()
    assert ((out["exact"] - naive).abs() <= 1e-5 * scale).all()
    assert ((out["exact"] - naive).norm() / naive.norm()).item() < 1e-5
    assert ((out["fd"] - naive).norm() / naive.norm()).item() < 5e-3
    # per kind too: INVERT, NPO-PUNISH and corrected PUNISH
    for idx in ([0, 3, 6], [2, 5, 8], [1, 4, 7]):
        sub = torch.tensor(idx)
        assert ((out["exact"][sub] - naive[sub]).norm() / naive[sub].norm()).item() < 1e-5
    for n, p in model.named_parameters():  # fd restored every parameter exactly
        assert torch.equal(p, before[n]), n
    assert model.training  # the caller's mode is restored


def test_at_theta_ref_delta_is_zero_and_the_gradient_is_half_beta(tok):
    model = make_model(tok, lora=True)
    model.eval()
    params = list(trainable_parameters(model).values())
    encs = encode_many(tok, [("Is it ok?", "Yes, gladly."), ("Is it ok?", "Never.")])
    batch = collate(encs, pad_id(tok))
    with Reference(model)() as ref, torch.no_grad():
        ref_lp = batch_logprobs(ref, batch)
    lp = batch_logprobs(model, batch)
    assert lp[0].item() == ref_lp[0].item() and lp[1].item() == ref_lp[1].item()  # Δ = 0 exactly
    loss = preference_loss(lp[:1], ref_lp[:1], lp[1:], ref_lp[1:], BETA).sum()
    g_loss = torch.autograd.grad(loss, params, retain_graph=True)
    g_pos = torch.autograd.grad(lp[0], params, retain_graph=True)
    g_neg = torch.autograd.grad(lp[1], params)
    scale = max(g.abs().max().item() for g in g_loss)
    assert scale > 0
    for gl, gp, gn in zip(g_loss, g_pos, g_neg, strict=True):  # float32 cancellation in gp - gn: scaled atol
        torch.testing.assert_close(gl, -(BETA / 2) * (gp - gn), rtol=1e-5, atol=1e-6 * scale)


def test_gold_gradient_identity_equals_real_reference(tok):
    model = make_model(tok, lora=True)
    opts = ScoreOptions(beta=BETA, batch_size=2)
    fast = gold_gradient(model, tok, GOLD, opts, progress=False)
    slow = gold_gradient(model, tok, GOLD, opts, exact_reference=True, progress=False)
    assert fast.n_items == len(GOLD) and fast.norm > 0
    # the two sum the same terms in a different order: float32 rounding near zero, so the absolute
    # tolerance follows the gradient's scale (an AVX2 CPU missed a fixed 1e-9 by 1e-8 on one element)
    scale = max(g.abs().max().item() for g in slow.grad.values())
    for n in fast.grad:
        torch.testing.assert_close(fast.grad[n], slow.grad[n], rtol=1e-5, atol=1e-6 * scale)
    # with LoRA at B = 0 only the B matrices get a gradient (docs/method.md)
    assert all(fast.grad[n].abs().sum() == 0 for n in fast.grad if "lora_A" in n)


@pytest.mark.parametrize("mode", ["exact", "fd"])
def test_weights_do_not_depend_on_batch_size_or_order(tok, mode):
    model = make_model(tok, lora=True)
    items = conflicts()
    opts = ScoreOptions(mode=mode, beta=BETA, batch_size=4)
    gold = gold_gradient(model, tok, GOLD, opts, progress=False)
    ref = conflict_impacts(model, tok, items, gold, opts, progress=False)
    shuffled = items[:]
    random.Random(1).shuffle(shuffled)
    for bs, order in ((1, items), (9, shuffled), (3, shuffled)):
        got = conflict_impacts(
            model, tok, order, gold, ScoreOptions(mode=mode, beta=BETA, batch_size=bs), progress=False
        )
        assert list(got) == [it.id for it in order]
        tol = 1e-5 if mode == "exact" else 5e-3
        scale = max(abs(v) for v in ref.values())
        assert all(abs(got[k] - ref[k]) <= tol * scale for k in ref)


def test_resume_skips_done_items_and_reports_each_batch(tok):
    model = make_model(tok, lora=True)
    items = conflicts()
    opts = ScoreOptions(mode="exact", beta=BETA, batch_size=4)
    gold = gold_gradient(model, tok, GOLD, opts, progress=False)
    full = conflict_impacts(model, tok, items, gold, opts, progress=False)
    seen: list[dict[str, float]] = []
    done = {"c0": full["c0"], "c1": full["c1"]}
    got = conflict_impacts(model, tok, items, gold, opts, done=done, on_batch=seen.append, progress=False)
    assert got == pytest.approx(full)
    assert [len(b) for b in seen] == [4, 3] and "c0" not in {k for b in seen for k in b}


def test_normalisation_by_hand():
    raw = [2.0, -1.0, 6.0, 0.0]
    assert normalise_weights(raw, normalisation="paper") == pytest.approx([0.25, 0.0, 0.75, 0.0])
    mean = normalise_weights(raw, normalisation="mean")
    assert mean == pytest.approx([1.0, 0.0, 3.0, 0.0]) and sum(mean) / len(mean) == pytest.approx(1.0)
    assert normalise_weights(raw, gamma=7.0) == pytest.approx(mean)  # γ > 0 cancels under normalisation
    assert normalise_weights([-1.0, -2.0]) == [0.0, 0.0]


def test_impact_weights_end_to_end_and_errors(tok):
    model = make_model(tok, lora=True)
    w = impact_weights(model, tok, conflicts(), GOLD, ScoreOptions(mode="exact", beta=BETA), progress=False)
    assert len(w) == 9 and min(w.values()) >= 0
    assert sum(w.values()) / len(w) == pytest.approx(1.0)
    with pytest.raises(InputError, match="no conflicts"):
        impact_weights(model, tok, [], GOLD, progress=False)
    with pytest.raises(InputError, match="gold batch is empty"):
        impact_weights(model, tok, conflicts(), [], progress=False)
    with pytest.raises(InputError, match="mode"):
        ScoreOptions(mode="fast")
    with pytest.raises(InputError, match="normalisation"):
        ScoreOptions(normalisation="sum")
    broken = tiny_tokenizer()
    broken.chat_template = (
        "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}>>{% endif %}"
    )
    with pytest.raises(InputError, match="response boundary"):
        impact_weights(model, broken, conflicts(), GOLD, progress=False)


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_scores_equal_the_plain_full_logits_path(tok, lora, monkeypatch):
    """The memory work (chunked log-probabilities, g_J accumulated in .grad, fd moving the weights in
    place) changes no score: g_J and every mode's impacts equal those of full-vocabulary logits (1e-6)."""
    from trace_realign.impact import scoring
    from trace_realign.model.logprobs import forward_logits, sequence_logprobs

    def plain(model, batch):
        return sequence_logprobs(forward_logits(model, batch), batch["labels"])

    model = make_model(tok, lora)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    items = conflicts()
    results = {}
    for path in ("chunked", "plain"):
        if path == "plain":
            monkeypatch.setattr(scoring, "response_logprobs", plain)
        for mode in ("exact", "fd"):
            opts = ScoreOptions(mode=mode, beta=BETA, batch_size=4)
            gold = gold_gradient(model, tok, GOLD, opts, progress=False)
            raw = conflict_impacts(model, tok, items, gold, opts, progress=False)
            results[path, mode] = (gold.grad, torch.tensor(list(raw.values()), dtype=torch.float64))
    for mode in ("exact", "fd"):
        (g_new, w_new), (g_old, w_old) = results["chunked", mode], results["plain", mode]
        for n in g_old:
            assert torch.allclose(g_new[n], g_old[n], rtol=1e-6, atol=1e-6 * g_old[n].abs().max().item()), n
        change = ((w_new - w_old).norm() / w_old.norm()).item()
        if mode == "exact":
            assert change < 1e-6
        else:
            # a central difference divides float32 rounding of the log-probabilities by 2h: any change in
            # summation order moves fd by ~1e-4 (as batch size and order do); it must stay well inside
            # fd's own error against the exact values, and no worse than the plain path's
            exact = results["plain", "exact"][1]
            err_new = ((w_new - exact).norm() / exact.norm()).item()
            err_old = ((w_old - exact).norm() / exact.norm()).item()
            assert change < 1e-3 and err_new < 5e-3 and err_new < 2 * err_old + 1e-6, (
                change,
                err_new,
                err_old,
            )
        assert all(p.grad is None for p in model.parameters())  # g_J left no .grad behind
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n


def test_gold_gradient_does_not_depend_on_its_backward_batches(tok):
    """g_J is a sum over the gold items: smaller backward passes (the memory bound) give the same sum."""
    model = make_model(tok, lora=True)
    grads = [
        gold_gradient(model, tok, GOLD, ScoreOptions(batch_size=8, grad_batch_size=k), progress=False).grad
        for k in (1, 2, 5)
    ]
    assert ScoreOptions(batch_size=8).gradient_batch_size == 4
    for g in grads[1:]:
        for n, t in g.items():
            assert torch.allclose(t, grads[0][n], rtol=1e-6, atol=1e-6 * grads[0][n].abs().max().item()), n
    with pytest.raises(InputError, match="grad batch size"):
        ScoreOptions(grad_batch_size=0)
