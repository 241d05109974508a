"""One table of the constraints on the parameters that recur across commands, configs and functions.

`check(name, value, flag)` raises the one-line CritwinError every caller shares: with a command-line
`flag` it reads "--top-p 0: use a value in (0, 1]" (floats shown with :g), without one it names the
parameter as in Python, "top_p=0: use a value in (0, 1]". `whole_number(low)` and `unit_interval(...)`
build the constraint of a parameter that is not in the table (same messages).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from critwin.errors import CritwinError


@dataclass(frozen=True)
class Constraint:
    """A test on one value and the phrase that says what it accepts ("a whole number >= 1")."""

    test: Callable[[Any], bool]
    need: str

    def ok(self, value: Any) -> bool:
        """Whether `value` satisfies the constraint (a value of the wrong type does not)."""
        try:
            return bool(self.test(value))
        except (TypeError, ValueError):
            return False

    def check(self, value: Any, name: str, flag: str | None = None) -> Any:
        """`value` when it satisfies the constraint, else a CritwinError: "{flag} {value}: use {need}"
        with a command-line flag ("--k"), "{name}={value}: use {need}" without one."""
        if self.ok(value):
            return value
        if flag is not None:
            shown = f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {_text(value)}"
        else:
            shown = f"{name}={_text(value)}"
        raise CritwinError(f"{shown}: use {self.need}")


def _text(value: Any) -> str:
    return str(value) if isinstance(value, numbers.Number) else repr(value)


def _is_whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def whole_number(low: int, need: str | None = None) -> Constraint:
    """Whole numbers >= `low` (bools are refused); `need` replaces the phrase "a whole number >= low"."""
    return Constraint(lambda v: _is_whole(v) and v >= low, need or f"a whole number >= {low}")


def unit_interval(*, open_low: bool = True, open_high: bool = False, need: str | None = None) -> Constraint:
    """Finite numbers in the unit interval, each end open or closed as given; `need` replaces the phrase
    "a value in (0, 1]"."""

    def test(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            return False
        return (v > 0 if open_low else v >= 0) and (v < 1 if open_high else v <= 1)

    interval = f"{'(' if open_low else '['}0, 1{')' if open_high else ']'}"
    return Constraint(test, need or f"a value in {interval}")


def _finite_at_least_zero(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, numbers.Real) and math.isfinite(v) and v >= 0


_COUNT = whole_number(1)
_COUNT0 = whole_number(0)
_OPEN = unit_interval(open_high=True)

#: Named constraints: the parameter names of the configs and functions (flags are spelled from them).
PARAMS: dict[str, Constraint] = {
    # sampling
    "temperature": Constraint(_finite_at_least_zero, "a finite value >= 0 (0 = greedy)"),
    "top_p": unit_interval(),
    "top_k": whole_number(0, "a whole number >= 0 (0 = off)"),
    "max_new_tokens": _COUNT,
    "seed": _COUNT0,
    # how much to draw
    "n": _COUNT,
    "k": _COUNT,
    "batch_size": _COUNT,
    "n_boot": _COUNT0,
    "top": _COUNT,
    "min_count": _COUNT,
    "limit": _COUNT,
    "threads": _COUNT,
    "step": _COUNT,
    "dense_step": whole_number(1, "a whole number of tokens >= 1"),
    "error_tolerance": whole_number(0, "a number of tokens >= 0"),
    # statistics
    "level": _OPEN,
    "ci_level": _OPEN,
    "min_jump": unit_interval(open_low=False, need="a difference of probabilities in [0, 1]"),
    "paper_threshold": unit_interval(),
    # cuts
    "fraction": unit_interval(open_low=False),
}


def check(name: str, value: Any, flag: str | None = None) -> Any:
    """`value` when it satisfies the constraint `PARAMS[name]`, else a one-line CritwinError naming `flag`
    (a command-line flag such as "--top-p") or, without one, the parameter `name`."""
    try:
        constraint = PARAMS[name]
    except KeyError:
        raise CritwinError(f"parameter {name!r} has no constraint; use one of {', '.join(PARAMS)}") from None
    return constraint.check(value, name, flag)


def parts_from_flat(
    settings: Mapping[str, Any], parts: Mapping[str, type], top: Sequence[str], what: str
) -> dict[str, Any]:
    """Keyword arguments of a config made of settings parts, from flat settings (the CLI's and
    config.json's form): each name goes to the part (a dataclass in `parts`, by attribute name) that has
    that field, or stays top-level when listed in `top`; an unknown name is a one-line CritwinError naming
    the `what` ("reasoning setting 'levle' is unknown")."""
    grouped: dict[str, dict[str, Any]] = {name: {} for name in parts}
    out: dict[str, Any] = {}
    for key, value in settings.items():
        home = next((n for n, part in parts.items() if key in part.__dataclass_fields__), None)
        if home is not None:
            grouped[home][key] = value
        elif key in top:
            out[key] = value
        else:
            raise CritwinError(f"{what} setting {key!r} is unknown")
    return {**out, **{name: parts[name](**kw) for name, kw in grouped.items()}}
