"""`trace-realign triage`: judge every old pair under the new policy and write triaged.jsonl.

    trace-realign triage --data pairs.jsonl --policy new_policy.md --judge rules:rules.yaml \\
        --out runs/x/triage/triaged.jsonl

Writes OUT (one row per pair, docs/architecture.md) and, beside it, the summary as JSON:
`summary.json` in OUT's folder when OUT is named `triaged.jsonl` (the run-directory layout),
otherwise `<OUT stem>.summary.json`; `--summary PATH` chooses another place. The summary is also
printed as tables. Every verdict is committed to the verdict cache as it arrives, so a run
stopped by Ctrl-C, a kill or an unreachable judge (exit 3) resumes where it stopped when the same
command is run again.

Options can also come from `--config FILE.yaml`: the same names as the flags (`data`, `policy`,
`judge`, `out`, `format`, `cache`, `corrections`, ...; `-` or `_` alike) at the top level or in
a `triage:` block, with `judge:` and `corrections:` either a spec string or a block. Flags given
on the command line win. Relative paths in the file are read from the file's folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from trace_realign.errors import InputError

OPTIONS = {
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
    # issue 14: a second judge, the audited error, batch mode and prices (judges/, triage/agreement.py)
    "judge2": None,
    "on_disagreement": "keep",
    "audit": None,
    "batch": False,
    "batch_poll": 60.0,
    "batch_wait": None,
    "price": None,
    "batch_discount": 0.5,
}
PATH_OPTIONS = ("policy", "out", "summary", "cache", "audit")
SHOW_SKIPPED = 20  # skipped rows printed; the summary JSON lists every one


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "triage",
        help="Stage 1: judge old pairs under the new policy (INVERT / PUNISH / RETAIN)",
        description=__doc__.split("\n\n")[0],
        epilog=_example(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # default=None everywhere: a flag left out must not hide the value from --config.
    p.add_argument("--data", help="JSONL/JSON/Parquet/CSV file, dataset folder or Hub dataset id")
    p.add_argument("--policy", help="text file with the new policy the judge applies")
    p.add_argument(
        "--judge",
        help="judge spec: openai:MODEL[@URL], hf:PATH, rules:FILE, labels:COL_W,COL_L, noisy:RATE:SPEC",
    )
    p.add_argument("--out", help="triaged JSONL to write")
    p.add_argument("--config", help="YAML file with these options and a judge: block")
    p.add_argument(
        "--format",
        choices=["auto", "trl", "pku"],
        default=None,
        help="row format (default: from the columns)",
    )
    p.add_argument("--split", default=None, help="dataset split for folders and Hub ids (default: train)")
    p.add_argument(
        "--dataset-config", default=None, help="dataset configuration of a Hub id (e.g. alpaca-7b)"
    )
    p.add_argument("--limit", type=int, default=None, help="triage only the first N pairs")
    p.add_argument(
        "--skip-bad-rows",
        action="store_true",
        default=None,
        help="skip malformed rows (listed in the summary)",
    )
    p.add_argument("--concurrency", type=int, default=None, help="judge requests in flight (endpoint judges)")
    p.add_argument(
        "--cache", default=None, help="verdict cache file (default: $TRACE_REALIGN_CACHE/verdicts.sqlite)"
    )
    p.add_argument(
        "--no-cache", action="store_true", default=None, help="judge without reading or storing verdicts"
    )
    p.add_argument(
        "--corrections", default=None, help="generator spec for oracle corrections y_c of PUNISH pairs"
    )
    p.add_argument(
        "--unknown-as",
        choices=["compliant", "non_compliant"],
        default=None,
        help="keep pairs with unknown verdicts by reading those verdicts as this (default: leave them out)",
    )
    p.add_argument("--summary", default=None, help="where to write the summary JSON")
    p.add_argument(
        "--dry-run", action="store_true", default=None, help="print the judge calls and tokens, call nothing"
    )
    p.add_argument(
        "--no-progress", dest="progress", action="store_false", default=None, help="no progress bar"
    )
    p.add_argument(
        "--judge2", default=None, help="a second judge: agreement in the summary, disagreements written out"
    )
    p.add_argument(
        "--on-disagreement",
        choices=["keep", "drop", "unknown"],
        default=None,
        help="pairs the two judges triage differently: keep the first judge's (default), drop them, or make them UNKNOWN",
    )
    p.add_argument(
        "--audit", default=None, help="audit.json of this judge: its measured error goes into the summary"
    )
    p.add_argument(
        "--batch", action="store_true", default=None, help="judge through the Batch API (openai judges)"
    )
    p.add_argument(
        "--batch-poll", type=float, default=None, help="seconds between job status checks (default 60)"
    )
    p.add_argument(
        "--batch-wait",
        type=float,
        default=None,
        help="give up waiting after this many seconds, exit 4 and keep the job id (default: wait)",
    )
    p.add_argument(
        "--price", default=None, help="USD per million tokens IN,OUT: the dry run prices both modes"
    )
    p.add_argument(
        "--batch-discount", type=float, default=None, help="batch price / normal price (default 0.5)"
    )
    return p


def _example() -> str:
    from trace_realign.data import EXAMPLES_DIR

    ex = EXAMPLES_DIR
    return (
        "a bundled example (12 old pairs, a new policy, that policy as rules):\n"
        f"  trace-realign triage --data {ex / 'pairs.jsonl'} --policy {ex / 'policy.md'} \\\n"
        f"      --judge rules:{ex / 'rules.yaml'} --out triaged.jsonl"
    )


def resolve_options(args: argparse.Namespace) -> dict[str, Any]:
    """Flags over `--config` over defaults; checks that the required ones are there."""
    opts = dict(OPTIONS)
    if getattr(args, "config", None):
        opts.update(_read_config(Path(args.config)))
    for key in OPTIONS:
        value = getattr(args, key, None)
        if value is not None:
            opts[key] = value
    for key in ("data", "policy", "judge", "out"):
        if opts[key] in (None, ""):
            raise InputError(f"missing: give --{key} or put '{key}:' in --config")
    if opts["limit"] is not None and int(opts["limit"]) < 0:
        raise InputError("--limit must be >= 0")
    return opts


def _read_config(path: Path) -> dict[str, Any]:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("config file not found", path=str(path)) from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise InputError(
            f"unparseable YAML ({getattr(exc, 'problem', exc)})",
            path=str(path),
            line=None if line is None else line + 1,
        ) from None
    if not isinstance(doc, dict):
        raise InputError("expected a mapping of options", path=str(path))
    found: dict[str, Any] = {}
    # Top-level keys may belong to other stages (a whole run config): take only ours from there.
    for key, value in doc.items():
        name = str(key).replace("-", "_")
        if name in OPTIONS:
            found[name] = value
    block = doc.get("triage")
    if block is not None:
        if not isinstance(block, dict):
            raise InputError("expected a mapping", path=str(path), field="triage")
        for key, value in block.items():
            name = str(key).replace("-", "_")
            if name not in OPTIONS:
                raise InputError(
                    f"unknown option (known: {', '.join(OPTIONS)})", path=str(path), field=f"triage.{key}"
                )
            found[name] = value
    for name in PATH_OPTIONS:
        if isinstance(found.get(name), str) and not Path(found[name]).is_absolute():
            found[name] = str(path.parent / found[name])
    # Data may be a Hub id and a judge's file may sit in the working folder: those are read
    # from the config's folder only when a file of that name is there.
    found["data"] = _beside(path, found.get("data"))
    for name in ("judge", "corrections"):
        spec = found.get(name)
        if isinstance(spec, dict) and "file" in spec:
            found[name] = {**spec, "file": _beside(path, spec["file"])}
        elif isinstance(spec, str) and spec.startswith("rules:"):
            found[name] = "rules:" + str(_beside(path, spec.removeprefix("rules:")))
    return {k: v for k, v in found.items() if v is not None}


def _beside(config: Path, value: Any) -> Any:
    if isinstance(value, str) and not Path(value).is_absolute() and (config.parent / value).exists():
        return str(config.parent / value)
    return value


def summary_path(out: str | Path) -> Path:
    """Where the summary of OUT goes by default (see the module doc)."""
    out = Path(out)
    if out.name == "triaged.jsonl":
        return out.with_name("summary.json")
    return out.with_name(out.name.removesuffix(".jsonl") + ".summary.json")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from trace_realign.cache import VerdictCache
    from trace_realign.data import load_pairs
    from trace_realign.io import write_json_atomic
    from trace_realign.judges.policy import Policy
    from trace_realign.judges.spec import make_judge
    from trace_realign.triage.triage import plan_triage, print_summary, summarise, triage_pairs, write_triaged

    opts = resolve_options(args)
    console = Console(stderr=False)
    policy = Policy.from_file(opts["policy"])
    load = load_pairs(
        opts["data"],
        format=opts["format"],
        split=opts["split"],
        name=opts["dataset_config"],
        skip_bad=bool(opts["skip_bad_rows"]),
        limit=None if opts["limit"] is None else int(opts["limit"]),
    )
    if load.rows_read == 0:
        raise InputError("no rows to triage", path=str(opts["data"]))
    for s in load.skipped[:SHOW_SKIPPED]:
        console.print(f"skipped {s}", style="yellow", highlight=False, soft_wrap=True)
    if len(load.skipped) > SHOW_SKIPPED:
        console.print(
            f"... and {len(load.skipped) - SHOW_SKIPPED} more skipped rows, all listed in the summary"
        )

    judge = make_judge(_with_concurrency(opts["judge"], opts["concurrency"]))
    if opts["batch"] and not opts["dry_run"]:
        from trace_realign.judges.batch import BatchJudge, state_path_for

        judge = BatchJudge(
            judge, state_path_for(opts["out"]), poll=float(opts["batch_poll"]),
            wait=None if opts["batch_wait"] is None else float(opts["batch_wait"]),
            progress=bool(opts["progress"]),
        )  # fmt: skip
    cache = None if opts["no_cache"] else VerdictCache(opts["cache"])
    closers = [c for c in (getattr(judge, "close", None), cache and cache.close) if callable(c)]
    try:
        if opts["dry_run"]:
            plan = plan_triage(load.pairs, judge, policy, cache)
            # only endpoint judges spend tokens; a local model or rules cost none
            cost = (
                f", about {plan['prompt_tokens']:,} prompt tokens (+ at most {plan['max_answer_tokens']:,} answer tokens)"
                if "openai:" in judge.identity
                else " (a local judge: no API tokens)"
            )
            console.print(
                f"dry run: {plan['pairs']} pairs, {plan['items']} responses to judge; "
                f"{plan['duplicates']} duplicates and {plan['cache_hits']} cached verdicts need no call; "
                f"{plan['calls']} judge calls{cost} with judge {judge.identity}",
                highlight=False,
                soft_wrap=True,
            )
            if opts["price"]:
                from trace_realign.judges.batch import price_lines

                console.print(price_lines(plan, opts["price"], opts["batch_discount"]), highlight=False)
            if opts["corrections"]:
                console.print(
                    "corrections: one generation per distinct PUNISH prompt, how many is known only after judging",
                    highlight=False,
                )
            return 0
        corrections = None
        if opts["corrections"]:
            corrections, generations = _corrections(opts)
            closers += [corrections.close] + ([generations.close] if generations is not None else [])
        result = triage_pairs(
            load.pairs,
            judge,
            policy,
            cache,
            corrections=corrections,
            unknown_as=opts["unknown_as"],
            progress=bool(opts["progress"]),
        )
        agreement = None
        if opts["judge2"]:
            from trace_realign.triage.agreement import disagreements_path_for, second_opinion

            result, agreement = second_opinion(
                load.pairs, result, opts["judge2"], policy, cache, on_disagreement=opts["on_disagreement"],
                disagreements_path=disagreements_path_for(opts["out"]), progress=bool(opts["progress"]),
            )  # fmt: skip
    finally:
        for close in closers:
            close()

    out = Path(opts["out"])
    summ_path = Path(opts["summary"]) if opts["summary"] else summary_path(out)
    summary = summarise(result, load)
    if agreement is not None:
        from trace_realign.triage.agreement import agreement_table

        summary["agreement"] = agreement
        console.print(agreement_table(agreement))
    if opts["audit"]:
        from trace_realign.judges.audit import judge_error_for

        summary["judge_error"] = judge_error_for(opts["audit"], result.judge_identity)
    summary["files"] = {"triaged": str(out), "summary": str(summ_path)}
    write_triaged(out, result.rows)
    write_json_atomic(summ_path, summary)
    print_summary(summary, console)
    if "judge_error" in summary:
        from trace_realign.judges.audit import judge_error_line

        console.print(judge_error_line(summary["judge_error"]), highlight=False, soft_wrap=True)
    unknown = summary["unknown"]
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
    return 0


def _with_concurrency(spec: str | dict[str, Any], concurrency: int | None) -> str | dict[str, Any]:
    """Pass --concurrency to the judge through its spec (a block gets a `concurrency` key)."""
    if concurrency is None:
        return spec
    if isinstance(spec, dict):
        return {**spec, "concurrency": int(concurrency)}
    return {"spec": spec, "concurrency": int(concurrency)}


def _corrections(opts: dict[str, Any]):
    """The oracle correction generator, its generations cached beside the verdict cache."""
    from trace_realign.cache import GENERATIONS_FILE, GenerationCache
    from trace_realign.triage.corrections import make_corrections

    spec = opts["corrections"]
    spec = {**spec} if isinstance(spec, dict) else {"spec": spec}
    spec.setdefault("progress", bool(opts["progress"]))
    cache = None
    if not opts["no_cache"]:
        cache = GenerationCache(Path(opts["cache"]).parent / GENERATIONS_FILE if opts["cache"] else None)
    return make_corrections(spec, cache=cache, concurrency=opts["concurrency"]), cache
