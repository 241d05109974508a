"""The suite's own guards: leaked global torch state fails the test that leaked it, and test caches
never live in the shared temp dir."""

from __future__ import annotations

import os
from pathlib import Path

import _tiny_models
import pytest

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()


@pytest.mark.parametrize(
    "leak",
    [
        "torch.set_grad_enabled(False)",
        "torch.set_num_threads(3)",
        "torch.set_default_dtype(torch.float64)",
        "global CTX; CTX = torch.inference_mode(); CTX.__enter__()",
    ],
)
def test_guard_fails_a_test_that_leaks_torch_state(pytester, leak):
    pytester.makeconftest(CONFTEST.replace('pytest_plugins = ["pytester"]', ""))
    pytester.makepyfile(
        f"""
        import torch

        def test_leaks():
            {leak}

        def test_after_sees_clean_state():
            assert torch.is_grad_enabled()
            assert not torch.is_inference_mode_enabled()
            assert torch.get_default_dtype() == torch.float32
            assert torch.get_num_threads() == 1
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.parseoutcomes() == {"passed": 2, "errors": 1}
    result.stdout.fnmatch_lines(["*left global torch state changed*"])


def test_guard_passes_a_clean_test(pytester):
    pytester.makeconftest(CONFTEST.replace('pytest_plugins = ["pytester"]', ""))
    pytester.makepyfile(
        """
        import torch

        def test_clean():
            with torch.inference_mode():
                torch.ones(2).sum()
            torch.set_num_threads(torch.get_num_threads())
        """
    )
    assert pytester.runpytest("-p", "no:cacheprovider").parseoutcomes() == {"passed": 1}


def test_test_caches_live_inside_the_checkout(monkeypatch, tmp_path):
    checkout = Path(__file__).resolve().parents[1]
    monkeypatch.delenv("CRITWIN_TEST_CACHE", raising=False)
    assert checkout in _tiny_models._cache_root().resolve().parents
    for var in ("HF_HOME", "MPLCONFIGDIR"):
        assert checkout in Path(os.environ[var]).resolve().parents, var
    if os.environ.get("CRITWIN_TEST_CACHE"):  # under `make test`: pytest's temp folders too
        assert checkout in tmp_path.resolve().parents


def test_test_folders_mirror_the_source_tree():
    """tests/<pkg>/ holds the tests of critwin/<pkg>/ (fixtures aside); top-level tests, top-level modules."""
    tests = Path(__file__).resolve().parent
    src = tests.parent / "src" / "critwin"
    folders = {p.name for p in tests.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}
    folders -= {"fixtures"}
    assert folders and all((src / name / "__init__.py").is_file() for name in folders), folders
    names = [p.name for p in tests.rglob("test_*.py")]
    assert len(names) == len(set(names))  # one module name per test file (pytest's default import mode)
