"""The methods side by side (`critwin compare RUN...`): where each places the decisive step of the same
problems, how often they agree, how often each sits at the first wrong step, and the draws each spent.

Every run is a reasoning run directory, read without the model. A run contributes one method per kind of
position its records hold: "window" (the main window of a P(same answer) scan: `critwin scan`), "critical"
(the critical token of a wrong chain: `critwin critical-tokens`), "pivotal" (the most harmful pivotal token:
`critwin pivotal`), "anchor" (the top sentence anchor: `critwin anchors`), "counterfactual anchor" (the
top one by counterfactual importance) and "fork" (the position whose redrawing most often changes the
outcome: `critwin forks`). A position is a span of tokens [kept_lo, kept_hi) of the original response;
two positions agree when they lie within `tolerance` tokens of each other (the slack of
`window_at_error`), and a position sits at the first wrong step when that step's first wrong token lies
in it ± `tolerance`. Problems are matched by their case name, and only when every run drew the same original
response (the same model, data, seed and sampling), which is checked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

from critwin.errors import CritwinError
from critwin.experiments.reasoning import EXPERIMENT, main_window, read_records, top_anchor, window_at_error
from critwin.rundir import RunDir
from critwin.stats import wilson_interval

TOLERANCE = 3
LEVEL = 0.95


def positions(rec: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """The decisive span [kept_lo, kept_hi) each method places in one problem record (absent: none)."""
    out: dict[str, tuple[int, int]] = {}
    outcome = (rec.get("curve") or {}).get("outcome", "same")
    if outcome == "same" and (w := main_window(rec.get("windows", []))) is not None:
        out["window"] = (int(w["kept_lo"]), int(w["kept_hi"]))
    if (c := (rec.get("critical") or {}).get("critical")) is not None:
        out["critical"] = (int(c["kept_lo"]), int(c["kept_hi"]))
    if (f := (rec.get("forks") or {}).get("top")) is not None:
        out["fork"] = (int(f["kept_lo"]), int(f["kept_hi"]))
    if (a := top_anchor(rec)) is not None:
        out["anchor"] = (int(a["kept_lo"]), int(a["kept_hi"]))
    if (a := top_anchor(rec, counterfactual=True)) is not None:
        out["counterfactual anchor"] = (int(a["kept_lo"]), int(a["kept_hi"]))
    harmful = [p for p in rec.get("pivotal", []) if p["delta"] < 0]
    if harmful:
        p = min(harmful, key=lambda p: (p["delta"], p["token"]))
        out["pivotal"] = (int(p["token"]), int(p["token"]) + 1)
    return out


def agree(a: tuple[int, int], b: tuple[int, int], tolerance: int = TOLERANCE) -> bool:
    """Whether two token spans lie within `tolerance` tokens of each other."""
    return a[0] - tolerance < b[1] and b[0] - tolerance < a[1]


def _share(flags: Sequence[bool]) -> dict[str, Any]:
    if not flags:
        return {"n": 0, "rate": None, "ci": None}
    k, n = sum(flags), len(flags)
    return {"n": n, "rate": k / n, "ci": [float(v) for v in wilson_interval(k, n, LEVEL)]}


def _open(path: Path) -> tuple[RunDir, dict[str, Any]]:
    try:
        run = RunDir.open(path)
    except CritwinError as err:
        raise CritwinError(f"compare: {err}") from None
    if run.config.get("experiment") != EXPERIMENT:
        raise CritwinError(f"compare: {path} is a {run.config.get('experiment')!r} run; give reasoning runs "
                           "(critwin scan, critical-tokens, pivotal)")
    return run, {r["case"]: r for r in read_records(path) if r.get("status") == "ok"}


def compare_runs(paths: Sequence[str | Path], tolerance: int = TOLERANCE) -> dict[str, Any]:
    """The comparison of reasoning runs (see the module docstring) as one JSON-able dict: per method its
    run, problems with a position, rate at the first wrong step (Wilson, 95%) and mean draws per problem;
    per pair of methods the share of common problems where they agree; per problem each method's span and
    ("first_errors") the first wrong token of the original response, or None where none is known."""
    if len(paths) < 2:
        raise CritwinError("compare: give at least two run directories")
    opened = [(Path(p), *_open(Path(p))) for p in paths]
    models = {str(run.config.get("model")) for _, run, _ in opened}
    if len(models) > 1:
        raise CritwinError(f"compare: the runs are of different models ({', '.join(sorted(models))}); "
                           "compare runs of one model")
    common = sorted(set.intersection(*(set(recs) for _, _, recs in opened)))
    if not common:
        raise CritwinError("compare: the runs share no finished problem; run them on the same data")
    for case in common:
        responses = {recs[case]["response"] for _, _, recs in opened}
        if len(responses) > 1:
            raise CritwinError(f"compare: the runs drew different original responses for {case}; compare "
                               "runs with the same data, seed and sampling settings")
    methods: dict[str, dict[str, Any]] = {}
    spans: dict[str, dict[str, tuple[int, int]]] = {case: {} for case in common}
    for path, _, recs in opened:
        kinds = {k for case in common for k in positions(recs[case])}
        for kind in sorted(kinds):
            name = kind if kind not in methods else f"{kind} ({path.name})"
            at_error = []
            for case in common:
                span = positions(recs[case]).get(kind)
                if span is None:
                    continue
                spans[case][name] = span
                fe = recs[case].get("first_error")
                if fe is not None and recs[case].get("correct") is False:
                    at_error.append(window_at_error({"kept_lo": span[0], "kept_hi": span[1]}, fe["token"],
                                                    tolerance))
            # A run's draws: its scan's and, with --forks, the forced branches' endings.
            draws = [recs[case].get("n_draws", 0) + (recs[case].get("forks") or {}).get("n_draws", 0)
                     for case in common]
            methods[name] = {
                "run": str(path),
                "n_with_position": sum(name in spans[case] for case in common),
                "at_first_error": _share(at_error),
                "mean_draws": sum(draws) / len(draws),
            }
    # The runs drew the same original response (checked above), so any run's first wrong token is its own.
    first_errors: dict[str, int | None] = {}
    for case in common:
        fe = next((recs[case]["first_error"] for _, _, recs in opened if recs[case].get("first_error")), None)
        first_errors[case] = None if fe is None else int(fe["token"])
    pairs = {}
    for a, b in combinations(methods, 2):
        both = [case for case in common if a in spans[case] and b in spans[case]]
        pairs[f"{a} vs {b}"] = _share([agree(spans[c][a], spans[c][b], tolerance) for c in both])
    return {
        "n_problems": len(common),
        "tolerance_tokens": tolerance,
        "methods": methods,
        "agreement": pairs,
        "problems": {case: {m: list(s) for m, s in spans[case].items()} for case in common},
        "first_errors": first_errors,
    }
