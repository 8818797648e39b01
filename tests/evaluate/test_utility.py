"""Utility scores against plain unbatched computations on the tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from trace_realign.errors import InputError
from trace_realign.evaluate.utility import MCItem, mc_scores, read_mc, text_perplexity
from trace_realign.model.loading import load_model, load_tokenizer


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    return model.eval(), tok


def reference_choice_logprob(model, tok, question, choice):
    """Sum of log p(choice tokens | BOS + question), one unpadded sequence at a time."""
    ctx = [tok.bos_token_id] + tok(f"Question: {question}\nAnswer:", add_special_tokens=False)["input_ids"]
    cont = tok(f" {choice}", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ctx + cont])).logits[0].float(), -1)
    return sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont))


QUESTIONS = [
    ("What colour is the sky?", ["blue", "green", "a very long answer about plants"]),
    ("2+2=?", ["4", "five"]),
    ("Capital of France?", ["Paris", "Rome", "Berlin", "Madrid"]),
]


def test_mc_accuracy_matches_unbatched_scores(tiny):
    model, tok = tiny
    scores = [[reference_choice_logprob(model, tok, q, c) for c in cs] for q, cs in QUESTIONS]
    best = [max(range(len(s)), key=s.__getitem__) for s in scores]
    worst = [min(range(len(s)), key=s.__getitem__) for s in scores]
    right = [MCItem(q, cs, b) for (q, cs), b in zip(QUESTIONS, best, strict=True)]
    out = mc_scores(model, tok, right, batch_size=2)
    assert out["predictions"] == best
    assert out["acc"]["rate"] == 1.0 and out["acc"]["n"] == 3
    wrong = [MCItem(q, cs, w) for (q, cs), w in zip(QUESTIONS, worst, strict=True)]
    assert mc_scores(model, tok, wrong, batch_size=5)["acc"]["rate"] == 0.0
    # acc_norm divides by the choice's token count
    lengths = [[len(tok(f" {c}", add_special_tokens=False)["input_ids"]) for c in cs] for _, cs in QUESTIONS]
    best_norm = [
        max(range(len(s)), key=lambda j, s=s, n=n: s[j] / n[j]) for s, n in zip(scores, lengths, strict=True)
    ]
    normed = [MCItem(q, cs, b) for (q, cs), b in zip(QUESTIONS, best_norm, strict=True)]
    assert mc_scores(model, tok, normed)["acc_norm"]["rate"] == 1.0


def test_read_mc_accepts_index_or_letter_and_names_bad_rows(tmp_path):
    good = tmp_path / "mc.jsonl"
    good.write_text(
        json.dumps({"question": "q1", "choices": ["a", "b"], "answer": 1})
        + "\n"
        + json.dumps({"question": "q2", "choices": ["a", "b", "c"], "answer": "c"})
        + "\n"
    )
    assert [it.answer for it in read_mc(good)] == [1, 2]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "choices": ["a", "b"], "answer": "C"}) + "\n")
    with pytest.raises(InputError) as err:
        read_mc(bad)
    assert (err.value.line, err.value.field) == (1, "answer") and "bad.jsonl:1" in str(err.value)
    bad.write_text("\n" + json.dumps({"question": "q", "choices": "ab", "answer": 0}) + "\n")
    with pytest.raises(InputError) as err:
        read_mc(bad)
    assert (err.value.line, err.value.field) == (2, "choices")


def test_perplexity_matches_the_model_loss(tiny, tmp_path):
    model, tok = tiny
    text = "The quick brown fox jumps over the lazy dog. " * 6
    path = tmp_path / "held_out.txt"
    path.write_text(text, encoding="utf-8")
    window = 64
    out = text_perplexity(model, tok, path, window=window, batch_size=3)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    nll, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids), window):
            seq = torch.tensor([[tok.bos_token_id] + ids[start : start + window]])
            loss = model(input_ids=seq, labels=seq).loss  # mean over the predicted tokens
            n = seq.shape[1] - 1
            nll += float(loss) * n
            count += n
    assert out["tokens"] == count == len(ids)
    assert out["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-5)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(InputError, match="too little text"):
        text_perplexity(model, tok, empty)
    with pytest.raises(InputError, match="not found"):
        text_perplexity(model, tok, tmp_path / "missing.txt")


def test_lm_eval_adapter_passes_the_model_and_reads_one_number_per_task(tmp_path, monkeypatch):
    """lm-eval itself needs the Hub; a stand-in module checks what the adapter sends and reads."""
    import sys
    import types

    from trace_realign.evaluate.utility import lm_eval_scores

    with pytest.raises(InputError, match="unknown lm-eval task"):
        lm_eval_scores("m", ["mmlu", "trivia"])
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if not installed
    with pytest.raises(InputError, match=r"pip install trace-realign\[eval\]"):
        lm_eval_scores("m", ["mmlu"])

    calls = []

    def simple_evaluate(**kwargs):
        calls.append(kwargs)
        return {
            "results": {
                "mmlu": {"acc,none": 0.41, "acc_stderr,none": 0.01},
                "gsm8k": {"exact_match,strict-match": 0.12, "exact_match,flexible-extract": 0.2},
                "gpqa_main_zeroshot": {"acc_norm,none": 0.27},
            }
        }

    monkeypatch.setitem(sys.modules, "lm_eval", types.SimpleNamespace(simple_evaluate=simple_evaluate))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/base"}))
    scores = lm_eval_scores(adapter, ["mmlu", "gsm8k", "gpqa", "hellaswag"], batch_size=4, limit=10)
    assert scores["mmlu"] == 0.41 and scores["gsm8k"] == 0.12 and scores["gpqa"] == 0.27
    assert scores["hellaswag"] is None  # not in the results: reported as missing, not as 0
    (call,) = calls
    assert call["model_args"] == f"pretrained=org/base,peft={adapter.resolve()}"
    assert call["tasks"] == ["mmlu", "gsm8k", "gpqa_main_zeroshot", "hellaswag"]
    assert (call["batch_size"], call["limit"]) == (4, 10)
    lm_eval_scores("org/plain", ["mmlu"])
    assert calls[-1]["model_args"] == "pretrained=org/plain"


DATA = Path(__file__).resolve().parent / "data"


def local_task(tmp_path) -> Path:
    """The shipped task YAML with the shipped JSONL's absolute path filled in."""
    text = (DATA / "local_mc.yaml").read_text().replace("LOCAL_MC_JSONL", str(DATA / "local_mc.jsonl"))
    path = tmp_path / "tasks" / "local_mc.yaml"
    path.parent.mkdir()
    path.write_text(text)
    return path


def offline_hf(tmp_path, monkeypatch):
    """No Hub, and the datasets cache in the test's folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


def test_lm_eval_runs_a_local_task_for_real(tmp_path, tiny_plain_model_dir, monkeypatch):
    """Real lm-eval, real model, a local task: the accuracy it reports is the one our own
    multiple-choice scorer finds on the same questions (both score `Question: ...\\nAnswer:` + ` choice`)."""
    pytest.importorskip("lm_eval")
    offline_hf(tmp_path, monkeypatch)
    from trace_realign.evaluate.utility import lm_eval_scores, mc_scores, read_mc
    from trace_realign.model.loading import load_model, load_tokenizer

    scores = lm_eval_scores(tiny_plain_model_dir, [str(local_task(tmp_path))], batch_size=4, device="cpu")
    assert list(scores) == ["trace_local_mc"]
    ours = mc_scores(
        load_model(tiny_plain_model_dir),
        load_tokenizer(tiny_plain_model_dir),
        read_mc(DATA / "local_mc.jsonl"),
    )
    assert scores["trace_local_mc"] == pytest.approx(ours["rate"])


def test_lm_eval_task_file_errors(tmp_path):
    from trace_realign.evaluate.utility import lm_eval_scores

    with pytest.raises(InputError, match="task file not found"):
        lm_eval_scores("m", [str(tmp_path / "missing.yaml")])
    nameless = tmp_path / "t.yaml"
    nameless.write_text("dataset_path: json\n")
    with pytest.raises(InputError, match="needs a `task:` name"):
        lm_eval_scores("m", [str(nameless)])
