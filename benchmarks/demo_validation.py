"""Tuning the demo on the VALIDATION split (never the held-out one): one setting, one JSON line.

    python benchmarks/demo_validation.py --name lr5e-4 --set learning_rate=5e-4 --set alpha_kl=2
    python benchmarks/demo_validation.py --name natural --method trace --steps 40

Builds the default demo's scenario and `M_ref` (cached), triages and scores once under `--out`
(`base/`), then trains the method with the default size's settings plus the `--set` overrides
(fields of `demo.settings.DemoSize`) into `--out/<name>` and evaluates it and `M_ref` on the
validation prompts: topics, context phrasings, requests, cues and prefixes seen neither in training
nor in the held-out set. Prints one JSON line: the validation rows of `M_ref` and the method, the
differences the targets speak of, the settings and the wall time of each step.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep: the CPU is shared


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/tune")
    ap.add_argument("--name", required=True)
    ap.add_argument("--method", default="trace")
    ap.add_argument("--set", action="append", default=[], help="FIELD=VALUE of DemoSize (JSON value)")
    ap.add_argument("--n-validation", type=int, default=None)
    args = ap.parse_args()

    from trace_realign.demo.compare import summary_rows
    from trace_realign.demo.run import base_model
    from trace_realign.demo.settings import load_settings, pipeline_config
    from trace_realign.evaluate.compare import compare_evaluations
    from trace_realign.pipeline import run_pipeline
    from trace_realign.scenario.generate import prepare_scenario
    from trace_realign.scenario.mref import build_mref

    spec = load_settings().sizes["default"]
    overrides = dict(kv.split("=", 1) for kv in args.set)
    spec = replace(spec, **{k: _value(v) for k, v in overrides.items()})
    if args.n_validation:
        spec = replace(spec, scenario=replace(spec.scenario, n_validation=args.n_validation))
    out = Path(args.out).resolve()
    t: dict[str, float] = {}
    start = time.time()

    def step(label: str) -> None:
        t[label] = round(time.time() - start - sum(t.values()), 1)

    scenario, paths = prepare_scenario(out / "base", spec.scenario)
    mref = build_mref(base_model("default"), scenario.pairs, spec.mref, progress=False)
    step("scenario_and_mref")
    base_cfg = pipeline_config(out / "base", mref, paths, spec, methods=[args.method], progress=False)
    base_cfg["evaluate"]["prompts"] = str(paths["validation"])
    run_pipeline({**base_cfg, "methods": []}, stages=("triage", "score", "evaluate"))  # M_ref on validation
    step("triage_score_mref_eval")
    run_dir = out / args.name
    for stage in ("triage", "score"):  # shared: their fingerprints do not depend on the run folder
        if not (run_dir / stage).exists():
            shutil.copytree(out / "base" / stage, run_dir / stage)
    cfg = pipeline_config(
        run_dir, mref, paths, spec, methods=[args.method], evaluate_reference=False, progress=False
    )
    cfg["evaluate"]["prompts"] = str(paths["validation"])
    run_pipeline(cfg, stages=("train",))
    step("train")
    run_pipeline(cfg, stages=("evaluate",))
    step("evaluate")
    folders = {"M_ref": [out / "base" / "eval" / "m_ref"], args.method: [run_dir / "eval" / args.method]}
    rows = {r["model"]: r for r in summary_rows(compare_evaluations(folders))}
    ref, new = rows["M_ref"], rows[args.method]

    def diff(key: str):
        return None if ref[key] is None or new[key] is None else round(new[key] - ref[key], 1)

    print(
        json.dumps(
            {
                "name": args.name,
                "split": "validation",
                "n_prompts": len(scenario.validation),
                "overrides": overrides,
                "tpa_gain": diff("tpa"),
                "asr_fiction_increase": diff("asr_fiction"),
                "asr_suppression_increase": diff("asr_suppression"),
                "mc_change": diff("mc"),
                "ppl_ratio": None
                if not ref["perplexity"]
                else round(new["perplexity"] / ref["perplexity"], 3),
                "rows": rows,
                "settings": {k: v for k, v in asdict(spec).items() if k not in ("scenario", "mref")},
                "time_s": t,
            }
        )
    )


if __name__ == "__main__":
    main()
