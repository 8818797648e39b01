"""The verdict and generation caches: keys, dedup, resume, UNKNOWN handling, several processes."""

from __future__ import annotations

import multiprocessing as mp
import threading

import pytest

from trace_realign.cache import GenerationCache, VerdictCache
from trace_realign.errors import JudgeUnavailableError
from trace_realign.judges.base import JudgeItem
from trace_realign.judges.cached import judge_with_cache
from trace_realign.judges.policy import Policy
from trace_realign.schema import Label, Verdict

POLICY = Policy("Refuse weapons instructions.")


class CountingJudge:
    """Compliant unless the response contains 'bad'; 'unsure' gives UNKNOWN; counts what it sees."""

    identity = "counting:v1"

    def __init__(self, fail_after: int | None = None) -> None:
        self.seen: list[tuple[str, str]] = []
        self.fail_after = fail_after

    def judge(self, policy, items, on_verdict=None):
        out = []
        for i, it in enumerate(items):
            if self.fail_after is not None and len(self.seen) >= self.fail_after:
                raise JudgeUnavailableError("down")
            self.seen.append((it.prompt, it.response))
            if "unsure" in it.response:
                v = Verdict(Label.UNKNOWN, "could not tell", "???")
            elif "bad" in it.response:
                v = Verdict(Label.NON_COMPLIANT, "bad thing", "VERDICT: NON_COMPLIANT")
            else:
                v = Verdict(Label.COMPLIANT, "fine", "VERDICT: COMPLIANT")
            if on_verdict:
                on_verdict(i, v)
            out.append(v)
        return out


def _items(n: int) -> list[JudgeItem]:
    return [JudgeItem(f"p{i}", "bad answer" if i % 3 == 0 else f"good answer {i}") for i in range(n)]


def test_verdict_roundtrip_and_key_parts(tmp_path):
    c = VerdictCache(tmp_path / "v.sqlite")
    v = Verdict(Label.NON_COMPLIANT, "why", "raw answer")
    assert c.put("j", "h", "p", "r", v)
    assert c.get("j", "h", "p", "r") == v
    # every key part matters
    assert c.get("j2", "h", "p", "r") is None
    assert c.get("j", "h2", "p", "r") is None
    assert c.get("j", "h", "p2", "r") is None
    assert c.get("j", "h", "p", "r2") is None
    # a split point moved between prompt and response is a different key
    assert VerdictCache.key("j", "h", "ab", "c") != VerdictCache.key("j", "h", "a", "bc")
    assert len(c) == 1


def test_unknown_is_not_stored(tmp_path):
    c = VerdictCache(tmp_path / "v.sqlite")
    assert not c.put("j", "h", "p", "r", Verdict(Label.UNKNOWN, "", "garbage"))
    assert c.get("j", "h", "p", "r") is None and len(c) == 0


def test_default_path_under_cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACE_REALIGN_CACHE", str(tmp_path / "root"))
    with VerdictCache() as v, GenerationCache() as g:
        assert v.path == tmp_path / "root" / "verdicts.sqlite"
        assert g.path == tmp_path / "root" / "generations.sqlite"


def test_judge_with_cache_dedups_serves_hits_and_keeps_order(tmp_path):
    cache = VerdictCache(tmp_path / "v.sqlite")
    items = _items(9) + [JudgeItem("p1", "good answer 1"), JudgeItem("p0", "bad answer")]
    judge = CountingJudge()
    verdicts, stats = judge_with_cache(judge, POLICY, items, cache, progress=False)
    # the plain reference: judge every item on its own
    expected = CountingJudge().judge(POLICY, items)
    assert verdicts == expected
    assert stats.items == 11 and stats.duplicates == 2 and stats.calls == 9 and stats.cache_hits == 0
    assert len(judge.seen) == len(set(judge.seen)) == 9

    again = CountingJudge()
    verdicts2, stats2 = judge_with_cache(again, POLICY, items, cache, progress=False)
    assert verdicts2 == expected and again.seen == [] and stats2.calls == 0 and stats2.cache_hits == 9

    # a new policy text is a new question
    other = CountingJudge()
    judge_with_cache(other, Policy("Another policy."), items, cache, progress=False)
    assert len(other.seen) == 9


def test_unknowns_are_retried_on_rerun(tmp_path):
    cache = VerdictCache(tmp_path / "v.sqlite")
    items = [JudgeItem("a", "fine"), JudgeItem("b", "unsure"), JudgeItem("c", "unsure")]
    v1, s1 = judge_with_cache(CountingJudge(), POLICY, items, cache, progress=False)
    assert [v.label for v in v1] == [Label.COMPLIANT, Label.UNKNOWN, Label.UNKNOWN] and s1.unknown == 2
    second = CountingJudge()
    _, s2 = judge_with_cache(second, POLICY, items, cache, progress=False)
    assert second.seen == [("b", "unsure"), ("c", "unsure")] and s2.cache_hits == 1 and s2.calls == 2


def test_verdicts_before_a_failure_are_kept(tmp_path):
    cache = VerdictCache(tmp_path / "v.sqlite")
    items = _items(10)
    with pytest.raises(JudgeUnavailableError):
        judge_with_cache(CountingJudge(fail_after=4), POLICY, items, cache, progress=False)
    assert len(cache) == 4
    resumed = CountingJudge()
    verdicts, stats = judge_with_cache(resumed, POLICY, items, cache, progress=False)
    assert stats.cache_hits == 4 and stats.calls == 6
    assert set(resumed.seen).isdisjoint({(it.prompt, it.response) for it in items[:4]})
    assert verdicts == CountingJudge().judge(POLICY, items)


def test_uncacheable_judge_gets_every_item(tmp_path):
    cache = VerdictCache(tmp_path / "v.sqlite")
    judge = CountingJudge()
    judge.cacheable = False
    items = [JudgeItem("a", "x"), JudgeItem("a", "x")]
    _, stats = judge_with_cache(judge, POLICY, items, cache, progress=False)
    assert len(judge.seen) == 2 and stats.calls == 2 and len(cache) == 0


def test_generation_cache(tmp_path):
    g = GenerationCache(tmp_path / "g.sqlite")
    msgs = [{"role": "user", "content": "hi"}]
    g.put("gen:a", msgs, {"max_new_tokens": 8}, "hello", {"tokens": 2})
    assert g.get("gen:a", msgs, {"max_new_tokens": 8}) == "hello"
    assert g.get_meta("gen:a", msgs, {"max_new_tokens": 8}) == {"tokens": 2}
    assert g.get("gen:a", msgs, {"max_new_tokens": 9}) is None
    assert g.get("gen:b", msgs, {"max_new_tokens": 8}) is None
    assert g.get("gen:a", "hi", {"max_new_tokens": 8}) is None


def test_threads_share_one_cache(tmp_path):
    cache = VerdictCache(tmp_path / "v.sqlite")

    def write(t: int) -> None:
        for i in range(50):
            cache.put("j", "h", f"p{t}", f"r{i}", Verdict(Label.COMPLIANT, str(i)))

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 200


def _write_from_process(path: str, tag: int) -> None:
    c = VerdictCache(path)
    for i in range(40):
        c.put("j", "h", f"p{tag}", f"r{i}", Verdict(Label.NON_COMPLIANT, f"{tag}-{i}"))
    c.close()


def test_processes_share_one_cache(tmp_path):
    path = str(tmp_path / "v.sqlite")
    VerdictCache(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write_from_process, args=(path, t)) for t in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    c = VerdictCache(path)
    assert len(c) == 80
    assert c.get("j", "h", "p1", "r39") == Verdict(Label.NON_COMPLIANT, "1-39")
