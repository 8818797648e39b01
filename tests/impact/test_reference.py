"""Reference log-probabilities: equal to a direct forward of θ_ref, cached on disk and reused."""

from __future__ import annotations

import pytest
import torch

import trace_realign.impact.reference as reference
from trace_realign.impact.reference import (
    ReferenceCache,
    model_fingerprint,
    open_cache,
    reference_logprobs,
)
from trace_realign.model.loading import LoraOptions, apply_lora
from trace_realign.model.logprobs import batch_logprobs
from trace_realign.model.tiny import tiny_llama, tiny_tokenizer
from trace_realign.model.tokenize import collate, encode_many, pad_id

ITEMS = [("p1", "Hi?", "Hello."), ("p1", "Hi?", "Go away."), ("p2", "Why?", "Because."), ("p3", "Who?", "Me")]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _direct(model, tok):
    encs = encode_many(tok, [(p, r) for _, p, r in ITEMS])
    with torch.no_grad():
        return batch_logprobs(model.eval(), collate(encs, pad_id(tok)))


def test_peft_reference_is_the_base_network_and_is_cached(tok, tmp_path, monkeypatch):
    base = tiny_llama(len(tok), seed=0)
    want = _direct(base, tok)
    model = apply_lora(base, LoraOptions(r=4, dropout=0.0))
    with torch.no_grad():  # a trained adapter must not change the reference
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    model.train()
    cache = open_cache(model, tok, cache_dir=tmp_path)
    got = reference_logprobs(model, tok, ITEMS, batch_size=3, cache=cache, progress=False)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert model.training and len(cache) == len(ITEMS)

    calls = []
    monkeypatch.setattr(
        reference, "batch_logprobs", lambda *a, **k: calls.append(1) or batch_logprobs(*a, **k)
    )
    again = reference_logprobs(
        model, tok, ITEMS, cache=open_cache(model, tok, cache_dir=tmp_path), progress=False
    )
    assert calls == [] and torch.equal(again, got)  # all read back from disk, nothing recomputed


def test_fingerprint_ignores_the_adapter_and_follows_the_weights(tok, tmp_path):
    base = tiny_llama(len(tok), seed=0)
    fp = model_fingerprint(base)
    assert model_fingerprint(apply_lora(tiny_llama(len(tok), seed=0), LoraOptions(r=4))) == fp
    assert model_fingerprint(tiny_llama(len(tok), seed=1)) != fp
    a = open_cache(base, tok, cache_dir=tmp_path, max_length=64)
    b = open_cache(base, tok, cache_dir=tmp_path, max_length=128)
    assert a.path != b.path  # truncation changes log-probs, so it changes the cache


def test_a_row_cut_short_by_a_kill_is_recomputed(tok, tmp_path):
    model = tiny_llama(len(tok), seed=0)
    cache = open_cache(model, tok, cache_dir=tmp_path)
    first = reference_logprobs(model, tok, ITEMS[:2], cache=cache, progress=False)
    with cache.path.open("a", encoding="utf-8") as f:
        f.write('{"key": "abc", "lo')  # a partial line
    reopened = ReferenceCache(cache.path)
    assert len(reopened) == 2
    full = reference_logprobs(model, tok, ITEMS, cache=reopened, progress=False)
    torch.testing.assert_close(full[:2], first)
    torch.testing.assert_close(full, _direct(model, tok), rtol=1e-5, atol=1e-5)
    assert len(ReferenceCache(cache.path)) == len(ITEMS)  # new rows were not glued to the partial line
