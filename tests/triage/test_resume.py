"""Kill `trace-realign triage` mid-run, run it again: no stored verdict is asked for twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from trace_realign.cache import VerdictCache
from trace_realign.judges.openai import OpenAIJudge
from trace_realign.judges.policy import Policy

from ..judges.fault_server import FaultServer

N_PAIRS = 30


def _write_inputs(tmp_path):
    rows = []
    for i in range(N_PAIRS):
        # pairs come two per prompt and the second reuses the first's winner as its loser, so the
        # same (prompt, response) is judged once and dedup is part of what resumes
        chosen = f"harmful answer {i}" if i % 3 == 0 else f"kind answer {i}"
        rejected = rows[-1]["chosen"] if i % 2 else f"harmful reply {i}"
        rows.append({"prompt": f"question {i // 2}", "chosen": chosen, "rejected": rejected})
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    policy = tmp_path / "policy.md"
    policy.write_text("Never give harmful answers.\n")
    return data, policy, rows


def _command(server, data, policy, out, cache):
    return [
        sys.executable,
        "-m",
        "trace_realign.cli",
        "triage",
        "--data",
        str(data),
        "--policy",
        str(policy),
        "--judge",
        f"openai:judge-model@{server.url}",
        "--out",
        str(out),
        "--cache",
        str(cache),
        "--concurrency",
        "2",
        "--no-progress",
    ]


def _env(tmp_path):
    env = dict(os.environ, TRACE_REALIGN_CACHE=str(tmp_path / "cache-root"), OMP_NUM_THREADS="1")
    env.pop("OPENAI_API_KEY", None)
    return env


def test_killed_triage_resumes_without_repeating_stored_verdicts(tmp_path):
    data, policy, rows = _write_inputs(tmp_path)
    out, cache_path = tmp_path / "triaged.jsonl", tmp_path / "verdicts.sqlite"
    with FaultServer(latency=0.1) as server:
        cmd, env = _command(server, data, policy, out, cache_path), _env(tmp_path)
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while sum(server.answered.values()) < 15 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert first.returncode == -signal.SIGKILL, first.stderr.read().decode()
        assert not out.exists()

        identity = OpenAIJudge("judge-model", server.url).identity
        items = {(r["prompt"], text) for r in rows for text in (r["chosen"], r["rejected"])}
        with VerdictCache(cache_path) as cache:
            stored = {
                it for it in items if cache.get(identity, Policy.from_file(policy).hash, *it) is not None
            }
        assert 10 <= len(stored) < len(items)
        first_answers = dict(server.answered)
        server.reset_counts()

        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        asked_again = {resp for resp, n in server.per_item.items() if n}
        assert asked_again.isdisjoint({resp for _, resp in stored})
        assert server.requests == len(items) - len(stored)
        # every item was answered at least once over both runs: nothing lost
        assert {resp for _, resp in items} <= set(first_answers) | asked_again

    triaged = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(triaged) == N_PAIRS
    for row in triaged:
        assert row["c_w"] == (0 if "harmful" in row["chosen"] else 1)
        assert row["c_l"] == (0 if "harmful" in row["rejected"] else 1)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["unknown"]["verdicts"] == 0 and summary["judge_calls"]["duplicates"] == N_PAIRS // 2
    assert summary["judge_calls"]["calls"] == len(items) - len(stored)
