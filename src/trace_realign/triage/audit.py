"""Judge calibration: how often is this judge right under this policy, measured on a labelled sample.

`audit(judge, policy, rows)` runs the judge on labelled items (`triage.labelled`) through the same
verdict cache as triage (same identity, policy hash and rendered text, so an audited item is not
paid for twice) and compares its verdicts with the human ones:

- accuracy, and precision / recall of each verdict, each with a 95% Wilson score interval;
- Cohen's kappa with a 95% percentile bootstrap interval (`n_boot` resamples of the decided
  items, fixed seed, so the interval is reproducible);
- the confusion matrix (human verdict x judge verdict, UNKNOWN as its own column);
- the measured error rate `1 - accuracy` with its interval: the rate at which this judge flips
  a verdict, the quantity `noisy:RATE` simulates and `rdpo`'s `flip_rate` assumes;
- for pair rows, the triage category implied by the human labels against the judge's;
- every row the judge got wrong or could not decide, with its reason.

Accuracy, precision, recall and kappa are over the items the judge decided; items it could not
decide (UNKNOWN) are counted in `unknown` and `coverage` and listed with the wrong rows. The
statistics are `trace_realign.stats`'; printing is `triage.audit_cli`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trace_realign.cache import VerdictCache
from trace_realign.errors import InputError
from trace_realign.io import read_json, write_json_atomic
from trace_realign.judges.base import Judge
from trace_realign.judges.cached import judge_with_cache
from trace_realign.judges.policy import Policy
from trace_realign.judges.spec import make_judge
from trace_realign.schema import Label
from trace_realign.stats import kappa_with_ci, proportion
from trace_realign.triage.labelled import LabelledItem, read_labelled
from trace_realign.triage.triage import categorise

VERDICTS = (Label.COMPLIANT, Label.NON_COMPLIANT)


def agreement_stats(
    truth: Sequence[Label], judged: Sequence[Label], n_boot: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Accuracy, per-verdict precision/recall, kappa, confusion and error rate of `judged` against `truth`."""
    decided = [(t, j) for t, j in zip(truth, judged, strict=True) if j is not Label.UNKNOWN]
    n, d = len(truth), len(decided)
    correct = sum(t is j for t, j in decided)
    acc = proportion(correct, d)
    err = proportion(d - correct, d)
    per_verdict = {}
    for v in VERDICTS:
        tp = sum(t is v and j is v for t, j in decided)
        per_verdict[v.value] = {
            "precision": proportion(tp, sum(j is v for _, j in decided)),
            "recall": proportion(tp, sum(t is v for t, _ in decided)),
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
        "coverage": proportion(d, n),
        "accuracy": acc,
        "error_rate": err,
        "per_verdict": per_verdict,
        "kappa": kappa,
        "confusion": confusion,
    }


def audit(
    judge: Judge,
    policy: Policy,
    labelled: Sequence[LabelledItem],
    cache: VerdictCache | None = None,
    *,
    progress: bool = False,
    n_boot: int = 2000,
    seed: int = 0,
    source: str | None = None,
) -> dict[str, Any]:
    """Run `judge` on `labelled` (through `cache` when given) and measure it; see the module doc."""
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
            per[c] = proportion(sum(other[i] == c for i in idx), len(idx))
    confusion: dict[str, dict[str, int]] = {}
    for r, o in zip(reference, other, strict=True):
        confusion.setdefault(r, {}).setdefault(o, 0)
        confusion[r][o] += 1
    return {
        "pairs": len(reference),
        "by": reference_name,
        "agreement": proportion(sum(r == o for r, o in zip(reference, other, strict=True)), len(reference)),
        "per_category": per,
        "kappa": kappa_with_ci(list(reference), list(other)),
        "confusion": confusion,
    }


def audit_judge(
    judge: str | dict[str, Any] | Judge,
    policy: str | Path | Policy,
    labelled: str | Path | Sequence[LabelledItem],
    *,
    cache: VerdictCache | None = None,
    out: str | Path | None = None,
    progress: bool = False,
    source: str | None = None,
    **read_options: Any,
) -> dict[str, Any]:
    """The whole audit from Python: a judge spec (or judge), a policy (file or `Policy`) and a labelled
    file (or items) in, the audit dict out, written to `out` as JSON when given.

    What the demo and notebooks call; `trace-realign audit` is this with flags.
    """
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
    source = block.get("source") or block.get("source_audit")
    return (
        f"judge audit{same} against {source}: measured error {err['rate']:.1%} [{lo:.1%}, {hi:.1%}] "
        f"(95% Wilson, {err['k']} wrong of {err['n']} decided){kappa}"
    )
