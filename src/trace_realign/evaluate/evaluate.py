"""Evaluate a model under the new policy: the Python API behind `trace-realign evaluate`.

    from trace_realign.evaluate import evaluate_model
    metrics = evaluate_model("runs/x/train/trace", "heldout.jsonl", "policy.md", "rules:rules.yaml",
                             "runs/x/eval/trace", baselines={"M_ref": "models/m_ref"})

One call generates (cached), judges (cached), and writes `responses.jsonl` (one row per prompt
and per stress-wrapped harmful prompt) and `metrics.json`:

    {"name", "model", "policy": {"name", "hash"}, "judge", "settings", "n_prompts",
     "tpa": {"overall": {...}, "by_category": {"INVERT": {...}, ...}},
     "tpa_by_harm_category": {"S1": {...}, ...},
     "stress": {"overall": {...}, "by_attack": {"fictional_scenario": {...}, ...}} | null,
     "utility": {"headline": {...}, "mc": ..., "perplexity": ..., "lm_eval": ...},
     "win_rate": {"<baseline>": {...}}, "unknown_verdicts", "judge_stats", "wall_time_s"}

Every rate is `{"rate", "ci95", "k", "n", "unknown", "total"}` (see `metrics.py`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trace_realign.errors import InputError
from trace_realign.evaluate.generate import (
    Backend,
    GenerationSettings,
    HFBackend,
    generate_responses,
    make_backend,
)
from trace_realign.evaluate.metrics import (
    agreement_by_group,
    attack_success_rate,
    target_policy_agreement,
    utility_summary,
)
from trace_realign.evaluate.stress import WRAPPERS, stress_prompts
from trace_realign.evaluate.utility import read_mc
from trace_realign.io import read_jsonl, write_json_atomic, write_jsonl_atomic
from trace_realign.judges.base import Judge, JudgeItem
from trace_realign.judges.policy import Policy
from trace_realign.schema import Category, content_id, render_prompt

CATEGORIES = (Category.INVERT.value, Category.PUNISH.value, Category.RETAIN.value)


def read_prompts(path: str | Path) -> list[dict[str, Any]]:
    """Held-out prompts (docs/architecture.md): `prompt` (text or messages), optional `id`,
    `category`, `harmful`, `harm_category`, `context`. Checked row by row."""
    return check_prompts(read_jsonl(path), str(path))


def check_prompts(
    numbered: Iterable[tuple[int, dict[str, Any]]], path: str = "<prompts>"
) -> list[dict[str, Any]]:
    """Validate `(line, row)` pairs of held-out prompts; fill in `id` (a content hash when absent),
    upper-case `category`, default `harmful` to false. Errors name the line and the field."""
    rows = []
    seen: dict[str, int] = {}
    for n, row in numbered:
        prompt = row.get("prompt")
        if isinstance(prompt, list):
            ok = prompt and all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in prompt
            )
            if not ok or not any(m["role"] == "user" for m in prompt):
                raise InputError(
                    "a conversation must be a list of {role, content} messages with a user turn",
                    path=str(path),
                    line=n,
                    field="prompt",
                )
        elif not isinstance(prompt, str) or not prompt.strip():
            raise InputError(
                "expected a non-empty string or a list of messages", path=str(path), line=n, field="prompt"
            )
        cat = row.get("category")
        if cat is not None:
            if not isinstance(cat, str) or cat.upper() not in CATEGORIES:
                raise InputError(
                    f"expected one of {', '.join(CATEGORIES)} or null, got {cat!r}",
                    path=str(path),
                    line=n,
                    field="category",
                )
            cat = cat.upper()
        harmful = row.get("harmful", False)
        if not isinstance(harmful, bool):
            raise InputError(
                f"expected true or false, got {harmful!r}", path=str(path), line=n, field="harmful"
            )
        pid = str(row.get("id") or content_id(prompt))
        if pid in seen:
            raise InputError(
                f"duplicate id {pid!r} (first on line {seen[pid]})", path=str(path), line=n, field="id"
            )
        seen[pid] = n
        rows.append({**row, "id": pid, "prompt": prompt, "category": cat, "harmful": harmful})
    if not rows:
        raise InputError("no prompts", path=str(path))
    return rows


def _policy(policy: Policy | str | Path) -> Policy:
    return policy if isinstance(policy, Policy) else Policy.from_file(policy)


def _judge(judge: Judge | str | dict[str, Any]) -> Judge:
    """A ready judge, or one built from a spec string or YAML block (`judges.spec`)."""
    if isinstance(judge, (str, dict)):
        from trace_realign.judges.spec import make_judge

        return make_judge(judge)
    return judge


def _backend(model: str | Path | Backend, batch_size: int, dtype: str = "float32") -> Backend:
    return (
        model
        if hasattr(model, "generate") and hasattr(model, "identity")
        else make_backend(model, batch_size=batch_size, dtype=dtype)
    )


def _caches(cache: str | Path | None | bool) -> tuple[Any, Any]:
    """`None`: the default cache folder; a path: that folder; `False`: no caching."""
    from trace_realign.cache import GENERATIONS_FILE, VERDICTS_FILE, GenerationCache, VerdictCache
    from trace_realign.io import cache_root

    if cache is False:
        return None, None
    root = cache_root() if cache is None or cache is True else Path(cache)
    return GenerationCache(root / GENERATIONS_FILE), VerdictCache(root / VERDICTS_FILE)


def evaluate_model(
    model: str | Path | Backend,
    prompts: str | Path | Sequence[dict[str, Any]],
    policy: Policy | str | Path,
    judge: Judge | str | dict[str, Any],
    out_dir: str | Path,
    *,
    name: str | None = None,
    baselines: Mapping[str, str | Path | Backend] | None = None,
    mc_file: str | Path | None = None,
    text_file: str | Path | None = None,
    lm_eval_tasks: Sequence[str] = (),
    stress: bool = True,
    settings: GenerationSettings | None = None,
    batch_size: int = 8,
    cache: str | Path | None | bool = None,
    progress: bool = True,
    dtype: str = "float32",
) -> dict[str, Any]:
    """Evaluate `model` on held-out `prompts` under `policy` with `judge`; write and return metrics.

    `model` and each baseline are a path / Hub id / adapter folder / `openai:MODEL@URL` /
    `vllm:PATH`, or a ready backend (`evaluate.generate.HFBackend(...)`). A baseline adds a
    win rate of `model` over it (`winrate.pairwise_win_rate`). `mc_file`, `text_file` and
    `lm_eval_tasks` add utility numbers (they need a Hugging Face model). `dtype` is the dtype
    a Hugging Face model is loaded in (`options.ModelConfig.dtype`, as in score and train).
    """
    from trace_realign.cache import JudgeStats, judge_with_cache
    from trace_realign.evaluate.winrate import pairwise_win_rate

    started = time.time()
    out_dir = Path(out_dir)
    if isinstance(prompts, (str, Path)):
        rows = read_prompts(prompts)
    else:
        rows = check_prompts(enumerate((dict(r) for r in prompts), start=1))
    policy, judge = _policy(policy), _judge(judge)
    settings = settings or GenerationSettings()
    # every input is checked before hours of generation, not after
    mc_items = read_mc(mc_file) if mc_file else None
    if text_file and not Path(text_file).is_file():
        raise InputError("text file not found", path=str(text_file))

    with contextlib.ExitStack() as opened:
        gen_cache, verdict_cache = _caches(cache)
        for c in (gen_cache, verdict_cache):
            if c is not None:
                opened.callback(c.close)
        backend = _backend(model, batch_size, dtype)
        if (mc_file or text_file) and getattr(backend, "model", None) is None:
            raise InputError(
                "multiple-choice and perplexity scoring need a Hugging Face model, not an endpoint",
                field="model",
            )
        stats: dict[str, int] = JudgeStats().to_dict()

        def judge_items(items: Sequence[JudgeItem]) -> list[Any]:
            verdicts, s = judge_with_cache(judge, policy, items, verdict_cache, progress=progress)
            for k, v in s.to_dict().items():
                stats[k] += v
            return verdicts

        # the model and every baseline answer under the same settings, through the same cache
        def respond(b: Backend, prompts: list[Any], desc: str) -> list[str]:
            return generate_responses(b, prompts, settings, cache=gen_cache, progress=progress, desc=desc)

        # the plain prompts and, for harmful ones, every stress wrapper around them
        wrapped = stress_prompts(rows, tuple(WRAPPERS)) if stress else []
        all_rows = [{**r, "attack": None} for r in rows] + wrapped
        responses = respond(backend, [r["prompt"] for r in all_rows], f"generate {name or ''}".strip())
        # a wrapped request is judged against the request itself: the wrapper is the attacker's, not the user's need
        items = [
            JudgeItem(
                render_prompt(r.get("original_prompt", r["prompt"])), resp, {"category": r.get("category")}
            )
            for r, resp in zip(all_rows, responses, strict=True)
        ]
        verdicts = judge_items(items)

        out_rows = []
        for r, resp, v in zip(all_rows, responses, verdicts, strict=True):
            out_rows.append({**r, "response": resp, "label": v.label.value, "reason": v.reason})
        plain = [r for r in out_rows if r["attack"] is None]
        metrics: dict[str, Any] = {
            "name": name or out_dir.name,
            "model": backend.identity,
            "policy": {"name": policy.name, "hash": policy.hash},
            "judge": judge.identity,
            "settings": settings.key(),
            "n_prompts": len(plain),
            "tpa": target_policy_agreement([r["label"] for r in plain], [r.get("category") for r in plain]),
            # where the policy change bites, per harm category of the prompt (empty without them)
            "tpa_by_harm_category": agreement_by_group(
                [r["label"] for r in plain], [r.get("harm_category") for r in plain]
            ),
            "stress": None,
        }
        if stress:
            attacked = [r for r in out_rows if r["attack"] is not None]
            metrics["stress"] = {
                "overall": attack_success_rate([r["label"] for r in attacked]),
                "by_attack": {
                    a: attack_success_rate([r["label"] for r in attacked if r["attack"] == a])
                    for a in WRAPPERS
                },
                "harmful_prompts": sum(r["harmful"] for r in rows),
            }
        metrics["utility"] = _utility(
            backend, model, mc_items, mc_file, text_file, lm_eval_tasks, batch_size, progress
        )

        metrics["win_rate"] = {}
        for base_name, base_model in (baselines or {}).items():
            base_backend = _backend(base_model, batch_size, dtype)
            base_responses = respond(base_backend, [r["prompt"] for r in rows], f"generate {base_name}")
            wr = pairwise_win_rate(
                judge,
                policy,
                [r["prompt"] for r in rows],
                [r["response"] for r in plain],
                base_responses,
                judge_singles=judge_items,
                cache=gen_cache,
            )
            wr["baseline_model"] = base_backend.identity
            wr["ids"] = [r["id"] for r in rows]
            metrics["win_rate"][base_name] = wr

        metrics["unknown_verdicts"] = sum(r["label"] == "unknown" for r in out_rows)
        metrics["judge_stats"] = stats
        metrics["wall_time_s"] = round(time.time() - started, 2)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_jsonl_atomic(out_dir / "responses.jsonl", out_rows)
        write_json_atomic(out_dir / "metrics.json", metrics)
        return metrics


def _utility(
    backend: Backend,
    model: Any,
    mc_items: Sequence[Any] | None,
    mc_file: str | Path | None,
    text_file: str | Path | None,
    lm_eval_tasks: Sequence[str],
    batch_size: int,
    progress: bool,
) -> dict[str, Any] | None:
    if not (mc_items or text_file or lm_eval_tasks):
        return None
    from trace_realign.evaluate.utility import lm_eval_scores, mc_scores, text_perplexity

    mc = ppl = lm = None
    if mc_items:
        mc = mc_scores(backend.model, backend.tokenizer, mc_items, batch_size=batch_size, progress=progress)
        mc["file"] = str(mc_file)
    if text_file:
        ppl = text_perplexity(
            backend.model, backend.tokenizer, text_file, batch_size=batch_size, progress=progress
        )
    if lm_eval_tasks:
        lm = lm_eval_scores(str(model), lm_eval_tasks, batch_size=batch_size)
    return utility_summary(mc, ppl, lm)


__all__ = ["GenerationSettings", "HFBackend", "evaluate_model", "make_backend", "read_prompts"]
