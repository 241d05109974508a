"""Language-model types without torch: `Response`, `SamplingSettings`, `Prompt` and the `LMSampler` protocol.

Experiments on language models use only what is here, so any engine (transformers, vLLM, an
OpenAI-compatible server) can stand behind them, and reading a run's responses costs no torch import.
For a response, t counts the response tokens removed from its end (time_unit "tokens"): t = 0 keeps the
whole response, t = `Response.t_max` = its length keeps only the prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from critwin.errors import CritwinError

Prompt = str | Sequence[Mapping[str, str]]
"""A user message (str) or a whole chat (list of {"role", "content"} messages)."""


@dataclass(frozen=True)
class Response:
    """A prompt and one response of a causal LM, as token ids and texts.

    `prompt_text` is the text the model saw (chat template applied). `stop_reason` is "eos", "stop_string",
    "length" or None (unknown, e.g. a response read from a file). For a resampled response, `n_kept` is the
    number of response tokens kept from the original before resampling (None for an original response).
    """

    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    prompt_text: str
    response_text: str
    stop_reason: str | None = None
    n_kept: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt_ids", tuple(int(i) for i in self.prompt_ids))
        object.__setattr__(self, "response_ids", tuple(int(i) for i in self.response_ids))

    @property
    def length(self) -> int:
        """Number of response tokens (the largest meaningful t for this response)."""
        return len(self.response_ids)


@dataclass(frozen=True)
class SamplingSettings:
    """How continuations are drawn.

    temperature 0 means greedy decoding. `top_k` 0 disables top-k. `max_new_tokens` bounds the tokens a
    row may add. Stops on any id in `eos_token_ids` (the eos token is not part of the output) or once the
    text ends with one of `stop_strings` (included in the output).
    """

    temperature: float = 0.6
    top_p: float = 0.9
    top_k: int = 0
    max_new_tokens: int = 2048
    eos_token_ids: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (self.temperature >= 0.0 and np.isfinite(self.temperature)):
            raise CritwinError(f"temperature={self.temperature}: use a finite value >= 0 (0 = greedy)")
        if not 0.0 < self.top_p <= 1.0:
            raise CritwinError(f"top_p={self.top_p}: use a value in (0, 1] (1 = off)")
        if self.top_k < 0:
            raise CritwinError(f"top_k={self.top_k}: use an integer >= 0 (0 = off)")
        if self.max_new_tokens < 0:
            raise CritwinError(f"max_new_tokens={self.max_new_tokens}: use an integer >= 0")
        if any(not s for s in self.stop_strings):
            raise CritwinError("stop_strings: remove the empty string (it would stop every row at once)")
