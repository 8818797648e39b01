"""Utility: does realignment cost general ability? Offline measures, and lm-eval when installed.

- Multiple-choice accuracy by log-likelihood on any JSONL file: each choice is scored as the
  continuation of `Question: ...\\nAnswer:` and the most likely one is the model's answer
  (`acc`), also with the log-likelihood divided by the choice's token count (`acc_norm`), as
  lm-eval scores such tasks. Raw text, not the chat template: it measures knowledge, not format.
- Perplexity of any held-out text file, in non-overlapping windows.
- `lm_eval_scores`: MMLU / GSM8K / HellaSwag / GPQA, or a local task YAML, through
  `lm_eval.simple_evaluate`.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from trace_realign.errors import InputError
from trace_realign.evaluate.metrics import mc_accuracy, perplexity
from trace_realign.io import read_jsonl, read_text

# Imported inside functions: torch, lm-eval (optional) and the model code are imported inside the functions that use them:
# reading a multiple-choice file loads none of them.

LETTERS = string.ascii_uppercase


@dataclass(frozen=True)
class MCItem:
    question: str
    choices: list[str]
    answer: int


def read_mc(path: str | Path) -> list[MCItem]:
    """Read `{"question", "choices": [...], "answer": index or letter}` rows, checked one by one."""
    items = []
    for n, row in read_jsonl(path):
        q, choices, ans = row.get("question"), row.get("choices"), row.get("answer")
        if not isinstance(q, str) or not q.strip():
            raise InputError("expected a non-empty string", path=str(path), line=n, field="question")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise InputError(
                "expected a list of at least two strings", path=str(path), line=n, field="choices"
            )
        if isinstance(ans, str) and len(ans.strip()) == 1 and ans.strip().upper() in LETTERS:
            ans = LETTERS.index(ans.strip().upper())
        if isinstance(ans, bool) or not isinstance(ans, int) or not 0 <= ans < len(choices):
            raise InputError(
                f"expected a choice index 0..{len(choices) - 1} or a letter A..{LETTERS[len(choices) - 1]}, "
                f"got {row.get('answer')!r}",
                path=str(path),
                line=n,
                field="answer",
            )
        items.append(MCItem(q, choices, ans))
    if not items:
        raise InputError("no multiple-choice rows", path=str(path))
    return items


def _bos(tokenizer: Any) -> list[int]:
    return [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []


def _scored(context_ids: list[int], target_ids: list[int], max_length: int) -> Any:
    """An `Encoded` whose labels score `target_ids` after `context_ids`; the context loses its start
    if the whole is too long (the question sits at its end)."""
    from trace_realign.model.tokenize import IGNORE_INDEX, Encoded

    keep = max(1, max_length - len(target_ids))
    context_ids = context_ids[-keep:]
    return Encoded(
        input_ids=context_ids + target_ids,
        labels=[IGNORE_INDEX] * len(context_ids) + target_ids,
        prompt_len=len(context_ids),
        response_len=len(target_ids),
    )


def _logprobs(
    model: Any,
    tokenizer: Any,
    encoded: Sequence[Any],
    batch_size: int,
    progress: bool = False,
    desc: str = "",
) -> list[float]:
    import torch

    from trace_realign.model.logprobs import batch_logprobs
    from trace_realign.model.tokenize import collate, pad_id

    out: list[float] = []
    with torch.no_grad():
        starts = range(0, len(encoded), batch_size)
        for start in tqdm(starts, desc=desc, disable=not progress, leave=False):
            batch = collate(encoded[start : start + batch_size], pad_id(tokenizer))
            out.extend(batch_logprobs(model, batch).tolist())
    return out


def mc_scores(
    model: Any,
    tokenizer: Any,
    items: Sequence[MCItem],
    *,
    batch_size: int = 8,
    max_length: int = 1024,
    progress: bool = False,
) -> dict[str, Any]:
    """Multiple-choice accuracy: `acc` by summed log-likelihood, `acc_norm` by its per-token mean."""
    encoded, owner, lengths = [], [], []
    for k, item in enumerate(items):
        ctx = (
            _bos(tokenizer)
            + tokenizer(f"Question: {item.question}\nAnswer:", add_special_tokens=False)["input_ids"]
        )
        for choice in item.choices:
            cont = tokenizer(f" {choice}", add_special_tokens=False)["input_ids"]
            encoded.append(_scored(ctx, cont, max_length))
            owner.append(k)
            lengths.append(len(cont))
    lps = _logprobs(model, tokenizer, encoded, batch_size, progress, "multiple choice")
    per_item: list[list[tuple[float, float]]] = [[] for _ in items]
    for k, lp, n in zip(owner, lps, lengths, strict=True):
        per_item[k].append((lp, lp / max(1, n)))
    picks = [max(range(len(s)), key=lambda j, s=s: s[j][0]) for s in per_item]
    picks_norm = [max(range(len(s)), key=lambda j, s=s: s[j][1]) for s in per_item]
    return {
        "acc": mc_accuracy(p == it.answer for p, it in zip(picks, items, strict=True)),
        "acc_norm": mc_accuracy(p == it.answer for p, it in zip(picks_norm, items, strict=True)),
        "rate": sum(p == it.answer for p, it in zip(picks, items, strict=True)) / len(items),
        "predictions": picks,
    }


def text_perplexity(
    model: Any,
    tokenizer: Any,
    path: str | Path,
    *,
    window: int = 512,
    batch_size: int = 4,
    progress: bool = False,
) -> dict[str, Any]:
    """Perplexity of a UTF-8 text file in non-overlapping windows of `window` tokens.

    Each window starts from BOS (when the tokenizer has one), so its first tokens see less
    context than in one long pass: cheaper, slightly pessimistic, and the same for every model
    compared on the file.
    """
    from trace_realign.model.tokenize import IGNORE_INDEX, Encoded

    p = Path(path)
    text = read_text(p, "text file")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = _bos(tokenizer)
    encoded = []
    for start in range(0, len(ids), window):
        piece = ids[start : start + window]
        if not bos and len(piece) < 2:
            continue
        head = bos or piece[:1]
        body = piece if bos else piece[1:]
        encoded.append(
            Encoded(
                input_ids=head + body,
                labels=[IGNORE_INDEX] * len(head) + body,
                prompt_len=len(head),
                response_len=len(body),
            )
        )
    if not encoded:
        raise InputError("text file holds too little text to score", path=str(p))
    lps = _logprobs(model, tokenizer, encoded, batch_size, progress, "perplexity")
    n_tokens = sum(e.response_len for e in encoded)
    out = perplexity(-math.fsum(lps), n_tokens)
    out["file"] = str(p)
    return out


# lm-eval task names for the paper's benchmarks, and the metric each reports first.
LM_EVAL_TASKS = {
    "mmlu": "mmlu",
    "gsm8k": "gsm8k",
    "hellaswag": "hellaswag",
    "gpqa": "gpqa_main_zeroshot",
}
_LM_EVAL_METRICS = ("acc,none", "exact_match,strict-match", "exact_match,flexible-extract", "acc_norm,none")


def _local_task(spec: str) -> tuple[str, Path] | None:
    """`(task name, folder)` when `spec` is an lm-eval task YAML file, else None."""
    p = Path(spec)
    if p.suffix not in (".yaml", ".yml"):
        return None
    if not p.is_file():
        raise InputError("lm-eval task file not found", path=spec, field="lm_eval")

    try:
        name = (yaml.safe_load(p.read_text(encoding="utf-8")) or {}).get("task")
    except yaml.YAMLError as exc:
        raise InputError(
            f"not a YAML task file: {str(exc).splitlines()[0]}", path=spec, field="lm_eval"
        ) from None
    if not isinstance(name, str) or not name:
        raise InputError("an lm-eval task file needs a `task:` name", path=spec, field="task")
    return name, p.resolve().parent


def lm_eval_scores(
    model_path: str | Path,
    tasks: Sequence[str],
    *,
    batch_size: int = 8,
    limit: int | None = None,
    device: str | None = None,
) -> dict[str, float | None]:
    """Scores from lm-eval-harness (`pip install trace-realign[eval]`), one number per task.

    A task is one of the paper's benchmarks (`LM_EVAL_TASKS`, datasets from the Hub) or the path
    of an lm-eval task YAML (e.g. `dataset_path: json` over a local file), reported under its
    `task:` name. An adapter folder is passed as `peft=` on its base. A task missing from
    lm-eval's results is None (null in JSON), never 0.
    """
    local = {t: _local_task(t) for t in tasks}
    unknown = [t for t in tasks if local[t] is None and t not in LM_EVAL_TASKS]
    if unknown:
        raise InputError(
            f"unknown lm-eval task(s) {unknown}; choose from {sorted(LM_EVAL_TASKS)} or give a task YAML file",
            field="lm_eval",
        )
    try:
        import lm_eval
    except ImportError:
        raise InputError("lm-eval tasks need `pip install trace-realign[eval]`", field="lm_eval") from None
    from trace_realign.model.loading import adapter_base

    base = adapter_base(model_path)
    if base is not None:
        model_args = f"pretrained={base},peft={Path(model_path).resolve()}"
    else:
        model_args = f"pretrained={model_path}"
    names = {t: (local[t][0] if local[t] else LM_EVAL_TASKS[t]) for t in tasks}
    kwargs: dict[str, Any] = {}
    folders = sorted({str(v[1]) for v in local.values() if v})
    if folders:
        from lm_eval.tasks import TaskManager

        # the built-in task index is large: read it only when a built-in task is asked for
        kwargs["task_manager"] = TaskManager(
            include_path=folders, include_defaults=any(v is None for v in local.values())
        )
    if device is not None:
        kwargs["device"] = device
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args=model_args,
        tasks=[names[t] for t in tasks],
        batch_size=batch_size,
        limit=limit,
        **kwargs,
    )["results"]
    scores = {}
    for t in tasks:
        metrics = results.get(names[t], {})
        key = names[t] if local[t] else t
        scores[key] = next((float(metrics[m]) for m in _LM_EVAL_METRICS if m in metrics), None)
    return scores
