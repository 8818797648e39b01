"""Sequence log-probabilities against a plain per-token loop; padding never counts."""

from __future__ import annotations

import pytest
import torch

from trace_realign.model.logprobs import batch_logprobs, sequence_logprobs, token_logprobs
from trace_realign.model.tokenize import IGNORE_INDEX, collate, encode_many, pad_id


def _loop_reference(logits: torch.Tensor, labels: torch.Tensor) -> list[float]:
    out = []
    for n in range(logits.shape[0]):
        total = 0.0
        for t in range(1, logits.shape[1]):
            if labels[n, t] != IGNORE_INDEX:
                total += torch.log_softmax(logits[n, t - 1].double(), -1)[labels[n, t]].item()
        out.append(total)
    return out


def test_sequence_logprobs_match_a_plain_loop():
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 11)
    labels = torch.randint(0, 11, (3, 6))
    labels[:, :2] = IGNORE_INDEX  # prompt
    labels[1, 4:] = IGNORE_INDEX  # padding
    labels[2, :] = IGNORE_INDEX  # nothing to score
    got = sequence_logprobs(logits, labels)
    assert got.tolist() == pytest.approx(_loop_reference(logits, labels), rel=1e-5)
    assert got[2].item() == 0.0
    per_token, mask = token_logprobs(logits, labels)
    assert mask.shape == (3, 5) and mask[0].tolist() == [False, True, True, True, True]
    assert (per_token[~mask] == 0).all()


def test_padding_never_counts(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    items = [("Hi", "Hello there, friend."), ("A much longer prompt than the other", "ok")]
    encs = encode_many(tok, items)
    with torch.no_grad():
        together = batch_logprobs(model, collate(encs, pad_id(tok)))
        alone = torch.cat([batch_logprobs(model, collate([e], pad_id(tok))) for e in encs])
        # with a different pad id too: the padded positions must not matter at all
        other_pad = batch_logprobs(model, collate(encs, 7))
        logits = model(input_ids=torch.tensor([encs[0].input_ids])).logits
    assert together.tolist() == pytest.approx(alone.tolist(), rel=1e-5)
    assert other_pad.tolist() == pytest.approx(together.tolist(), rel=1e-5)
    assert alone[0].item() == pytest.approx(
        _loop_reference(logits, torch.tensor([encs[0].labels]))[0], rel=1e-5
    )


def _plain_batch_logprobs(model, batch):
    """The plain path: full-vocabulary logits at every position, then `sequence_logprobs`."""
    from trace_realign.model.logprobs import forward_logits

    return sequence_logprobs(forward_logits(model, batch), batch["labels"])


def _tiny_batch(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    items = [
        ("Hi", "Hello there, friend."),
        ("A much longer prompt than the other", "ok"),
        ("Q", "a b c d e f"),
    ]
    return collate(encode_many(tok, items), pad_id(tok))


@pytest.mark.parametrize("chunk_rows", [1, 3, 512])
def test_chunked_head_logprobs_equal_the_full_logits(chunk_rows):
    from trace_realign.model.logprobs import chunked_head_logprobs

    torch.manual_seed(0)
    hidden = torch.randn(3, 7, 5, dtype=torch.float64)
    head = torch.nn.Linear(5, 13, bias=False).double()
    labels = torch.randint(0, 13, (3, 7))
    labels[:, :2] = IGNORE_INDEX
    labels[1, 5:] = IGNORE_INDEX
    labels[2, :] = IGNORE_INDEX
    got = chunked_head_logprobs(head, hidden, labels, chunk_rows)
    want = sequence_logprobs(head(hidden), labels)
    assert torch.allclose(got, want.to(got.dtype), rtol=0, atol=1e-6 * want.abs().max().item())
    assert got[2].item() == 0.0


@pytest.mark.parametrize("lora", [False, True])
def test_batch_logprobs_and_their_gradient_equal_the_plain_path(tiny_model_dir, lora):
    """The chunked, checkpointed head gives the plain path's log-probabilities and gradients (1e-6)."""
    from transformers import AutoModelForCausalLM

    from trace_realign.model.loading import LoraOptions, apply_lora, trainable_parameters
    from trace_realign.model.logprobs import response_logprobs

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    if lora:
        model = apply_lora(model, LoraOptions(r=4, alpha=8, dropout=0.0))
        with torch.no_grad():  # B away from 0, so the adapter changes the outputs
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.1)
    else:
        model.requires_grad_(True)
    params = list(trainable_parameters(model).values())
    batch = _tiny_batch(tiny_model_dir)
    weights = torch.tensor([1.0, -2.0, 0.5])

    plain = _plain_batch_logprobs(model, batch)
    g_plain = torch.autograd.grad((weights * plain).sum(), params)
    for chunk_rows in (2, 512):
        chunked = response_logprobs(model, batch, chunk_rows=chunk_rows)
        g_chunked = torch.autograd.grad((weights * chunked).sum(), params)
        assert torch.allclose(chunked, plain, rtol=1e-6, atol=1e-6)
        for a, b in zip(g_chunked, g_plain, strict=True):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6 * b.abs().max().item() + 1e-12)
    with torch.no_grad():
        assert torch.allclose(batch_logprobs(model, batch), plain.detach(), rtol=1e-6, atol=1e-6)


def test_models_with_capped_logits_take_the_plain_path(tiny_model_dir):
    """A model whose logits are not just `lm_head(hidden)` (Gemma 2's soft-capping) is not chunked."""
    from transformers import AutoModelForCausalLM

    from trace_realign.model.logprobs import decoder_and_head

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert decoder_and_head(model) is not None
    model.config.final_logit_softcapping = 30.0
    assert decoder_and_head(model) is None
    # a forward wrapped on the instance (accelerate's autocast for bf16 does this) is not bypassed
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model._original_forward = model.forward
    model.forward = lambda *a, **k: model._original_forward(*a, **k)
    assert decoder_and_head(model) is None


# ---- a prompt shared by several responses, run once ------------------------------------------------

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour?"}]
SHARED_ITEMS = [
    ("Hi", "Hello there, friend."),
    ("A much longer prompt than the other", "ok"),
    ("Hi", "no"),
    ("Q", "a b c d e f"),  # alone: runs whole
    ("A much longer prompt than the other", "a longer answer than ok, surely"),
    (CHAT, "Blue."),
    ("A much longer prompt than the other", "three share this prompt"),
    (CHAT, "A deep shade of green, I would say."),
]


def _lora_model(tiny_model_dir, attn_implementation):
    from trace_realign.model.loading import LoraOptions, apply_lora, load_model

    torch.manual_seed(0)
    model = apply_lora(
        load_model(tiny_model_dir, attn_implementation=attn_implementation), LoraOptions(r=4, dropout=0.0)
    )
    with torch.no_grad():  # B away from 0, so the adapter changes the prompt's keys and values
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    return model.eval()


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_shared_prompt_logprobs_and_gradients_equal_one_pass_per_sequence(
    tiny_model_dir, attn_implementation
):
    """Groups of two and three rows with the same prompt, prompts and responses of different lengths, a
    conversational prompt, a row alone and a row whose full logits are wanted (never grouped): the
    log-probabilities, those logits and the LoRA gradients equal one pass per sequence (1e-5)."""
    from transformers import AutoTokenizer

    from trace_realign.model.logprobs import logprobs_and_logits, prompt_groups

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    batch = collate(encode_many(tok, SHARED_ITEMS), pad_id(tok))
    ids, attn, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert prompt_groups(ids, labels) == [[0, 2], [1, 4, 6], [5, 7]]
    rows = torch.tensor([2])  # its logits are wanted: the pair it belonged to leaves it out
    assert prompt_groups(ids, labels, exclude=rows) == [[1, 4, 6], [5, 7]]
    model = _lora_model(tiny_model_dir, attn_implementation)
    params = [p for p in model.parameters() if p.requires_grad]
    weights = torch.linspace(-1.0, 2.0, len(SHARED_ITEMS))
    out = {}
    for share in (True, False):
        logps, logits = logprobs_and_logits(model, ids, attn, labels, rows, share_prompts=share)
        loss = (weights * logps).sum() + logits.logsumexp(-1).mean()
        out[share] = (logps, logits, torch.autograd.grad(loss, params))
    (lp, logits, grads), (lp_plain, logits_plain, grads_plain) = out[True], out[False]
    torch.testing.assert_close(lp, lp_plain, rtol=1e-5, atol=0)
    torch.testing.assert_close(logits, logits_plain, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, grads_plain, strict=True):
        assert ((g - r).norm() / r.norm()).item() < 1e-5


def test_a_pair_whose_prompts_were_cut_differently_runs_apart(tiny_model_dir):
    """Truncation keeps more of the prompt beside a short response: those two prompts are not the same
    tokens, so they are not grouped, and the log-probabilities still equal one pass per sequence."""
    from transformers import AutoTokenizer

    from trace_realign.model.logprobs import logprobs_and_logits, prompt_groups

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = "A prompt long enough to be cut " * 3
    encs = encode_many(tok, [(prompt, "short"), (prompt, "a much longer response " * 3), ("Hi", "a"), ("Hi", "b")],
                       max_length=120)  # fmt: skip
    assert encs[0].prompt_len != encs[1].prompt_len
    batch = collate(encs, pad_id(tok))
    assert prompt_groups(batch["input_ids"], batch["labels"]) == [[2, 3]]
    model = _lora_model(tiny_model_dir, None)
    ids, attn, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    with torch.no_grad():
        got = logprobs_and_logits(model, ids, attn, labels, share_prompts=True)[0]
        want = logprobs_and_logits(model, ids, attn, labels)[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)


def test_what_keeps_every_sequence_whole(tiny_model_dir):
    """Gradient checkpointing while training with gradients (transformers drops the cache in each
    checkpointed layer), attention kernels other than eager and sdpa, sliding-window layers."""
    from trace_realign.model.logprobs import decoder_and_head, prefix_cache_blocker

    model = _lora_model(tiny_model_dir, None)
    decoder = decoder_and_head(model)[0]
    assert prefix_cache_blocker(decoder) is None
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    assert "gradient checkpointing" in prefix_cache_blocker(decoder)
    with torch.no_grad():  # the reference pass: nothing is checkpointed
        assert prefix_cache_blocker(decoder) is None
    model.eval()
    assert prefix_cache_blocker(decoder) is None
    decoder.config._attn_implementation = "flash_attention_2"
    assert "flash_attention_2" in prefix_cache_blocker(decoder)
    decoder.config._attn_implementation = "sdpa"
    decoder.config.layer_types = ["full_attention", "sliding_attention"]
    assert "full attention" in prefix_cache_blocker(decoder)
