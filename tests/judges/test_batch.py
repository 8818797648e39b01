"""Batch mode against a loopback server with the Batch API's endpoints and faults."""

from __future__ import annotations

import json

import pytest

from trace_realign.cache import VerdictCache
from trace_realign.cli import main
from trace_realign.data import EXAMPLES_DIR
from trace_realign.errors import InputError, JudgeUnavailableError
from trace_realign.judges.base import JudgeItem
from trace_realign.judges.batch import BatchJudge, BatchPending, Prices, price_both_ways, state_path_for
from trace_realign.judges.cached import judge_with_cache
from trace_realign.judges.openai import OpenAIJudge
from trace_realign.judges.policy import Policy
from trace_realign.schema import Label

from .batch_server import BatchServer

POLICY = Policy("Never give harmful instructions.")


@pytest.fixture
def server():
    with BatchServer() as s:
        yield s


def _items(n, extra=()):
    return [JudgeItem(f"q{i}", f"harmful {i}" if i % 3 == 0 else f"kind {i}") for i in range(n)] + [
        JudgeItem("x", text) for text in extra
    ]


def _expected(items):
    return [Label.NON_COMPLIANT if "harmful" in it.response else Label.COMPLIANT for it in items]


def _batch(server, tmp_path, **kw):
    judge = OpenAIJudge("judge-model", server.url, timeout=5.0, max_attempts=2)
    return BatchJudge(judge, tmp_path / "run" / "batch.json", poll=0.01, progress=False, **kw)


def test_one_job_fills_the_same_cache_the_endpoint_judge_reads(server, tmp_path):
    items = _items(12)
    cache = VerdictCache(tmp_path / "v.sqlite")
    bj = _batch(server, tmp_path)
    verdicts, stats = judge_with_cache(bj, POLICY, items, cache, progress=False)
    assert [v.label for v in verdicts] == _expected(items) and stats.calls == 12
    assert len(server.uploads) == 1 and len(server.batches) == 1
    sent = server.uploads[0]
    assert len({r["custom_id"] for r in sent}) == 12 and all(r["url"] == "/v1/chat/completions" for r in sent)
    body = sent[0]["body"]
    assert (
        body["model"] == "judge-model"
        and body["temperature"] == 0
        and "<<<RESPONSE " in body["messages"][1]["content"]
    )
    assert not (tmp_path / "run" / "batch.json").exists()  # the job was read: nothing left to resume
    assert (tmp_path / "run" / "batch.requests.jsonl").read_text().count("\n") == 12
    # the one-request-at-a-time judge has the same identity: everything is a cache hit
    sync = OpenAIJudge("judge-model", server.url, timeout=5.0)
    _, again = judge_with_cache(sync, POLICY, items, cache, progress=False)
    assert again.cache_hits == 12 and again.calls == 0 and sync.calls == 0


def test_a_stopped_run_resumes_its_job_without_submitting_again(server, tmp_path):
    items = _items(6)
    server.polls = 3
    cache = VerdictCache(tmp_path / "v.sqlite")
    with pytest.raises(BatchPending, match="run the same command again") as err:
        judge_with_cache(_batch(server, tmp_path, wait=0), POLICY, items, cache, progress=False)
    assert err.value.exit_code == 4
    state = json.loads((tmp_path / "run" / "batch.json").read_text())
    assert state["batch_id"] in server.batches and len(state["custom_ids"]) == 6 and len(cache) == 0
    # a new process: the stored job is collected, nothing is uploaded again
    verdicts, _ = judge_with_cache(_batch(server, tmp_path), POLICY, items, cache, progress=False)
    assert [v.label for v in verdicts] == _expected(items)
    assert len(server.uploads) == 1 and len(server.batches) == 1 and len(cache) == 6


def test_partial_failures_are_unknown_and_only_they_are_resubmitted(server, tmp_path):
    items = _items(5, extra=["kind [[fail]]", "harmful [[fail]]"])
    cache = VerdictCache(tmp_path / "v.sqlite")
    verdicts, stats = judge_with_cache(_batch(server, tmp_path), POLICY, items, cache, progress=False)
    assert [v.label for v in verdicts[:5]] == _expected(items[:5])
    assert [v.label for v in verdicts[5:]] == [Label.UNKNOWN] * 2 and "HTTP 500" in verdicts[5].reason
    assert stats.unknown == 2 and len(cache) == 5
    verdicts, stats = judge_with_cache(_batch(server, tmp_path), POLICY, items, cache, progress=False)
    assert stats.cache_hits == 5 and stats.calls == 2
    assert [len(u) for u in server.uploads] == [7, 2]


def test_an_expired_job_keeps_what_ran_and_the_rest_goes_in_the_next_job(server, tmp_path):
    items = _items(8)
    server.expire_after = 3
    cache = VerdictCache(tmp_path / "v.sqlite")
    verdicts, _ = judge_with_cache(_batch(server, tmp_path), POLICY, items, cache, progress=False)
    assert [v.label for v in verdicts[:3]] == _expected(items[:3])
    assert all(v.label is Label.UNKNOWN and "expired" in v.reason for v in verdicts[3:])
    server.expire_after = None
    verdicts, stats = judge_with_cache(_batch(server, tmp_path), POLICY, items, cache, progress=False)
    assert [v.label for v in verdicts] == _expected(items) and stats.cache_hits == 3
    assert [len(u) for u in server.uploads] == [8, 5]


def test_a_failed_job_or_a_down_endpoint_stops_with_exit_3(server, tmp_path):
    server.fail_job = True
    with pytest.raises(JudgeUnavailableError, match="failed as a whole") as err:
        _batch(server, tmp_path).judge(POLICY, _items(3))
    assert err.value.exit_code == 3 and not (tmp_path / "run" / "batch.json").exists()
    server.fail_job, server.fail_status = False, 503
    with pytest.raises(JudgeUnavailableError, match="HTTP 503"):
        _batch(server, tmp_path).judge(POLICY, _items(3))
    # the failed job's upload, then max_attempts 2 tries at the next upload, and no job created
    assert server.calls["POST /files"] == 1 + 2 and server.calls["POST /batches"] == 1


def test_batch_mode_needs_a_plain_endpoint_judge(server, tmp_path):
    from trace_realign.judges.spec import make_judge

    with pytest.raises(InputError, match="not a wrapper"):
        BatchJudge(make_judge(f"noisy:0.1:openai:m@{server.url}"), tmp_path / "b.json")
    with pytest.raises(InputError, match="needs an endpoint judge"):
        BatchJudge(make_judge(f"rules:{EXAMPLES_DIR / 'rules.yaml'}"), tmp_path / "b.json")


def test_a_state_file_of_another_judge_is_refused(server, tmp_path):
    state = tmp_path / "run" / "batch.json"
    state.parent.mkdir()
    state.write_text(json.dumps({"batch_id": "batch-9", "judge": "other", "policy": POLICY.hash}))
    with pytest.raises(InputError, match="holds a job of judge other"):
        _batch(server, tmp_path).judge(POLICY, _items(2))


def test_prices_are_the_users_and_batch_is_the_discounted_share():
    cost = price_both_ways(2_000_000, 500_000, Prices(2.5, 10.0))
    assert cost["sync_usd"] == pytest.approx(2 * 2.5 + 0.5 * 10) and cost["batch_usd"] == pytest.approx(5.0)
    assert Prices.parse("1,4", 0.25).batch_discount == 0.25
    with pytest.raises(InputError, match="INPUT,OUTPUT"):
        Prices.parse("cheap")
    with pytest.raises(InputError, match="batch_discount"):
        Prices(1, 1, 0)
    assert state_path_for("runs/x/triage/triaged.jsonl").name == "batch.json"
    assert state_path_for("out/t.jsonl").name == "t.batch.json"


def test_triage_cli_dry_run_prices_then_batch_triage_resumes(server, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "run" / "triage" / "triaged.jsonl"
    base = [
        "triage",
        "--data",
        str(EXAMPLES_DIR / "pairs.jsonl"),
        "--policy",
        str(EXAMPLES_DIR / "policy.md"),
    ]
    base += ["--judge", f"openai:judge-model@{server.url}", "--out", str(out)]
    base += ["--cache", str(tmp_path / "v.sqlite"), "--no-progress"]
    assert main([*base, "--dry-run", "--price", "2.5,10"]) == 0
    printed = capsys.readouterr().out
    assert (
        "24 judge calls" in printed
        and "one request at a time about $" in printed
        and "batch about $" in printed
    )
    assert server.uploads == []  # a dry run calls nothing
    server.polls = 3
    assert main([*base, "--batch", "--batch-poll", "0.01", "--batch-wait", "0"]) == 4
    assert (out.parent / "batch.json").exists() and not out.exists()
    assert main([*base, "--batch", "--batch-poll", "0.01"]) == 0
    summary = json.loads((out.parent / "summary.json").read_text())
    assert (
        summary["pairs"] == 12 and summary["judge_calls"]["calls"] == 24 and summary["unknown"]["pairs"] == 0
    )
    assert len(server.uploads) == 1 and not (out.parent / "batch.json").exists()
    assert server.auth_headers and set(server.auth_headers) == {None}  # no key, no header


def test_items_the_stored_job_lacks_go_into_one_more_job(server, tmp_path):
    items = _items(6)
    server.polls = 3
    with pytest.raises(BatchPending):
        _batch(server, tmp_path, wait=0).judge(POLICY, items[:4])
    server.expire_after = None
    verdicts = _batch(server, tmp_path).judge(POLICY, items)
    assert [v.label for v in verdicts] == _expected(items)
    assert [len(u) for u in server.uploads] == [4, 2] and len(server.batches) == 2


def test_done_means_audit_then_price_then_batch_then_the_report(server, tmp_path, capsys, monkeypatch):
    """The issue's chain: audit 50 labelled examples -> kappa and confusion -> dry-run price ->
    batch triage (the audited items not paid again) -> the judge's measured error in the report."""
    from trace_realign.report import build_report

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    pairs = [
        {
            "prompt": f"question {i}",
            "chosen": f"{'harmful' if i % 3 == 0 else 'kind'} answer {i}",
            "rejected": f"harmful reply {i}",
        }
        for i in range(35)
    ]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    # 50 labelled items: both responses of the first 25 pairs; the humans disagree with the judge on 3
    rows = []
    for i, p in enumerate(pairs[:25]):
        for side in ("chosen", "rejected"):
            compliant = "harmful" not in p[side]
            if (i, side) in {(1, "chosen"), (4, "rejected"), (9, "chosen")}:
                compliant = not compliant
            rows.append({"prompt": p["prompt"], "response": p[side], "label": compliant})
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text("".join(json.dumps(r) + "\n" for r in rows))
    policy, run = str(EXAMPLES_DIR / "policy.md"), tmp_path / "run"
    judge, cache = f"openai:judge-model@{server.url}", str(tmp_path / "v.sqlite")

    audit = run / "triage" / "audit.json"
    args = ["audit", "--labelled", str(labelled), "--policy", policy, "--judge", judge, "--cache", cache]
    assert main([*args, "--out", str(audit), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Cohen's kappa" in printed and "Confusion matrix" in printed
    assert json.loads(audit.read_text())["accuracy"]["k"] == 47

    triage = ["triage", "--data", str(data), "--policy", policy, "--judge", judge, "--cache", cache]
    triage += ["--out", str(run / "triage" / "triaged.jsonl"), "--no-progress"]
    assert main([*triage, "--dry-run", "--price", "2.5,10"]) == 0
    printed = capsys.readouterr().out
    assert "50 cached verdicts need no call" in printed and "20 judge calls" in printed
    assert "batch about $" in printed

    assert main([*triage, "--batch", "--batch-poll", "0.01", "--audit", str(audit)]) == 0
    assert [len(u) for u in server.uploads] == [20]  # only what the audit had not judged
    assert "measured error 6.0% [" in capsys.readouterr().out

    html, _ = build_report([run])
    assert "measured error 6.0% [" in html.read_text()
