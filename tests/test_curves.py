"""scan / Curve: batching, counting, intervals, merging, on-disk form and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _testbeds import CoinSampler, parity
from scipy import stats

from critwin.curves import Curve, decode_label, encode_label, scan, wilson_interval
from critwin.errors import CritwinError
from critwin.types import Failure


class ScriptedSampler:
    """Returns draw j at time t as the integer (t, j) -> 10*t + j; counts the backend calls."""

    time_unit = "tokens"
    t_max = 10.0

    def __init__(self, fail_every: int = 0):
        self.calls: list[tuple[list[float], int]] = []
        self.fail_every = fail_every

    def sample(self, n, rng):
        return [0] * n

    def forward_reverse(self, x, ts, n, rng):
        self.calls.append((list(ts), n))
        out = []
        for t in ts:
            row = []
            for j in range(n):
                if self.fail_every and j % self.fail_every == 0:
                    row.append(Failure("engine error"))
                else:
                    row.append(int(10 * t + j))
            out.append(row)
        return out




def test_wilson_matches_scipy():
    for k, n in [(0, 10), (3, 10), (10, 10), (57, 200), (199, 200), (1, 1)]:
        for level in (0.9, 0.95, 0.99):
            lo, hi = wilson_interval(k, n, level)
            ref = stats.binomtest(k, n).proportion_ci(level, method="wilson")
            assert float(lo) == pytest.approx(ref.low, abs=1e-12)
            assert float(hi) == pytest.approx(ref.high, abs=1e-12)
    lo, hi = wilson_interval(0, 0)
    assert np.isnan(lo) and np.isnan(hi)


def test_scan_batches_everything_in_one_call_and_counts_exactly():
    s = ScriptedSampler()
    curve = scan(s, 0, [3, 1, 2], 5, parity, seed=0)
    assert len(s.calls) == 1 and s.calls[0] == ([3.0, 1.0, 2.0], 5)
    assert list(curve.t) == [1.0, 2.0, 3.0]  # sorted
    # reference = parity(0) = "even"; draws at t are 10t + j, j = 0..4 -> even for j = 0, 2, 4
    assert list(curve.n_kept) == [3, 3, 3]
    assert list(curve.n_valid) == [5, 5, 5]
    assert list(curve.n_failed) == [0, 0, 0]
    assert curve.label_counts[0] == {"even": 3, "odd": 2}
    assert np.allclose(curve.p_hat, 0.6)
    assert curve.reference == "even" and curve.time_unit == "tokens" and curve.t_max == 10.0


def test_failures_and_unreadable_samples_are_counted_separately():
    s = ScriptedSampler(fail_every=3)  # draws 0, 3 fail in the backend

    def feature(sample):
        return None if sample % 5 == 1 else parity(sample)  # draw 1 at t=0 (sample 1) is unreadable

    seen = []
    curve = scan(s, 0, [0, 1], 6, feature, on_draws=seen.append)
    # t = 0: samples 1, 2, 4, 5 (0, 3 failed); 1 unreadable -> valid 2, 4, 5
    assert curve.n_failed[0] == 3 and curve.n_valid[0] == 3 and curve.n_kept[0] == 2
    assert curve.n_total[0] == 6
    draws = seen[0]
    assert draws.failures[0][0] == "engine error" and draws.failures[0][1] == "feature returned None"
    assert draws.labels[0][0] is None and draws.labels[0][2] == "even"


def test_batch_feature_gives_same_curve_as_per_sample():
    class Batched:
        def __call__(self, s):
            return parity(s)

        def batch(self, samples):
            return [parity(s) for s in samples]

    a = scan(ScriptedSampler(), 0, [1, 2], 7, parity)
    b = scan(ScriptedSampler(), 0, [1, 2], 7, Batched())
    assert np.array_equal(a.n_kept, b.n_kept) and a.label_counts == b.label_counts


def test_same_seed_same_curve_and_statistics_are_sane():
    a = scan(CoinSampler(), True, [0, 1, 2, 3], 400, bool, seed=7)
    b = scan(CoinSampler(), True, [0, 1, 2, 3], 400, bool, seed=np.random.default_rng(7))
    c = scan(CoinSampler(), True, [0, 1, 2, 3], 400, bool, seed=8)
    assert np.array_equal(a.n_kept, b.n_kept)
    assert not np.array_equal(a.n_kept, c.n_kept)
    lo, hi = a.wilson(0.999)
    truth = 1 - a.t / 4
    assert np.all((lo <= truth) & (truth <= hi))


def test_adding_draws_to_an_existing_curve_pools_counts():
    first = scan(CoinSampler(), True, [0, 2], 100, bool, seed=1)
    more = scan(CoinSampler(), True, [1, 2], 50, bool, seed=2, curve=first)
    alone = scan(CoinSampler(), True, [1, 2], 50, bool, seed=2)
    assert list(more.t) == [0.0, 1.0, 2.0]
    assert list(more.n_valid) == [100, 50, 150]
    assert more.n_kept[2] == first.n_kept[1] + alone.n_kept[1]
    with pytest.raises(CritwinError, match="same sample"):
        scan(CoinSampler(), True, [1], 5, bool, curve=first, reference=False)


def test_curve_frame_round_trip_through_parquet(tmp_path):
    curve = Curve(
        t=[0.0, 1.5],
        n_valid=[3, 2],
        n_kept=[2, 0],
        n_failed=[1, 0],
        label_counts=({("a", 1): 2, ("b", 2): 1}, {7: 1, "x": 1}),
        reference=("a", 1),
        time_unit="ou",
        t_max=3.0,
    )
    path = tmp_path / "c.parquet"
    curve.to_frame().to_parquet(path)
    back = Curve.from_frame(pd.read_parquet(path))
    assert back.reference == ("a", 1) and back.t_max == 3.0
    assert back.label_counts == curve.label_counts
    assert np.array_equal(back.n_failed, curve.n_failed)
    assert decode_label(encode_label((1, ("u", True), 2.5))) == (1, ("u", True), 2.5)


@pytest.mark.parametrize(
    ("schedule", "n", "match"),
    [
        ([0, 11], 3, r"t=11 is outside \[0, 10\]"),
        ([-0.5], 3, "outside"),
        ([float("nan")], 3, "outside"),
        ([], 3, "empty"),
        ([1, 1], 3, "repeated"),
        (["a"], 3, "list of numbers"),
        ([1], 0, "n=0"),
        ([1], 2.5, "whole number"),
        ([1], True, "whole number"),
    ],
)
def test_bad_schedule_and_n_are_one_line_errors(schedule, n, match):
    with pytest.raises(CritwinError, match=match) as err:
        scan(ScriptedSampler(), 0, schedule, n, parity)
    assert "\n" not in str(err.value)


def test_feature_that_raises_on_a_draw_fails_that_draw_with_the_reason():
    """User feature code that raises on one draw: that draw is a failed item (never an outcome) carrying the
    error's first line, the other draws are counted, and the scan finishes."""

    def boom(sample):
        if sample == 12:
            raise ValueError("cannot parse\nsecond line")
        return parity(sample)

    seen = []
    curve = scan(ScriptedSampler(), 0, [1], 4, boom, on_draws=seen.append)
    assert curve.n_failed.tolist() == [1] and curve.n_valid.tolist() == [3]
    assert curve.label_counts[0] == {"odd": 2, "even": 1}  # draws 10, 11, 13 (12 failed)
    assert seen[0].failures[0] == [None, None, "feature raised ValueError('cannot parse')", None]

    class Batched:
        def __call__(self, sample):
            return parity(sample)

        def batch(self, samples):
            if 21 in samples:
                raise RuntimeError("batch broke")
            return [parity(s) for s in samples]

    seen.clear()
    curve = scan(ScriptedSampler(), 0, [1, 2], 3, Batched(), on_draws=seen.append)
    assert curve.n_failed.tolist() == [0, 3] and curve.n_valid.tolist() == [3, 0]
    assert seen[0].failures[1] == ["feature.batch raised RuntimeError('batch broke')"] * 3


def test_feature_that_returns_unhashable_or_fails_on_x_is_a_one_line_error():
    def boom_x(sample):
        raise ValueError("cannot parse\nsecond line")

    with pytest.raises(
        CritwinError, match=r"feature raised ValueError\('cannot parse'\) on the scanned sample x"
    ) as e:
        scan(ScriptedSampler(), 0, [1], 4, boom_x)
    assert "\n" not in str(e.value)
    with pytest.raises(CritwinError, match="unhashable list"):
        scan(ScriptedSampler(), 0, [1], 4, lambda s: [s])
    with pytest.raises(CritwinError, match="returned None for the scanned sample"):
        scan(ScriptedSampler(), 0, [1], 4, lambda s: None)
    with pytest.raises(CritwinError, match="not a Sampler"):
        scan(object(), 0, [1], 4, parity)


def test_curve_rejects_inconsistent_counts():
    with pytest.raises(CritwinError, match="strictly ascending"):
        Curve([1.0, 0.0], [1, 1], [1, 1], [0, 0], ({"a": 1}, {"a": 1}), "a", "ou")
    with pytest.raises(CritwinError, match="disagree"):
        Curve([0.0], [2], [1], [0], ({"a": 2},), "a", "ou")
    with pytest.raises(CritwinError, match="lacks columns"):
        Curve.from_frame(pd.DataFrame({"t": [0.0]}))


class _Streaming(CoinSampler):
    """Yields one row per t (a backend that streams its draws), counting how many it has produced."""

    def __init__(self):
        self.yielded = 0

    def forward_reverse(self, x, ts, n, rng):
        for row in super().forward_reverse(x, ts, n, rng):
            self.yielded += 1
            yield row


def test_a_streaming_backend_gives_the_same_curve_as_a_list():
    ts = [0.0, 1.0, 2.0, 3.0]
    listed = scan(CoinSampler(), True, ts, 50, lambda s: s, seed=3)
    streaming = _Streaming()
    seen = []
    streamed = scan(streaming, True, ts, 50, lambda s: s, seed=3, on_draws=seen.append)
    assert streaming.yielded == 4 and streamed.to_frame().equals(listed.to_frame())
    assert [len(r) for r in seen[0].samples] == [50] * 4


def test_a_stream_with_too_few_or_too_many_rows_breaks_the_contract():
    class Short(CoinSampler):
        def forward_reverse(self, x, ts, n, rng):
            yield from list(super().forward_reverse(x, ts, n, rng))[:-1]

    class Long(CoinSampler):
        def forward_reverse(self, x, ts, n, rng):
            rows = list(super().forward_reverse(x, ts, n, rng))
            yield from rows + rows[:1]

    for sampler, got in ((Short(), "returned 1 rows for 2 times"), (Long(), "more than 2 rows")):
        with pytest.raises(CritwinError, match=got):
            scan(sampler, True, [0.0, 1.0], 5, lambda s: s, seed=0)
