"""What a strategy is: it decides which forward–reverse draws `critwin.curves.scan` makes next.

Forward time t grows with degradation (t = 0: the clean sample; t = t_max: full noise, or nothing of the
response kept). A scan asks its strategy for requests, makes the draws, pools them into the curve and asks
again with the curve so far, until the strategy answers with an empty sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from critwin.curves import Curve


@dataclass(frozen=True)
class Request:
    """Ask for n forward–reverse draws X' ~ p(· | Y_t) at forward time t (0 <= t <= t_max, n >= 1 whole;
    `scan` checks both and names the strategy when one is wrong).

    Example:
        A strategy of its own: 10 draws at both ends of the sample's range in the first round, then stop
        (on the toy language, with the topic token at position 2 as the feature):

        >>> import numpy as np
        >>> import critwin as cw
        >>> from critwin.strategies import Request
        >>> class Ends:
        ...     def propose(self, curve, t_max):
        ...         return [Request(0.0, 10), Request(t_max, 10)] if curve is None else []
        >>> sampler = cw.load_sampler("toy_lm")
        >>> x = sampler.sample(1, np.random.default_rng(0))[0]
        >>> curve = cw.scan(sampler, x, feature=lambda text: text[2], strategy=Ends())
        >>> curve.t.tolist(), curve.n_valid.tolist()
        ([0.0, 18.0], [10, 10])
    """

    t: float
    n: int


@runtime_checkable
class Strategy(Protocol):
    """Decides, round by round, where a scan draws and how many times.

    `propose(curve, t_max)` returns the requests of the next round; an empty sequence means stop.
    curve: the draws this scan has made so far (None before its first round; a curve handed to
    `scan(curve=...)` is pooled with the result at the end and is not shown here), so a strategy keeps no
    state of its own and one strategy object serves any number of samples. t_max: the largest forward
    time of the scanned sample (its own `t_max` when it has one, else the sampler's); t grows with
    degradation. Within one round each t appears at most once; requests with equal n are drawn in one
    batched sampler call, and later rounds may return to a t (the draws are pooled).
    """

    def propose(self, curve: Curve | None, t_max: float) -> Sequence[Request]: ...
