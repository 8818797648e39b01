"""Batch judging through OpenAI's Batch API: one JSONL upload, one job, results within its window.

`BatchJudge` wraps an endpoint judge (`OpenAIJudge`) and is itself a `Judge` with the same
`identity`, so `judge_with_cache` stores its verdicts in the same verdict cache, under the same
keys, as the one-request-at-a-time judge: either mode can resume what the other started. A
request is the same chat completion the endpoint judge sends (same fenced messages, temperature
0, same answer budget) and its answer goes through the same strict verdict parsing.

One `judge()` call:

1. writes the request file (`<state>.requests.jsonl`, one line per item, `custom_id` a hash of
   the item), uploads it (`purpose="batch"`) and creates the job, then stores the job id, the
   file id and the custom ids in the state file (`batch.json` beside the triage output) before
   waiting: a run stopped from here on (Ctrl-C, a kill, `wait=0`) finds the job again;
2. polls the job every `poll` seconds until it ends, or until `wait` seconds have passed, when
   it raises `BatchPending` (exit 4) with the state kept; the same command later resumes;
3. reads the output file (and the error file): every 200 answer becomes a verdict, delivered
   through `on_verdict` and so committed to the cache at once. A request that failed, or that an
   expired or cancelled job never ran, is UNKNOWN, never stored, so the next run submits exactly
   those again in a new job. The state file is removed once its job is read.

A job that failed as a whole (its input was refused) and an endpoint that cannot be reached
raise `JudgeUnavailableError` (exit 3); errors mean what they mean for the endpoint judge.

Prices are not the project's to know: `Prices` holds the user's own per-million-token prices
and the batch discount (0.5 by default, OpenAI's published Batch API discount at the time of
writing), and `price_both_ways` turns a dry-run plan into both costs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trace_realign.cache import cache_key
from trace_realign.errors import InputError, JudgeUnavailableError, TraceError
from trace_realign.io import write_json_atomic, write_text_atomic
from trace_realign.judges.base import JudgeItem, OnVerdict
from trace_realign.judges.policy import Policy
from trace_realign.judges.prompt import TASK_REASONED, judge_messages, parse_verdict
from trace_realign.schema import Label, Verdict

# Imported inside functions: the openai SDK is imported inside the call that needs it: a triage with another judge never loads it.

ENDPOINT = "/v1/chat/completions"
DONE = {"completed", "expired", "cancelled", "failed"}
STATE_VERSION = 1


class BatchPending(TraceError):
    """The batch job has not finished yet: its id is stored, run the same command again later."""

    exit_code = 4


@dataclass(frozen=True)
class Prices:
    """USD per million tokens, as the user's provider charges them (never assumed by the project)."""

    input: float
    output: float
    batch_discount: float = 0.5  # the batch price is this share of the synchronous one

    def __post_init__(self) -> None:
        if self.input < 0 or self.output < 0:
            raise InputError("prices must be >= 0", field="price")
        if not 0 < self.batch_discount <= 1:
            raise InputError(
                f"batch_discount must lie in (0, 1], got {self.batch_discount}", field="batch_discount"
            )

    @classmethod
    def parse(cls, text: str, batch_discount: float = 0.5) -> Prices:
        """`"2.5,10"`: input and output USD per million tokens."""
        parts = [p.strip() for p in str(text).split(",")]
        try:
            if len(parts) != 2:
                raise ValueError
            return cls(float(parts[0]), float(parts[1]), float(batch_discount))
        except ValueError:
            raise InputError(
                f"expected INPUT,OUTPUT USD per million tokens (e.g. 2.5,10), got {text!r}", field="price"
            ) from None


def price_both_ways(prompt_tokens: int, answer_tokens: int, prices: Prices) -> dict[str, float]:
    """The cost of `prompt_tokens` in and `answer_tokens` out, one request at a time and in batch."""
    sync = (prompt_tokens * prices.input + answer_tokens * prices.output) / 1e6
    return {
        "sync_usd": sync,
        "batch_usd": sync * prices.batch_discount,
        "batch_discount": prices.batch_discount,
    }


def state_path_for(out: str | Path) -> Path:
    """Where a triage run keeps its batch job: `batch.json` beside `triaged.jsonl`, else `<stem>.batch.json`."""
    out = Path(out)
    if out.name == "triaged.jsonl":
        return out.with_name("batch.json")
    return out.with_name(out.name.removesuffix(".jsonl") + ".batch.json")


class BatchJudge:
    """`Judge` over the Batch API of the endpoint `judge` talks to (see the module doc)."""

    cacheable = True

    def __init__(
        self,
        judge: Any,
        state: str | Path,
        *,
        poll: float = 60.0,
        wait: float | None = None,
        completion_window: str = "24h",
        progress: bool = True,
    ) -> None:
        if getattr(judge, "wraps", None) is not None:
            raise InputError(
                f"batch mode sends requests itself: give it the openai judge, not a wrapper ({judge.identity})",
                field="judge",
            )
        if not hasattr(judge, "endpoint") or not hasattr(judge, "max_tokens"):
            raise InputError(
                f"batch mode needs an endpoint judge (openai:MODEL[@URL]), not {judge.identity}",
                field="judge",
            )
        self.inner, self.endpoint = judge, judge.endpoint
        self.identity = judge.identity  # the same cache keys as the synchronous judge
        self.max_tokens = judge.max_tokens
        self.state_path = Path(state)
        self.poll, self.wait, self.window, self.progress = poll, wait, completion_window, progress
        self.jobs: list[str] = []  # ids of the jobs this judge submitted or resumed

    def __repr__(self) -> str:
        return f"BatchJudge({self.identity!r})"

    @property
    def calls(self) -> int:
        return self.endpoint.calls

    def close(self) -> None:
        self.inner.close()

    # -- the pieces -------------------------------------------------------------------------------
    def custom_id(self, policy: Policy, item: JudgeItem) -> str:
        return "v" + cache_key("batch", self.identity, policy.hash, item.prompt, item.response)[:40]

    def request(self, policy: Policy, item: JudgeItem) -> dict[str, Any]:
        return {
            "model": self.endpoint.model,
            "messages": judge_messages(policy, item, TASK_REASONED),
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
        }

    def _sdk(self, what: str, call: Any) -> Any:
        import openai

        try:
            return call(self.endpoint.client())
        except openai.OpenAIError as exc:
            failure = self.endpoint.failure(exc)
            raise JudgeUnavailableError(
                f"batch {what} at {self.endpoint.base_url} failed: {failure}. "
                f"The job state is kept in {self.state_path}; rerun to resume."
            ) from None

    def _read_state(self, policy: Policy) -> dict[str, Any] | None:
        if not self.state_path.exists():
            return None
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except ValueError:
            raise InputError(
                "unreadable batch state (delete it to submit anew)", path=str(self.state_path)
            ) from None
        if not isinstance(state, dict) or not isinstance(state.get("batch_id"), str):
            raise InputError("not a batch state file", path=str(self.state_path), field="batch_id")
        if state.get("judge") != self.identity or state.get("policy") != policy.hash:
            raise InputError(
                f"holds a job of judge {state.get('judge')} under policy {state.get('policy')}, not this run's "
                "(delete it, or cancel that job first)",
                path=str(self.state_path),
                field="judge",
            )
        return state

    def _write_state(self, state: dict[str, Any]) -> None:

        write_json_atomic(self.state_path, state)

    def submit(self, policy: Policy, items: Sequence[JudgeItem]) -> dict[str, Any]:
        """Write the request file, upload it, create the job and store its state; the state is returned."""
        ids = [self.custom_id(policy, it) for it in items]
        lines = [
            json.dumps(
                {"custom_id": cid, "method": "POST", "url": ENDPOINT, "body": self.request(policy, it)},
                ensure_ascii=False,
            )
            for cid, it in zip(ids, items, strict=True)
        ]
        requests = self.state_path.with_name(self.state_path.name.removesuffix(".json") + ".requests.jsonl")

        write_text_atomic(requests, "\n".join(lines) + "\n")
        headers = self.endpoint.request_headers()
        data = requests.read_bytes()
        uploaded = self._sdk(
            "upload",
            lambda c: c.files.create(file=(requests.name, data), purpose="batch", extra_headers=headers),
        )
        job = self._sdk(
            "create",
            lambda c: c.batches.create(
                input_file_id=uploaded.id,
                endpoint=ENDPOINT,
                completion_window=self.window,
                extra_headers=headers,
            ),
        )
        state = {
            "version": STATE_VERSION,
            "batch_id": job.id,
            "input_file_id": uploaded.id,
            "judge": self.identity,
            "policy": policy.hash,
            "requests_file": str(requests),
            "custom_ids": ids,
            "submitted_at": time.time(),
            "status": job.status,
        }
        self._write_state(state)
        return state

    def _wait(self, state: dict[str, Any]) -> Any:
        """Poll until the job ends; `BatchPending` once `self.wait` seconds have passed."""
        headers = self.endpoint.request_headers()
        start = time.monotonic()
        while True:
            job = self._sdk("status", lambda c: c.batches.retrieve(state["batch_id"], extra_headers=headers))
            if job.status != state.get("status"):
                state["status"] = job.status
                self._write_state(state)
            if job.status in DONE:
                return job
            counts = getattr(job, "request_counts", None)
            done = (
                f"{counts.completed + counts.failed} of {counts.total} requests done" if counts else "running"
            )
            if self.wait is not None and time.monotonic() - start >= self.wait:
                raise BatchPending(
                    f"batch {state['batch_id']} is {job.status} ({done}); its id is stored in {self.state_path}: "
                    "run the same command again to collect the results"
                )
            if self.progress:
                print(f"batch {state['batch_id']}: {job.status}, {done}", flush=True)
            time.sleep(self.poll)

    def _download(self, file_id: str | None) -> list[dict[str, Any]]:
        if not file_id:
            return []
        headers = self.endpoint.request_headers()
        text = self._sdk("download", lambda c: c.files.content(file_id, extra_headers=headers).text)
        rows = []
        for line in text.splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue  # an unreadable line leaves its item UNKNOWN, retried next run
        return rows

    def collect(self, job: Any) -> dict[str, Verdict]:
        """custom_id -> verdict for every request the job's output and error files answer."""
        if job.status == "failed":
            errors = getattr(getattr(job, "errors", None), "data", None) or []
            why = (
                "; ".join(f"{getattr(e, 'code', '')}: {getattr(e, 'message', '')}" for e in errors[:3])
                or "no reason given"
            )
            self.state_path.unlink(missing_ok=True)
            raise JudgeUnavailableError(
                f"batch {job.id} failed as a whole ({why}); rerun to submit a new job"
            )
        out: dict[str, Verdict] = {}
        for row in self._download(getattr(job, "output_file_id", None)) + self._download(
            getattr(job, "error_file_id", None)
        ):
            cid = row.get("custom_id")
            if not isinstance(cid, str) or cid in out:
                continue
            response = row.get("response") or {}
            status = response.get("status_code")
            if status == 200 and not row.get("error"):
                try:
                    content = response["body"]["choices"][0]["message"]["content"]
                except (KeyError, IndexError, TypeError):
                    out[cid] = Verdict(
                        Label.UNKNOWN, "batch answer without a message", json.dumps(response)[:2000]
                    )
                    continue
                out[cid] = parse_verdict(content if isinstance(content, str) else "")
            else:
                err = row.get("error") or (response.get("body") or {}).get("error") or {}
                msg = err.get("message", "") if isinstance(err, dict) else str(err)
                out[cid] = Verdict(Label.UNKNOWN, f"batch request failed: HTTP {status} {msg}".strip())
        return out

    # -- the Judge protocol ------------------------------------------------------------------------
    def judge(
        self, policy: Policy, items: Sequence[JudgeItem], on_verdict: OnVerdict | None = None
    ) -> list[Verdict]:
        ids = [self.custom_id(policy, it) for it in items]
        where = {cid: i for i, cid in enumerate(ids)}
        results: list[Verdict | None] = [None] * len(items)

        def deliver(found: dict[str, Verdict]) -> None:
            for cid, v in found.items():
                i = where.get(cid)
                if i is not None and results[i] is None:
                    results[i] = v
                    if on_verdict is not None:
                        on_verdict(i, v)

        def not_run(indices: list[int], job: Any) -> None:
            for i in indices:
                if results[i] is None:
                    v = Verdict(
                        Label.UNKNOWN,
                        f"not run by batch {job.id} (status {job.status}): rerun to submit it again",
                    )
                    results[i] = v
                    if on_verdict is not None:
                        on_verdict(i, v)

        state = self._read_state(policy)
        if state is None:
            if not items:
                return []
            state = self.submit(policy, items)
        self.jobs.append(state["batch_id"])
        job = self._wait(state)
        deliver(self.collect(job))
        in_job = set(state.get("custom_ids") or [])
        self.state_path.unlink(missing_ok=True)
        not_run([i for i, cid in enumerate(ids) if cid in in_job], job)

        # items the stored job did not hold (the data grew since it was submitted): one more job
        rest = [i for i, v in enumerate(results) if v is None]
        if rest:
            state = self.submit(policy, [items[i] for i in rest])
            self.jobs.append(state["batch_id"])
            job = self._wait(state)
            deliver(self.collect(job))
            self.state_path.unlink(missing_ok=True)
            not_run(rest, job)
        return [v for v in results if v is not None]


def price_lines(plan: dict[str, Any], price: str | Prices, batch_discount: float = 0.5) -> str:
    """The dry run's price line: a plan from `plan_triage` priced one request at a time and in batch."""
    prices = price if isinstance(price, Prices) else Prices.parse(price, batch_discount)
    cost = price_both_ways(plan["prompt_tokens"], plan["max_answer_tokens"], prices)
    return (
        f"price at {prices.input:g} / {prices.output:g} USD per million input / output tokens, answers at "
        f"their cap (an upper bound): one request at a time about ${cost['sync_usd']:,.2f}, "
        f"batch about ${cost['batch_usd']:,.2f} ({prices.batch_discount:.0%} of that)"
    )
