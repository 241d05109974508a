"""The testbed experiment (`critwin.experiments.testbed`): chain, ring classes, grids, the exact curve
against Monte Carlo of the samplers, coverage and agreement, and runs through the driver (journal,
resume)."""

from __future__ import annotations

import doctest
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import critwin.experiments.testbed as testbed_module
from critwin.driver import latest_records, run
from critwin.errors import CritwinError
from critwin.experiments.testbed import (
    TestbedExperiment,
    agreement,
    coverage_points,
    exact_values,
    not_findable,
    result_of,
    ring_partition,
    run_testbed,
    scan_chain,
    scan_grid,
    spec_fingerprint,
)
from critwin.features.base import MixtureClass
from critwin.rundir import RunDir
from critwin.samplers.discrete import DiscreteMixtureSampler, SequenceClass
from critwin.samplers.gaussian import GaussianMixtureSampler
from critwin.samplers.gaussian import exact_curve as gaussian_exact_curve
from critwin.strategies import StrategySettings
from critwin.theory.spec import load_spec, parse_spec
from critwin.theory.windows import Edge, TheoryWindow

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "theory"
P_MIN = 1e-4


def spec_of(name: str):
    return load_spec(FIXTURES / name)


# ---- what the spec defines ---------------------------------------------------------------------------------
def test_chain_comes_from_the_spec_or_its_first_pair():
    assert scan_chain(spec_of("hierarchy.yaml")) == [(0,), (0, 1), (0, 1, 2, 3)]
    # No chain: [targ, init] and everything, since init {0, 1} is not all three components.
    assert scan_chain(spec_of("issue_example.json")) == [(0,), (0, 1), (0, 1, 2)]
    mix = {"kind": "gaussian", "means": [[0], [5]], "weights": [0.5, 0.5]}
    assert scan_chain(parse_spec({"mixture": mix, "eps": 0.1, "pairs": [{"targ": [0], "init": [0, 1]}]})) == [
        (0,), (0, 1)]
    assert scan_chain(parse_spec({"mixture": mix, "eps": 0.1, "pairs": [{"targ": [0], "init": [0]}]})) == [
        (0,), (0, 1)]
    assert scan_chain(parse_spec({"mixture": mix, "eps": 0.1, "pairs": [{"targ": [0, 1], "init": [0, 1]}]})
                      ) == [(0, 1)]


def test_rings_partition_the_components_innermost_first():
    mix = spec_of("hierarchy.yaml").mixture
    rings = {"{A1}": (0,), "{A2}": (1,), "{B1, B2}": (2, 3)}
    assert ring_partition(mix, [(0,), (0, 1), (0, 1, 2, 3)]) == rings
    # A chain that stops short of everything gets the rest as its outermost ring.
    assert ring_partition(mix, [(0,), (0, 1)]) == rings
    assert ring_partition(mix, [(0, 1)]) == {"{A1, A2}": (0, 1), "{B1, B2}": (2, 3)}


def test_grids_per_time_unit():
    ou = scan_grid(spec_of("hierarchy.yaml").mixture)
    assert (ou.time_unit, ou.t_max, ou.resolution, ou.support) == ("ou", 10.0, 0.1, None)
    assert len(ou.dense) == 101 and ou.dense[3] == 0.3 and ou.dense[-1] == 10.0
    assert ou.initial == tuple(float(t) for t in range(11))
    assert scan_grid(spec_of("hierarchy.yaml").mixture, 2.5).initial == (0.0, 1.0, 2.0, 2.5)
    tokens = scan_grid(spec_of("truncation_token2.json").mixture)
    assert tokens.dense == tokens.support == (0.0, 1.0, 2.0, 3.0, 4.0, 5.0) == tokens.initial
    assert tokens.resolution == 1.0 and tokens.t_max == 5.0
    with pytest.raises(CritwinError, match="drop --t-max"):
        scan_grid(spec_of("truncation_token2.json").mixture, 4.0)
    mask = scan_grid(masking_spec().mixture)
    assert mask.t_max == 6.0 and len(mask.dense) == 61 and len(mask.initial) == 9
    assert mask.initial[0] == 0.0 and mask.initial[-1] == 6.0
    with pytest.raises(CritwinError, match="--t-max"):
        scan_grid(masking_spec().mixture, math.inf)


def masking_spec():
    return parse_spec({
        "mixture": {"kind": "discrete", "weights": [0.25, 0.25, 0.5], "labels": ["x", "y", "z"],
                    "components": [
            {"product": [[1, 0, 0], [0.5, 0.5, 0], [0.5, 0.5, 0]]},
            {"product": [[0, 1, 0], [0.5, 0.5, 0], [0.5, 0.5, 0]]},
            {"sequences": [[2, 2, 2]], "probs": [1.0]}]},
        "process": "masking", "eps": 0.1, "chain": [["x"], ["x", "y"], ["x", "y", "z"]]})


def test_fingerprint_follows_the_law_not_the_file():
    a = spec_of("issue_example.json")
    b = parse_spec(json.loads((FIXTURES / "issue_example.json").read_text()) | {"name": "renamed"})
    assert spec_fingerprint(a) == spec_fingerprint(b)
    c = parse_spec(json.loads((FIXTURES / "issue_example.json").read_text()) | {"eps": 0.2})
    assert spec_fingerprint(a) != spec_fingerprint(c)
    assert spec_fingerprint(spec_of("truncation_token2.json")) != spec_fingerprint(masking_spec())


# ---- exact curves ------------------------------------------------------------------------------------------
def test_collinear_means_reduce_exactly_to_one_dimension():
    # issue_example's means lie on the x axis with equal variances: quadrature on the line equals the 2-D
    # Monte Carlo exact curve within its standard errors.
    spec = spec_of("issue_example.json")
    mix = spec.mixture
    part = ring_partition(mix, scan_chain(spec))
    x = np.array([0.3, -0.7])
    ts = [0.0, 0.2, 1.0, 2.5, 5.0]
    line = exact_values(mix, x, ts, part)
    assert np.all(line.se == 0)
    mc = gaussian_exact_curve(mix, x, ts, part, n_mc=100_000, seed=1)
    assert np.all(np.abs(line.p - mc.p) <= 4 * mc.se + 1e-12)
    # A mean off the line needs Monte Carlo.
    off = parse_spec({"mixture": {"kind": "gaussian", "means": [[0, 0], [1, 0], [20, 1]], "weights": [0.25,
                      0.25, 0.5]}, "eps": 0.1, "pairs": [{"targ": [0], "init": [0, 1]}]})
    assert np.all(exact_values(off.mixture, x, [1.0], part, n_mc=2000).se > 0)


@pytest.mark.parametrize("method", ["posterior", "ddpm"])
def test_exact_curve_matches_the_gaussian_sampler(method):
    spec = spec_of("hierarchy.yaml")
    mix = spec.mixture
    part = ring_partition(mix, scan_chain(spec))
    feature = MixtureClass(mix, part)
    x = np.asarray(mix.means[0]) + np.array([0.4, -0.2])
    ts = [0.5, 1.5, 3.0, 5.0]
    exact = exact_values(mix, x, ts, part, n_mc=50_000, seed=2)
    n = 4000
    rows = GaussianMixtureSampler(mix, method=method).forward_reverse(x, ts, n, np.random.default_rng(3))
    ref = feature(x)
    for p, se, row in zip(exact.p, exact.se, rows, strict=True):
        k = sum(lab == ref for lab in feature.batch(row))
        # Binomial noise plus the Monte Carlo error of the exact value (and, for ddpm, its documented bias
        # of at most 0.008 at 100 steps).
        slack = 4 * math.sqrt(p * (1 - p) / n + se**2) + (0.01 if method == "ddpm" else 0.0)
        assert abs(k / n - p) <= slack, (p, k / n)


def test_exact_curve_matches_the_discrete_sampler():
    for spec in (spec_of("truncation_token2.json"), masking_spec()):
        mix = spec.mixture
        part = ring_partition(mix, scan_chain(spec))
        feature = SequenceClass(mix, part)
        sampler = DiscreteMixtureSampler(mix)
        x = sampler.sample(1, np.random.default_rng(0))[0]
        ts = [0.0, 1.0, 2.0, 3.0, 5.0]
        exact = exact_values(mix, x, ts, part)
        n = 3000
        rows = sampler.forward_reverse(x, ts, n, np.random.default_rng(4))
        ref = feature(x)
        for p, row in zip(exact.p, rows, strict=True):
            k = sum(lab == ref for lab in feature.batch(row))
            assert p == 1.0 and k == n or stats.binomtest(k, n, p).pvalue > P_MIN


# ---- grading -----------------------------------------------------------------------------------------------
def test_agreement_counts_hits_within_tolerance_and_false_windows():
    theory = [[None, 0.7], [1.3, 3.6]]
    assert agreement(theory, [[0.0, 0.5], [2.0, 3.0]], 0.1) == (1.0, 0)
    assert agreement(theory, [[0.75, 0.79]], 0.1) == (0.5, 0)  # 0.05 outside: still inside the tolerance
    assert agreement(theory, [[0.0, 3.0]], 0.1) == (1.0, 1)  # spans both: hits both, fits neither
    assert agreement(theory, [[5.0, 6.0]], 0.1) == (0.0, 1)
    assert agreement([], [[5.0, 6.0]], 0.1) == (None, 1)
    assert agreement([[2.0, 3.0]], [], 1.0) == (0.0, 0)


def test_windows_the_scan_cannot_find_say_why():
    def w(lo, hi):
        return TheoryWindow(None if lo is None else Edge.at(lo), None if hi is None else Edge.at(hi))

    assert not_findable(w(0.5, 2.0), 10.0) is None
    assert not_findable(w(None, 0.7), 10.0) is None
    assert "no T_before" in not_findable(w(0.5, None), 10.0)
    assert "already at t = 0" in not_findable(w(None, 0.0), 10.0)
    assert "cross" in not_findable(w(4.0, 0.0), 10.0)
    assert "past the scanned range" in not_findable(w(12.0, 14.0), 10.0)


def test_coverage_uses_confidence_sequences_for_adaptive_draws():
    from critwin.curves import Curve
    from critwin.samplers.gaussian import ExactCurve

    kept = [20, 14, 3]
    curve = Curve(t=[0, 1, 2], n_valid=[20, 20, 20], n_kept=kept, n_failed=[0, 0, 0],
                  label_counts=[{"a": k, "b": 20 - k} for k in kept], reference="a", time_unit="ou")
    truth = ExactCurve(np.array([0, 1, 2.0]), np.array([1.0, 0.45, 0.15]), np.zeros(3))
    points, wilson = coverage_points(curve, truth, 0.95, anytime=False)
    _, anytime = coverage_points(curve, truth, 0.95, anytime=True)
    assert wilson == pytest.approx(2 / 3) and anytime == 1.0  # 14/20 excludes 0.45 only at fixed n
    assert {k: v for k, v in points[1].items() if k not in ("ci_lo", "ci_hi")} == {
        "t": 1.0, "n": 20, "kept": 14, "p_hat": 0.7, "exact": 0.45, "exact_se": 0.0}
    assert points[1]["ci_lo"] > 0.45 and points[1]["ci_hi"] < 1
    # A Monte Carlo exact value counts within 3 of its standard errors.
    _, widened = coverage_points(curve, ExactCurve(truth.t, truth.p, np.array([0, 0.05, 0])), 0.95, False)
    assert widened == 1.0


# ---- the experiment ----------------------------------------------------------------------------------------
def test_settings_are_checked_before_any_work():
    spec = spec_of("hierarchy.yaml")
    with pytest.raises(CritwinError, match="smaller than one draw per initial point"):
        TestbedExperiment(spec, StrategySettings("adaptive", budget=3))
    with pytest.raises(CritwinError, match="Gaussian mixtures only"):
        TestbedExperiment(spec_of("truncation_token2.json"), method="ddpm")
    with pytest.raises(CritwinError, match="--sampler"):
        TestbedExperiment(spec, method="euler")
    with pytest.raises(CritwinError, match="--draws"):
        TestbedExperiment(spec, n=0)


def test_scanned_sample_is_a_seeded_draw_of_the_innermost_class():
    exp = TestbedExperiment(spec_of("issue_example.json"))
    feature = exp.feature()
    x, tries = exp.scanned_sample(feature)
    assert feature(x) == "{0}" and tries >= 1
    again, _ = TestbedExperiment(spec_of("issue_example.json")).scanned_sample(feature)
    assert np.array_equal(x, again)
    other, _ = TestbedExperiment(spec_of("issue_example.json"), seed=1).scanned_sample(feature)
    assert not np.array_equal(x, other)


def test_run_case_returns_draws_without_a_journal_and_none_with_one():
    from critwin.experiments.base import CaseJournal
    from critwin.seeds import case_rng

    exp = TestbedExperiment(spec_of("truncation_token2.json"), StrategySettings("fixed"), n=16)
    (case,) = exp.cases()
    plain = exp.run_case(exp.sampler(), case, case_rng(0, case.id))
    assert plain.draws and sum(len(r) for d in plain.draws for r in d.labels) == plain.record["draws"] == 96
    stored: dict = {}
    journal = CaseJournal({}, lambda call, draws: stored.__setitem__(call, draws))
    journaled = exp.run_case(exp.sampler(), case, case_rng(0, case.id), journal=journal)
    assert journaled.draws == () and list(stored) == [0]
    assert result_of(dict(journaled.record)) == result_of(dict(plain.record))
    # A replayed journal gives the same result without drawing.
    replayed = exp.run_case(exp.sampler(), case, case_rng(0, case.id), journal=CaseJournal(stored, None))
    assert result_of(dict(replayed.record)) == result_of(dict(plain.record))


def test_run_through_the_driver_resumes_and_stores_a_report_ready_case(tmp_path):
    exp = TestbedExperiment(spec_of("truncation_token2.json"), StrategySettings("adaptive"), label="t2")
    first = run(exp, exp.sampler(), out=tmp_path / "run")
    assert (first.n_computed, first.n_failed) == (1, 0)
    rundir = RunDir.open(first.out)
    record = latest_records(rundir, "records")["testbed"]
    direct = run_testbed(spec_of("truncation_token2.json"), StrategySettings("adaptive"))
    assert result_of(record) == direct
    (case,) = rundir.cases()
    assert case.curve is not None and len(case.curve) == len(direct["points"])
    assert [[w.t_lo, w.t_hi] for w in case.detected] == direct["detected_windows"]
    assert case.exact is not None and [w.lo for w in case.theory] == [2.0, 4.0]
    same = TestbedExperiment(spec_of("truncation_token2.json"), StrategySettings("adaptive"), label="t2")
    again = run(same, out=tmp_path / "run")
    assert (again.n_resumed, again.n_computed) == (1, 0)
    with pytest.raises(CritwinError, match="other settings"):
        other = TestbedExperiment(spec_of("truncation_token2.json"), StrategySettings("fixed"))
        run(other, out=tmp_path / "run")


def test_docstring_examples_run():
    result = doctest.testmod(testbed_module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 1 and result.failed == 0
