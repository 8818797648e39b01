"""Oracle corrections for PUNISH pairs: `y_c <- O(x, pi_new)` (docs/method.md, Stage 1 table).

A PUNISH pair has no compliant response to prefer, so the oracle writes one: the prompt is
sent to a model told to follow the new policy, and its answer becomes `y_c`. Anything that maps
(policy, pairs) to one correction or None per pair is a `CorrectionSource`; the scenario module
plugs in its own template-based source that way. `OracleCorrections` is the endpoint one: the
same OpenAI-compatible options, retries and failure policy as the endpoint judge, with every
generation committed to a `GenerationCache` as it arrives and each distinct prompt generated
once. A generation that keeps failing, or comes back empty, gives None (no correction) for its
pairs; an endpoint that is down raises `JudgeUnavailableError` with everything so far stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tqdm.auto import tqdm

from trace_realign.cache import GenerationCache
from trace_realign.errors import InputError
from trace_realign.io import read_jsonl
from trace_realign.judges.openai import (
    DEFAULT_BASE_URL,
    ChatEndpoint,
    EndpointOptions,
    default_base_url,
    run_batch,
)
from trace_realign.judges.policy import Policy
from trace_realign.judges.spec import OPTIONS as JUDGE_OPTIONS
from trace_realign.judges.spec import parse_spec, typed_options
from trace_realign.schema import Message, PreferencePair, Prompt


@runtime_checkable
class CorrectionSource(Protocol):
    """One correction `y_c` (or None when there is none) per pair, in order."""

    identity: str

    def __call__(self, policy: Policy, pairs: Sequence[PreferencePair]) -> list[str | None]: ...


SYSTEM = """\
You are a helpful assistant that follows this policy exactly:

{policy}

Answer the user's last message as the policy requires: help fully where the policy allows it; \
where it does not, decline briefly and offer what the policy does allow. Write only the answer."""

# Part of the identity: new wording, new generations.
PROMPT_VERSION = hashlib.sha256(SYSTEM.encode("utf-8")).hexdigest()[:8]


def correction_messages(policy: Policy, prompt: Prompt) -> list[Message]:
    """The policy as the system message, then the pair's prompt as the conversation."""
    system = SYSTEM.format(policy=policy.text.strip())
    convo = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    if convo and convo[0].get("role") == "system":
        # one system message: many servers reject a second one
        system = f"{system}\n\n{convo[0]['content']}"
        convo = convo[1:]
    return [{"role": "system", "content": system}, *convo]


@dataclass
class CorrectionStats:
    pairs: int = 0
    prompts: int = 0  # distinct prompts among them
    cache_hits: int = 0
    calls: int = 0  # prompts sent to the endpoint
    failed: int = 0  # prompts left without a correction

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


# The oracle's endpoint defaults: the judge's, but 120 s per request rather than 60.
ORACLE_OPTIONS = EndpointOptions(timeout=120.0)


class OracleCorrections:
    """`CorrectionSource` over an OpenAI-compatible endpoint (temperature 0 by default)."""

    def __init__(
        self,
        model: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        cache: GenerationCache | None = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
        down_after: int = 3,
        progress: bool = True,
        options: EndpointOptions | None = None,
        **endpoint: Any,
    ) -> None:
        """`options` (default `ORACLE_OPTIONS`) and `endpoint` keywords: see `EndpointOptions`."""
        self.endpoint = ChatEndpoint(model, base_url, options=options or ORACLE_OPTIONS, **endpoint)
        self.cache, self.max_tokens, self.temperature = cache, max_tokens, temperature
        self.down_after, self.progress = down_after, progress
        self.identity = f"oracle:{model}@{self.endpoint.base_url}|prompt={PROMPT_VERSION}"
        self.stats = CorrectionStats()

    def __repr__(self) -> str:
        return f"OracleCorrections({self.identity!r})"

    def close(self) -> None:
        self.endpoint.close()

    def _settings(self, policy: Policy) -> dict[str, Any]:
        return {"policy": policy.hash, "max_tokens": self.max_tokens, "temperature": self.temperature}

    def __call__(self, policy: Policy, pairs: Sequence[PreferencePair]) -> list[str | None]:
        settings = self._settings(policy)
        prompts: list[Prompt] = []
        index: dict[str, int] = {}  # distinct prompt -> its slot
        slot_of = []
        for p in pairs:
            k = repr(p.prompt)
            if k not in index:
                index[k] = len(prompts)
                prompts.append(p.prompt)
            slot_of.append(index[k])
        messages = [correction_messages(policy, x) for x in prompts]
        done: list[str | None] = [None] * len(prompts)
        if self.cache is not None:
            done = [self.cache.get(self.identity, m, settings) for m in messages]
        todo = [s for s, y in enumerate(done) if y is None]
        self.stats = CorrectionStats(len(pairs), len(prompts), len(prompts) - len(todo), len(todo))

        if todo:
            bar = tqdm(total=len(todo), desc="oracle corrections", unit="prompt", disable=not self.progress)

            def work(i: int, stop) -> str:
                return self.endpoint.complete(
                    messages[todo[i]], max_tokens=self.max_tokens, temperature=self.temperature, stop=stop
                )

            def on_result(i: int, text: str | None) -> None:
                bar.update(1)
                if text and text.strip():
                    done[todo[i]] = text.strip()
                    if self.cache is not None:
                        self.cache.put(self.identity, messages[todo[i]], settings, text.strip())

            try:
                run_batch(
                    work,
                    len(todo),
                    concurrency=self.endpoint.concurrency,
                    on_result=on_result,
                    on_failure=lambda i, reason: None,
                    down_after=self.down_after,
                    what=f"correction oracle {self.endpoint.base_url} ({self.endpoint.model})",
                )
            finally:
                bar.close()
        self.stats.failed = sum(y is None for y in done)
        return [done[s] for s in slot_of]


class FileCorrections:
    """Corrections written beforehand (`file:PATH`): JSONL rows `{"id": pair id, "correction": y_c}`,
    looked up by pair id. The embedded scenario ships its template oracle this way."""

    def __init__(self, path: str | Path) -> None:

        self.table: dict[str, str] = {}
        for n, row in read_jsonl(path):
            for key in ("id", "correction"):
                if not isinstance(row.get(key), str):
                    raise InputError("expected a string", path=str(path), line=n, field=key)
            self.table[row["id"]] = row["correction"]
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
        self.identity = f"file:{Path(path).name}@{digest}"

    def __call__(self, policy: Policy, pairs: Sequence[PreferencePair]) -> list[str | None]:
        return [self.table.get(p.id) for p in pairs]

    def close(self) -> None:
        pass


def make_corrections(
    spec: str | dict[str, Any], cache: GenerationCache | None = None, concurrency: int | None = None
) -> OracleCorrections | FileCorrections:
    """`openai:MODEL[@URL]`, a block `{kind: openai, model, base_url, api_key_env, max_tokens, ...}`,
    or `file:PATH` (corrections written beforehand, see `FileCorrections`)."""
    target = spec.get("spec") if isinstance(spec, dict) else spec
    if isinstance(target, str) and target.startswith("file:"):
        return FileCorrections(target[len("file:") :])

    options = {**JUDGE_OPTIONS["openai"], "temperature": float, "progress": bool}

    def parse(text: str) -> tuple[str, dict[str, Any]]:
        try:
            return parse_spec(text)
        except InputError as exc:  # the same grammar as judges, but the user wrote it as `corrections`
            raise InputError(exc.detail, field="corrections") from None

    if isinstance(spec, str):
        kind, opts = parse(spec)
    elif isinstance(spec, dict):
        opts = dict(spec)
        if "spec" in opts:
            kind, parsed = parse(str(opts.pop("spec")))
            opts = {**parsed, **opts}
        else:
            kind = str(opts.pop("kind", ""))
    else:
        raise InputError(
            f"corrections are a spec string or a mapping, got {type(spec).__name__}", field="corrections"
        )
    if kind != "openai":
        raise InputError(
            f"corrections need an openai:MODEL[@URL] generator, got {kind!r}", field="corrections"
        )
    if concurrency is not None:
        opts["concurrency"] = concurrency
    o = typed_options(options, opts, "corrections")
    if not o.get("model"):
        raise InputError("corrections need a model", field="corrections.model")
    return OracleCorrections(o.pop("model"), o.pop("base_url", None) or default_base_url(), cache=cache, **o)
