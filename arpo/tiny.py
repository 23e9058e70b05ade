"""Small models the project builds itself (no model hub): a byte-level BPE tokenizer trained on the tag
protocol's text, and a randomly initialized Qwen2 of a chosen shape.

Used by tests, benchmarks and the demo. Saved with `save_pretrained`, so a tiny model loads through the
same `from_pretrained` path as any Hugging Face model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

CORPUS = [
    "<think>I should compute this with Python.</think><python>print(12 * 34)</python>",
    " <result>\n408\n</result><answer>The product is \\boxed{408}</answer>",
    "<think>Look it up.</think><search>capital of Veloria</search>",
    " <result>\nOstrin is the capital.\n</result>",
    "<answer>\\boxed{Ostrin}</answer> The quick brown fox jumps over the lazy dog. 0123456789 + - * / = ( )",
]

SHAPES: dict[str, dict[str, Any]] = {
    # head_dim 64: vLLM's CPU attention does not support head_dim 16 or 32.
    "tiny": {
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
    },
    # The tiny agent that `arpo sft` cold-starts (arpo:agent-tiny).
    "agent": {
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,  # no shared keys: copying needs a position head and a content head
    },
    # The layer shapes of Qwen2.5-0.5B and -1.5B (vocabulary is the tokenizer's), for benchmarks.
    "0.5b": {
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
    },
    "1.5b": {
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
    },
}


NUMBERS = [str(n) for n in range(10, 1000)]
"""Numbers that a `copyable` tokenizer keeps whole (single digits are tokens of every byte-level
vocabulary): a number is then one or two tokens, and a repeated digit does not lead a copying model
astray the way it does when every digit is a token."""


def bpe_tokenizer(
    texts: Iterable[str], vocab_size: int, copyable: bool = False, tokens: Sequence[str] = ()
) -> Any:
    """A byte-level BPE tokenizer trained on `texts`, with an end-of-text token and no chat template;
    `tokens` are added whole (never split, kept in text). `copyable` makes a number or a name the same
    tokens wherever it appears, so that what a small model copies from a tool result is copied token
    for token: every number below 1,000 is one token (longer numbers are read three digits at a time
    from the left, `1905` -> `190` `5`; other digits are single tokens) and a space before a capital
    letter is its own token (` Mebrias` in a search result and `{Mebrias` in an answer)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (
        pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.Split(Regex(" (?=[A-Z])"), behavior="isolated"),
                byte_level,
            ]
        )
        if copyable
        else byte_level
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    extra = [*tokens, *NUMBERS] if copyable else list(tokens)
    if extra:
        fast.add_tokens(extra)
    return fast


def tiny_tokenizer(vocab_size: int = 384) -> Any:
    """A byte-level BPE tokenizer trained on `CORPUS`, with an end-of-text token and no chat template."""
    return bpe_tokenizer(CORPUS * 4, vocab_size)


def random_model(
    tokenizer: Any,
    shape: str = "tiny",
    seed: int = 0,
    max_positions: int = 2048,
    vocab_size: int | None = None,
) -> Any:
    """A randomly initialized Qwen2 causal LM of a named shape (see `SHAPES`)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {sorted(SHAPES)}, got {shape!r}")
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=vocab_size or len(tokenizer),
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **SHAPES[shape],
    )
    return Qwen2ForCausalLM(config)


def save_tiny(directory: str | Path, shape: str = "tiny", seed: int = 0) -> Path:
    """Build a tokenizer and a random model and save both to `directory` (loadable by name or path)."""
    out = Path(directory)
    tokenizer = tiny_tokenizer()
    random_model(tokenizer, shape, seed).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
