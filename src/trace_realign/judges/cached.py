"""Judge a batch through the verdict cache: the one way every stage asks a judge.

`judge_with_cache` folds identical (prompt, response) items, serves stored verdicts without a
call, commits each fresh verdict the moment it arrives (`cache.VerdictCache`), and returns the
verdicts in order with what the batch cost (`JudgeStats`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from tqdm.auto import tqdm

from trace_realign.cache import VerdictCache
from trace_realign.judges.base import Judge, JudgeItem
from trace_realign.judges.policy import Policy
from trace_realign.schema import Label, Verdict


@dataclass
class JudgeStats:
    """What one batch cost: `calls` items went to the judge, the rest came from cache or dedup."""

    items: int = 0
    duplicates: int = 0  # items folded onto an identical (prompt, response) earlier in the batch
    cache_hits: int = 0
    calls: int = 0  # distinct items sent to the judge
    unknown: int = 0  # items (counting duplicates) whose verdict is UNKNOWN

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def judge_with_cache(
    judge: Judge,
    policy: Policy,
    items: Sequence[JudgeItem],
    cache: VerdictCache | None,
    progress: bool = True,
) -> tuple[list[Verdict], JudgeStats]:
    """Judge `items` in order, asking the judge only for what is neither cached nor a duplicate.

    Each fresh verdict is committed to `cache` from the judge's `on_verdict` callback, so a
    `JudgeUnavailableError` (or a kill) half-way keeps everything judged so far.

    Judges whose verdict depends on `JudgeItem.meta` (the label judge reads the data's own
    columns) set `cacheable = False`: for them identical text is not the same question, so
    they get every item and nothing is stored.

    A judge that post-processes another one (the noise wrapper) names it in `wraps` and has
    `transform(item, verdict)`: the wrapped judge's verdicts are cached under its own identity
    and transformed afterwards.
    """
    wrapped = getattr(judge, "wraps", None)
    if wrapped is not None:
        verdicts, stats = judge_with_cache(wrapped, policy, items, cache, progress)
        verdicts = [judge.transform(it, v) for it, v in zip(items, verdicts, strict=True)]
        stats.unknown = sum(v.label is Label.UNKNOWN for v in verdicts)
        return verdicts, stats

    stats = JudgeStats(items=len(items))
    if not getattr(judge, "cacheable", True):
        verdicts = judge.judge(policy, items)
        stats.calls = len(items)
        stats.unknown = sum(v.label is Label.UNKNOWN for v in verdicts)
        return verdicts, stats

    unique, source = _fold_duplicates(items)
    stats.duplicates = len(items) - len(unique)

    results: list[Verdict | None] = [None] * len(unique)
    if cache is not None:
        for u, it in enumerate(unique):
            results[u] = cache.get(judge.identity, policy.hash, it.prompt, it.response)
    todo = [u for u, v in enumerate(results) if v is None]
    stats.cache_hits = len(unique) - len(todo)
    stats.calls = len(todo)
    if todo:
        fresh = _judge_and_commit(judge, policy, [unique[u] for u in todo], cache, progress)
        for u, v in zip(todo, fresh, strict=True):
            results[u] = v

    verdicts = [results[s] for s in source]
    assert all(v is not None for v in verdicts)
    stats.unknown = sum(v.label is Label.UNKNOWN for v in verdicts)
    return verdicts, stats  # type: ignore[return-value]


def _fold_duplicates(items: Sequence[JudgeItem]) -> tuple[list[JudgeItem], list[int]]:
    """The distinct (prompt, response) items in first-seen order, and for each input item the index
    of its distinct one: a batch often holds the same answer twice, and it is judged once."""
    first: dict[tuple[str, str], int] = {}
    source = []
    unique: list[JudgeItem] = []
    for it in items:
        k = (it.prompt, it.response)
        if k not in first:
            first[k] = len(unique)
            unique.append(it)
        source.append(first[k])
    return unique, source


def _judge_and_commit(
    judge: Judge,
    policy: Policy,
    items: list[JudgeItem],
    cache: VerdictCache | None,
    progress: bool,
) -> list[Verdict | None]:
    """The judge's verdicts on `items`, each committed to `cache` the moment it arrives, so that a
    failure or a kill half-way keeps everything judged so far."""
    got: list[Verdict | None] = [None] * len(items)
    bar = tqdm(total=len(items), desc=f"judging ({judge.identity})", unit="item", disable=not progress)
    lock = threading.Lock()

    def on_verdict(i: int, v: Verdict) -> None:
        it = items[i]
        if cache is not None:
            cache.put(judge.identity, policy.hash, it.prompt, it.response, v)
        with lock:
            got[i] = v
            bar.update(1)

    try:
        fresh = judge.judge(policy, items, on_verdict=on_verdict)
    finally:
        bar.close()
    # The returned list is authoritative (a judge might not call back for every item).
    for i, v in enumerate(fresh):
        if got[i] is None and cache is not None:
            it = items[i]
            cache.put(judge.identity, policy.hash, it.prompt, it.response, v)
        got[i] = v
    return got
