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
