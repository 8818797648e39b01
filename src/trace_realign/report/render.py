"""Build the report once as a list of blocks, then write it twice: one self-contained HTML page
(PNGs inlined as base64, inline CSS, no script, nothing fetched) and a Markdown twin whose PNGs
sit in a folder next to it. Every text from the data is escaped: responses are untrusted."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trace_realign.data.pku import HARM_CATEGORIES
from trace_realign.evaluate.compare import SEVERAL_ROWS_PER_PROMPT, scale_row
from trace_realign.report import plots
from trace_realign.report.collect import CATEGORY_NAMES, Evaluation, Run
from trace_realign.stats import format_estimate, format_p, format_rate, wilson_interval
from trace_realign.triage.audit import judge_error_line

BEFORE_NAMES = ("m_ref", "mref", "ref", "reference", "base", "baseline", "before")
TPA_GROUPS = ("overall", "INVERT", "PUNISH", "RETAIN")


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Text:
    text: str
    note: bool = False  # a "this part is missing" remark, shown muted


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    name: str  # file name in the Markdown twin's asset folder
    png: bytes
    alt: str


Block = Heading | Text | Table | Image


def harm_label(tag: str) -> str:
    """`S6 Violence`: a harm category with its PKU-SafeRLHF name wherever a table shows it."""
    name = HARM_CATEGORIES.get(tag)
    return f"{tag} {name}" if name else tag


def num(x: Any, fmt: str = ".4g") -> str:
    return "n/a" if not isinstance(x, (int, float)) or isinstance(x, bool) else format(x, fmt)


# ---- sections ----------------------------------------------------------------------------------


def triage_section(runs: list[Run]) -> list[Block]:
    out: list[Block] = [Heading("Triage breakdown")]
    with_triage = [r for r in runs if r.triage]
    if not with_triage:
        return [*out, Text("No triage results found: this section is skipped.", note=True)]
    counts = {r.name: r.triage["counts"] for r in with_triage}
    out.append(Image("triage.png", plots.triage_bars(counts), "pairs per triage category"))
    rows = []
    for r in with_triage:
        t = r.triage
        n = t.get("pairs") or sum(t["counts"].values())
        rows.append(
            [r.name, str(n)]
            + [
                f"{t['counts'].get(c, 0)} ({t['counts'].get(c, 0) / n:.0%})" if n else "0"
                for c in CATEGORY_NAMES
            ]
            + [str(t.get("judge", "n/a"))]
        )
    out.append(Table(["run", "pairs", *CATEGORY_NAMES, "judge"], rows))
    for r in with_triage:  # the judge's measured error (trace-realign audit), next to its triage
        if isinstance(r.triage.get("judge_error"), dict):
            out.append(Text(f"{r.name}: {judge_error_line(r.triage['judge_error'])}"))
    for r in with_triage:
        harm = r.triage.get("harm_categories")
        if not harm:
            continue
        out.append(Heading(f"By harm category: {r.name}", 3))
        out.append(
            Image(f"harm_{_slug(r.name)}.png", plots.harm_bars(harm), f"triage by harm category, {r.name}")
        )
        out.append(
            Table(
                ["harm category", "name", "pairs", *CATEGORY_NAMES, "changed"],
                [
                    [tag, str(h.get("name", tag)), str(h.get("pairs", ""))]
                    + [str(h.get(c, 0)) for c in CATEGORY_NAMES]
                    + [
                        f"{h['changed_share']:.0%}"
                        if isinstance(h.get("changed_share"), (int, float))
                        else "n/a"
                    ]
                    for tag, h in harm.items()
                ],
            )
        )
    if not any(r.triage.get("harm_categories") for r in with_triage):
        out.append(Text("The data carries no harm categories: no harm-category audit.", note=True))
    return out


def impact_section(runs: list[Run]) -> list[Block]:
    out: list[Block] = [Heading("Alignment impact weights")]
    found = False
    for r in runs:
        if r.weights:
            found = True
            by_cat: dict[str, list[float]] = {}
            for cat, w in r.weights:
                by_cat.setdefault(cat, []).append(w)
            out.append(
                Image(
                    f"weights_{_slug(r.name)}.png",
                    plots.weight_histogram(by_cat),
                    f"impact weights, {r.name}",
                )
            )
            zero = sum(w == 0 for _, w in r.weights) / len(r.weights)
            s = r.score or {}
            out.append(
                Text(
                    f"{r.name}: {len(r.weights)} conflicts, {zero:.0%} clamped to zero; "
                    f"normalisation {s.get('normalisation_note', s.get('normalisation', 'n/a'))}; "
                    f"mode {s.get('mode', 'n/a')}; loss {s.get('loss_note', s.get('loss', 'n/a'))}."
                )
            )
        elif r.score and r.score.get("weight_histogram"):
            found = True
            h = r.score["weight_histogram"]
            out.append(
                Table(
                    ["weight bin", "conflicts"],
                    [
                        [f"{lo:.3g} to {hi:.3g}", str(c)]
                        for lo, hi, c in zip(h["edges"][:-1], h["edges"][1:], h["counts"], strict=True)
                    ],
                )
            )
    for r in runs:
        out += weight_profile_blocks(r.name, (r.score or {}).get("weights") or {})
    if not found:
        out.append(Text("No impact weights found: this section is skipped.", note=True))
    return out


def weight_profile_blocks(run: str, profiles: dict[str, Any]) -> list[Block]:
    """What the weights look like, per scored loss and category (`impact.diagnostics.weight_profile`)."""
    if not profiles:
        return []
    rows = []
    for variant, prof in profiles.items():
        for cat, p in [("all", prof["all"]), *prof.get("by_category", {}).items()]:
            if not p.get("n"):
                continue
            rows.append(
                [variant, cat, str(p["n"]), f"{100 * p['zero_share']:.0f}%", f"{p['effective_n']:.1f}",
                 num(p["median"], ".3g"), num(p["p90"], ".3g"), num(p["max"], ".3g")]
            )  # fmt: skip
    blocks: list[Block] = [
        Heading(f"What the weights look like: {run}", 3),
        Table(
            ["scored loss", "category", "conflicts", "clamped to 0", "effective N", "median", "p90", "max"],
            rows,
        ),
    ]
    notes = []
    for variant, prof in profiles.items():
        rho = prof.get("length_spearman")
        gold = prof.get("gold_self_term") or {}
        if rho:
            notes.append(
                f"{variant}: Spearman correlation of a weight with its responses' length {rho['rho']:+.2f} (p {rho['p']:.2g})"
            )
        if gold.get("in_gold"):
            notes.append(
                f"{variant}: the {gold['in_gold']} INVERT conflicts that are also in the gold batch weigh "
                f"{num(gold['mean_in_gold'], '.3g')} on average, the other INVERT conflicts "
                f"{num(gold['mean_invert_not_in_gold'], '.3g')} (their own gradient is part of g_J)"
            )
    if notes:
        blocks.append(
            Text(
                "; ".join(notes)
                + ". Effective N = (Σw)²/Σw²: how many equally weighted conflicts the weights amount to."
            )
        )
    return blocks


def training_section(runs: list[Run]) -> list[Block]:
    out: list[Block] = [Heading("Training")]
    rows = []
    for r in runs:
        for method, s in r.training.items():
            label = method if len(runs) == 1 else f"{r.name}:{method}"
            fm = s.get("final_metrics") or {}
            rows.append(
                [
                    label,
                    str(s.get("preference_loss", "n/a")),
                    str(s.get("global_step", "n/a")),
                    str(s.get("stop_reason", "n/a")),
                    num(fm.get("train_loss", fm.get("loss"))),
                    num(s.get("wall_time_s"), ".1f"),
                ]
            )
            png = plots.training_curves(label, s.get("log_history") or [])
            if png:
                out.append(Image(f"train_{_slug(label)}.png", png, f"training curves, {label}"))
            else:
                out.append(Text(f"{label}: no logged losses to plot.", note=True))
    if not rows:
        return [*out, Text("No training runs found: this section is skipped.", note=True)]
    out.append(
        Table(["method", "preference loss", "steps", "stopped by", "final loss", "wall time (s)"], rows)
    )
    for r in runs:
        for method, s in r.training.items():
            rw = s.get("reweighting") or {}
            if rw.get("schedule") == "u2a" and rw.get("rounds"):
                js = " → ".join(num(h.get("J")) for h in rw["rounds"])
                ns = " → ".join(num((h.get("omega") or {}).get("effective_n"), ".1f") for h in rw["rounds"])
                w = rw.get("omega") or {}
                back = rw.get("restored_best")
                restored = (
                    f"; the round-{back['round']} state (lowest J, {num(back['J'])}) was restored at the stop"
                    if back
                    else ""
                )
                out.append(
                    Text(
                        f"{method}: J by round {js}; effective number of negatives under ω ((Σω)²/Σω²) by round "
                        f"{ns}; final ω over {w.get('n', 0)} kept negatives: min {num(w.get('min'))}, "
                        f"median {num(w.get('median'))}, max {num(w.get('max'))}, "
                        f"effective n {num(w.get('effective_n'), '.1f')}{restored}."
                    )
                )
    return out


def evaluation_section(evals: list[Evaluation]) -> list[Block]:
    """Every evaluation read alone: agreement, stress, a second judge's reading, utility and win
    rates, each a heading with its plot or table (or a note saying why it is missing)."""
    out: list[Block] = [Heading("Target policy agreement")]
    if not evals:
        return [
            *out,
            Text("No evaluations found: agreement, stress, utility and win rates are skipped.", note=True),
        ]
    out += _agreement_blocks(evals)
    out += _stress_blocks(evals)
    out += _second_judge_blocks(evals)
    out += _utility_blocks(evals)
    out += _win_rate_blocks(evals)
    return out


def _agreement_blocks(evals: list[Evaluation]) -> list[Block]:
    """Target policy agreement per model, overall and per category, then per harm category of the
    prompt where the evaluations have them."""
    series = {
        ev.name: [
            ev.metrics["tpa"]["overall"] if g == "overall" else ev.metrics["tpa"]["by_category"].get(g)
            for g in TPA_GROUPS
        ]
        for ev in evals
    }
    labels = ["overall", "INVERT success", "PUNISH compliance", "RETAIN preservation"]
    out: list[Block] = [
        Image(
            "agreement.png", plots.rate_bars("Target policy agreement", labels, series, "% compliant"), "TPA"
        ),
        Table(
            ["model", *labels, "unknown verdicts", "prompts"],
            [
                [
                    ev.name,
                    *(format_rate(e) for e in series[ev.name]),
                    str(ev.metrics.get("unknown_verdicts", 0)),
                    str(ev.metrics.get("n_prompts", "")),
                ]
                for ev in evals
            ],
        ),
        Text("Rates exclude unknown verdicts (counted apart); brackets are 95% Wilson intervals."),
    ]
    harm = [ev for ev in evals if ev.metrics.get("tpa_by_harm_category")]
    if harm:
        out.append(Heading("Agreement by harm category of the prompt", 3))
        tags = list(dict.fromkeys(t for ev in harm for t in ev.metrics["tpa_by_harm_category"]))
        out.append(
            Table(
                ["harm category", *(ev.name for ev in harm)],
                [
                    [harm_label(t), *(format_rate(ev.metrics["tpa_by_harm_category"].get(t)) for ev in harm)]
                    for t in tags
                ],
            )
        )
    return out


def _stress_blocks(evals: list[Evaluation]) -> list[Block]:
    """Attack success per wrapper, which definition it counts, and the malicious prompts not declined."""
    out: list[Block] = [Heading("Adversarial stress (attack success rate, lower is better)")]
    # an evaluation without prompts marked harmful has a stress block with nothing in it
    stressed = [ev for ev in evals if ((ev.metrics.get("stress") or {}).get("overall") or {}).get("total")]
    if not stressed:
        return [
            *out,
            Text(
                "No stress results (evaluated with --no-stress, or no prompt is marked harmful).", note=True
            ),
        ]
    attacks = sorted({a for ev in stressed for a in ev.metrics["stress"]["by_attack"]})
    s_series = {
        ev.name: [ev.metrics["stress"]["overall"]]
        + [ev.metrics["stress"]["by_attack"].get(a) for a in attacks]
        for ev in stressed
    }
    groups = ["overall", *(a.replace("_", " ") for a in attacks)]
    out.append(
        Image(
            "stress.png", plots.rate_bars("Attack success rate", groups, s_series, "% non-compliant"), "ASR"
        )
    )
    out.append(
        Table(["model", *groups], [[name, *(format_rate(e) for e in v)] for name, v in s_series.items()])
    )
    defs = sorted({str(ev.metrics["stress"].get("definition", "non_compliant")) for ev in stressed})
    out.append(
        Text(
            "Attack success counts "
            + (
                "only operational help for the harmful act (the attack judge), as the paper does."
                if defs == ["operational"]
                else "every answer the policy judge finds non-compliant (the earlier definition)."
                if defs == ["non_compliant"]
                else f"by evaluation: {', '.join(defs)}."
            )
        )
    )
    return out + _not_declined_blocks(stressed)


def _not_declined_blocks(stressed: list[Evaluation]) -> list[Block]:
    """The harmful prompts answered without declining, plain and per wrapper: a policy failure kept
    apart from attack success (empty where no evaluation counted them)."""
    nd = [ev for ev in stressed if ev.metrics["stress"].get("not_declined")]
    if not nd:
        return []
    forms = ["plain", *sorted(nd[0].metrics["stress"]["not_declined"]["by_attack"])]
    rows = [
        [
            ev.name,
            format_rate(ev.metrics["stress"]["not_declined"]["overall"]),
            format_rate(ev.metrics["stress"]["not_declined"]["plain"]),
            *(format_rate(ev.metrics["stress"]["not_declined"]["by_attack"].get(f)) for f in forms[1:]),
        ]
        for ev in nd
    ]
    return [
        Heading("Malicious prompts not declined (a policy failure, not an attack success)", 3),
        Table(["model", "all forms", *(f.replace("_", " ") for f in forms)], rows),
    ]


def _second_judge_blocks(evals: list[Evaluation]) -> list[Block]:
    """Agreement and attack success as each second evaluation judge reads the same responses, and
    how often it agrees with the main judge: how far the headline numbers rest on one judge
    (empty where no evaluation had a second judge)."""
    judged = [ev for ev in evals if ev.metrics.get("judges")]
    if not judged:
        return []
    rows = []
    for ev in judged:
        for jname, j in ev.metrics["judges"].items():
            st = j.get("stress") or {}
            ag = j.get("agreement_with_main") or {}
            kappa = ag.get("kappa")
            rows.append(
                [
                    ev.name,
                    jname,
                    format_rate(j["tpa"]["overall"]),
                    *(format_rate(j["tpa"]["by_category"].get(c)) for c in ("INVERT", "PUNISH", "RETAIN")),
                    format_rate(st.get("overall")),
                    format_rate(ag) + ("" if kappa is None else f", kappa {kappa:.2f}"),
                ]
            )
    return [
        Heading("Under a second, independent evaluation judge"),
        Text(
            "Agreement and attack success as the second judge reads the same responses, and how "
            "often it gives the same verdict as the main judge (Cohen's kappa beside it)."
        ),
        Table(
            ["model", "judge", "TPA", "INVERT", "PUNISH", "RETAIN", "ASR", "same verdict as main judge"],
            rows,
        ),
    ]


def _utility_blocks(evals: list[Evaluation]) -> list[Block]:
    """The headline utility numbers (multiple choice, perplexity, lm-eval) of every model."""
    out: list[Block] = [Heading("Utility")]
    util = [(ev.name, (ev.metrics.get("utility") or {}).get("headline") or {}) for ev in evals]
    keys = sorted({k for _, h in util for k in h})
    if not keys:
        return [*out, Text("No utility measured (evaluate with --mc, --text or --lm-eval).", note=True)]
    out.append(
        Table(
            ["model", *(k.replace("_", " ") for k in keys)],
            [[n, *(num(h.get(k)) for k in keys)] for n, h in util],
        )
    )
    return out


def _win_rate_blocks(evals: list[Evaluation]) -> list[Block]:
    """Each model's win rate over each baseline it was evaluated against."""
    out: list[Block] = [Heading("Win rates")]
    rows = []
    for ev in evals:
        for base, wr in (ev.metrics.get("win_rate") or {}).items():
            c = wr.get("counts", {})
            rows.append(
                [
                    ev.name,
                    base,
                    format_rate(wr.get("win")),
                    f"{c.get('a_wins', 0)} / {c.get('ties', 0)} / {c.get('b_wins', 0)}",
                    format_rate(wr.get("order_agreement"), interval=False),
                    str(wr.get("unknown", 0)),
                    str(wr.get("method", "")),
                ]
            )
    if not rows:
        return [*out, Text("No win rates (evaluate with --baseline).", note=True)]
    out.append(
        Table(["model", "vs", "win rate", "wins / ties / losses", "order agreement", "unknown", "how"], rows)
    )
    return out


# comparison.json cells as the report names them
CELL_NAMES = {
    "tpa": "agreement",
    "invert": "INVERT success",
    "punish": "PUNISH compliance",
    "retain": "RETAIN preservation",
    "not_declined": "malicious not declined",
    "asr_fiction": "ASR fiction",
    "asr_suppression": "ASR refusal suppression",
    "external_declined": "external harmful prompts declined",
    "mc": "MC accuracy",
    "perplexity": "perplexity",
}


def ci_cell(cell: dict[str, Any] | None, scale: float = 100.0, digits: int = 1) -> str:
    """`mean [lo, hi]` of a comparison cell, in points (perplexity: as is)."""
    if not cell:
        return "n/a"
    return format_estimate(cell.get("mean"), cell.get("ci95"), scale=scale, digits=digits)


def tests_blocks(ref: str, tests: dict[str, Any]) -> list[Block]:
    """`ref` against each model: the method-level test over training seeds, which decides, and the
    prompt-by-prompt description of these trained models beside it."""
    rows = []
    for other, by_metric in tests.items():
        for m, t in by_metric.items():
            s, pr = t["seed"], t["prompt"]
            mc = pr.get("mcnemar")
            rows.append(
                [
                    other,
                    _cell_name(m),
                    format_estimate(s.get("diff"), s.get("ci95"), signed=True),
                    format_p(s.get("p")) if s.get("p") is not None else f"n/a ({s.get('reason', 'no test')})",
                    format_p(s.get("p_holm")),
                    f"{s['n_a']} / {s['n_b']}",
                    format_estimate(pr.get("diff"), pr.get("ci95"), signed=True),
                    "n/a" if not mc else f"{mc['a_only']} / {mc['b_only']}",
                ]
            )
    return [
        Heading(f"{ref} against each model", 3),
        Text(
            f"Difference = {ref} minus the other model, in points. Method-level test: the training seed "
            "is the unit, Welch's t-test on the per-seed means (a one-sample t-test against a model no seed "
            "trained, such as M_ref), with its 95% interval and p; with fewer than 2 seeds of a trained "
            "model there is no method-level test. Its p adjusted by Holm over every test of the same metric "
            "in its family decides a claim (below 0.05: a difference; above: inside the noise); the comparison "
            "is one family, and each study (rows from a noisy judge, rows on a share of the data) is its own. "
            "Prompt by prompt (describes these trained models only, never decides): the paired difference "
            "with a bootstrap over prompts, and "
            f"the exact McNemar counts of prompts only {ref} / only the other gets right, seed-matched. For "
            "ASR and 'not declined' a negative difference favours the reference."
        ),
        Table(
            [
                "vs",
                "metric",
                "difference over seeds [95%]",
                "p (seeds)",
                "p Holm",
                "seeds",
                "prompt-level [95%]",
                "discordant",
            ],
            rows,
        ),
    ]


def _cell_name(metric: str) -> str:
    return CELL_NAMES.get(metric) or f"agreement, {metric.removeprefix('tpa_')} judge"


def seeds_section(runs: list[Run]) -> list[Block]:
    """The comparison over seeds: every cell a mean with its 95% interval, then the paired tests."""
    out: list[Block] = []
    for r in runs:
        c = r.comparison
        if not c:
            continue
        cells = [m for m in c.get("metrics", []) if m in CELL_NAMES or m.startswith("tpa_")]
        cells += ["mc", "perplexity"]
        out.append(Heading("Comparison over training seeds (mean and 95% interval)"))
        out.append(
            Text(
                "Each cell is the mean over the model's training seeds of its rate on the held-out "
                "prompts, with a 95% t-interval over the seeds (the training seed is the unit; the "
                "prompts are held fixed). A row with one seed shows an interval over the prompts "
                "instead (Wilson, or a bootstrap over prompts where a prompt has several rows): it "
                "knows nothing of how far another training seed would land. A harmful prompt counts "
                "once, plain and wrapped together. Multiple-choice accuracy and perplexity are one "
                "number per seed: a t-interval over seeds (one seed: the Wilson interval of the "
                f"accuracy, none for perplexity). Attack success counts {_asr_words(c)}; 'malicious "
                "not declined' counts the harmful prompts (plain and wrapped) answered without "
                "declining and without operational help. Lower is better for both and for perplexity."
            )
        )
        rows = []
        for model, info in c["models"].items():
            row = [model, str(info.get("seeds", 1))]
            for m in cells:
                cell = info["cells"].get(m)
                row.append(ci_cell(cell, 1.0, 2) if m == "perplexity" else ci_cell(cell))
            rows.append(row)
        out.append(Table(["model", "seeds", *(_cell_name(m) for m in cells)], rows))
        # TRACE against every model, and (`tests_also`) another TRACE row against every model
        for ref, tests in [(c.get("reference"), c.get("tests")), *c.get("tests_also", {}).items()]:
            if tests:
                out += tests_blocks(ref, tests)
    return out


def _asr_words(c: dict[str, Any]) -> str:
    defs = sorted({d for m in c.get("models", {}).values() for d in m.get("asr_definition", [])})
    if defs == ["operational"]:
        return "only operational help for the harmful act (the paper's attack judge)"
    if defs == ["non_compliant"]:
        return "every answer the policy judge finds non-compliant (the earlier definition)"
    return f"a mix of definitions ({', '.join(defs)})"


def tradeoff_section(runs: list[Run]) -> list[Block]:
    out: list[Block] = []
    for r in runs:
        t = r.tradeoff
        if not t or not t.get("curves"):
            continue
        out.append(Heading("Trade-off over training steps"))
        out.append(
            Text(
                f"Every saved checkpoint evaluated on the same {t.get('prompts', '?')} held-out prompts "
                "(step 0 is M_ref, the last point the trained model); the numbers by the points are "
                "training steps. Up and to the left is better in the first two plots."
            )
        )
        for key, label in (("asr", "attack success"), ("not_declined", "malicious not declined")):
            png = plots.tradeoff_curves(t["curves"], key, label)
            if png:
                out.append(Image(f"tradeoff_{key}_{_slug(r.name)}.png", png, f"agreement against {label}"))
        png = plots.tradeoff_curves(t["curves"], "retain", "RETAIN preservation")
        if png:
            out.append(Image(f"tradeoff_retain_{_slug(r.name)}.png", png, "agreement against RETAIN"))
            out.append(Text("In the RETAIN plot, up and to the right is better.", note=True))
        rows = [
            [method, str(p["step"])] + [_point(p, k) for k in ("tpa", "retain", "not_declined", "asr")]
            for method, points in t["curves"].items()
            for p in points
        ]
        out.append(Table(["method", "step", "agreement", "RETAIN", "not declined", "ASR"], rows))
        if any("counts" in p for points in t["curves"].values() for p in points):
            out.append(
                Text(
                    "Brackets are 95% Wilson intervals over the checkpoint's prompts. Not declined and "
                    "ASR count a harmful prompt once per wrapper, so they give their counts instead.",
                    note=True,
                )
            )
    return out


def _point(p: dict[str, Any], key: str) -> str:
    """One trade-off point's rate: with its Wilson interval where its rows are one per prompt, with
    its counts where a harmful prompt counts once per wrapper (not declined, ASR), since those rows
    are not independent trials. The bare rate where the point has no counts."""

    if p.get(key) is None:
        return "n/a"
    counts = (p.get("counts") or {}).get(key)
    if not counts or counts[1] <= 0:
        return format_estimate(p[key])
    k, n = counts[0], counts[1]
    if key in SEVERAL_ROWS_PER_PROMPT:
        return f"{format_estimate(p[key])} ({k}/{n})"
    return format_estimate(p[key], wilson_interval(k, n))


def comparison_section(evals: list[Evaluation]) -> list[Block]:
    """All methods side by side, one row each: the table to read first."""
    if not evals:
        return []
    rows = []
    for ev in evals:
        m = ev.metrics
        by = m["tpa"]["by_category"]
        stress = m.get("stress") or {}
        head = (m.get("utility") or {}).get("headline") or {}
        rows.append(
            [
                ev.name,
                format_rate(m["tpa"]["overall"]),
                *(format_rate(by.get(c)) for c in ("INVERT", "PUNISH", "RETAIN")),
                format_rate((stress.get("not_declined") or {}).get("overall")),
                format_rate(stress.get("overall")),
                str(stress.get("definition", "n/a")).replace("_", "-"),
                num(head.get("mc_accuracy"), ".3f"),
                num(head.get("perplexity"), ".4g"),
            ]
        )
    cols = [
        "model",
        "TPA",
        "INVERT success",
        "PUNISH compliance",
        "RETAIN preservation",
        "malicious not declined",
        "ASR",
        "ASR counts",
        "MC accuracy",
        "perplexity",
    ]
    return [
        Heading("Methods side by side (one evaluation each)"),
        Table(cols, rows),
        Text("Brackets are 95% Wilson intervals over the prompts of that one evaluation."),
    ]


def examples_section(evals: list[Evaluation], before: str | None, limit: int) -> list[Block]:
    out: list[Block] = [Heading("Example responses before and after")]
    with_rows = [ev for ev in evals if ev.responses]
    if len(with_rows) < 2:
        return [*out, Text("Needs the responses of at least two evaluations (before and after).", note=True)]
    # names differ in case between tools (the pipeline writes eval/m_ref, people say M_ref)
    b = next((ev for ev in with_rows if ev.name.lower() == before.lower()), None) if before else None
    b = b or next((ev for ev in with_rows if ev.name.split(":")[-1].lower() in BEFORE_NAMES), with_rows[0])
    after = [ev for ev in with_rows if ev is not b]
    index = [{r["id"]: r for r in ev.responses if r.get("attack") is None and "id" in r} for ev in after]
    pool = [r for r in b.responses if r.get("attack") is None and all(r.get("id") in ix for ix in index)]

    def changed(r: dict[str, Any]) -> bool:
        return any(ix[r["id"]].get("label") != r.get("label") for ix in index)

    # prompts whose verdict changed first, taken in turn from each category
    by_cat: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(pool, key=lambda r: not changed(r)):
        by_cat.setdefault(str(r.get("category") or "-"), []).append(r)
    picked: list[dict[str, Any]] = []
    while len(picked) < limit and any(by_cat.values()):
        for cat in list(by_cat):
            if by_cat[cat] and len(picked) < limit:
                picked.append(by_cat[cat].pop(0))
    if not picked:
        return [*out, Text("The evaluations share no prompts.", note=True)]
    rows = []
    for r in picked:
        cells = [_prompt(r.get("prompt")), str(r.get("category") or "-"), _response(r)]
        cells += [_response(ix[r["id"]]) for ix in index]
        rows.append(cells)
    out.append(
        Table(["prompt", "category", f"before: {b.name}", *(f"after: {ev.name}" for ev in after)], rows)
    )
    return out


def _prompt(p: Any) -> str:
    if isinstance(p, list):
        return "\n".join(f"{m.get('role')}: {m.get('content')}" for m in p if isinstance(m, dict))
    return str(p)


def _response(r: dict[str, Any]) -> str:
    text = str(r.get("response", ""))
    if len(text) > 600:
        text = text[:600] + " [...]"
    return f"[{r.get('label', '?')}] {text}"


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in s)[:60] or "x"


def build_blocks(runs: list[Run], *, before: str | None = None, examples: int = 6) -> list[Block]:
    evals = [ev for r in runs for ev in r.evaluations]
    blocks: list[Block] = [Heading("TRACE realignment report", 1)]
    blocks.append(
        Text(
            f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from: "
            + ", ".join(str(r.path) for r in runs)
        )
    )
    for r in runs:
        for note in r.notes:
            blocks.append(Text(f"{r.name}: {note}", note=True))
    blocks += seeds_section(runs)
    blocks += comparison_section(evals)
    blocks += studies_section(runs)
    blocks += tradeoff_section(runs)
    blocks += triage_section(runs)
    blocks += impact_section(runs)
    blocks += training_section(runs)
    blocks += evaluation_section(evals)
    blocks += external_section(evals, before, examples)
    blocks += examples_section(evals, before, examples)
    return blocks


def studies_section(runs: list[Run]) -> list[Block]:
    """What each part of TRACE buys: do the weights find a noisy judge's flipped verdicts, how the
    methods fare on a share of the old data, and the seed-level tests these studies ask for."""
    out: list[Block] = []
    for r in runs:
        c = r.comparison or {}
        if c.get("noise_weights"):
            rows = [
                [rate, cat, format_estimate(s.get("auc"), s.get("ci95"), scale=1.0, digits=2), f"{s['flipped']} / {s['clean']}"]
                for rate, by in c["noise_weights"].items()
                for cat, s in by.items()
            ]  # fmt: skip
            out += [
                Heading("Do the impact weights find the noise?"),
                Text(
                    "Under a judge that flips a share of its verdicts, the conflicts whose category differs from the "
                    "clean judge's come from a flipped verdict. AUC: the chance that a clean conflict outweighs a "
                    "flipped one (0.5: the weights do not tell them apart; 1: every flipped one weighs less), with a "
                    "95% bootstrap interval."
                ),
                Table(["judge", "category", "AUC [95%]", "flipped / clean"], rows),
            ]
        scale = _scale_series(c)
        if scale:
            fractions = sorted({f for s in scale.values() for f in s})
            out += [
                Heading("How much old data it needs"),
                Text(
                    "Agreement on the held-out prompts of each method trained on a share of the old pairs (drawn by "
                    "seed, the same share of each kind; triaged and weighted anew), mean over seeds [95% t-interval]; "
                    "steps and protocol those of the comparison."
                ),
                Image("data_scale.png", plots.scale_curves(scale), "agreement against the share of old data"),
                Table(
                    ["method", *(f"{round(100 * f)}% of the pairs" for f in fractions)],
                    [[m, *(ci_cell(s.get(f)) for f in fractions)] for m, s in scale.items()],
                ),
            ]
        if c.get("pairs_tested"):
            rows = [
                [pair, _cell_name(m), format_estimate(t.get("diff"), t.get("ci95"), signed=True), format_p(t.get("p")), format_p(t.get("p_holm")), f"{t['n_a']} / {t['n_b']}"]
                for pair, by in c["pairs_tested"].items()
                for m, t in by.items()
            ]  # fmt: skip
            out += [
                Heading("The studies' tests, over training seeds", 3),
                Table(["pair", "metric", "difference [95%]", "p (seeds)", "p Holm", "seeds"], rows),
            ]
    return out


def _scale_series(c: dict[str, Any]) -> dict[str, dict[float, Any]]:
    """`{method: {fraction: agreement cell}}` from the comparison's `method@NN%` rows (and the full data's)."""
    out: dict[str, dict[float, Any]] = {}
    for name, model in (c.get("models") or {}).items():
        if (row := scale_row(name)) is not None:
            method, fraction = row
            out.setdefault(method, {})[fraction] = model["cells"].get("tpa")
    for method in list(out):
        if method in (c.get("models") or {}):
            out[method][1.0] = c["models"][method]["cells"].get("tpa")
    return out


def external_section(evals: list[Evaluation], before: str | None, examples: int = 6) -> list[Block]:
    """Real harmful prompts from outside the scenario: each model's declined rate per risk area, and
    answers where the reference declined and the model did not (escaped, cut short)."""
    with_ext = [ev for ev in evals if ev.metrics.get("external")]
    if not with_ext:
        return []
    first = with_ext[0].metrics["external"]
    areas = list(first.get("by_risk_area", {}))
    out: list[Block] = [
        Heading("Real harmful prompts from outside the scenario"),
        Text(
            f"{first['prompts']} prompts of {first['set']} (its {first['split']} third, never used to choose "
            "anything), answered greedily; an answer declines when a cue of the refusal list written for "
            "this reading (not the scenario's judges) matches its opening. Higher is safer. Rates with 95% "
            "Wilson intervals."
        ),
        Table(
            ["model", "declined", *areas],
            [
                [ev.name, format_rate(ev.metrics["external"]["declined"])]
                + [format_rate(ev.metrics["external"]["by_risk_area"].get(a)) for a in areas]
                for ev in with_ext
            ],
        ),
    ]
    ref = next((ev for ev in with_ext if ev.name.lower() in BEFORE_NAMES or ev.name == before), None)
    if ref is None or not ref.external:
        return out
    declined_by_ref = {r["id"]: r for r in ref.external if r.get("declined")}
    for ev in with_ext:
        if ev is ref:
            continue
        lost = [r for r in ev.external if r["id"] in declined_by_ref and not r.get("declined")]
        out.append(Text(f"{ev.name}: {len(lost)} prompts {ref.name} declines and {ev.name} does not."))
        if lost[:examples]:
            out.append(
                Table(
                    ["risk area", "prompt", ref.name, ev.name],
                    [
                        [
                            r["risk_area"],
                            _cut(r["prompt"]),
                            _cut(declined_by_ref[r["id"]]["response"]),
                            _cut(r["response"]),
                        ]
                        for r in lost[:examples]
                    ],
                )
            )
    return out


def _cut(text: str, n: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


# ---- writers ----------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #ccc}h2{margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;vertical-align:top;text-align:left}
th{background:#f3f3f3}td{white-space:pre-wrap;max-width:28em;word-wrap:break-word}
img{max-width:100%;display:block;margin:1em 0}.note{color:#777;font-style:italic}
"""


def to_html(blocks: list[Block]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>TRACE realignment report</title>",
        f"<style>{CSS}</style></head><body>",
    ]
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Text):
            parts.append(
                f'<p class="note">{html.escape(b.text)}</p>' if b.note else f"<p>{html.escape(b.text)}</p>"
            )
        elif isinstance(b, Table):
            head = "".join(f"<th>{html.escape(c)}</th>" for c in b.columns)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in b.rows
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(b, Image):
            data = base64.b64encode(b.png).decode("ascii")
            parts.append(f'<img alt="{html.escape(b.alt)}" src="data:image/png;base64,{data}">')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _md_cell(s: str) -> str:
    return html.escape(s, quote=False).replace("|", "\\|").replace("\n", "<br>")


def to_markdown(blocks: list[Block], assets: Path) -> tuple[str, dict[str, bytes]]:
    """The Markdown text and the PNGs it links to (relative to the Markdown file: `assets.name/`)."""
    lines: list[str] = []
    files: dict[str, bytes] = {}
    for b in blocks:
        if isinstance(b, Heading):
            lines += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Text):
            lines += [f"_{_md_cell(b.text)}_" if b.note else _md_cell(b.text), ""]
        elif isinstance(b, Table):
            lines.append("| " + " | ".join(_md_cell(c) for c in b.columns) + " |")
            lines.append("|" + "---|" * len(b.columns))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            lines.append("")
        elif isinstance(b, Image):
            files[b.name] = b.png
            lines += [f"![{b.alt}]({assets.name}/{b.name})", ""]
    return "\n".join(lines), files
