"""Read whatever parts of run directories exist (docs/architecture.md, "A run directory").

    RUN/triage/{summary.json, triaged.jsonl}   RUN/score/{summary.json, weighted.jsonl}
    RUN/train/<method>/run_summary.json        RUN/eval/<name>/{metrics.json, responses.jsonl}
    RUN/comparison.json  RUN/tradeoff.json     (written by `trace-realign demo`; evaluate/compare.py)

A folder that itself holds `metrics.json` is read as one evaluation. Nothing is required: a
missing or unreadable part becomes a note in the report, never an error, because a report on
a half-finished run is exactly what one wants while it runs.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trace_realign.errors import InputError
from trace_realign.io import read_jsonl
from trace_realign.triage.audit import judge_error

CATEGORY_NAMES = ("INVERT", "PUNISH", "RETAIN", "UNKNOWN")


@dataclass
class Evaluation:
    name: str
    metrics: dict[str, Any]
    responses: list[dict[str, Any]] = field(default_factory=list)
    external: list[dict[str, Any]] = field(default_factory=list)  # external.jsonl: real harmful prompts


@dataclass
class Run:
    """One run directory's parts; None (or empty) where the part is missing."""

    path: Path
    name: str
    triage: dict[str, Any] | None = None  # summary.json, or counts rebuilt from triaged.jsonl
    weights: list[tuple[str, float]] = field(default_factory=list)  # (category, impact_weight) per conflict
    score: dict[str, Any] | None = None
    training: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> run_summary.json
    evaluations: list[Evaluation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    comparison: dict[str, Any] | None = None  # comparison.json: cells over seeds, paired tests
    tradeoff: dict[str, Any] | None = None  # tradeoff.json: rates over training steps per method
    is_evaluation: bool = False  # the folder was an evaluation folder, not a run directory


def _json(path: Path, notes: list[str]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        notes.append(f"{path}: unreadable ({type(exc).__name__}), skipped")
        return None


def _jsonl(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    if not path.is_file():
        return []

    def skip(error: InputError) -> None:
        # a file being written right now ends in a partial line; keep what came before
        notes.append(f"{path}:{error.line}: unreadable line, skipped")

    return [row for _, row in read_jsonl(path, on_bad_line=skip)]


def _triage_from_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The parts of triage's summary.json the report uses, rebuilt from triaged.jsonl."""
    counts = Counter(str(r.get("category", "UNKNOWN")) for r in rows)
    n = len(rows)
    harm: dict[str, Counter] = {}
    for r in rows:
        tags: set[str] = set()
        for side in ("chosen", "rejected"):
            info = (r.get("meta") or {}).get(side)
            if isinstance(info, dict) and isinstance(info.get("harm_categories"), list):
                tags.update(str(t) for t in info["harm_categories"])
        for t in tags:
            harm.setdefault(t, Counter())[str(r.get("category", "UNKNOWN"))] += 1
    out: dict[str, Any] = {
        "pairs": n,
        "counts": {c: counts.get(c, 0) for c in CATEGORY_NAMES},
        "shares": {c: counts.get(c, 0) / n if n else 0.0 for c in CATEGORY_NAMES},
        "rebuilt_from": "triaged.jsonl",
    }
    if harm:
        out["harm_categories"] = {
            t: {"name": t, "pairs": sum(c.values()), **{k: c.get(k, 0) for k in CATEGORY_NAMES}}
            for t, c in sorted(harm.items())
        }
    return out


def read_evaluation(folder: Path, name: str, notes: list[str]) -> Evaluation | None:
    metrics = _json(folder / "metrics.json", notes)
    if not isinstance(metrics, dict) or "tpa" not in metrics:
        if (folder / "metrics.json").exists() and metrics is not None:
            notes.append(f"{folder / 'metrics.json'}: not an evaluation's metrics, skipped")
        return None
    external = _jsonl(folder / "external.jsonl", []) if (folder / "external.jsonl").is_file() else []
    return Evaluation(name, metrics, _jsonl(folder / "responses.jsonl", notes), external)


def read_run(path: str | Path, name: str | None = None) -> Run:
    p = Path(path)
    run = Run(p, name or p.resolve().name)
    if not p.is_dir():
        run.notes.append(f"{p}: not a folder")
        return run
    if (p / "metrics.json").is_file():  # an evaluation folder given directly
        run.is_evaluation = True
        ev = read_evaluation(p, run.name, run.notes)
        if ev:
            run.evaluations.append(ev)
        return run

    summary = _json(p / "triage" / "summary.json", run.notes)
    if isinstance(summary, dict) and "counts" in summary:
        run.triage = summary
    else:
        rows = _jsonl(p / "triage" / "triaged.jsonl", run.notes)
        if rows:
            run.triage = _triage_from_rows(rows)
    if run.triage is None:
        run.notes.append("no triage results (triage/summary.json or triage/triaged.jsonl)")
    elif "judge_error" not in run.triage:  # an audit written beside the triage after it ran
        audit = _json(p / "triage" / "audit.json", run.notes)
        if isinstance(audit, dict) and isinstance(audit.get("error_rate"), dict):
            run.triage["judge_error"] = {
                **judge_error(audit),
                "source_audit": str(p / "triage" / "audit.json"),
                "same_judge": audit.get("judge") == run.triage.get("judge"),
            }

    for row in _jsonl(p / "score" / "weighted.jsonl", run.notes):
        w = row.get("impact_weight")
        if isinstance(w, (int, float)) and not isinstance(w, bool):
            run.weights.append((str(row.get("category", "?")), float(w)))
    score = _json(p / "score" / "summary.json", run.notes)
    run.score = score if isinstance(score, dict) else None
    if not run.weights and run.score is None:
        run.notes.append("no impact weights (score/weighted.jsonl)")

    train = p / "train"
    for d in sorted(train.iterdir()) if train.is_dir() else []:
        summary = _json(d / "run_summary.json", run.notes)
        if isinstance(summary, dict):
            run.training[str(summary.get("method") or d.name)] = summary
    if not run.training:
        run.notes.append("no training runs (train/<method>/run_summary.json)")

    comparison = _json(p / "comparison.json", run.notes)
    run.comparison = comparison if isinstance(comparison, dict) and "models" in comparison else None
    tradeoff = _json(p / "tradeoff.json", run.notes)
    run.tradeoff = tradeoff if isinstance(tradeoff, dict) and "curves" in tradeoff else None

    ev_root = p / "eval"
    for d in sorted(ev_root.iterdir()) if ev_root.is_dir() else []:
        if d.is_dir():
            ev = read_evaluation(d, d.name, run.notes)
            if ev:
                run.evaluations.append(ev)
    if not run.evaluations:
        run.notes.append("no evaluations (eval/<name>/metrics.json)")
    return run


def read_runs(paths: list[str | Path]) -> list[Run]:
    """Read several runs; names stay unique (the folder name, then the parent's when two clash)."""
    runs = [read_run(p) for p in paths]
    seen = Counter(r.name for r in runs)
    for r in runs:
        if seen[r.name] > 1:
            r.name = f"{r.path.resolve().parent.name}/{r.name}"
    for r in runs:
        for ev in r.evaluations:
            if r.is_evaluation:
                ev.name = r.name
            elif len(runs) > 1:
                ev.name = f"{r.name}:{ev.name}"
    return runs
