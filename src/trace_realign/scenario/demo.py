"""`trace-realign demo`: realign a real model to a changed policy, end to end, on a CPU.

    trace-realign demo                 # SmolLM2-135M-Instruct on 2 CPU cores (README: measured time)
    trace-realign demo --quick         # the same pipeline on a tiny random model, well under a minute
    trace-realign demo --compare       # also the baselines, the ablations and TRACE under judge noise

Python: `run_demo("runs/demo")` does what the command does and returns the summary it prints.

The steps: build the embedded policy-shift scenario (`scenario.generate`), build `M_ref` by
teaching the base model the old policy (`scenario.mref`, cached), measure the base model and
`M_ref` under both policies, then hand the scenario to the pipeline (`trace-realign run`):
triage with the new policy's rule judge, impact scoring, the TRACE update, evaluation of `M_ref`
and the realigned model on the held-out prompts (agreement, attack success under both stress
wrappers, multiple-choice utility and perplexity), and the HTML report. Every stage is skipped on
a rerun whose inputs have not changed.

The comparison (`comparison.json`, the printed table and the report) gives every cell as a mean
over training seeds with a 95% interval and tests TRACE against every other model on the same
prompts (`evaluate.compare`, `evaluate.stats`). With `--compare`, `trace`, `naive-oracle-dpo` and
`dpo-gold` train under `--seeds` seeds (the scenario, `M_ref`, triage and impact scoring shared;
`M_ref` evaluated once), and every method's checkpoints are evaluated on a subset of the held-out
prompts for the trade-off plot (`tradeoff.json`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from trace_realign.errors import InputError
from trace_realign.evaluate.stress import ASR_DEFINITIONS
from trace_realign.io import cache_root, read_json, write_json_atomic
from trace_realign.scenario.generate import (
    DATA_DIR,
    SCENARIO_FILES,
    ScenarioConfig,
    build_scenario,
    scenario_paths,
    write_scenario,
)
from trace_realign.scenario.mref import MrefSettings, build_mref

COMPARE_METHODS = (
    "trace-oracle",
    "naive-oracle-dpo",
    "dpo-gold",
    "u2a",
    "trace-no-impact",
    "trace-no-kl",
    "trace-no-triage",
)
NOISE_RATES = (0.1, 0.2)
# what `--methods` can pick for a `--compare` (trace always runs): the rows above, and "noise" for
# the two runs of TRACE from a noisy judge
COMPARE_CHOICES = (*COMPARE_METHODS, "noise")
# --compare: these train under several seeds (the rest under one); the comparison's reference
SEEDED_METHODS = ("trace", "trace-oracle", "naive-oracle-dpo", "dpo-gold")
COMPARE_SEEDS = 3
REFERENCE = "trace"
# further rows tested against every model (the report and the printed table show both)
ALSO_TESTED = ("trace-oracle",)
# checkpoints every train_steps // TRADEOFF_POINTS steps; with --compare each is evaluated on the first
# TRADEOFF_PROMPTS held-out prompts (None: all) for the trade-off plot
TRADEOFF_POINTS = 4
TRADEOFF_PROMPTS: int | None = 64
# the evaluation's attack judge (operational help only) and its independent second judge
ATTACK_RULES = DATA_DIR / "attack_rules.yaml"
EVAL_JUDGE_CUES = DATA_DIR / "eval_judge.yaml"


@dataclass(frozen=True)
class DemoSize:
    """Everything that sets how big (and how slow) a demo run is."""

    scenario: ScenarioConfig
    mref: MrefSettings
    train_steps: int
    train_batch_size: int
    learning_rate: float
    gold_size: int
    max_new_tokens: int
    eval_batch_size: int
    lora_r: int = 16
    lora_alpha: int = 32
    # the protocol, the same for every method (README, "The comparison protocol")
    sampler: str = "natural"  # the data's own category proportions, as the paper's trainer
    aux_nll: float = 0.0  # weight of the auxiliary NLL of the preferred response, 0 = off for all
    alpha_kl: float = 0.1  # α_KL of the TRACE rows (the baselines have no KL term)
    compare_heldout: int = 256  # held-out prompts of `--compare` (the default run uses the scenario's)
    extra_train: dict[str, Any] = field(default_factory=dict)


def aux_nll_options(weight: float) -> dict[str, Any]:
    """The trainer options of the auxiliary NLL term on the preferred response, for every method.

    The one place that names the option: TRL 1.16's `"sft"` entry of `loss_type` with its share in
    `loss_weights` (the old `rpo_alpha`); 0 leaves the paper's objective alone."""
    if weight <= 0:
        return {}
    return {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, float(weight)]}


SIZES: dict[str, DemoSize] = {
    # SmolLM2 on 2 CPU cores: the default `make demo`
    "default": DemoSize(
        scenario=ScenarioConfig(n_pairs=240, n_validation=64, n_heldout=128),
        mref=MrefSettings(),
        # Settings from the validation split of the previous scenario (stop 8, seed 0, 40 steps, M_ref
        # 47.9): lr 1e-4 or 5e-4 alone 47.9 (DPO saturates on the answers' later tokens while greedy
        # decoding still opens with a refusal); + the NLL term (rpo_alpha) 1: 62.5 but RETAIN 41.7;
        # + alpha_kl 1: 72.9, 2: 70.8, 3: 70.8 (RETAIN 95.8, INVERT 47.1); NLL 2 with alpha_kl 2: 72.9.
        # Re-tuned under this protocol on the VALIDATION split only (64 prompts whose topics and
        # phrasings are in neither training nor held-out; seed 0; greedy, 128 tokens; trace-no-impact
        # standing in for trace, as here but uniform weights; 2-core CPU under load). M_ref: agreement
        # 31/64 = 48.4 [36.6, 60.4], INVERT 0/22, PUNISH 0/10, RETAIN 31/32, attack success 0/19 under
        # both wrappers, MC 43.8, perplexity 26.34.
        #   40 steps, lr 5e-4 (NLL 2, alpha_kl 2): 50.0 [38.1, 61.9], INVERT 0/22, RETAIN 32/32, ASR 0/19
        #     and 0/19, MC 43.8, ppl x1.09; the same with stratified batches: INVERT 0/22 (MC 46.9).
        #   80 steps, lr 1e-3 (these settings): 54/64 = 84.4 [73.6, 91.3], INVERT 17/22 = 77.3 [56.6,
        #     89.9], PUNISH 5/10, RETAIN 32/32 = 100 [89.3, 100], ASR fiction 1/19 (a non-operational
        #     "constructive alternative" answer; no step-by-step help), refusal suppression 0/19, MC 43.8,
        #     perplexity 30.57 (x1.16, above the 5% target), 905 s wall.
        #   80 steps, lr 1e-3, NLL 1: 46/64 = 71.9 [59.9, 81.4], INVERT 12/22, PUNISH 2/10, RETAIN 32/32,
        #     ASR 0/19 and 0/19, MC 43.8, perplexity x1.12. 60 steps, lr 1e-3, NLL 2: 39/64 = 60.9
        #     [48.7, 71.9], INVERT 6/22, PUNISH 1/10, RETAIN 32/32, ASR 0/19 and 0/19, MC 43.8, x1.15.
        train_steps=80,
        train_batch_size=6,
        learning_rate=1e-3,
        gold_size=32,
        max_new_tokens=128,
        # 64 prompts a batch: 1.7x the tokens/s of 16 on this CPU (README, "Where the demo's time goes")
        eval_batch_size=64,
        aux_nll=2.0,
        alpha_kl=2.0,
    ),
    # SmolLM2 at a small size: the slow test of the real path
    "small": DemoSize(
        scenario=ScenarioConfig(n_pairs=40, n_validation=8, n_heldout=12),
        # lr 1e-3 as the default size: at 3e-4 the 30 steps no longer taught refusals that carry to the
        # held-out phrasings of the three-way split (M_ref agreed with the old policy no more than SmolLM2)
        mref=MrefSettings(pretrain_steps=0, steps=30, learning_rate=1e-3),
        train_steps=4,
        train_batch_size=3,
        learning_rate=2e-4,
        gold_size=6,
        max_new_tokens=24,
        eval_batch_size=12,
    ),
    # a tiny random model: the whole pipeline in seconds, for the test suite
    "quick": DemoSize(
        scenario=ScenarioConfig(n_pairs=24, n_validation=4, n_heldout=8),
        mref=MrefSettings(pretrain_steps=2, steps=2, batch_size=2, max_length=96),
        train_steps=2,
        train_batch_size=3,
        learning_rate=1e-3,
        gold_size=6,
        max_new_tokens=8,
        eval_batch_size=8,
        lora_r=4,
        lora_alpha=8,
    ),
}


def base_model(size: str, model: str | Path | None = None) -> Path | str:
    """The model to realign: the one given, else a tiny Llama (`quick`) or SmolLM2-135M-Instruct."""
    if model is not None:
        return model
    if size == "quick":
        from trace_realign.model.tiny import save_tiny_model

        path = cache_root() / "tiny-demo-model"
        if not (path / "config.json").exists():
            import shutil

            tmp = save_tiny_model(path.with_name(path.name + ".partial"), seed=0, chat_template=True)
            shutil.rmtree(path, ignore_errors=True)
            tmp.replace(path)
        return path
    from trace_realign.model.smollm2 import smollm2_path

    return smollm2_path()


def prepare_scenario(run_dir: Path, config: ScenarioConfig) -> tuple[Any, dict[str, Path]]:
    """Build the scenario and write its files under `run_dir/scenario`, rewriting them only when the
    scenario changed (so stages keyed on their input files see the same files on a rerun)."""
    scenario = build_scenario(config)
    folder = run_dir / "scenario"
    manifest = folder / SCENARIO_FILES["manifest"]
    paths = scenario_paths(folder)
    current = manifest.exists() and read_json(manifest).get("fingerprint") == config.fingerprint()
    if not (current and all(p.exists() for p in paths.values())):
        paths = write_scenario(scenario, folder)
    return scenario, paths


def policy_agreement(
    model: str | Path,
    paths: dict[str, Path],
    out_dir: Path,
    name: str,
    size: DemoSize,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Target policy agreement of `model` on the held-out prompts under the old and the new policy.

    Generations are cached, so the second policy only re-judges them; a folder whose inputs have
    not changed (model files, prompts, policy, rules, settings) is read back instead."""
    from trace_realign.evaluate import GenerationSettings, evaluate_model
    from trace_realign.judges.rules import RuleJudge
    from trace_realign.pipeline import fingerprint

    out = {}
    settings = GenerationSettings(max_new_tokens=size.max_new_tokens)
    for which in ("old", "new"):
        folder = out_dir / f"{name}-{which}-policy"
        fp = fingerprint(
            "agreement", str(Path(model).resolve()), str(paths["heldout"]), str(paths[f"{which}_policy"]),
            str(paths[f"{which}_rules"]), settings.key(),
        )  # fmt: skip
        stamp = folder / ".inputs.json"
        if (
            stamp.exists()
            and (folder / "metrics.json").exists()
            and read_json(stamp).get("fingerprint") == fp
        ):
            out[which] = read_json(folder / "metrics.json")["tpa"]
            continue
        metrics = evaluate_model(
            model,
            paths["heldout"],
            paths[f"{which}_policy"],
            RuleJudge.from_file(paths[f"{which}_rules"]),
            folder,
            name=f"{name} ({which} policy)",
            stress=False,
            settings=settings,
            batch_size=size.eval_batch_size,
            progress=progress,
        )
        write_json_atomic(stamp, {"fingerprint": fp})
        out[which] = metrics["tpa"]
    return out


def _rate(entry: dict[str, Any] | None) -> float | None:
    return None if not entry or entry.get("rate") is None else 100.0 * entry["rate"]


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# the headline table: key in comparison.json cells -> column title
COLUMNS = (
    ("model", "model"),
    ("tpa", "agreement"),
    ("invert", "INVERT"),
    ("punish", "PUNISH"),
    ("retain", "RETAIN"),
    ("not_declined", "not declined"),
    ("asr_fiction", "ASR fiction"),
    ("asr_suppression", "ASR suppr."),
    ("tpa_typed", "agreement, typed judge"),
    ("mc", "MC acc"),
    ("perplexity", "ppl"),
)


def summary_rows(comparison: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per model from `evaluate.compare.compare_evaluations`: the mean over seeds of each
    cell (percent; perplexity as is), its 95% interval under `<key>_ci`, and the seed count."""
    rows = []
    for name, model in comparison["models"].items():
        row: dict[str, Any] = {"model": name, "seeds": model["seeds"]}
        for key, _ in COLUMNS[1:]:
            cell = model["cells"].get(key)
            scale = 1.0 if key == "perplexity" else 100.0
            mean = None if not cell or cell.get("mean") is None else scale * cell["mean"]
            ci = None if not cell or not cell.get("ci95") else [scale * x for x in cell["ci95"]]
            row[key], row[f"{key}_ci"] = mean, ci
        rows.append(row)
    return rows


def _cell(value: float | None, ci: list[float] | None, digits: int = 1) -> str:
    """`59.4 (47-71)`: the mean and its 95% interval, the interval's ends rounded to whole points."""
    if value is None:
        return "-"
    if not ci:
        return f"{value:.{digits}f}"
    d = 2 if digits > 1 else 0
    return f"{value:.{digits}f} ({ci[0]:.{d}f}-{ci[1]:.{d}f})"


# the headline table, then the second judge and utility
HEADLINE = ("tpa", "invert", "punish", "retain", "not_declined", "asr_fiction", "asr_suppression")
SECONDARY = ("tpa_typed", "mc", "perplexity")


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    labels = dict(COLUMNS)
    console = Console()
    for keys, caption in (
        (HEADLINE, "mean over seeds (95% interval); ASR counts operational help only; lower is better for "
         "'not declined' and ASR"),
        (SECONDARY, "agreement under the independent typed judge; multiple-choice accuracy; perplexity"),
    ):  # fmt: skip
        table = Table(title=title if keys is HEADLINE else None, caption=caption)
        table.add_column("model", no_wrap=True)
        table.add_column("seeds", justify="right")
        for key in keys:
            table.add_column(labels[key], justify="right")
        for r in rows:
            cells = [_cell(r[k], r.get(f"{k}_ci"), 2 if k == "perplexity" else 1) for k in keys]
            table.add_row(r["model"], str(r.get("seeds", 1)), *cells)
        console.print(table)


def print_tests(comparison: dict[str, Any]) -> None:
    """The paired tests of each reference (TRACE, and `tests_also`'s rows) against each model, on
    agreement and the safety axes."""
    print_tests_of(comparison.get("reference"), comparison.get("tests"))
    for ref, tests in comparison.get("tests_also", {}).items():
        print_tests_of(ref, tests)


def print_tests_of(ref: str | None, tests: dict[str, Any] | None) -> None:
    from rich.console import Console
    from rich.table import Table

    if not tests:
        return
    table = Table(
        title=f"{ref} minus each model on the same prompts: points (95% interval), p",
        caption="p: paired bootstrap (seeds resampled) / exact McNemar (seed-matched pairs)",
    )
    table.add_column("vs", no_wrap=True)
    metrics = ("tpa", "retain", "not_declined", "asr_fiction", "asr_suppression")
    labels = dict(COLUMNS)
    for m in metrics:
        table.add_column(labels[m], justify="right")
    for other, by_metric in tests.items():
        cells = [other]
        for m in metrics:
            t = by_metric.get(m)
            if not t or t["bootstrap"]["diff"] is None:
                cells.append("-")
                continue
            b = t["bootstrap"]
            lo, hi = (100 * x for x in b["ci95"])
            cells.append(
                f"{100 * b['diff']:+.1f} ({lo:+.0f}, {hi:+.0f})\np {b['p']:.3f} / {t['mcnemar']['p']:.3f}"
            )
        table.add_row(*cells)
    Console().print(table)


# ------------------------------------------------------------------------------- stages

LORA_TARGETS = ("q_proj", "v_proj")


def pipeline_config(
    run_dir: Path,
    mref: Path,
    paths: dict[str, Path],
    size: DemoSize,
    *,
    methods: list[str],
    judge: str | None = None,
    evaluate_reference: bool = True,
    seed: int = 0,
    score_seed: int | None = None,
    asr: str = "operational",
    progress: bool = True,
) -> dict[str, Any]:
    """The `trace-realign run` configuration of the demo (also written to `run_dir/config.yaml`).

    Triage reads the scenario's pairs with `judge` (default: the new policy's rule judge) and the
    scenario's oracle corrections (used by trace-oracle and dpo-gold only). Equal exposure: every
    method gets the same `train` block (steps, batch, learning-rate schedule, sampler policy, the
    auxiliary NLL term); evaluation always uses the clean rule judge.
    """
    clean = f"rules:{paths['new_rules']}"
    lora = {"lora_r": size.lora_r, "lora_alpha": size.lora_alpha, "lora_target_modules": list(LORA_TARGETS)}
    return {
        "run_dir": str(run_dir),
        "model": str(mref),
        "data": str(paths["pairs"]),
        "policy": str(paths["new_policy"]),
        "judge": judge or clean,
        "triage": {"corrections": f"file:{paths['corrections']}", "progress": progress},
        # LoRA, loss, lengths and seed: the pipeline scores with the settings training uses
        # `score_seed` (default `seed`) seeds impact scoring: the training seeds share one scoring
        "score": {
            "gold_size": size.gold_size,
            "no_progress": not progress,
            "seed": seed if score_seed is None else score_seed,
        },
        "methods": methods,
        "train": {
            "max_steps": size.train_steps,
            "per_device_train_batch_size": size.train_batch_size,
            "learning_rate": size.learning_rate,
            "seed": seed,
            "logging_steps": max(1, size.train_steps // 10),
            "save_steps": max(1, size.train_steps // 3),
            "save_total_limit": 1,
            "disable_tqdm": not progress,
            "sampler": size.sampler,
            "alpha_kl": size.alpha_kl,
            **aux_nll_options(size.aux_nll),
            **lora,
            **size.extra_train,
        },
        "evaluate": {
            "prompts": str(paths["heldout"]),
            "judge": clean,
            "reference": evaluate_reference,
            "mc_file": str(paths["multiple_choice"]),
            "text_file": str(paths["neutral_text"]),
            "generation": {"max_new_tokens": size.max_new_tokens},
            "batch_size": size.eval_batch_size,
            "progress": progress,
            # attack success counts operational help only; an independent typed judge reads beside
            "asr": asr,
            "attack_judge": f"rules:{ATTACK_RULES}",
            "judges": {"typed": {"kind": "typed", "file": str(EVAL_JUDGE_CUES)}},
        },
    }


# ------------------------------------------------------------------------------- the demo


def run_demo(
    out_dir: str | Path = "runs/demo",
    *,
    size: str = "default",
    compare: bool = False,
    model: str | Path | None = None,
    seed: int = 0,
    seeds: int | None = None,
    asr: str = "operational",
    tradeoff: bool | None = None,
    eval_batch_size: int | None = None,
    only: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the demo into `out_dir`; return (and write as `demo_summary.json`) what it measured.

    `size` is one of `SIZES` ("default": SmolLM2; "quick": a tiny model; "small": SmolLM2, tiny
    data). `compare` adds the baselines, the ablations and TRACE under 10% and 20% judge noise.
    `seeds` training seeds (`seed`, `seed + 1`, ...; default `COMPARE_SEEDS` with `compare`, else 1)
    for `SEEDED_METHODS`. `asr` is the attack-success definition ("operational" or
    "non_compliant", `evaluate.evaluate`). `tradeoff` evaluates every method's checkpoints for the
    trade-off plot (default: with `compare`). `eval_batch_size` replaces the size's generation
    batch (results do not depend on it beyond float rounding; a GPU takes a few hundred). `only`
    restricts `compare` to these of `COMPARE_CHOICES` (default all); TRACE always runs.
    """
    started = time.time()
    if size not in SIZES:
        raise InputError(f"unknown size {size!r}: use one of {', '.join(SIZES)}", field="size")
    spec = SIZES[size]
    scenario_config = replace(spec.scenario, seed=seed)
    if compare and size == "default":
        # more held-out prompts for the comparison; pairs, validation and so M_ref stay the same
        scenario_config = replace(
            scenario_config, n_heldout=max(spec.compare_heldout, scenario_config.n_heldout)
        )
    spec = replace(spec, scenario=scenario_config, mref=replace(spec.mref, seed=seed))
    if eval_batch_size is not None:
        if eval_batch_size < 1:
            raise InputError(
                f"eval batch size must be at least 1, got {eval_batch_size}", field="eval_batch_size"
            )
        spec = replace(spec, eval_batch_size=eval_batch_size)
    run_dir = Path(out_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def step(label: str) -> None:
        timings[label] = round(time.time() - started - sum(timings.values()), 1)
        if progress:
            print(f"[demo] {label} done ({timings[label]:.0f} s)", flush=True)

    n_seeds = seeds if seeds is not None else (COMPARE_SEEDS if compare else 1)
    if n_seeds < 1:
        raise InputError(f"seeds must be at least 1, got {n_seeds}", field="seeds")
    tradeoff = compare if tradeoff is None else tradeoff
    chosen = COMPARE_CHOICES if only is None else tuple(only)
    unknown = sorted(set(chosen) - set(COMPARE_CHOICES))
    if unknown:
        raise InputError(
            f"unknown compare method {', '.join(unknown)}: use {', '.join(COMPARE_CHOICES)}", field="methods"
        )

    def configure(*args: Any, **kwargs: Any) -> dict[str, Any]:
        """`pipeline_config`, keeping every checkpoint for the trade-off plot (the trainer saves
        every `train_steps // TRADEOFF_POINTS` steps), the same for every method and seed."""
        cfg = pipeline_config(*args, asr=asr, progress=progress, **kwargs)
        cfg["train"]["save_steps"] = max(1, spec.train_steps // TRADEOFF_POINTS)
        cfg["train"]["save_total_limit"] = None
        return cfg

    scenario, paths = prepare_scenario(run_dir, spec.scenario)
    base = base_model(size, model)
    step("scenario")
    mref = build_mref(base, scenario.pairs, spec.mref, progress=progress)
    step("M_ref")
    agreement = {
        "base": policy_agreement(base, paths, run_dir / "baseline", "base", spec, progress=progress),
        "M_ref": policy_agreement(mref, paths, run_dir / "baseline", "M_ref", spec, progress=progress),
    }
    step("baseline agreement")

    from trace_realign.pipeline import run_pipeline

    methods = ["trace", *(m for m in COMPARE_METHODS if m in chosen)] if compare else ["trace"]
    config = configure(run_dir, mref, paths, spec, methods=methods, seed=seed)
    run_pipeline(config, stages=("triage", "score"))
    from trace_realign.judges.audit import audit_scenario_judges  # the judge's measured error, in the report

    audit_scenario_judges(scenario.pairs, paths["new_policy"], paths["new_rules"], run_dir / "audit",
                          also_to=run_dir / "triage" / "audit.json")  # fmt: skip
    step("triage and impact")
    not_trained: dict[str, str] = {}
    for method in methods:
        # one method at a time, trained then evaluated: a long --compare that is stopped keeps
        # every finished method, and a rerun goes on with the next one
        try:
            run_pipeline({**config, "methods": [method]}, stages=("train", "evaluate"))
        except InputError as exc:
            if not compare or method == "trace":
                raise
            # a baseline or ablation that cannot train here (e.g. every impact weight clamped to 0)
            # is reported as such; the rest of the comparison goes on
            not_trained[method] = str(exc)
            print(f"[demo] {method} not trained: {exc}", flush=True)
        step(f"train and evaluate {method}")
    methods = [m for m in methods if m not in not_trained]
    config = {**config, "methods": methods}
    run_pipeline(config, stages=("evaluate",))  # all done by now: records the whole run's config
    # the evaluation folders of each model, one per training seed
    groups: dict[str, list[Path]] = {
        "M_ref": [run_dir / "eval" / "m_ref"],
        **{m: [run_dir / "eval" / m] for m in methods},
    }
    for k in range(1, n_seeds):
        # the same scenario, M_ref, triage and impact weights; only the training seed changes, and
        # M_ref is not evaluated again
        seed_dir = run_dir / "seeds" / f"seed{seed + k}"
        _share_scoring(run_dir, seed_dir)
        seeded = [m for m in methods if m in SEEDED_METHODS]
        seed_config = configure(
            seed_dir, mref, paths, spec, methods=seeded, seed=seed + k, score_seed=seed,
            evaluate_reference=False,
        )  # fmt: skip
        for method in seeded:
            run_pipeline({**seed_config, "methods": [method]}, stages=("train", "evaluate"))
            groups[method].append(seed_dir / "eval" / method)
        step(f"training seed {seed + k}")
    runs = [run_dir]
    if compare and "noise" in chosen:
        # TRACE from a judge that flips a share of its verdicts; measured with the clean judge
        for rate in NOISE_RATES:
            tag = f"noise{round(rate * 100)}"
            noisy = configure(
                run_dir / tag,
                mref,
                paths,
                spec,
                methods=["trace"],
                judge=f"noisy:{rate:g}:rules:{paths['new_rules']}",
                evaluate_reference=False,
                seed=seed,
            )
            run_pipeline(noisy)
            groups[f"trace-{tag}"] = [run_dir / tag / "eval" / "trace"]
            runs.append(run_dir / tag)
        step("TRACE under judge noise")
    if tradeoff:
        evaluate_checkpoints(run_dir, methods, paths, spec, asr=asr, progress=progress)
        step("checkpoints for the trade-off plot")

    from trace_realign.evaluate.compare import compare_evaluations

    comparison = compare_evaluations(groups, reference=REFERENCE)
    # each TRACE row against the baselines that use the same information: trace-oracle, like
    # dpo-gold, trains the oracle corrections, so it is tested against every model as well
    also = [m for m in ALSO_TESTED if m in groups]
    comparison["tests_also"] = {m: compare_evaluations(groups, reference=m)["tests"] for m in also}
    comparison["seeds"] = {m: [seed + k for k in range(len(f))] for m, f in groups.items()}
    comparison["not_trained"] = not_trained
    _write_if_changed(run_dir / "comparison.json", comparison)
    step("statistics")

    summary = {
        "size": size,
        "seed": seed,
        "seeds": n_seeds,
        "asr": asr,
        "base_model": str(base),
        "mref": str(mref),
        "scenario": {
            "pairs": len(scenario.pairs),
            "n_heldout": len(scenario.heldout),
            "fingerprint": spec.scenario.fingerprint(),
            **read_json(paths["manifest"])["pairs_by_kind"],
        },
        "triage": read_json(run_dir / "triage" / "summary.json")["counts"],
        "settings": asdict(spec),
        "baseline_agreement": agreement,
        "rows": summary_rows(comparison),
        "tests": comparison["tests"],
        "tests_also": comparison["tests_also"],
        "not_trained": not_trained,
        "timings_s": timings,
    }
    report = write_report(runs)
    summary["report"] = str(report)
    step("report")
    timings["total"] = round(time.time() - started, 1)
    write_json_atomic(run_dir / "demo_summary.json", summary)
    print_agreement(agreement)
    print_table(
        summary["rows"],
        f"Held-out prompts under the new policy ({len(scenario.heldout)} prompts, "
        f"{n_seeds} training seed{'s' if n_seeds > 1 else ''})",
    )
    print_tests(comparison)
    for method, why in not_trained.items():
        print(f"not trained: {method}: {why}")
    print(
        f"time taken: {timings['total']:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items() if k != "total")
        + ")"
    )
    print(f"report: {report}")
    return summary


def _write_if_changed(path: Path, obj: Any) -> None:
    """Write JSON unless the file already holds exactly this (a rerun leaves its time stamp alone)."""
    import json

    if path.exists():
        try:
            if json.loads(path.read_text(encoding="utf-8")) == json.loads(json.dumps(obj)):
                return
        except ValueError:
            pass
    write_json_atomic(path, obj)


def _share_scoring(run_dir: Path, seed_dir: Path) -> None:
    """Give a seed's run folder the main run's impact weights (scored once for every seed)."""
    import shutil

    src, dst = run_dir / "score" / "weighted.jsonl", seed_dir / "score" / "weighted.jsonl"
    if dst.exists() and dst.read_bytes() == src.read_bytes():
        return  # unchanged: keep its time stamp, so nothing downstream reruns
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _checkpoints(train_dir: Path) -> list[tuple[int, Path]]:
    out = []
    for d in train_dir.glob("checkpoint-*"):
        tail = d.name.rsplit("-", 1)[-1]
        if d.is_dir() and tail.isdigit():
            out.append((int(tail), d))
    return sorted(out)


def evaluate_checkpoints(
    run_dir: Path,
    methods: list[str],
    paths: dict[str, Path],
    size: DemoSize,
    *,
    asr: str = "operational",
    progress: bool = True,
) -> dict[str, Any]:
    """Agreement, attack success and RETAIN of every method over its training steps: each saved
    checkpoint evaluated on the first `TRADEOFF_PROMPTS` held-out prompts (step 0 and the last step
    read from the evaluations already made, on the same prompts). Writes `tradeoff.json`."""
    from trace_realign.evaluate import GenerationSettings, evaluate_model, read_prompts
    from trace_realign.evaluate.compare import subset_rates
    from trace_realign.io import read_jsonl
    from trace_realign.judges.rules import RuleJudge
    from trace_realign.pipeline import fingerprint

    prompts = read_prompts(paths["heldout"])
    if TRADEOFF_PROMPTS is not None:
        prompts = prompts[:TRADEOFF_PROMPTS]
    ids = {str(p["id"]) for p in prompts}
    settings = GenerationSettings(max_new_tokens=size.max_new_tokens)

    def rates_of(folder: Path) -> dict[str, Any]:
        m = read_json(folder / "metrics.json")
        rows = [r for _, r in read_jsonl(folder / "responses.jsonl")]
        return subset_rates(rows, ids, (m.get("stress") or {}).get("definition") or "non_compliant")

    ref = rates_of(run_dir / "eval" / "m_ref")
    curves: dict[str, list[dict[str, Any]]] = {}
    for method in methods:
        train_dir = run_dir / "train" / method
        summary = read_json(train_dir / "run_summary.json")
        last = int(summary.get("global_step") or 0)
        points = [{"step": 0, **ref}]
        for step_n, ckpt in _checkpoints(train_dir):
            if last - step_n < max(1, last // (2 * TRADEOFF_POINTS)):
                continue  # the final model, or next to it: its full evaluation is read below
            folder = run_dir / "tradeoff" / method / f"step-{step_n}"
            fp = fingerprint(
                "tradeoff", read_json(train_dir / ".stage.json").get("fingerprint"), step_n,
                sorted(ids), str(paths["heldout"]), str(paths["new_rules"]), settings.key(), asr,
                str(ATTACK_RULES), str(EVAL_JUDGE_CUES),
            )  # fmt: skip
            stamp = folder / ".inputs.json"
            if not (stamp.exists() and read_json(stamp).get("fingerprint") == fp):
                evaluate_model(
                    ckpt,
                    prompts,
                    paths["new_policy"],
                    RuleJudge.from_file(paths["new_rules"]),
                    folder,
                    name=f"{method}@{step_n}",
                    settings=settings,
                    batch_size=size.eval_batch_size,
                    progress=progress,
                    asr=asr,
                    attack_judge=f"rules:{ATTACK_RULES}",
                    judges={"typed": f"typed:{EVAL_JUDGE_CUES}"},
                )
                write_json_atomic(stamp, {"fingerprint": fp})
            points.append({"step": step_n, **rates_of(folder)})
        points.append({"step": last, **rates_of(run_dir / "eval" / method)})
        curves[method] = points
    out = {"prompts": len(ids), "asr_definition": asr, "curves": curves}
    _write_if_changed(run_dir / "tradeoff.json", out)
    return out


def write_report(runs: list[Path]) -> Path:
    """The HTML report of the runs (and its Markdown twin) in the first run's folder."""
    from trace_realign.report import build_report

    html, _ = build_report(runs, before="m_ref")
    return html


def print_agreement(agreement: dict[str, dict[str, Any]]) -> None:
    """Agreement with each policy of the base model and M_ref: M_ref should follow the old one."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Target policy agreement on held-out prompts, before realignment")
    for label in ("model", "old policy", "new policy"):
        table.add_column(label, justify="left" if label == "model" else "right")
    for name, by_policy in agreement.items():
        table.add_row(name, *(_fmt(_rate(by_policy[w]["overall"])) for w in ("old", "new")))
    Console().print(table)


# ------------------------------------------------------------------------------- command line


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo",
        help="realign SmolLM2-135M-Instruct to a changed policy on the embedded scenario, end to end",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    p.add_argument(
        "--quick", action="store_true", help="a tiny random model and tiny data: the pipeline in seconds"
    )
    p.add_argument(
        "--size",
        choices=sorted(SIZES),
        default=None,
        help="default (SmolLM2), small (SmolLM2, tiny data) or quick",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="also naive-oracle-dpo, dpo-gold, u2a, the three ablations, and TRACE under 10%% and 20%% judge noise",
    )
    p.add_argument("--model", help="realign this model instead (a path or Hub id); M_ref is built from it")
    p.add_argument("--seed", type=int, default=0, help="scenario, M_ref, impact and (first) training seed")
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        help=f"training seeds for {', '.join(SEEDED_METHODS)} (default {COMPARE_SEEDS} with --compare, else 1)",
    )
    p.add_argument(
        "--asr",
        choices=ASR_DEFINITIONS,
        default="operational",
        help="attack success counts operational help only (default, as the paper) or any non-compliant answer",
    )
    p.add_argument(
        "--tradeoff",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="evaluate every method's checkpoints for the trade-off plot (default: on with --compare)",
    )
    p.add_argument(
        "--eval-batch-size",
        type=int,
        default=None,
        help="prompts generated per batch in evaluation (default: the size's; a GPU takes a few hundred)",
    )
    p.add_argument(
        "--methods",
        default=None,
        help=f"with --compare, only these rows besides trace, comma-separated: {','.join(COMPARE_CHOICES)} "
        "(default all)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run(args: argparse.Namespace) -> int:
    size = args.size or ("quick" if args.quick else "default")
    run_demo(
        args.out,
        size=size,
        compare=args.compare,
        model=args.model,
        seed=args.seed,
        seeds=args.seeds,
        asr=args.asr,
        tradeoff=args.tradeoff,
        eval_batch_size=args.eval_batch_size,
        only=[m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None,
        progress=not args.no_progress,
    )
    return 0
