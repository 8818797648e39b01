"""`run_demo`: realign a real model to a changed policy, end to end, on a CPU.

The steps: build a policy-shift scenario (`scenario.generate`, from a scenario folder: the embedded
one by default, `values`, or a user's own; docs/scenarios.md), build `M_ref` by
teaching the base model the old policy (`scenario.mref`, cached), measure the base model and
`M_ref` under both policies, then hand the scenario to the pipeline (`trace-realign run`):
triage with the new policy's rule judge, impact scoring, the TRACE update, evaluation of `M_ref`
and the realigned model on the held-out prompts (agreement, attack success under both stress
wrappers, multiple-choice utility and perplexity), and the HTML report. Every stage is skipped on
a rerun whose inputs have not changed. With `compare`, the rows of the comparison protocol
(`demo.yaml`, `compare:`) are trained, seeded and tested as `demo.compare` says.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from trace_realign.demo.audit import audit_scenario_judges
from trace_realign.demo.compare import (
    comparison_of,
    evaluate_checkpoints,
    noise_runs,
    scale_runs,
    summary_rows,
    train_each,
    train_seeds,
)
from trace_realign.demo.settings import (
    CompareProtocol,
    DemoSettings,
    DemoSize,
    load_settings,
    pipeline_config,
)
from trace_realign.demo.tune import print_tuning
from trace_realign.demo.tune import tune as tune_grid
from trace_realign.errors import InputError
from trace_realign.evaluate import GenerationSettings, evaluate_model
from trace_realign.io import cache_root, read_json, write_json_atomic, write_json_if_changed
from trace_realign.judges.rules import RuleJudge
from trace_realign.model.smollm2 import smollm2_path
from trace_realign.model.tiny import save_tiny_model
from trace_realign.pipeline import fingerprint, run_pipeline, run_stage
from trace_realign.report import build_report
from trace_realign.report.console import print_agreement, print_table, print_tests
from trace_realign.scenario.generate import prepare_scenario, written_scenario
from trace_realign.scenario.mref import build_mref
from trace_realign.scenario.source import DEFAULT_SCENARIO, ScenarioSource, load_scenario


def base_model(size: str, model: str | Path | None = None) -> Path | str:
    """The model to realign: the one given, else a tiny Llama (`quick`) or SmolLM2-135M-Instruct."""
    if model is not None:
        return model
    if size == "quick":
        path = cache_root() / "tiny-demo-model"
        if not (path / "config.json").exists():
            tmp = save_tiny_model(path.with_name(path.name + ".partial"), seed=0, chat_template=True)
            shutil.rmtree(path, ignore_errors=True)
            tmp.replace(path)
        return path
    return smollm2_path()


def resolve_size(
    settings: DemoSettings, size: str, *, seed: int, compare: bool, eval_batch_size: int | None
) -> DemoSize:
    """The size's settings for this run: the scenario and `M_ref` seeded, more held-out prompts for a
    comparison on the default size's data (`default`, `retain`: pairs, validation and so `M_ref` stay
    the same), the generation batch."""
    if size not in settings.sizes:
        raise InputError(f"unknown size {size!r}: use one of {', '.join(settings.sizes)}", field="size")
    spec = settings.sizes[size]
    scenario = replace(spec.scenario, seed=seed)
    default = settings.sizes.get("default")
    if compare and default is not None and spec.scenario == default.scenario:
        scenario = replace(scenario, n_heldout=max(settings.compare.heldout, scenario.n_heldout))
    spec = replace(spec, scenario=scenario, mref=replace(spec.mref, seed=seed))
    if eval_batch_size is not None:
        if eval_batch_size < 1:
            raise InputError(
                f"eval batch size must be at least 1, got {eval_batch_size}", field="eval_batch_size"
            )
        spec = replace(spec, eval_batch_size=eval_batch_size)
    return spec


def policy_agreement(
    model: str | Path,
    paths: dict[str, Path],
    out_dir: Path,
    name: str,
    size: DemoSize,
    *,
    split: str = "heldout",
    progress: bool = True,
) -> dict[str, Any]:
    """Target policy agreement of `model` on the `split` prompts under the old and the new policy.

    Generations are cached, so the second policy only re-judges them; a folder whose inputs have
    not changed (model files, prompts, policy, rules, settings) is read back instead."""
    out = {}
    settings = GenerationSettings(max_new_tokens=size.max_new_tokens)
    for which in ("old", "new"):
        folder = out_dir / f"{name}-{which}-policy"
        fp = fingerprint(
            "agreement", str(Path(model).resolve()), str(paths[split]), str(paths[f"{which}_policy"]),
            str(paths[f"{which}_rules"]), settings.key(),
        )  # fmt: skip

        def work(which: str = which, folder: Path = folder) -> None:
            evaluate_model(
                model,
                paths[split],
                paths[f"{which}_policy"],
                RuleJudge.from_file(paths[f"{which}_rules"]),
                folder,
                name=f"{name} ({which} policy)",
                stress=False,
                settings=settings,
                batch_size=size.eval_batch_size,
                progress=progress,
            )

        run_stage(f"agreement/{name}-{which}", folder, fp, work)
        out[which] = read_json(folder / "metrics.json")["tpa"]
    return out


def _clock(started: float, progress: bool) -> tuple[dict[str, float], Callable[[str], None]]:
    """Stage wall times, and the `step(label)` that records the time since the last one."""
    timings: dict[str, float] = {}

    def step(label: str) -> None:
        timings[label] = round(time.time() - started - sum(timings.values()), 1)
        if progress:
            print(f"[demo] {label} done ({timings[label]:.0f} s)", flush=True)

    return timings, step


def default_out(source: ScenarioSource) -> Path:
    """The run folder of a scenario when none is given: `runs/demo`, `runs/demo-values`, ..."""
    return Path("runs") / ("demo" if source.is_default else f"demo-{source.name}")


def _same_scenario(run_dir: Path, source: ScenarioSource) -> None:
    """Refuse a run folder that holds another scenario's run: its stages would mix two scenarios."""
    held = written_scenario(run_dir / "scenario")
    if held is not None and held != source.name:
        raise InputError(
            f"this run folder holds the {held} scenario's run, not {source.name}'s: use another --out "
            f"(the default for it is {default_out(source)})",
            path=str(run_dir),
            field="scenario",
        )


def _checked(split: str, n_seeds: int) -> int:
    """Refuse a run that asks for what cannot be, before any work is done."""
    if split not in ("heldout", "validation"):
        raise InputError(f"unknown split {split!r}: use heldout or validation", field="split")
    if n_seeds < 1:
        raise InputError(f"seeds must be at least 1, got {n_seeds}", field="seeds")
    return n_seeds


def _methods(settings: DemoSettings, compare: bool, only: Sequence[str] | None) -> tuple[list[str], tuple]:
    """The methods to train (the reference first) and what `--methods` chose."""
    protocol = settings.compare
    chosen = protocol.choices if only is None else tuple(only)
    unknown = sorted(set(chosen) - set(protocol.choices))
    if unknown:
        raise InputError(
            f"unknown compare method {', '.join(unknown)}: use {', '.join(protocol.choices)}", field="methods"
        )
    rows = [m for m in protocol.methods if m in chosen] if compare else []
    return [protocol.reference, *rows], chosen


@dataclass
class Demo:
    """One demo run's fixed parts: where it writes, its size and protocol, the scenario's files and
    `M_ref`. `configure` gives the `trace-realign run` configuration of any of its pipeline runs."""

    run_dir: Path
    spec: DemoSize
    protocol: CompareProtocol
    paths: dict[str, Path]
    mref: Path
    asr: str
    split: str
    progress: bool
    source: ScenarioSource

    def configure(self, folder: Path, **kwargs: Any) -> dict[str, Any]:
        """`pipeline_config`, keeping every checkpoint for the trade-off plot, with the protocol's
        per-method options, the same for every method and seed."""
        kwargs.setdefault("method_train", self.protocol.method_train)
        cfg = pipeline_config(
            folder, self.mref, self.paths, self.spec, asr=self.asr, progress=self.progress, prompts=self.split,
            attack_rules=self.source.files["attack_rules"], eval_cues=self.source.files["eval_judge"], **kwargs,
        )  # fmt: skip
        cfg["train"]["save_steps"] = max(1, self.spec.train_steps // self.protocol.tradeoff_points)
        cfg["train"]["save_total_limit"] = None
        return cfg


def prepare(
    run_dir: Path, settings: DemoSettings, size: str, spec: DemoSize, *, model: Any, asr: str, split: str,
    seed: int, progress: bool, step: Callable[[str], None], source: ScenarioSource,
) -> tuple[Demo, Any, dict[str, Any]]:  # fmt: skip
    """The scenario's files, `M_ref` (built once per machine), and both models' agreement with each
    policy before realignment; then triage and impact scoring, shared by every method and seed."""
    scenario, paths = prepare_scenario(run_dir / "scenario", spec.scenario, source)
    base = base_model(size, model)
    step("scenario")
    mref = build_mref(base, scenario.pairs, spec.mref, progress=progress)
    step("M_ref")
    agreement = {
        name: policy_agreement(m, paths, run_dir / "baseline", name, spec, split=split, progress=progress)
        for name, m in (("base", base), ("M_ref", mref))
    }
    step("baseline agreement")
    demo = Demo(run_dir, spec, settings.compare, paths, mref, asr, split, progress, source)
    run_pipeline(
        demo.configure(run_dir, methods=[settings.compare.reference], seed=0), stages=("triage", "score")
    )
    # the judge's audit, in the report beside the triage
    audit_scenario_judges(scenario.pairs, paths["new_policy"], paths["new_rules"], run_dir / "audit",
                          also_to=run_dir / "triage" / "audit.json", cues=source.files["eval_judge"],
                          source=source)  # fmt: skip
    step("triage and impact")
    return demo, scenario, {"base": str(base), "agreement": agreement}


def run_demo(
    out_dir: str | Path | None = None,
    *,
    scenario: str | Path | ScenarioSource = DEFAULT_SCENARIO,
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
    settings: DemoSettings | str | Path | None = None,
    split: str = "heldout",
    tune: bool = False,
) -> dict[str, Any]:
    """Run the demo into `out_dir`; return (and write as `demo_summary.json`) what it measured.

    `scenario`: the policy shift, a packaged scenario's name ("embedded", the default, or "values") or
    the folder of one's own (docs/scenarios.md); it is read and checked before anything else runs.
    `out_dir` defaults to `runs/demo` (embedded) or `runs/demo-<name>`, and a folder that holds
    another scenario's run is refused. `size` names one of the settings' sizes ("default": SmolLM2;
    "quick": a tiny model; "small": SmolLM2, tiny data). `compare` adds the protocol's rows; `seeds` training seeds (`seed`,
    `seed + 1`, ...; default the protocol's with `compare`, else 1) for its seeded methods. `asr`
    is the attack-success definition ("operational" or "non_compliant", `evaluate.evaluate`).
    `tradeoff` evaluates every method's checkpoints (default: with `compare`). `eval_batch_size`
    replaces the size's generation batch. `only` restricts `compare` to these of the protocol's
    choices (default all); the reference always runs. `settings`: a demo YAML file (or loaded);
    default the packaged demo.yaml under the scenario's own `settings` (docs/scenarios.md).
    `split`: the prompts evaluated, "heldout" (results) or "validation" (choosing settings).
    `tune`: instead of the comparison, the learning-rate grid of the settings' tuning block on the
    validation split (`demo.tune`); returns and writes `tuning.json`.
    """
    started = time.time()
    source = scenario if isinstance(scenario, ScenarioSource) else load_scenario(scenario)
    if not isinstance(settings, DemoSettings):  # a scenario's own choices, unless a file is given
        settings = load_settings(settings, overlay=source.settings if settings is None else None)
    split = "validation" if tune else split
    spec = resolve_size(settings, size, seed=seed, compare=compare, eval_batch_size=eval_batch_size)
    n_seeds = _checked(split, seeds if seeds is not None else (settings.compare.seeds if compare else 1))
    methods, chosen = _methods(settings, compare, only)
    run_dir = Path(out_dir if out_dir is not None else default_out(source)).resolve()
    _same_scenario(run_dir, source)
    run_dir.mkdir(parents=True, exist_ok=True)
    timings, step = _clock(started, progress)
    demo, built, before = prepare(
        run_dir, settings, size, spec, model=model, asr=asr, split=split, seed=seed, progress=progress, step=step,
        source=source,
    )  # fmt: skip
    if tune:
        result = tune_grid(demo, settings, seed=seed, step=step)
        print_tuning(result, Console())
        return result
    groups, runs, not_trained, noise = gather_evidence(
        demo,
        methods,
        compare=compare,
        chosen=chosen,
        seed=seed,
        n_seeds=n_seeds,
        tradeoff=tradeoff,
        step=step,
    )
    comparison = comparison_of(groups, demo.protocol, seed=seed, not_trained=not_trained, noise=noise)
    write_json_if_changed(run_dir / "comparison.json", comparison)
    step("statistics")
    summary = _summary(
        demo, built, before, comparison, size=size, seed=seed, n_seeds=n_seeds, timings=timings
    )
    html, _ = build_report(runs, before="m_ref")
    summary["report"] = str(html)
    step("report")
    timings["total"] = round(time.time() - started, 1)
    write_json_atomic(run_dir / "demo_summary.json", summary)
    print_summary(summary, comparison)
    return summary


def gather_evidence(
    demo: Demo, methods: list[str], *, compare: bool, chosen: Sequence[str], seed: int, n_seeds: int,
    tradeoff: bool | None, step: Callable[[str], None],
) -> tuple[dict[str, list[Path]], list[Path], dict[str, str], dict[str, Any]]:  # fmt: skip
    """Train and evaluate every method, then the further seeds, the noisy-judge and data-scale runs and
    the trade-off checkpoints. Returns each model's evaluation folders (one per seed), the run folders
    for the report, the methods that could not train (with why), and what the weights made of the
    noise."""
    run_dir, protocol = demo.run_dir, demo.protocol
    config = demo.configure(run_dir, methods=methods, seed=seed)
    not_trained = train_each(config, methods, compare=compare, step=step)
    methods = [m for m in methods if m not in not_trained]
    run_pipeline({**config, "methods": methods}, stages=("evaluate",))  # records the whole run's config
    groups = {"M_ref": [run_dir / "eval" / "m_ref"], **{m: [run_dir / "eval" / m] for m in methods}}
    seeds = (
        {m: min(protocol.seeded.get(m, 1), n_seeds) for m in methods}
        if compare
        else {protocol.reference: n_seeds}
    )
    train_seeds(run_dir, demo.configure, methods, groups, seed=seed, seeds=seeds, step=step)
    runs, noise = [run_dir], {}
    if compare and "noise" in chosen:
        more, noise = noise_runs(
            run_dir, demo.configure, demo.paths["new_rules"], groups, seed=seed, protocol=protocol,
            n_seeds=n_seeds, step=step,
        )  # fmt: skip
        runs += more
        step("under judge noise")
    if compare and "scale" in chosen and protocol.scale_fractions:
        runs += scale_runs(
            run_dir,
            demo.configure,
            demo.paths,
            groups,
            seed=seed,
            protocol=protocol,
            n_seeds=n_seeds,
            step=step,
        )
        step("data scale")
    if compare if tradeoff is None else tradeoff:
        evaluate_checkpoints(
            run_dir, methods, demo.paths, demo.spec, protocol, asr=demo.asr, progress=demo.progress,
            attack_rules=demo.source.files["attack_rules"], eval_cues=demo.source.files["eval_judge"],
        )  # fmt: skip
        step("checkpoints for the trade-off plot")
    return groups, runs, not_trained, noise


def _summary(
    demo: Demo, scenario: Any, before: dict[str, Any], comparison: dict[str, Any], *, size: str, seed: int,
    n_seeds: int, timings: dict[str, float],
) -> dict[str, Any]:  # fmt: skip
    """demo_summary.json: the run's settings, the scenario, the triage, and the comparison's rows and tests."""
    return {
        "size": size,
        "seed": seed,
        "seeds": n_seeds,
        "asr": demo.asr,
        "split": demo.split,
        "base_model": before["base"],
        "mref": str(demo.mref),
        "scenario": {
            "name": demo.source.name,
            "pairs": len(scenario.pairs),
            "n_heldout": len(scenario.heldout),
            "n_validation": len(scenario.validation),
            "fingerprint": demo.spec.scenario.fingerprint(demo.source),
            **read_json(demo.paths["manifest"])["pairs_by_kind"],
        },
        "triage": read_json(demo.run_dir / "triage" / "summary.json")["counts"],
        "settings": asdict(demo.spec),
        "method_train": demo.protocol.method_train,
        "baseline_agreement": before["agreement"],
        "rows": summary_rows(comparison),
        "tests": comparison["tests"],
        "tests_also": comparison["tests_also"],
        "not_trained": comparison["not_trained"],
        "timings_s": timings,
    }


def print_summary(summary: dict[str, Any], comparison: dict[str, Any]) -> None:
    """What the demo prints when it is done: agreement before realignment, the comparison, the tests,
    what could not train, the time each stage took and where the report is."""
    console = Console()
    n = summary["seeds"]
    split = summary.get("split", "heldout")
    prompts = summary["scenario"]["n_heldout" if split == "heldout" else "n_validation"]
    name = summary["scenario"].get("name", DEFAULT_SCENARIO)
    of = "" if name == DEFAULT_SCENARIO else f" of the {name} scenario"
    print_agreement(summary["baseline_agreement"], console)
    print_table(
        summary["rows"],
        f"{'Held-out' if split == 'heldout' else 'Validation'} prompts under the new policy{of} ({prompts} prompts, "
        f"{n} training seed{'s' if n > 1 else ''})",
        console,
    )
    print_tests(comparison, console)
    for method, why in summary["not_trained"].items():
        print(f"not trained: {method}: {why}")
    timings = summary["timings_s"]
    print(
        f"time taken: {timings['total']:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items() if k != "total")
        + ")"
    )
    print(f"report: {summary['report']}")
