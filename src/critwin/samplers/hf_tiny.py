"""Tiny offline stand-ins for Hugging Face models: a character-level tokenizer built in code and small
random-weight causal LMs built from a config (no downloads). Used by tests, benchmarks and demos that need
"some local causal LM directory" without shipping weights.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

CHAT_TEMPLATE = (
    "{% for m in messages %}<bos>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<bos>assistant: {% endif %}"
)
"""A minimal chat template (role-prefixed lines) for the character-level tokenizer."""

DEFAULT_ALPHABET = string.ascii_lowercase + string.digits + " .,:;=+-*/()?!\n"


def char_tokenizer(alphabet: str = DEFAULT_ALPHABET, *, chat_template: str | None = None):
    """A `PreTrainedTokenizerFast` with one token per character of `alphabet` plus <pad>, <bos>, <eos>, <unk>.

    Token ids: 0 <pad>, 1 <bos>, 2 <eos>, 3 <unk>, then the alphabet in order. Decoding concatenates
    characters.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = list(dict.fromkeys(alphabet))
    vocab = {tok: i for i, tok in enumerate(["<pad>", "<bos>", "<eos>", "<unk>", *chars])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    # Every character (newlines included) is its own pre-token, so WordLevel maps it to one id.
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(".|\n"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


def tiny_causal_lm(
    vocab_size: int,
    *,
    arch: str = "qwen2",
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    max_positions: int = 2048,
    init_std: float = 0.3,
    eos_token_id: int = 2,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
):
    """A random-weight decoder-only LM ("qwen2" or "llama" architecture) built from a config.

    `init_std` is larger than the usual 0.02 so that next-token distributions are peaked, as in trained
    models.
    Same seed, same weights.
    """
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    cls = {"qwen2": Qwen2Config, "llama": LlamaConfig}[arch]
    config = cls(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_positions,
        initializer_range=init_std,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=eos_token_id,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    return model


def save_tiny_model(
    directory: str | Path, *, chat_template: str | None = CHAT_TEMPLATE, seed: int = 0, **model_kwargs
) -> Path:
    """Write a tiny random causal LM plus its character tokenizer to `directory` (a loadable HF model dir)."""
    directory = Path(directory)
    tok = char_tokenizer(chat_template=chat_template)
    model = tiny_causal_lm(len(tok), seed=seed, **model_kwargs)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory
