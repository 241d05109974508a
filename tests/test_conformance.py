"""`critwin.conformance.check_sampler` passes on every registered backend and names the check a broken
sampler fails."""

from __future__ import annotations

import numpy as np
import pytest

from critwin.conformance import ConformanceError, check_sampler
from critwin.errors import CritwinError
from critwin.samplers import load_sampler, sampler_kinds
from critwin.samplers.gaussian import GaussianMixtureSampler
from critwin.samplers.toy_lm import ToyLMSampler, demo_language
from critwin.types import Failure

# Settings per registered kind that keep a check fast; a kind missing here is checked with its defaults
# (never skipped). Temperature 1 keeps the language model's draws varied, so every check has power.
SETTINGS = {
    "hf": [dict(max_new_tokens=24, temperature=1.0, top_p=1.0), dict(max_new_tokens=16, temperature=0.0)],
    "gaussian": [{}, dict(method="ddpm", steps=25)],
    "toy_lm": [{}],
    "diffusers": [dict(steps=20)],  # the bundled digit DDPM on a 20-step grid
}
DRAWS = {"hf": 100}  # draws per t (the checks' tolerances follow from it)
# Engines that start a vLLM engine or need a server are checked where one runs for the whole module (and
# where check_sampler is called on them): tests/samplers/test_vllm_engine.py, test_openai_api.py.
ENGINE_TESTS = {"vllm": "test_vllm_engine.py", "openai": "test_openai_api.py"}
CASES = [(k, kw) for k in sampler_kinds() if k not in ENGINE_TESTS for kw in SETTINGS.get(k, [{}])]


def test_engines_left_out_here_are_checked_in_their_own_tests():
    from pathlib import Path

    for kind, name in ENGINE_TESTS.items():
        if kind in sampler_kinds():
            assert "check_sampler(" in (Path(__file__).parent / "samplers" / name).read_text()


@pytest.mark.parametrize(("kind", "settings"), CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES)])
def test_every_registered_backend_conforms(kind, settings):
    notes = check_sampler(load_sampler(kind, **settings), n=DRAWS.get(kind, 200), seed=0)
    assert {"attributes", "shape", "failures", "t_range", "reproducible", "seed_changes", "iid"} <= set(notes)
    if kind == "hf":
        assert {"lm.text", "lm.generate", "lm.forward_reverse", "lm.score"} <= set(notes)
    if settings.get("temperature") == 0.0:
        assert notes["seed_changes"].startswith("skipped: greedy")
    else:
        assert notes["seed_changes"] == notes["iid"] == "ok"


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_tiny_random_hf_models_conform(tmp_path, arch):
    from critwin.samplers.hf_tiny import save_tiny_model

    path = save_tiny_model(tmp_path / arch, arch=arch, seed=3)
    notes = check_sampler(load_sampler("hf", path, max_new_tokens=12, temperature=1.0, top_p=1.0), n=80)
    assert all(v == "ok" for v in notes.values()), notes


# ----------------------------------------------------------------------------------------------------------
# Broken samplers: each fails with the check it breaks named
# ----------------------------------------------------------------------------------------------------------
class _Toy:
    """A ToyLMSampler of the demo language, to break one rule at a time."""

    time_unit = "tokens"

    def __init__(self):
        self.inner = ToyLMSampler(demo_language())
        self.t_max = self.inner.t_max

    def sample(self, n, rng):
        return self.inner.sample(n, rng)

    def forward_reverse(self, x, ts, n, rng):
        return self.inner.forward_reverse(x, ts, n, rng)


class WrongRowCount(_Toy):
    def forward_reverse(self, x, ts, n, rng):
        return super().forward_reverse(x, ts, n, rng)[:-1]


class WrongDrawCount(_Toy):
    def forward_reverse(self, x, ts, n, rng):
        return [row[:-1] for row in super().forward_reverse(x, ts, n, rng)]


class SeedIgnored(_Toy):
    """Draws from a fresh unseeded generator: another call never repeats."""

    def forward_reverse(self, x, ts, n, rng):
        return super().forward_reverse(x, ts, n, np.random.default_rng())


class FixedSeed(_Toy):
    """Draws from one fixed seed whatever rng it is given."""

    def forward_reverse(self, x, ts, n, rng):
        return super().forward_reverse(x, ts, n, np.random.default_rng(1234))


class RaisesInsteadOfFailure(_Toy):
    def forward_reverse(self, x, ts, n, rng):
        if any(t > 0 for t in ts):
            raise RuntimeError("engine died (CUDA error)")
        return super().forward_reverse(x, ts, n, rng)


class NoneForFailure(_Toy):
    def forward_reverse(self, x, ts, n, rng):
        rows = super().forward_reverse(x, ts, n, rng)
        rows[-1][0] = None
        return rows


class TMaxTooLarge(_Toy):
    """Claims twice the t it supports."""

    def __init__(self):
        super().__init__()
        self.t_max = 2 * self.inner.t_max


class TMaxTooSmall(_Toy):
    """Claims a smaller t_max than the t it accepts."""

    def __init__(self):
        super().__init__()
        self.t_max = self.inner.t_max - 4


class AcceptsAnyT(_Toy):
    """Clips t into range instead of rejecting it."""

    def forward_reverse(self, x, ts, n, rng):
        L = self.inner.language.length
        return super().forward_reverse(x, [min(max(t, 0), L) if t == t else 0 for t in ts], n, rng)


class SortedDraws(_Toy):
    """Returns each t's draws sorted: one call's draws are no longer exchangeable."""

    def forward_reverse(self, x, ts, n, rng):
        return [sorted(row) for row in super().forward_reverse(x, ts, n, rng)]


class PairedDraws(_Toy):
    """Each draw is made twice in a row (half the independent draws it claims)."""

    def forward_reverse(self, x, ts, n, rng):
        rows = super().forward_reverse(x, ts, (n + 1) // 2, rng)
        return [[d for d in row for _ in range(2)][:n] for row in rows]


class RepeatedNoise(GaussianMixtureSampler):
    """A continuous backend that reuses one noise draw for two outputs."""

    def forward_reverse(self, x, ts, n, rng):
        rows = super().forward_reverse(x, ts, (n + 1) // 2, rng)
        return [[d for d in row for _ in range(2)][:n] for row in rows]


class NoTimeUnit:
    t_max = 1.0

    def forward_reverse(self, x, ts, n, rng):
        return [[x] * n for _ in ts]


@pytest.mark.parametrize(
    ("make", "check"),
    [
        (WrongRowCount, "shape"),
        (WrongDrawCount, "shape"),
        (SeedIgnored, "reproducible"),
        (FixedSeed, "seed_changes"),
        (RaisesInsteadOfFailure, "failures"),
        (NoneForFailure, "failures"),
        (TMaxTooLarge, "t_range"),
        (TMaxTooSmall, "t_range"),
        (AcceptsAnyT, "t_range"),
        (SortedDraws, "iid"),
        (PairedDraws, "iid"),
    ],
    ids=lambda v: v if isinstance(v, str) else v.__name__,
)
def test_broken_samplers_fail_the_check_they_break(make, check):
    with pytest.raises(ConformanceError) as err:
        check_sampler(make(), n=200)
    assert err.value.check == check
    assert f"check {check!r} failed" in str(err.value) and "\n" not in str(err.value)


def test_the_unbroken_wrapper_passes():
    assert all(v == "ok" for v in check_sampler(_Toy(), n=200).values())


def test_a_continuous_backend_that_reuses_noise_fails_iid():
    with pytest.raises(ConformanceError, match="are identical, but the samples are continuous") as err:
        check_sampler(RepeatedNoise(load_sampler("gaussian").mixture), n=200)
    assert err.value.check == "iid"


def test_missing_protocol_attributes_and_bad_arguments():
    with pytest.raises(ConformanceError) as err:
        check_sampler(NoTimeUnit(), x=np.zeros(1))
    assert err.value.check == "attributes"
    with pytest.raises(CritwinError, match="pass x="):
        check_sampler(type("FR", (), {"time_unit": "ou", "t_max": 1.0, "forward_reverse": lambda *a: []})())
    with pytest.raises(CritwinError, match="at least 8"):
        check_sampler(_Toy(), n=3)


def test_failures_as_values_pass():
    """A backend whose failed draws are Failure values (some, not all) conforms."""

    class SomeFail(_Toy):
        def forward_reverse(self, x, ts, n, rng):
            rows = super().forward_reverse(x, ts, n, rng)
            return [[Failure("out of memory") if j % 10 == 9 else d for j, d in enumerate(row)]
                    for row in rows]

    assert check_sampler(SomeFail(), n=200)["failures"] == "ok"


# ----------------------------------------------------------------------------------------------------------
# Broken language models
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundled():
    return load_sampler("hf", max_new_tokens=24, temperature=1.0, top_p=1.0)


def _subclass(sampler, cls):
    import copy

    other = copy.copy(sampler)
    other.__class__ = cls
    return other


def test_a_score_that_drops_the_last_prompt_token_fails(bundled):
    from critwin.samplers.hf import HFSampler

    class ShiftedScore(HFSampler):
        def score(self, prompts, completions, *, batch_size=None):
            return super().score([p[:-1] or p for p in prompts], completions, batch_size=batch_size)

    with pytest.raises(ConformanceError) as err:
        check_sampler(_subclass(bundled, ShiftedScore), n=100)
    assert err.value.check == "lm.score"


def test_a_forward_reverse_that_loses_the_prefix_fails(bundled):
    from critwin.samplers.hf import HFSampler
    from critwin.samplers.lm import Response

    class LosesPrefix(HFSampler):
        def forward_reverse(self, x, ts, n, rng):
            rows = super().forward_reverse(x, ts, n, rng)
            def drop(d):
                if not isinstance(d, Response) or not d.n_kept:
                    return d
                ids = d.response_ids[1:]
                return Response(d.prompt_ids, ids, d.prompt_text, self.decode(ids), d.stop_reason, d.n_kept)

            return [[drop(d) for d in row] for row in rows]

    with pytest.raises(ConformanceError) as err:
        check_sampler(_subclass(bundled, LosesPrefix), n=100)
    assert err.value.check == "lm.forward_reverse"


def test_generate_responses_that_ignore_overrides_fail(bundled):
    from critwin.samplers.hf import HFSampler

    class IgnoresOverrides(HFSampler):
        def generate_responses(self, prompts, *, seed=0, **overrides):
            return super().generate_responses(prompts, seed=seed)

    with pytest.raises(ConformanceError) as err:
        check_sampler(_subclass(bundled, IgnoresOverrides), n=100)
    assert err.value.check == "lm.generate"


def test_a_backend_that_streams_its_rows_conforms():
    """forward_reverse may yield one row per t: the checks read the stream as scan does."""
    inner = load_sampler("toy_lm")

    class Streaming:
        time_unit, t_max = inner.time_unit, inner.t_max

        def sample(self, n, rng):
            return inner.sample(n, rng)

        def forward_reverse(self, x, ts, n, rng):
            yield from inner.forward_reverse(x, ts, n, rng)

    notes = check_sampler(Streaming(), n=40)
    assert notes["shape"] == notes["reproducible"] == "ok"
