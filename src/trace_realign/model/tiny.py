"""Tiny models built in seconds, with no download: for tests and `--quick` runs.

A byte-level tokenizer (every UTF-8 byte is a token, so any text round-trips) and a
randomly initialised Llama of a few hundred thousand parameters. With `chat_template=False`
the tokenizer has no chat template, which exercises the plain prompt format.
"""

from __future__ import annotations

from pathlib import Path

# Imported inside functions: tokenizers, transformers and torch are imported inside the builders: importing the module is free.

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIALS = ["<|pad|>", "<|bos|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]


def tiny_tokenizer(chat_template: bool = True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        bos_token="<|bos|>",
        eos_token="<|end|>",
        additional_special_tokens=SPECIALS[3:],
    )
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_llama(vocab_size: int, seed: int = 0, hidden: int = 32, layers: int = 2, heads: int = 4):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def save_tiny_model(path: str | Path, seed: int = 0, chat_template: bool = True) -> Path:
    """Write a tiny Llama and its tokenizer to `path` (a plain HF checkpoint) and return it."""
    path = Path(path)
    tok = tiny_tokenizer(chat_template=chat_template)
    model = tiny_llama(len(tok), seed=seed)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
