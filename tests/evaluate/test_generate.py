"""Generation: batched left-padded greedy output equals a plain one-prompt greedy loop, on a tiny
model and on a LoRA adapter over it; the cache makes a rerun generate nothing; CTranslate2, the
default engine on a CPU, gives the reference's greedy answers."""

from __future__ import annotations

import json

import pytest
import torch

from trace_realign.cache import GenerationCache
from trace_realign.errors import InputError
from trace_realign.evaluate.generate import (
    CT2Backend,
    GenerationSettings,
    HFBackend,
    generate_responses,
    make_backend,
    model_identity,
    prompt_text,
)

PROMPTS = [
    "Hi",
    "Tell me a long story about a dragon who learns to bake bread",
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
    "Why?",
]
SETTINGS = GenerationSettings(max_new_tokens=12)


def greedy_reference(model, tokenizer, prompt, max_new_tokens):
    """One prompt, no padding, argmax token by token: what batched generation must reproduce."""
    ids = tokenizer(prompt_text(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    new = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(input_ids=torch.tensor([ids + new])).logits[0, -1]
            nxt = int(logits.argmax())
            if nxt == tokenizer.eos_token_id:
                break
            new.append(nxt)
    return tokenizer.decode(new, skip_special_tokens=True).strip()


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter on the tiny model with non-zero B, so it really changes the output."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(1)
    cfg = LoraConfig(
        r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(base, cfg)
    out = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(out)
    meta = json.loads((out / "adapter_config.json").read_text())
    assert meta["base_model_name_or_path"] == str(tiny_model_dir)
    return out


def test_batched_greedy_matches_one_prompt_loop(tiny_model_dir):
    backend = HFBackend(tiny_model_dir, batch_size=3)
    got = backend.generate(PROMPTS, SETTINGS)
    want = [greedy_reference(backend.model, backend.tokenizer, p, SETTINGS.max_new_tokens) for p in PROMPTS]
    assert got == want
    # the prompts have different lengths, so the batch really was padded on the left
    lengths = {len(prompt_text(backend.tokenizer, p)) for p in PROMPTS[:3]}
    assert len(lengths) == 3


def test_chat_template_and_plain_format(tiny_model_dir, tiny_plain_model_dir):
    chat = HFBackend(tiny_model_dir)
    assert prompt_text(chat.tokenizer, "Hi") == "<|user|>\nHi<|end|>\n<|assistant|>\n"
    plain = HFBackend(tiny_plain_model_dir, batch_size=2)
    assert prompt_text(plain.tokenizer, "Hi") == "<|bos|>Hi\n\n"
    got = plain.generate(PROMPTS[:2], SETTINGS)
    assert got == [greedy_reference(plain.model, plain.tokenizer, p, 12) for p in PROMPTS[:2]]


def test_lora_adapter_is_loaded_on_its_base(tiny_model_dir, adapter_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    backend = HFBackend(adapter_dir, batch_size=4)
    got = backend.generate(PROMPTS, SETTINGS)
    merged = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter_dir
    ).eval()
    want = [greedy_reference(merged, backend.tokenizer, p, 12) for p in PROMPTS]
    assert got == want
    base_out = HFBackend(tiny_model_dir).generate(PROMPTS, SETTINGS)
    assert got != base_out  # the adapter changed the model
    assert backend.identity.startswith("adapter:") and model_identity(tiny_model_dir) in backend.identity


def test_identity_follows_the_adapter_bytes(adapter_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(adapter_dir, copy)
    before = model_identity(copy)
    assert before == model_identity(copy)
    weights = copy / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert model_identity(copy) != before
    assert model_identity("org/some-model") == "hub:org/some-model"


class Counting:
    """Wraps a backend and counts the prompts it is asked to generate."""

    def __init__(self, inner):
        self.inner, self.identity, self.asked = inner, inner.identity, 0

    def generate(self, prompts, settings):
        self.asked += len(prompts)
        return self.inner.generate(prompts, settings)


def test_rerun_generates_nothing(tiny_model_dir, tmp_path):
    cache = GenerationCache(tmp_path / "gen.sqlite")
    backend = Counting(HFBackend(tiny_model_dir, batch_size=4))
    first = generate_responses(backend, PROMPTS, SETTINGS, cache=cache, chunk_size=2, progress=False)
    assert backend.asked == len(PROMPTS)
    again = generate_responses(backend, PROMPTS, SETTINGS, cache=cache, progress=False)
    assert again == first and backend.asked == len(PROMPTS)
    # a new prompt or new settings are generated, nothing else
    generate_responses(backend, [*PROMPTS, "New one"], SETTINGS, cache=cache, progress=False)
    assert backend.asked == len(PROMPTS) + 1
    generate_responses(
        backend, PROMPTS[:1], GenerationSettings(max_new_tokens=5), cache=cache, progress=False
    )
    assert backend.asked == len(PROMPTS) + 2
    # a prompt given twice is generated once
    twice = generate_responses(backend, ["Dup", "Dup", "Hi"], SETTINGS, cache=cache, progress=False)
    assert backend.asked == len(PROMPTS) + 3 and twice[0] == twice[1] and twice[2] == first[0]
    # sampling knobs do not split the cache of greedy decoding
    assert GenerationSettings(12, temperature=0.3).key() == SETTINGS.key()
    assert (
        GenerationSettings(12, do_sample=True).key() != GenerationSettings(12, do_sample=True, seed=1).key()
    )


def test_chunks_are_batches_of_similar_length(tiny_model_dir):
    """New prompts go to the backend one batch at a time (not in chunks of 32, which capped the
    demo's batches of 64 at 32), shortest first; the answers come back in the prompts' order."""

    class Recording(Counting):
        def __init__(self, inner):
            super().__init__(inner)
            self.batch_size, self.calls = 3, []

        def generate(self, prompts, settings):
            self.calls.append(list(prompts))
            return self.inner.generate(prompts, settings)

    backend = Recording(HFBackend(tiny_model_dir, batch_size=3))
    prompts = ["a much longer prompt than the others", "b", "a medium prompt", "cc", "dd d", "e" * 50, "f f"]
    got = generate_responses(backend, prompts, SETTINGS, progress=False)
    assert [len(c) for c in backend.calls] == [3, 3, 1]
    assert backend.calls[0] == ["b", "cc", "f f"] and backend.calls[-1] == ["e" * 50]
    assert got == backend.inner.generate(prompts, SETTINGS)
    backend.calls = []
    generate_responses(backend, prompts, GenerationSettings(max_new_tokens=2), chunk_size=7, progress=False)
    assert len(backend.calls) == 1


def test_max_new_tokens_is_respected(tiny_model_dir):
    backend = HFBackend(tiny_model_dir)
    short = backend.generate(PROMPTS, GenerationSettings(max_new_tokens=3))
    assert short == [greedy_reference(backend.model, backend.tokenizer, p, 3) for p in PROMPTS]
    assert short != backend.generate(PROMPTS, SETTINGS)


def test_missing_model_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="model folder not found"):
        make_backend(str(tmp_path / "nope"))


def test_endpoint_backend_through_the_judges_client(tmp_path):
    from trace_realign.errors import JudgeUnavailableError
    from trace_realign.evaluate.generate import EndpointBackend

    from .fakes import ChatServer

    with ChatServer() as server:
        backend = make_backend(f"openai:tiny-chat@{server.url}", batch_size=2)
        assert isinstance(backend, EndpointBackend)
        assert backend.identity == f"openai:tiny-chat@{server.url}"
        cache = GenerationCache(tmp_path / "gen.sqlite")
        got = generate_responses(backend, PROMPTS, SETTINGS, cache=cache, progress=False)
        assert got == ["echo: Hi", f"echo: {PROMPTS[1]}", "echo: What is 2+2?", "echo: Why?"]
        body = server.bodies[0]
        assert body["max_tokens"] == 12 and body["temperature"] == 0.0 and body["model"] == "tiny-chat"
        assert next(b for b in server.bodies if len(b["messages"]) == 2)["messages"][0]["role"] == "system"
        generate_responses(backend, PROMPTS, SETTINGS, cache=cache, progress=False)
        assert server.requests == len(PROMPTS)
    # a server that is gone stops the batch instead of leaving empty responses to be judged
    dead = EndpointBackend("m", server.url, max_attempts=1)
    with pytest.raises(JudgeUnavailableError):
        dead.generate(["Hi"], SETTINGS)


@pytest.mark.slow
def test_smollm2_batched_generation_and_utility(smollm2_dir, tmp_path):
    """The real chat model: batched left-padded output equals one prompt at a time, the answer is
    sensible, and English text is far less perplexing to it than the same letters scrambled."""
    import random

    from trace_realign.evaluate.utility import text_perplexity

    backend = HFBackend(smollm2_dir, batch_size=3)
    prompts = ["What is the capital of France?", "Name a primary colour.", PROMPTS[2]]
    settings = GenerationSettings(max_new_tokens=16)
    got = backend.generate(prompts, settings)
    assert got == [greedy_reference(backend.model, backend.tokenizer, p, 16) for p in prompts]
    assert "Paris" in got[0]
    text = "The cat sat on the mat. It was a sunny day, and the children played in the park. " * 3
    letters = list(text)
    random.Random(0).shuffle(letters)
    (tmp_path / "en.txt").write_text(text)
    (tmp_path / "scrambled.txt").write_text("".join(letters))
    english = text_perplexity(backend.model, backend.tokenizer, tmp_path / "en.txt")["perplexity"]
    scrambled = text_perplexity(backend.model, backend.tokenizer, tmp_path / "scrambled.txt")["perplexity"]
    assert english * 10 < scrambled


# CTranslate2, the default engine on a CPU: the reference is HFBackend on the same prompts

LONG = GenerationSettings(max_new_tokens=40)


@pytest.fixture
def ct2_cache(tmp_path, monkeypatch):
    """Conversions go to a fresh cache folder, so each test converts for itself."""
    monkeypatch.setenv("TRACE_REALIGN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "ct2"


def test_ct2_greedy_equals_the_reference(tiny_model_dir, tiny_plain_model_dir, ct2_cache):
    """Same tokens as `model.generate`, through padding, stop tokens and the length limit; on both
    prompt formats. (A float32 engine could only differ where two logits tie within rounding;
    the tiny random model has no such ties, so equality is the test.)"""
    for folder in (tiny_model_dir, tiny_plain_model_dir):
        reference = HFBackend(folder, batch_size=3)
        fast = CT2Backend(folder, batch_size=3)
        for settings in (GenerationSettings(max_new_tokens=3), SETTINGS, LONG):
            assert fast.generate(PROMPTS, settings) == reference.generate(PROMPTS, settings)
    # some answers stopped at EOS before the limit, so the stop tokens were used
    lengths = [len(t) for t in CT2Backend(tiny_model_dir).generate(PROMPTS, LONG)]
    assert min(lengths) < max(lengths)


def test_ct2_on_an_adapter_merges_it_first(tiny_model_dir, adapter_dir, ct2_cache):
    fast = CT2Backend(adapter_dir, batch_size=4)
    got = fast.generate(PROMPTS, LONG)
    assert got == HFBackend(adapter_dir, batch_size=4).generate(PROMPTS, LONG)
    assert got != CT2Backend(tiny_model_dir).generate(PROMPTS, LONG)
    assert fast.identity == model_identity(adapter_dir) + "|engine=ctranslate2-float32"


def test_ct2_identity_and_conversion_cache(tiny_model_dir, ct2_cache, tmp_path, monkeypatch):
    import ctranslate2.converters

    fast = CT2Backend(tiny_model_dir)
    # another engine can change greedy output, so it must not share the reference's cache entries
    assert fast.identity != HFBackend(tiny_model_dir).identity
    assert fast.identity.startswith(model_identity(tiny_model_dir))
    assert fast.folder.parent == ct2_cache and (fast.folder / "model.bin").is_file()

    # converted once: a second backend on the same model converts nothing
    def no_conversion(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(ctranslate2.converters, "TransformersConverter", no_conversion)
    again = CT2Backend(tiny_model_dir)
    assert again.folder == fast.folder and again.generate(PROMPTS, SETTINGS) == fast.generate(
        PROMPTS, SETTINGS
    )
    # the generation cache keeps the engines apart and serves a rerun
    cache = GenerationCache(tmp_path / "gen.sqlite")
    counting = Counting(again)
    first = generate_responses(counting, PROMPTS, SETTINGS, cache=cache, progress=False)
    assert generate_responses(counting, PROMPTS, SETTINGS, cache=cache, progress=False) == first
    assert counting.asked == len(PROMPTS)
    assert cache.get(HFBackend(tiny_model_dir).identity, PROMPTS[0], SETTINGS.key()) is None


def test_ct2_sampling_and_scoring_use_the_hf_model(tiny_model_dir, ct2_cache):
    """A seeded sample repeats (it goes through `model.generate`), and `model` is there for the
    multiple-choice and perplexity scores."""
    fast = CT2Backend(tiny_model_dir, batch_size=3)
    sampled = GenerationSettings(max_new_tokens=12, do_sample=True, seed=3)
    got = fast.generate(PROMPTS, sampled)
    assert (
        got
        == fast.generate(PROMPTS, sampled)
        == HFBackend(tiny_model_dir, batch_size=3).generate(PROMPTS, sampled)
    )
    assert fast.model.config.model_type == "llama"


def test_make_backend_picks_ct2_on_cpu_and_hf_by_name(tiny_model_dir, ct2_cache):
    assert isinstance(make_backend(str(tiny_model_dir)), CT2Backend)
    reference = make_backend(f"hf:{tiny_model_dir}")
    assert type(reference) is HFBackend and reference.identity == model_identity(tiny_model_dir)
    assert isinstance(make_backend(f"ct2:{tiny_model_dir}"), CT2Backend)
    # CTranslate2 has no bfloat16 on this CPU: the default keeps torch, a named ct2 says no
    assert type(make_backend(str(tiny_model_dir), dtype="bfloat16")) is HFBackend
    with pytest.raises(InputError, match="float32"):
        make_backend(f"ct2:{tiny_model_dir}", dtype="bfloat16")
    with pytest.raises(InputError, match="model folder not found"):
        make_backend(f"ct2:{tiny_model_dir}-nope")


def test_without_ctranslate2_the_default_falls_back(tiny_model_dir, ct2_cache, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # `import ctranslate2` raises ImportError
    with pytest.warns(UserWarning, match="pip install ctranslate2"):
        backend = make_backend(str(tiny_model_dir))
    assert type(backend) is HFBackend
    with pytest.raises(InputError, match="pip install ctranslate2"):
        make_backend(f"ct2:{tiny_model_dir}")


def test_a_model_ctranslate2_cannot_convert_falls_back(tmp_path, ct2_cache, monkeypatch):
    """An architecture the converter does not know is a one-line InputError for `ct2:`, and the
    default generates with transformers instead."""
    import ctranslate2.converters

    from trace_realign.model.tiny import save_tiny_model

    folder = save_tiny_model(tmp_path / "m", seed=1)

    class Unknown:
        def __init__(self, *args, **kwargs):
            pass

        def convert(self, *args, **kwargs):
            raise ValueError("No conversion is registered for the model configuration FooConfig\nmore")

    monkeypatch.setattr(ctranslate2.converters, "TransformersConverter", Unknown)
    with pytest.raises(InputError, match="cannot convert this model: No conversion is registered") as err:
        make_backend(f"ct2:{folder}")
    assert "more" not in str(err.value)
    with pytest.warns(UserWarning, match="cannot convert"):
        assert type(make_backend(str(folder))) is HFBackend
    assert not any(ct2_cache.iterdir())  # nothing half-written is left


@pytest.mark.slow
def test_smollm2_ct2_equals_the_reference(smollm2_dir, ct2_cache):
    """The real model, a batch of chat prompts of different lengths: the same greedy answers."""
    prompts = ["What is the capital of France?", "Name a primary colour.", PROMPTS[2], PROMPTS[1]]
    settings = GenerationSettings(max_new_tokens=32)
    fast = CT2Backend(smollm2_dir, batch_size=4)
    assert fast.generate(prompts, settings) == HFBackend(smollm2_dir, batch_size=4).generate(
        prompts, settings
    )
