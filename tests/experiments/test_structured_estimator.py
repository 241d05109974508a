"""The prefix-conditional estimator and the theory overlay: hand-made samples with known fractions, and the
exact hierarchical toy language (measured staircase = exact staircase within intervals)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from critwin.errors import CritwinError
from critwin.experiments import structured as S
from critwin.features.choices import ChoiceTemplate
from critwin.samplers.base import Failure
from critwin.samplers.toy_lm import Choice, Filler, ToyLanguage, ToyLMSampler
from critwin.stats import newcombe_interval


# ----------------------------------------------------------------------------------------------------------
# Hand-made sample sets
# ----------------------------------------------------------------------------------------------------------
def test_prefix_curve_counts_on_a_hand_made_set():
    seqs = ["aa", "aa", "ab", "ba", "bb", "bb", "bx"]
    labels = ["aa", "aa", "ab", "ba", "bb", "bb", None]  # "bx" could not be read
    idx = S.PrefixIndex(seqs, labels)
    c = S.prefix_curve(idx, "bb", "bb", "chars")
    # t = 0: prefix "bb" (2 samples, both kept); t = 1: prefix "b" (4 samples, 1 failed, 2 of 3 kept);
    # t = 2: empty prefix (7 samples, 1 failed, 2 of 6 kept).
    assert list(c.t) == [0, 1, 2]
    assert list(c.n_valid) == [2, 3, 6] and list(c.n_kept) == [2, 2, 2] and list(c.n_failed) == [0, 1, 1]
    np.testing.assert_allclose(c.p_hat, [1.0, 2 / 3, 2 / 6])
    assert c.t_max == 2 and c.time_unit == "chars"
    # A sequence that leaves the sample set gets zero counts, not an error.
    assert list(S.prefix_curve(idx, "az", "az", "chars").n_valid)[:1] == [0]


def _outputs(template, spec):
    out = []
    for text, n in spec:
        out += [S.make_output(text, template)] * n
    return out


def test_analyze_known_fractions_with_variants_and_wrong_fillings():
    t = ChoiceTemplate.parse("{x|y} {p|q}.")
    outs = _outputs(t, [("x p.", 30), ("x q.", 10), ("y p.", 5), ("y q.", 15), ("X  P.", 5), ("z p.", 5)])
    outs.append(S.make_output(Failure("oom"), t))
    # Predictions from the same samples (predict_from=outs) pin the counting arithmetic exactly.
    res = S.analyze(outs, t, units=("chars",), top=None, predict_from=outs)
    assert res.summary["status_counts"] == {"ok": 65, "no_match": 5, "failed": 1}
    assert res.summary["check"] == "other_sample"
    top = res.targets[0]
    assert top.choices == ("x", "p") and top.count == 35 and top.text == "x p."
    st_ = top.staircases["chars"]
    c = st_.curve  # t = 4 - j for the representative "x p."
    # j = 0: 35 of 65 well-filled outputs (6 failed: 5 wrong + 1 backend failure).
    assert (c.n_kept[4], c.n_valid[4], c.n_failed[4]) == (35, 65, 6)
    # j = 1, 2 ("x", "x "): the 40 outputs spelled with "x"; the variant "X  P." has another prefix.
    assert (c.n_kept[3], c.n_valid[3]) == (30, 40) and (c.n_kept[2], c.n_valid[2]) == (30, 40)
    assert (c.n_kept[1], c.n_valid[1]) == (30, 30) and (c.n_kept[0], c.n_valid[0]) == (30, 30)
    assert st_.deciding == (0, 2)
    assert st_.theory_windows == ((3.0, 4.0), (1.0, 2.0))
    # Plateau predictions: count(c) / count(c[:m]) over well-filled outputs.
    np.testing.assert_allclose(st_.predicted, [1, 1, 35 / 45, 35 / 45, 35 / 65])
    fit = res.fit[(res.fit["target"] == "x | p")].sort_values("choices_revealed")
    # Each plateau is measured at its last prefix: j = 0 (""), 2 ("x "), 4 ("x p.").
    assert list(fit["j"]) == [0, 2, 4]
    np.testing.assert_allclose(fit["measured"], [35 / 65, 30 / 40, 1.0])
    # The spelling variant breaks "text before a decision does not depend on the choices": the fit shows it.
    np.testing.assert_allclose(fit["residual"], [0.0, 30 / 40 - 35 / 45, 0.0], atol=1e-12)
    # The last plateau (all choices known) is 1 = 1 by definition and is left out of the check.
    assert list(fit["tested"]) == [True, True, False]
    # The default check predicts from one seeded half and measures on the other.
    held = S.analyze(outs, t, units=("chars",), top=None)
    est, meas = S.split_halves(len(outs), 0)
    assert held.summary["check"] == "held_out" and held.summary["n_measurement_samples"] == len(meas)
    row = held.fit[(held.fit["target"] == "x | p") & (held.fit["choices_revealed"] == 1)].iloc[0]
    e_ch = [outs[i].choices for i in est]
    m_tx = [outs[i] for i in meas]
    n_pred = sum(c is not None and c[0] == "x" for c in e_ch)
    k_pred = sum(c == ("x", "p") for c in e_ch)
    n_meas = sum(o.text.startswith("x ") and o.choices is not None for o in m_tx)
    k_meas = sum(o.text.startswith("x ") and o.choices == ("x", "p") for o in m_tx)
    assert (row["n_pred"], row["n_pred_kept"], row["n"], row["n_kept"]) == (n_pred, k_pred, n_meas, k_meas)
    assert (row["residual_lo"], row["residual_hi"]) == pytest.approx(
        newcombe_interval(k_meas, n_meas, k_pred, n_pred, 0.95)
    )

    exact = S.analyze(outs, t, units=("chars",), equality="exact", top=1)
    c2 = exact.targets[0].staircases["chars"].curve
    assert (c2.n_kept[4], c2.n_valid[4], c2.n_failed[4]) == (30, 70, 1)  # only the backend failure fails


def test_deciding_position_for_options_sharing_a_beginning():
    t = ChoiceTemplate.parse("{sat|slept} {cat|cats} are.")
    o = S.make_output("slept cats are.", t)
    # "slept" vs "sat": decided at the second character; "cats" vs "cat": decided by the "s" after "cat".
    assert S.deciding_chars(t, o) == (1, 9)
    o2 = S.make_output("sat cat are.", t)
    assert S.deciding_chars(t, o2) == (1, 7)  # the space after "cat" tells it from "cats"


def test_token_starts_from_a_decoder():
    vocab = ["he", "llo", " wor", "ld"]
    text, starts = S.token_starts([0, 1, 2, 3], lambda ids: "".join(vocab[i] for i in ids))
    assert text == "hello world" and starts == (0, 2, 5, 9)
    assert S.char_to_token(starts, 6) == 2 and S.char_to_token(starts, 0) == 0


def test_bad_inputs():
    t = ChoiceTemplate.parse("{x|y}.")
    with pytest.raises(CritwinError, match="no samples"):
        S.analyze([], t)
    with pytest.raises(CritwinError, match="units"):
        S.analyze([S.make_output("x.", t)], t, units=("words",))
    with pytest.raises(CritwinError, match="decoder"):
        S.make_output((1, 2, 3), t)
    with pytest.raises(CritwinError, match="n=0"):
        S.draw_outputs(object(), 0, t)
    with pytest.raises(CritwinError, match="token offsets"):

        class R:
            response_ids = (1, 2)
            response_text = "x."

        S.analyze([S.make_output(R(), t)], t, units=("tokens",))


# ----------------------------------------------------------------------------------------------------------
# The exact hierarchical language
# ----------------------------------------------------------------------------------------------------------
def toy_language() -> ToyLanguage:
    return ToyLanguage(
        (
            Filler(1, ("the",)),
            Choice("speed", (("quick",), ("lazy",)), (0.6, 0.4)),
            Choice("animal", (("cat",), ("dog",)), {"quick": (0.7, 0.3), "lazy": (0.2, 0.8)}, given="speed"),
            Filler(1, ("sat",)),
            Choice("place", (("on", "the", "mat"), ("on", "the", "rug")), (0.5, 0.5)),
            Choice("mood", (("happily",), ("calmly",), ("grimly",)), (0.5, 0.3, 0.2)),
        )
    )


TOY_TEMPLATE = "the {quick|lazy} {cat|dog} sat {on the mat|on the rug} {happily|calmly|grimly}"


def exact_prefix_mass(lang: ToyLanguage):
    names = lang.choice_names

    def mass(prefix: tuple[str, ...]) -> float:
        key = lang.feature_key(names[: len(prefix)])
        want = [lang.choice(n).option_names.index(v) for n, v in zip(names, prefix, strict=False)]
        return float(lang.assignment_probs[np.all(key == np.array(want, dtype=np.int64), axis=1)].sum())

    return mass


def test_theory_overlay_equals_the_exact_staircase_of_the_toy_language():
    """With exact choice probabilities, the predicted plateaus ARE the exact curve (no sampling at all)."""
    lang = toy_language()
    t = ChoiceTemplate.parse(TOY_TEMPLATE)
    names = lang.choice_names
    rows = lang.assignment_tokens.copy()
    filler = lang.complete((), 1, np.random.default_rng(0))[0]  # one-word fillers: always the same token
    rows[:, ~lang.choice_mask] = filler[~lang.choice_mask]
    outs = [S.make_output(tuple(int(v) for v in row), t, decode=lang.decode) for row in rows]
    res = S.analyze(outs, t, units=("tokens",), top=None, prefix_mass=exact_prefix_mass(lang))
    assert len(res.targets) == len(lang.assignments)
    for tg in res.targets:
        st_ = tg.staircases["tokens"]
        x = lang.encode(tg.text)
        assert st_.deciding == tuple(lang.decision_position(n) for n in names)
        ts = np.arange(lang.length + 1)
        np.testing.assert_allclose(st_.predicted, lang.exact_curve(x, ts, names), atol=1e-12)


def test_measured_staircase_equals_the_exact_one_within_intervals():
    lang = toy_language()
    t = ChoiceTemplate.parse(TOY_TEMPLATE)
    names = lang.choice_names
    outs = S.draw_outputs(ToyLMSampler(lang), 4000, t, batch_size=1000, seed=3, decode=lang.decode)
    assert all(o.status == "ok" for o in outs)
    res = S.analyze(outs, t, units=("tokens", "chars"), top=6)
    n_points = sum(len(tg.staircases["tokens"].curve) for tg in res.targets)
    level = 1 - 0.001 / n_points  # Bonferroni over every point of every curve: family-wise error 0.001
    for tg in res.targets:
        st_ = tg.staircases["tokens"]
        x = lang.encode(tg.text)
        exact = lang.exact_curve(x, st_.curve.t.astype(int), names)
        lo, hi = st_.curve.wilson(level)
        assert np.all((lo <= exact + 1e-12) & (exact <= hi + 1e-12)), (tg.key, st_.curve.p_hat, exact)
        # Every detected window is the one-token window of a deciding token, and every big jump is found.
        found = {(w.t_lo, w.t_hi) for w in st_.windows}
        assert found <= set(st_.theory_windows)
        full = lang.exact_curve(x, np.arange(lang.length + 1), names)
        for a, b in st_.theory_windows:
            if full[int(a)] - full[int(b)] >= 0.15:
                assert (a, b) in found, (tg.key, a, b)
        # Character curve: the same plateaus, with jumps at the deciding characters.
        ch = tg.staircases["chars"]
        assert len(ch.curve) == len(tg.text) + 1
        assert all(any(w.t_lo <= a and b <= w.t_hi for a, b in ch.theory_windows) for w in ch.windows)
    assert res.summary["windows_detected"] > 0
    assert res.summary["windows_at_deciding_token"] == res.summary["windows_detected"]
    # The text before each deciding token is the same whatever is chosen later, so with predictions from
    # the same samples the token-prefix counts equal the choice-prefix counts: every residual is exactly 0.
    # That is why the default check predicts from samples it does not measure on.
    same = S.analyze(outs, t, units=("tokens", "chars"), top=6, predict_from=outs)
    assert same.summary["max_abs_residual"] == 0.0
    assert res.summary["max_abs_residual"] > 0.0 and res.summary["check"] == "held_out"
    # ... and the plateaus match the exact conditional probabilities within their intervals.
    ex = S.analyze(outs, t, units=("tokens",), top=6, prefix_mass=exact_prefix_mass(lang), ci_level=0.999)
    assert ex.summary["check"] == "exact" and ex.summary["n_rejected"] == 0
    z = ex.fit["z"].to_numpy(float)[ex.fit["tested"].to_numpy(bool)]
    assert np.all(np.abs(z) < stats.norm.ppf(1 - 0.0005 / len(z)))


def test_run_directory_round_trip_and_report(tmp_path):
    from critwin.report.build import write_report
    from critwin.rundir import RunDir

    lang = toy_language()
    t = ChoiceTemplate.parse(TOY_TEMPLATE)
    outs = S.draw_outputs(ToyLMSampler(lang), 300, t, seed=1, decode=lang.decode)
    res = S.analyze(outs, t, top=3)
    run = RunDir.create(tmp_path / "run", "structured", {"template": t.as_text(), "n": 300})
    S.write_run(res, run)
    summary = write_report(run)
    again = RunDir.open(tmp_path / "run")
    t2, outs2 = S.read_run(again)
    assert t2 == t and outs2 == outs
    res2 = S.analyze(outs2, t2, top=3)
    assert res2.fit.equals(res.fit) and res2.summary == res.summary
    # Every staircase is a case of the run directory, with its predicted plateaus and one-unit theory windows.
    assert len(summary["cases"]) == 2 * len(res.targets)
    rec = again.case(S.case_name(res.targets[0], "tokens"))
    np.testing.assert_allclose(rec.exact, res.targets[0].staircases["tokens"].predicted)
    assert [(w.lo, w.hi) for w in rec.theory] == list(res.targets[0].staircases["tokens"].theory_windows)
    assert rec.meta["pieces"][:2] == ["the", " quick"] or rec.meta["pieces"][:2] == ["the", " lazy"]
    html = (tmp_path / "run" / "index.html").read_text()
    assert "Structured output: overview" in html and html.count("<img") >= len(res.targets) * 2
    with pytest.raises(CritwinError, match="not a `critwin structured` run"):
        S.read_run(RunDir.create(tmp_path / "other", "jailbreak", {}))
