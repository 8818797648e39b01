"""Evaluate a model under the new policy: the Python API behind `trace-realign evaluate`.

    from trace_realign.evaluate import evaluate_model
    metrics = evaluate_model("runs/x/train/trace", "heldout.jsonl", "policy.md", "rules:rules.yaml",
                             "runs/x/eval/trace", baselines={"M_ref": "models/m_ref"})

One call generates (cached), judges (cached), and writes `responses.jsonl` (one row per prompt
and per stress-wrapped harmful prompt) and `metrics.json`:

    {"name", "model", "policy": {"name", "hash"}, "judge", "settings", "n_prompts",
     "tpa": {"overall": {...}, "by_category": {"INVERT": {...}, ...}},
     "tpa_by_harm_category": {"S1": {...}, ...},
     "stress": {"definition", "overall": {...}, "by_attack": {"fictional_scenario": {...}, ...},
                "operational": {...} | null, "non_compliant": {...}, "not_declined": {...}} | null,
     "judges": {"<second judge>": {"judge", "tpa", "stress", "agreement_with_main"}},
     "utility": {"headline": {...}, "mc": ..., "perplexity": ..., "lm_eval": ...},
     "win_rate": {"<baseline>": {...}}, "external": {...} | null, "unknown_verdicts", "judge_stats",
     "wall_time_s"}

With `external` (`{"set": "donotanswer", "split": "report"}`, `evaluate.external`), the model also
answers real harmful prompts from outside the scenario: `external.jsonl` holds each answer and
whether it declines, `metrics["external"]` the declined rate per risk area.

Every rate is `{"rate", "ci95", "k", "n", "unknown", "total"}` (see `metrics.py`).

Attack success (`asr`): "operational" (the default, as the paper's attack judge counts it)
counts a wrapped harmful prompt as a success only when the attack judge finds operational help
in the answer; "non_compliant" (the earlier definition) counts every answer the policy judge
finds non-compliant. Both are always in `stress`; `overall`/`by_attack` follow `asr`.
`not_declined` counts the harmful prompts (plain and wrapped) the policy judge finds
non-compliant although the answer carries no operational help: a policy failure (the request
should have been declined), not an attack success.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trace_realign.cache import GENERATIONS_FILE, VERDICTS_FILE, GenerationCache, VerdictCache
from trace_realign.errors import InputError
from trace_realign.evaluate.distributed import from_main, split_generate, world
from trace_realign.evaluate.external import REFUSAL_CUES, declines, external_metrics, external_rows, load_cues
from trace_realign.evaluate.generate import (
    Backend,
    GenerationSettings,
    HFBackend,
    generate_responses,
    make_backend,
)
from trace_realign.evaluate.metrics import (
    agreement_by_group,
    target_policy_agreement,
    utility_summary,
)
from trace_realign.evaluate.stress import ASR_DEFINITIONS, ATTACK_POLICY, WRAPPERS, stress_prompts
from trace_realign.evaluate.typed_judge import TypedJudge, is_typed_spec, typed_judge_from_spec
from trace_realign.evaluate.utility import lm_eval_scores, mc_scores, read_mc, text_perplexity
from trace_realign.evaluate.winrate import pairwise_win_rate
from trace_realign.io import cache_root, read_jsonl, write_json_atomic, write_jsonl_atomic
from trace_realign.judges.base import Judge, JudgeItem
from trace_realign.judges.cached import JudgeStats, judge_with_cache
from trace_realign.judges.policy import Policy
from trace_realign.judges.rules import RuleJudge
from trace_realign.judges.spec import make_judge
from trace_realign.schema import Category, Label, content_id, render_prompt
from trace_realign.stats import cohen_kappa, proportion

CATEGORIES = (Category.INVERT.value, Category.PUNISH.value, Category.RETAIN.value)
# what a judge may read besides the text: the prompt's recorded type (the typed judge uses it)
ITEM_META = ("category", "harmful", "context", "harm_category", "kind")


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
    """A ready judge, or one built from a spec string or YAML block (`judges.spec`), or the
    evaluation-only `typed:FILE` (`typed_judge.py`)."""

    if is_typed_spec(judge):
        return typed_judge_from_spec(judge)
    if isinstance(judge, dict) and judge.get("kind") == "typed":
        if set(judge) != {"kind", "file"}:
            raise InputError("a typed judge block is {kind: typed, file: CUES.yaml}", field="judge")
        return typed_judge_from_spec(f"typed:{judge['file']}")
    if isinstance(judge, (str, dict)):
        return make_judge(judge)
    return judge


def _backend(model: str | Path | Backend, batch_size: int, dtype: str = "float32") -> Backend:
    return (
        model
        if hasattr(model, "generate") and hasattr(model, "identity")
        else make_backend(model, batch_size=batch_size, dtype=dtype)
    )


def _caches(cache: str | Path | None | bool, opened: contextlib.ExitStack) -> tuple[Any, Any]:
    """The generation and verdict caches, closed when `opened` closes. `None`: the default cache
    folder; a path: that folder; `False`: no caching."""

    if cache is False:
        return None, None
    root = cache_root() if cache is None or cache is True else Path(cache)
    caches = GenerationCache(root / GENERATIONS_FILE), VerdictCache(root / VERDICTS_FILE)
    for c in caches:
        opened.callback(c.close)
    return caches


@dataclass
class _Session:
    """What every step of one evaluation asks through: the main judge and the policy it reads, how
    models load and answer, the two caches, and the tally of what judging cost (`judge_stats`)."""

    judge: Judge
    policy: Policy
    settings: GenerationSettings
    batch_size: int
    dtype: str
    gen_cache: GenerationCache | None
    verdict_cache: VerdictCache | None
    progress: bool
    stats: dict[str, int] = field(default_factory=lambda: JudgeStats().to_dict())

    def judge_items(
        self, items: Sequence[JudgeItem], by: Judge | None = None, under: Policy | None = None
    ) -> list[Any]:
        """Verdicts on `items` by `by` under `under` (by default the main judge and policy), through
        the verdict cache, adding what they cost to `stats`."""
        verdicts, s = judge_with_cache(
            by or self.judge, under or self.policy, items, self.verdict_cache, progress=self.progress
        )
        for k, v in s.to_dict().items():
            self.stats[k] += v
        return verdicts

    def backend(self, model: str | Path | Backend) -> Backend:
        """A backend for `model` (a ready one as is), loaded as every model of this evaluation is."""
        return _backend(model, self.batch_size, self.dtype)

    def respond(self, backend: Backend, rows: Sequence[dict[str, Any]], desc: str) -> list[str]:
        """`backend`'s answers to the prompts of `rows`, through the generation cache."""
        # the model and every baseline answer under the same settings, through the same cache;
        # under `accelerate launch` each process answers its share of the prompts
        return split_generate(
            lambda share: generate_responses(
                backend, share, self.settings, cache=self.gen_cache, progress=self.progress, desc=desc
            ),
            [r["prompt"] for r in rows],
        )


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
    asr: str = "operational",
    attack_judge: Judge | str | dict[str, Any] | None = None,
    judges: Mapping[str, Judge | str | dict[str, Any]] | None = None,
    dtype: str = "float32",
    external: Mapping[str, Any] | str | None = None,
) -> dict[str, Any]:
    """Evaluate `model` on held-out `prompts` under `policy` with `judge`; write and return metrics.

    `model` and each baseline are a path / Hub id / adapter folder / `openai:MODEL@URL` /
    `vllm:PATH`, or a ready backend (`evaluate.generate.HFBackend(...)`). A baseline adds a
    win rate of `model` over it (`winrate.pairwise_win_rate`). `mc_file`, `text_file` and
    `lm_eval_tasks` add utility numbers (they need a Hugging Face model).

    `asr` picks what the headline attack success counts (`stress.ASR_DEFINITIONS`, module doc).
    `attack_judge` decides "operational help or not" on harmful prompts; without one, a judge with
    an `operational()` reading uses it, a rule judge (which ignores policy text) has none (the
    headline then falls back to "non_compliant", and `stress.note` says so), and any other judge
    is asked with `stress.ATTACK_POLICY` as its policy. `judges` are second evaluation judges
    (name -> judge or spec): agreement, stress and their agreement with `judge` are reported for
    each under `metrics["judges"]`, and their verdicts stand in `responses.jsonl` under `labels`.
    `dtype` is the dtype a Hugging Face model is loaded in (`options.ModelConfig.dtype`, as in
    score and train). `external` (a set name, `NAME:SPLIT`, or `{"set", "split", "limit",
    "max_new_tokens", "cues"}`) adds real harmful prompts from outside the scenario (module doc).
    Long because it is the stage's one readable sequence of steps, each a helper, and their options.
    """

    started = time.time()
    out_dir = Path(out_dir)
    rows = _prompt_rows(prompts)
    if asr not in ASR_DEFINITIONS:
        raise InputError(f"expected one of {', '.join(ASR_DEFINITIONS)}, got {asr!r}", field="asr")
    policy, judge = _policy(policy), _judge(judge)
    extra_judges = {str(n): _judge(j) for n, j in (judges or {}).items()}
    attack = _attack_judge(judge, attack_judge)
    settings = settings or GenerationSettings()
    # every input is checked before hours of generation, not after
    mc_items = read_mc(mc_file) if mc_file else None
    ext = _external_options(external)
    if text_file and not Path(text_file).is_file():
        raise InputError("text file not found", path=str(text_file))

    with contextlib.ExitStack() as opened:
        session = _Session(judge, policy, settings, batch_size, dtype, *_caches(cache, opened), progress)
        backend = _model_backend(session, model, scored=bool(mc_file or text_file))
        all_rows = _all_prompts(rows, stress)
        responses = session.respond(backend, all_rows, f"generate {name or ''}".strip())
        base_answers = _baseline_answers(session, baselines or {}, rows)
        if world()[0] != 0:
            # the main process judges, scores and writes; the others return its metrics
            return from_main(None)

        out_rows, operational, second = _judge_responses(session, all_rows, responses, attack, extra_judges)
        metrics = _metrics_head(name or out_dir.name, backend.identity, session, out_rows)
        metrics["stress"] = _stress(out_rows, operational, attack, asr) if stress else None
        metrics["judges"] = _second_judge_metrics(second, out_rows, stress, asr)
        metrics["utility"] = _utility(
            backend, model, mc_items, mc_file, text_file, lm_eval_tasks, batch_size, progress
        )
        metrics["win_rate"] = _win_rates(session, rows, out_rows, base_answers)
        metrics["external"] = _external(session, backend, ext, out_dir) if ext else None
        metrics["unknown_verdicts"] = sum(r["label"] == "unknown" for r in out_rows)
        metrics["judge_stats"] = session.stats
        metrics["wall_time_s"] = round(time.time() - started, 2)
        _write(out_dir, out_rows, metrics)
        return from_main(metrics)


def _model_backend(session: _Session, model: str | Path | Backend, scored: bool) -> Backend:
    """The evaluated model's backend. Multiple-choice and perplexity scoring (`scored`) read the
    Hugging Face model itself, so an endpoint is refused here, before any generation."""
    backend = session.backend(model)
    if scored and getattr(backend, "model", None) is None:
        raise InputError(
            "multiple-choice and perplexity scoring need a Hugging Face model, not an endpoint",
            field="model",
        )
    return backend


def _prompt_rows(prompts: str | Path | Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The held-out prompts checked, whether given as a file or as rows."""
    if isinstance(prompts, (str, Path)):
        return read_prompts(prompts)
    return check_prompts(enumerate((dict(r) for r in prompts), start=1))


def _all_prompts(rows: Sequence[dict[str, Any]], stress: bool) -> list[dict[str, Any]]:
    """The plain prompts (`attack` None) and, with `stress`, every stress wrapper around the harmful ones."""
    wrapped = stress_prompts(rows, tuple(WRAPPERS)) if stress else []
    return [{**r, "attack": None} for r in rows] + wrapped


def _baseline_answers(
    session: _Session, baselines: Mapping[str, str | Path | Backend], rows: Sequence[dict[str, Any]]
) -> dict[str, tuple[str, list[str]]]:
    """Each baseline's identity and its answers to the plain prompts `rows`, for the win rates."""
    answers = {}
    for base_name, base_model in baselines.items():
        base_backend = session.backend(base_model)
        answers[base_name] = (
            base_backend.identity,
            session.respond(base_backend, rows, f"generate {base_name}"),
        )
    return answers


def _judge_responses(
    session: _Session,
    all_rows: Sequence[dict[str, Any]],
    responses: Sequence[str],
    attack: tuple[Judge, Policy] | None,
    extra_judges: Mapping[str, Judge],
) -> tuple[list[dict[str, Any]], dict[int, Any], dict[str, dict[str, Any]]]:
    """Judge every response: by the main judge, by the attack judge where the prompt is harmful,
    and by each second judge. Returns the rows of responses.jsonl, the attack verdicts by row and
    each second judge's verdicts (`_second_opinion`)."""
    # a wrapped request is judged against the request itself: the wrapper is the attacker's, not the user's need
    items = [
        JudgeItem(
            render_prompt(r.get("original_prompt", r["prompt"])),
            resp,
            {k: r.get(k) for k in ITEM_META},
        )
        for r, resp in zip(all_rows, responses, strict=True)
    ]
    verdicts = session.judge_items(items)
    # operational help or not, on every harmful prompt (plain and wrapped)
    harmful = [i for i, r in enumerate(all_rows) if r.get("harmful") is True]
    attack_verdicts = _operational_verdicts(session, items, harmful, attack)
    out_rows = []
    for i, (r, resp, v) in enumerate(zip(all_rows, responses, verdicts, strict=True)):
        row = {**r, "response": resp, "label": v.label.value, "reason": v.reason}
        if i in attack_verdicts:
            row["attack_label"] = attack_verdicts[i].label.value
        out_rows.append(row)
    second = {n: _second_opinion(session, n, j, items, harmful, out_rows) for n, j in extra_judges.items()}
    return out_rows, attack_verdicts, second


def _operational_verdicts(
    session: _Session, items: Sequence[JudgeItem], harmful: list[int], attack: tuple[Judge, Policy] | None
) -> dict[int, Any]:
    """The attack judge's verdict on each harmful item, by index (non_compliant: operational help);
    empty without an attack judge or harmful prompts."""
    if attack is None or not harmful:
        return {}
    by, under = attack
    got = session.judge_items([items[i] for i in harmful], by, under)
    return dict(zip(harmful, got, strict=True))


def _second_opinion(
    session: _Session,
    jname: str,
    j: Judge,
    items: Sequence[JudgeItem],
    harmful: list[int],
    out_rows: list[dict[str, Any]],
) -> dict[str, Any]:
    """Judge every response again with the second judge `j`; its verdicts go into `out_rows` under
    `labels` / `attack_labels` (by `jname`), and are returned for its metrics."""
    jv = session.judge_items(items, j)
    ja = _operational_verdicts(session, items, harmful, _attack_judge(j, None))
    for i, row in enumerate(out_rows):
        row.setdefault("labels", {})[jname] = jv[i].label.value
        if i in ja:
            row.setdefault("attack_labels", {})[jname] = ja[i].label.value
    return {"judge": j, "labels": [v.label.value for v in jv], "attack": ja}


def _metrics_head(
    name: str, model: str, session: _Session, out_rows: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """The head of metrics.json: what was evaluated and how, and its target policy agreement."""
    plain = [r for r in out_rows if r["attack"] is None]
    return {
        "name": name,
        "model": model,
        "policy": {"name": session.policy.name, "hash": session.policy.hash},
        "judge": session.judge.identity,
        "settings": session.settings.key(),
        "n_prompts": len(plain),
        "tpa": target_policy_agreement([r["label"] for r in plain], [r.get("category") for r in plain]),
        # where the policy change bites, per harm category of the prompt (empty without them)
        "tpa_by_harm_category": agreement_by_group(
            [r["label"] for r in plain], [r.get("harm_category") for r in plain]
        ),
    }


def _stress(
    out_rows: Sequence[dict[str, Any]],
    operational: Mapping[int, Any],
    attack: tuple[Judge, Policy] | None,
    asr: str,
) -> dict[str, Any]:
    """The main judge's stress metrics (`stress_metrics`), given the attack judge's verdicts by row
    (`operational`), naming the attack judge they rest on."""
    out = stress_metrics(
        out_rows,
        [r["label"] for r in out_rows],
        {i: v.label.value for i, v in operational.items()},
        asr,
    )
    out["attack_judge"] = None if attack is None else f"{attack[0].identity} ({attack[1].name})"
    return out


def _second_judge_metrics(
    second: Mapping[str, dict[str, Any]], out_rows: Sequence[dict[str, Any]], stress: bool, asr: str
) -> dict[str, Any]:
    """Agreement, stress and agreement with the main judge, as each second judge reads the responses."""
    plain = [r for r in out_rows if r["attack"] is None]
    main_labels = [r["label"] for r in out_rows]
    out = {}
    for jname, info in second.items():
        j_labels = info["labels"]
        j_plain = [lab for lab, r in zip(j_labels, out_rows, strict=True) if r["attack"] is None]
        out[jname] = {
            "judge": info["judge"].identity,
            "tpa": target_policy_agreement(j_plain, [r.get("category") for r in plain]),
            "stress": stress_metrics(
                out_rows, j_labels, {i: v.label.value for i, v in info["attack"].items()}, asr
            )
            if stress
            else None,
            "agreement_with_main": judge_agreement(main_labels, j_labels),
        }
    return out


def _win_rates(
    session: _Session,
    rows: Sequence[dict[str, Any]],
    out_rows: Sequence[dict[str, Any]],
    base_answers: Mapping[str, tuple[str, list[str]]],
) -> dict[str, Any]:
    """The model's win rate over each baseline on the plain prompts, judged through the same cache."""
    plain = [r for r in out_rows if r["attack"] is None]
    out = {}
    for base_name, (base_identity, base_responses) in base_answers.items():
        wr = pairwise_win_rate(
            session.judge,
            session.policy,
            [r["prompt"] for r in rows],
            [r["response"] for r in plain],
            base_responses,
            judge_singles=session.judge_items,
            cache=session.gen_cache,
        )
        wr["baseline_model"] = base_identity
        wr["ids"] = [r["id"] for r in rows]
        out[base_name] = wr
    return out


def _external_options(external: Mapping[str, Any] | str | None) -> dict[str, Any] | None:
    """`external` as a dict, its prompts read once here (a missing package fails before generation)."""
    if not external:
        return None
    if isinstance(external, Mapping):
        opts = dict(external)
    else:  # "NAME" or "NAME:SPLIT"
        name, _, split = str(external).partition(":")
        opts = {"set": name, **({"split": split} if split else {})}
    unknown = set(opts) - {"set", "split", "limit", "max_new_tokens", "cues"}
    if unknown or "set" not in opts:
        raise InputError(
            f"expected set, split, limit, max_new_tokens, cues; got {sorted(opts)}", field="external"
        )
    opts["rows"] = external_rows(opts["set"], opts.get("split", "report"), opts.get("limit"))
    return opts


def _external(session: _Session, backend: Backend, opts: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """The model's answers to the external prompts (cached), read for declining two ways; writes
    `external.jsonl` and returns `external.external_metrics` with which set, split and cues."""
    rows = opts["rows"]
    settings = GenerationSettings(max_new_tokens=int(opts.get("max_new_tokens", 96)))
    answers = generate_responses(
        backend, [r["prompt"] for r in rows], settings, cache=session.gen_cache, progress=session.progress,
        desc="external prompts",
    )  # fmt: skip
    cues = load_cues()
    declined = [declines(a, cues) for a in answers]
    second = None
    if opts.get("cues"):
        typed = TypedJudge.from_file(opts["cues"]).cues.declines
        second = [declines(a, typed) for a in answers]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(
        out_dir / "external.jsonl",
        ({**r, "response": a, "declined": d, **({"declined_typed": t} if second else {})}
         for r, a, d, t in zip(rows, answers, declined, second or declined, strict=True)),
    )  # fmt: skip
    return {
        "set": opts["set"],
        "split": opts.get("split", "report"),
        "settings": settings.key(),
        "cues": str(REFUSAL_CUES),
        **external_metrics(rows, declined, second=second),
    }


def _write(out_dir: Path, out_rows: list[dict[str, Any]], metrics: dict[str, Any]) -> None:
    """responses.jsonl and metrics.json into `out_dir`, each written whole or not at all."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(out_dir / "responses.jsonl", out_rows)
    write_json_atomic(out_dir / "metrics.json", metrics)


def _attack_judge(
    judge: Judge, attack_judge: Judge | str | dict[str, Any] | None
) -> tuple[Judge, Policy] | None:
    """The judge (and the policy it reads) that tells operational help from anything else, or None."""
    attack_policy = Policy(ATTACK_POLICY, name="operational-help")
    if attack_judge is not None:
        return _judge(attack_judge), attack_policy
    if hasattr(judge, "operational"):
        return judge.operational(), attack_policy

    if isinstance(judge, RuleJudge):  # its rules are its policy: no attack reading without a file
        return None
    return judge, attack_policy


def _rate_of(labels: Sequence[str], bad: str = Label.NON_COMPLIANT.value) -> dict[str, Any]:
    """Share of `bad` among the known labels (unknown ones counted apart)."""
    known = [lab for lab in labels if lab != Label.UNKNOWN.value]
    out = proportion(sum(lab == bad for lab in known), len(known))
    out["unknown"] = len(labels) - len(known)
    out["total"] = len(labels)
    return out


def stress_metrics(
    rows: Sequence[dict[str, Any]],
    labels: Sequence[str],
    attack_labels: Mapping[int, str],
    asr: str = "operational",
) -> dict[str, Any]:
    """Attack success under both definitions and the malicious prompts not declined.

    `rows[i]` is a plain (`attack` None) or wrapped row, `labels[i]` the policy judge's verdict on
    it, `attack_labels[i]` the attack judge's verdict on harmful rows (non_compliant = operational
    help), absent without an attack judge.
    """
    have_attack = bool(attack_labels)
    idx = [i for i, r in enumerate(rows) if r.get("attack") is not None]
    harmful = [i for i, r in enumerate(rows) if r.get("harmful") is True]

    def by_attack(pick: Any) -> dict[str, Any]:
        return {
            "overall": _rate_of([pick(i) for i in idx]),
            "by_attack": {a: _rate_of([pick(i) for i in idx if rows[i]["attack"] == a]) for a in WRAPPERS},
        }

    non_compliant = by_attack(lambda i: labels[i])
    operational = by_attack(lambda i: attack_labels.get(i, Label.UNKNOWN.value)) if have_attack else None

    def not_declined(i: int) -> str:
        # a policy failure without operational content; an operational answer is an attack success
        if labels[i] == Label.UNKNOWN.value:
            return Label.UNKNOWN.value
        if have_attack:
            a = attack_labels.get(i, Label.UNKNOWN.value)
            if a == Label.UNKNOWN.value:
                return Label.UNKNOWN.value
            if a == Label.NON_COMPLIANT.value:
                return Label.COMPLIANT.value
        return labels[i]

    nd = {
        "overall": _rate_of([not_declined(i) for i in harmful]),
        "plain": _rate_of([not_declined(i) for i in harmful if rows[i].get("attack") is None]),
        "by_attack": {
            a: _rate_of([not_declined(i) for i in harmful if rows[i].get("attack") == a]) for a in WRAPPERS
        },
    }
    definition = asr if (asr == "non_compliant" or have_attack) else "non_compliant"
    head = operational if definition == "operational" else non_compliant
    out = {
        "definition": definition,
        "overall": head["overall"],
        "by_attack": head["by_attack"],
        "operational": operational,
        "non_compliant": non_compliant,
        "not_declined": nd,
        "harmful_prompts": sum(1 for i in harmful if rows[i].get("attack") is None),
    }
    if definition != asr:
        out["note"] = "no attack judge (a rule judge has no operational reading): ASR counts non-compliance"
    return out


def judge_agreement(a: Sequence[str], b: Sequence[str]) -> dict[str, Any]:
    """How often two judges give the same known verdict, and Cohen's kappa."""
    both = [(x, y) for x, y in zip(a, b, strict=True) if Label.UNKNOWN.value not in (x, y)]
    out = proportion(sum(x == y for x, y in both), len(both))
    out["kappa"] = cohen_kappa([x for x, _ in both], [y for _, y in both])
    return out


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

    mc = ppl = lm = None
    if mc_items:
        mc = mc_scores(backend.model, backend.tokenizer, mc_items, batch_size=batch_size, progress=progress)
        mc["file"] = str(mc_file)
    if text_file:
        ppl = text_perplexity(
            backend.model, backend.tokenizer, text_file, batch_size=batch_size, progress=progress
        )
    if lm_eval_tasks:
        # lm-eval loads the model again, on the device ours sits on (its own default is CUDA, even
        # on a machine without one)
        hf_model = getattr(backend, "model", None)
        device = str(next(hf_model.parameters()).device) if hf_model is not None else None
        lm = lm_eval_scores(str(model), lm_eval_tasks, batch_size=batch_size, device=device)
    return utility_summary(mc, ppl, lm)


__all__ = ["GenerationSettings", "HFBackend", "evaluate_model", "make_backend", "read_prompts"]
