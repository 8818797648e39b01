"""A judge on any OpenAI-compatible `/v1/chat/completions` endpoint (OpenAI, vLLM, llama.cpp, Ollama).

Requests go through the `openai` Python SDK, which does the transport: timeouts, retries of 408,
409, 429, 5xx, timeouts and dropped or refused connections with exponential backoff and jitter,
and a server's `Retry-After` honoured (up to two minutes). What this module adds on top, decided
here once and shared with the correction generator and the model endpoint:

- `max_attempts` bounds the requests per call (the SDK's `max_retries` is `max_attempts - 1`).
- 401, 403 and 404 are configuration errors (key, permissions, model or URL): retrying cannot
  help, so the whole batch stops with `JudgeUnavailableError` at once.
- Another 4xx (a request the server refuses, e.g. one too long for its context) fails only that
  item.
- An item that fails for good becomes UNKNOWN, with the last error as its reason, as long as
  the endpoint is answering other items. When `down_after` items in a row fail for good with no
  success in between, the endpoint is down: the batch stops with `JudgeUnavailableError`.
  Verdicts delivered before that were already committed by the caller, so a rerun resumes.

The API key is read from an environment variable (default `OPENAI_API_KEY`) when the judge is
built and handed to the SDK, which sends it only in the `Authorization` header (no header at
all when the variable is unset, for local servers); it is never part of the identity, a log, a
reason or a repr.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

from trace_realign.errors import InputError, JudgeUnavailableError
from trace_realign.judges.base import JudgeItem, OnVerdict
from trace_realign.judges.policy import Policy
from trace_realign.judges.prompt import TASK_REASONED, TEMPLATE_VERSION, judge_messages, parse_verdict
from trace_realign.schema import Label, Verdict

# Imported inside functions: the openai SDK (and its HTTP client) is imported inside the functions that call it: a triage with
# another judge never loads it.

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
FATAL_STATUS = {401, 403, 404}
# The SDK insists on a key; a local server without one gets this, and the header is omitted.
_NO_KEY = "no-key"

T = TypeVar("T")


class CallFailed(Exception):
    """One call failed for good. `fatal`: no other call can succeed either (bad key, URL, model)."""

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


class _Stopped(Exception):
    """The batch was stopped before this call was sent."""


def default_base_url() -> str:
    """Like the OpenAI client: `$OPENAI_BASE_URL` when set, else OpenAI itself."""
    return os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL


def normalise_base_url(url: str) -> str:
    """`http://host:8080` and `http://host:8080/v1/` both mean `http://host:8080/v1`."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(f"not an http(s) URL: {url!r}", field="base_url")
    return url if parts.path else url + "/v1"


@dataclass(frozen=True)
class EndpointOptions:
    """How a `ChatEndpoint` talks to its server. The judge and the correction oracle take the same
    fields as keyword arguments and pass them on, so each option is defined here once."""

    api_key_env: str = DEFAULT_KEY_ENV  # the variable holding the key, never the key itself
    timeout: float = 60.0  # seconds per request
    max_attempts: int = 6  # requests per call, retries included
    concurrency: int = 8  # requests in flight (threads and pooled connections)


class ChatEndpoint:
    """A thread-safe client for one model on one OpenAI-compatible endpoint, over the `openai` SDK."""

    def __init__(
        self,
        model: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        options: EndpointOptions | None = None,
        **overrides: Any,
    ) -> None:
        """`options` (default `EndpointOptions()`) with any of its fields overridden by keyword."""
        o = replace(options or EndpointOptions(), **overrides)
        if not model:
            raise InputError("the endpoint needs a model name", field="model")
        if o.max_attempts < 1 or o.concurrency < 1:
            raise InputError("max_attempts and concurrency must be at least 1", field="max_attempts")
        self.model = model
        self.base_url = normalise_base_url(base_url)
        self.api_key_env = o.api_key_env
        self.timeout, self.max_attempts, self.concurrency = o.timeout, o.max_attempts, o.concurrency
        self._api_key = os.environ.get(o.api_key_env) or None
        self.calls = 0  # HTTP requests sent, retries included
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "answers": 0}  # as the server reports it
        self._count_lock = threading.Lock()
        self._local = threading.local()  # the calling thread's stop event, read by `_count`
        self._client: Any = None
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:  # never shows the key
        return f"ChatEndpoint(model={self.model!r}, base_url={self.base_url!r}, api_key_env={self.api_key_env!r})"

    def _count(self, request: Any) -> None:
        # Runs before every HTTP request, the SDK's retries included: once the batch is stopped
        # (a fatal error, the endpoint down) no retry of an item in flight reaches the server.
        stop = getattr(self._local, "stop", None)
        if stop is not None and stop.is_set():
            raise _Stopped
        with self._count_lock:
            self.calls += 1

    def client(self) -> Any:
        """The SDK client (built on first use, rebuilt after `close`): also used by batch mode."""
        with self._client_lock:
            if self._client is None:
                import httpx2  # the SDK's HTTP library
                import openai

                limits = httpx2.Limits(
                    max_connections=self.concurrency, max_keepalive_connections=self.concurrency
                )
                # every HTTP request, each retry included, passes this hook: that is `calls`
                http = openai.DefaultHttpxClient(limits=limits, event_hooks={"request": [self._count]})
                self._client = openai.OpenAI(
                    api_key=self._api_key or _NO_KEY,
                    base_url=self.base_url,
                    timeout=self.timeout,
                    max_retries=self.max_attempts - 1,
                    http_client=http,
                )
            return self._client

    def request_headers(self) -> dict[str, Any]:
        """Per-request headers: no `Authorization` at all when there is no key."""
        if self._api_key:
            return {}
        import openai

        return {"Authorization": openai.Omit()}

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def failure(self, exc: Exception) -> CallFailed:
        """What an SDK error means here (see the module doc); the message never holds the key."""
        import openai

        after = f" (after {self.max_attempts} attempt{'s' * (self.max_attempts > 1)})"
        if isinstance(exc, openai.APITimeoutError):
            return CallFailed(f"timed out after {self.timeout:g}s{after}")
        if isinstance(exc, openai.APIConnectionError):
            cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else type(exc).__name__
            return CallFailed(f"connection failed ({cause}){after}")
        if isinstance(exc, openai.APIStatusError):
            code = exc.status_code
            if code in FATAL_STATUS:
                hint = f" (is ${self.api_key_env} set and valid?)" if code in (401, 403) else ""
                return CallFailed(
                    f"{self.base_url} answered HTTP {code} for model {self.model!r}{hint}", fatal=True
                )
            if code in (408, 409, 429) or code >= 500:
                return CallFailed(f"HTTP {code}{after}")
            return CallFailed(f"HTTP {code}: {str(exc.message)[:200]} (after 1 attempt)")
        return CallFailed(f"unreadable response ({type(exc).__name__}) (after 1 attempt)")

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: threading.Event | None = None,
    ) -> str:
        """The assistant's answer, after at most `max_attempts` requests; `CallFailed` otherwise."""
        import openai

        if stop is not None and stop.is_set():
            raise _Stopped
        self._local.stop = stop
        try:
            r = self.client().chat.completions.create(
                model=self.model,
                messages=messages,
                temperature=temperature,
                max_tokens=max_tokens,
                extra_headers=self.request_headers(),
            )
            content = r.choices[0].message.content
            used = getattr(r, "usage", None)
            if used is not None:
                with self._count_lock:
                    self.usage["prompt_tokens"] += int(getattr(used, "prompt_tokens", 0) or 0)
                    self.usage["completion_tokens"] += int(getattr(used, "completion_tokens", 0) or 0)
                    self.usage["answers"] += 1
        except openai.OpenAIError as exc:
            if isinstance(exc.__cause__, _Stopped) or isinstance(exc.__context__, _Stopped):
                raise _Stopped from None
            raise self.failure(exc) from None
        except (AttributeError, IndexError, TypeError, ValueError) as exc:
            raise self.failure(exc) from None
        return content if isinstance(content, str) else ""


def run_batch(
    work: Callable[[int, threading.Event], T],
    n: int,
    *,
    concurrency: int,
    on_result: Callable[[int, T], None],
    on_failure: Callable[[int, str], T],
    down_after: int,
    what: str,
) -> list[T]:
    """Run `work(i, stop)` for i < n on `concurrency` threads, delivering each result as it lands.

    `work` raises `CallFailed` for an item that failed for good; `on_failure(i, reason)` turns it
    into a result (UNKNOWN for a judge). Callbacks run on the calling thread, one at a time.
    Raises `JudgeUnavailableError` on a fatal failure or `down_after` consecutive failures,
    after delivering every result that had already landed.
    """
    results: list[Any] = [None] * n
    stop = threading.Event()
    streak = 0
    fatal: str | None = None

    def guarded(i: int) -> T:
        if stop.is_set():
            raise _Stopped
        try:
            return work(i, stop)
        except CallFailed as exc:
            if exc.fatal:  # stop the other workers now, not when the main thread gets to it
                stop.set()
            raise

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, n))) as pool:
        pending: dict[Future, int] = {pool.submit(guarded, i): i for i in range(n)}
        try:
            while pending and fatal is None:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    i = pending.pop(fut)
                    try:
                        results[i] = fut.result()
                        streak = 0
                    except _Stopped:  # the fatal failure that stopped it is in `pending` too
                        continue
                    except CallFailed as exc:
                        if exc.fatal:
                            fatal = str(exc)
                            break
                        streak += 1
                        results[i] = on_failure(i, str(exc))
                        if streak >= down_after:
                            fatal = f"{down_after} items in a row failed; last: {exc}"
                            break
                    on_result(i, results[i])
        finally:
            stop.set()
            for fut in pending:
                fut.cancel()
    if fatal is not None:
        # Calls that were in flight when the batch stopped may still have succeeded: keep them.
        for fut, i in pending.items():
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                results[i] = fut.result()
                on_result(i, results[i])
        delivered = sum(r is not None for r in results)
        raise JudgeUnavailableError(
            f"{what} unavailable: {fatal}. {delivered} of {n} results were delivered; rerun to resume."
        )
    return results


class OpenAIJudge:
    """`Judge` over an OpenAI-compatible chat endpoint. Temperature 0, fenced prompt, strict parsing."""

    def __init__(
        self,
        model: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        max_tokens: int = 512,
        down_after: int = 3,
        options: EndpointOptions | None = None,
        **endpoint: Any,
    ) -> None:
        """`options` and `endpoint` keywords (`timeout=`, `concurrency=`, ...): see `EndpointOptions`."""
        self.endpoint = ChatEndpoint(model, base_url, options=options, **endpoint)
        self.max_tokens, self.down_after = max_tokens, down_after
        # What decides a verdict: endpoint, model, prompt wording, answer budget. Never the key.
        self.identity = (
            f"openai:{model}@{self.endpoint.base_url}|prompt={TEMPLATE_VERSION}|max_tokens={max_tokens}"
        )

    def __repr__(self) -> str:
        return f"OpenAIJudge({self.identity!r})"

    @property
    def calls(self) -> int:
        return self.endpoint.calls

    def close(self) -> None:
        self.endpoint.close()

    def judge(
        self, policy: Policy, items: Sequence[JudgeItem], on_verdict: OnVerdict | None = None
    ) -> list[Verdict]:
        def work(i: int, stop: threading.Event) -> Verdict:
            answer = self.endpoint.complete(
                judge_messages(policy, items[i], TASK_REASONED), max_tokens=self.max_tokens, stop=stop
            )
            return parse_verdict(answer)

        return run_batch(
            work,
            len(items),
            concurrency=self.endpoint.concurrency,
            on_result=on_verdict or (lambda i, v: None),
            on_failure=lambda i, reason: Verdict(Label.UNKNOWN, f"judge call failed: {reason}", ""),
            down_after=self.down_after,
            what=f"judge {self.endpoint.base_url} ({self.endpoint.model})",
        )


def estimate_tokens(policy: Policy, items: Sequence[JudgeItem], answer_tokens: int = 512) -> dict[str, int]:
    """A rough token estimate for `--dry-run` (about 4 characters per token, answers at their cap)."""
    prompt_chars = sum(len(json.dumps(judge_messages(policy, it), ensure_ascii=False)) for it in items)
    return {
        "calls": len(items),
        "prompt_tokens": prompt_chars // 4,
        "max_answer_tokens": answer_tokens * len(items),
    }
