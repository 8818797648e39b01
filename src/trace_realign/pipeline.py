"""`trace-realign run CONFIG.yaml`: triage -> score -> train (-> evaluate) from one YAML file.

    run_dir: runs/example           # default: run/ beside the config file
    model: models/m_ref             # M_ref: a path, Hub id or adapter folder
    data: pairs.jsonl               # old preference pairs (anything `triage --data` reads)
    policy: new_policy.md
    judge: rules:rules.yaml         # a judge spec, or a block as `triage --config` takes it
    triage: {corrections: ..., limit: 100}          # more `triage` options (optional)
    score: {mode: fd, gold_size: 64}                # `ScoreConfig` options (optional)
    methods: [trace, naive-oracle-dpo]              # each trains into train/<method>
    train: {max_steps: 100, per_device_train_batch_size: 4}  # TraceConfig options for every method
    method_train: {u2a: {learning_rate: 3.0e-4}}    # optional: a method's own options over `train`
    evaluate: {prompts: heldout.jsonl}              # optional: `evaluate_model` options (`judge:` to
                                                    # evaluate with another judge than triage's)

Each stage is its Python function (`triage.stage.run_triage`, `impact.stage.score`,
`update.train`, `evaluate.evaluate_model`); the blocks are their options by name (`-` or `_`
alike; `method_train`'s method names as spelled). Score takes the model, LoRA, loss, length and seed options of the train block unless
the score block sets them: the impact weights must be gradients over the parameters and of the
loss that training uses. Relative paths are read from the config file's folder. The run
directory is laid out as docs/architecture.md says (config.yaml, triage/, score/,
train/<method>/, eval/<name>/). Each stage records a fingerprint of its options and input files in `<stage dir>/.stage.json` when it
finishes; a rerun skips every stage whose fingerprint has not changed, so a crashed run continues
with the stage that did not finish (and triage, score and train each resume inside themselves:
verdict cache, scoring work folder, trainer checkpoints).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from trace_realign.errors import InputError
from trace_realign.evaluate.evaluate import evaluate_model
from trace_realign.evaluate.generate import GenerationSettings
from trace_realign.impact.stage import ScoreConfig, score
from trace_realign.io import load_yaml, read_json, write_json_atomic, write_text_atomic
from trace_realign.judges.spec import split_path_spec
from trace_realign.triage.stage import OPTIONS, run_triage

# Imported inside functions: the training code (torch, transformers) is imported inside the functions that train: `run --help`
# and a triage-only run stay light.

TOP_LEVEL = {
    "run_dir", "model", "data", "policy", "judge", "triage", "score", "methods", "train", "method_train", "evaluate",
}  # fmt: skip
STAGES = ("triage", "score", "train", "evaluate")


# ---- configuration -------------------------------------------------------------------------


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a run config, check its keys, and make its relative paths absolute."""
    path = Path(path).resolve()
    cfg = load_yaml(path)
    for key in cfg:
        if key not in TOP_LEVEL:
            raise InputError(
                f"unknown key (known: {', '.join(sorted(TOP_LEVEL))})", path=str(path), field=key
            )
    for key in ("model", "data", "policy", "judge"):
        if key not in cfg:
            raise InputError("missing", path=str(path), field=key)
    cfg = _absolute_paths(cfg, path.parent)
    cfg.setdefault("run_dir", str(path.parent / "run"))
    cfg["_source"] = str(path)
    return cfg


def _absolute_paths(cfg: dict[str, Any], base: Path) -> dict[str, Any]:
    """Strings naming an existing file or folder relative to `base` become absolute (also after
    `rules:`, `hf:`, `file:` and `noisy:RATE:`); anything else (Hub ids, numbers, specs, method names)
    stays as written."""

    def fix(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, str):
            prefix, rest = split_path_spec(value)
            if rest and not Path(rest).is_absolute() and (base / rest).exists():
                return prefix + str((base / rest).resolve())
        return value

    out = {k: (v if k == "methods" else fix(v)) for k, v in cfg.items()}
    if isinstance(out.get("run_dir"), str):
        out["run_dir"] = str((base / out["run_dir"]).resolve())  # an absolute run_dir stays as it is
    return out


# ---- fingerprints --------------------------------------------------------------------------


# options that change what is shown while a stage runs, never what it writes: `fingerprint` leaves
# them out, so a rerun with or without progress bars reuses the finished stages
DISPLAY_ONLY = frozenset({"progress", "no_progress", "disable_tqdm"})


def fingerprint(*parts: Any) -> str:
    """A hash of options and of the content of every file they name, also inside a judge or
    corrections spec (`rules:`, `hf:`, `file:`, `noisy:RATE:...`; folders: names, sizes, times).
    The display-only options (`DISPLAY_ONLY`) of any mapping are left out."""
    h = hashlib.sha256()

    def feed(v: Any) -> None:
        if isinstance(v, dict):
            for k in sorted(v):
                if k in DISPLAY_ONLY:
                    continue
                h.update(f"{k}=".encode())
                feed(v[k])
        elif isinstance(v, (list, tuple)):
            for x in v:
                feed(x)
        else:
            h.update(json.dumps(v, default=str).encode())
            path = Path(split_path_spec(v)[1]) if isinstance(v, str) and len(v) < 4096 else None
            if path is not None and path.is_absolute() and path.is_file():
                h.update(hashlib.sha256(path.read_bytes()).digest())
            elif path is not None and path.is_absolute() and path.is_dir():
                for f in sorted(path.rglob("*")):
                    if f.is_file() and "checkpoint-" not in str(f):
                        st = f.stat()
                        h.update(f"{f.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}".encode())

    feed(parts)
    return h.hexdigest()[:16]


def stage_done(stage_dir: Path, fp: str) -> bool:
    """Did the stage in `stage_dir` finish with these inputs (its `.stage.json` holds `fp`)?"""
    marker = stage_dir / ".stage.json"
    if not marker.exists():
        return False
    try:
        return read_json(marker).get("fingerprint") == fp
    except InputError:
        return False


def run_stage(
    name: str,
    stage_dir: Path,
    fp: str,
    work: Callable[[], None],
    status: dict[str, str] | None = None,
    force: bool = False,
) -> bool:
    """Run `work` unless the stage already finished with fingerprint `fp`; mark it done after.

    The one "skip if unchanged" rule of every stage, the demo's measurements included. Returns
    whether `work` ran; `status[name]` says what happened."""
    status = {} if status is None else status
    if not force and stage_done(stage_dir, fp):
        status[name] = "skipped (unchanged)"
        return False
    marker = stage_dir / ".stage.json"
    if marker.exists():  # inputs changed since it finished: its outputs are stale
        marker.unlink()
    print(f"trace-realign run: {name} ...", file=sys.stderr)
    work()
    write_json_atomic(marker, {"fingerprint": fp})
    status[name] = "ran"
    return True


def with_progress(cfg: dict[str, Any], on: bool) -> dict[str, Any]:
    """The config with every stage's progress bars on or off, each under its own option's name
    (all of them display-only: no fingerprint changes)."""
    blocks = {
        "triage": {"progress": on},
        "score": {"no_progress": not on},
        "train": {"disable_tqdm": not on},
        "evaluate": {"progress": on},
    }
    out = dict(cfg)
    for name, opts in blocks.items():
        if isinstance(out.get(name), dict) or name != "evaluate":
            out[name] = {**(out.get(name) or {}), **opts}
    return out


# ---- stages --------------------------------------------------------------------------------


def _options(block: Any, name: str) -> dict[str, Any]:
    """A stage's YAML block as keyword arguments (`-` or `_` alike)."""
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise InputError("expected a mapping of options", field=name)
    return {str(k).replace("-", "_"): v for k, v in block.items()}


def _method_options(block: Any) -> dict[str, dict[str, Any]]:
    """The `method_train` block: method names as spelled (`trace-oracle` is not `trace_oracle`),
    each with its options as keyword arguments. A name that is no method is an input error: its
    options would otherwise never reach training."""
    from trace_realign.update.presets import PRESETS

    if block is None:
        return {}
    if not isinstance(block, dict):
        raise InputError("expected a mapping of method names to options", field="method_train")
    for method in block:
        if method not in PRESETS:
            raise InputError(f"unknown method (known: {', '.join(PRESETS)})", field=f"method_train.{method}")
    return {str(m): _options(opts, f"method_train.{m}") for m, opts in block.items()}


def _triage_options(cfg: dict[str, Any], out: Path) -> dict[str, Any]:

    opts = _options(cfg.get("triage"), "triage")
    for key in opts:
        if key not in OPTIONS or key in ("data", "policy", "judge", "out"):
            raise InputError(
                f"unknown or reserved triage option (known: {', '.join(OPTIONS)})", field=f"triage.{key}"
            )
    return {**opts, "data": cfg["data"], "policy": cfg["policy"], "judge": cfg["judge"], "out": str(out)}


# score options that are not `ScoreConfig` fields
_SCORE_CALL = {"summary": None, "ref_cache_dir": None, "no_ref_cache": False, "no_progress": False}


def _score_options(score: dict[str, Any], train: dict[str, Any]) -> dict[str, Any]:
    """The score block over what it shares with the train block (model, LoRA, loss, lengths, seed):
    the impact weights are gradients over the LoRA parameters training trains and of its loss, and
    equal lengths let training reuse the reference log-probabilities score cached."""
    from trace_realign.update.config import TraceConfig

    known = {f.name for f in fields(ScoreConfig)}
    for key in score:
        if key not in known and key not in _SCORE_CALL:
            raise InputError("unknown or reserved score option", field=f"score.{key}")
    shared = known & {f.name for f in fields(TraceConfig)}
    # TraceConfig's seed default (42) is TrainingArguments', and ScoreConfig's is the same
    inherited = {k: v for k, v in train.items() if k in shared}
    if inherited.get("weight_normalisation") == "none":  # a training-only choice
        inherited.pop("weight_normalisation")
    return {**inherited, **score}


def _score_config(options: dict[str, Any]) -> Any:

    try:
        return ScoreConfig(**{k: v for k, v in options.items() if k not in _SCORE_CALL})
    except TypeError as exc:
        raise InputError(str(exc), field="score") from None


def _train_config(options: dict[str, Any], method: str, output_dir: Path) -> Any:
    from trace_realign.update.config import TraceConfig

    known = {f.name for f in fields(TraceConfig)}
    for key in options:
        if key == "gamma":  # it was a train option that training never read
            raise InputError(
                "gamma is an impact-scoring option: set it in the score block", field="train.gamma"
            )
        if key not in known:
            raise InputError("unknown train option", field=f"train.{key}")
    opts = {"report_to": "none", **options, "method": method, "output_dir": str(output_dir)}
    try:
        return TraceConfig(**opts)
    except InputError:
        raise
    except ValueError as exc:
        raise InputError(str(exc).splitlines()[0], field="train") from None


def run_pipeline(
    config: dict[str, Any] | str | Path,
    *,
    force: bool = False,
    stages: tuple[str, ...] = STAGES,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Run (or continue) a whole realignment; return `{"run_dir", "status": {stage: ran|skipped}, "train": {...}}`.

    `config` is a path to the YAML file or the same mapping (its relative paths: from the working directory).
    `force` reruns every stage; `stages` limits the run to some of them (their inputs must exist).
    `progress` (when given) turns every stage's progress bars on or off, whatever the blocks say.
    """

    # a mapping's relative paths are relative to the working directory: made absolute here, so
    # that the config.yaml written into the run folder names the same files
    cfg = (
        load_config(config) if isinstance(config, (str, Path)) else _absolute_paths(dict(config), Path.cwd())
    )
    if progress is not None:
        cfg = with_progress(cfg, progress)
    run_dir = Path(cfg.get("run_dir") or "run").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in cfg.items() if not k.startswith("_")}
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(public, sort_keys=False, allow_unicode=True))
    status: dict[str, str] = {}
    result: dict[str, Any] = {"run_dir": str(run_dir), "status": status, "train": {}, "eval": {}}
    triaged = run_dir / "triage" / "triaged.jsonl"
    weighted = run_dir / "score" / "weighted.jsonl"

    triage_opts = _triage_options(cfg, triaged)
    # the output path must not enter: once written, its content would change the fingerprint
    fp_triage = fingerprint("triage", {k: v for k, v in triage_opts.items() if k != "out"})

    def do_triage() -> None:
        run_triage(**triage_opts)

    train_opts = _options(cfg.get("train"), "train")
    score_opts = _score_options(_options(cfg.get("score"), "score"), train_opts)
    score_config = _score_config(score_opts)
    fp_score = fingerprint("score", cfg["model"], score_opts, fp_triage)

    def do_score() -> None:
        score(
            cfg["model"],
            triaged,
            weighted,
            score_config,
            summary_path=score_opts.get("summary"),
            ref_cache_dir=score_opts.get("ref_cache_dir"),
            ref_cache=not score_opts.get("no_ref_cache", False),
            progress=not score_opts.get("no_progress", False),
        )

    if "triage" in stages:
        run_stage("triage", run_dir / "triage", fp_triage, do_triage, status, force)
    if "score" in stages:
        run_stage("score", run_dir / "score", fp_score, do_score, status, force)
    # an explicit empty list trains nothing (e.g. only M_ref is evaluated); no key means trace
    methods = list(cfg["methods"]) if cfg.get("methods") is not None else ["trace"]
    fp_train = _train_methods(
        cfg, run_dir, methods, weighted, train_opts, fp_score, stages, status, force, result
    )
    if "evaluate" in stages and cfg.get("evaluate"):
        _evaluate(cfg, run_dir, methods, fp_train, status, force, result)
    write_json_atomic(run_dir / "run.json", {k: v for k, v in result.items() if k != "run_dir"})
    return result


def retain_answers(cfg: dict[str, Any], run_dir: Path, opts: dict[str, Any]) -> Path:
    """The retain set of `retain_prompts`: the reference model's own greedy answers to those prompts,
    made once (generations cached) into `retain/answers-<hash>.jsonl`, which `train` reads as
    `retain_answers`. The prompts: a JSONL file of `prompt` rows, or `external:NAME:SPLIT`."""
    from trace_realign.cache import GenerationCache
    from trace_realign.evaluate.external import external_rows
    from trace_realign.evaluate.generate import GenerationSettings, generate_responses, make_backend
    from trace_realign.io import read_jsonl, write_jsonl_atomic

    spec = str(opts["retain_prompts"])
    settings = GenerationSettings(max_new_tokens=int(opts.get("retain_max_new_tokens", 64)))
    out = run_dir / "retain" / f"answers-{fingerprint('retain', cfg['model'], spec, settings.key())}.jsonl"
    if out.is_file():
        return out
    if spec.startswith("external:"):
        name, _, split = spec.removeprefix("external:").partition(":")
        rows = external_rows(name, split or "anchor")
    else:
        rows = [row for _, row in read_jsonl(spec)]
        for n, row in enumerate(rows, start=1):
            if "prompt" not in row:
                raise InputError("missing", path=spec, line=n, field="prompt")
    with GenerationCache() as cache:
        answers = generate_responses(
            make_backend(cfg["model"]), [r["prompt"] for r in rows], settings, cache=cache, progress=False,
            desc="retain answers",
        )  # fmt: skip
    write_jsonl_atomic(
        out,
        (
            {"id": r.get("id"), "prompt": r["prompt"], "response": a}
            for r, a in zip(rows, answers, strict=True)
        ),
    )
    return out


def _train_methods(
    cfg: dict[str, Any], run_dir: Path, methods: list[str], weighted: Path, train_opts: dict[str, Any],
    fp_score: str, stages: tuple[str, ...], status: dict[str, str], force: bool, result: dict[str, Any],
) -> dict[str, str]:  # fmt: skip
    """Train each method into train/<method> (when "train" is a stage); return each one's training
    fingerprint, which its evaluation is keyed on whether or not it trained now."""
    per_method = _method_options(cfg.get("method_train"))
    fp_train: dict[str, str] = {}
    for method in methods:
        out = run_dir / "train" / method
        # a method's own options (e.g. the learning rate chosen for it on validation) over the shared block
        method_opts = {**train_opts, **per_method.get(method, {})}
        fp_train[method] = fingerprint("train", cfg["model"], method, method_opts, fp_score)
        if method_opts.get("retain_prompts") and "train" in stages:
            method_opts = {**method_opts, "retain_answers": str(retain_answers(cfg, run_dir, method_opts))}
        if "train" not in stages:
            continue
        result["train"][method] = str(out)
        if not force and stage_done(out, fp_train[method]):
            status[f"train/{method}"] = "skipped (unchanged)"
            continue
        # checkpoints of a crashed run are resumed only when they come from the same settings
        started = out / ".started.json"
        if out.exists() and (
            force or not started.exists() or read_json(started).get("fingerprint") != fp_train[method]
        ):
            shutil.rmtree(out)
        write_json_atomic(started, {"fingerprint": fp_train[method]})

        def do_train(method: str = method, out: Path = out, opts: dict[str, Any] = method_opts) -> None:
            from trace_realign.update.trainer import train

            train(cfg["model"], weighted, _train_config(opts, method, out))

        run_stage(f"train/{method}", out, fp_train[method], do_train, status, True)
    return fp_train


def _evaluate(
    cfg: dict[str, Any],
    run_dir: Path,
    methods: list[str],
    fp_train: dict[str, str],
    status: dict[str, str],
    force: bool,
    result: dict[str, Any],
) -> None:
    """Evaluate M_ref and every trained method with `evaluate_model`."""

    opts = dict(cfg["evaluate"])
    if "prompts" not in opts:
        raise InputError("missing", field="evaluate.prompts")
    include_ref = opts.pop("reference", True)
    # e.g. triage with a noisy or cheap judge, evaluate with the clean one
    judge = opts.pop("judge", cfg["judge"])
    extra = {k: v for k, v in opts.items() if k not in ("prompts", "generation")}
    if "generation" in opts:  # a YAML block of decoding settings
        extra["settings"] = GenerationSettings(**opts["generation"])
    models = {"m_ref": cfg["model"]} if include_ref else {}
    models.update({m: str(run_dir / "train" / m) for m in methods})
    for name, model in models.items():
        out = run_dir / "eval" / name
        # a trained model is identified by its training fingerprint, not by its folder's file times
        fp = fingerprint("evaluate", name, fp_train.get(name) or model, opts, cfg["policy"], judge)

        def work(name: str = name, model: str = model, out: Path = out) -> None:
            evaluate_model(model, opts["prompts"], cfg["policy"], judge, out, name=name, **extra)

        run_stage(f"eval/{name}", out, fp, work, status, force)
        result["eval"][name] = str(out)


# ---- command line --------------------------------------------------------------------------


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="triage -> score -> train (-> evaluate) from one YAML file, resumable",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="the run's YAML file")
    p.add_argument("--force", action="store_true", help="rerun every stage, even unchanged ones")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="run only these stages")
    p.add_argument("--no-progress", action="store_true", help="no progress bars in any stage")


def run(args: argparse.Namespace) -> int:
    result = run_pipeline(
        args.config, force=args.force, stages=tuple(args.stages), progress=not args.no_progress
    )
    for stage, what in result["status"].items():
        print(f"{stage}: {what}", file=sys.stderr)
    print(f"run directory: {result['run_dir']}", file=sys.stderr)
    return 0
