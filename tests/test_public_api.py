"""`import critwin as cw` is the one import a user needs: every promised name resolves to what it says, and
importing the package stays light."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import critwin as cw

PROMISED = ("scan", "Curve", "detect_windows", "Window", "load_sampler", "run", "schedules", "strategies",
            "runners", "RunDir", "Failure", "check_sampler", "t_before", "t_after", "critical_window",
            "staircase", "theorem_bound")


def test_every_promised_name_resolves_even_after_the_submodules_load():
    import critwin.curves  # noqa: F401  (a submodule named like a function must not shadow it)
    import critwin.driver  # noqa: F401
    import critwin.experiments.base  # noqa: F401

    assert set(PROMISED) <= set(cw.__all__)
    for name in cw.__all__:
        assert getattr(cw, name) is not None, name
    assert inspect.isfunction(cw.scan) and inspect.isfunction(cw.run) and inspect.isclass(cw.Curve)
    assert cw.scan is critwin.curves.scan and cw.run is critwin.driver.run
    assert inspect.ismodule(cw.schedules) and inspect.ismodule(cw.strategies) and inspect.ismodule(cw.runners)
    assert cw.strategies.Fixed and cw.runners.Local and cw.schedules.PAPER_FRACTIONS
    assert sorted(cw.__dir__()) == sorted(cw.__all__)


def test_unknown_names_are_attribute_errors():
    try:
        cw.no_such_thing  # noqa: B018
    except AttributeError as err:
        assert "no_such_thing" in str(err)
    else:
        raise AssertionError("critwin.no_such_thing resolved")


def test_import_critwin_loads_no_torch_pandas_or_matplotlib():
    heavy = "('torch', 'transformers', 'pandas', 'matplotlib')"
    code = ("import sys, json, critwin; import critwin.samplers.lm, critwin.samplers.registry; "
            f"print(json.dumps([m for m in {heavy} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []
