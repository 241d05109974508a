"""Conformance checks for sampler backends: `check_sampler(sampler)`, like scikit-learn's check_estimator.

A backend is done when `check_sampler` passes on it (DESIGN §3). The checks, each named in the error that
reports its failure:

- "attributes": the `ForwardReverse` protocol (`time_unit` a non-empty string, `t_max` a finite number > 0).
- "sample": `sample(n, rng)` of an `Unconditional` backend gives n draws, the same ones for the same seed.
- "shape": `forward_reverse(x, ts, n, rng)` gives len(ts) lists of n draws, each a `Failure` or a sample
  of x's kind; not every draw fails.
- "failures": a backend that cannot produce a draw returns a `Failure` in its slot; any exception other
  than CritwinError from a valid call fails this check.
- "t_range": every t in [0, t_max] is accepted (t_max: the sample's own `t_max` where it has one, e.g. a
  `Response`'s length, else the sampler's) and t < 0, t > t_max, NaN (and a fractional t in "tokens") are a
  CritwinError.
- "reproducible": the same seed gives exactly the same draws.
- "seed_changes": another seed changes the draws at a t where the first call drew at least two different
  samples (skipped for a greedy language model, and when every t gave a single outcome).
- "iid": the draws at the most degraded t are i.i.d.: a binary feature (first coordinate above the median
  for continuous samples, "among the most frequent outcomes" for discrete ones) has the same frequency in
  the first and second half of the draws (two-proportion z-test), and independent pairs of neighbouring
  draws agree as often as independent draws do (binomial z-test); |z| ≤ 4.42 (two-sided level 1e-5, so
  the tolerance shrinks like 1/sqrt(n)). Continuous draws of one call must all differ.

For an `LMSampler` (critwin.samplers.lm) also:

- "lm.attributes": time_unit "tokens", `settings`, `chat`, `model_name`, `context_length`.
- "lm.text": encode/decode round trips, `encode_with_offsets`/`token_ends`/`char_offsets` agree with
  `decode`, `response_from_text` and `render_chat`.
- "lm.generate": `generate_responses` gives one `Response` (or `Failure`) per prompt with the prompt's ids,
  a decoded text, a stop reason and at most max_new_tokens tokens; the same seed the same responses; a
  greedy override (temperature=0) the same response whatever the seed.
- "lm.forward_reverse": every draw keeps the prompt and the first x.length − t response tokens of x
  (`n_kept`); `resample_many` has the shape out[i][j] = n continuations.
- "lm.score": one finite log-probability ≤ 0 per completion token, the same scored alone or in a batch
  (|Δ| ≤ 1e-4), the greedy first token's at least that of any other candidate token (1e-5 slack), and
  exp(score) of the greedy first token equal to its frequency among n fresh draws at temperature 1
  (binomial z-test, |z| ≤ 4.42).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from critwin.errors import CritwinError, first_line
from critwin.samplers.base import ForwardReverse, Unconditional
from critwin.samplers.lm import Continuation, LMSampler, Response, SamplingSettings
from critwin.types import Failure

Z_MAX = 4.42
"""Largest |z| the statistical checks accept: two-sided level 1e-5 per test (a correct backend fails one
in 100,000 seeds), so that only real departures fail."""

DEFAULT_PROMPT = "what is two plus three?"
DEFAULT_TEXT = "so the answer is five."
_STOPS = ("eos", "stop_string", "length")


class ConformanceError(AssertionError):
    """A failed conformance check; `check` names it."""

    def __init__(self, check: str, detail: str):
        super().__init__(f"check_sampler: check {check!r} failed: {detail}")
        self.check = check


def _fail(check: str, detail: str) -> None:
    raise ConformanceError(check, detail)


def _key(d: Any) -> Any:
    """A hashable, exactly comparable form of a draw."""
    if isinstance(d, Failure):
        return ("<failure>", d.reason)
    if isinstance(d, np.ndarray):
        return ("array", d.shape, tuple(np.asarray(d).ravel().tolist()))
    if isinstance(d, Response):
        return ("response", d.prompt_ids, d.response_ids, d.n_kept)
    if isinstance(d, Continuation):
        return ("continuation", d.token_ids, d.stop_reason)
    if isinstance(d, (list, tuple)):
        return tuple(_key(v) for v in d)
    if isinstance(d, np.generic):
        return d.item()
    try:
        hash(d)
    except TypeError:
        return ("repr", repr(d))
    return d


def _continuous(draws: Sequence[Any]) -> bool:
    ok = [d for d in draws if not isinstance(d, Failure)]
    return bool(ok) and all(
        (isinstance(d, np.ndarray) and d.dtype.kind == "f") or isinstance(d, float) for d in ok
    )


def _same_kind(x: Any, d: Any) -> bool:
    if isinstance(x, np.ndarray):
        return isinstance(d, np.ndarray) and d.shape == x.shape
    return type(d) is type(x)


def _rows(sampler: Any, *args: Any) -> Any:
    """`sampler.forward_reverse(*args)` with streamed rows (an iterator) read whole, so that the checks
    see what `scan` sees; a list is returned as it is."""
    out = sampler.forward_reverse(*args)
    if isinstance(out, Sequence) or not isinstance(out, Iterable):
        return out
    return [row if isinstance(row, Sequence) or not isinstance(row, Iterable) else list(row) for row in out]


def _check_sample(draw: Any, k: int, seed: int, what: str) -> list[Any]:
    """k unconditional draws, twice from the same seed: a list of k, the same both times."""
    a = _call("sample", "sample", draw, k, np.random.default_rng(seed))
    b = _call("sample", "sample", draw, k, np.random.default_rng(seed))
    if not isinstance(a, list) or len(a) != k:
        _fail("sample", f"{what}({k}, rng) gave {_count(a)} draws, not {k}")
    if _key(a) != _key(b):
        _fail("sample", f"{what}({k}, rng) gave different draws for the same seed")
    return a


def _call(check: str, what: str, fn, *args, **kwargs) -> Any:
    """Run one backend call that must succeed: a CritwinError fails `check`, any other exception
    "failures" (failed draws are values, never exceptions)."""
    try:
        return fn(*args, **kwargs)
    except CritwinError as err:
        _fail(check, f"{what} raised CritwinError: {first_line(err, with_type=False)}")
    except Exception as err:  # the backend's own error: that is the failure being checked
        _fail("failures", f"{what} raised {first_line(err)} instead of returning Failure values")


def _z_two_props(a: np.ndarray, b: np.ndarray) -> float:
    """z of the two-proportion test of the means of two 0/1 arrays (0 when both are constant alike)."""
    p = (a.sum() + b.sum()) / (len(a) + len(b))
    var = p * (1 - p) * (1 / len(a) + 1 / len(b))
    return 0.0 if var == 0 else float((a.mean() - b.mean()) / math.sqrt(var))


def _feature(draws: Sequence[Any]) -> np.ndarray | None:
    """A binary feature of the draws as close to a fair coin as their law allows (None: one outcome)."""
    if _continuous(draws):
        v = np.array([float(np.asarray(d).ravel()[0]) for d in draws])
        f = v > np.median(v)
        return f if 0 < f.sum() < len(f) else None
    keys = [_key(d) for d in draws]
    # Most frequent outcomes first, ties by their text (never by where in the call they were drawn).
    counts = sorted(Counter(keys).items(), key=lambda kc: (-kc[1], repr(kc[0])))
    if len(counts) < 2:
        return None
    chosen, total = set(), 0
    for k, c in counts:
        if total >= len(keys) / 2:
            break
        chosen.add(k)
        total += c
    return np.array([k in chosen for k in keys])


def _check_iid(draws: Sequence[Any], t: float, notes: dict[str, str]) -> None:
    ok = [d for d in draws if not isinstance(d, Failure)]
    if len(ok) < 8:
        notes["iid"] = f"skipped: {len(ok)} successful draws at t={t:g} are too few to test"
        return
    if _continuous(ok):
        keys = [_key(d) for d in ok]
        if len(set(keys)) < len(keys):
            i = next(i for i, k in enumerate(keys) if keys.index(k) != i)
            _fail("iid", f"draws {keys.index(keys[i])} and {i} at t={t:g} are identical, but the samples "
                         "are continuous: each draw needs its own forward noise and reverse randomness")
    f = _feature(ok)
    if f is None:
        notes["iid"] = f"skipped: every draw at t={t:g} is the same outcome"
        return
    half = len(f) // 2
    z = _z_two_props(f[:half].astype(float), f[half:].astype(float))
    if abs(z) > Z_MAX:
        _fail("iid", f"at t={t:g} a feature's frequency is {f[:half].mean():.3f} in the first half of the "
                     f"{len(f)} draws and {f[half:].mean():.3f} in the second (z = {z:.2f}, |z| > {Z_MAX}): "
                     "the draws of one call are not identically distributed")
    m = len(f) // 2
    agree = (f[0 : 2 * m : 2] == f[1 : 2 * m : 2]).astype(float)
    p = f.mean()
    q = p * p + (1 - p) * (1 - p)
    if 0 < q < 1:
        z = float((agree.mean() - q) / math.sqrt(q * (1 - q) / m))
        if abs(z) > Z_MAX:
            _fail("iid", f"at t={t:g} neighbouring draws agree on a feature in {agree.mean():.3f} of {m} "
                         f"pairs where independent draws agree in {q:.3f} (z = {z:.2f}, |z| > {Z_MAX}): the "
                         "draws of one call are not independent")
    notes["iid"] = "ok"


def _default_ts(t_hi: float, tokens: bool) -> list[float]:
    if tokens:
        ts = sorted({0, int(t_hi) // 2, int(t_hi)})
    else:
        ts = sorted({0.0, t_hi / 2, t_hi})
    return [float(t) for t in ts]


def _lm_x(sampler: Any, prompt: str, seed: int) -> Response:
    """An original response of at least 2 tokens to `prompt` (tries a few seeds)."""
    for s in range(seed, seed + 10):
        r = _call("lm.generate", "generate_responses", sampler.generate_responses, [prompt], seed=s)
        if isinstance(r, list) and len(r) == 1 and isinstance(r[0], Response) and r[0].length >= 2:
            return r[0]
    _fail("lm.generate", f"no response of at least 2 tokens to {prompt!r} in 10 seeds; pass x=")
    raise AssertionError  # unreachable


def check_sampler(
    sampler: Any,
    x: Any = None,
    *,
    ts: Sequence[float] | None = None,
    n: int = 200,
    seed: int = 0,
    prompt: str = DEFAULT_PROMPT,
    text: str = DEFAULT_TEXT,
) -> dict[str, str]:
    """Run the conformance checks (module docstring) on a sampler; raise `ConformanceError` (an
    AssertionError naming the check) at the first failure. Returns {check: "ok" or "skipped: why"}.

    x: the sample to run forward–reverse on (default: `sample(1, rng)[0]`, or for an `LMSampler` a response
    to `prompt` of at least 2 tokens). ts: the times to draw at (default 0, t_max/2, t_max; whole tokens
    for time_unit "tokens"). n: draws per t (the statistical tolerances follow from it). `prompt` and
    `text` must be text the language model's tokenizer can encode.

    Example:
        The exact toy language passes every check that applies to it; a backend that accepts t outside
        [0, t_max] fails the "t_range" check:

        >>> import numpy as np
        >>> import critwin as cw
        >>> cw.check_sampler(cw.load_sampler("toy_lm"), n=40)
        {'attributes': 'ok', 'sample': 'ok', 'shape': 'ok', 'failures': 'ok', 't_range': 'ok',
         'reproducible': 'ok', 'seed_changes': 'ok', 'iid': 'ok'}
        >>> class Frozen:  # returns x unchanged, whatever t and rng
        ...     time_unit = "ou"
        ...     t_max = 1.0
        ...     def forward_reverse(self, x, ts, n, rng):
        ...         return [[x] * n for _ in ts]
        >>> cw.check_sampler(Frozen(), x=np.zeros(2), n=40)
        Traceback (most recent call last):
            ...
        critwin.conformance.ConformanceError: check_sampler: check 't_range' failed: t=-1 is outside
        [0, t_max] (t_max = 1) but was accepted; raise a CritwinError
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 8:
        raise CritwinError(f"n={n!r}: draw at least 8 per t so that the i.i.d. checks mean something")
    notes: dict[str, str] = {}
    # -- attributes ---------------------------------------------------------------------------------------
    if not isinstance(sampler, ForwardReverse):
        _fail("attributes", f"{type(sampler).__name__} lacks time_unit, t_max or forward_reverse")
    if not isinstance(sampler.time_unit, str) or not sampler.time_unit:
        _fail("attributes", f"time_unit={sampler.time_unit!r}: name the units of t, e.g. 'ou' or 'tokens'")
    t_max = sampler.t_max
    number = isinstance(t_max, int | float) and not isinstance(t_max, bool)
    if not (number and math.isfinite(t_max) and t_max > 0):
        _fail("attributes", f"t_max={t_max!r}: give a finite number > 0")
    notes["attributes"] = "ok"
    is_lm = isinstance(sampler, LMSampler)
    tokens = sampler.time_unit == "tokens"
    # -- unconditional draws ------------------------------------------------------------------------------
    if is_lm:
        if isinstance(sampler, Unconditional):
            _check_sample(sampler.with_prompt(prompt).sample, 3, seed, "with_prompt(prompt).sample")
            notes["sample"] = "ok"
        if x is None:
            x = _lm_x(sampler, prompt, seed)
    elif isinstance(sampler, Unconditional):
        a = _check_sample(sampler.sample, 8, seed, "sample")
        notes["sample"] = "ok"
        if x is None:
            x = next((d for d in a if not isinstance(d, Failure)), None)
            if x is None:
                _fail("sample", "every one of 8 draws of sample() failed; pass x=")
    elif x is None:
        raise CritwinError(f"{type(sampler).__name__} cannot draw samples (no sample()); pass x=")
    # -- forward–reverse ----------------------------------------------------------------------------------
    t_hi = float(getattr(x, "t_max", t_max))
    if ts is None:
        ts = _default_ts(t_hi, tokens)
    ts = [float(t) for t in ts]
    rows = _call("t_range", f"forward_reverse(x, {ts}, {n}, rng)", _rows, sampler, x, ts, n,
                 np.random.default_rng(seed))
    if not isinstance(rows, Sequence) or len(rows) != len(ts):
        _fail("shape", f"forward_reverse gave {_count(rows)} rows for {len(ts)} times; give one list per t")
    for t, row in zip(ts, rows, strict=True):
        if not isinstance(row, Sequence) or len(row) != n:
            _fail("shape", f"forward_reverse gave {_count(row)} draws at t={t:g}, not n={n}")
        for d in row:
            if isinstance(d, BaseException) or d is None:
                _fail("failures", f"a draw at t={t:g} is {d!r}; a failed draw must be a Failure value")
            if not isinstance(d, Failure) and not _same_kind(x, d):
                _fail("shape", f"a draw at t={t:g} is a {type(d).__name__}, but x is a {type(x).__name__}")
    every = [d for row in rows for d in row]
    if all(isinstance(d, Failure) for d in every):
        _fail("shape", f"every draw failed (first: {every[0].reason})")
    notes["shape"] = notes["failures"] = "ok"
    _check_t_range(sampler, x, t_hi, tokens, notes)
    again = _call("reproducible", "forward_reverse", _rows, sampler, x, ts, n,
                  np.random.default_rng(seed))
    if _key(again) != _key(rows):
        _fail("reproducible", f"forward_reverse(x, ts, n, default_rng({seed})) gave different draws on a "
                              "second call: draw all randomness from the rng passed in")
    notes["reproducible"] = "ok"
    varied = [i for i, row in enumerate(rows)
              if len({_key(d) for d in row if not isinstance(d, Failure)}) > 1]
    greedy = is_lm and sampler.settings.temperature == 0
    if greedy:
        notes["seed_changes"] = "skipped: greedy decoding (temperature 0) draws no randomness"
    elif not varied:
        notes["seed_changes"] = "skipped: every t gave a single outcome"
    else:
        other = _call("seed_changes", "forward_reverse", _rows, sampler, x, ts, n,
                      np.random.default_rng(seed + 1))
        if all(_key(other[i]) == _key(rows[i]) for i in varied):
            _fail("seed_changes", f"seeds {seed} and {seed + 1} gave the same draws at t={ts[varied[0]]:g}, "
                                  "where the draws vary: the rng passed in is ignored")
        notes["seed_changes"] = "ok"
    i_hi = int(np.argmax(ts))
    _check_iid(rows[i_hi], ts[i_hi], notes)
    if is_lm:
        _check_lm(sampler, x, ts, rows, n, seed, prompt, text, notes)
    return notes


def _count(obj: Any) -> str:
    try:
        return str(len(obj))
    except TypeError:
        return f"a {type(obj).__name__} (no list)"


def _check_t_range(sampler: Any, x: Any, t_hi: float, tokens: bool, notes: dict[str, str]) -> None:
    """Times outside [0, t_hi] (and fractional tokens) are a CritwinError; t_hi itself was accepted."""
    bad = [-1.0, t_hi + 1.0, float("nan")] + ([0.5] if tokens and t_hi >= 1 else [])
    for t in bad:
        try:
            _rows(sampler, x, [t], 2, np.random.default_rng(0))
        except CritwinError:
            continue
        except Exception as err:  # the backend's own error: not the one-line message users need
            _fail("t_range", f"t={t:g} raised {first_line(err)}; reject it with a CritwinError")
        where = "outside [0, t_max]" if not (tokens and t == 0.5) else "not a whole number of tokens"
        _fail("t_range", f"t={t:g} is {where} (t_max = {t_hi:g}) but was accepted; raise a CritwinError")
    notes["t_range"] = "ok"


def _check_lm(
    s: Any, x: Response, ts: list[float], rows: list[list[Any]], n: int, seed: int, prompt: str, text: str,
    notes: dict[str, str],
) -> None:
    # -- attributes ---------------------------------------------------------------------------------------
    if s.time_unit != "tokens":
        _fail("lm.attributes", f"time_unit={s.time_unit!r}; a language model's t counts tokens ('tokens')")
    if not isinstance(s.settings, SamplingSettings):
        _fail("lm.attributes", f"settings is a {type(s.settings).__name__}, not a SamplingSettings")
    if not isinstance(s.chat, bool) or not isinstance(s.model_name, str):
        _fail("lm.attributes", "chat must be a bool and model_name a str")
    ctx = s.context_length
    if ctx is not None and (isinstance(ctx, bool) or not isinstance(ctx, int) or ctx < 1):
        _fail("lm.attributes", f"context_length={ctx!r}: give a positive int or None")
    if not isinstance(x, Response):
        _fail("lm.attributes", f"x is a {type(x).__name__}; a language model's samples are Responses")
    notes["lm.attributes"] = "ok"
    # -- text and tokens ----------------------------------------------------------------------------------
    pids, ptext = _call("lm.text", "encode_prompt", s.encode_prompt, prompt)
    if not pids or not all(isinstance(i, int) for i in pids) or not isinstance(ptext, str):
        _fail("lm.text", "encode_prompt must give (a non-empty tuple of int ids, the text the model sees)")
    for t in (text, x.response_text):
        ids = _call("lm.text", "encode_text", s.encode_text, t)
        back = s.decode(ids)
        if back != t:
            _fail("lm.text", f"decode(encode_text({t!r})) = {back!r}")
        ids2, spans = _call("lm.text", "encode_with_offsets", s.encode_with_offsets, t)
        if tuple(ids2) != tuple(ids) or len(spans) != len(ids):
            _fail("lm.text", f"encode_with_offsets({t!r}) disagrees with encode_text")
        ends = s.token_ends(t)
        if list(ends) != [b for _, b in spans] or any(not 0 <= a <= b <= len(t) for a, b in spans):
            _fail("lm.text", f"token_ends({t!r}) = {ends} does not match the offsets {spans}")
        if t and (not ends or ends[-1] != len(t) or list(ends) != sorted(ends)):
            _fail("lm.text", f"token_ends({t!r}) = {ends}: they must ascend and end at len(text) = {len(t)}")
    offs = s.char_offsets(x.response_ids)
    if len(offs) != x.length + 1 or offs[0] != 0 or offs[-1] != len(s.decode(x.response_ids)):
        _fail("lm.text", f"char_offsets gave {len(offs)} offsets from {offs[:1]} to {offs[-1:]}; need "
                         f"{x.length + 1} from 0 to len(decode(ids))")
    r = s.response_from_text(prompt, text)
    if not (isinstance(r, Response) and r.prompt_ids == tuple(pids)
            and r.response_ids == tuple(s.encode_text(text)) and r.response_text == text):
        _fail("lm.text", "response_from_text(prompt, text) must hold encode_prompt(prompt) and "
                         "encode_text(text)")
    if s.chat:
        chat = s.render_chat([{"role": "user", "content": prompt}], add_generation_prompt=True)
        if not isinstance(chat, str) or prompt not in chat:
            _fail("lm.text", "render_chat of a one-message chat does not contain the message")
    notes["lm.text"] = "ok"
    # -- original responses -------------------------------------------------------------------------------
    got = _call("lm.generate", "generate_responses", s.generate_responses, [prompt] * 3, seed=seed)
    if not isinstance(got, list) or len(got) != 3:
        _fail("lm.generate", f"generate_responses of 3 prompts gave {_count(got)} items")
    for g in got:
        if isinstance(g, Failure):
            continue
        if not isinstance(g, Response):
            _fail("lm.generate", f"generate_responses gave a {type(g).__name__}, not a Response or Failure")
        if g.prompt_ids != tuple(pids) or g.response_text != s.decode(g.response_ids):
            _fail("lm.generate", "a response lacks the prompt's ids or its decoded text")
        if g.length > s.settings.max_new_tokens or g.stop_reason not in _STOPS:
            _fail("lm.generate", f"a response has {g.length} tokens (max_new_tokens "
                                 f"{s.settings.max_new_tokens}) and stop reason {g.stop_reason!r}")
    if _key(s.generate_responses([prompt] * 3, seed=seed)) != _key(got):
        _fail("lm.generate", "generate_responses gave different responses for the same seed")
    g1 = s.generate_responses([prompt], seed=seed, temperature=0.0, max_new_tokens=4)
    g2 = s.generate_responses([prompt], seed=seed + 1, temperature=0.0, max_new_tokens=4)
    if _key(g1) != _key(g2) or (isinstance(g1[0], Response) and g1[0].length > 4):
        _fail("lm.generate", "greedy responses (temperature=0.0, max_new_tokens=4 overrides) depend on the "
                             "seed or exceed 4 tokens")
    notes["lm.generate"] = "ok"
    # -- forward–reverse ----------------------------------------------------------------------------------
    for t, row in zip(ts, rows, strict=True):
        kept = x.length - int(t)
        for d in row:
            if isinstance(d, Failure):
                continue
            same = d.prompt_ids == x.prompt_ids and d.response_ids[:kept] == x.response_ids[:kept]
            if not same or d.n_kept != kept:
                _fail("lm.forward_reverse", f"a draw at t={t:g} does not keep the prompt and the first "
                                            f"{kept} response tokens of x (n_kept)")
    many = _call("lm.forward_reverse", "resample_many", s.resample_many, [x, x], [ts, ts[:1]], 2,
                 np.random.default_rng(seed))
    shape_ok = (len(many) == 2 and [len(m) for m in many] == [len(ts), 1]
                and all(len(c) == 2 for m in many for c in m))
    if not shape_ok or not all(isinstance(c, Continuation | Failure) for m in many for cs in m for c in cs):
        _fail("lm.forward_reverse", "resample_many(xs, ts_per_x, n, rng) must give out[i][j] = n "
                                    "Continuations")
    notes["lm.forward_reverse"] = "ok"
    _check_score(s, x, prompt, pids, n, seed, notes)


def _check_score(
    s: Any, x: Response, prompt: str, pids: tuple[int, ...], n: int, seed: int, notes: dict[str, str]
) -> None:
    lp = _call("lm.score", "score", s.score, [x.prompt_ids], [x.response_ids])
    if len(lp) != 1 or np.shape(lp[0]) != (x.length,):
        _fail("lm.score", f"score of one completion of {x.length} tokens gave shape "
                          f"{[np.shape(v) for v in lp]}; need one log-probability per token")
    v = np.asarray(lp[0], dtype=float)
    if not np.all(np.isfinite(v)) or np.any(v > 1e-6):
        _fail("lm.score", f"log-probabilities must be finite and <= 0; got max {np.nanmax(v):.3g}")
    half = x.response_ids[: x.length // 2]
    both = s.score([x.prompt_ids, x.prompt_ids], [x.response_ids, half])
    alone = s.score([x.prompt_ids], [half])
    if np.max(np.abs(np.asarray(both[0]) - v), initial=0) > 1e-4 or (
        np.max(np.abs(np.asarray(both[1]) - np.asarray(alone[0])), initial=0) > 1e-4
    ):
        _fail("lm.score", "scores of a completion change with the other completions of the batch (> 1e-4)")
    # The greedy first token after the prompt is the most likely one, and exp(score) of it is its frequency
    # among n draws at temperature 1 (the token is chosen before those draws, so the test is unbiased).
    pids = list(pids)
    greedy = s.generate_responses([prompt], seed=seed, temperature=0.0, max_new_tokens=1)[0]
    if not isinstance(greedy, Response):
        notes["lm.score"] = "ok (greedy token checks skipped: the greedy draw failed)"
        return
    best = list(greedy.response_ids) if greedy.length else list(s.settings.eos_token_ids)
    if not best:
        notes["lm.score"] = "ok (greedy token checks skipped: it stopped without a token or an eos id)"
        return
    others = [i for i in dict.fromkeys(pids + list(x.response_ids)) if i not in best][:8]
    sc = s.score([pids] * (len(best) + len(others)), [[i] for i in best + others])
    lp_best = [float(a[0]) for a in sc[: len(best)]]
    if others:
        top, rest = max(lp_best), max(float(a[0]) for a in sc[len(best) :])
        if top < rest - 1e-5:
            _fail("lm.score", f"the greedy first token has log-probability {top:.4f} but another token "
                              f"{rest:.4f}: score and decoding disagree")
    first = s.generate_responses([prompt] * n, seed=seed + 2, temperature=1.0, top_p=1.0, top_k=0,
                                 max_new_tokens=1, stop_strings=())
    done = [r for r in first if isinstance(r, Response)]
    if greedy.length:
        hits = sum(r.response_ids[:1] == tuple(best) for r in done)
    else:  # the greedy step was an eos: a draw that stopped at once
        hits = sum(r.length == 0 and r.stop_reason == "eos" for r in done)
    p = float(np.sum(np.exp(lp_best)))
    m = len(done)
    if m >= 8 and 0 < p < 1:
        z = (hits / m - p) / math.sqrt(p * (1 - p) / m)
        if abs(z) > Z_MAX:
            _fail("lm.score", f"the greedy first token came first in {hits} of {m} draws at temperature 1 "
                              f"but exp(score) = {p:.4f} (z = {z:.2f}, |z| > {Z_MAX}): score is not the "
                              "sampled distribution")
    notes["lm.score"] = "ok"
