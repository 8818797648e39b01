"""The judge interface: the oracle pi_new that reads a (prompt, response) under a policy."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from trace_realign.judges.policy import Policy
from trace_realign.schema import Verdict


@dataclass(frozen=True)
class JudgeItem:
    """One thing to judge. `prompt` is plain text (conversations already rendered).

    `meta` is context that is not judged text: triage passes `{"side": "chosen" | "rejected",
    "pair": pair.meta}` so that a label judge can read verdicts from the data's own columns.
    It never enters a cache key.
    """

    prompt: str
    response: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


OnVerdict = Callable[[int, Verdict], None]


@runtime_checkable
class Judge(Protocol):
    """A batch of items in, one verdict each out, in order.

    `identity` names the judge for the verdict cache (kind, model, decisive options; never a
    secret). `on_verdict(index, verdict)` is called as soon as each verdict is known, so the
    caller can commit it before the batch ends. A verdict the judge could not give is
    `Label.UNKNOWN`, never a guess. Raises `JudgeUnavailableError` when the judge cannot be
    reached at all after its retries.
    """

    identity: str

    def judge(
        self, policy: Policy, items: Sequence[JudgeItem], on_verdict: OnVerdict | None = None
    ) -> list[Verdict]: ...
