"""The comparison of `trace-realign demo --compare`: which runs it makes, and the evidence it reads.

Every run goes through `pipeline.run_pipeline`, so a stopped comparison resumes with what it had
not finished. One method at a time is trained then evaluated; the seeded methods are trained again
under further training seeds (the scenario, `M_ref`, triage and impact weights shared), TRACE again
from a noisy judge, and every method's checkpoints evaluated for the trade-off plot. The evidence
(`comparison.json`) is `evaluate.compare.compare_evaluations` over the evaluation folders.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trace_realign.demo.settings import ATTACK_RULES, EVAL_JUDGE_CUES, CompareProtocol, DemoSize
from trace_realign.errors import InputError
from trace_realign.evaluate import GenerationSettings, evaluate_model, read_prompts
from trace_realign.evaluate.compare import compare_evaluations, subset_rates
from trace_realign.io import read_json, read_jsonl, write_json_if_changed
from trace_realign.judges.rules import RuleJudge
from trace_realign.pipeline import fingerprint, run_pipeline, run_stage

Configure = Callable[..., dict[str, Any]]
# the comparison.json cells a summary row carries, in the order tables show them
COLUMNS = (
    "tpa", "invert", "punish", "retain", "not_declined", "asr_fiction", "asr_suppression", "tpa_typed", "mc",
    "perplexity",
)  # fmt: skip


def train_each(
    config: dict[str, Any], methods: list[str], *, compare: bool, step: Callable[[str], None]
) -> dict[str, str]:
    """Train and evaluate each method in turn; return the methods that could not train, with why.

    One method at a time, trained then evaluated: a long comparison that is stopped keeps every
    finished method, and a rerun goes on with the next one. A baseline or ablation that cannot
    train here (e.g. every impact weight clamped to 0) is reported, and the rest goes on."""
    not_trained: dict[str, str] = {}
    for method in methods:
        try:
            run_pipeline({**config, "methods": [method]}, stages=("train", "evaluate"))
        except InputError as exc:
            if not compare or method == methods[0]:
                raise
            not_trained[method] = str(exc)
            print(f"[demo] {method} not trained: {exc}", flush=True)
        step(f"train and evaluate {method}")
    return not_trained


def share_scoring(run_dir: Path, seed_dir: Path) -> None:
    """Give a seed's run folder the main run's impact weights (scored once for every seed)."""
    src, dst = run_dir / "score" / "weighted.jsonl", seed_dir / "score" / "weighted.jsonl"
    if dst.exists() and dst.read_bytes() == src.read_bytes():
        return  # unchanged: keep its time stamp, so nothing downstream reruns
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def train_seeds(
    run_dir: Path,
    configure: Configure,
    methods: list[str],
    groups: dict[str, list[Path]],
    *,
    seed: int,
    n_seeds: int,
    protocol: CompareProtocol,
    step: Callable[[str], None],
) -> None:
    """The seeded methods again under training seeds `seed + 1 ... seed + n_seeds - 1`, each in
    `seeds/seedN/`: the same scenario, `M_ref`, triage and impact weights, and `M_ref` not
    evaluated again. Appends each evaluation folder to its method's group."""
    for k in range(1, n_seeds):
        seed_dir = run_dir / "seeds" / f"seed{seed + k}"
        share_scoring(run_dir, seed_dir)
        seeded = [m for m in methods if m in protocol.seeded]
        seed_config = configure(
            seed_dir, methods=seeded, seed=seed + k, score_seed=seed, evaluate_reference=False
        )
        for method in seeded:
            run_pipeline({**seed_config, "methods": [method]}, stages=("train", "evaluate"))
            groups[method].append(seed_dir / "eval" / method)
        step(f"training seed {seed + k}")


def noise_runs(
    run_dir: Path, configure: Configure, rules: Path, groups: dict[str, list[Path]], *, seed: int,
    protocol: CompareProtocol,
) -> list[Path]:  # fmt: skip
    """TRACE from a judge that flips a share of its verdicts (its own triage and scoring), measured
    with the clean judge; returns the run folders."""
    runs = []
    for rate in protocol.noise_rates:
        tag = f"noise{round(rate * 100)}"
        noisy = configure(
            run_dir / tag,
            methods=["trace"],
            judge=f"noisy:{rate:g}:rules:{rules}",
            evaluate_reference=False,
            seed=seed,
        )
        run_pipeline(noisy)
        groups[f"trace-{tag}"] = [run_dir / tag / "eval" / "trace"]
        runs.append(run_dir / tag)
    return runs


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
    protocol: CompareProtocol,
    *,
    asr: str = "operational",
    progress: bool = True,
    attack_rules: Path = ATTACK_RULES,
    eval_cues: Path = EVAL_JUDGE_CUES,
) -> dict[str, Any]:
    """Agreement, attack success and RETAIN of every method over its training steps: each saved
    checkpoint evaluated on the first `protocol.tradeoff_prompts` held-out prompts (step 0 and the
    last step read from the evaluations already made, on the same prompts), with the scenario's attack
    rules and typed judge (default: the embedded scenario's). Writes `tradeoff.json`."""
    prompts = read_prompts(paths["heldout"])
    if protocol.tradeoff_prompts is not None:
        prompts = prompts[: protocol.tradeoff_prompts]
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
        last = int(read_json(train_dir / "run_summary.json").get("global_step") or 0)
        points = [{"step": 0, **ref}]
        for step_n, ckpt in _checkpoints(train_dir):
            if last - step_n < max(1, last // (2 * protocol.tradeoff_points)):
                continue  # the final model, or next to it: its full evaluation is read below
            folder = run_dir / "tradeoff" / method / f"step-{step_n}"
            fp = fingerprint(
                "tradeoff", read_json(train_dir / ".stage.json").get("fingerprint"), step_n,
                sorted(ids), str(paths["heldout"]), str(paths["new_rules"]), settings.key(), asr,
                str(attack_rules), str(eval_cues),
            )  # fmt: skip

            def work(
                ckpt: Path = ckpt, folder: Path = folder, step_n: int = step_n, method: str = method
            ) -> None:
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
                    attack_judge=f"rules:{attack_rules}",
                    judges={"typed": f"typed:{eval_cues}"},
                )

            run_stage(f"tradeoff/{method}/step-{step_n}", folder, fp, work)
            points.append({"step": step_n, **rates_of(folder)})
        points.append({"step": last, **rates_of(run_dir / "eval" / method)})
        curves[method] = points
    out = {"prompts": len(ids), "asr_definition": asr, "curves": curves}
    write_json_if_changed(run_dir / "tradeoff.json", out)
    return out


def comparison_of(
    groups: dict[str, list[Path]], protocol: CompareProtocol, *, seed: int, not_trained: dict[str, str]
) -> dict[str, Any]:
    """`compare_evaluations` over the groups, with each TRACE row that uses the same information as a
    baseline (trace-oracle, like dpo-gold, trains the oracle corrections) tested against every model
    as well."""
    comparison = compare_evaluations(groups, reference=protocol.reference)
    also = [m for m in protocol.also_tested if m in groups]
    comparison["tests_also"] = {m: compare_evaluations(groups, reference=m)["tests"] for m in also}
    comparison["seeds"] = {m: [seed + k for k in range(len(f))] for m, f in groups.items()}
    comparison["not_trained"] = not_trained
    return comparison


def summary_rows(comparison: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per model from `evaluate.compare.compare_evaluations`: the mean over seeds of each
    cell (percent; perplexity as is), its 95% interval under `<key>_ci`, and the seed count."""
    rows = []
    for name, model in comparison["models"].items():
        row: dict[str, Any] = {"model": name, "seeds": model["seeds"]}
        for key in COLUMNS:
            cell = model["cells"].get(key)
            scale = 1.0 if key == "perplexity" else 100.0
            mean = None if not cell or cell.get("mean") is None else scale * cell["mean"]
            ci = None if not cell or not cell.get("ci95") else [scale * x for x in cell["ci95"]]
            row[key], row[f"{key}_ci"] = mean, ci
        rows.append(row)
    return rows
