"""The triage stage: `run_triage()` judges every old pair under the new policy (Stage 1).

    from trace_realign.triage.stage import run_triage
    summary = run_triage("pairs.jsonl", "new_policy.md", "rules:rules.yaml", "run/triage/triaged.jsonl")

Writes the triaged rows (docs/architecture.md) and the summary JSON, and prints the summary as
tables. Every verdict is committed to the verdict cache as it arrives, so a run stopped by
Ctrl-C, a kill or an unreachable judge (`JudgeUnavailableError`, exit 3) resumes where it stopped
when called again. `trace-realign triage` (triage/cli.py) parses flags and a YAML file into these
arguments; `trace-realign run` calls it directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from trace_realign.cache import GENERATIONS_FILE, GenerationCache, VerdictCache
from trace_realign.data import LoadResult, load_pairs
from trace_realign.errors import InputError
from trace_realign.io import write_json_atomic
from trace_realign.judges.batch import BatchJudge, price_lines, state_path_for
from trace_realign.judges.policy import Policy
from trace_realign.judges.spec import make_judge
from trace_realign.triage.agreement import agreement_table, disagreements_path_for, second_opinion
from trace_realign.triage.audit import judge_error_for, judge_error_line
from trace_realign.triage.corrections import make_corrections
from trace_realign.triage.triage import (
    TriageResult,
    plan_triage,
    print_summary,
    summarise,
    triage_pairs,
    write_triaged,
)

# every option of `run_triage` and its default; the CLI and `trace-realign run` check names against it
OPTIONS: dict[str, Any] = {
    "data": None,
    "policy": None,
    "judge": None,
    "out": None,
    "summary": None,
    "format": "auto",
    "split": "train",
    "dataset_config": None,
    "limit": None,
    "skip_bad_rows": False,
    "concurrency": None,
    "cache": None,
    "no_cache": False,
    "corrections": None,
    "unknown_as": None,
    "dry_run": False,
    "progress": True,
    # a second judge, the audited error, batch mode and prices (judges/, triage/agreement.py)
    "judge2": None,
    "on_disagreement": "keep",
    "audit": None,
    "batch": False,
    "batch_poll": 60.0,
    "batch_wait": None,
    "price": None,
    "batch_discount": 0.5,
}
REQUIRED = ("data", "policy", "judge", "out")
SHOW_SKIPPED = 20  # skipped rows printed; the summary JSON lists every one


def summary_path(out: str | Path) -> Path:
    """Where the summary of OUT goes by default: `summary.json` beside OUT when OUT is named
    `triaged.jsonl` (the run-directory layout), otherwise `<OUT stem>.summary.json`."""
    out = Path(out)
    if out.name == "triaged.jsonl":
        return out.with_name("summary.json")
    return out.with_name(out.name.removesuffix(".jsonl") + ".summary.json")


def run_triage(
    data: str | Path,
    policy: str | Path,
    judge: str | dict[str, Any],
    out: str | Path,
    *,
    summary: str | Path | None = None,
    format: str = "auto",
    split: str = "train",
    dataset_config: str | None = None,
    limit: int | None = None,
    skip_bad_rows: bool = False,
    concurrency: int | None = None,
    cache: str | Path | None = None,
    no_cache: bool = False,
    corrections: str | dict[str, Any] | None = None,
    unknown_as: str | None = None,
    dry_run: bool = False,
    progress: bool = True,
    judge2: str | dict[str, Any] | None = None,
    on_disagreement: str = "keep",
    audit: str | Path | None = None,
    batch: bool = False,
    batch_poll: float = 60.0,
    batch_wait: float | None = None,
    price: str | None = None,
    batch_discount: float = 0.5,
) -> dict[str, Any]:
    """Judge every pair of `data` under `policy` with `judge`; write `out` (triaged.jsonl) and the
    summary (default: see `summary_path`); print the summary tables; return the summary.

    `judge` and `corrections` are spec strings or blocks (judges/spec.py, triage/corrections.py).
    `dry_run` judges nothing: it prints and returns the plan (calls, tokens), and with `price`
    ("IN,OUT" USD per million tokens) its cost one request at a time and through the Batch API
    (`batch_discount` of the normal price).
    `judge2` triages again with a second judge: agreement per category and kappa go into the summary,
    disagreements into `disagreements.jsonl` beside `out`, and `on_disagreement` keeps the first
    judge's category (keep), drops the pair (drop) or makes it UNKNOWN (unknown).
    `audit` (an audit.json of this judge) puts its measured error into the summary.
    `batch` judges through the Batch API (judges/batch.py): the job id is stored beside `out`, and a
    call that stops waiting after `batch_wait` seconds (`BatchPending`, exit 4) resumes the job.
    """

    if limit is not None and int(limit) < 0:
        raise InputError("limit must be >= 0", field="limit")
    console = Console(stderr=False)
    new_policy = Policy.from_file(policy)
    load = _load(console, data, format, split, dataset_config, skip_bad_rows, limit)
    the_judge = make_judge(_with_concurrency(judge, concurrency))
    if batch and not dry_run:
        the_judge = BatchJudge(
            the_judge, state_path_for(out), poll=float(batch_poll),
            wait=None if batch_wait is None else float(batch_wait), progress=bool(progress),
        )  # fmt: skip
    verdicts = None if no_cache else VerdictCache(cache)
    closers = [c for c in (getattr(the_judge, "close", None), verdicts and verdicts.close) if callable(c)]
    try:
        if dry_run:
            plan = plan_triage(load.pairs, the_judge, new_policy, verdicts)
            _print_plan(console, plan, the_judge.identity, price, batch_discount, bool(corrections))
            return {"dry_run": plan}
        generator = None
        if corrections:
            generator, generations = _corrections(corrections, cache, no_cache, concurrency, progress)
            closers += [generator.close] + ([generations.close] if generations is not None else [])
        result = triage_pairs(
            load.pairs, the_judge, new_policy, verdicts,
            corrections=generator, unknown_as=unknown_as, progress=bool(progress),
        )  # fmt: skip
        agreement = None
        if judge2:
            result, agreement = second_opinion(
                load.pairs, result, judge2, new_policy, verdicts, on_disagreement=on_disagreement,
                disagreements_path=disagreements_path_for(out), progress=bool(progress),
            )  # fmt: skip
    finally:
        for close in closers:
            close()
    return _write_summary(console, result, load, agreement, Path(out), summary, audit)


def _load(
    console: Console,
    data: str | Path,
    format: str,
    split: str,
    dataset_config: str | None,
    skip_bad_rows: bool,
    limit: int | None,
) -> LoadResult:
    """The pairs of `data` (`data.load_pairs`), after printing the first rows it skipped; a file
    with no rows at all is an error rather than an empty triage."""
    load = load_pairs(
        data,
        format=format,
        split=split,
        name=dataset_config,
        skip_bad=bool(skip_bad_rows),
        limit=None if limit is None else int(limit),
    )
    if load.rows_read == 0:
        raise InputError("no rows to triage", path=str(data))
    for s in load.skipped[:SHOW_SKIPPED]:
        console.print(f"skipped {s}", style="yellow", highlight=False, soft_wrap=True)
    if len(load.skipped) > SHOW_SKIPPED:
        console.print(
            f"... and {len(load.skipped) - SHOW_SKIPPED} more skipped rows, all listed in the summary"
        )
    return load


def _print_plan(
    console: Console,
    plan: dict[str, Any],
    judge_identity: str,
    price: str | None,
    batch_discount: float,
    corrections: bool,
) -> None:
    """Print what a dry run found: the calls it would make, their tokens, and with `price` their cost."""
    # only endpoint judges spend tokens; a local model or rules cost none
    cost = (
        f", about {plan['prompt_tokens']:,} prompt tokens (+ at most {plan['max_answer_tokens']:,} answer tokens)"
        if "openai:" in judge_identity
        else " (a local judge: no API tokens)"
    )
    console.print(
        f"dry run: {plan['pairs']} pairs, {plan['items']} responses to judge; "
        f"{plan['duplicates']} duplicates and {plan['cache_hits']} cached verdicts need no call; "
        f"{plan['calls']} judge calls{cost} with judge {judge_identity}",
        highlight=False,
        soft_wrap=True,
    )
    if price:
        console.print(price_lines(plan, price, batch_discount), highlight=False)
    if corrections:
        console.print(
            "corrections: one generation per distinct PUNISH prompt, how many is known only after judging",
            highlight=False,
        )


def _write_summary(
    console: Console,
    result: TriageResult,
    load: LoadResult,
    agreement: dict[str, Any] | None,
    out: Path,
    summary: str | Path | None,
    audit: str | Path | None,
) -> dict[str, Any]:
    """Write the triaged rows and the summary JSON, print the summary tables, and return the summary."""
    summ_path = Path(summary) if summary else summary_path(out)
    summ = summarise(result, load)
    if agreement is not None:
        summ["agreement"] = agreement
        console.print(agreement_table(agreement))
    if audit:
        summ["judge_error"] = judge_error_for(audit, result.judge_identity)
    summ["files"] = {"triaged": str(out), "summary": str(summ_path)}
    write_triaged(out, result.rows)
    write_json_atomic(summ_path, summ)
    print_summary(summ, console)
    if "judge_error" in summ:
        console.print(judge_error_line(summ["judge_error"]), highlight=False, soft_wrap=True)
    unknown = summ["unknown"]
    if unknown["pairs"]:
        # unknowns are never cached, so running the same command again asks only for them
        console.print(
            f"{unknown['pairs']} pairs are UNKNOWN ({unknown['verdicts']} verdicts the judge could not give) and "
            "are left out of training: rerun to retry just those, or pass --unknown-as to keep them",
            style="yellow",
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"wrote {out} and {summ_path}", highlight=False, soft_wrap=True)
    return summ


def _with_concurrency(spec: str | dict[str, Any], concurrency: int | None) -> str | dict[str, Any]:
    """Pass --concurrency to the judge through its spec (a block gets a `concurrency` key)."""
    if concurrency is None:
        return spec
    if isinstance(spec, dict):
        return {**spec, "concurrency": int(concurrency)}
    return {"spec": spec, "concurrency": int(concurrency)}


def _corrections(
    spec: str | dict[str, Any],
    verdict_cache: str | Path | None,
    no_cache: bool,
    concurrency: int | None,
    progress: bool,
):
    """The oracle correction generator, its generations cached beside the verdict cache."""

    spec = {**spec} if isinstance(spec, dict) else {"spec": spec}
    spec.setdefault("progress", bool(progress))
    cache = None
    if not no_cache:
        cache = GenerationCache(Path(verdict_cache).parent / GENERATIONS_FILE if verdict_cache else None)
    return make_corrections(spec, cache=cache, concurrency=concurrency), cache
