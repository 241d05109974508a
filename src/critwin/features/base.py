"""The `Feature` protocol and the features of the exact testbeds.

A feature maps one sample to a hashable label, or to None when the sample cannot be read (an unparseable
item: counted as failed by `critwin.curves.scan`, never as an outcome). Labels that go to disk must be str,
int, float, bool or tuples of these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from critwin.errors import CritwinError
from critwin.theory.classes import check_partition, classify
from critwin.types import Feature

__all__ = ["ChoiceFeature", "Feature", "MixtureClass"]

if TYPE_CHECKING:  # annotations only: features never need the toy sampler at run time
    from critwin.samplers.toy_lm import ToyLanguage


class MixtureClass:
    """Bayes class of a Gaussian-mixture sample: argmax over the classes c of `partition` of
    Σ_{k∈c} w_k N(x; μ_k, σ_k² I). partition maps class name -> component indices (default: one class per
    component, named by the mixture's labels); use groups of components for a coarser feature."""

    def __init__(self, mixture: Any, partition: Mapping[str, Sequence[int]] | None = None):
        self.mixture = mixture
        self.partition = check_partition(mixture, partition)
        self.names = tuple(self.partition)

    def __call__(self, sample: Any) -> str | None:
        x = np.asarray(sample, dtype=float).reshape(1, -1)
        if not np.all(np.isfinite(x)):
            return None  # a diverged sample is unreadable, not an outcome
        return self.names[int(classify(self.mixture, x, self.partition)[0])]

    def batch(self, samples: list[Any]) -> list[str | None]:
        """Labels of many samples at once (same as calling the feature on each)."""
        x = np.asarray(samples, dtype=float).reshape(len(samples), -1)
        finite = np.all(np.isfinite(x), axis=1)
        idx = classify(self.mixture, np.where(finite[:, None], x, 0.0), self.partition)
        return [self.names[int(i)] if f else None for i, f in zip(idx, finite, strict=True)]


class ChoiceFeature:
    """The options chosen at the named choice points of a toy-language text: the option name for one
    choice, a tuple of option names for several; None if the text is not a text of the language."""

    def __init__(self, language: ToyLanguage, names: str | Sequence[str]):
        self.language = language
        self.names = (names,) if isinstance(names, str) else tuple(names)
        if not self.names:
            raise CritwinError("ChoiceFeature: name at least one choice point")
        for n in self.names:
            language.choice(n)  # raises on unknown names

    def __call__(self, sample: Any) -> str | tuple[str, ...] | None:
        parsed = self.language.parse(sample)
        if parsed is None:
            return None
        values = tuple(parsed[n] for n in self.names)
        return values[0] if len(values) == 1 else values

    def batch(self, samples: list[Any]) -> list[str | tuple[str, ...] | None]:
        """Labels of many texts at once (same as calling the feature on each)."""
        return [self(s) for s in samples]
