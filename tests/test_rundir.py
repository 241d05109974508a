"""Run directories: round trip, partial results after a failure, corrupt or foreign folders."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from critwin.codecs import encode_sample
from critwin.curves import scan
from critwin.errors import CritwinError
from critwin.features.base import ChoiceFeature
from critwin.rundir import RunDir, TheoryInterval
from critwin.samplers.toy_lm import ToyLMSampler, demo_language
from critwin.windows import detect_windows


def small_run(path, fail_second: bool = False) -> RunDir:
    lang = demo_language()
    sampler = ToyLMSampler(lang)
    x = sampler.sample(1, np.random.default_rng(0))[0]
    run = RunDir.create(path, "unit", {"seed": 0})
    ts = [0.0, 3.0, 10.0]
    for i, name in enumerate(["mood", "ending"]):
        feature = ChoiceFeature(lang, name)
        if fail_second and i == 1:

            def feature(sample):  # noqa: F811 - a feature that breaks mid-run
                raise RuntimeError("grader crashed")

        curve = scan(sampler, x, ts, 20, feature, seed=i, on_draws=run.draws_writer(name))
        run.write_curve(name, curve, exact=lang.exact_curve(x, ts, [name]))
        run.write_case(
            name,
            detected=detect_windows(curve),
            theory=[TheoryInterval(2.0, 3.0, label="w")],
            eps=0.1,
            meta={"title": name.title(), "n": 20},
        )
    run.sync_derived()  # derived files are rebuilt when asked (a run's report does it), not per case
    return run


def test_round_trip(tmp_path):
    run = small_run(tmp_path / "r")
    back = RunDir.open(tmp_path / "r")
    assert back.case_names() == ["mood", "ending"]
    rec = back.case("mood")
    orig = run.case("mood")
    assert np.array_equal(rec.curve.n_kept, orig.curve.n_kept) and rec.curve.reference == orig.curve.reference
    assert np.allclose(rec.exact, orig.exact) and rec.theory[0].label == "w" and rec.meta["n"] == 20
    samples = back.read_samples()
    assert len(samples) == 2 * 3 * 20
    assert set(samples.columns) == {"case", "call", "t", "draw", "label", "failed", "failure", "codec",
                                    "sample"}
    assert json.loads(samples.loc[samples["case"] == "mood", "label"].iloc[0]) in ("happy", "calm", "grim")
    assert set(samples["codec"]) == {"json"}  # toy-LM samples are token lists: plain values
    assert isinstance(json.loads(samples["sample"].iloc[0]), list)
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["critwin_run"] == 3 and cfg["experiment"] == "unit" and cfg["seed"] == 0


def test_partial_results_stay_readable_after_a_failure(tmp_path):
    with pytest.raises(CritwinError, match="grader crashed"):
        small_run(tmp_path / "r", fail_second=True)
    run = RunDir.open(tmp_path / "r")
    assert run.case_names() == ["mood"]
    assert run.case("mood").curve is not None
    assert len(run.read_samples()) == 60
    from critwin.report.build import write_report

    summary = write_report(run)
    assert [c["name"] for c in summary["cases"]] == ["mood"]


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "no config.json"),
        (
            lambda p: (p.mkdir(), (p / "config.json").write_text("{not json")),
            "damaged and has no readable copy",
        ),
        (
            lambda p: (p.mkdir(), (p / "config.json").write_text('{"name": "other tool"}')),
            "lacks 'critwin_run'",
        ),
        (lambda p: (p.mkdir(), (p / "config.json").write_text('{"critwin_run": 99}')), "format 99"),
    ],
)
def test_foreign_or_missing_folders_are_one_line_errors(tmp_path, damage, match):
    p = tmp_path / "r"
    damage(p)
    with pytest.raises(CritwinError, match=match) as err:
        RunDir.open(p)
    assert "\n" not in str(err.value)


def test_damaged_derived_files_are_rebuilt_from_the_case_records(tmp_path):
    small_run(tmp_path / "r")
    want_curves = pd.read_parquet(tmp_path / "r" / "curves.parquet")
    want_windows = (tmp_path / "r" / "windows.json").read_text()
    for damage in (
        lambda p: (p / "curves.parquet").write_bytes(b"PAR1 garbage"),
        lambda p: (p / "curves.parquet").unlink(),
        lambda p: pd.DataFrame({"x": [1]}).to_parquet(p / "curves.parquet"),
        lambda p: (p / "windows.json").write_text("[1, 2"),
        lambda p: (p / "windows.json").write_text('{"critwin_run": 2, "cases": {}}'),
    ):
        damage(tmp_path / "r")
        run = RunDir.open(tmp_path / "r")
        assert run.healed and run.case_names() == ["mood", "ending"]
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "r" / "curves.parquet"), want_curves)
        assert (tmp_path / "r" / "windows.json").read_text() == want_windows
    assert RunDir.open(tmp_path / "r").healed == []  # nothing left to repair
    # Whole but behind (built from other records): rebuilt on open too, and not reported as damage.
    (tmp_path / "r" / "windows.json").write_text('{"critwin_run": 3, "source": "0", "cases": {}}')
    assert RunDir.open(tmp_path / "r").healed == []
    assert (tmp_path / "r" / "windows.json").read_text() == want_windows
    with pytest.raises(CritwinError, match="not an empty folder"):
        RunDir.create(tmp_path / "r", "unit")


def test_encode_sample():
    assert json.loads(encode_sample(np.array([1.5, 2.0]))) == [1.5, 2.0]
    assert json.loads(encode_sample((1, 2))) == [1, 2]
    assert json.loads(encode_sample(float("nan"))) == "nan"
