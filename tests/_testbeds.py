"""Small samplers and languages several test modules measure against exact truth."""

from __future__ import annotations

from critwin.samplers.toy_lm import Choice, Filler, ToyLanguage


class CoinSampler:
    """Each draw keeps the feature with probability p(t) = 1 - t / t_max (Bernoulli), from the generator it
    is given."""

    time_unit = "ou"
    t_max = 4.0

    def sample(self, n, rng):
        return [True] * n

    def forward_reverse(self, x, ts, n, rng):
        return [list(rng.random(n) < 1 - t / self.t_max) for t in ts]


def parity(sample: int) -> str:
    return "even" if sample % 2 == 0 else "odd"


def small_language() -> ToyLanguage:
    """Two dependent choices between fillers: small enough to enumerate every text."""
    return ToyLanguage(
        (
            Filler(1, ("a", "b")),
            Choice("c1", (("x",), ("y",)), (0.7, 0.3)),
            Filler(1, ("a", "b")),
            Choice(
                "c2", (("p", "q"), ("p", "r"), ("s", "q")), {"x": (0.2, 0.5, 0.3), "y": (0.6, 0.0, 0.4)}, "c1"
            ),
            Filler(1, ("a",)),
        )
    )
