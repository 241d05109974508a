"""The one table of parameter constraints (critwin.params): accepted values and the exact messages."""

from __future__ import annotations

import math

import numpy as np
import pytest

from critwin import params
from critwin.cli import checks
from critwin.errors import CritwinError


def _message(fn, *args, **kwargs) -> str:
    with pytest.raises(CritwinError) as err:
        fn(*args, **kwargs)
    return str(err.value)


@pytest.mark.parametrize(
    ("name", "value", "flag", "message"),
    [
        ("temperature", -1.0, "--temperature", "--temperature -1: use a finite value >= 0 (0 = greedy)"),
        ("temperature", math.inf, "--temperature", "--temperature inf: use a finite value >= 0 (0 = greedy)"),
        ("temperature", -1.0, None, "temperature=-1.0: use a finite value >= 0 (0 = greedy)"),
        ("top_p", 0.0, "--top-p", "--top-p 0: use a value in (0, 1]"),
        ("top_p", 2.0, None, "top_p=2.0: use a value in (0, 1]"),
        ("top_k", -1, None, "top_k=-1: use a whole number >= 0 (0 = off)"),
        ("k", 0, "--k", "--k 0: use a whole number >= 1"),
        ("k", True, None, "k=True: use a whole number >= 1"),
        ("n", 2.5, None, "n=2.5: use a whole number >= 1"),
        ("n", "3", None, "n='3': use a whole number >= 1"),
        ("seed", -1, "--seed", "--seed -1: use a whole number >= 0"),
        ("dense_step", 0, "--dense-step", "--dense-step 0: use a whole number of tokens >= 1"),
        ("level", 1.5, "--level", "--level 1.5: use a value in (0, 1)"),
        ("level", 1.0, None, "level=1.0: use a value in (0, 1)"),
        ("min_jump", -0.1, None, "min_jump=-0.1: use a difference of probabilities in [0, 1]"),
        ("paper_threshold", 0.0, "--paper-threshold", "--paper-threshold 0: use a value in (0, 1]"),
        ("fraction", float("nan"), None, "fraction=nan: use a value in [0, 1]"),
    ],
)
def test_bad_values_get_the_one_message(name, value, flag, message):
    assert _message(params.check, name, value, flag) == message


def test_good_values_pass_through_unchanged():
    for name, value in [("temperature", 0.0), ("top_p", 1.0), ("k", np.int64(4)), ("seed", 0),
                        ("level", 0.99), ("min_jump", 0.0), ("fraction", 1.0), ("n_boot", 0)]:
        assert params.check(name, value) is value


def test_builders_cover_parameters_outside_the_table():
    assert _message(params.whole_number(2).check, 1, "n_terms") == "n_terms=1: use a whole number >= 2"
    assert _message(params.unit_interval(open_low=False, open_high=True).check, 1.0, "q", "--q") == (
        "--q 1: use a value in [0, 1)"
    )
    with pytest.raises(CritwinError, match="parameter 'nope' has no constraint"):
        params.check("nope", 1)


def test_cli_checks_keep_their_messages():
    assert _message(checks.whole, 0, "--batch-size") == "--batch-size 0: use a whole number >= 1"
    assert _message(checks.whole, -5, "--n-boot", 0) == "--n-boot -5: use a whole number >= 0"
    assert _message(checks.probability, 0.0, "--level", open_high=True) == "--level 0: use a value in (0, 1)"
    assert _message(checks.probability, 1.5, "--q", open_low=False) == "--q 1.5: use a value in [0, 1]"
    assert _message(checks.sampling, -2.0, 0.9) == "--temperature -2: use a finite value >= 0 (0 = greedy)"
    assert _message(checks.sampling, 1.0, 0.0) == "--top-p 0: use a value in (0, 1]"
    assert checks.whole(3, "--k") == 3 and checks.probability(0.5, "--level") == 0.5
