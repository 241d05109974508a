"""Bad input: a one-line CritwinError naming the field and the fix; the CLI exits 2 without a traceback."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_theory_cli import run_cli

from critwin.errors import CritwinError
from critwin.theory import (
    DiscreteMixture,
    GaussianMixture,
    MarkovComponent,
    ProductComponent,
    critical_window,
    staircase,
    t_after,
    t_before,
    theorem_bound,
)
from critwin.theory.spec import parse_spec

G = GaussianMixture([[0, 0], [1, 0], [5, 5]], [1, 1, 1], [0.2, 0.3, 0.5])
D = DiscreteMixture([{(0, 1): 1.0}, {(1, 1): 1.0}], [0.5, 0.5], "truncation")


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 300
    return msg


@pytest.mark.parametrize(
    "build,field",
    [
        (lambda: GaussianMixture([[0], [1]], [1, 1], [0.7, -0.3]), "weights[1]"),
        (lambda: GaussianMixture([[0], [1]], [1, 1], [0.5, 0.6]), "weights"),
        (lambda: GaussianMixture([[0], [1]], [1, 1], [0.5, float("nan")]), "weights"),
        (lambda: GaussianMixture([[0, 0], [1]], [1, 1], [0.5, 0.5]), "means"),
        (lambda: GaussianMixture([[0, 0], [1, 0], [2, 0]], [1, 1], [0.5, 0.5]), "means"),
        (lambda: GaussianMixture([[0], [1]], [1, 1, 1], [0.5, 0.5]), "variances"),
        (lambda: GaussianMixture([[0], [1]], [1, 0], [0.5, 0.5]), "variances"),
        (lambda: GaussianMixture([[0], [1]], 1, [0.5, 0.5], labels=["a", "a"]), "labels"),
        (lambda: DiscreteMixture([{(0,): 1.0}, {(1,): 1.0}], [0.5, 0.5], "diffusion"), "process"),
        (lambda: DiscreteMixture([{(0,): 1.0}, {(1, 0): 1.0}], [0.5, 0.5], "masking"), "components"),
        (lambda: DiscreteMixture([{(0,): 0.5}, {(1,): 1.0}], [0.5, 0.5], "masking"), "components[0]"),
        (lambda: DiscreteMixture([{(0,): 1.0}], [0.5, 0.5], "masking"), "components"),
        (lambda: DiscreteMixture([{(-1,): 1.0}, {(1,): 1.0}], [0.5, 0.5], "masking"), "components[0]"),
        (lambda: ProductComponent([[0.5, 0.6]]), "marginals"),
        (lambda: MarkovComponent([0.5, 0.5], [[1, 0], [0.5, 0.5], [0, 1]], 3), "transitions"),
        (lambda: G.tv([], [0], 0.0), "a"),
        (lambda: G.tv([0], [7], 0.0), "b"),
        (lambda: G.tv([0], ["nope"], 0.0), "b"),
        (lambda: G.tv([0], [1], -1.0), "t"),
        (lambda: G.log_density(np.zeros((3, 5))), "x"),
        (lambda: D.tv([0], [1], 0.5), "t"),
        (lambda: D.tv([0], [1], 3), "t"),
        (lambda: t_before(G, 0.1, [0, 2], [0, 1]), "targ"),
        (lambda: t_before(G, 0.0, [0], [0, 1]), "eps"),
        (lambda: t_before(G, 1.0, [0], [0, 1]), "eps"),
        (lambda: t_after(G, 1.5, [0]), "eps"),
        (lambda: theorem_bound("x", G, [0]), "eps"),
        (lambda: critical_window(G, 0.1, [0], []), "init"),
        (lambda: staircase(G, 0.1, [[0, 1], [1, 2]]), "chain[1]"),
        (lambda: staircase(G, 0.1, [[0, 1], [0, 1]]), "chain[1]"),
        (lambda: staircase(G, 0.1, [[0]]), "chain"),
    ],
)
def test_api_errors_name_the_field(build, field):
    with pytest.raises(CritwinError) as err:
        build()
    assert _one_line(err).startswith(field), str(err.value)


GOOD = {
    "mixture": {
        "kind": "gaussian",
        "means": [[0, 0], [1, 0], [20, 0]],
        "variances": [1, 1, 1],
        "weights": [0.25, 0.25, 0.5],
    },
    "process": "ou",
    "eps": 0.1,
    "pairs": [{"targ": [0], "init": [0, 1]}],
}


def _with(path: str, value):
    spec = json.loads(json.dumps(GOOD))
    node = spec
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if value is _DROP:
        del node[last]
    else:
        node[int(last) if isinstance(node, list) else last] = value
    return spec


_DROP = object()


@pytest.mark.parametrize(
    "spec,field",
    [
        ([1, 2], "SPEC"),
        (_with("mixture", _DROP), "mixture"),
        (_with("eps", _DROP), "eps"),
        (_with("eps", 2), "eps"),
        (_with("eps", "0.1"), "eps"),
        (_with("process", "masking"), "process"),
        (_with("mixture.kind", "poisson"), "mixture.kind"),
        (_with("mixture.weights", [0.5, 0.5, 0.5]), "mixture.weights"),
        (_with("mixture.weights", [0.5, 0.5]), "mixture.means"),
        (_with("mixture.means", [[0, 0], [1], [2, 2]]), "mixture.means"),
        (_with("mixture.means", "zero"), "mixture.means"),
        (_with("pairs", []), "pairs"),
        (_with("pairs", _DROP), "pairs"),
        (_with("pairs.0.targ", [2]), "pairs[0].targ"),
        (_with("pairs.0.init", []), "pairs[0].init"),
        (_with("pairs.0.init", [0, 5]), "pairs[0].init"),
        (_with("pairs.0", [0, 1]), "pairs[0]"),
        (_with("chain", [[0, 1], [1, 2]]), "chain[1]"),
        (_with("seed", 1.5), "seed"),
        (_with("se_target", 0), "se_target"),
        (_with("extra", 1), "SPEC"),
        (
            {
                "mixture": {
                    "kind": "discrete",
                    "components": [{"sequences": [[0]], "probs": [1]}],
                    "weights": [1],
                },
                "eps": 0.1,
                "pairs": [{"targ": [0], "init": [0]}],
            },
            "process",
        ),
        (
            {
                "mixture": {
                    "kind": "discrete",
                    "components": [{"sequences": [[0], [1, 1]], "probs": [0.5, 0.5]}],
                    "weights": [1],
                },
                "process": "masking",
                "eps": 0.1,
                "pairs": [{"targ": [0], "init": [0]}],
            },
            "mixture.components[0]",
        ),
        (
            {
                "mixture": {"kind": "discrete", "components": [{"tokens": [0]}], "weights": [1]},
                "process": "masking",
                "eps": 0.1,
                "pairs": [{"targ": [0], "init": [0]}],
            },
            "mixture.components[0]",
        ),
        (
            {
                "mixture": {"kind": "discrete", "components": [{"product": [[0.5, 0.7]]}], "weights": [1]},
                "process": "masking",
                "eps": 0.1,
                "pairs": [{"targ": [0], "init": [0]}],
            },
            "mixture.components[0]",
        ),
    ],
)
def test_spec_errors_name_the_field(spec, field):
    with pytest.raises(CritwinError) as err:
        parse_spec(spec)
    assert _one_line(err).startswith(field), str(err.value)


def _assert_cli_error(res, field: str) -> None:
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith(f"critwin: error: {field}"), lines[0]
    assert res.stdout == ""


def test_cli_errors_exit_2_with_one_line(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"mixture": {')
    _assert_cli_error(run_cli(str(bad_json), "--json", fresh=True), "SPEC")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("mixture: [1, 2\n  eps: :")
    _assert_cli_error(run_cli(str(bad_yaml)), "SPEC")
    _assert_cli_error(run_cli(str(tmp_path / "missing.json")), "SPEC")
    subset = tmp_path / "subset.json"
    subset.write_text(json.dumps(_with("pairs.0.targ", [2])))
    _assert_cli_error(run_cli(str(subset), "--json"), "pairs[0].targ")
    weights = tmp_path / "w.json"
    weights.write_text(json.dumps(_with("mixture.weights", [0.25, -0.25, 1.0])))
    _assert_cli_error(run_cli(str(weights), "--json", fresh=True), "mixture.weights[1]")
    _assert_cli_error(run_cli(str(tmp_path / "x.json"), "--eps", "0.1"), "SPEC")
    _assert_cli_error(run_cli("--means", "0,0; 1", "--json"), "mixture.means")
    _assert_cli_error(run_cli("--means", "0; 1", "--pair", "0-1"), "--pair")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(GOOD))
    _assert_cli_error(run_cli(str(good), "--eps", "1.2", "--no-plot"), "--eps")
    _assert_cli_error(run_cli(str(good), "--eps", "abc", "--no-plot"), "--eps")
    _assert_cli_error(run_cli(str(good), "--seed", "1.5", "--no-plot"), "--seed")
    _assert_cli_error(run_cli(str(good), "--se-target", "0", "--no-plot"), "--se-target")
