"""`trace-realign run CONFIG.yaml`: triage -> score -> train (-> evaluate) from one YAML file.

    run_dir: runs/example           # default: run/ beside the config file
    model: models/m_ref             # M_ref: a path, Hub id or adapter folder
    data: pairs.jsonl               # old preference pairs (anything `triage --data` reads)
    policy: new_policy.md
    judge: rules:rules.yaml         # a judge spec, or a block as `triage --config` takes it
    triage: {corrections: ..., limit: 100}          # more `triage` options (optional)
    score: {mode: fd, gold_size: 64, use_peft: true}  # `score` options (optional)
    methods: [trace, naive-oracle-dpo]              # each trains into train/<method>
    train: {max_steps: 100, per_device_train_batch_size: 4}  # TraceConfig options for every method
    evaluate: {prompts: heldout.jsonl}              # optional: `evaluate_model` options (`judge:` to
                                                    # evaluate with another judge than triage's)

Relative paths are read from the config file's folder. The run directory is laid out as
docs/architecture.md says (config.yaml, triage/, score/, train/<method>/, eval/<name>/). Each stage
records a fingerprint of its options and input files in `<stage dir>/.stage.json` when it
finishes; a rerun skips every stage whose fingerprint has not changed, so a crashed run continues
with the stage that did not finish (and triage, score and train each resume inside themselves:
verdict cache, scoring work folder, trainer checkpoints).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from trace_realign.errors import InputError, TraceError
from trace_realign.io import read_json, write_json_atomic, write_text_atomic

TOP_LEVEL = {"run_dir", "model", "data", "policy", "judge", "triage", "score", "methods", "train", "evaluate"}
STAGES = ("triage", "score", "train", "evaluate")


# ---- configuration -------------------------------------------------------------------------


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a run config, check its keys, and make its relative paths absolute."""
    from trace_realign.update.cli import load_yaml

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


# what may stand before a path in a spec: a noise wrapper, then a rule or local-model judge, or a
# corrections file
_PATH_PREFIX = re.compile(r"(noisy:[0-9.eE+-]+:)?(rules:|hf:|file:)?")


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
            prefix = _PATH_PREFIX.match(value).group(0)
            rest = value[len(prefix) :]
            if rest and not Path(rest).is_absolute() and (base / rest).exists():
                return prefix + str((base / rest).resolve())
        return value

    out = {k: (v if k == "methods" else fix(v)) for k, v in cfg.items()}
    if isinstance(out.get("run_dir"), str):
        out["run_dir"] = str((base / out["run_dir"]).resolve())  # an absolute run_dir stays as it is
    return out


# ---- fingerprints --------------------------------------------------------------------------


def fingerprint(*parts: Any) -> str:
    """A hash of options and of the content of every file they name (folders: names, sizes, times)."""
    h = hashlib.sha256()

    def feed(v: Any) -> None:
        if isinstance(v, dict):
            for k in sorted(v):
                h.update(f"{k}=".encode())
                feed(v[k])
        elif isinstance(v, (list, tuple)):
            for x in v:
                feed(x)
        else:
            h.update(json.dumps(v, default=str).encode())
            path = Path(v.removeprefix("rules:")) if isinstance(v, str) and len(v) < 4096 else None
            if path is not None and path.is_absolute() and path.is_file():
                h.update(hashlib.sha256(path.read_bytes()).digest())
            elif path is not None and path.is_absolute() and path.is_dir():
                for f in sorted(path.rglob("*")):
                    if f.is_file() and "checkpoint-" not in str(f):
                        st = f.stat()
                        h.update(f"{f.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}".encode())

    feed(parts)
    return h.hexdigest()[:16]


def _done(stage_dir: Path, fp: str) -> bool:
    marker = stage_dir / ".stage.json"
    if not marker.exists():
        return False
    try:
        return read_json(marker).get("fingerprint") == fp
    except InputError:
        return False


def _mark_done(stage_dir: Path, fp: str) -> None:
    write_json_atomic(stage_dir / ".stage.json", {"fingerprint": fp})


def _stage(
    name: str, stage_dir: Path, fp: str, work: Callable[[], None], status: dict[str, str], force: bool
) -> None:
    if not force and _done(stage_dir, fp):
        status[name] = "skipped (unchanged)"
        return
    marker = stage_dir / ".stage.json"
    if marker.exists():  # inputs changed since it finished: its outputs are stale
        marker.unlink()
    print(f"trace-realign run: {name} ...", file=sys.stderr)
    work()
    _mark_done(stage_dir, fp)
    status[name] = "ran"


# ---- stages --------------------------------------------------------------------------------


class StageError(TraceError):
    """A stage's own command failed; it has printed why. Carries that command's exit code."""

    def __init__(self, stage: str, code: int) -> None:
        super().__init__(f"stage {stage} failed with exit code {code} (its message is above)")
        self.exit_code = code


def _cli(argv: list[str]) -> None:
    """Run a stage's own command (its public interface), turning its exit code back into an error."""
    from trace_realign.cli import main

    code = main(argv)
    if code:
        raise StageError(argv[0], code)


def _score_argv(options: dict[str, Any]) -> list[str]:
    """`score` flags from a YAML block, spelled as that command spells them (`gold_size` -> `--gold-size`)."""
    from trace_realign.impact.cli import add_parser

    parser = argparse.ArgumentParser(add_help=False)
    add_parser(parser.add_subparsers())
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["score"]
    by_dest = {a.dest: a for a in sub._actions if a.option_strings}
    argv: list[str] = []
    for key, value in options.items():
        action = by_dest.get(str(key).replace("-", "_"))
        if action is None or action.dest in ("model", "triaged", "out", "help"):
            raise InputError("unknown or reserved score option", field=f"score.{key}")
        flag = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            argv += [flag] if value else []
        elif isinstance(value, list):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def _score_defaults(train: dict[str, Any]) -> dict[str, Any]:
    """Score with the settings training will use, unless the score block says otherwise: the impact
    weights are gradients over the same LoRA parameters and the same loss, and equal lengths let
    training reuse the reference log-probabilities the score stage cached."""
    from trace_realign.update.config import TraceConfig

    defaults = {f.name: f.default for f in fields(TraceConfig) if f.name in _SCORE_FROM_TRAIN}
    defaults["lora_target_modules"] = ["q_proj", "v_proj"]
    merged = {**defaults, **{k: v for k, v in train.items() if k in _SCORE_FROM_TRAIN}}
    if merged.get("weight_normalisation") not in ("mean", "paper"):  # "none" is a training-only choice
        merged.pop("weight_normalisation", None)
    out = {_SCORE_FROM_TRAIN[k]: v for k, v in merged.items() if v is not None}
    if not out.pop("use_peft", True):
        out = {k: v for k, v in out.items() if not k.startswith("lora_")}
    else:
        out["use_peft"] = True
    return out


# train option -> the score option it should match
_SCORE_FROM_TRAIN = {
    "use_peft": "use_peft",
    "lora_r": "lora_r",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
    "lora_target_modules": "lora_target_modules",
    "beta": "beta",
    "loss_type": "loss",
    "gamma": "gamma",
    "weight_normalisation": "normalisation",
    "max_length": "max_length",
    "max_prompt_length": "max_prompt_length",
    "seed": "seed",
}


def _train_config(options: dict[str, Any], method: str, output_dir: Path) -> Any:
    from trace_realign.update.config import TraceConfig

    known = {f.name for f in fields(TraceConfig)}
    for key in options:
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
    config: dict[str, Any] | str | Path, *, force: bool = False, stages: tuple[str, ...] = STAGES
) -> dict[str, Any]:
    """Run (or continue) a whole realignment; return `{"run_dir", "status": {stage: ran|skipped}, "train": {...}}`.

    `config` is a path to the YAML file or the same mapping (its relative paths: from the working directory).
    `force` reruns every stage; `stages` limits the run to some of them (their inputs must exist).
    """
    import yaml

    # a mapping's relative paths are relative to the working directory: made absolute here, since
    # the stages read them from config files written under the run folder
    cfg = (
        load_config(config) if isinstance(config, (str, Path)) else _absolute_paths(dict(config), Path.cwd())
    )
    run_dir = Path(cfg.get("run_dir") or "run").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in cfg.items() if not k.startswith("_")}
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(public, sort_keys=False, allow_unicode=True))
    status: dict[str, str] = {}
    result: dict[str, Any] = {"run_dir": str(run_dir), "status": status, "train": {}, "eval": {}}
    triaged = run_dir / "triage" / "triaged.jsonl"
    weighted = run_dir / "score" / "weighted.jsonl"

    triage_opts = {
        **(cfg.get("triage") or {}),
        "data": cfg["data"],
        "policy": cfg["policy"],
        "judge": cfg["judge"],
        "out": str(triaged),
    }
    # the output path must not enter: once written, its content would change the fingerprint
    fp_triage = fingerprint("triage", {k: v for k, v in triage_opts.items() if k != "out"})

    def do_triage() -> None:
        conf = run_dir / "triage" / "triage_config.yaml"
        write_text_atomic(conf, yaml.safe_dump({"triage": triage_opts}, sort_keys=False, allow_unicode=True))
        _cli(["triage", "--config", str(conf)])

    score_opts = {**_score_defaults(cfg.get("train") or {}), **(cfg.get("score") or {})}
    score_argv = _score_argv(score_opts)
    fp_score = fingerprint("score", cfg["model"], score_opts, fp_triage)

    def do_score() -> None:
        _cli(
            [
                "score",
                "--model",
                str(cfg["model"]),
                "--triaged",
                str(triaged),
                "--out",
                str(weighted),
                *score_argv,
            ]
        )

    if "triage" in stages:
        _stage("triage", run_dir / "triage", fp_triage, do_triage, status, force)
    if "score" in stages:
        _stage("score", run_dir / "score", fp_score, do_score, status, force)
    methods = list(cfg.get("methods") or ["trace"])
    train_opts = dict(cfg.get("train") or {})
    fp_train: dict[str, str] = {}
    for method in methods:
        out = run_dir / "train" / method
        fp_train[method] = fingerprint("train", cfg["model"], method, train_opts, fp_score)
        if "train" not in stages:
            continue
        result["train"][method] = str(out)
        if not force and _done(out, fp_train[method]):
            status[f"train/{method}"] = "skipped (unchanged)"
            continue
        # checkpoints of a crashed run are resumed only when they come from the same settings
        started = out / ".started.json"
        if out.exists() and (
            force or not started.exists() or read_json(started).get("fingerprint") != fp_train[method]
        ):
            shutil.rmtree(out)
        write_json_atomic(started, {"fingerprint": fp_train[method]})

        def do_train(method: str = method, out: Path = out) -> None:
            from trace_realign.update.trainer import train

            train(cfg["model"], weighted, _train_config(train_opts, method, out))

        _stage(f"train/{method}", out, fp_train[method], do_train, status, True)
    if "evaluate" in stages and cfg.get("evaluate"):
        _evaluate(cfg, run_dir, methods, fp_train, status, force, result)
    write_json_atomic(run_dir / "run.json", {k: v for k, v in result.items() if k != "run_dir"})
    return result


def _evaluate(
    cfg: dict[str, Any],
    run_dir: Path,
    methods: list[str],
    fp_train: dict[str, str],
    status: dict[str, str],
    force: bool,
    result: dict[str, Any],
) -> None:
    """Evaluate M_ref and every trained method with the evaluation engineer's `evaluate_model`."""
    try:
        from trace_realign.evaluate import evaluate_model
    except ImportError:
        status["evaluate"] = "not available in this version"
        return
    opts = dict(cfg["evaluate"])
    if "prompts" not in opts:
        raise InputError("missing", field="evaluate.prompts")
    include_ref = opts.pop("reference", True)
    # e.g. triage with a noisy or cheap judge, evaluate with the clean one
    judge = opts.pop("judge", cfg["judge"])
    extra = {k: v for k, v in opts.items() if k not in ("prompts", "generation")}
    if "generation" in opts:  # a YAML block of decoding settings
        from trace_realign.evaluate.generate import GenerationSettings

        extra["settings"] = GenerationSettings(**opts["generation"])
    models = {"m_ref": cfg["model"]} if include_ref else {}
    models.update({m: str(run_dir / "train" / m) for m in methods})
    for name, model in models.items():
        out = run_dir / "eval" / name
        # a trained model is identified by its training fingerprint, not by its folder's file times
        fp = fingerprint("evaluate", name, fp_train.get(name) or model, opts, cfg["policy"], judge)

        def work(name: str = name, model: str = model, out: Path = out) -> None:
            evaluate_model(model, opts["prompts"], cfg["policy"], judge, out, name=name, **extra)

        _stage(f"eval/{name}", out, fp, work, status, force)
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


def run(args: argparse.Namespace) -> int:
    result = run_pipeline(args.config, force=args.force, stages=tuple(args.stages))
    for stage, what in result["status"].items():
        print(f"{stage}: {what}", file=sys.stderr)
    print(f"run directory: {result['run_dir']}", file=sys.stderr)
    return 0
