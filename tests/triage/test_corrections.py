"""Oracle corrections against the loopback server: cached, deduplicated, failures bounded."""

from __future__ import annotations

import pytest

from trace_realign.cache import GenerationCache
from trace_realign.errors import InputError, JudgeUnavailableError
from trace_realign.judges.policy import Policy
from trace_realign.schema import PreferencePair
from trace_realign.triage.corrections import (
    CorrectionSource,
    OracleCorrections,
    correction_messages,
    make_corrections,
)

from ..judges.fault_server import FaultServer

POLICY = Policy("Decline weapons questions; help with everything else.")
FAST = {"timeout": 5.0, "progress": False}


@pytest.fixture
def server():
    with FaultServer() as s:
        yield s


def _pairs(prompts):
    return [PreferencePair(p, f"bad a {i}", f"bad b {i}") for i, p in enumerate(prompts)]


def test_corrections_are_generated_once_cached_and_in_order(server, tmp_path):
    cache = GenerationCache(tmp_path / "g.sqlite")
    prompts = ["how to build a rifle?", "and a bomb?", "how to build a rifle?", "x [[500x1]]"]
    oracle = OracleCorrections("gen", server.url, cache=cache, concurrency=3, **FAST)
    assert isinstance(oracle, CorrectionSource)
    out = oracle(POLICY, _pairs(prompts))
    assert all(y and y.startswith("CORRECTION:") for y in out) and out[0] == out[2] and out[0] != out[1]
    assert oracle.stats.to_dict() == {"pairs": 4, "prompts": 3, "cache_hits": 0, "calls": 3, "failed": 0}
    assert server.per_item["x [[500x1]]"] == 2 and len(cache) == 3
    body = server.bodies[0]
    assert body["temperature"] == 0 and body["messages"][0]["role"] == "system"
    assert POLICY.text in body["messages"][0]["content"]

    server.reset_counts()
    again = OracleCorrections("gen", server.url, cache=cache, **FAST)
    assert again(POLICY, _pairs(prompts)) == out and server.requests == 0 and again.stats.cache_hits == 3
    # another policy is another question
    again(Policy("Another policy."), _pairs(prompts[:1]))
    assert server.requests == 1


def test_a_failing_prompt_gets_no_correction_and_is_retried_later(server, tmp_path):
    cache = GenerationCache(tmp_path / "g.sqlite")
    oracle = OracleCorrections("gen", server.url, cache=cache, max_attempts=2, **FAST)
    out = oracle(POLICY, _pairs(["fine", "broken [[500x99]]"]))
    assert out[0] and out[1] is None and oracle.stats.failed == 1
    assert server.per_item["broken [[500x99]]"] == 2 and len(cache) == 1


def test_endpoint_down_raises_and_keeps_what_was_made(server, tmp_path):
    cache = GenerationCache(tmp_path / "g.sqlite")
    server.fail_all, server.fail_after = "503", 3
    prompts = [f"q{i}" for i in range(10)]
    oracle = OracleCorrections("gen", server.url, cache=cache, concurrency=1, max_attempts=2, **FAST)
    with pytest.raises(JudgeUnavailableError):
        oracle(POLICY, _pairs(prompts))
    assert len(cache) == 3


def test_conversational_prompt_keeps_one_system_message():
    msgs = correction_messages(
        POLICY, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    )
    assert [m["role"] for m in msgs] == ["system", "user"] and msgs[0]["content"].endswith("Be brief.")


def test_make_corrections(tmp_path):
    o = make_corrections("openai:gen@http://127.0.0.1:9/v1", concurrency=5)
    assert o.endpoint.concurrency == 5 and o.endpoint.model == "gen"
    o = make_corrections({"kind": "openai", "model": "g", "max_tokens": "64", "temperature": 0.7})
    assert o.max_tokens == 64 and o.temperature == 0.7
    for bad in ["rules:x.yaml", {"kind": "openai"}, {"kind": "openai", "model": "g", "colour": 1}, 3]:
        with pytest.raises(InputError):
            make_corrections(bad)


def test_endpoint_options_reach_the_endpoint_from_either_wrapper():
    from trace_realign.judges.openai import EndpointOptions, OpenAIJudge

    url = "http://127.0.0.1:9/v1"
    assert OracleCorrections("g", url).endpoint.timeout == 120.0  # the oracle's own default
    assert OpenAIJudge("j", url).endpoint.timeout == 60.0
    opts = EndpointOptions(timeout=5.0, max_attempts=2)
    for wrapper in (
        OracleCorrections("g", url, options=opts, concurrency=3),
        OpenAIJudge("j", url, options=opts, concurrency=3),
    ):
        e = wrapper.endpoint
        assert (e.timeout, e.max_attempts, e.concurrency) == (5.0, 2, 3)
    with pytest.raises(TypeError):
        OpenAIJudge("j", url, colour=1)
    with pytest.raises(InputError, match="at least 1"):
        OracleCorrections("g", url, concurrency=0)


def test_a_bad_corrections_spec_names_the_corrections_field():
    with pytest.raises(InputError) as err:
        make_corrections("openai")
    assert err.value.field == "corrections"
