"""The structured-output theory check can fail: plateaus are measured on samples the prediction never saw.

Known laws written as text (each output a filled template), so every expected plateau is known exactly:
under the theory the held-out check covers at about its nominal level, and it fails where text before a
decision gives a later choice away, or where the plateaus come from another law than the predictions.
"""

from __future__ import annotations

import numpy as np
import pytest

from critwin.errors import CritwinError
from critwin.experiments import structured as S
from critwin.features.choices import ChoiceTemplate

TEMPLATE = ChoiceTemplate.parse("{x|y} {p|q} {u|v}.")


def law(p_x: float = 0.6, p_p: tuple[float, float] = (0.7, 0.2), p_u: float = 0.5) -> dict:
    """Exact probabilities of the 8 outputs: P(x), P(p | x or y), P(u | x, p) = p_u, else 0.3."""
    out = {}
    for a, pa in (("x", p_x), ("y", 1 - p_x)):
        pp = p_p[0] if a == "x" else p_p[1]
        for b, pb in (("p", pp), ("q", 1 - pp)):
            pu = p_u if (a, b) == ("x", "p") else 0.3
            for c, pc in (("u", pu), ("v", 1 - pu)):
                out[(a, b, c)] = pa * pb * pc
    return out


def draw(probs: dict, n: int, seed: int, spell=None) -> list[S.StructuredOutput]:
    """n outputs drawn from `probs`; spell(choices) -> text (default "a b c.")."""
    keys = list(probs)
    idx = np.random.default_rng(seed).choice(len(keys), size=n, p=np.array([probs[k] for k in keys]))
    spell = spell or (lambda ch: " ".join(ch) + ".")
    texts = {k: spell(k) for k in keys}
    made = {k: S.make_output(texts[k], TEMPLATE) for k in keys}  # parse each spelling once
    return [made[keys[i]] for i in idx]


def test_same_sample_predictions_agree_by_construction_and_held_out_ones_do_not():
    outs = draw(law(), 600, seed=0)
    same = S.analyze(outs, TEMPLATE, units=("chars",), top=None, predict_from=outs)
    # Predicting from the very samples measured: every residual is 0, whatever the law (the old check).
    assert same.summary["max_abs_residual"] == 0.0 and same.summary["coverage"] == 1.0
    held = S.analyze(outs, TEMPLATE, units=("chars",), top=None)
    assert held.summary["check"] == "held_out" and held.summary["max_abs_residual"] > 0.0
    assert held.summary["n_prediction_samples"] + held.summary["n_measurement_samples"] == 600
    assert "never sees the samples it is checked on" in held.summary["check_description"]
    # Same seed, same split, same numbers; another seed, another split.
    again = S.analyze(outs, TEMPLATE, units=("chars",), top=None)
    assert again.fit.equals(held.fit)
    other = S.analyze(outs, TEMPLATE, units=("chars",), top=None, split_seed=1)
    assert not other.fit["residual"].equals(held.fit["residual"])


def test_held_out_coverage_is_close_to_the_nominal_level_when_the_theory_holds():
    """R independent runs of 400 samples: the mean coverage of the 95% intervals, and how often Holm's
    procedure rejects anything (at most 5% when the theory holds)."""
    reps, level = 120, 0.95
    covs, any_rejected = [], []
    for r in range(reps):
        res = S.analyze(draw(law(), 400, seed=1000 + r), TEMPLATE, units=("chars",), top=None,
                        split_seed=r, ci_level=level)
        covs.append(res.summary["coverage"])
        any_rejected.append(res.summary["n_rejected"] > 0)
    mean, se = float(np.mean(covs)), float(np.std(covs, ddof=1) / np.sqrt(reps))
    # Tolerance: 4 standard errors of the mean over the runs (runs are independent; plateaus within a
    # run are not, so the spread is measured, not assumed binomial).
    assert level - 4 * se <= mean <= level + 4 * se + 0.02, (mean, se)
    assert mean < 0.995  # not the old by-construction 1.0
    # Family-wise error of Holm at 5%: the share of runs with a rejection, with a binomial 4-SE margin.
    assert np.mean(any_rejected) <= 0.05 + 4 * np.sqrt(0.05 * 0.95 / reps)


def test_check_fails_when_text_before_a_decision_gives_a_later_choice_away():
    """Outputs choosing q put two spaces before it: the prefix "x  " already says q, so the curve jumps
    before q's deciding character and P(x q v | "x  ") = p(v | x, q) = 0.7 where the theory predicts
    p(q, v | x) = 0.3 · 0.7 = 0.21. The last prefix of the plateau shows it; its first prefix ("x") would
    not."""
    probs = law()

    def spell(ch: tuple[str, ...]) -> str:
        return f"{ch[0]}{'  ' if ch[1] == 'q' else ' '}{ch[1]} {ch[2]}."

    res = S.analyze(draw(probs, 2000, seed=3, spell=spell), TEMPLATE, units=("chars",), top=None)
    fit = res.fit.set_index(["target", "choices_revealed"])
    row = fit.loc[("x | q | v", 1)]
    assert row["j"] == 3  # the prefix "x  ", just before q's deciding character
    se = np.sqrt(0.7 * 0.3 / row["n"] + 0.21 * 0.79 / row["n_pred"])
    assert row["measured"] == pytest.approx(0.7, abs=4 * np.sqrt(0.7 * 0.3 / row["n"]))
    assert row["residual"] == pytest.approx(0.7 - 0.21, abs=4 * se)
    assert row["rejected"] and not row["covered"]
    # (x q u): P(u | x, q) = 0.3 measured against p(q, u | x) = 0.09: the other output after "x  ".
    assert fit.loc[("x | q | u", 1), "rejected"]
    assert res.summary["coverage"] < 0.95 and res.summary["n_rejected"] >= 2
    # The same law spelled the same way whatever comes later: that plateau now agrees with the prediction.
    clean = S.analyze(draw(probs, 2000, seed=3), TEMPLATE, units=("chars",), top=None)
    crow = clean.fit.set_index(["target", "choices_revealed"]).loc[("x | q | v", 1)]
    se = np.sqrt(0.3 * 0.7 * (1 / crow["n"] + 1 / crow["n_pred"]))
    assert abs(crow["residual"]) < 4 * se and not crow["rejected"]


def test_check_fails_when_the_plateaus_come_from_another_law():
    """Measure on outputs of law Q (P(p | x) = 0.4) and predict from law P (0.7): the check must see it."""
    p_law, q_law = law(p_p=(0.7, 0.2)), law(p_p=(0.4, 0.2))
    res = S.analyze(draw(q_law, 3000, seed=5), TEMPLATE, units=("chars",), top=None,
                    predict_from=draw(p_law, 3000, seed=6))
    assert res.summary["check"] == "other_sample"
    fit = res.fit.set_index(["target", "choices_revealed"])
    # P(s | "x ") = p(p | x) · p(u | x, p): 0.4 · 0.5 measured, 0.7 · 0.5 predicted.
    row = fit.loc[("x | p | u", 1)]
    se = np.sqrt(0.2 * 0.8 / row["n"] + 0.35 * 0.65 / row["n_pred"])
    assert row["residual"] == pytest.approx(0.2 - 0.35, abs=4 * se)
    assert row["rejected"]
    assert res.summary["coverage"] < 0.95
    # Plateaus the two laws agree on (everything after y: P(p | y) = 0.2 in both) are not rejected.
    assert not fit.loc[("y | q | v", 1), "rejected"]
    # Predicting Q's plateaus from another sample of Q: nothing is rejected at a strict level.
    same_law = S.analyze(draw(q_law, 3000, seed=5), TEMPLATE, units=("chars",), top=None,
                         predict_from=draw(q_law, 3000, seed=7), ci_level=0.999)
    assert same_law.summary["n_rejected"] == 0


def test_exact_predictions_pick_outputs_by_their_probability_not_their_sample_frequency():
    """With exact probabilities the staircases are chosen by probability: choosing the most frequent
    outputs of the measured sample would favour those that came up more often than their law says."""
    probs = law()
    mass_of = {}
    for k, v in probs.items():
        for m in range(4):
            mass_of[k[:m]] = mass_of.get(k[:m], 0.0) + v
    res = S.analyze(draw(probs, 500, seed=9), TEMPLATE, units=("chars",), top=3,
                    prefix_mass=lambda c: mass_of.get(tuple(c), 0.0))
    want = sorted(probs, key=lambda k: (-probs[k], k))[:3]
    assert [tg.choices for tg in res.targets] == want
    assert res.summary["check"] == "exact" and res.summary["n_prediction_samples"] == 0
    with pytest.raises(CritwinError, match="at most one"):
        S.analyze(draw(probs, 10, seed=1), TEMPLATE, units=("chars",), prefix_mass=lambda c: 1.0,
                  predict_from=draw(probs, 10, seed=2))
    with pytest.raises(CritwinError, match="at least 2 samples"):
        S.analyze(draw(probs, 1, seed=1), TEMPLATE, units=("chars",))
