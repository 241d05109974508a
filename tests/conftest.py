"""Shared test set-up: one torch thread per test, and a guard that fails any test which leaves global
torch state changed (a leaked `set_grad_enabled(False)` once broke every later training test in the same
worker, and only on machines without cached models)."""

import os
from pathlib import Path

# Caches the libraries would keep in the home or temp folder go inside the checkout (`make test` empties
# .test-cache/ first), so no run can lean on what an earlier one left behind. Set before they are imported.
_CACHE = Path(os.environ.get("CRITWIN_TEST_CACHE") or Path(__file__).resolve().parents[1] / ".test-cache")
os.environ.setdefault("HF_HOME", str(_CACHE / "hf"))
os.environ.setdefault("MPLCONFIGDIR", str(_CACHE / "mpl"))

import pytest  # noqa: E402
import torch  # noqa: E402

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op torch thread per test: the suite runs two workers on two cores, the models are tiny,
    and more threads only add contention on a busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def torch_global_state() -> dict:
    """The process-wide torch settings a test must leave as it found them."""
    return {
        "grad_enabled": torch.is_grad_enabled(),
        "inference_mode": torch.is_inference_mode_enabled(),
        "num_threads": torch.get_num_threads(),
        "default_dtype": torch.get_default_dtype(),
    }


_UNDO: list = []


@pytest.fixture(autouse=True)
def torch_state_guard(one_thread):
    """Fail the test (at teardown) when it changed global torch state, and put the state back so that the
    tests after it in the same worker are not affected."""
    before = torch_global_state()
    yield
    after = torch_global_state()
    if after == before:
        return
    if after["inference_mode"] and not before["inference_mode"]:
        # Inference mode is a C++ guard that only its own context can close; an inner
        # inference_mode(False) context, kept open for the rest of the worker, undoes it.
        _UNDO.append(torch.inference_mode(False))
        _UNDO[-1].__enter__()
    torch.set_grad_enabled(before["grad_enabled"])
    torch.set_num_threads(before["num_threads"])
    torch.set_default_dtype(before["default_dtype"])
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    pytest.fail(f"test left global torch state changed (before, after): {changed}", pytrace=False)
