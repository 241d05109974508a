"""The exact testbed experiment (`critwin testbed SPEC`): scan a mixture of the theory's spec format with
any strategy and window rule, and grade the result against ground truth.

A spec (`critwin.theory.spec`: a Gaussian mixture under OU, or a discrete sequence mixture under
truncation or masking) defines everything:

- chain: the spec's "chain" (nested sets, innermost first), else the first pair's [targ, init], plus all
  components when init is not everything. The theory's windows are `critwin.theory.staircase` of it (in
  forward time: t grows with degradation).
- scanned sample x: a seeded draw from p^{innermost set}, redrawn (up to 1,000 times) until its Bayes class
  is the innermost set, so that the curve starts at the feature the staircase is about.
- feature: the Bayes class among the chain's rings S_m, S_{m−1}∖S_m, …, S_0∖S_1, Θ∖S_0 (innermost first),
  so that P(kept | x, t) falls from 1 to W(S_m)/W(S_{m−1}), to W(S_m)/W(S_{m−2}), … inside the windows.
- sampler: Gaussian: `GaussianMixtureSampler` (exact posterior, or numerical DDPM with the exact score);
  discrete: `DiscreteMixtureSampler` (exact, by enumeration).
- exact curve at the scanned t: Gaussian `critwin.samplers.gaussian.exact_curve` (quadrature in 1-D, and in
  any dimension when the variances are equal and the means lie on one line, since the problem then reduces
  exactly to that line; Monte Carlo with a standard error otherwise); discrete
  `critwin.samplers.discrete.exact_curve` (exact).
- grid: OU time up to t_max (default 10) at resolution 0.1 (fixed: every 0.1, adaptive: starts every 1.0);
  truncation every token 0..L (adaptive starts at ~9 evenly spaced tokens incl. 0 and L); masking time
  up to t_max (default 6) at resolution 0.1 (adaptive starts at 9 evenly spaced times).

`run_testbed` returns the JSON object of the command: theory and detected windows, draws, coverage of the
exact curve by the reported intervals (anytime-valid confidence sequences when the strategy chose its
draws adaptively, Wilson intervals otherwise), recall of the theory's windows and false windows.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from critwin.curves import Curve, scan
from critwin.errors import CritwinError
from critwin.experiments.base import Case, CaseJournal, CaseResult
from critwin.features.base import MixtureClass
from critwin.params import check
from critwin.rundir import theory_intervals
from critwin.samplers.discrete import DEFAULT_MASK_T_MAX, DiscreteMixtureSampler, SequenceClass
from critwin.samplers.discrete import exact_curve as discrete_exact_curve
from critwin.samplers.gaussian import ExactCurve, GaussianMixtureSampler
from critwin.samplers.gaussian import exact_curve as gaussian_exact_curve
from critwin.schedules import ou_grid, token_grid
from critwin.seeds import case_rng
from critwin.stats import confidence_sequence, wilson_interval
from critwin.strategies import StrategySettings
from critwin.theory import DiscreteMixture, GaussianMixture, staircase
from critwin.theory.spec import TheorySpec
from critwin.theory.windows import TheoryWindow
from critwin.windows import WindowRule, window_agreement

CASE_ID = "testbed"
DEFAULT_N = 64
DEFAULT_N_MC = 20_000
OU_T_MAX = 10.0
RESOLUTION = {"ou": 0.1, "mask": 0.1, "tokens": 1.0}
OU_INITIAL_STEP = 1.0
INITIAL_POINTS = 9
#: Standard errors by which an interval is widened before it is checked against a Monte Carlo exact value.
MC_WIDEN = 3.0
MAX_REDRAWS = 1000
SAMPLERS = ("posterior", "ddpm")

RESULT_KEYS = ("theory_windows", "detected_windows", "draws", "coverage", "strategy")


# ---- what the spec defines ---------------------------------------------------------------------------------
def scan_chain(spec: TheorySpec) -> list[tuple[int, ...]]:
    """The nested chain the testbed scans, innermost first: the spec's chain, else the first pair's
    [targ, init] plus all components when init is not everything (a single set when there is none)."""
    if spec.chain is not None:
        return [tuple(s) for s in spec.chain]
    mix = spec.mixture
    targ, init = spec.pairs[0]
    everything = tuple(range(mix.n_components))
    chain = [tuple(targ)]
    for s in (tuple(init), everything):
        if set(s) > set(chain[-1]):
            chain.append(s)
    return chain


def ring_partition(mix: Any, chain: Sequence[Sequence[int]]) -> dict[str, tuple[int, ...]]:
    """The chain's rings as named classes, innermost first: S_m, S_{m−1}∖S_m, …, Θ∖S_0 (empty rings
    left out), each named by its components' labels, e.g. "{A1}", "{B1, B2}"."""
    rings, inner = [], set()
    for s in [*chain, range(mix.n_components)]:
        ring = tuple(sorted(set(s) - inner))
        if ring:
            rings.append(ring)
        inner |= set(s)
    return {mix.describe(r): r for r in rings}


@dataclass(frozen=True)
class ScanGrid:
    """Where a testbed scan may draw: forward times up to `t_max` at `resolution` (the finest step of t;
    `support`: the allowed times when t is discrete), `dense` (every resolution: fixed, every-prefix) and
    `initial` (the first round of an adaptive search)."""

    time_unit: str
    t_max: float
    resolution: float
    support: tuple[float, ...] | None
    dense: tuple[float, ...]
    initial: tuple[float, ...]


def _evenly(t_max: float, resolution: float, points: int) -> tuple[float, ...]:
    ts = np.round(np.round(np.linspace(0.0, t_max, points) / resolution) * resolution, 10)
    return tuple(sorted({float(t) for t in ts} | {0.0, float(t_max)}))


def scan_grid(mix: Any, t_max: float | None = None) -> ScanGrid:
    """The grid of a testbed on `mix` (see the module docstring); t_max: the last OU / masking time."""
    unit = mix.time_unit
    res = RESOLUTION[unit]
    if unit == "tokens":
        if t_max is not None:
            raise CritwinError(
                f"--t-max {t_max:g}: a truncation testbed scans every token, t = 0..L (L = {mix.length}); "
                "drop --t-max"
            )
        dense = tuple(float(t) for t in token_grid(mix.length))
        return ScanGrid(unit, float(mix.length), res, dense, dense,
                           _evenly(float(mix.length), res, INITIAL_POINTS))
    default = OU_T_MAX if unit == "ou" else DEFAULT_MASK_T_MAX
    t_max = default if t_max is None else t_max
    if isinstance(t_max, bool) or not isinstance(t_max, int | float) or not (
        math.isfinite(t_max) and t_max >= res
    ):
        raise CritwinError(f"--t-max {t_max!r}: use a finite time >= {res:g} ({unit} time), e.g. {default:g}")
    t_max = float(t_max)
    dense = sorted({float(t) for t in ou_grid(t_max, res)} | {t_max})
    if unit == "ou":
        initial = sorted({float(t) for t in ou_grid(t_max, min(OU_INITIAL_STEP, t_max))} | {t_max})
    else:
        initial = list(_evenly(t_max, res, INITIAL_POINTS))
    return ScanGrid(unit, t_max, res, None, tuple(dense), tuple(initial))


def spec_fingerprint(spec: TheorySpec) -> str:
    """A short hash of what a spec defines (the mixture's law, ε, chain, pairs, Monte Carlo settings), so
    that a run directory is resumed only by the same testbed, whatever the file looked like."""
    mix = spec.mixture
    h = hashlib.sha256()
    head = {"eps": spec.eps, "pairs": [list(map(list, p)) for p in spec.pairs],
            "chain": None if spec.chain is None else [list(s) for s in spec.chain],
            "seed": spec.seed, "se_target": spec.se_target, "labels": list(mix.labels),
            "kind": type(mix).__name__, "process": getattr(mix, "process", None)}
    h.update(json.dumps(head, sort_keys=True).encode())
    arrays: list[np.ndarray] = [np.asarray(mix.weights, dtype=float)]
    if isinstance(mix, GaussianMixture):
        arrays += [np.asarray(mix.means, dtype=float), np.asarray(mix.variances, dtype=float)]
    else:
        digits, probs = mix.full_support()
        arrays += [np.asarray(digits, dtype=np.int64), np.asarray(probs, dtype=float)]
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def window_pair(w: TheoryWindow) -> list[float | None]:
    """[lo, hi] of a theory window in forward time; a missing or infinite edge is None."""

    def edge(e: Any) -> float | None:
        return None if e is None or not math.isfinite(e.t) else float(e.t)

    return [edge(w.lo), edge(w.hi)]


def not_findable(w: TheoryWindow, t_max: float) -> str | None:
    """Why the scan on [0, t_max] cannot find the theory window `w` (None when it can)."""
    lo, hi = window_pair(w)
    start = 0.0 if lo is None else lo
    if hi is None:
        return "S_targ never becomes indistinguishable from S_init (no T_before)"
    if hi <= start:
        if lo is None or lo <= 0:
            return "S_targ is within ε of S_init already at t = 0 (T_before = 0)"
        return f"its edges cross (T_after = {lo:g} >= T_before = {hi:g}): the theory predicts no window"
    if start >= t_max:
        return f"it starts at t = {start:g}, past the scanned range [0, {t_max:g}] (raise --t-max)"
    return None


def agreement(theory: Sequence[Sequence[float | None]], detected: Sequence[Sequence[float]], tol: float
              ) -> tuple[float | None, int]:
    """(recall, false windows): the share of theory windows [lo, hi] (None: open edge) that a detected
    window overlaps once widened by `tol`, and the number of detected windows that stick out of every
    theory window by more than `tol` (`critwin.windows.window_agreement`)."""
    widened = [(-math.inf if lo is None else lo - tol, math.inf if hi is None else hi + tol)
               for lo, hi in theory]
    agree = window_agreement(widened, [(float(a), float(b)) for a, b in detected])
    recall = None if not widened else float(np.mean([h > 0 for h in agree.hits]))
    return recall, int(sum(o > 1e-9 for o in agree.outside))


def _on_a_line(mix: GaussianMixture) -> tuple[np.ndarray, GaussianMixture] | None:
    """(u, the mixture projected on u) when the variances are equal and the means lie on one line with
    direction u: then OU noising, the posterior over components and the Bayes classes depend on x only
    through x·u, so the exact curve of the 1-D projection is the exact curve (by quadrature)."""
    mu, var = np.asarray(mix.means, dtype=float), np.asarray(mix.variances, dtype=float)
    if mix.dim == 1 or not np.allclose(var, var[0], rtol=0, atol=0):
        return None
    centred = mu - mu[0]
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    scale = max(float(np.abs(mu).max()), 1.0)
    if len(sv) > 1 and sv[1] > 1e-12 * scale:
        return None
    u = vt[0]
    line = GaussianMixture((mu @ u)[:, None], var, mix.weights, list(mix.labels))
    return u, line


def exact_values(mix: Any, x: Any, ts: Sequence[float], partition: dict[str, tuple[int, ...]], *,
                 n_mc: int = DEFAULT_N_MC, seed: int = 0) -> ExactCurve:
    """The exact P(kept | x, t) of the testbed's feature at the times `ts` (se > 0 only for Monte Carlo)."""
    if isinstance(mix, DiscreteMixture):
        return discrete_exact_curve(mix, x, ts, partition)
    x = np.asarray(x, dtype=float).reshape(-1)
    line = _on_a_line(mix)
    if line is not None:
        u, projected = line
        return gaussian_exact_curve(projected, np.array([x @ u]), ts, partition)
    return gaussian_exact_curve(mix, x, ts, partition, n_mc=n_mc, seed=seed)


def coverage_points(curve: Curve, exact: ExactCurve, level: float, anytime: bool
                    ) -> tuple[list[dict[str, Any]], float | None]:
    """Per scanned point {t, n, kept, p_hat, ci_lo, ci_hi, exact, exact_se}, and the share of points with
    valid draws whose interval (confidence sequence when `anytime`, else Wilson, at `level`; widened by
    3 standard errors of a Monte Carlo exact value) contains the exact value."""
    interval = confidence_sequence if anytime else wilson_interval
    lo, hi = interval(curve.n_kept, curve.n_valid, level)
    points, inside = [], []
    for i, t in enumerate(curve.t):
        n = int(curve.n_valid[i])
        e, se = float(exact.p[i]), float(exact.se[i])
        points.append({
            "t": float(t), "n": n, "kept": int(curve.n_kept[i]),
            "p_hat": None if n == 0 else float(curve.n_kept[i] / n),
            "ci_lo": None if n == 0 else float(lo[i]), "ci_hi": None if n == 0 else float(hi[i]),
            "exact": e, "exact_se": se,
        })
        if n > 0 and math.isfinite(e):
            pad = MC_WIDEN * se + 1e-12
            inside.append(lo[i] - pad <= e <= hi[i] + pad)
    return points, (float(np.mean(inside)) if inside else None)


def _sample_text(x: Any) -> str:
    if isinstance(x, tuple):
        return "(" + ", ".join(str(v) for v in x) + ")"
    return "(" + ", ".join(f"{v:.4g}" for v in np.asarray(x, dtype=float).reshape(-1)) + ")"


# ---- the experiment ----------------------------------------------------------------------------------------
@dataclass
class TestbedExperiment:
    """One scan of an exact testbed built from a theory spec, graded against the exact curve and the
    theory's windows (see the module docstring). settings: the strategy and what it may spend; n: draws per
    point of fixed, bisect and every-prefix; method: "posterior" or "ddpm" (Gaussian mixtures only);
    t_max: the last OU / masking time (None: 10 / 6; truncation scans 0..L); level, min_jump: the window
    rule's; n_mc: Monte Carlo draws per t of exact curves that have no quadrature; label: a name for the
    report (e.g. the spec's file name). The scanned sample is drawn from `seed`, the scan from the case's
    generator (`case_rng(seed, "testbed")`)."""

    __test__ = False  # not a pytest test class, whatever its name

    spec: TheorySpec
    settings: StrategySettings = field(default_factory=lambda: StrategySettings("adaptive"))
    n: int = DEFAULT_N
    seed: int = 0
    method: str | None = None
    t_max: float | None = None
    level: float = 0.99
    min_jump: float = 0.2
    n_mc: int = DEFAULT_N_MC
    label: str = ""

    name = "testbed"
    journaled = True
    resume_keys = ("spec", "strategy", "n", "seed", "sampler", "t_max", "level", "min_jump", "n_mc")

    def __post_init__(self) -> None:
        if not isinstance(self.spec, TheorySpec):
            raise CritwinError("spec: expected a critwin.theory.spec.TheorySpec; use load_spec(path)")
        if not isinstance(self.settings, StrategySettings):
            raise CritwinError("settings: expected a critwin.strategies.StrategySettings")
        check("n", self.n, "--draws")
        check("seed", self.seed, "--seed")
        check("level", self.level, "--level")
        check("min_jump", self.min_jump, "--min-jump")
        check("n", self.n_mc, "--n-mc")
        mix = self.spec.mixture
        if isinstance(mix, GaussianMixture):
            method = "posterior" if self.method is None else self.method
            if method not in SAMPLERS:
                raise CritwinError(f"--sampler {method!r}: use one of {', '.join(SAMPLERS)}")
        else:
            if self.method not in (None, "posterior"):
                raise CritwinError(
                    f"--sampler {self.method}: discrete testbeds are sampled exactly by enumeration; "
                    "--sampler applies to Gaussian mixtures only, drop it"
                )
            method = "exact"
        self.method = method
        self.grid = scan_grid(mix, self.t_max)
        self.rule = WindowRule(level=self.level, min_jump=self.min_jump)
        # The budget check of the strategy, before any theory or draw (a one-line error).
        self.settings.check_first_round(len(self._strategy_grid()), self.n)

    # -- what the scan uses -----------------------------------------------------------------------------
    def _strategy_grid(self) -> tuple[float, ...]:
        return self.grid.initial if self.settings.strategy == "adaptive" else self.grid.dense

    @property
    def chain(self) -> list[tuple[int, ...]]:
        return scan_chain(self.spec)

    @property
    def partition(self) -> dict[str, tuple[int, ...]]:
        return ring_partition(self.spec.mixture, self.chain)

    def sampler(self) -> Any:
        """The exact testbed sampler of the spec's mixture."""
        mix = self.spec.mixture
        if isinstance(mix, GaussianMixture):
            return GaussianMixtureSampler(mix, method=self.method, t_max=self.grid.t_max)
        return DiscreteMixtureSampler(mix, t_max=None if mix.process == "truncation" else self.grid.t_max)

    def feature(self) -> Any:
        mix = self.spec.mixture
        if isinstance(mix, GaussianMixture):
            return MixtureClass(mix, self.partition)
        return SequenceClass(mix, self.partition)

    def scanned_sample(self, feature: Any) -> tuple[Any, int]:
        """x drawn from p^{innermost set} with the seed, and how many draws it took until its Bayes class
        was the innermost set (MAX_REDRAWS + 1 when none was: then the first draw is used)."""
        mix = self.spec.mixture
        rng = case_rng(self.seed, CASE_ID, "sample")
        inner = self.chain[0]
        target = next(iter(self.partition))
        w = mix.sub_weights(inner)
        if isinstance(mix, GaussianMixture):
            mu, var = np.asarray(mix.means, dtype=float), np.asarray(mix.variances, dtype=float)

            def draw() -> Any:
                k = int(rng.choice(len(w), p=w))
                return mu[k] + math.sqrt(var[k]) * rng.standard_normal(mix.dim)
        else:
            digits, probs = mix.full_support()
            p = w @ probs

            def draw() -> Any:
                return tuple(int(v) for v in digits[int(rng.choice(len(p), p=p / p.sum()))])

        first = draw()
        x = first
        for tries in range(1, MAX_REDRAWS + 1):
            if feature(x) == target:
                return x, tries
            x = draw()
        return first, MAX_REDRAWS + 1

    def theory(self) -> list[TheoryWindow]:
        chain = self.chain
        if len(chain) < 2:
            return []
        s = self.spec
        return staircase(s.mixture, s.eps, chain, seed=s.seed, se_target=s.se_target)

    # -- Experiment protocol ----------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        mix = self.spec.mixture
        return {
            "seed": self.seed,
            "spec": spec_fingerprint(self.spec),
            "spec_label": self.label,
            "strategy": self.settings.to_dict(),
            "n": self.n,
            "sampler": self.method,
            "t_max": self.grid.t_max,
            "level": self.level,
            "min_jump": self.min_jump,
            "n_mc": self.n_mc,
            "eps": self.spec.eps,
            "chain": [[mix.labels[i] for i in s] for s in self.chain],
            "title": "critwin testbed" + (f" — {self.label}" if self.label else ""),
            "subtitle": f"Strategy {self.settings.strategy} on an exact testbed, against the exact curve and "
            "the theory's windows",
            "description": "The scanned sample is drawn from the innermost set of the chain; the feature is "
            "its Bayes class among the chain's rings. Points carry the intervals the strategy allows "
            "(anytime-valid for adaptive draws); the black line is the exact curve, shaded bands the "
            f"theory's windows at ε = {self.spec.eps:g}, red marks the detected windows.",
        }

    def cases(self) -> list[Case]:
        return [Case(CASE_ID, (0,), None, {"spec": self.label})]

    def check(self, sampler: Any) -> None:
        """The sampler must be this testbed's (None: the case builds its own)."""
        if sampler is not None and getattr(sampler, "mixture", None) is not self.spec.mixture:
            raise CritwinError("testbed: pass the experiment's own sampler (experiment.sampler()) or none")

    def run_case(self, sampler: Any, case: Case, rng: np.random.Generator,
                 journal: CaseJournal | None = None) -> CaseResult:
        sampler = self.sampler() if sampler is None else sampler
        mix = self.spec.mixture
        feature = self.feature()
        x, tries = self.scanned_sample(feature)
        windows = self.theory()
        g = self.grid
        strategy = self.settings.build(grid=list(self._strategy_grid()), n=self.n, resolution=g.resolution,
                                       support=g.support, min_jump=self.min_jump, level=self.level)
        draws: list[Any] = []
        curve = scan(sampler, x, feature=feature, strategy=strategy, seed=rng, journal=journal,
                     on_draws=draws.append if journal is None else None)
        exact = exact_values(mix, x, curve.t, self.partition, n_mc=self.n_mc, seed=self.spec.seed)
        detected = self.rule.find(curve)
        points, cover = coverage_points(curve, exact, self.level, self.settings.adaptive)
        theory_pairs = [window_pair(w) for w in windows]
        reasons = [not_findable(w, g.t_max) for w in windows]
        findable = [p for p, r in zip(theory_pairs, reasons, strict=True) if r is None]
        detected_pairs = [[float(w.t_lo), float(w.t_hi)] for w in detected]
        recall, false_windows = agreement(findable, detected_pairs, g.resolution)
        notes = []
        if not findable:
            why = "; ".join(f"window {i + 1}: {r}" for i, r in enumerate(reasons)) or (
                "the chain has a single set (targ = init = everything)")
            notes.append(f"the spec has no window to find: {why}")
        else:
            notes += [f"theory window {i + 1} is not counted in the recall: {r}"
                      for i, r in enumerate(reasons) if r is not None]
        if tries > MAX_REDRAWS:
            notes.append(f"no draw from the innermost set in {MAX_REDRAWS} had it as its Bayes class; "
                         "the scanned sample's class is another ring")
        labels = [f"{mix.describe(w.targ)} inside {mix.describe(w.init)}" for w in windows]
        result = {
            "theory_windows": theory_pairs,
            "detected_windows": detected_pairs,
            "draws": int(curve.n_total.sum()),
            "coverage": cover,
            "strategy": self.settings.strategy,
            "time_unit": g.time_unit,
            "level": self.level,
            "min_jump": self.min_jump,
            "points": points,
            "recall": recall,
            "false_windows": false_windows,
            "note": "; ".join(notes) or None,
            "sampler": self.method,
            "t_max": g.t_max,
            "chain": [[mix.labels[i] for i in s] for s in self.chain],
            "theory_labels": labels,
            "sample": [float(v) for v in np.asarray(x).reshape(-1)] if isinstance(mix, GaussianMixture)
            else list(x),
            "interval": "confidence sequence" if self.settings.adaptive else "Wilson",
            "exact_method": _exact_method(mix, exact),
        }
        meta = {
            "title": "Testbed" + (f" · {self.label}" if self.label else "") + f" · {self.settings.strategy}",
            "description": f"Bayes class among the chain's rings {', '.join(self.partition)}; strategy "
            f"{self.settings.strategy}, {result['draws']} draws.",
            "sampler": type(sampler).__name__ + f" ({self.method})",
            "feature": "Bayes class among " + ", ".join(self.partition),
            "sample": _sample_text(x),
            "n": self.n,
            "min_jump": self.min_jump,
        }
        return CaseResult(
            case.id,
            {"status": "ok", **result},
            tuple(draws),
            curve,
            detected,
            (),
            meta,
            exact=tuple(float(v) for v in exact.p),
            exact_se=tuple(float(v) for v in exact.se) if np.any(exact.se > 0) else None,
            theory=tuple(theory_intervals(windows, labels)),
            eps=self.spec.eps,
        )


def _exact_method(mix: Any, exact: ExactCurve) -> str:
    if isinstance(mix, DiscreteMixture):
        return "enumeration"
    return "monte carlo" if np.any(exact.se > 0) else "quadrature"


def result_of(record: dict[str, Any]) -> dict[str, Any]:
    """The command's JSON object from a testbed case record (what the driver stored)."""
    if record.get("status") != "ok":
        raise CritwinError(f"testbed: the case failed: {record.get('error', 'unknown error')}")
    skip = {"status", "case", "order", "spec", "stored_curve", "stored_tables", "error"}
    return {k: v for k, v in record.items() if k not in skip}


def run_testbed(
    spec: TheorySpec,
    settings: StrategySettings | None = None,
    *,
    n: int = DEFAULT_N,
    seed: int = 0,
    method: str | None = None,
    t_max: float | None = None,
    level: float = 0.99,
    min_jump: float = 0.2,
    n_mc: int = DEFAULT_N_MC,
) -> dict[str, Any]:
    """Scan the testbed of `spec` once (in memory, no run directory) and return the command's JSON object:
    "theory_windows", "detected_windows" ([[lo, hi], ...] in forward time; null for an open edge), "draws",
    "coverage", "strategy", then "time_unit", "level", "min_jump", "points", "recall", "false_windows",
    "note" and a few more (see docs/experiments/testbed.md).

    Example:
        The truncation fixture's feature is decided at the third token (t = 2 → 3 tokens removed from the
        end of five): an adaptive scan finds that window, and its intervals cover the exact curve:

        >>> from critwin.experiments.testbed import run_testbed
        >>> from critwin.strategies import StrategySettings
        >>> from critwin.theory.spec import parse_spec
        >>> spec = parse_spec({"mixture": {"kind": "discrete", "weights": [0.4, 0.4, 0.2], "components": [
        ...     {"product": [[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1], [0.3, 0.7, 0], [0.3, 0.7, 0]]},
        ...     {"product": [[0.5, 0.5, 0], [0.5, 0.5, 0], [1, 0, 0], [0.3, 0.7, 0], [0.3, 0.7, 0]]},
        ...     {"sequences": [[2, 2, 2, 2, 2]], "probs": [1.0]}]},
        ...     "process": "truncation", "eps": 0.2, "pairs": [{"targ": [0], "init": [0, 1]}]})
        >>> out = run_testbed(spec, StrategySettings("adaptive"))
        >>> out["theory_windows"], out["detected_windows"], out["recall"], out["false_windows"]
        ([[2.0, 3.0], [4.0, 0.0]], [[2.0, 3.0]], 1.0, 0)

        The second step of the chain ({x, y} inside everything) has crossing edges at ε = 0.2 (the theory
        predicts no window there), so only the first counts in the recall.
    """
    exp = TestbedExperiment(spec, settings or StrategySettings("adaptive"), n=n, seed=seed, method=method,
                            t_max=t_max, level=level, min_jump=min_jump, n_mc=n_mc)
    (case,) = exp.cases()
    res = exp.run_case(exp.sampler(), case, case_rng(seed, case.id))
    return result_of(dict(res.record))
