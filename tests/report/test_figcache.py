"""The figure cache: a figure is drawn once per distinct input, a damaged cache file is never shown, and the
folder keeps exactly the figures of the last build."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pytest

from critwin.report.figcache import FOLDER, cached, figure_cache
from critwin.report.plots import png_bytes

calls: list[tuple] = []


def _draw(ys: list[float], title: str = "") -> bytes:
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot(ys)
    ax.set_title(title)
    return png_bytes(fig)


@cached
def line_figure(ys: list[float], *, title: str = "") -> bytes:
    calls.append((tuple(ys), title))
    return _draw(ys, title)


@cached
def maybe_figure(draw: bool) -> bytes | None:
    calls.append((draw,))
    return _draw([1.0, 2.0]) if draw else None


@pytest.fixture(autouse=True)
def _fresh_calls():
    calls.clear()


def files(run) -> list[str]:
    folder = run / FOLDER
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_outside_a_cache_block_every_call_draws(tmp_path):
    a = line_figure([1.0, 2.0])
    b = line_figure([1.0, 2.0])
    assert a == b and len(calls) == 2
    assert a.startswith(b"\x89PNG")


def test_equal_inputs_are_drawn_once_across_builds_and_the_bytes_are_the_fresh_ones(tmp_path):
    fresh = line_figure.__wrapped__([1.0, 3.0], title="x")
    calls.clear()
    with figure_cache(tmp_path):
        first = line_figure([1.0, 3.0], title="x")
        again = line_figure([1.0, 3.0], title="x")
    with figure_cache(tmp_path):  # a later build (a re-drawn report)
        later = line_figure([1.0, 3.0], title="x")
    assert first == again == later == fresh
    assert calls == [((1.0, 3.0), "x")]
    assert len(files(tmp_path)) == 1


def test_any_change_of_input_draws_again(tmp_path):
    with figure_cache(tmp_path):
        line_figure([1.0, 3.0])
        line_figure([1.0, 3.5])
        line_figure([1.0, 3.0], title="other")
        line_figure([1.0, math.nan])
        line_figure([1.0, None])  # a missing value is not a NaN
    assert len(calls) == 5 and len(files(tmp_path)) == 5


def test_figures_the_last_build_did_not_use_are_removed_after_it(tmp_path):
    with figure_cache(tmp_path):
        line_figure([1.0])
        line_figure([2.0])
    with figure_cache(tmp_path):
        line_figure([2.0])
        with figure_cache(tmp_path):  # nested on the same run: one cache, pruned once at the end
            line_figure([3.0])
        assert len(files(tmp_path)) == 3
    assert len(files(tmp_path)) == 2
    assert [c[0] for c in calls] == [(1.0,), (2.0,), (3.0,)]


def test_a_build_that_fails_keeps_the_cache(tmp_path):
    with figure_cache(tmp_path):
        line_figure([1.0])
    with pytest.raises(RuntimeError), figure_cache(tmp_path):
        raise RuntimeError("boom")
    assert len(files(tmp_path)) == 1


@pytest.mark.parametrize("damage", ["truncate", "garbage", "swap"])
def test_a_damaged_cache_file_is_drawn_again_never_shown(tmp_path, damage):
    with figure_cache(tmp_path):
        want = line_figure([1.0, 2.0])
        other = line_figure([5.0, 1.0])
    (f,) = [p for p in (tmp_path / FOLDER).iterdir() if p.read_bytes() == want]
    if damage == "truncate":
        f.write_bytes(want[: len(want) // 2])
    elif damage == "garbage":
        f.write_bytes(b"\x00garbage" * 10)
    else:  # another valid PNG under this file's name
        f.write_bytes(other)
    calls.clear()
    with figure_cache(tmp_path):
        assert line_figure([1.0, 2.0]) == want
    assert len(calls) == 1
    assert want in [p.read_bytes() for p in (tmp_path / FOLDER).iterdir()]


def test_nothing_to_draw_is_not_stored(tmp_path):
    with figure_cache(tmp_path):
        assert maybe_figure(False) is None
        assert maybe_figure(False) is None
        assert maybe_figure(True) is not None
        assert maybe_figure(True) is not None
    assert calls == [(False,), (False,), (True,)]
    assert len(files(tmp_path)) == 1


def test_a_run_where_the_cache_cannot_be_written_still_gets_its_figures(tmp_path):
    (tmp_path / FOLDER).parent.mkdir(parents=True)
    (tmp_path / FOLDER).write_text("a file where the folder should be")
    with figure_cache(tmp_path):
        a = line_figure([1.0])
        b = line_figure([1.0])
    assert a == b and a.startswith(b"\x89PNG") and len(calls) == 2
