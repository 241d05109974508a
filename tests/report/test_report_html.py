"""Reports: self-contained HTML with embedded PNGs, extension sections, `critwin report`, and a headless
Chromium render that checks every image loads."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from critwin.curves import scan
from critwin.report.build import build_report, register_sections, write_report
from critwin.report.html import Section, Table, render_html
from critwin.rundir import RunDir, TheoryInterval

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


class Coin:
    time_unit = "ou"
    t_max = 3.0

    def sample(self, n, rng):
        return [True] * n

    def forward_reverse(self, x, ts, n, rng):
        return [list(rng.random(n) < (1.0 if t < 1.5 else 0.3)) for t in ts]


def make_run(path, experiment="unit", title="Coin <b>case</b>") -> RunDir:
    run = RunDir.create(path, experiment, {"title": "Test report"})
    ts = np.round(np.arange(0, 3.01, 0.25), 10)
    for i in range(2):
        name = f"coin{i}"
        c = scan(Coin(), True, ts, 100, bool, seed=i, on_draws=run.draws_writer(name))
        run.write_curve(name, c, exact=np.where(ts < 1.5, 1.0, 0.3))
        run.write_case(name, theory=[TheoryInterval(1.25, 1.5)], meta={"title": title, "n": 100})
    return run


def test_report_is_self_contained_with_png_figures(tmp_path):
    run = make_run(tmp_path / "r")
    html, summary = build_report(run)
    srcs = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    assert len(srcs) == 1 + 2  # coverage chart + one curve per case
    for s in srcs:
        assert base64.b64decode(s)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Coin &lt;b&gt;case&lt;/b&gt;" in html and "<b>case</b>" not in html  # titles are escaped
    assert "http://" not in html and "https://" not in html
    assert [c["name"] for c in summary["cases"]] == ["coin0", "coin1"]
    assert summary["cases"][0]["theory_windows"] == [[1.25, 1.5]]
    assert 0.0 <= summary["cases"][0]["coverage"] <= 1.0


def test_experiments_can_add_sections(tmp_path):
    @register_sections("unit-extra")
    def extra(run, cases):
        return [Section("Extra analysis", "added by an experiment", [Table(["a"], [[len(cases)]])])]

    run = make_run(tmp_path / "r", experiment="unit-extra")
    html, _ = build_report(run)
    assert "Extra analysis" in html and "added by an experiment" in html
    assert render_html("t", [Section("only")]).count("<section") == 1


def test_report_command_redraws_and_rejects_foreign_folders(tmp_path):
    run = make_run(tmp_path / "r")
    write_report(run)
    (tmp_path / "r" / "index.html").unlink()
    exe = str(Path(sys.executable).parent / "critwin")
    ok = subprocess.run(
        [exe, "report", str(tmp_path / "r"), "--json"], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "r" / "index.html").exists()
    assert '"cases"' in ok.stdout.strip().splitlines()[-1]
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config.json").write_text("{}")
    bad = subprocess.run([exe, "report", str(tmp_path / "x")], capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "not a critwin run directory" in bad.stderr


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe:
        return exe
    try:
        subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, timeout=600, check=True)
    except (OSError, subprocess.SubprocessError) as err:
        pytest.skip(f"headless Chromium is not installed and `apt-get install -y chromium` failed: {err}")
    exe = shutil.which("chromium")
    if not exe:
        pytest.skip("apt-get installed no chromium binary")
    return exe


@pytest.mark.slow
def test_report_renders_in_headless_chromium_with_all_images(tmp_path):
    run = make_run(tmp_path / "r")
    write_report(run)
    html = (tmp_path / "r" / "index.html").read_text()
    probe = (
        "<script>window.addEventListener('load',()=>{const im=Array.from(document.images);"
        "const ok=im.filter(i=>i.complete&&i.naturalWidth>0).length;const d=document.createElement('div');"
        "d.id='critwin-check';d.textContent='images '+ok+'/'+im.length;"
        "document.body.appendChild(d);});</script>"
    )
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", probe + "</body>"))
    exe = chromium()
    dom = subprocess.run(
        [
            exe,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    found = re.search(r'id="critwin-check">images (\d+)/(\d+)<', dom.stdout)
    assert found, dom.stderr[-2000:]
    assert found.group(1) == found.group(2) == "3"
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            exe,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile2'}",
            "--window-size=1100,1400",
            f"--screenshot={shot}",
            (tmp_path / "r" / "index.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    assert img[..., :3].std() > 0.05  # not a blank page
