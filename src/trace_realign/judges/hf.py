"""A local Hugging Face causal LM as judge: the likelier verdict word after the judge prompt.

No text is generated. For each item the model scores the two answers `COMPLIANT` and
`NON_COMPLIANT` as the assistant's reply to the (fenced) judge prompt, summing the
log-probabilities of their tokens, and the likelier one is the verdict. When the two are closer
than `min_margin` nats the verdict is UNKNOWN. Items are scored in batches, two sequences each.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trace_realign.judges.base import JudgeItem, OnVerdict
from trace_realign.judges.policy import Policy
from trace_realign.judges.prompt import TASK_ONE_WORD, TEMPLATE_VERSION, judge_messages
from trace_realign.schema import Label, Verdict

# Imported inside functions: torch and the model code are imported inside the judge's methods: `make_judge` of any other
# spec (a rules-judge triage) must not load them.

ANSWERS = (("COMPLIANT", Label.COMPLIANT), ("NON_COMPLIANT", Label.NON_COMPLIANT))


class HFJudge:
    def __init__(
        self,
        path: str | Path,
        *,
        batch_size: int = 8,
        min_margin: float = 0.0,
        max_length: int | None = None,
        dtype: str = "float32",
        device: str | None = None,
        model: Any = None,
        tokenizer: Any = None,
    ) -> None:
        self.path, self.batch_size, self.min_margin = str(path), batch_size, min_margin
        self.max_length, self.dtype, self.device = max_length, dtype, device
        self._model, self._tokenizer = model, tokenizer
        self.identity = (
            f"hf:{self.path}|prompt={TEMPLATE_VERSION}|margin={min_margin:g}|max_length={max_length}"
        )

    def _load(self) -> tuple[Any, Any]:
        # Loaded on first use: building the judge (e.g. for --dry-run) must not cost a model load.
        if self._model is None:
            from trace_realign.model.loading import compute_device, load_model, load_tokenizer

            device = self.device or compute_device()
            self._model = load_model(self.path, dtype=self.dtype, device=device)
            self._tokenizer = load_tokenizer(self.path)
        self._model.eval()
        return self._model, self._tokenizer

    def scores(self, policy: Policy, items: Sequence[JudgeItem]) -> list[tuple[float, float]]:
        """`(log p(COMPLIANT), log p(NON_COMPLIANT))` per item."""
        import torch

        from trace_realign.model.logprobs import batch_logprobs
        from trace_realign.model.tokenize import collate, encode, pad_id

        model, tok = self._load()
        out: list[tuple[float, float]] = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            encoded = [
                encode(tok, judge_messages(policy, it, TASK_ONE_WORD), word, max_length=self.max_length)
                for it in chunk
                for word, _ in ANSWERS
            ]
            with torch.no_grad():
                lp = batch_logprobs(model, collate(encoded, pad_id(tok))).tolist()
            out.extend((lp[2 * k], lp[2 * k + 1]) for k in range(len(chunk)))
        return out

    def _verdict(self, lp_c: float, lp_n: float) -> Verdict:
        raw = json.dumps({"logp_compliant": lp_c, "logp_non_compliant": lp_n})
        margin = lp_c - lp_n
        if abs(margin) <= self.min_margin:
            return Verdict(
                Label.UNKNOWN, f"undecided: log-odds {margin:+.3f} within {self.min_margin:g}", raw
            )
        label = Label.COMPLIANT if margin > 0 else Label.NON_COMPLIANT
        return Verdict(label, f"log-odds compliant vs not {margin:+.3f}", raw)

    def judge(
        self, policy: Policy, items: Sequence[JudgeItem], on_verdict: OnVerdict | None = None
    ) -> list[Verdict]:
        verdicts: list[Verdict] = []
        for start in range(0, len(items), self.batch_size):
            # batch by batch, so each batch's verdicts reach the cache before the next forward pass
            for lp_c, lp_n in self.scores(policy, items[start : start + self.batch_size]):
                v = self._verdict(lp_c, lp_n)
                if on_verdict is not None:
                    on_verdict(len(verdicts), v)
                verdicts.append(v)
        return verdicts
