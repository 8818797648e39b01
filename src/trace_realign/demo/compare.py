"""The comparison of `trace-realign demo --compare`: which runs it makes, and the evidence it reads.

Every run goes through `pipeline.run_pipeline`, so a stopped comparison resumes with what it had
not finished. One method at a time is trained then evaluated; the seeded methods are trained again
under further training seeds (the scenario, `M_ref`, triage and impact weights shared), TRACE again
from a noisy judge, and every method's checkpoints evaluated for the trade-off plot. The evidence
(`comparison.json`) is `evaluate.compare.compare_evaluations` over the evaluation folders.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trace_realign.demo.settings import ATTACK_RULES, EVAL_JUDGE_CUES, CompareProtocol, DemoSize
from trace_realign.errors import InputError
from trace_realign.evaluate import GenerationSettings, evaluate_model, read_prompts
from trace_realign.evaluate.compare import (
    adjust_family,
    compare_evaluations,
    noise_tag,
    scale_tag,
    study_of,
    subset_rates,
)
from trace_realign.impact.diagnostics import separation
from trace_realign.io import read_json, read_jsonl, write_json_if_changed, write_text_atomic
from trace_realign.judges.rules import RuleJudge
from trace_realign.pipeline import fingerprint, run_pipeline, run_stage
from trace_realign.stats import seed_test

Configure = Callable[..., dict[str, Any]]
# the comparison.json cells a summary row carries, in the order tables show them
COLUMNS = (
    "tpa", "invert", "punish", "retain", "not_declined", "asr_fiction", "asr_suppression", "external_declined",
    "tpa_typed", "mc", "perplexity",
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
    seeds: dict[str, int],
    step: Callable[[str], None],
    tag: str = "",
) -> None:
    """Each method again under its further training seeds (`seeds[method]` in all, the first already
    trained in `run_dir`), each in `seeds/seedN/`: the same scenario, `M_ref`, triage and impact
    weights (scored once), and `M_ref` not evaluated again. Appends each evaluation folder to the
    method's group (named `method` + `tag`)."""
    for k in range(1, max([seeds.get(m, 1) for m in methods], default=1)):
        seed_dir = run_dir / "seeds" / f"seed{seed + k}"
        share_scoring(run_dir, seed_dir)
        these = [m for m in methods if seeds.get(m, 1) > k]
        cfg = configure(seed_dir, methods=these, seed=seed + k, score_seed=seed, evaluate_reference=False)
        for method in these:
            run_pipeline({**cfg, "methods": [method]}, stages=("train", "evaluate"))
            groups[method + tag].append(seed_dir / "eval" / method)
        step(f"training seed {seed + k}{tag}")


def noise_runs(
    run_dir: Path, configure: Configure, rules: Path, groups: dict[str, list[Path]], *, seed: int,
    protocol: CompareProtocol, n_seeds: int, step: Callable[[str], None],
) -> tuple[list[Path], dict[str, Any]]:  # fmt: skip
    """A judge that flips a share of its verdicts triages the data again and it is scored again, at every
    noise rate; at `noise_train_rates` the protocol's noise methods are trained from it under
    `noise_seeds` seeds each, measured with the clean judge. Returns the trained run folders and,
    per rate, how well the impact weights tell the flipped conflicts from the clean ones."""
    runs, separations = [], {}
    for rate in protocol.noise_rates:
        tag = noise_tag(rate)
        folder = run_dir / tag[1:]
        methods = list(protocol.noise_methods)
        judge = f"noisy:{rate:g}:rules:{rules}"

        def configure_noisy(where: Path, judge: str = judge, **kw: Any) -> dict[str, Any]:
            return configure(where, judge=judge, **kw)

        cfg = configure_noisy(folder, methods=methods, evaluate_reference=False, seed=seed)
        run_pipeline(cfg, stages=("triage", "score"))
        separations[tag[1:]] = noise_separation(
            run_dir / "triage" / "triaged.jsonl", folder / "score" / "weighted.jsonl"
        )
        if rate not in protocol.noise_train_rates:
            continue
        for method in methods:
            run_pipeline({**cfg, "methods": [method]}, stages=("train", "evaluate"))
            groups[method + tag] = [folder / "eval" / method]
        seeds = {m: min(protocol.noise_seeds, n_seeds) for m in methods}
        train_seeds(folder, configure_noisy, methods, groups, seed=seed, seeds=seeds, step=step, tag=tag)
        runs.append(folder)
    return runs, separations


def noise_separation(clean: Path, noisy_weighted: Path) -> dict[str, Any]:
    """Do the weights find the noise? Among the conflicts of a noisy judge's triage, those whose
    category differs from the clean judge's were made by a flipped verdict: the AUC of the impact
    weights for telling the clean conflicts from them (1: every flipped one weighs less), overall
    and per category of the noisy triage, with bootstrap intervals (`impact.diagnostics.separation`)."""
    truth = {r["id"]: r["category"] for _, r in read_jsonl(clean)}
    rows = [r for _, r in read_jsonl(noisy_weighted) if r.get("category") in ("INVERT", "PUNISH")]
    out = {}
    for name, subset in (
        ("all", rows),
        *((c, [r for r in rows if r["category"] == c]) for c in ("INVERT", "PUNISH")),
    ):
        weights = {r["id"]: r["impact_weight"] for r in subset if r.get("impact_weight") is not None}
        flipped = {r["id"] for r in subset if truth.get(r["id"]) != r["category"]}
        out[name] = separation(weights, flipped)
    return out


def scale_runs(
    run_dir: Path, configure: Configure, paths: dict[str, Path], groups: dict[str, list[Path]], *, seed: int,
    protocol: CompareProtocol, n_seeds: int, step: Callable[[str], None],
) -> list[Path]:  # fmt: skip
    """How much old data it needs: the protocol's scale methods on a share of the old pairs (a seeded
    draw, stratified by the pair's kind), triaged and weighted anew, under `scale_seeds` seeds; the
    held-out prompts, steps and protocol those of the comparison. Groups are `method@NN%`."""
    runs = []
    for fraction in protocol.scale_fractions:
        tag = scale_tag(fraction)
        folder = run_dir / f"scale{round(fraction * 100)}"
        data = subset_pairs(paths["pairs"], fraction, folder / "pairs.jsonl", seed=seed)
        methods = list(protocol.scale_methods)
        cfg = configure(folder, methods=methods, evaluate_reference=False, seed=seed)
        cfg["data"] = str(data)
        run_pipeline(cfg, stages=("triage", "score"))
        for method in methods:
            run_pipeline({**cfg, "methods": [method]}, stages=("train", "evaluate"))
            groups[method + tag] = [folder / "eval" / method]

        def configure_scaled(where: Path, data: Path = data, **kw: Any) -> dict[str, Any]:
            return {**configure(where, **kw), "data": str(data)}

        seeds = {m: min(protocol.scale_seeds, n_seeds) for m in methods}
        train_seeds(folder, configure_scaled, methods, groups, seed=seed, seeds=seeds, step=step, tag=tag)
        runs.append(folder)
    return runs


def subset_pairs(pairs: Path, fraction: float, out: Path, *, seed: int) -> Path:
    """A seeded `fraction` of the old pairs, the same share of each kind (written once, then kept)."""
    rows = [r for _, r in read_jsonl(pairs)]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_kind.setdefault(str((r.get("meta") or {}).get("kind")), []).append(r)
    rng = random.Random(seed * 7919 + round(fraction * 1000))
    keep = []
    for kind in sorted(by_kind):
        group = by_kind[kind]
        keep += rng.sample(group, max(1, round(fraction * len(group))))
    order = {id(r): i for i, r in enumerate(rows)}
    keep.sort(key=lambda r: order[id(r)])
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep)
    if not (out.is_file() and out.read_text(encoding="utf-8") == text):
        write_text_atomic(out, text)
    return out


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
    groups: dict[str, list[Path]],
    protocol: CompareProtocol,
    *,
    seed: int,
    not_trained: dict[str, str],
    noise: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`compare_evaluations` over the groups, with each TRACE row that uses the same information as a
    baseline (trace-oracle, like dpo-gold, trains the oracle corrections) tested against every row of
    the comparison as well (not a study's), and every method-level test's p adjusted by Holm over the
    tests of its metric in its family: the comparison's, or its study's (`study_of`)."""
    rows = [m for m in groups if not study_of(m)]  # a study's rows answer its own question
    also = {m: rows for m in protocol.also_tested if m in groups}
    comparison = compare_evaluations(groups, reference=protocol.reference, also=also)
    comparison["seeds"] = {m: [seed + k for k in range(len(f))] for m, f in groups.items()}
    comparison["not_trained"] = not_trained
    comparison["noise_weights"] = noise or {}
    comparison["pairs_tested"] = extra_tests(comparison, groups, protocol)
    adjust_family(comparison, study_of)
    return comparison


def extra_tests(
    comparison: dict[str, Any], groups: dict[str, list[Path]], protocol: CompareProtocol
) -> dict[str, Any]:
    """The seed-level tests the studies ask for beside the reference's: trace against trace-no-impact
    under each noisy judge, and each method on a share of the data against itself and against
    naive-oracle-dpo on all of it (the paper's data-scale claim)."""
    pairs = []
    for rate in protocol.noise_train_rates:
        tag = noise_tag(rate)
        pairs.append((f"trace{tag}", f"trace-no-impact{tag}"))
    for fraction in protocol.scale_fractions:
        tag = scale_tag(fraction)
        pairs += [
            (f"trace{tag}", "naive-oracle-dpo"),
            (f"trace{tag}", f"naive-oracle-dpo{tag}"),
            (f"trace{tag}", "trace"),
        ]
    out = {}
    for a, b in pairs:
        if a in groups and b in groups:
            out[f"{a} vs {b}"] = {
                m: seed_test(
                    comparison["models"][a]["cells"][m]["per_seed"],
                    comparison["models"][b]["cells"][m]["per_seed"],
                )
                for m in ("tpa", "retain", "external_declined")
                if m in comparison["models"][a]["cells"] and m in comparison["models"][b]["cells"]
            }
    return out


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
