"""Oracle noise: flip a share of another judge's verdicts (`noisy:RATE:SPEC`, docs/method.md).

Whether an item is flipped depends only on the seed and the item (its prompt, response and, for
label judges, its side), never on batch order or on what else is judged, so a rerun or a resumed
run flips exactly the same items. Unknown verdicts stay unknown.

`cache.judge_with_cache` sees `wraps` and caches the wrapped judge's verdicts under the wrapped
judge's identity, applying `transform` afterwards: a noise study at several rates pays for the
real judge once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from trace_realign.errors import InputError
from trace_realign.judges.base import Judge, JudgeItem, OnVerdict
from trace_realign.judges.policy import Policy
from trace_realign.schema import Label, Verdict

_FLIP = {Label.COMPLIANT: Label.NON_COMPLIANT, Label.NON_COMPLIANT: Label.COMPLIANT}


def flip_draw(seed: int, item: JudgeItem) -> float:
    """A uniform number in [0, 1) fixed by (seed, item)."""
    key = f"{seed}\x00{item.meta.get('side', '')}\x00{item.prompt}\x00{item.response}"
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


class NoisyJudge:
    def __init__(self, inner: Judge, rate: float, seed: int = 0) -> None:
        if not 0.0 <= rate <= 1.0:
            raise InputError(f"noise rate must be between 0 and 1, got {rate}", field="judge")
        self.wraps, self.rate, self.seed = inner, rate, seed
        self.cacheable = getattr(inner, "cacheable", True)
        self.identity = f"noisy:{rate:g}:seed={seed}:{inner.identity}"

    def __getattr__(self, name: str):  # max_tokens, calls, close ... of the wrapped judge
        if name == "wraps":
            raise AttributeError(name)
        return getattr(self.wraps, name)

    def transform(self, item: JudgeItem, v: Verdict) -> Verdict:
        if v.label not in _FLIP or flip_draw(self.seed, item) >= self.rate:
            return v
        return Verdict(_FLIP[v.label], f"[flipped by noise {self.rate:g}] {v.reason}", v.raw)

    def judge(
        self, policy: Policy, items: Sequence[JudgeItem], on_verdict: OnVerdict | None = None
    ) -> list[Verdict]:
        inner_cb = None if on_verdict is None else (lambda i, v: on_verdict(i, self.transform(items[i], v)))
        verdicts = self.wraps.judge(policy, items, inner_cb)
        return [self.transform(it, v) for it, v in zip(items, verdicts, strict=True)]
