"""Language-model types without torch: `Response`, `SamplingSettings`, `Prompt` and the `LMSampler` protocol.

Experiments on language models use only what is here, so any engine (transformers, vLLM, an
OpenAI-compatible server) can stand behind them, and reading a run's responses costs no torch import.
For a response, t counts the response tokens removed from its end (time_unit "tokens"): t = 0 keeps the
whole response, t = `Response.t_max` = its length keeps only the prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from critwin.errors import CritwinError
from critwin.params import check, whole_number
from critwin.types import Failure

Prompt = str | Sequence[Mapping[str, str]]
"""A user message (str) or a whole chat (list of {"role", "content"} messages)."""


@dataclass(frozen=True)
class Response:
    """A prompt and one response of a causal LM, as token ids and texts.

    `prompt_text` is the text the model saw (chat template applied). `stop_reason` is "eos", "stop_string",
    "length" or None (unknown, e.g. a response read from a file). For a resampled response, `n_kept` is the
    number of response tokens kept from the original before resampling (None for an original response).

    Example:
        Ids are stored as tuples of ints; t counts response tokens removed from the end, so t ranges over
        0 … length (t = t_max keeps only the prompt):

        >>> import critwin as cw
        >>> r = cw.Response(prompt_ids=[1, 2], response_ids=[7, 8, 9], prompt_text="2+3?",
        ...                 response_text="It is 5", stop_reason="eos")
        >>> r.response_ids, r.length, r.t_max, r.time_unit
        ((7, 8, 9), 3, 3.0, 'tokens')
        >>> resampled = cw.Response([1, 2], [7, 4, 5], "2+3?", "It was 5", n_kept=1)
        >>> resampled.response_ids[: resampled.n_kept] == r.response_ids[:1]
        True
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

    time_unit: ClassVar[str] = "tokens"
    """Units of t for this sample: response tokens removed from its end."""

    @property
    def length(self) -> int:
        """Number of response tokens (the largest meaningful t for this response)."""
        return len(self.response_ids)

    @property
    def t_max(self) -> float:
        """The largest meaningful t for this response: its length (t = t_max keeps only the prompt)."""
        return float(len(self.response_ids))


@dataclass(frozen=True)
class Continuation:
    """The tokens sampled after a cut (without the eos token). `stop_reason` is "eos", "stop_string" or
    "length"."""

    token_ids: tuple[int, ...]
    stop_reason: str


@dataclass(frozen=True)
class SamplingSettings:
    """How continuations are drawn.

    temperature 0 means greedy decoding. `top_k` 0 disables top-k. `max_new_tokens` bounds the tokens a
    row may add. Stops on any id in `eos_token_ids` (the eos token is not part of the output) or once the
    text ends with one of `stop_strings` (included in the output).

    Example:
        The defaults are the paper's (temperature 0.6, top-p 0.9); a bad value is a one-line error:

        >>> import critwin as cw
        >>> cw.SamplingSettings()
        SamplingSettings(temperature=0.6, top_p=0.9, top_k=0, max_new_tokens=2048, eos_token_ids=(),
                         stop_strings=())
        >>> greedy = cw.SamplingSettings(temperature=0.0, max_new_tokens=64, stop_strings=("</answer>",))
        >>> greedy.temperature, greedy.max_new_tokens, greedy.stop_strings
        (0.0, 64, ('</answer>',))
        >>> cw.SamplingSettings(top_p=0)
        Traceback (most recent call last):
            ...
        critwin.errors.CritwinError: top_p=0: use a value in (0, 1]
    """

    temperature: float = 0.6
    top_p: float = 0.9
    top_k: int = 0
    max_new_tokens: int = 2048
    eos_token_ids: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check("temperature", self.temperature)
        check("top_p", self.top_p)
        check("top_k", self.top_k)
        whole_number(0).check(self.max_new_tokens, "max_new_tokens")  # 0: a budget with nothing left
        if any(not s for s in self.stop_strings):
            raise CritwinError("stop_strings: remove the empty string (it would stop every row at once)")


@runtime_checkable
class LMSampler(Protocol):
    """What experiments on language models use of a backend: one seam for transformers, vLLM, an API …

    A sample x is a `Response`. The forward process deletes response tokens from the end: t counts the
    tokens removed (time_unit "tokens"), t = 0 keeps the whole response, t = x.length (`Response.t_max`)
    keeps only the prompt; the reverse process samples a new ending with the sampler's settings. Token ids
    are the backend's own; texts are what its tokenizer decodes (special tokens dropped). Every method takes
    and returns plain Python / numpy values (`Response`, `Continuation`, `Failure`, np arrays), never
    engine objects, and a draw that fails is a `Failure` in its slot, never an exception.
    """

    time_unit: str
    """Always "tokens"."""
    t_max: float
    """The longest response the settings allow, in tokens (each `Response` bounds its own t by its length)."""
    settings: SamplingSettings
    """How responses and endings are drawn (temperature, top_p, top_k, max_new_tokens, eos, stop strings)."""
    chat: bool
    """Whether prompts go through the model's chat template (needed for chats and follow-up turns)."""

    @property
    def model_name(self) -> str:
        """What the model is (a path, a hub id or a served model name), for run configs."""
        ...

    @property
    def context_length(self) -> int | None:
        """The most tokens one sequence (prompt plus response) may hold; None when the model names none."""
        ...

    # -- derived samplers ---------------------------------------------------------------------------------
    def with_prompt(self, prompt: Prompt) -> LMSampler:
        """A copy bound to `prompt`, so that `sample(n, rng)` draws responses to it."""
        ...

    def with_settings(self, **overrides: Any) -> LMSampler:
        """A copy with some sampling settings replaced (the fields of `SamplingSettings`, and `budget`:
        "response" caps a whole resampled response at max_new_tokens, "continuation" gives every ending
        max_new_tokens of its own)."""
        ...

    # -- prompts, texts and tokens ------------------------------------------------------------------------
    def encode_prompt(self, prompt: Prompt) -> tuple[tuple[int, ...], str]:
        """Token ids and text the model sees for `prompt` (a user message or a chat), with the chat
        template and its generation prompt when `chat`."""
        ...

    def encode_text(self, text: str) -> tuple[int, ...]:
        """Token ids of `text` tokenized alone, without special tokens (as a response is)."""
        ...

    def encode_with_offsets(self, text: str) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
        """`encode_text(text)` and, for each token, the [start, end) characters of `text` it covers
        (start == end for tokens that cover no text)."""
        ...

    def token_ends(self, text: str) -> list[int]:
        """Characters of `text` at which its tokens end (`encode_with_offsets`), one per token, ascending."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids, special tokens dropped."""
        ...

    def char_offsets(self, ids: Sequence[int]) -> list[int]:
        """offsets[k] = number of characters of the decoded text of the first k tokens of `ids`, for
        k = 0 … len(ids) (offsets[0] = 0, offsets[-1] = len(decode(ids))): the map from kept tokens
        (len(ids) − t at forward time t) to characters kept."""
        ...

    def render_chat(
        self, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = False
    ) -> str:
        """The text of a chat (list of {"role", "content"}) under the model's chat template; a CritwinError
        when the model has none."""
        ...

    def response_from_text(self, prompt: Prompt, response_text: str) -> Response:
        """A `Response` for a response given as text (read from a file, or a prefill to continue):
        `encode_prompt(prompt)` and `encode_text(response_text)`; stop_reason None."""
        ...

    # -- drawing ------------------------------------------------------------------------------------------
    def sample(self, n: int, rng: np.random.Generator) -> list[Response | Failure]:
        """n independent responses to the bound prompt (see `with_prompt`; CritwinError without one)."""
        ...

    def generate_responses(
        self, prompts: Sequence[Prompt], *, seed: np.random.Generator | int | None = 0, **overrides: Any
    ) -> list[Response | Failure]:
        """One original response per prompt (repeat a prompt for several), drawn together; the same seed
        gives the same responses. `overrides` replace sampling settings for this call only, e.g.
        temperature=0.0 (greedy), max_new_tokens=32."""
        ...

    def forward_reverse(
        self, x: Response, ts: Sequence[float], n: int, rng: np.random.Generator | int | None
    ) -> list[list[Response | Failure]]:
        """For each t in `ts` (whole numbers 0 … x.length), n responses keeping the first x.length − t
        response tokens of x and a freshly sampled ending (`Response.n_kept` = x.length − t); i.i.d.
        given x, the same rng state gives the same draws. A t outside 0 … x.length is a CritwinError."""
        ...

    def resample_many(
        self,
        xs: Sequence[Response],
        ts_per_x: Sequence[Sequence[float]],
        n: int,
        rng: np.random.Generator | int | None,
    ) -> list[list[list[Continuation | Failure]]]:
        """`forward_reverse` for several responses at once, returning only the new endings:
        out[i][j] holds the n `Continuation`s after cutting xs[i] at t = ts_per_x[i][j]."""
        ...

    def score(
        self,
        prompts: Sequence[Sequence[int]],
        completions: Sequence[Sequence[int]],
        *,
        batch_size: int | None = None,
    ) -> list[np.ndarray]:
        """Per-token log-probabilities of given completion tokens after given prompt tokens (teacher forced,
        batched): out[i][j] = log p(completions[i][j] | prompts[i] + completions[i][:j]), the raw
        log-softmax of the model's logits at temperature 1 (the sampling settings play no part), float64,
        one value per completion token. Each prompt needs at least one token."""
        ...


def engine_info_of(sampler: Any) -> dict[str, Any]:
    """`sampler.engine_info()` where it has one (every critwin LM backend does), else its class and model
    name: what drew a run's samples, for its engines.jsonl."""
    info = getattr(sampler, "engine_info", None)
    if callable(info):
        return info()
    return {"engine": type(sampler).__name__, "model": getattr(sampler, "model_name", None)}
