"""U2A and trace-no-triage's NPO impact: weights at the current parameters against a per-sample
computation, the sign of the update on a case solved by hand, rounds that change ω while J falls,
the two methods train different losses, and resume in the middle of a round."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from trace_realign.impact.scoring import (
    ScoredItem,
    ScoreOptions,
    current_coefficients,
    current_impacts,
    normalise_weights,
    objective_gradient,
    reference_coefficients,
)
from trace_realign.model.loading import (
    LoraOptions,
    apply_lora,
    load_model,
    load_tokenizer,
    trainable_parameters,
)
from trace_realign.model.tokenize import encode
from trace_realign.update.data import TraceDataset, read_weighted, select_examples
from trace_realign.update.presets import PRESETS
from trace_realign.update.trainer import TraceTrainer, train
from trace_realign.update.u2a import (
    example_item,
    multiplicative_update,
    objective_items,
    top_k,
)

from .rows import REFUSE, weighted_rows, write_rows
from .test_trainer import config

BETA = 0.3


def lora_model(tiny_model_dir, perturb: bool):
    torch.manual_seed(0)
    model = apply_lora(load_model(tiny_model_dir), LoraOptions(r=8, dropout=0.0))
    if perturb:  # away from θ_ref: the log-ratios, hence the coefficients, are no longer constants
        torch.manual_seed(1)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.3)
    return model.eval()


def seq_logp(model, tok, prompt, response):
    enc = encode(tok, prompt, response, max_length=512)
    logp = torch.log_softmax(model(input_ids=torch.tensor([enc.input_ids])).logits[0].float(), -1)
    s = enc.prompt_len
    return sum(logp[s + t - 1, enc.input_ids[s + t]] for t in range(enc.response_len))


def plain_loss(model, tok, it, ref):
    """ℓ_i written out from the formulas, one sequence at a time, against given reference values."""
    a = seq_logp(model, tok, it.prompt, it.a) - ref[0]
    if it.kind == "npo_a":
        return -F.logsigmoid(-BETA * a)
    b = seq_logp(model, tok, it.prompt, it.b) - ref[1]
    if it.kind == "npo":
        return -F.logsigmoid(-BETA * a) - F.logsigmoid(-BETA * b)
    return -F.logsigmoid(BETA * (a - b))


def references(model, tok, items):
    with torch.no_grad(), model.disable_adapter():
        return [
            (float(seq_logp(model, tok, it.prompt, it.a)), float(seq_logp(model, tok, it.prompt, it.b)))
            for it in items
        ]


def flat_grad(model, loss):
    params = list(trainable_parameters(model).values())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).flatten().double()
            for g, p in zip(grads, params, strict=True)
        ]
    )


OBJECTIVE = [
    ScoredItem(f"j{i}", f"Tell me about {i}.", f"A careful answer {i}.", f"No, {i}!") for i in range(4)
]
NEGATIVES = [
    ScoredItem("n0", "Tell me about 0.", "No, 0!", "No, 0!", "npo_a"),
    ScoredItem("n1", "Hurt someone", "Do it like this.", "Fine.", "npo"),
    ScoredItem("n2", "Tell me about 2.", "A careful answer 2.", "x", "npo_a"),
    ScoredItem("n3", "q3?", "old winner", "old loser", "pref"),
    ScoredItem("n4", [{"role": "user", "content": "q4?"}], "Sure thing.", "Sure thing.", "npo_a"),
]


@pytest.mark.parametrize(("mode", "rel"), [("exact", 1e-5), ("fd", 5e-3)])
def test_one_round_at_the_current_parameters_matches_per_sample(tiny_model_dir, mode, rel):
    tok = load_tokenizer(tiny_model_dir)
    model = lora_model(tiny_model_dir, perturb=True)
    ref_j, ref_n = references(model, tok, OBJECTIVE), references(model, tok, NEGATIVES)
    opts = ScoreOptions(mode=mode, beta=BETA, batch_size=3, max_length=512)
    direction, J = objective_gradient(model, tok, OBJECTIVE, ref_j, opts)
    raw, losses = current_impacts(model, tok, NEGATIVES, ref_n, direction, opts)

    # the reference computation: one backward per sample at the current parameters
    j_losses = [plain_loss(model, tok, it, r) for it, r in zip(OBJECTIVE, ref_j, strict=True)]
    g_J = flat_grad(model, sum(j_losses))
    want = [
        float(flat_grad(model, plain_loss(model, tok, it, r)) @ g_J)
        for it, r in zip(NEGATIVES, ref_n, strict=True)
    ]
    got_g = torch.cat([direction.grad[n].flatten().double() for n in trainable_parameters(model)])
    torch.testing.assert_close(got_g, g_J, rtol=1e-4, atol=1e-5 * float(g_J.abs().max()))
    assert pytest.approx(float(sum(j_losses)) / len(OBJECTIVE), rel=1e-5) == J
    scale = max(abs(w) for w in want)
    for g, w in zip(raw, want, strict=True):
        assert abs(g - w) <= rel * scale, (raw, want)
    for got_l, it, r in zip(losses, NEGATIVES, ref_n, strict=True):
        assert got_l == pytest.approx(float(plain_loss(model, tok, it, r)), rel=max(rel, 1e-4))
    # the θ_ref constants would be wrong here: the log-ratios are far from 0
    assert any(abs(lo - math.log(2)) > 0.05 for lo in losses)


def test_coefficients_at_the_reference_are_the_constants():
    zero = torch.zeros(3, dtype=torch.float64)
    for kind in ("pref", "npo"):
        ca, cb = current_coefficients([kind] * 3, zero, zero, zero, zero, BETA)
        want = reference_coefficients(kind, BETA)
        assert ca.tolist() == pytest.approx([want[0]] * 3) and cb.tolist() == pytest.approx([want[1]] * 3)
    ca, cb = current_coefficients(["npo_a"], zero[:1], zero[:1], zero[:1], zero[:1], BETA)
    assert (ca.item(), cb.item()) == pytest.approx((BETA / 2, 0.0))
    # away from the reference the NPO coefficient is β·σ(β·log-ratio), smaller as the response falls
    low = torch.tensor([-5.0], dtype=torch.float64)
    ca, _ = current_coefficients(["npo_a"], low, zero[:1], low, zero[:1], BETA)
    assert ca.item() == pytest.approx(BETA * torch.sigmoid(torch.tensor(-5 * BETA)).item())


def test_multiplicative_update_by_hand():
    e = math.e
    w = multiplicative_update([1.0, 1.0, 0.0], [1.0, -1.0, 5.0], 1.0, [True, True, False])
    assert w == pytest.approx([2 * e / (e + 1 / e), 2 / e / (e + 1 / e), 0.0])
    assert sum(w[:2]) / 2 == pytest.approx(1.0)
    assert multiplicative_update([1.0, 1.0], [1e6, -1e6], 1.0, [True, True])[1] > 0  # clamped above 0
    assert top_k([0.1, 0.5, -0.2, 0.5], 2) == [False, True, False, True]


def test_sign_on_two_negatives_known_by_hand(tiny_model_dir):
    """J prefers y+ over y− on one prompt; the negatives are y− and y+ themselves. At θ_ref,
    ∇J = −(β/2)(∇log π(y+) − ∇log π(y−)) and ∇ℓ_NPO(y) = (β/2)∇log π(y), so
    δω(y−) − δω(y+) = (β/2)²‖∇log π(y−) − ∇log π(y+)‖²/γ ≥ 0: unlearning y− helps J, unlearning y+
    hurts it. The update must raise ω(y−) above ω(y+), and top-1 must keep y−."""
    tok = load_tokenizer(tiny_model_dir)
    model = lora_model(tiny_model_dir, perturb=False)
    x, yp, ym = "Can you explain photosynthesis?", "Plants turn light into sugar.", REFUSE
    objective = [ScoredItem("j", x, yp, ym)]
    negatives = [ScoredItem("minus", x, ym, ym, "npo_a"), ScoredItem("plus", x, yp, yp, "npo_a")]
    opts = ScoreOptions(mode="exact", beta=BETA, max_length=512)
    direction, _ = objective_gradient(model, tok, objective, references(model, tok, objective), opts)
    raw, _ = current_impacts(model, tok, negatives, references(model, tok, negatives), direction, opts)
    gp = flat_grad(model, seq_logp(model, tok, x, yp))
    gm = flat_grad(model, seq_logp(model, tok, x, ym))
    by_hand = (BETA / 2) ** 2 * float(((gm - gp) ** 2).sum())
    assert raw[0] - raw[1] == pytest.approx(by_hand, rel=1e-4)
    assert raw[0] > 0 > raw[1]
    w = multiplicative_update([1.0, 1.0], raw, 1.0, [True, True])
    assert w[0] > 1 > w[1]
    assert top_k(raw, 1) == [True, False]


# ---- in the trainer ----------------------------------------------------------------------------


def make(tmp_path, tiny_model_dir, method, rows=None, **kw):
    rows = rows or weighted_rows()
    cfg = config(tmp_path, method, **kw)
    parsed = read_weighted(write_rows(tmp_path / "w.jsonl", rows))
    sel = select_examples(parsed, PRESETS[method], alpha_kl=cfg.alpha_kl)
    tok = load_tokenizer(tiny_model_dir)
    model = lora_model(tiny_model_dir, perturb=False).train()
    objective = objective_items(parsed, cfg.u2a_objective, cfg.u2a_objective_size, seed=cfg.seed)
    ds = TraceDataset(sel, tok, max_length=cfg.max_length)
    return TraceTrainer(model, cfg, ds, tok, ref_cache_dir=tmp_path / "refcache", objective=objective)


def test_u2a_selects_single_negatives():
    parsed = read_weighted_rows()
    sel = select_examples(parsed, PRESETS["u2a"], alpha_kl=0.1)
    # 4 INVERT (y_w flagged), 4 PUNISH (both), 4 RETAIN (y_l flagged): 16 single responses
    assert len(sel.examples) == 16
    assert all(e.neg is None and e.npo_pos and not e.npo_neg for e in sel.examples)
    assert {example_item(e).kind for e in sel.examples} == {"npo_a"}
    pairs = select_examples(parsed, PRESETS["npo-flagged"], alpha_kl=0.1)
    assert len(pairs.examples) == 12 and {example_item(e).kind for e in pairs.examples} == {"npo", "npo_a"}
    # the paper's no-triage ablation: every old loser alone
    losers = select_examples(parsed, PRESETS["trace-no-triage"], alpha_kl=0.1)
    assert len(losers.examples) == 12 and {example_item(e).kind for e in losers.examples} == {"npo_a"}


def read_weighted_rows():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        return read_weighted(write_rows(Path(d) / "w.jsonl", weighted_rows()))


U2A = dict(
    u2a_objective="relabelled",  # J prefers the compliant answers over the refusals u2a unlearns: it can fall
    u2a_eta=50.0,
    u2a_rounds=3,
    u2a_steps_per_round=3,
    max_steps=12,
    per_device_train_batch_size=4,
    learning_rate=5e-3,
    u2a_scoring="exact",
    train_sampling_strategy="random",  # the fixture was built on shuffled batches, not length-grouped ones
)


def test_rounds_change_the_weights_and_J_does_not_rise(tmp_path, tiny_model_dir):
    trainer = make(tmp_path, tiny_model_dir, "u2a", **U2A)
    trainer.train()
    hist = trainer.reweighting.history
    assert [h["round"] for h in hist] == [0, 1, 2, 3] and [h["step"] for h in hist] == [0, 3, 6, 9]
    Js = [h["J"] for h in hist]
    assert all(b < a for a, b in zip(Js, Js[1:], strict=False)), Js
    assert hist[0]["omega"]["min"] == hist[0]["omega"]["max"] == 1.0  # uniform after the top-k
    omegas = [h["omega"] for h in hist]
    assert all(a != b for a, b in zip(omegas, omegas[1:], strict=False))
    assert all(abs(o["mean"] - 1) < 1e-6 for o in omegas)
    assert sum("u2a/J" in h for h in trainer.state.log_history) == 4  # in the trainer's logs too
    assert sum("loss" in h for h in trainer.state.log_history) == 12  # and no step's loss log lost


def test_early_stop_when_J_stops_improving(tmp_path, tiny_model_dir):
    # with a threshold no fall can beat, the first round stops the run
    trainer = make(tmp_path, tiny_model_dir, "u2a", **{**U2A, "u2a_es_threshold": 1e9})
    trainer.train()
    assert trainer.state.global_step == 3 and trainer.stop_reason.startswith("u2a: J went from")


def test_top_k_keeps_only_k_negatives(tmp_path, tiny_model_dir):
    trainer = make(tmp_path, tiny_model_dir, "u2a", **{**U2A, "u2a_top_k": 5, "max_steps": 3})
    trainer.train()
    w = trainer.example_weights
    assert int((w > 0).sum()) == 5 and trainer.reweighting.history[0]["kept"] == 5


def test_no_triage_weights_are_the_impact_of_its_npo_term(tmp_path, tiny_model_dir):
    trainer = make(tmp_path, tiny_model_dir, "trace-no-triage", max_steps=1, u2a_scoring="exact")
    tok, model = trainer.processing_class, trainer.model
    items = [example_item(e) for e in trainer.train_dataset.selection.examples]
    objective = trainer.reweighting.objective
    model.eval()
    g_J = flat_grad(
        model,
        sum(
            plain_loss(model, tok, it, r)
            for it, r in zip(objective, references(model, tok, objective), strict=True)
        ),
    )
    raw = [
        float(flat_grad(model, plain_loss(model, tok, it, r)) @ g_J)
        for it, r in zip(items, references(model, tok, items), strict=True)
    ]
    model.train()
    trainer.train()
    want = normalise_weights(raw)
    assert trainer.example_weights.tolist() == pytest.approx(want, rel=1e-4, abs=1e-6)
    # not the file's impact weights (those are the impact of TRACE's loss)
    assert sorted(trainer.example_weights.tolist()) != pytest.approx(
        sorted(r.get("impact_weight") or 1.0 for r in weighted_rows())
    )


def test_u2a_and_no_triage_train_different_losses(tmp_path, tiny_model_dir):
    path = write_rows(tmp_path / "w.jsonl", weighted_rows())
    kw = dict(max_steps=2, per_device_train_batch_size=16, save_strategy="no")
    a = train(tiny_model_dir, path, config(tmp_path, "u2a", **kw))
    b = train(tiny_model_dir, path, config(tmp_path, "trace-no-triage", **kw))
    la = [h["loss"] for h in a["log_history"] if "loss" in h]
    lb = [h["loss"] for h in b["log_history"] if "loss" in h]
    assert la and lb and abs(la[0] - lb[0]) > 1e-3
    assert a["data"]["examples"] == 16 and b["data"]["examples"] == 12
    assert a["reweighting"]["schedule"] == "u2a" and b["reweighting"]["schedule"] == "once"


def test_resume_mid_round_restores_omega_and_next_weights(tmp_path, tiny_model_dir):
    from transformers import TrainerCallback

    class Record(TrainerCallback):
        def __init__(self, trainer):
            self.trainer, self.seen = trainer, {}

        def on_step_end(self, args, state, control, **kw):
            self.seen[state.global_step] = list(self.trainer.reweighting.omega)

    kw = {**U2A, "save_strategy": "steps", "save_steps": 4, "output_dir": str(tmp_path / "full")}
    full = make(tmp_path, tiny_model_dir, "u2a", **kw)
    rec = Record(full)
    full.add_callback(rec)
    full.train()
    # a run that crashed after its step-4 checkpoint, in the middle of round 1 (rounds at 3, 6, 9)
    shutil.copytree(tmp_path / "full" / "checkpoint-4", tmp_path / "crashed" / "checkpoint-4")
    crashed = make(tmp_path, tiny_model_dir, "u2a", **{**kw, "output_dir": str(tmp_path / "crashed")})
    rec2 = Record(crashed)
    crashed.add_callback(rec2)
    crashed.train(resume_from_checkpoint=True)
    assert crashed.reweighting.round == 3
    assert rec2.seen[5] == pytest.approx(rec.seen[4], abs=0)  # restored exactly
    for step in (6, 9):  # the next estimates equal the uninterrupted run's
        assert rec2.seen[step] == pytest.approx(rec.seen[step], rel=1e-4, abs=1e-6)
    assert rec.seen[6] != pytest.approx(rec.seen[5])


def _chat(rows):
    """The same rows with conversational prompts (TRL's form: a list of messages)."""
    out = []
    for r in rows:
        r = dict(r)
        r["prompt"] = [{"role": "system", "content": "Be helpful."}, {"role": "user", "content": r["prompt"]}]
        out.append(r)
    return out


@pytest.mark.parametrize("method", ["u2a", "trace-no-triage", "npo-flagged"])
def test_conversational_prompts_run_through_the_methods_that_weigh_themselves(
    tmp_path, tiny_model_dir, method
):
    """A chat prompt is a list of messages: the reference log-probabilities these methods compute
    once must not key on it as a tuple (it is not hashable)."""
    from trace_realign.errors import InputError

    path = write_rows(tmp_path / "w.jsonl", _chat(weighted_rows(2)))
    extra = {"u2a_rounds": 1, "u2a_top_k_fraction": 0.5, "u2a_eta_per_sd": 1.0} if method == "u2a" else {}
    try:
        summary = train(tiny_model_dir, path, config(tmp_path, method, max_steps=2, **extra))
    except InputError as exc:
        # on a random tiny model every NPO impact may clamp to 0: the estimate ran on the chat prompts
        assert "impact weights are 0" in str(exc) and method != "u2a"
        return
    assert summary["global_step"] >= 1 and summary["reweighting"]["examples"] > 0
    assert all(math.isfinite(h["loss"]) for h in summary["log_history"] if "loss" in h)


def test_u2a_keeps_a_share_of_the_negatives_scales_eta_and_ends_at_its_best_j(tmp_path, tiny_model_dir):
    """U2A as its authors run it: top-k a share of the negatives, η set so that η·sd(δω) is 1, its
    NPO form (per token, its own β, 2/β), several rounds, and the parameters of the lowest J kept."""
    path = write_rows(tmp_path / "w.jsonl", weighted_rows(3))
    cfg = config(
        tmp_path, "u2a", max_steps=6, u2a_rounds=2, u2a_top_k_fraction=0.5, u2a_eta_per_sd=1.0,
        u2a_npo_form="u2a", u2a_es_threshold=-1e9, learning_rate=5e-2,
    )  # fmt: skip
    summary = train(tiny_model_dir, path, cfg)
    rw = summary["reweighting"]
    assert rw["kept"] == round(0.5 * rw["examples"])
    updates = [r for r in rw["rounds"] if "eta" in r]
    assert updates and all(r["eta"] > 0 for r in updates)
    assert rw["final_J"] is not None and rw["best_J"]["J"] <= min(r["J"] for r in rw["rounds"]) + 1e-12
    if rw["restored_best"]:
        assert rw["restored_best"]["J_at_stop"] > rw["best_J"]["J"]


def test_u2a_npo_form_is_per_token_with_its_own_beta():
    from trace_realign.losses import NpoForm, npo_loss, term_losses

    pol, ref = torch.tensor([-12.0, -30.0]), torch.tensor([-10.0, -24.0])
    length = torch.tensor([4, 12])
    form = NpoForm.u2a(0.1)
    got = term_losses(torch.tensor([1, 1]), pol, ref, pol, ref, beta=0.3, npo=form, len_a=length, len_b=length,
                      npo_b=torch.tensor([False, False]))  # fmt: skip
    want = -(2 / 0.1) * F.logsigmoid(-0.1 * (pol - ref) / length)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(npo_loss(pol, ref, 0.3), -F.logsigmoid(-0.3 * (pol - ref)))
