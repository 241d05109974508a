"""Every public function and class of the API has a runnable example in its docstring, and every example is
right: each module's doctests run here (issue 11, item 10), so a wrong example fails the suite."""

from __future__ import annotations

import doctest
import importlib

import pytest

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

#: module -> the public names whose docstrings carry an example.
EXAMPLES = {
    "critwin.windows": ("detect_windows", "paper_rule_windows", "Window"),
    "critwin.schedules": (
        "cut_positions",
        "ts_from_fractions",
        "fraction_kept",
        "kept_positions",
        "ou_grid",
        "token_grid",
        "prefill_cuts",
    ),
    "critwin.strategies.fixed": ("Fixed",),
    "critwin.strategies.critical": ("CriticalBisect",),
    "critwin.strategies.base": ("Request",),
    "critwin.runners.local": ("Local",),
    "critwin.samplers.registry": ("load_sampler", "sampler_kinds", "register_sampler"),
    "critwin.samplers.lm": ("Response", "SamplingSettings"),
    "critwin.conformance": ("check_sampler",),
    "critwin.stats": (
        "wilson_interval",
        "clopper_pearson_interval",
        "newcombe_interval",
        "holm_reject",
        "auc_variance",
        "auc_interval",
        "min_negatives",
        "quantile_ranks",
        "tpr_at_fpr_interval",
        "percentile_interval",
    ),
    "critwin.theory.windows": (
        "t_before",
        "t_after",
        "critical_window",
        "staircase",
        "theorem_bound",
        "pointwise_bound",
    ),
    "critwin.theory.gaussian": ("GaussianMixture",),
    "critwin.theory.discrete": ("DiscreteMixture",),
    "critwin.theory.forward_reverse": ("forward_reverse_law",),
    "critwin.theory.tv": ("tv_exact",),
    "critwin.theory.fullcov": ("FullCovGaussianMixture", "class_windows"),
    "critwin.theory.speciation": ("Speciation", "speciation_time", "speciation_step"),
}


@pytest.mark.parametrize("module_name", sorted(EXAMPLES))
def test_docstring_examples_run(module_name):
    module = importlib.import_module(module_name)
    names = EXAMPLES[module_name]
    tests = {t.name: t for t in doctest.DocTestFinder().find(module) if t.examples}
    missing = [n for n in names if f"{module_name}.{n}" not in tests]
    assert not missing, f"{module_name}: no docstring example for {missing}"

    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in tests.values():
        runner.run(test, out=report.append)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, "".join(report)
    assert results.attempted >= len(names)


def test_every_public_export_listed_here_exists():
    """The names above are the public API's (a renamed function must take its example along)."""
    import critwin

    for module_name, names in EXAMPLES.items():
        module = importlib.import_module(module_name)
        for name in names:
            assert getattr(module, name).__module__ == module_name, f"{module_name}.{name}"
    # Through the defining modules, not `critwin.<name>`: that caches the name in the package, where
    # `critwin.curves` the function would then shadow the module.
    exported = {
        n
        for n, m in critwin._EXPORTS.items()
        if (m in EXAMPLES or m == "critwin.theory")
        and getattr(importlib.import_module(m), n).__module__ in EXAMPLES
    }
    covered = {n for names in EXAMPLES.values() for n in names}
    assert exported <= covered, f"public names without an example: {sorted(exported - covered)}"
