"""The structured-output experiment as data, run by the driver: one case per seeded batch of outputs, the
analysis over all batches by the report writer from the run directory alone."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_structured_estimator import TOY_TEMPLATE, toy_language

from critwin.driver import run
from critwin.errors import CritwinError
from critwin.experiments import structured as S
from critwin.features.choices import ChoiceTemplate
from critwin.rundir import RunDir, case_key
from critwin.samplers.toy_lm import ToyLMSampler
from critwin.serialize import jsonable


class DecodingToyLM(ToyLMSampler):
    """The exact toy-language sampler with the decoder the experiment reads token offsets with (what an
    LM sampler's `.decode` is)."""

    def decode(self, ids):
        return self.language.decode(ids)


N, BATCH, SEED = 300, 64, 1


def _experiment(**settings) -> S.StructuredExperiment:
    cfg = S.StructuredConfig.from_flat(template=TOY_TEMPLATE, n=N, batch_size=BATCH, seed=SEED, top=3,
                                       **settings)
    return S.StructuredExperiment(cfg, "toy language")


def _derived(path) -> dict:
    return {name: (path / name).read_text() for name in (S.SUMMARY, S.FIT, "summary.json", "windows.json")}


@pytest.fixture(scope="module")
def sampler():
    return DecodingToyLM(toy_language())


@pytest.fixture(scope="module")
def whole(sampler, tmp_path_factory):
    out = tmp_path_factory.mktemp("structured") / "whole"
    return out, run(_experiment(), sampler, out=out)


def test_a_driver_run_equals_drawing_and_analyzing_in_memory(sampler, whole):
    out, res = whole
    t = ChoiceTemplate.parse(TOY_TEMPLATE)
    outs = S.draw_outputs(sampler, N, t, batch_size=BATCH, seed=SEED, decode=sampler.decode)
    assert res.n_cases == -(-N // BATCH) and res.n_failed == 0
    stored = RunDir.open(out)
    assert S.read_run(stored)[1] == outs and S.missing_outputs(stored) == []
    # One part per batch case, named by its case key; batch b drew from default_rng([seed, b]).
    assert stored.part_names(S.OUTPUTS_TABLE) == sorted(case_key(str(b)) for b in range(res.n_cases))
    first = S.outputs_from_frame(stored.read_part(S.OUTPUTS_TABLE, case_key("0")))
    again = S.draw_batch(sampler, BATCH, t, np.random.default_rng([SEED, 0]), decode=sampler.decode)
    assert first == again == outs[:BATCH]
    # The report writer analysed all batches with the stored settings.
    expected = S.analyze(outs, t, top=3)
    assert json.loads((out / S.SUMMARY).read_text()) == jsonable(expected.summary)
    assert (out / S.FIT).read_text() == expected.fit.to_csv(index=False)
    assert len(res.summary["cases"]) == 2 * len(expected.targets)
    assert "Structured output: overview" in (out / "index.html").read_text()
    cfg = json.loads((out / "config.json").read_text())
    assert {k: cfg[k] for k in ("n", "batch_size", "seed", "top", "level", "ci_level")} == {
        "n": N, "batch_size": BATCH, "seed": SEED, "top": 3, "level": 0.99, "ci_level": 0.95}
    assert S.StructuredConfig.from_run(stored) == _experiment().cfg


def test_shards_in_any_order_equal_one_run_and_the_analysis_waits_for_all_batches(sampler, whole, tmp_path):
    out, _ = whole
    shards = tmp_path / "shards"
    run(_experiment(), sampler, out=shards, shard=(2, 3))
    part = RunDir.open(shards)
    assert S.missing_outputs(part) and not (shards / S.SUMMARY).exists()  # no analysis of some outputs
    for i in (0, 1):
        run(_experiment(), sampler, out=shards, shard=(i, 3))
    assert _derived(shards) == _derived(out)


def test_a_lost_batch_is_drawn_again_and_the_report_rebuilds_from_the_directory(sampler, whole, tmp_path):
    from critwin.report.rebuild import rebuild_run

    out, _ = whole
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / S.OUTPUTS / f"part-{case_key('2')}.parquet").unlink()
    for name in (S.SUMMARY, S.FIT, "summary.json", "curves.parquet", "index.html"):
        (copy / name).unlink()
    rebuilt = rebuild_run(RunDir.open(copy))  # without the model: says what is missing
    assert rebuilt.missing == [f"outputs ({N - BATCH} of {N} drawn)"]
    again = run(_experiment(), sampler, out=copy)
    assert again.n_resumed == again.n_cases - 1 and again.n_computed == 1
    assert _derived(copy) == _derived(out)
    (copy / S.SUMMARY).unlink()
    assert rebuild_run(RunDir.open(copy)).missing == [] and _derived(copy) == _derived(out)


def test_reanalysis_copies_the_batches_and_analyses_with_other_settings(sampler, whole, tmp_path):
    out, _ = whole
    exp = S.StructuredExperiment.reanalysis(out, top=2, equality="exact")
    res = run(exp, out=tmp_path / "again")  # no sampler: the outputs come from the stored run
    t, outs = S.read_run(RunDir.open(out))
    assert S.read_run(RunDir.open(res.out))[1] == outs
    want = S.analyze(outs, t, top=2, equality="exact").summary
    assert json.loads((res.out / S.SUMMARY).read_text()) == jsonable(want)
    cfg = json.loads((res.out / "config.json").read_text())
    assert cfg["reanalyzed_from"] == str(out) and cfg["model"] == "toy language" and cfg["top"] == 2
    # A rerun with the same settings resumes (nothing copied again); an unfinished source is refused.
    assert run(S.StructuredExperiment.reanalysis(out, top=2, equality="exact"), out=res.out).n_computed == 0
    half = tmp_path / "half"
    run(_experiment(), sampler, out=half, shard=(0, 2))
    with pytest.raises(CritwinError, match=r"only \d+ of its 300 outputs are stored; rerun the command"):
        S.StructuredExperiment.reanalysis(half)


def test_config_parts_and_bad_settings(tmp_path):
    cfg = _experiment(equality="exact", min_jump=0.1, split_seed=4).cfg
    assert S.StructuredConfig.from_flat(**cfg.to_dict()) == cfg
    assert (cfg.drawing.n, cfg.analysis.equality, cfg.analysis.min_jump, cfg.stats.split_seed) == (
        N, "exact", 0.1, 4)
    assert _experiment().sampler_settings() == {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 128,
                                                "batch_size": BATCH}
    for bad, match in (({"colour": 1}, "setting 'colour' is unknown"), ({"equality": "fuzzy"}, "equality"),
                       ({"n": 0}, "n=0"), ({"ci_level": 1.0}, "ci_level=1"), ({"mode": "loose"}, "mode")):
        with pytest.raises(CritwinError, match=match):
            S.StructuredConfig.from_flat(template=TOY_TEMPLATE, **bad)
    with pytest.raises(CritwinError, match="cannot draw outputs"):
        run(_experiment(), object(), out=tmp_path / "x")
    assert not (tmp_path / "x").exists()
