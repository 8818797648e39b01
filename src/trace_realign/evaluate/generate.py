"""Responses of a model to prompts: Hugging Face `generate`, vLLM, or an OpenAI-compatible endpoint.

Every backend renders a prompt the way training does (`model.tokenize.split_text`: the chat
template with the generation prompt, or the plain format when the tokenizer has none), so the
model is asked in the same format it was trained in. Generations are cached per model
identity, prompt and settings, and committed batch by batch: a rerun, or a run resumed after
a crash, generates nothing it already has.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from trace_realign.cache import GenerationCache
from trace_realign.errors import InputError
from trace_realign.judges.openai import DEFAULT_BASE_URL, ChatEndpoint, run_batch
from trace_realign.schema import Prompt

# Imported inside functions: torch, transformers, vllm and the model code are imported inside the backends that use them:
# an endpoint or cached evaluation, and `evaluate --help`, load none of them.


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings; all of them enter the cache key. Greedy unless `do_sample`."""

    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def key(self) -> dict[str, Any]:
        d = asdict(self)
        if not self.do_sample:
            # greedy output does not depend on these, so they must not split the cache
            d.pop("temperature"), d.pop("top_p"), d.pop("seed")
        return d


class Backend(Protocol):
    """Something that answers prompts. `identity` names the model for the generation cache."""

    identity: str

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[str]: ...


def _files_fingerprint(folder: Path, names: Sequence[str], content: bool) -> str:
    """A hash of the named files: their bytes (`content`) or only size and mtime (cheap for big weights)."""
    h = hashlib.sha256()
    for name in sorted(names):
        p = folder / name
        if not p.is_file():
            continue
        h.update(name.encode())
        if content:
            h.update(p.read_bytes())
        else:
            st = p.stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def model_identity(path_or_id: str | Path) -> str:
    """A cache identity for a checkpoint folder, an adapter folder or a Hub id.

    A folder is named by its resolved path plus a fingerprint, so retraining into the same
    folder does not reuse stale generations: an adapter by the bytes of its (small) files, on
    top of its base's identity; a full checkpoint by the size and mtime of its files, because
    hashing many gigabytes on every run would cost more than it saves.
    """
    from trace_realign.model.loading import adapter_base

    p = Path(path_or_id)
    if not p.is_dir():
        return f"hub:{path_or_id}"
    files = [f.name for f in p.iterdir() if f.is_file()]
    base = adapter_base(p)
    if base is not None:
        adapter_files = [f for f in files if f.startswith("adapter_")]
        return f"adapter:{p.resolve()}#{_files_fingerprint(p, adapter_files, True)}+{model_identity(base)}"
    return f"local:{p.resolve()}#{_files_fingerprint(p, files, False)}"


def prompt_text(tokenizer: Any, prompt: Prompt) -> str:
    """The prompt as the model sees it before its answer, exactly as training renders it."""
    from trace_realign.model.tokenize import split_text

    # the head does not depend on the response; a non-empty one keeps templates that reject an
    # empty assistant turn happy
    return split_text(tokenizer, prompt, "ok")[0]


class HFBackend:
    """`model.generate` on batches with left padding (a decoder continues from the right end)."""

    def __init__(
        self,
        path_or_id: str | Path,
        *,
        batch_size: int = 8,
        dtype: str = "float32",
        device: str | None = None,
        model: Any = None,
        tokenizer: Any = None,
    ) -> None:
        from trace_realign.model.loading import compute_device, load_model, load_tokenizer

        # half precision can change greedy output, so it names a different model for the cache
        self.identity = model_identity(path_or_id) + ("" if dtype == "float32" else f"|dtype={dtype}")
        self.batch_size = batch_size
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(path_or_id)
        # an adapter folder is merged onto its base by load_model, which is the realigned model; it
        # goes to this process's accelerator unless `device` says otherwise
        if model is None:
            model = load_model(
                path_or_id, dtype=dtype, device=device if device is not None else compute_device()
            )
        self.model = model
        self.model.eval()

    def _stop_ids(self) -> list[int]:
        ids = set()
        for src in (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if isinstance(src, int):
                ids.add(src)
            elif src:
                ids.update(src)
        return sorted(ids)

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[str]:
        import torch
        from transformers import GenerationConfig

        from trace_realign.model.tokenize import pad_id

        pad = pad_id(self.tokenizer)
        stop = self._stop_ids()
        config = GenerationConfig(
            max_new_tokens=settings.max_new_tokens,
            do_sample=settings.do_sample,
            temperature=settings.temperature if settings.do_sample else None,
            top_p=settings.top_p if settings.do_sample else None,
            top_k=None,
            pad_token_id=pad,
            eos_token_id=stop or None,
        )
        device = next(self.model.parameters()).device
        # special tokens come from the template or the plain format, as in training
        encoded = [
            self.tokenizer(prompt_text(self.tokenizer, p), add_special_tokens=False)["input_ids"]
            for p in prompts
        ]
        # prompts of similar length share a batch, so little compute goes to padding
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        out = [""] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            width = max(len(encoded[i]) for i in idx)
            input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
            attention = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                input_ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i], dtype=torch.long)
                attention[row, width - len(encoded[i]) :] = 1
            if settings.do_sample:
                torch.manual_seed(settings.seed + start)
            with torch.no_grad():
                seqs = self.model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention.to(device),
                    generation_config=config,
                )
            for i, new_tokens in zip(idx, seqs[:, width:].tolist(), strict=True):
                out[i] = self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
        return out


class VLLMBackend:
    """vLLM offline inference, when the optional `vllm` extra is installed (needs a GPU).

    Prompts are rendered and tokenised here, as for `HFBackend`, and handed over as token ids so
    vLLM adds no special tokens of its own. An adapter folder is served as a LoRA request on its
    base. Not exercised by the test suite: vLLM does not install on the CPU-only test machine.
    """

    def __init__(self, path_or_id: str | Path, **llm_kwargs: Any) -> None:
        try:
            from vllm import LLM
        except ImportError:
            raise InputError(
                "the vllm backend needs `pip install trace-realign[vllm]`", field="backend"
            ) from None
        from trace_realign.model.loading import adapter_base, load_tokenizer

        self.identity = model_identity(path_or_id)
        self.tokenizer = load_tokenizer(path_or_id)
        p = Path(path_or_id)
        self.lora = None
        base = adapter_base(p)
        if base is not None:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("adapter", 1, str(p.resolve()))
            llm_kwargs.setdefault("enable_lora", True)
        self.llm = LLM(model=base or str(path_or_id), **llm_kwargs)

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(
            max_tokens=settings.max_new_tokens,
            temperature=settings.temperature if settings.do_sample else 0.0,
            top_p=settings.top_p if settings.do_sample else 1.0,
            seed=settings.seed,
        )
        inputs = [
            {
                "prompt_token_ids": self.tokenizer(prompt_text(self.tokenizer, p), add_special_tokens=False)[
                    "input_ids"
                ]
            }
            for p in prompts
        ]
        results = self.llm.generate(inputs, params, lora_request=self.lora, use_tqdm=False)
        return [r.outputs[0].text.strip() for r in results]


class EndpointBackend:
    """A hosted model behind an OpenAI-compatible `/v1/chat/completions`, through the judges' client
    (`judges.openai.ChatEndpoint`: same retries, same failure policy, key from the environment).

    The server applies its own chat template, so a string prompt is sent as one user message.
    A request that fails for good stops the batch (`JudgeUnavailableError`) rather than leaving
    an empty response to be judged; what was generated before is already cached.
    """

    def __init__(
        self, model: str, base_url: str | None = None, *, concurrency: int = 8, **kwargs: Any
    ) -> None:

        self.endpoint = ChatEndpoint(model, base_url or DEFAULT_BASE_URL, concurrency=concurrency, **kwargs)
        self.identity = f"openai:{model}@{self.endpoint.base_url}"

    @classmethod
    def from_spec(cls, spec: str, *, batch_size: int = 8) -> EndpointBackend:
        """`openai:MODEL` or `openai:MODEL@URL`."""
        body = spec[len("openai:") :]
        model, _, url = body.partition("@")
        if not model:
            raise InputError(f"expected openai:MODEL[@URL], got {spec!r}", field="model")
        return cls(model, url or None, concurrency=batch_size)

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[str]:

        def work(i: int, stop: Any) -> str:
            p = prompts[i]
            messages = [{"role": "user", "content": p}] if isinstance(p, str) else list(p)
            temperature = settings.temperature if settings.do_sample else 0.0
            return self.endpoint.complete(
                messages, max_tokens=settings.max_new_tokens, temperature=temperature, stop=stop
            ).strip()

        return run_batch(
            work,
            len(prompts),
            concurrency=self.endpoint.concurrency,
            on_result=lambda i, text: None,
            on_failure=lambda i, reason: "",  # never kept: down_after=1 stops the batch at once
            down_after=1,
            what=f"model endpoint {self.endpoint.base_url} ({self.endpoint.model})",
        )


def generate_responses(
    backend: Backend,
    prompts: Sequence[Prompt],
    settings: GenerationSettings | None = None,
    *,
    cache: GenerationCache | None = None,
    chunk_size: int = 32,
    progress: bool = True,
    desc: str = "generate",
) -> list[str]:
    """One response per prompt, in order. Cached ones are reused; new ones are committed per chunk,
    so an interrupted run loses at most one chunk."""

    settings = settings or GenerationSettings()
    key = settings.key()
    out: list[str | None] = [
        cache.get(backend.identity, p, key) if cache is not None else None for p in prompts
    ]
    # identical prompts are generated once (greedy or seeded, the answer is the same)
    first: dict[str, int] = {}
    for i, p in enumerate(prompts):
        first.setdefault(json.dumps(p, sort_keys=True, ensure_ascii=False), i)
    todo = [i for i in first.values() if out[i] is None]
    bar = tqdm(total=len(first), initial=len(first) - len(todo), desc=desc, disable=not progress, leave=False)
    for start in range(0, len(todo), chunk_size):
        idx = todo[start : start + chunk_size]
        texts = backend.generate([prompts[i] for i in idx], settings)
        for i, text in zip(idx, texts, strict=True):
            out[i] = text
            if cache is not None:
                cache.put(backend.identity, prompts[i], key, text)
        bar.update(len(idx))
    bar.close()
    return [out[first[json.dumps(p, sort_keys=True, ensure_ascii=False)]] or "" for p in prompts]


def make_backend(
    spec: str | Path, *, batch_size: int = 8, dtype: str = "float32", device: str | None = None
) -> Any:
    """A backend from a model spec: a path, Hub id or adapter folder (Hugging Face), `vllm:PATH`,
    or `openai:MODEL[@URL]` for an OpenAI-compatible endpoint (key from `OPENAI_API_KEY`)."""
    s = str(spec)
    if s.startswith("vllm:"):
        return VLLMBackend(s[len("vllm:") :])
    if s.startswith("openai:"):
        return EndpointBackend.from_spec(s, batch_size=batch_size)
    # "org/name" is a Hub id; anything that looks like a filesystem path must exist
    if s.startswith(("/", ".", "~")) and not Path(s).expanduser().exists():
        raise InputError("model folder not found", path=s)
    return HFBackend(s, batch_size=batch_size, dtype=dtype, device=device)
