"""Build a judge from a short spec string or a YAML block.

Strings:

    openai:MODEL                 OpenAI (or $OPENAI_BASE_URL when set)
    openai:MODEL@URL             any OpenAI-compatible server, e.g. openai:qwen2.5@http://127.0.0.1:8000/v1
    hf:PATH                      local Hugging Face causal LM (folder or Hub id)
    rules:FILE                   policy as code (YAML, see rules.py)
    labels:COL_CHOSEN,COL_REJECTED   verdicts from the data's columns; labels:pku for PKU-SafeRLHF
    noisy:RATE:SPEC              SPEC with RATE of its verdicts flipped (seed 0)

Blocks: `{kind: openai, model: ..., base_url: ..., api_key_env: ..., concurrency: 16, ...}`,
`{kind: noisy, rate: 0.1, seed: 3, judge: <spec or block>}`, ... or `{spec: "openai:MODEL", <options>}`.
Options a judge does not use (`concurrency` for a rule judge) are ignored only when they are
generic (`concurrency`); any other unknown option is an error naming it.
"""

from __future__ import annotations

import re
from typing import Any

from trace_realign.errors import InputError
from trace_realign.judges.base import Judge
from trace_realign.judges.hf import HFJudge
from trace_realign.judges.labels import LabelJudge
from trace_realign.judges.noisy import NoisyJudge
from trace_realign.judges.openai import OpenAIJudge, default_base_url
from trace_realign.judges.rules import RuleJudge

GENERIC = {"concurrency"}  # accepted by every kind, used by those that can
OPTIONS: dict[str, dict[str, type]] = {
    "openai": {
        "model": str,
        "base_url": str,
        "api_key_env": str,
        "concurrency": int,
        "timeout": float,
        "max_attempts": int,
        "max_tokens": int,
        "down_after": int,
    },
    "hf": {
        "path": str,
        "batch_size": int,
        "min_margin": float,
        "max_length": int,
        "dtype": str,
        "device": str,
    },
    "rules": {"file": str},
    "labels": {"columns": str, "chosen": str, "rejected": str},
    "noisy": {"rate": float, "seed": int, "judge": object},
}
# What may stand before a file or folder in a spec: noise wrappers, then a rule judge's file, a local
# model's folder, a corrections file (`file:PATH`, triage.corrections) or the evaluation-only typed
# judge's cues (`typed:PATH`, evaluate/typed_judge.py).
PATH_PREFIX = re.compile(r"(?:noisy:[0-9.eE+-]+:)*(?:rules:|hf:|file:|typed:)?")


def split_path_spec(spec: str) -> tuple[str, str]:
    """`"noisy:0.1:rules:x.yaml"` -> `("noisy:0.1:rules:", "x.yaml")`; a spec naming no path -> `(prefix, rest)`
    all the same (`"openai:m"` -> `("", "openai:m")`): callers check whether the rest is a file."""
    prefix = PATH_PREFIX.match(spec).group(0)
    return prefix, spec[len(prefix) :]


SPEC_HELP = (
    "openai:MODEL[@URL], hf:PATH, rules:FILE, labels:COL_CHOSEN,COL_REJECTED (or labels:pku), noisy:RATE:SPEC"
)


def make_judge(spec: str | dict[str, Any]) -> Judge:
    """A judge from `spec` (see the module doc); a bad spec is an `InputError` naming the field."""
    if isinstance(spec, str):
        kind, fields = parse_spec(spec)
        return _build(kind, fields)
    if not isinstance(spec, dict):
        raise InputError(f"a judge is a spec string or a mapping, got {type(spec).__name__}", field="judge")
    opts = dict(spec)
    if "spec" in opts:
        s = opts.pop("spec")
        if not isinstance(s, str):
            raise InputError("expected a spec string", field="judge.spec")
        kind, fields = parse_spec(s)
        if kind == "noisy":  # options other than the noise's own go to the judge it wraps
            own = {k: opts.pop(k) for k in ("rate", "seed") if k in opts}
            fields = {**fields, **own, "judge": {"spec": fields["judge"], **opts}}
            return _build(kind, fields)
        return _build(kind, {**fields, **opts})
    kind = opts.pop("kind", None)
    if kind is None:
        raise InputError(f"a judge block needs `kind` ({', '.join(OPTIONS)}) or `spec`", field="judge.kind")
    return _build(str(kind), opts)


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """`"openai:m@http://h/v1"` -> `("openai", {"model": "m", "base_url": "http://h/v1"})`, etc."""
    kind, sep, arg = spec.strip().partition(":")
    if not sep or not arg or kind not in OPTIONS:
        raise InputError(f"bad judge spec {spec!r}: expected {SPEC_HELP}", field="judge")
    if kind == "openai":
        model, at, url = arg.rpartition("@")
        if at and url.startswith(("http://", "https://")):
            return kind, {"model": model, "base_url": url}
        return kind, {"model": arg}
    if kind == "hf":
        return kind, {"path": arg}
    if kind == "rules":
        return kind, {"file": arg}
    if kind == "labels":
        return kind, {"columns": arg}
    rate, sep, inner = arg.partition(":")
    if not sep or not inner:
        raise InputError(f"bad judge spec {spec!r}: expected noisy:RATE:SPEC", field="judge")
    return kind, {"rate": rate, "judge": inner}


def typed_options(allowed: dict[str, type], opts: dict[str, Any], where: str) -> dict[str, Any]:
    """`opts` checked against `allowed` names and cast to their types; errors name `where.option`."""
    out = {}
    for k, v in opts.items():
        if k not in allowed:
            if k in GENERIC:
                continue
            raise InputError(f"unknown option (expected {', '.join(sorted(allowed))})", field=f"{where}.{k}")
        t = allowed[k]
        if t is object or v is None:
            out[k] = v
            continue
        try:
            if t is int and (isinstance(v, bool) or float(v) != int(float(v))):
                raise ValueError
            out[k] = t(float(v)) if t is int else t(v)
        except (TypeError, ValueError):
            raise InputError(f"expected {t.__name__}, got {v!r}", field=f"{where}.{k}") from None
    return out


def _build(kind: str, opts: dict[str, Any]) -> Judge:
    if kind not in OPTIONS:
        raise InputError(f"unknown judge kind {kind!r}: expected {', '.join(OPTIONS)}", field="judge.kind")
    if kind == "noisy":  # `concurrency` and the like belong to the judge that does the work
        inner = opts.get("judge")
        generic = {k: opts.pop(k) for k in GENERIC if k in opts}
        if generic and isinstance(inner, str):
            opts["judge"] = {"spec": inner, **generic}
        elif generic and isinstance(inner, dict):
            opts["judge"] = {**inner, **generic}
    o = typed_options(OPTIONS[kind], opts, "judge")
    if kind == "openai":
        if not o.get("model"):
            raise InputError("an openai judge needs a model", field="judge.model")
        return OpenAIJudge(o.pop("model"), o.pop("base_url", None) or default_base_url(), **o)
    if kind == "hf":
        if not o.get("path"):
            raise InputError("an hf judge needs a model path or Hub id", field="judge.path")
        return HFJudge(o.pop("path"), **o)
    if kind == "rules":
        if not o.get("file"):
            raise InputError("a rules judge needs a file", field="judge.file")
        return RuleJudge.from_file(o["file"])
    if kind == "labels":
        if "columns" in o:
            return LabelJudge.from_spec(o["columns"])
        return LabelJudge(o.get("chosen", ""), o.get("rejected", ""))

    if o.get("rate") is None or o.get("judge") is None:
        raise InputError("a noisy judge needs a rate and a judge to wrap", field="judge.rate")
    return NoisyJudge(make_judge(o["judge"]), o["rate"], o.get("seed") or 0)
