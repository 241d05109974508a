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
from critwin.experiments.diffusion import DiffusionExperiment, digits_data
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
