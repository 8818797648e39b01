"""Turn (prompt, response) into token ids whose labels score exactly the response.

The boundary between prompt and response is placed on the rendered text, never guessed
from token counts: with a chat template the prompt is rendered with
`add_generation_prompt=True`, the full conversation with the response as the final
assistant turn, and the response tokens are what the second rendering adds to the first.
Prompt and response text are tokenised separately, so a tokenizer merge across the
boundary cannot move it. Without a chat template a plain format is used (`PLAIN_FORMAT`).

Truncation keeps the end of the prompt (the question sits there) and cuts the end of the
response; every cut is counted in a `TruncationReport`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from trace_realign.errors import InputError
from trace_realign.schema import Prompt, render_prompt

IGNORE_INDEX = -100
# Plain format for tokenizers without a chat template: BOS (if any), the prompt, a blank line,
# then the response followed by EOS (if any) so the model is scored on stopping too.
PLAIN_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Encoded:
    """One tokenised sequence: `labels` equal `input_ids` on response tokens, `IGNORE_INDEX` elsewhere."""

    input_ids: list[int]
    labels: list[int]
    prompt_len: int
    response_len: int
    prompt_cut: int = 0
    response_cut: int = 0


@dataclass
class TruncationReport:
    """How much truncation removed, over all sequences encoded with it."""

    sequences: int = 0
    prompts_truncated: int = 0
    responses_truncated: int = 0
    prompt_tokens_cut: int = 0
    response_tokens_cut: int = 0

    def add(self, enc: Encoded) -> None:
        self.sequences += 1
        self.prompts_truncated += enc.prompt_cut > 0
        self.responses_truncated += enc.response_cut > 0
        self.prompt_tokens_cut += enc.prompt_cut
        self.response_tokens_cut += enc.response_cut

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def message(self) -> str:
        if not (self.prompts_truncated or self.responses_truncated):
            return f"no truncation over {self.sequences} sequences"
        return (
            f"truncated {self.prompts_truncated}/{self.sequences} prompts (-{self.prompt_tokens_cut} tokens "
            f"from the start) and {self.responses_truncated}/{self.sequences} responses "
            f"(-{self.response_tokens_cut} tokens from the end)"
        )


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _messages(prompt: Prompt) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def split_text(tokenizer: Any, prompt: Prompt, response: str) -> tuple[str, str]:
    """The prompt text and the response text as the model sees them, split at the exact boundary."""
    if not has_chat_template(tokenizer):
        bos = tokenizer.bos_token or ""
        eos = tokenizer.eos_token or ""
        return bos + render_prompt(prompt) + PLAIN_SEPARATOR, response + eos
    messages = _messages(prompt)
    head = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": response}], add_generation_prompt=False, tokenize=False
    )
    if not full.startswith(head):
        raise InputError(
            "the tokenizer's chat template cannot place the response boundary: the conversation with the "
            "response does not start with the prompt rendered with add_generation_prompt=True "
            f"(prompt ends {head[-40:]!r}, conversation has {full[len(head) - 40 : len(head)]!r} there)",
            field="chat_template",
        )
    return head, full[len(head) :]


def _ids(tokenizer: Any, text: str) -> list[int]:
    # Special tokens come from the template or the plain format, never added a second time here.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode(
    tokenizer: Any,
    prompt: Prompt,
    response: str,
    *,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
) -> Encoded:
    """Encode one (prompt, response) pair; labels mask every prompt token.

    With `max_length`, a sequence that is too long first loses the start of its prompt, down
    to `max_prompt_length` tokens (default `max_length // 2`), then the end of its response.
    The prompt is never cut more than needed, and the response keeps at least one token.
    """
    head, tail = split_text(tokenizer, prompt, response)
    p_ids, r_ids = _ids(tokenizer, head), _ids(tokenizer, tail)
    if not r_ids:
        raise InputError("the response encodes to no tokens", field="response")
    p_cut = r_cut = 0
    if max_length is not None and len(p_ids) + len(r_ids) > max_length:
        keep_prompt = max_length // 2 if max_prompt_length is None else max_prompt_length
        if not 0 <= keep_prompt < max_length:
            raise InputError(
                f"max_prompt_length ({keep_prompt}) must be below max_length ({max_length})",
                field="max_prompt_length",
            )
        p_keep = min(len(p_ids), max(keep_prompt, max_length - len(r_ids)))
        r_keep = max_length - p_keep
        p_cut, r_cut = len(p_ids) - p_keep, len(r_ids) - r_keep
        p_ids, r_ids = p_ids[len(p_ids) - p_keep :], r_ids[:r_keep]
    return Encoded(
        input_ids=p_ids + r_ids,
        labels=[IGNORE_INDEX] * len(p_ids) + r_ids,
        prompt_len=len(p_ids),
        response_len=len(r_ids),
        prompt_cut=p_cut,
        response_cut=r_cut,
    )


def encode_many(
    tokenizer: Any,
    items: Sequence[tuple[Prompt, str]],
    *,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    report: TruncationReport | None = None,
) -> list[Encoded]:
    """Encode many (prompt, response) items, adding each to `report` when one is given."""
    out = []
    for prompt, response in items:
        enc = encode(tokenizer, prompt, response, max_length=max_length, max_prompt_length=max_prompt_length)
        if report is not None:
            report.add(enc)
        out.append(enc)
    return out


def pad_id(tokenizer: Any) -> int:
    """The id used for padding: the pad token, else EOS (padding is masked, so its value is unused)."""
    pid = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return 0 if pid is None else int(pid)


def collate(encoded: Sequence[Encoded], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence: `input_ids`, `attention_mask`, `labels` (padding is `IGNORE_INDEX`)."""
    if not encoded:
        raise ValueError("collate needs at least one sequence")
    width = max(len(e.input_ids) for e in encoded)
    ids = torch.full((len(encoded), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE_INDEX, dtype=torch.long)
    attn = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, e in enumerate(encoded):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        attn[i, :n] = 1
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}
