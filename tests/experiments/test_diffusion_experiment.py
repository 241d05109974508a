"""`critwin diffusion` on the bundled digit DDPM: a small run end to end (windows per generated digit, clone
agreement, t_S and the Gaussian-mixture theory), same seed same numbers, a rerun resumes without
recomputing, the report re-draws from the run folder alone; t_S checked against numpy's eigenvalues."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from critwin.cli import main
from critwin.driver import run
from critwin.experiments.diffusion import DiffusionExperiment, _crossing, digits_data, pooled_crossing
from critwin.report.rebuild import rebuild_run
from critwin.rundir import RunDir

pytestmark = pytest.mark.slow  # about two and a half minutes on two cores

SMALL = dict(cases_n=2, n=24, levels=6, clones=6, steps=25, seed=0)


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, one_thread):
    exp = DiffusionExperiment(**SMALL)
    out = tmp_path_factory.mktemp("diffusion") / "run"
    return exp, run(exp, factory=exp.sampler, out=out)


def _cases(summary):
    return summary["diffusion"]["cases"]


def test_every_generated_digit_gets_a_window_and_the_theories(small_run):
    _, res = small_run
    cases = _cases(res.summary)
    assert len(cases) == 2 and res.n_failed == 0
    x, _ = digits_data()
    lam = np.linalg.eigvalsh(np.cov(x.reshape(len(x), -1), rowvar=False))[-1]
    from diffusers import DDPMScheduler

    from critwin.samplers.diffusers_pipeline import bundled_pipeline_dir

    ac = DDPMScheduler.from_pretrained(bundled_pipeline_dir(), subfolder="scheduler").alphas_cumprod.numpy()
    for c in cases:
        assert c["measured_windows"], c  # the acceptance: a window for every scanned digit
        for (lo, hi), (klo, khi) in zip(c["measured_windows"], c["measured_windows_steps"], strict=True):
            assert 0 < lo < hi and klo < khi  # timesteps grow with noise, like OU time
        assert c["t_S"] == pytest.approx(0.5 * np.log(lam), abs=1e-9)
        assert c["theory_windows"] and c["theory_windows"][0][0] < c["theory_windows"][0][1]
        assert c["clone_agreement_crossing"] is None or c["clone_agreement_crossing"] > 0
    rec = [r for r in RunDir.open(res.out).records("records") if r.get("status") == "ok"][0]
    assert rec["t_S_step"] == int(np.argmax(ac < 1 / lam))
    assert all(0 <= a <= 1 for a in rec["clone_agreement"])
    # The clone grid is its own: 2 × levels geometric points from t_hi / 64, each 64^(1/(2·levels − 1))
    # times the last.
    ct = np.asarray(rec["clone_ts"])
    assert len(ct) == len(rec["clone_agreement"]) == 12 and ct[0] == pytest.approx(2.5 / 64)
    assert np.allclose(ct[1:] / ct[:-1], 64 ** (1 / 11)) and ct[-1] == pytest.approx(2.5)
    pooled = res.summary["diffusion"]["pooled_clone_agreement"]
    assert pooled["cases"] == 2 and pooled["clone_ts"] == rec["clone_ts"]


def test_crossing_interpolates_linearly_from_t0_and_the_pooled_curve_averages_cases():
    # Agreement 1 at t = 0 (a restart at no noise keeps the class); falls 1 → 0.5 between t = 0.2 and 0.4:
    # 0.775 is 45% of the way down, at t = 0.29.
    assert _crossing(np.array([0.2, 0.4, 0.6]), np.array([1.0, 0.5, 0.4])) == pytest.approx(0.29)
    assert _crossing(np.array([0.1, 0.2]), np.array([0.55, 0.5])) == pytest.approx(0.05)  # 0.225/0.45 of 0.1
    assert _crossing(np.array([0.1, 0.2]), np.array([0.9, float("nan")])) is None
    ts = [0.1, 0.2, 0.3]
    recs = [
        {"clone_ts": ts, "clone_agreement": [1.0, 1.0, 0.5], "t_S": 0.5},
        {"clone_ts": ts, "clone_agreement": [1.0, 0.6, 0.5], "t_S": 0.5},
        {"clone_ts": [0.1, 0.5], "clone_agreement": [0.0, 0.0], "t_S": 0.5},  # another grid: left out
        {"clone_ts": [], "clone_agreement": None, "t_S": 0.5},
    ]
    p = pooled_crossing(recs)
    # mean [1, 0.8, 0.5]: crosses between t = 0.2 (0.8) and 0.3 (0.5) at 0.2 + 0.025 / 0.3 × 0.1.
    assert p["cases"] == 2 and p["clone_agreement"] == [1.0, 0.8, 0.5]
    assert p["crossing"] == pytest.approx(0.2 + 0.1 * 0.025 / 0.3)
    assert p["crossing_over_t_S"] == pytest.approx(p["crossing"] / 0.5)
    assert pooled_crossing(recs[3:]) is None


def test_same_seed_same_numbers_a_rerun_resumes_and_the_report_redraws(small_run, tmp_path, one_thread):
    exp, res = small_run
    again = run(DiffusionExperiment(**SMALL), factory=exp.sampler, out=res.out)
    assert again.n_resumed == 2 and again.n_computed == 0
    fresh = run(DiffusionExperiment(**SMALL), factory=exp.sampler, out=tmp_path / "fresh")
    assert _cases(fresh.summary) == _cases(res.summary)
    before = json.loads((res.out / "summary.json").read_text())
    rebuild_run(RunDir.open(res.out))
    assert json.loads((res.out / "summary.json").read_text()) == before
    html = (res.out / "index.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 * 3  # curve, clone agreement, image grid per case


def test_the_demo_command_prints_one_json_object(tmp_path, capsys, one_thread):
    with pytest.raises(SystemExit) as exc:
        main(["diffusion", "demo", "--out", str(tmp_path / "d"), "--cases", "1", "-n", "8", "--levels", "3",
              "--clones", "0", "--json"])
    assert exc.value.code in (0, None)
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"run_dir", "index", "cases"} and len(out["cases"]) == 1
    assert {"name", "class", "measured_windows", "measured_windows_steps", "t_S", "theory_windows",
            "clone_agreement_crossing"} <= set(out["cases"][0])


def test_a_user_latent_pipeline_scans_end_to_end_with_a_user_classifier(tmp_path, capsys, one_thread):
    """`critwin diffusion scan` on a Stable-Diffusion-layout pipeline (tiny random components) with a
    scikit-learn classifier saved by skops: one JSON object, every case measured on the pipeline's own
    schedule, no theory without --data, and `critwin report` re-draws it without the model."""
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    from critwin.samplers.diffusers_tiny import save_tiny_latent_pipeline

    pipe = save_tiny_latent_pipeline(tmp_path / "pipe", seed=0)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (300, 16, 16, 3)) ** rng.uniform(0.3, 3, (300, 1, 1, 1))
    y = np.where(x.reshape(300, -1).mean(axis=1) > 0.5, "bright", "dark")
    sio.dump(LogisticRegression(max_iter=500).fit(x.reshape(300, -1), y), tmp_path / "bright.skops")
    out = tmp_path / "run"
    args = ["diffusion", "scan", "--pipeline", str(pipe), "--classifier", str(tmp_path / "bright.skops"),
            "--threshold", "0", "--prompt", "a red circle", "--cases", "2", "-n", "6", "--levels", "3",
            "--clones", "2", "--steps", "10", "--out", str(out), "--json"]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code in (0, None)
    got = json.loads(capsys.readouterr().out)
    assert got["failed"] == 0 and len(got["cases"]) == 2
    for c in got["cases"]:
        assert c["class"] in ("bright", "dark") and c["t_S"] is None and c["theory_windows"] == []
    recs = [r for r in RunDir.open(out).records("records") if r.get("status") == "ok"]
    assert len(recs) == 2
    for r in recs:
        steps = r["start_timesteps"]
        assert steps == sorted(steps) and len(set(steps)) == 3  # three noise levels, three start steps
        assert len(r["clone_agreement"]) == 6 and all(0 <= a <= 1 for a in r["clone_agreement"])
    before = json.loads((out / "summary.json").read_text())
    with pytest.raises(SystemExit) as exc:
        main(["report", str(out), "--json"])
    assert exc.value.code in (0, None)
    capsys.readouterr()
    assert json.loads((out / "summary.json").read_text())["diffusion"] == before["diffusion"]
