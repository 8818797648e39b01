"""The prompt/response boundary, the labels mask, truncation and collation."""

from __future__ import annotations

import pytest

from trace_realign.errors import InputError
from trace_realign.model.tokenize import (
    IGNORE_INDEX,
    TruncationReport,
    collate,
    encode,
    encode_many,
    pad_id,
    split_text,
)


@pytest.fixture(scope="module")
def chat_tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def plain_tok(tiny_plain_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_plain_model_dir)


def _decode(tok, ids):
    return tok.decode(ids, skip_special_tokens=False)


def test_chat_template_boundary_and_labels(chat_tok):
    enc = encode(chat_tok, "Is it safe?", "Yes.")
    prompt_ids = enc.input_ids[: enc.prompt_len]
    assert _decode(chat_tok, prompt_ids) == "<|user|>\nIs it safe?<|end|>\n<|assistant|>\n"
    assert _decode(chat_tok, enc.input_ids[enc.prompt_len :]) == "Yes.<|end|>\n"
    assert enc.labels[: enc.prompt_len] == [IGNORE_INDEX] * enc.prompt_len
    assert enc.labels[enc.prompt_len :] == enc.input_ids[enc.prompt_len :]
    assert enc.prompt_cut == enc.response_cut == 0


def test_conversational_prompt_is_kept_whole(chat_tok):
    prompt = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye?"},
    ]
    head, tail = split_text(chat_tok, prompt, "Bye.")
    assert head == (
        "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello<|end|>\n"
        "<|user|>\nBye?<|end|>\n<|assistant|>\n"
    )
    assert tail == "Bye.<|end|>\n"


def test_plain_format_without_chat_template(plain_tok):
    head, tail = split_text(plain_tok, "Is it safe?", "Yes.")
    assert (head, tail) == ("<|bos|>Is it safe?\n\n", "Yes.<|end|>")
    enc = encode(plain_tok, "Is it safe?", "Yes.")
    assert enc.input_ids[0] == plain_tok.bos_token_id and enc.input_ids[-1] == plain_tok.eos_token_id
    assert sum(lab != IGNORE_INDEX for lab in enc.labels) == len("Yes.") + 1


def test_template_that_cannot_place_the_boundary_is_an_input_error(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    # a "thinking" template that renders the generation prompt differently from a finished turn
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n<think>{% endif %}"
    )
    with pytest.raises(InputError, match="cannot place the response boundary") as info:
        encode(tok, "Q", "A")
    assert info.value.field == "chat_template"


def test_truncation_keeps_the_end_of_the_prompt_and_cuts_the_response(plain_tok):
    prompt, response = "A" * 30 + "QUESTION", "R" * 40
    enc = encode(plain_tok, prompt, response, max_length=20, max_prompt_length=12)
    full = encode(plain_tok, prompt, response)
    assert len(enc.input_ids) == 20 and enc.prompt_len == 12 and enc.response_len == 8
    assert _decode(plain_tok, enc.input_ids[: enc.prompt_len]).endswith("QUESTION\n\n")
    assert enc.input_ids[: enc.prompt_len] == full.input_ids[full.prompt_len - 12 : full.prompt_len]
    assert enc.input_ids[enc.prompt_len :] == full.input_ids[full.prompt_len : full.prompt_len + 8]
    assert enc.prompt_cut == full.prompt_len - 12 and enc.response_cut == full.response_len - 8


def test_prompt_is_cut_only_as_much_as_needed(plain_tok):
    # a short response leaves room: the prompt keeps more than max_prompt_length and the response is whole
    enc = encode(plain_tok, "P" * 30, "ok", max_length=20, max_prompt_length=5)
    assert enc.response_cut == 0 and enc.response_len == 3 and enc.prompt_len == 17
    same = encode(plain_tok, "short", "ok", max_length=20)
    assert same.prompt_cut == same.response_cut == 0
    with pytest.raises(InputError, match="max_prompt_length"):
        encode(plain_tok, "P" * 30, "R" * 30, max_length=10, max_prompt_length=10)


def test_truncation_report_counts_cuts(plain_tok):
    report = TruncationReport()
    items = [("P" * 30, "R" * 30), ("short", "ok"), ("P" * 5, "R" * 40)]
    encs = encode_many(plain_tok, items, max_length=24, report=report)
    assert report.sequences == 3
    assert report.prompts_truncated == sum(e.prompt_cut > 0 for e in encs) == 1
    assert report.responses_truncated == sum(e.response_cut > 0 for e in encs) == 2
    assert report.response_tokens_cut == sum(e.response_cut for e in encs)
    assert "responses" in report.message() and report.to_dict()["sequences"] == 3
    assert TruncationReport().message().startswith("no truncation")


def test_collate_pads_right_and_masks_padding(chat_tok):
    encs = encode_many(chat_tok, [("a", "b"), ("longer prompt", "longer response")])
    batch = collate(encs, pad_id(chat_tok))
    n0 = len(encs[0].input_ids)
    assert batch["input_ids"].shape == (2, len(encs[1].input_ids))
    assert batch["attention_mask"][0].tolist() == [1] * n0 + [0] * (batch["input_ids"].shape[1] - n0)
    assert (batch["labels"][0, n0:] == IGNORE_INDEX).all()
    assert (batch["input_ids"][0, n0:] == chat_tok.pad_token_id).all()
    assert batch["labels"][1].tolist() == encs[1].labels


@pytest.mark.slow
def test_smollm2_chat_template_places_the_boundary(smollm2_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    enc = encode(tok, "What is 2+2?", "Four.")
    response = tok.decode(enc.input_ids[enc.prompt_len :])
    assert response.startswith("Four.") and "<|im_end|>" in response
    assert "What is 2+2?" in tok.decode(enc.input_ids[: enc.prompt_len])
