"""Endpoint-judge throughput against the loopback fault server with a fixed 50 ms latency.

Measures verdicts per second at concurrency 1 and 32 in the same run, and the time of a rerun
that the verdict cache serves without a call. Prints one JSON line.

    python benchmarks/judge_throughput.py [--items 320] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

from trace_realign.cache import VerdictCache, judge_with_cache
from trace_realign.judges.base import JudgeItem
from trace_realign.judges.openai import OpenAIJudge
from trace_realign.judges.policy import Policy

ROOT = Path(__file__).resolve().parents[1]


def _fault_server():
    # the test suite's server, loaded by path: benchmarks are not a package of the tests
    spec = importlib.util.spec_from_file_location(
        "fault_server", ROOT / "tests" / "triage" / "fault_server.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["fault_server"] = module
    spec.loader.exec_module(module)
    return module.FaultServer


def _timed(judge, policy, items, cache):
    start = time.perf_counter()
    verdicts, stats = judge_with_cache(judge, policy, items, cache, progress=False)
    return time.perf_counter() - start, verdicts, stats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=320, help="items judged at concurrency 32")
    ap.add_argument("--items-c1", type=int, default=40, help="items judged at concurrency 1")
    ap.add_argument("--latency", type=float, default=0.05)
    args = ap.parse_args()
    policy = Policy("Never give harmful answers.")
    items = [JudgeItem(f"q{i}", f"harmful {i}" if i % 2 else f"kind {i}") for i in range(args.items)]
    with FaultServer(latency=args.latency) as server, tempfile.TemporaryDirectory() as tmp:
        t1, v1, _ = _timed(OpenAIJudge("m", server.url, concurrency=1), policy, items[: args.items_c1], None)
        cache = VerdictCache(Path(tmp) / "v.sqlite")
        t32, v32, s32 = _timed(OpenAIJudge("m", server.url, concurrency=32), policy, items, cache)
        before = server.requests
        tr, vr, sr = _timed(OpenAIJudge("m", server.url, concurrency=32), policy, items, cache)
        assert vr == v32 and v32[: args.items_c1] == v1 and server.requests == before and sr.calls == 0
        assert s32.calls == args.items
    vps1, vps32 = args.items_c1 / t1, args.items / t32
    print(
        json.dumps(
            {
                "benchmark": "judge_throughput",
                "latency_ms": round(args.latency * 1000),
                "verdicts_per_s_c1": round(vps1, 1),
                "verdicts_per_s_c32": round(vps32, 1),
                "speedup_c32_over_c1": round(vps32 / vps1, 1),
                "items_c1": args.items_c1,
                "items_c32": args.items,
                "judged_s_c32": round(t32, 3),
                "cached_rerun_s": round(tr, 4),
                "cached_rerun_speedup_over_c32": round(t32 / tr, 1),
                "cached_rerun_calls": sr.calls,
            }
        )
    )


FaultServer = _fault_server()

if __name__ == "__main__":
    main()
