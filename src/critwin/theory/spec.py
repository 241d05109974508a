"""Theory spec files (JSON or YAML) and their evaluation into window edges, bounds and widths.

Minimal form (indices into the components, or labels; "variances" are isotropic per component):

    {"mixture": {"kind": "gaussian", "means": [[0, 0], [1, 0], [20, 0]], "variances": [1, 1, 1],
                 "weights": [0.25, 0.25, 0.5]},
     "process": "ou", "eps": 0.1, "pairs": [{"targ": [0], "init": [0, 1]}]}

Extensions: "labels" in the mixture; "chain" (nested sets, innermost first) for a staircase; "seed" and
"se_target" for Monte Carlo; discrete mixtures with "kind": "discrete" and "components", each one of
{"sequences": [[...], ...], "probs": [...]}, {"product": [[p(v) for v] per position]} or
{"markov": {"initial": [...], "transitions": [[...], ...], "length": L}},
and "process" "truncation"|"masking".
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from critwin.errors import CritwinError, first_line
from critwin.files import read_text
from critwin.theory.discrete import DiscreteMixture, MarkovComponent, ProductComponent
from critwin.theory.forward import DISCRETE_PROCESSES, GAUSSIAN_PROCESSES, check_process
from critwin.theory.gaussian import GaussianMixture
from critwin.theory.mixtures import check_chain, check_eps, check_nested
from critwin.theory.montecarlo import DEFAULT_SE_TARGET
from critwin.theory.windows import Edge, TheoryWindow, critical_window, staircase, t_after, theorem_bound

Mix = GaussianMixture | DiscreteMixture


@dataclass(frozen=True)
class TheorySpec:
    """A parsed spec: mixture, ε, (targ, init) pairs, an optional nested chain, Monte Carlo settings."""

    mixture: Mix
    eps: float
    pairs: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]
    chain: tuple[tuple[int, ...], ...] | None = None
    seed: int = 0
    se_target: float = DEFAULT_SE_TARGET


@dataclass(frozen=True)
class PairResult:
    """Edges and bound for one (targ, init) pair, in forward time.

    `t_before` = T_before(targ inside init), `t_after` = T_after(init against the rest), `bound` = the
    theorem's bound on TV(FR_t(targ), p^init) for t in [t_before, t_after]; `window` is the critical window
    [T_after(targ), T_before(targ, init)] of the feature targ inside init.
    """

    targ: tuple[int, ...]
    init: tuple[int, ...]
    eps: float
    t_before: Edge | None
    t_after: Edge | None
    bound: float
    window: TheoryWindow


def _edge_json(e: Edge | None) -> float | None:
    return None if e is None or math.isinf(e.t) else e.t


def _interval_json(e: Edge | None) -> list[float] | None:
    return None if e is None or math.isinf(e.t) else [e.lo, e.hi]


def result_json(mix: Mix, r: PairResult) -> dict[str, Any]:
    """The JSON record of one pair (contract keys first, then extras)."""
    return {
        "targ": list(r.targ),
        "init": list(r.init),
        "eps": r.eps,
        "t_before": _edge_json(r.t_before),
        "t_after": _edge_json(r.t_after),
        "bound": r.bound,
        "t_before_interval": _interval_json(r.t_before),
        "t_after_interval": _interval_json(r.t_after),
        "rest_empty": not mix.complement(r.init),
        "targ_labels": [mix.labels[i] for i in r.targ],
        "init_labels": [mix.labels[i] for i in r.init],
        "window": [_edge_json(r.window.lo), _edge_json(r.window.hi)],
        "width": r.window.width,
        "time_unit": mix.time_unit,
        **_unit_views(mix, r),
    }


def _unit_views(mix: Mix, r: PairResult) -> dict[str, Any]:
    """The edges in the units users of each model kind read: DDPM ᾱ = e^{-2t} for OU time, and the
    fraction of the sequence kept, 1 − t/L, for truncation."""
    edges = {"t_before": r.t_before, "t_after": r.t_after}
    if mix.time_unit == "ou":
        return {
            f"{k}_alpha_bar": None if _edge_json(e) is None else math.exp(-2.0 * e.t)
            for k, e in edges.items()
        }
    if mix.time_unit == "tokens":
        big_l = float(mix.t_max)
        return {
            f"{k}_fraction_kept": None if _edge_json(e) is None else 1.0 - e.t / big_l
            for k, e in edges.items()
        }
    return {}


def evaluate(spec: TheorySpec) -> list[PairResult]:
    """Edges, bounds and critical windows of every pair of the spec, in the order of "pairs"."""
    out = []
    mix = spec.mixture
    for targ, init in spec.pairs:
        kw = {"seed": spec.seed, "se_target": spec.se_target}
        window = critical_window(mix, spec.eps, targ, init, **kw)
        out.append(
            PairResult(
                targ,
                init,
                spec.eps,
                window.hi,
                t_after(mix, spec.eps, init, **kw),
                theorem_bound(spec.eps, mix, init),
                window,
            )
        )
    return out


def evaluate_chain(spec: TheorySpec) -> list[TheoryWindow]:
    """The staircase of windows of the spec's chain (empty when it has none)."""
    if spec.chain is None:
        return []
    return staircase(spec.mixture, spec.eps, spec.chain, seed=spec.seed, se_target=spec.se_target)


# ---- parsing ---------------------------------------------------------------------------------------------


def load_spec(path: str | Path) -> TheorySpec:
    """Read a JSON or YAML spec file and parse it (CritwinError naming the field on any problem)."""
    p = Path(path)
    text = read_text(p, "SPEC", "a JSON/YAML spec file or 'demo'")
    try:
        obj = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise CritwinError(
            f"SPEC: {p.name} is not valid JSON/YAML ({first_line(err, with_type=False)}); fix the syntax"
        ) from None
    return parse_spec(obj)


def _field(obj: Mapping, key: str, where: str) -> Any:
    if key not in obj:
        raise CritwinError(f"{where}{key}: missing; see `critwin theory --help` for the spec format")
    return obj[key]


def _prefixed(where: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except CritwinError as err:
        raise CritwinError(f"{where}{err}") from None


def _component(obj: Any, i: int) -> Any:
    where = f"mixture.components[{i}]"
    if not isinstance(obj, Mapping):
        raise CritwinError(f"{where}: must be an object with 'sequences'+'probs', 'product' or 'markov'")
    if "sequences" in obj:
        seqs, probs = obj["sequences"], _field(obj, "probs", where + ".")
        if not isinstance(seqs, list) or not isinstance(probs, list) or len(seqs) != len(probs):
            raise CritwinError(f"{where}: 'sequences' and 'probs' must be lists of equal length")
        table: dict[tuple[int, ...], float] = {}
        for seq, p in zip(seqs, probs, strict=True):
            if not isinstance(seq, list) or not all(
                isinstance(x, int) and not isinstance(x, bool) for x in seq
            ):
                raise CritwinError(
                    f"{where}.sequences: each sequence must be a list of integer tokens, got {seq!r}"
                )
            if not isinstance(p, (int, float)) or isinstance(p, bool):
                raise CritwinError(f"{where}.probs: probabilities must be numbers, got {p!r}")
            table[tuple(seq)] = table.get(tuple(seq), 0.0) + float(p)
        return table
    if "product" in obj:
        return _prefixed(where + ".", ProductComponent, _numbers(obj["product"], where + ".product"))
    if "markov" in obj:
        m = obj["markov"]
        if not isinstance(m, Mapping):
            raise CritwinError(f"{where}.markov: must be an object with initial, transitions, length")
        return _prefixed(
            where + ".markov.",
            MarkovComponent,
            _numbers(_field(m, "initial", where + ".markov."), where + ".markov.initial"),
            _numbers(_field(m, "transitions", where + ".markov."), where + ".markov.transitions"),
            _int(_field(m, "length", where + ".markov."), where + ".markov.length"),
        )
    raise CritwinError(f"{where}: must have 'sequences'+'probs', 'product' or 'markov'")


def _numbers(x: Any, where: str) -> Any:
    def ok(v: Any) -> bool:
        if isinstance(v, list):
            return all(ok(u) for u in v)
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if not ok(x):
        raise CritwinError(f"{where}: must be (nested lists of) numbers")
    return x


def _int(x: Any, where: str) -> int:
    if not isinstance(x, int) or isinstance(x, bool):
        raise CritwinError(f"{where}: must be an integer, got {x!r}")
    return x


def _sets(mix: Mix, obj: Any, where: str) -> tuple[int, ...]:
    if isinstance(obj, (int, str)) and not isinstance(obj, bool):
        obj = [obj]
    if not isinstance(obj, list):
        raise CritwinError(f"{where}: must be a list of component indices or labels, got {obj!r}")
    return mix.select(obj, where)


def build_mixture(m: Any, process: Any) -> Mix:
    """Build the mixture of a spec's "mixture" object under `process` (None: the kind's default)."""
    if not isinstance(m, Mapping):
        raise CritwinError("mixture: must be an object with kind, weights and the components")
    kind = m.get("kind", "gaussian")
    if kind == "gaussian":
        proc = "ou" if process is None else _prefixed("", check_process, process, GAUSSIAN_PROCESSES)
        del proc
        means = _numbers(_field(m, "means", "mixture."), "mixture.means")
        variances = _numbers(m.get("variances", 1.0), "mixture.variances")
        weights = _numbers(_field(m, "weights", "mixture."), "mixture.weights")
        return _prefixed("mixture.", GaussianMixture, means, variances, weights, m.get("labels"))
    if kind == "discrete":
        if process is None:
            raise CritwinError(
                f"process: required for discrete mixtures; use one of {list(DISCRETE_PROCESSES)}"
            )
        comps = _field(m, "components", "mixture.")
        if not isinstance(comps, list) or not comps:
            raise CritwinError("mixture.components: must be a non-empty list of components")
        parsed = [_component(c, i) for i, c in enumerate(comps)]
        weights = _numbers(_field(m, "weights", "mixture."), "mixture.weights")
        check_process(process, DISCRETE_PROCESSES)
        return _prefixed(
            "mixture.",
            DiscreteMixture,
            parsed,
            weights,
            process,
            m.get("labels"),
            vocab_size=m.get("vocab_size"),
        )
    raise CritwinError(f"mixture.kind: unknown kind {kind!r}; use 'gaussian' or 'discrete'")


def parse_spec(obj: Any) -> TheorySpec:
    """Validate a spec object (parsed JSON/YAML) into a `TheorySpec`."""
    if not isinstance(obj, Mapping):
        raise CritwinError("SPEC: the top level must be an object with mixture, eps and pairs")
    unknown = set(obj) - {"mixture", "process", "eps", "pairs", "chain", "seed", "se_target", "name"}
    if unknown:
        raise CritwinError(
            f"SPEC: unknown field(s) {sorted(unknown)}; allowed: mixture, process, eps, pairs, "
            "chain, seed, se_target, name"
        )
    mix = build_mixture(_field(obj, "mixture", ""), obj.get("process"))
    eps_raw = _field(obj, "eps", "")
    if not isinstance(eps_raw, (int, float)) or isinstance(eps_raw, bool):
        raise CritwinError(f"eps: must be a number in (0, 1), got {eps_raw!r}; e.g. 0.1")
    eps = check_eps(eps_raw)
    chain = None
    if obj.get("chain") is not None:
        raw = obj["chain"]
        if not isinstance(raw, list):
            raise CritwinError("chain: must be a list of nested sets, innermost first")
        chain = tuple(check_chain(mix, [_sets(mix, s, f"chain[{i}]") for i, s in enumerate(raw)]))
    raw_pairs = obj.get("pairs")
    pairs: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    if raw_pairs is None:
        if chain is None:
            raise CritwinError(
                'pairs: missing; give e.g. "pairs": [{"targ": [0], "init": [0, 1]}] (or a "chain")'
            )
        pairs = [(chain[i], chain[i + 1]) for i in range(len(chain) - 1)]
    else:
        if not isinstance(raw_pairs, list) or not raw_pairs:
            raise CritwinError('pairs: must be a non-empty list like [{"targ": [0], "init": [0, 1]}]')
        for i, p in enumerate(raw_pairs):
            if not isinstance(p, Mapping):
                raise CritwinError(f'pairs[{i}]: must be an object {{"targ": [...], "init": [...]}}')
            targ = _sets(mix, _field(p, "targ", f"pairs[{i}]."), f"pairs[{i}].targ")
            init = _sets(mix, _field(p, "init", f"pairs[{i}]."), f"pairs[{i}].init")
            pairs.append(_prefixed(f"pairs[{i}].", check_nested, mix, targ, init))
    seed = _int(obj.get("seed", 0), "seed")
    se = obj.get("se_target", DEFAULT_SE_TARGET)
    if not isinstance(se, (int, float)) or isinstance(se, bool) or not 0 < se < 0.5:
        raise CritwinError(f"se_target: must be a number in (0, 0.5), got {se!r}; e.g. 0.005")
    return TheorySpec(mix, eps, tuple(pairs), chain, seed, float(se))


def gaussian_spec(
    means: Sequence[Sequence[float]],
    variances: Sequence[float] | float,
    weights: Sequence[float],
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    eps: float,
    **kw: Any,
) -> TheorySpec:
    """A spec for a Gaussian mixture given directly (used by the CLI flags)."""
    return parse_spec(
        {
            "mixture": {
                "kind": "gaussian",
                "means": [list(m) for m in means],
                "variances": variances if isinstance(variances, (int, float)) else list(variances),
                "weights": list(weights),
            },
            "eps": eps,
            "pairs": [{"targ": list(a), "init": list(b)} for a, b in pairs],
            **kw,
        }
    )
