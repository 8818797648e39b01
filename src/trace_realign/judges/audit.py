"""Judge calibration: how often is this judge right under this policy, measured on a labelled sample.

`audit(judge, policy, rows)` runs the judge on labelled items through the same verdict cache as
triage (same identity, policy hash and rendered text, so an audited item is not paid for twice)
and compares its verdicts with the human ones:

- accuracy, and precision / recall of each verdict, each with a 95% Wilson score interval;
- Cohen's kappa with a 95% percentile bootstrap interval (`n_boot` resamples of the decided
  items, fixed seed, so the interval is reproducible);
- the confusion matrix (human verdict x judge verdict, UNKNOWN as its own column);
- the measured error rate `1 - accuracy` with its interval: the rate at which this judge flips
  a verdict, the quantity `noisy:RATE` simulates and `rdpo`'s `flip_rate` assumes;
- for pair rows, the triage category implied by the human labels against the judge's;
- every row the judge got wrong or could not decide, with its reason.

Accuracy, precision, recall and kappa are over the items the judge decided; items it could not
decide (UNKNOWN) are counted in `unknown` and `coverage` and listed with the wrong rows.

Labelled files are JSONL, one of two row shapes (mixing them is fine):

    {"prompt": ..., "response": ..., "label": "compliant"}                  an item
    {"prompt": ..., "chosen": ..., "rejected": ..., "chosen_label": true,   a pair: two items
     "rejected_label": "non_compliant"}

`prompt` is a string or a list of chat messages. A label is `compliant` / `non_compliant`,
true / false, 1 / 0, safe / unsafe or yes / no (the label judge's vocabulary). The label fields
are `label` and `chosen_label,rejected_label` unless named otherwise (dotted paths reach into
nested objects, e.g. `meta.chosen.safe`). A bad row is an `InputError` naming file, line, field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trace_realign.errors import InputError
from trace_realign.judges.base import Judge, JudgeItem
from trace_realign.judges.labels import to_label
from trace_realign.judges.policy import Policy
from trace_realign.schema import Label, render_prompt

Z95 = 1.959963984540054
VERDICTS = (Label.COMPLIANT, Label.NON_COMPLIANT)
ITEM_LABEL = "label"
PAIR_LABELS = ("chosen_label", "rejected_label")
LABEL_VALUES = "compliant/non_compliant, true/false, 1/0, safe/unsafe or yes/no"


@dataclass(frozen=True)
class LabelledItem:
    """One labelled response: what the judge sees, the human verdict, and where it came from."""

    item: JudgeItem
    truth: Label
    line: int
    side: str | None = None  # "chosen" / "rejected" for pair rows, None for item rows
    pair: int | None = None  # index of the pair among the file's pair rows


# ------------------------------------------------------------------------------ statistics


def wilson(k: int, n: int, z: float = Z95) -> dict[str, Any]:
    """`k` of `n` as a rate with its Wilson score interval; rate None when `n` is 0."""
    if n == 0:
        return {"k": 0, "n": 0, "rate": None, "ci95": None}
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)  # exact at the edges, not 1e-17 off
    hi = 1.0 if k == n else min(1.0, centre + half)
    return {"k": k, "n": n, "rate": p, "ci95": [lo, hi]}


def cohen_kappa(a: Sequence[Any], b: Sequence[Any]) -> float | None:
    """Cohen's kappa of two raters over the same items; None when chance agreement is 1 (undefined)."""
    n = len(a)
    if n == 0 or n != len(b):
        return None
    cats = set(a) | set(b)
    p_o = sum(x == y for x, y in zip(a, b, strict=True)) / n
    p_e = sum((sum(x == c for x in a) / n) * (sum(y == c for y in b) / n) for c in cats)
    if p_e >= 1.0:
        return None
    return (p_o - p_e) / (1 - p_e)


def kappa_with_ci(a: Sequence[Any], b: Sequence[Any], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Kappa and its 95% percentile bootstrap interval (resamples where kappa is undefined are dropped)."""
    import numpy as np

    k = cohen_kappa(a, b)
    n = len(a)
    out: dict[str, Any] = {
        "kappa": k,
        "n": n,
        "ci95": None,
        "interval": f"percentile bootstrap, {n_boot} resamples",
    }
    if k is None or n < 2:
        return out
    codes = {c: i for i, c in enumerate(sorted(set(a) | set(b), key=str))}
    xa = np.array([codes[x] for x in a])
    xb = np.array([codes[y] for y in b])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    ra, rb = xa[idx], xb[idx]
    p_o = (ra == rb).mean(axis=1)
    p_e = sum((ra == c).mean(axis=1) * (rb == c).mean(axis=1) for c in codes.values())
    ok = p_e < 1.0
    kappas = (p_o[ok] - p_e[ok]) / (1 - p_e[ok])
    if kappas.size:
        out["ci95"] = [float(np.percentile(kappas, 2.5)), float(np.percentile(kappas, 97.5))]
    return out


def agreement_stats(
    truth: Sequence[Label], judged: Sequence[Label], n_boot: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Accuracy, per-verdict precision/recall, kappa, confusion and error rate of `judged` against `truth`."""
    decided = [(t, j) for t, j in zip(truth, judged, strict=True) if j is not Label.UNKNOWN]
    n, d = len(truth), len(decided)
    correct = sum(t is j for t, j in decided)
    acc = wilson(correct, d)
    err = wilson(d - correct, d)
    per_verdict = {}
    for v in VERDICTS:
        tp = sum(t is v and j is v for t, j in decided)
        per_verdict[v.value] = {
            "precision": wilson(tp, sum(j is v for _, j in decided)),
            "recall": wilson(tp, sum(t is v for t, _ in decided)),
            "support": sum(t is v for t in truth),
        }
    confusion = {
        t.value: {j.value: sum(a is t and b is j for a, b in zip(truth, judged, strict=True)) for j in Label}
        for t in VERDICTS
    }
    kappa = kappa_with_ci([t.value for t, _ in decided], [j.value for _, j in decided], n_boot, seed)
    return {
        "items": n,
        "decided": d,
        "unknown": n - d,
        "coverage": wilson(d, n),
        "accuracy": acc,
        "error_rate": err,
        "per_verdict": per_verdict,
        "kappa": kappa,
        "confusion": confusion,
    }


# ------------------------------------------------------------------------------ labelled files


def _lookup(row: dict[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = row
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _label(row: dict[str, Any], column: str, path: str, line: int) -> Label:
    found, value = _lookup(row, column)
    if not found or value is None or value == "":
        raise InputError("missing label", path=path, line=line, field=column)
    label = to_label(value)
    if label is None:
        raise InputError(f"expected {LABEL_VALUES}, got {value!r}", path=path, line=line, field=column)
    return label


def _prompt(row: dict[str, Any], path: str, line: int) -> str:
    prompt = row.get("prompt")
    if isinstance(prompt, str) and prompt:
        return prompt
    if (
        isinstance(prompt, list)
        and prompt
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in prompt
        )
    ):
        return render_prompt(prompt)
    what = (
        "missing" if prompt is None else "expected a non-empty string or a list of {role, content} messages"
    )
    raise InputError(what, path=path, line=line, field="prompt")


def _text(row: dict[str, Any], key: str, path: str, line: int) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise InputError(
            "missing" if value is None else f"expected a string, got {type(value).__name__}",
            path=path,
            line=line,
            field=key,
        )
    return value


def read_labelled(
    path: str | Path,
    *,
    label: str = ITEM_LABEL,
    pair_labels: tuple[str, str] = PAIR_LABELS,
    limit: int | None = None,
) -> list[LabelledItem]:
    """The labelled items of a JSONL file (see the module doc); the first bad row raises `InputError`."""
    from trace_realign.io import read_jsonl

    out: list[LabelledItem] = []
    rows = pairs = 0
    for line, row in read_jsonl(path):
        if limit is not None and rows >= limit:
            break
        rows += 1
        prompt = _prompt(row, str(path), line)
        if "response" in row:
            response = _text(row, "response", str(path), line)
            out.append(LabelledItem(JudgeItem(prompt, response), _label(row, label, str(path), line), line))
            continue
        if "chosen" not in row and "rejected" not in row:
            raise InputError(
                "a row needs `response` (an item) or `chosen` and `rejected` (a pair)",
                path=str(path),
                line=line,
                field="response",
            )
        for side, column in zip(("chosen", "rejected"), pair_labels, strict=True):
            response = _text(row, side, str(path), line)
            truth = _label(row, column, str(path), line)
            item = JudgeItem(prompt, response, {"side": side, "pair": row})
            out.append(LabelledItem(item, truth, line, side, pairs))
        pairs += 1
    if not out:
        raise InputError("no labelled rows", path=str(path))
    return out


# ------------------------------------------------------------------------------ the audit


def audit(
    judge: Judge,
    policy: Policy,
    labelled: Sequence[LabelledItem],
    cache: Any = None,
    *,
    progress: bool = False,
    n_boot: int = 2000,
    seed: int = 0,
    source: str | None = None,
) -> dict[str, Any]:
    """Run `judge` on `labelled` (through `cache` when given) and measure it; see the module doc."""
    from trace_realign.cache import judge_with_cache

    verdicts, stats = judge_with_cache(judge, policy, [x.item for x in labelled], cache, progress=progress)
    truth = [x.truth for x in labelled]
    judged = [v.label for v in verdicts]
    report: dict[str, Any] = {
        "judge": judge.identity,
        "policy": {"name": policy.name, "hash": policy.hash},
        "source": source,
        **agreement_stats(truth, judged, n_boot, seed),
        "judge_calls": stats.to_dict(),
    }
    cats = _category_agreement(labelled, verdicts)
    if cats:
        report["categories"] = cats
    report["wrong"] = [
        {
            "line": x.line,
            **({"side": x.side} if x.side else {}),
            "prompt": x.item.prompt,
            "response": x.item.response,
            "human": x.truth.value,
            "judge": v.label.value,
            "reason": v.reason,
        }
        for x, v in zip(labelled, verdicts, strict=True)
        if v.label is not x.truth
    ]
    return report


def _category_agreement(labelled: Sequence[LabelledItem], verdicts: Sequence[Any]) -> dict[str, Any]:
    """For pair rows: the triage category from the human labels against the judge's, per category."""
    from trace_realign.triage.triage import categorise

    sides: dict[int, dict[str, tuple[Label, Label]]] = {}
    for x, v in zip(labelled, verdicts, strict=True):
        if x.pair is not None:
            sides.setdefault(x.pair, {})[x.side or ""] = (x.truth, v.label)
    pairs = [s for s in sides.values() if "chosen" in s and "rejected" in s]
    if not pairs:
        return {}
    human = [categorise(s["chosen"][0].bit, s["rejected"][0].bit).value for s in pairs]
    judged = [categorise(s["chosen"][1].bit, s["rejected"][1].bit).value for s in pairs]
    return category_table(human, judged, "human")


def category_table(reference: Sequence[str], other: Sequence[str], reference_name: str) -> dict[str, Any]:
    """Agreement of two triage categorisations of the same pairs, overall and per reference category."""
    per = {}
    for c in ("INVERT", "PUNISH", "RETAIN", "UNKNOWN"):
        idx = [i for i, r in enumerate(reference) if r == c]
        if idx:
            per[c] = wilson(sum(other[i] == c for i in idx), len(idx))
    confusion: dict[str, dict[str, int]] = {}
    for r, o in zip(reference, other, strict=True):
        confusion.setdefault(r, {}).setdefault(o, 0)
        confusion[r][o] += 1
    return {
        "pairs": len(reference),
        "by": reference_name,
        "agreement": wilson(sum(r == o for r, o in zip(reference, other, strict=True)), len(reference)),
        "per_category": per,
        "kappa": kappa_with_ci(list(reference), list(other)),
        "confusion": confusion,
    }


def audit_judge(
    judge: str | dict[str, Any] | Judge,
    policy: str | Path | Policy,
    labelled: str | Path | Sequence[LabelledItem],
    *,
    cache: Any = None,
    out: str | Path | None = None,
    progress: bool = False,
    source: str | None = None,
    **read_options: Any,
) -> dict[str, Any]:
    """The whole audit from Python: a judge spec (or judge), a policy (file or `Policy`) and a labelled
    file (or items) in, the audit dict out, written to `out` as JSON when given.

    What the demo and notebooks call; `trace-realign audit` is this with flags.
    """
    from trace_realign.judges.spec import make_judge

    j = judge if hasattr(judge, "judge") and hasattr(judge, "identity") else make_judge(judge)  # type: ignore[arg-type]
    pol = policy if isinstance(policy, Policy) else Policy.from_file(policy)
    if isinstance(labelled, (str, Path)):
        source = source or str(labelled)
        labelled = read_labelled(labelled, **read_options)
    try:
        report = audit(j, pol, labelled, cache, progress=progress, source=source)
    finally:
        if j is not judge and callable(getattr(j, "close", None)):
            j.close()
    if out is not None:
        from trace_realign.io import write_json_atomic

        write_json_atomic(out, report)
    return report


# ------------------------------------------------------------------------------ what others read


def judge_error(report: dict[str, Any]) -> dict[str, Any]:
    """The short form the triage summary, the report and `rdpo` carry: the measured error and its interval."""
    return {
        "judge": report.get("judge"),
        "source": report.get("source"),
        "items": report.get("items"),
        "unknown": report.get("unknown"),
        "error_rate": report["error_rate"],
        "accuracy": report.get("accuracy"),
        "kappa": {k: (report.get("kappa") or {}).get(k) for k in ("kappa", "ci95", "interval")},
    }


def read_audit(path: str | Path) -> dict[str, Any]:
    """An audit JSON written by `trace-realign audit --out` (or the error block of a triage summary)."""
    from trace_realign.io import read_json

    doc = read_json(path)
    if isinstance(doc, dict) and isinstance(doc.get("judge_error"), dict):
        doc = doc["judge_error"]  # a triage summary that carries one
    rate = (
        doc.get("error_rate", {}).get("rate")
        if isinstance(doc, dict) and isinstance(doc.get("error_rate"), dict)
        else None
    )
    if not isinstance(rate, (int, float)) or isinstance(rate, bool):
        raise InputError(
            "not an audit: expected an error_rate with a rate", path=str(path), field="error_rate"
        )
    return doc


def measured_flip_rate(path: str | Path) -> float:
    """The judge's measured error rate from an audit file, as `rdpo`'s flip rate (must be below 0.5)."""
    rate = float(read_audit(path)["error_rate"]["rate"])
    if not 0.0 <= rate < 0.5:
        raise InputError(
            f"the audited judge errs on {rate:.1%} of items: a flip rate must lie in [0, 0.5)",
            path=str(path),
            field="error_rate",
        )
    return rate


# ------------------------------------------------------------------------------ printing


def format_rate(entry: dict[str, Any] | None) -> str:
    """`{"rate", "ci95", "k", "n"}` as `12.5% [4.2%, 30.1%] (3/24)`."""
    if not entry or entry.get("rate") is None:
        return "n/a"
    lo, hi = entry["ci95"]
    return f"{entry['rate']:.1%} [{lo:.1%}, {hi:.1%}] ({entry['k']}/{entry['n']})"


def format_kappa(k: dict[str, Any]) -> str:
    """`{"kappa", "ci95"}` as `0.812 [0.700, 0.905]`, or `undefined`."""
    text = "undefined" if k["kappa"] is None else f"{k['kappa']:.3f}"
    if k.get("ci95"):
        text += f" [{k['ci95'][0]:.3f}, {k['ci95'][1]:.3f}]"
    return text


def audit_tables(report: dict[str, Any]) -> list[Any]:
    """The audit as rich tables: the headline numbers, per verdict, the confusion matrix, categories."""
    from rich.table import Table

    kappa = format_kappa(report["kappa"])
    head = Table(title=f"Audit of judge {report['judge']} on {report['items']} labelled items")
    head.add_column("measure", overflow="fold")
    head.add_column("value (95% interval)", overflow="fold")
    head.add_row("accuracy (Wilson)", format_rate(report["accuracy"]))
    head.add_row("error rate = flip rate (Wilson)", format_rate(report["error_rate"]))
    head.add_row("Cohen's kappa (bootstrap)", kappa)
    head.add_row("decided (not UNKNOWN)", format_rate(report["coverage"]))
    calls = report.get("judge_calls", {})
    head.add_row("judge calls / cache hits", f"{calls.get('calls', 0)} / {calls.get('cache_hits', 0)}")

    per = Table(title="Per verdict (Wilson intervals)")
    for col in ("verdict", "precision", "recall", "human support"):
        per.add_column(col, overflow="fold")
    for v, row in report["per_verdict"].items():
        per.add_row(v, format_rate(row["precision"]), format_rate(row["recall"]), str(row["support"]))

    conf = Table(title="Confusion matrix (rows: human, columns: judge)")
    conf.add_column("human \\ judge")
    for j in Label:
        conf.add_column(j.value, justify="right")
    for t, row in report["confusion"].items():
        conf.add_row(t, *(str(row[j.value]) for j in Label))
    tables = [head, per, conf]

    cats = report.get("categories")
    if cats:
        c = Table(title=f"Triage categories of {cats['pairs']} pairs: judge against human labels")
        c.add_column("human category")
        c.add_column("judge agrees (Wilson)", overflow="fold")
        for cat, entry in cats["per_category"].items():
            c.add_row(cat, format_rate(entry))
        c.add_row("all", format_rate(cats["agreement"]))
        tables.append(c)
    return tables


def print_audit(report: dict[str, Any], console: Any = None, show_wrong: int = 10) -> None:
    from rich.console import Console

    console = console or Console()
    for t in audit_tables(report):
        console.print(t)
    wrong = report["wrong"]
    for w in wrong[:show_wrong]:
        where = f"line {w['line']}" + (f" ({w['side']})" if "side" in w else "")
        reason = " ".join(str(w["reason"]).split())[:160]
        console.print(
            f"{where}: human {w['human']}, judge {w['judge']}: {reason}", highlight=False, soft_wrap=True
        )
    if len(wrong) > show_wrong:
        console.print(f"... and {len(wrong) - show_wrong} more, all in the audit JSON", highlight=False)


def judge_error_for(path: str | Path, judge_identity: str) -> dict[str, Any]:
    """The audit at `path` in its short form for a triage summary, saying whether it audited this judge."""
    block = judge_error(read_audit(path))
    block["source_audit"] = str(path)
    block["same_judge"] = block.get("judge") == judge_identity
    return block


def judge_error_line(block: dict[str, Any]) -> str:
    """One sentence for the triage output and the report: the judge's measured error and its interval."""
    err = block.get("error_rate") or {}
    if err.get("rate") is None:
        return "judge audit: no decided items, no measured error"
    lo, hi = err["ci95"]
    k = block.get("kappa") or {}
    kappa = "" if k.get("kappa") is None else f", Cohen's kappa {k['kappa']:.2f}"
    if k.get("ci95"):
        kappa += f" [{k['ci95'][0]:.2f}, {k['ci95'][1]:.2f}]"
    same = "" if block.get("same_judge", True) else " (audited judge differs from this run's judge)"
    return (
        f"judge audit{same}: measured error {err['rate']:.1%} [{lo:.1%}, {hi:.1%}] (95% Wilson, "
        f"{err['k']} wrong of {err['n']} decided){kappa}; source {block.get('source') or block.get('source_audit')}"
    )


# ------------------------------------------------------------------------------ the demo's audit

# The new-policy verdict of each response of a scenario pair, by the pair's kind (scenario/generate.py):
# known from how the scenario was built, not from any judge. A neutral pair's needless refusal is
# left out: whether the new policy tolerates it is exactly what a judge may reasonably differ on.
SCENARIO_TRUTH = {
    "invert": {"chosen": Label.NON_COMPLIANT, "rejected": Label.COMPLIANT},
    "punish": {"chosen": Label.NON_COMPLIANT, "rejected": Label.NON_COMPLIANT},
    "malicious": {"chosen": Label.COMPLIANT, "rejected": Label.NON_COMPLIANT},
    "neutral": {"chosen": Label.COMPLIANT},
}


def scenario_labelled_rows(pairs: Sequence[Any], n: int = 50, seed: int = 0) -> list[dict[str, Any]]:
    """`n` labelled item rows (the audit's item shape) drawn by `seed` from the scenario's pairs."""
    import random

    rows = []
    for p in pairs:
        for side, label in SCENARIO_TRUTH.get(p.meta.get("kind"), {}).items():
            response = p.chosen if side == "chosen" else p.rejected
            rows.append(
                {
                    "prompt": p.prompt,
                    "response": response,
                    "label": label.value,
                    "kind": p.meta["kind"],
                    "side": side,
                }
            )
    random.Random(seed).shuffle(rows)
    return rows[:n]


def audit_scenario_judges(
    pairs: Sequence[Any],
    policy: str | Path | Policy,
    rules: str | Path,
    out_dir: str | Path,
    *,
    n: int = 50,
    noise: float = 0.2,
    seed: int = 0,
    also_to: str | Path | None = None,
) -> dict[str, dict[str, Any]]:
    """The demo's audit: the rule judge and the same judge with `noise` of its verdicts flipped, on a
    labelled slice of the scenario. Writes `labelled.jsonl`, `audit_rules.json`, `audit_noisy.json`
    into `out_dir` and returns both audits. `also_to` (e.g. `RUN/triage/audit.json`) gets the rule
    judge's audit too, where the report shows it next to the triage."""
    import json

    from trace_realign.io import write_json_atomic, write_text_atomic
    from trace_realign.judges.spec import make_judge

    out = Path(out_dir)
    labelled = out / "labelled.jsonl"
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in scenario_labelled_rows(pairs, n, seed))
    judges = {"rules": f"rules:{rules}", "noisy": f"noisy:{noise:g}:rules:{rules}"}
    identities = {name: make_judge(spec).identity for name, spec in judges.items()}
    files = {name: out / f"audit_{name}.json" for name in judges}
    # a rerun of the demo with the same slice and judges rewrites nothing
    current = labelled.is_file() and labelled.read_text(encoding="utf-8") == text
    done = {}
    for name, f in files.items():
        if current and f.is_file():
            doc = json.loads(f.read_text(encoding="utf-8"))
            if doc.get("judge") == identities[name]:
                done[name] = doc
    if len(done) < len(judges):
        write_text_atomic(labelled, text)
        done = {name: audit_judge(spec, policy, labelled, out=files[name]) for name, spec in judges.items()}
    if also_to is not None:
        target = Path(also_to)
        if not target.is_file() or json.loads(target.read_text(encoding="utf-8")) != done["rules"]:
            write_json_atomic(target, done["rules"])
    return done
