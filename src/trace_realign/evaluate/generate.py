"""Responses of a model to prompts: CTranslate2 or Hugging Face `generate` on a local checkpoint,
vLLM, or an OpenAI-compatible endpoint.

Every backend renders a prompt the way training does (`model.tokenize.split_text`: the chat
template with the generation prompt, or the plain format when the tokenizer has none), so the
model is asked in the same format it was trained in. Generations are cached per model
identity, prompt and settings, and committed batch by batch: a rerun, or a run resumed after
a crash, generates nothing it already has.

On a CPU a local checkpoint is decoded by CTranslate2 in float32 (`CT2Backend`): the same
prompts, batches and stop tokens as `HFBackend`, 1.2-1.6x the tokens/s of `model.generate` at the
demo's batch of 64 on two cores (an AVX-512 and an AVX2 machine), and the same greedy answer on 64
of 64 held-out prompts of SmolLM2 and of M_ref (benchmarks/README.md, "Generation"). `hf:PATH`
keeps `model.generate`, the reference.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from trace_realign.cache import GenerationCache
from trace_realign.errors import InputError
from trace_realign.io import cache_root
from trace_realign.judges.openai import DEFAULT_BASE_URL, ChatEndpoint, run_batch
from trace_realign.schema import Prompt

# Imported inside functions: torch, transformers, ctranslate2, vllm and the model code are imported inside the backends
# that use them: an endpoint or cached evaluation, and `evaluate --help`, load none of them.


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
    """`model.generate` on batches with left padding (a decoder continues from the right end): the
    reference every faster engine is checked against."""

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

    @property
    def generation_config(self) -> Any:
        return self.model.generation_config

    def _stop_ids(self) -> list[int]:
        ids = set()
        for src in (self.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if isinstance(src, int):
                ids.add(src)
            elif src:
                ids.update(src)
        return sorted(ids)

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[str]:
        stop = self._stop_ids()
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
            new = self._continue([encoded[i] for i in idx], settings, stop, seed=settings.seed + start)
            for i, new_tokens in zip(idx, new, strict=True):
                out[i] = self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
        return out

    def _continue(
        self, batch: list[list[int]], settings: GenerationSettings, stop: list[int], seed: int
    ) -> list[list[int]]:
        """The new tokens after each prompt of `batch` (token ids): what an engine implements."""
        import torch
        from transformers import GenerationConfig

        from trace_realign.model.tokenize import pad_id

        pad = pad_id(self.tokenizer)
        config = GenerationConfig(
            max_new_tokens=settings.max_new_tokens,
            do_sample=settings.do_sample,
            temperature=settings.temperature if settings.do_sample else None,
            top_p=settings.top_p if settings.do_sample else None,
            top_k=None,
            pad_token_id=pad,
            eos_token_id=stop or None,
        )
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids) :] = 1
        if settings.do_sample:
            torch.manual_seed(seed)
        device = next(self.model.parameters()).device
        with torch.no_grad():
            seqs = self.model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), generation_config=config
            )
        return seqs[:, width:].tolist()


# converted models kept in the cache folder, the most recently used first (SmolLM2-135M: 0.54 GB each)
CT2_CACHE_BYTES = 8 << 30


class EngineUnavailable(InputError):
    """CTranslate2 cannot serve this model here: not installed, no such compute type on this CPU,
    or a model its converter does not know. `make_backend`'s default then uses `HFBackend`."""


def _import_ctranslate2() -> Any:
    try:
        import ctranslate2
    except ImportError:
        raise EngineUnavailable(
            "the ct2 backend needs CTranslate2: pip install ctranslate2", field="backend"
        ) from None
    return ctranslate2


def ct2_checkpoint(path_or_id: str | Path, identity: str, *, cache_dir: str | Path | None = None) -> Path:
    """`path_or_id` converted to a CTranslate2 model (float32 weights), once per model identity.

    An adapter folder is merged onto its base first (`load_model`, as `HFBackend` does). The
    conversion is kept under `<cache>/ct2/<key>`, keyed by `identity` (which follows the weights'
    files) and the CTranslate2 version; the most recently used conversions are kept, up to
    `CT2_CACHE_BYTES` in all.
    """
    ctranslate2 = _import_ctranslate2()
    from ctranslate2.converters import TransformersConverter

    from trace_realign.model.loading import adapter_base, load_model, load_tokenizer

    root = Path(cache_dir) if cache_dir is not None else cache_root() / "ct2"
    key = hashlib.sha256(f"{identity}|ctranslate2-{ctranslate2.__version__}".encode()).hexdigest()[:16]
    out = root / key
    if (out / "model.bin").is_file():
        os.utime(out)  # used: the last to be pruned
        return out
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{key}.partial-", dir=root))
    try:
        src = str(path_or_id)
        if Path(src).is_dir() and adapter_base(src) is not None:
            src = str(work / "merged")
            load_model(path_or_id, device="cpu").save_pretrained(src)
            load_tokenizer(path_or_id).save_pretrained(src)
        TransformersConverter(src).convert(str(work / "model"), quantization="float32", force=True)
        _check_vocabulary(work / "model", load_tokenizer(path_or_id))
        try:
            (work / "model").replace(out)
        except OSError:  # another process converted it first
            if not (out / "model.bin").is_file():
                raise
    except InputError:
        raise
    except Exception as exc:  # the converter's own errors: an architecture it does not know, ...
        line = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise EngineUnavailable(
            f"CTranslate2 cannot convert this model: {line}", path=str(path_or_id)
        ) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _prune(root, keep=out)
    return out


def _prune(root: Path, keep: Path) -> None:
    """Remove the least recently used conversions beyond `CT2_CACHE_BYTES` (never `keep`), and what
    conversions killed more than a day ago left behind."""
    for d in root.glob("*.partial-*"):
        if time.time() - d.stat().st_mtime > 86400:
            shutil.rmtree(d, ignore_errors=True)
    done = sorted(
        (d for d in root.iterdir() if (d / "model.bin").is_file()), key=lambda d: -d.stat().st_mtime
    )
    total = 0
    for d in done:
        total += sum(f.stat().st_size for f in d.iterdir() if f.is_file())
        if total > CT2_CACHE_BYTES and d != keep:
            shutil.rmtree(d, ignore_errors=True)


def _check_vocabulary(folder: Path, tokenizer: Any) -> None:
    """CTranslate2 takes prompts as token strings: each id's string must name that id alone."""
    vocab = json.loads((folder / "vocabulary.json").read_text(encoding="utf-8"))
    ids = range(min(len(vocab), len(tokenizer)))
    if len(set(vocab)) != len(vocab) or tokenizer.convert_ids_to_tokens(list(ids)) != vocab[: len(ids)]:
        raise EngineUnavailable("CTranslate2's vocabulary does not map one to one onto the tokenizer's ids")


class CT2Backend(HFBackend):
    """`HFBackend`'s prompts, batches, stop tokens and decoding, with each batch decoded by a
    CTranslate2 `Generator` on the CPU instead of `model.generate`.

    The model is converted once (`ct2_checkpoint`). Greedy decoding in `float32` gives the same
    tokens as the reference except where two logits tie within float32 rounding (their matrix
    products sum in a different order); `int8` is faster still but changes the answers, so it is
    not the default. The identity names the engine, so its generations never mix with
    `HFBackend`'s in the cache. `model` (for multiple-choice and perplexity scoring, and for
    sampling) is the Hugging Face model, loaded when first asked for.
    """

    def __init__(
        self,
        path_or_id: str | Path,
        *,
        batch_size: int = 8,
        compute_type: str = "float32",
        threads: int | None = None,
        tokenizer: Any = None,
    ) -> None:
        ctranslate2 = _import_ctranslate2()
        import torch

        from trace_realign.model.loading import load_tokenizer

        if compute_type not in ctranslate2.get_supported_compute_types("cpu"):
            supported = ", ".join(sorted(ctranslate2.get_supported_compute_types("cpu")))
            raise EngineUnavailable(
                f"CTranslate2 cannot compute in {compute_type} on this CPU (it can: {supported})",
                field="dtype",
            )
        self.path_or_id = path_or_id
        identity = model_identity(path_or_id)
        self.identity = f"{identity}|engine=ctranslate2-{compute_type}"
        self.batch_size = batch_size
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(path_or_id)
        self.folder = ct2_checkpoint(path_or_id, identity)
        self.generator = ctranslate2.Generator(
            str(self.folder),
            device="cpu",
            compute_type=compute_type,
            intra_threads=threads or torch.get_num_threads(),
        )
        self._model: Any = None
        self._generation_config: Any = None

    @property
    def model(self) -> Any:
        from trace_realign.model.loading import load_model

        if self._model is None:
            self._model = load_model(self.path_or_id, device="cpu").eval()
        return self._model

    @property
    def generation_config(self) -> Any:
        """The checkpoint's generation config (its stop tokens), read without loading the weights."""
        from transformers import AutoConfig, GenerationConfig

        from trace_realign.model.loading import adapter_base

        if self._generation_config is None:
            src = str(self.path_or_id)
            src = (adapter_base(src) if Path(src).is_dir() else None) or src
            try:
                self._generation_config = GenerationConfig.from_pretrained(src)
            except OSError:  # no generation_config.json: transformers derives it from the model's config
                self._generation_config = GenerationConfig.from_model_config(AutoConfig.from_pretrained(src))
        return self._generation_config

    def _continue(
        self, batch: list[list[int]], settings: GenerationSettings, stop: list[int], seed: int
    ) -> list[list[int]]:
        if settings.do_sample:
            # CTranslate2 seeds its sampler only when a Generator starts, so a seeded sample would
            # not repeat from call to call: sampling goes through `model.generate`
            return super()._continue(batch, settings, stop, seed)
        results = self.generator.generate_batch(
            [self.tokenizer.convert_ids_to_tokens(ids) for ids in batch],
            max_length=settings.max_new_tokens,
            # the prompt goes through the decoder at once, and only new tokens come back
            include_prompt_in_result=False,
            end_token=stop or None,
            beam_size=1,
        )
        return [r.sequences_ids[0] for r in results]


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
    chunk_size: int | None = None,
    progress: bool = True,
    desc: str = "generate",
) -> list[str]:
    """One response per prompt, in order. Cached ones are reused; new ones are committed per chunk,
    so an interrupted run loses at most one chunk.

    A chunk is one batch of the backend (its `batch_size`; 32 for a backend without one) unless
    `chunk_size` says otherwise, and the prompts go in order of length, so a chunk holds prompts of
    similar length. (Chunks of 32 used to cap the demo's batches of 64 at 32, in prompt order.)
    """

    settings = settings or GenerationSettings()
    key = settings.key()
    out: list[str | None] = [
        cache.get(backend.identity, p, key) if cache is not None else None for p in prompts
    ]
    # identical prompts are generated once (greedy or seeded, the answer is the same)
    first: dict[str, int] = {}
    for i, p in enumerate(prompts):
        first.setdefault(json.dumps(p, sort_keys=True, ensure_ascii=False), i)
    todo = sorted((i for i in first.values() if out[i] is None), key=lambda i: len(json.dumps(prompts[i])))
    size = chunk_size or getattr(backend, "batch_size", None) or 32
    bar = tqdm(total=len(first), initial=len(first) - len(todo), desc=desc, disable=not progress, leave=False)
    for start in range(0, len(todo), size):
        idx = todo[start : start + size]
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
    """A backend from a model spec: a path, Hub id or adapter folder; `hf:PATH` or `ct2:PATH` to
    name the engine; `vllm:PATH`; or `openai:MODEL[@URL]` for an OpenAI-compatible endpoint (key
    from `OPENAI_API_KEY`).

    A bare path or id is decoded by CTranslate2 (`CT2Backend`) when the model runs on the CPU in
    float32 and CTranslate2 is installed and converts it; otherwise, with a warning saying why where
    CTranslate2 was tried, by `model.generate` (`HFBackend`, which `hf:` always picks).
    """
    s = str(spec)
    if s.startswith("vllm:"):
        return VLLMBackend(s[len("vllm:") :])
    if s.startswith("openai:"):
        return EndpointBackend.from_spec(s, batch_size=batch_size)
    engine, _, rest = s.partition(":")
    if engine in ("hf", "ct2") and rest:
        s = rest
    else:
        engine = ""
    # "org/name" is a Hub id; anything that looks like a filesystem path must exist
    if s.startswith(("/", ".", "~")) and not Path(s).expanduser().exists():
        raise InputError("model folder not found", path=s)
    if engine == "ct2":
        if dtype != "float32":
            raise InputError(f"the ct2 backend computes in float32 here, not {dtype}", field="dtype")
        return CT2Backend(s, batch_size=batch_size)
    if engine == "" and dtype == "float32" and _runs_on_cpu(device):
        try:
            return CT2Backend(s, batch_size=batch_size)
        except EngineUnavailable as exc:
            warnings.warn(f"generating with transformers instead of CTranslate2: {exc}", stacklevel=2)
    return HFBackend(s, batch_size=batch_size, dtype=dtype, device=device)


def _runs_on_cpu(device: str | None) -> bool:
    from trace_realign.model.loading import compute_device

    return (str(device) if device is not None else compute_device().type).split(":")[0] == "cpu"
