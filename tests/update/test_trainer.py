"""TraceTrainer on the tiny model: the batched loss against a per-sample computation, every preset
learns, INVERT margins turn, the RETAIN KL anchors, resume equals an uninterrupted run, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from trace_realign.cli import main
from trace_realign.losses import KL, NPO, PREF
from trace_realign.update.config import TraceConfig
from trace_realign.update.data import TraceDataset, read_weighted, select_examples
from trace_realign.update.presets import PRESETS
from trace_realign.update.trainer import TraceTrainer, hybrid_loss, train
from trace_realign.update.u2a import objective_items

from .rows import weighted_rows, write_rows


def config(tmp_path, method="trace", **kw):
    base = dict(
        output_dir=str(tmp_path / method),
        method=method,
        max_steps=12,
        per_device_train_batch_size=6,
        learning_rate=5e-3,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        lora_r=8,
        lora_dropout=0.0,
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
    )
    return TraceConfig(**{**base, **kw})


def make_trainer(tmp_path, tiny_model_dir, rows, method="trace", perturb=True, **kw):
    from trace_realign.model.loading import LoraOptions, apply_lora, load_model, load_tokenizer

    cfg = config(tmp_path, method, **kw)
    parsed = read_weighted(write_rows(tmp_path / "w.jsonl", rows))
    sel = select_examples(parsed, PRESETS[method], alpha_kl=cfg.alpha_kl)
    objective = None
    if PRESETS[method].weights in ("npo-impact", "u2a"):  # the methods that estimate their own weights
        objective = objective_items(parsed, cfg.u2a_objective, cfg.u2a_objective_size, seed=cfg.seed)
    tok = load_tokenizer(tiny_model_dir)
    model = apply_lora(load_model(tiny_model_dir), LoraOptions(r=8, dropout=0.0))
    if perturb:  # move the policy away from θ_ref so every loss term and the KL are non-trivial
        torch.manual_seed(1)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.3)
    ds = TraceDataset(sel, tok, max_length=cfg.max_length)
    trainer = TraceTrainer(model, cfg, ds, tok, ref_cache_dir=tmp_path / "refcache", objective=objective)
    return trainer, ds


def plain_logp_and_logits(model, enc):
    ids = torch.tensor([enc.input_ids])
    logits = model(input_ids=ids).logits[0]
    logp = torch.log_softmax(logits.float(), -1)
    start = enc.prompt_len  # response token t sits at position start + t, predicted by the position before
    lp = sum(logp[start + t - 1, enc.input_ids[start + t]] for t in range(enc.response_len))
    return lp, logp[start - 1 : start - 1 + enc.response_len]


def per_sample_loss(model, item, beta, alpha_kl, rpo_alpha=0.0):
    """The hybrid loss of one example, written out from docs/method.md's formulas one sequence at a time
    (`rpo_alpha`: plus that times the per-token NLL of the preferred response)."""
    pol, ref, pol_rows, ref_rows = [], [], [], []
    for enc in item["seqs"]:
        lp, rows = plain_logp_and_logits(model, enc)
        with torch.no_grad(), model.disable_adapter():
            rlp, rrows = plain_logp_and_logits(model, enc)
        pol.append(lp), ref.append(rlp), pol_rows.append(rows), ref_rows.append(rrows)
    if item["kind"] == PREF:
        d = (pol[0] - ref[0]) - (pol[1] - ref[1])
        return -F.logsigmoid(beta * d) - rpo_alpha * pol[0] / item["seqs"][0].response_len
    if item["kind"] == NPO:
        loss = 0.0
        for k, flagged in enumerate(item["npo"]):
            if flagged:
                loss = loss - F.logsigmoid(-beta * (pol[k] - ref[k]))
        return loss
    p_ref, lp_pol = ref_rows[0].exp(), pol_rows[0]
    kl = (p_ref * (ref_rows[0] - lp_pol)).sum(-1).mean()
    return alpha_kl * kl


def test_batched_loss_equals_per_sample_reference(tmp_path, tiny_model_dir):
    rows = weighted_rows(3, corrections=False)
    rows[1]["correction"] = "I will not, but here is help."  # one PUNISH row as oracle ℓ_pref
    for r in rows:  # the weights of trace-oracle's loss, as the score stage writes them
        r["impact_weight_corrected"] = None if r["impact_weight"] is None else 2 * r["impact_weight"]
    trainer, ds = make_trainer(
        tmp_path, tiny_model_dir, rows, "trace-oracle", precompute_ref_log_probs=False, alpha_kl=0.5
    )
    model = trainer.model
    model.eval()
    assert {it["kind"] for it in ds.items} == {PREF, NPO, KL}
    batch = trainer.data_collator(ds.items)
    got = trainer.batch_loss(model, batch).loss
    want = sum(it["weight"] * per_sample_loss(model, it, 0.3, 0.5) for it in ds.items) / len(ds)
    assert got.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-7)
    # gradients agree too
    grads = torch.autograd.grad(got, [p for p in model.parameters() if p.requires_grad])
    want2 = sum(it["weight"] * per_sample_loss(model, it, 0.3, 0.5) for it in ds.items) / len(ds)
    ref_grads = torch.autograd.grad(want2, [p for p in model.parameters() if p.requires_grad])
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["trace", "naive-oracle-dpo"])
def test_chunked_head_pass_equals_the_full_logits_pass(tmp_path, tiny_model_dir, monkeypatch, method):
    """The policy pass through `chunked_head_logprobs` (full logits for the KL rows only) gives the loss
    and gradients of one forward pass that returns every row's logits, with and without KL rows."""
    import trace_realign.model.logprobs as logprobs_module

    rows = weighted_rows(3, corrections=False)
    trainer, ds = make_trainer(
        tmp_path, tiny_model_dir, rows, method, precompute_ref_log_probs=False, alpha_kl=0.5
    )
    model = trainer.model
    model.eval()
    assert logprobs_module.decoder_and_head(model) is not None  # the chunked route is the one taken
    batch = trainer.data_collator(ds.items)
    assert (batch["kind"] == KL).any() == (method == "trace")
    params = [p for p in model.parameters() if p.requires_grad]
    chunked = trainer.batch_loss(model, batch).loss
    chunked_grads = torch.autograd.grad(chunked, params)
    monkeypatch.setattr(logprobs_module, "decoder_and_head", lambda m: None)
    full = trainer.batch_loss(model, batch).loss
    full_grads = torch.autograd.grad(full, params)
    # both passes change route here (the reference's too), so their float rounding no longer cancels in
    # Δ: summed log-probabilities of ~150 nats carry ~1e-5 of float32 rounding, ~2e-6 of this loss
    assert chunked.item() == pytest.approx(full.item(), rel=1e-5, abs=1e-7)
    for g, r in zip(chunked_grads, full_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


def conversational(rows):
    """The rows with every other prompt as a system and a user message (a chat-template prompt)."""
    system = {"role": "system", "content": "Answer in one sentence."}
    return [
        {**r, "prompt": [system, {"role": "user", "content": r["prompt"]}]} if i % 2 else r
        for i, r in enumerate(rows)
    ]


def relative_error(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def count_shared_rows(monkeypatch):
    """Record how many rows each call of `shared_prompt_logprobs` ran (the path is really taken)."""
    import trace_realign.model.logprobs as logprobs_module

    calls = []
    shared = logprobs_module.shared_prompt_logprobs

    def counted(decoder, head, ids, attn, labels, groups, *args, **kwargs):
        calls.append(sum(len(g) for g in groups))
        return shared(decoder, head, ids, attn, labels, groups, *args, **kwargs)

    monkeypatch.setattr(logprobs_module, "shared_prompt_logprobs", counted)
    return calls


def shared_and_plain(trainer, model, batch):
    """Per-sequence log-probabilities, the loss and its gradients, with and without `shared_prompt`."""
    from trace_realign.model.logprobs import logprobs_and_logits

    params = [p for p in model.parameters() if p.requires_grad]
    ids, attn, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    out = {}
    for share in (True, False):
        trainer.args.shared_prompt = share
        with torch.no_grad():
            logps = logprobs_and_logits(model, ids, attn, labels, share_prompts=share)[0]
        loss = trainer.batch_loss(model, batch)
        out[share] = (logps, loss, torch.autograd.grad(loss.loss, params))
    return out


@pytest.mark.parametrize("method", ["trace", "trace-oracle", "naive-oracle-dpo", "u2a"])
def test_shared_prompt_pass_equals_one_pass_per_sequence(tmp_path, tiny_model_dir, monkeypatch, method):
    """A prompt run once for the responses that share it (its key/value cache, kept with its gradients)
    gives what one forward pass per sequence gives, in both the policy and the reference pass: every
    sequence's log-probability, the loss, each example's rewards and the gradient of every LoRA tensor,
    to 1e-5 relative in float32. Batches of INVERT pairs, dual-NPO PUNISH pairs and RETAIN KL rows
    (trace), oracle PUNISH pairs (trace-oracle), relabelled pairs (naive-oracle-dpo) and single
    negatives, two of which share each PUNISH prompt (u2a); prompts of different lengths, every other
    one conversational (a system and a user message)."""
    rows = conversational(weighted_rows(3, corrections=method == "trace-oracle"))
    trainer, ds = make_trainer(
        tmp_path, tiny_model_dir, rows, method, precompute_ref_log_probs=False, alpha_kl=0.5
    )
    assert trainer.shared_prompt == "on: policy and reference passes"
    model = trainer.model
    model.eval()
    batch = trainer.data_collator(ds.items)
    calls = count_shared_rows(monkeypatch)
    out = shared_and_plain(trainer, model, batch)
    # the rows that share a prompt: both responses of every pair, or u2a's negatives of one PUNISH row
    shared_rows = 2 * sum(len(it["seqs"]) == 2 for it in ds.items) if method != "u2a" else 6
    assert shared_rows > 0 and calls == [shared_rows] * 3  # the logps above, the policy and reference passes
    (lp, got, grads), (lp_plain, want, grads_plain) = out[True], out[False]
    torch.testing.assert_close(lp, lp_plain, rtol=1e-5, atol=0)
    assert got.loss.item() == pytest.approx(want.loss.item(), rel=1e-5)
    torch.testing.assert_close(got.reward_pos, want.reward_pos, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.reward_neg, want.reward_neg, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.kl, want.kl, rtol=1e-5, atol=1e-7)
    assert all(relative_error(g, r) < 1e-5 for g, r in zip(grads, grads_plain, strict=True))
    assert any(r.norm() > 0 for r in grads_plain)


def test_shared_prompt_under_gradient_checkpointing(tmp_path, tiny_model_dir, monkeypatch):
    """Gradient checkpointing drops the key/value cache inside each checkpointed layer, so the policy's
    pass (with gradients) runs every sequence whole; the reference pass (no gradients) still shares.
    Loss and gradients are the same either way."""
    trainer, ds = make_trainer(
        tmp_path,
        tiny_model_dir,
        weighted_rows(3),
        precompute_ref_log_probs=False,
        gradient_checkpointing=True,
    )
    assert trainer.shared_prompt.startswith("reference pass only: gradient checkpointing")
    model = trainer.model
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()  # LoRA dropout 0: training mode only switches the checkpointing on
    calls = count_shared_rows(monkeypatch)
    trainer.args.shared_prompt = True
    got = trainer.batch_loss(model, trainer.data_collator(ds.items))
    assert calls == [12]  # the reference pass alone: 3 INVERT and 3 PUNISH pairs
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(got.loss, params)
    trainer.args.shared_prompt = False
    want = trainer.batch_loss(model, trainer.data_collator(ds.items))
    assert got.loss.item() == pytest.approx(want.loss.item(), rel=1e-5)
    for g, r in zip(grads, torch.autograd.grad(want.loss, params), strict=True):
        assert relative_error(g, r) < 1e-5


@pytest.mark.parametrize(
    "options",
    [
        {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.7]},  # TRL 1.16's names
        {"rpo_alpha": 0.7},  # the old name, mapped onto them
    ],
)
def test_sft_term_adds_the_preferred_response_nll(tmp_path, tiny_model_dir, options):
    rows = weighted_rows(3, corrections=True)
    trainer, ds = make_trainer(
        tmp_path, tiny_model_dir, rows, "trace-oracle", precompute_ref_log_probs=False, **options
    )
    model = trainer.model
    model.eval()
    got = trainer.batch_loss(model, trainer.data_collator(ds.items)).loss
    want = sum(it["weight"] * per_sample_loss(model, it, 0.3, 0.1, rpo_alpha=0.7) for it in ds.items) / len(
        ds
    )
    assert got.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-7)
    plain = sum(it["weight"] * per_sample_loss(model, it, 0.3, 0.1) for it in ds.items) / len(ds)
    assert got.item() > plain.item() + 0.1  # the NLL term is really there


def test_no_kl_draws_retain_at_weight_zero_with_finite_gradients(tmp_path, tiny_model_dir):
    """Equal exposure: trace-no-kl batches hold the RETAIN anchors, which add nothing to the loss."""
    rows = weighted_rows(3)
    trainer, ds = make_trainer(tmp_path, tiny_model_dir, rows, "trace-no-kl", precompute_ref_log_probs=False)
    assert trainer.alpha_kl == 0 and sum(it["kind"] == KL for it in ds.items) == 3
    model = trainer.model
    model.eval()
    got = trainer.batch_loss(model, trainer.data_collator(ds.items))
    want = sum(it["weight"] * per_sample_loss(model, it, 0.3, 0.0) for it in ds.items) / len(ds)
    assert got.loss.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-7)
    kl_rows = torch.tensor([it["kind"] == KL for it in ds.items])
    assert (got.per_example[kl_rows] == 0).all()
    grads = torch.autograd.grad(got.loss, [p for p in model.parameters() if p.requires_grad])
    assert all(torch.isfinite(g).all() for g in grads)


def test_cached_reference_gives_the_same_loss(tmp_path, tiny_model_dir):
    rows = weighted_rows(3)
    live, ds = make_trainer(tmp_path, tiny_model_dir, rows, precompute_ref_log_probs=False)
    cached, ds2 = make_trainer(tmp_path, tiny_model_dir, rows, precompute_ref_log_probs=True)
    assert cached.reference_stats["precomputed"] == 12  # 3 INVERT + 3 PUNISH pairs, two responses each
    b1, b2 = live.data_collator(ds.items), cached.data_collator(ds2.items)
    assert torch.isnan(b1["ref_logps"]).all() and torch.isnan(b2["ref_logps"]).sum() == 3  # RETAIN anchors
    live.model.eval(), cached.model.eval()
    torch.testing.assert_close(live.batch_loss(live.model, b1).loss, cached.batch_loss(cached.model, b2).loss)
    again, _ = make_trainer(tmp_path, tiny_model_dir, rows, precompute_ref_log_probs=True)
    assert again.reference_stats == {**cached.reference_stats, "precomputed": 0, "from_cache": 12}


@pytest.mark.parametrize("method", list(PRESETS))
def test_every_preset_lowers_its_loss(tmp_path, tiny_model_dir, method):
    rows = weighted_rows(corrections=method in ("dpo-gold", "trace-oracle"))
    # u2a stops when J stops falling (its own test, test_u2a.py); here every method trains its 12 steps
    extra = {"u2a_es_threshold": -1e9} if method == "u2a" else {}
    summary = train(tiny_model_dir, write_rows(tmp_path / "w.jsonl", rows), config(tmp_path, method, **extra))
    losses = [h["loss"] for h in summary["log_history"] if "loss" in h]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    out = tmp_path / method
    assert (out / "adapter_model.safetensors").exists()
    saved = json.loads((out / "run_summary.json").read_text())
    assert saved["method"] == method and saved["global_step"] == 12 and saved["wall_time_s"] > 0
    assert saved["data"]["examples"] > 0 and saved["config"]["method"] == method


def sequence_logps(model, tok, prompt, response, adapter=True):
    from trace_realign.model.logprobs import batch_logprobs
    from trace_realign.model.tokenize import collate, encode, pad_id

    batch = collate([encode(tok, prompt, response)], pad_id(tok))
    with torch.no_grad():
        if adapter:
            return batch_logprobs(model, batch).item()
        with model.disable_adapter():
            return batch_logprobs(model, batch).item()


def load_trained(tiny_model_dir, adapter_dir):
    from peft import PeftModel

    from trace_realign.model.loading import load_model, load_tokenizer

    return PeftModel.from_pretrained(load_model(tiny_model_dir), adapter_dir).eval(), load_tokenizer(
        tiny_model_dir
    )


def test_invert_margin_turns_in_the_new_direction(tmp_path, tiny_model_dir):
    rows = weighted_rows()
    train(tiny_model_dir, write_rows(tmp_path / "w.jsonl", rows), config(tmp_path, "trace"))
    model, tok = load_trained(tiny_model_dir, tmp_path / "trace")
    for r in rows:
        if r["category"] != "INVERT":
            continue
        # Δ(y_l over y_w) starts at exactly 0 (θ = θ_ref) and must now be positive
        d = sum(
            sign
            * (sequence_logps(model, tok, r["prompt"], y) - sequence_logps(model, tok, r["prompt"], y, False))
            for sign, y in ((1, r["rejected"]), (-1, r["chosen"]))
        )
        assert d > 0.5, r["prompt"]


def retain_kl(model, tok, rows):
    from trace_realign.losses import token_kl
    from trace_realign.model.logprobs import forward_logits, token_logprobs
    from trace_realign.model.tokenize import collate, encode, pad_id

    batch = collate(
        [encode(tok, r["prompt"], r["chosen"]) for r in rows if r["category"] == "RETAIN"], pad_id(tok)
    )
    with torch.no_grad():
        pol = forward_logits(model, batch)
        with model.disable_adapter():
            ref = forward_logits(model, batch)
    _, mask = token_logprobs(pol, batch["labels"])
    return token_kl(ref[:, :-1], pol[:, :-1], mask).mean().item()


def test_retain_kl_stays_small_only_with_the_anchor(tmp_path, tiny_model_dir):
    rows = weighted_rows()
    path = write_rows(tmp_path / "w.jsonl", rows)
    kls = {}
    # The tiny model has so little capacity that the conflicts move RETAIN responses too, and only a
    # strong anchor holds them: with the default α_KL = 0.1 the difference here is within noise.
    for alpha in (5.0, 0.0):
        out = str(tmp_path / f"a{alpha}")
        cfg = config(
            tmp_path,
            "trace",
            alpha_kl=alpha,
            output_dir=out,
            max_steps=20,
            sampler="stratified",
            sampling_proportions=[1, 1, 4],
        )
        train(tiny_model_dir, path, cfg)
        kls[alpha] = retain_kl(*load_trained(tiny_model_dir, tmp_path / f"a{alpha}"), rows)
    assert kls[5.0] < 0.6 * kls[0.0], kls


def test_resume_reaches_the_same_weights(tmp_path, tiny_model_dir):
    import shutil

    from safetensors.torch import load_file

    path = write_rows(tmp_path / "w.jsonl", weighted_rows())
    kw = dict(
        max_steps=8, save_strategy="steps", save_steps=4, lora_dropout=0.1, per_device_train_batch_size=3
    )
    train(tiny_model_dir, path, config(tmp_path, "trace", output_dir=str(tmp_path / "full"), **kw))
    # a run that crashed after its step-4 checkpoint: only that checkpoint is on disk
    shutil.copytree(tmp_path / "full" / "checkpoint-4", tmp_path / "crashed" / "checkpoint-4")
    summary = train(
        tiny_model_dir, path, config(tmp_path, "trace", output_dir=str(tmp_path / "crashed"), **kw)
    )
    assert summary["resumed_from"].endswith("checkpoint-4") and summary["global_step"] == 8
    a = load_file(tmp_path / "full" / "adapter_model.safetensors")
    b = load_file(tmp_path / "crashed" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert any((a[k] != 0).any() for k in a if "lora_B" in k)


def test_grad_norm_stop(tmp_path, tiny_model_dir):
    path = write_rows(tmp_path / "w.jsonl", weighted_rows())
    summary = train(tiny_model_dir, path, config(tmp_path, "trace", grad_norm_stop=1e6))
    assert summary["global_step"] == 1 and summary["stop_reason"].startswith("grad_norm")


def test_missing_category_keeps_training_on_the_others(tmp_path, tiny_model_dir):
    rows = [r for r in weighted_rows() if r["category"] != "PUNISH"]
    summary = train(
        tiny_model_dir, write_rows(tmp_path / "w.jsonl", rows), config(tmp_path, "trace", max_steps=2)
    )
    assert summary["data"]["examples"] == 8 and "examples_PUNISH_npo" not in summary["data"]


def test_merged_model_matches_the_adapter(tmp_path, tiny_model_dir):
    from trace_realign.model.loading import load_model, load_tokenizer

    path = write_rows(tmp_path / "w.jsonl", weighted_rows())
    train(tiny_model_dir, path, config(tmp_path, "trace", max_steps=4, save_merged=True))
    model, tok = load_trained(tiny_model_dir, tmp_path / "trace")
    merged = load_model(tmp_path / "trace" / "merged").eval()
    r = weighted_rows()[0]
    a = sequence_logps(model, tok, r["prompt"], r["rejected"])
    b = sequence_logps(merged, load_tokenizer(tmp_path / "trace" / "merged"), r["prompt"], r["rejected"])
    assert a == pytest.approx(b, abs=1e-4)


def test_cli_bad_input_exits_2(tmp_path, tiny_model_dir, capsys):
    rows = weighted_rows()
    del rows[0]["category"]
    path = write_rows(tmp_path / "w.jsonl", rows)
    argv = ["train", "--model", str(tiny_model_dir), "--weighted", path, "--output_dir", str(tmp_path / "o")]
    assert main(argv + ["--use_cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"trace-realign train: error: {path}:1: field 'category': missing: this file has not been "
                   "triaged (run `trace-realign triage` then `score`)"]  # fmt: skip
    zero = [{**r, "impact_weight": 0.0} if r["category"] != "RETAIN" else r for r in weighted_rows()]
    argv[4] = write_rows(tmp_path / "z.jsonl", zero)
    assert main(argv + ["--use_cpu"]) == 2
    assert "impact weights are 0" in capsys.readouterr().err
    assert not (tmp_path / "o" / "run_summary.json").exists()


def test_cli_trains_from_yaml(tmp_path, tiny_model_dir):
    import yaml

    path = write_rows(tmp_path / "w.jsonl", weighted_rows())
    opts = {"model": str(tiny_model_dir), "weighted": path, "output_dir": str(tmp_path / "y"), "method": "rdpo",
            "max_steps": 2, "per_device_train_batch_size": 4, "lora_r": 4, "use_cpu": True, "report_to": "none"}  # fmt: skip
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(opts))
    assert main(["train", "--config", str(tmp_path / "t.yaml"), "--max_steps", "3"]) == 0
    summary = json.loads((tmp_path / "y" / "run_summary.json").read_text())
    assert summary["global_step"] == 3 and summary["preference_loss"].startswith("robust DPO")
    assert not math.isnan(summary["final_metrics"]["train_loss"])


@pytest.mark.parametrize("flags", [{"gradient_checkpointing": True}, {"bf16": True}])
def test_checkpointing_and_bf16_pass_through(tmp_path, tiny_model_dir, flags):
    path = write_rows(tmp_path / "w.jsonl", weighted_rows())
    summary = train(tiny_model_dir, path, config(tmp_path, "trace", max_steps=2, **flags))
    assert summary["global_step"] == 2 and all(summary["config"][k] for k in flags)
    assert all(math.isfinite(h["loss"]) for h in summary["log_history"] if "loss" in h)


def test_hybrid_loss_takes_the_preset_loss_types():
    """DPO baselines train sigmoid whatever the run's loss_type; rdpo trains robust DPO with TRL's
    label_smoothing as its flip rate; the old names (rpo_alpha, flip_rate) stop at the config."""
    from trace_realign.losses import preference_loss, robust_dpo_loss
    from trace_realign.update.presets import PRESETS, pair_loss_type

    pol = torch.tensor([-3.0, -4.0])
    ref = torch.tensor([-3.5, -3.0])
    batch = {"kind": torch.tensor([0]), "weight": torch.tensor([1.0]), "pos_idx": torch.tensor([0]),
             "neg_idx": torch.tensor([1]), "npo_mask": torch.zeros(1, 2), "has_neg": torch.tensor([True])}  # fmt: skip
    assert pair_loss_type(PRESETS["naive-oracle-dpo"], "ipo") == "sigmoid"
    assert pair_loss_type(PRESETS["trace"], "ipo") == "ipo"
    assert pair_loss_type(PRESETS["rdpo"], "sigmoid") == "robust"
    got = hybrid_loss(
        pol, ref, torch.zeros(1), batch, beta=0.3, alpha_kl=0.1, loss_type="robust", label_smoothing=0.2
    )
    want = robust_dpo_loss(pol[:1], ref[:1], pol[1:], ref[1:], 0.3, 0.2)
    assert got.loss.item() == pytest.approx(want.item())
    with_sft = hybrid_loss(pol, ref, torch.zeros(1), batch, beta=0.3, alpha_kl=0.1, sft_weight=0.7,
                           n_tokens=torch.tensor([5, 6]))  # fmt: skip
    plain = preference_loss(pol[:1], ref[:1], pol[1:], ref[1:], 0.3)
    assert with_sft.loss.item() == pytest.approx(plain.item() + 0.7 * 3.0 / 5)
    with pytest.raises(TypeError):
        hybrid_loss(pol, ref, torch.zeros(1), batch, beta=0.3, alpha_kl=0.1, rpo_alpha=0.7)


def test_sampler_options_reach_the_batches(tmp_path, tiny_model_dir):
    """Natural batches by default (every example once per epoch), grouped by length; `sampler:
    stratified` draws by category, for every method alike."""
    from trace_realign.errors import InputError

    rows = weighted_rows()
    trainer, ds = make_trainer(tmp_path, tiny_model_dir, rows)
    s = trainer._get_train_sampler()
    assert s.lengths == ds.lengths() and s.groups == [list(range(len(ds)))]
    assert sorted(list(s)[: len(ds)]) == list(range(len(ds)))
    for method in ("trace", "naive-oracle-dpo"):
        trainer, ds = make_trainer(
            tmp_path, tiny_model_dir, rows, method, sampler="stratified", train_sampling_strategy="random"
        )
        s = trainer._get_train_sampler()
        assert s.lengths is None and len(s.groups) == len(ds.selection.by_stratum()) > 1, method
    for bad in ({"sampler": "uniformish"}, {"train_sampling_strategy": "batch_rebalance"}):
        with pytest.raises(InputError, match=next(iter(bad))):
            config(tmp_path, **bad)
