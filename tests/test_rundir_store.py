"""The run store with many writers: real processes writing one run directory at once lose and corrupt
nothing; derived files are rebuilt only when asked, atomically, while others write; samples go through a
codec per type (arrays as npy bytes, read back bit-identical); format-2 run directories open and resume."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import critwin.codecs as codecs
import critwin.rundir as rundir
from critwin.codecs import decode_sample, register_codec
from critwin.curves import Curve, Draws
from critwin.errors import CritwinError
from critwin.rundir import RunDir

FIXTURE = Path(__file__).parent / "fixtures" / "rundir" / "format2"
SPAWN = multiprocessing.get_context("spawn")
TS = ((0.0, 1.0), (2.0,))  # the forward times of the two scan calls of every generated case
K = 3  # draws per t


# ------------------------------------------------------------------------------------------------------------
# Generated cases: the truth every check compares against, computed again from the seed by the reader
# ------------------------------------------------------------------------------------------------------------
def case_name(w: int, i: int) -> str:
    return f"writer {w}/case {i}"  # '/' and spaces: names are not file names


def case_content(w: int, i: int) -> tuple[str, list[Draws], Curve]:
    """Two scan calls of draws (float32 arrays, plain dicts, uint8 images) and the curve of their labels."""
    rng = np.random.default_rng([w, i])
    calls = []
    counts: list[Counter] = []
    for ts in TS:
        samples, labels = [], []
        for t in ts:
            row = [rng.standard_normal((2, 3)).astype(np.float32), {"w": w, "i": i, "t": t},
                   rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)]
            lab = [str(rng.choice(["a", "b"])) for _ in range(K)]
            samples.append(row)
            labels.append(lab)
            counts.append(Counter(lab))
        calls.append(Draws(ts, samples, labels, [[None] * K for _ in ts], "a"))
    curve = Curve(t=np.array([t for ts in TS for t in ts]), n_valid=np.full(len(counts), K),
                  n_kept=np.array([c["a"] for c in counts]), n_failed=np.zeros(len(counts), dtype=int),
                  label_counts=tuple(dict(c) for c in counts), reference="a", time_unit="steps", t_max=2.0)
    return case_name(w, i), calls, curve


def store_case(run: RunDir, w: int, i: int, pad: int = 0) -> None:
    name, calls, curve = case_content(w, i)
    run.start_case(name)
    for d in calls:
        run.write_draws(name, d)
    run.write_curve(name, curve, order=[w, i])
    run.write_case(name, meta={"w": w, "i": i}, order=[w, i])
    run.append_record("problems", {"case": name, "w": w, "i": i, "pad": "x" * pad})


def assert_case_stored(run: RunDir, samples: pd.DataFrame, w: int, i: int) -> None:
    """The case's curve and every one of its draws (decoded) equal the generated ones, bit for bit."""
    name, calls, curve = case_content(w, i)
    rec = run.case(name)
    assert rec.curve is not None and list(rec.curve.n_kept) == list(curve.n_kept), name
    assert rec.curve.label_counts == curve.label_counts and rec.meta == {"w": w, "i": i}
    rows = samples[samples["case"] == name]
    assert len(rows) == sum(len(d.ts) for d in calls) * K, name
    for call, d in enumerate(calls):
        for t, want_row, want_labels in zip(d.ts, d.samples, d.labels, strict=True):
            got = rows[(rows["call"] == call) & (rows["t"] == t)].sort_values("draw")
            assert [json.loads(v) for v in got["label"]] == want_labels
            for have, want in zip(got["sample"], want_row, strict=True):
                if isinstance(want, np.ndarray):
                    assert have.dtype == want.dtype and have.shape == want.shape
                    assert have.tobytes() == want.tobytes()
                else:
                    assert have == want


def _files(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------------------
# Worker processes (spawned: a fresh interpreter each, like a runner's workers)
# ------------------------------------------------------------------------------------------------------------
def _writer(path: str, w: int, n: int, other: int, barrier, results) -> None:
    run = RunDir.open(path)
    barrier.wait(timeout=120)
    for i in range(n):
        store_case(run, w, i, pad=(i % 4) * 60_000)  # lines up to 180 kB: far beyond any atomic write size
    barrier.wait(timeout=120)  # both done: this process checks the other's cases through its own RunDir
    results.put((w, run.writer, sum(run.is_finished(case_name(other, i)) for i in range(n))))


def _slow_writer(path: str, n: int, done) -> None:
    run = RunDir.open(path)
    for i in range(n):
        store_case(run, 0, i)
        time.sleep(0.02)  # spread the writes over the other process's rebuilds
    done.set()


def _abandoned_attempt(path: str, case: str) -> None:
    """A worker that draws part of `case` and dies before storing it."""
    run = RunDir.open(path)
    run.start_case(case)
    _, calls, _ = case_content(9, 9)
    run.write_draws(case, calls[0])


def _run_process(target, *args, timeout: float = 300) -> None:
    p = SPAWN.Process(target=target, args=args)
    p.start()
    p.join(timeout)
    assert p.exitcode == 0, f"{target.__name__} ended with {p.exitcode}"


# ------------------------------------------------------------------------------------------------------------
# Many writers
# ------------------------------------------------------------------------------------------------------------
def test_two_processes_writing_one_run_lose_and_corrupt_nothing(tmp_path):
    n = 40
    path = tmp_path / "run"
    watcher = RunDir.create(path, "unit", {"seed": 0})  # opened before the writers start
    barrier, results = SPAWN.Barrier(2), SPAWN.Queue()
    procs = [SPAWN.Process(target=_writer, args=(str(path), w, n, 1 - w, barrier, results)) for w in (0, 1)]
    for p in procs:
        p.start()
    got = sorted(results.get(timeout=600) for _ in procs)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    # Each writer saw every case of the other finished; their writer ids differ.
    assert [(w, seen) for w, _, seen in got] == [(0, n), (1, n)] and got[0][1] != got[1][1]
    want = [case_name(w, i) for w in (0, 1) for i in range(n)]
    assert all(watcher.is_finished(c) for c in want) and watcher.case_names() == want

    run = RunDir.open(path)
    assert run.healed == [] and run.damaged_cases == set() and run.case_names() == want
    samples = run.read_samples(decode=True)
    assert len(samples) == 2 * n * 3 * K
    for w in (0, 1):
        for i in range(n):
            assert_case_stored(run, samples, w, i)
    # The folder read the documented way holds the same rows, none twice, in parts named by both writers.
    raw = pd.read_parquet(path / "samples.parquet")
    assert len(raw) == len(samples) and not raw.duplicated(["case", "call", "t", "draw"]).any()
    writers = {re.fullmatch(r"part-[0-9a-f]{16}-\d{5}-([0-9a-f]{16})\.parquet", f.name).group(1)
               for f in (path / "samples.parquet").iterdir()}
    assert writers == {got[0][1], got[1][1]}
    # Every stream record exactly once, and whole.
    recs = run.records("problems")
    assert sorted((r["w"], r["i"]) for r in recs) == [(w, i) for w in (0, 1) for i in range(n)]
    assert all(r["pad"] == "x" * ((r["i"] % 4) * 60_000) for r in recs)
    assert (path / "problems.jsonl").read_text().count("\n") == 2 * n
    # Derived files: rebuilt on open (they were behind), holding every case.
    curves = pd.read_parquet(path / "curves.parquet")
    assert list(dict.fromkeys(curves["case"])) == want and len(curves) == 2 * n * 3
    assert list(json.loads((path / "windows.json").read_text())["cases"]) == want
    assert not [f for f in path.rglob(".*") if f.is_file() and ".tmp" in f.name]  # no temporary file left


def test_a_process_appending_while_another_rebuilds_the_derived_files(tmp_path):
    n = 60
    path = tmp_path / "run"
    run = RunDir.create(path, "unit", {"seed": 0})
    done = SPAWN.Event()
    p = SPAWN.Process(target=_slow_writer, args=(str(path), n, done))
    p.start()
    seen = set()
    deadline = time.time() + 600
    while time.time() < deadline:
        finished = done.is_set()
        run.sync_derived()
        # Whatever moment the rebuild caught, the two files are whole, built from one set of records (the
        # same digest), and hold each case exactly as its writer stored it.
        windows = json.loads((path / "windows.json").read_text())
        curves = pd.read_parquet(path / "curves.parquet")
        source = pq.read_schema(path / "curves.parquet").metadata[b"critwin_source"].decode()
        assert source == windows["source"]
        in_curves = list(dict.fromkeys(curves["case"])) if len(curves) else []
        assert set(windows["cases"]) <= set(in_curves)
        for name in in_curves:
            i = int(name.rsplit(" ", 1)[1])
            assert list(curves.loc[curves["case"] == name, "n_kept"]) == list(case_content(0, i)[2].n_kept)
        seen.add(len(in_curves))
        if finished:
            break
    p.join(60)
    assert p.exitcode == 0 and max(seen) == n
    assert any(0 < k < n for k in seen), seen  # some rebuilds ran while the writer was half-way
    # A rebuild of unchanged records is idempotent and writes nothing.
    before = os.stat(path / "curves.parquet"), os.stat(path / "windows.json")
    assert run.sync_derived() is False and RunDir.open(path).healed == []
    after = os.stat(path / "curves.parquet"), os.stat(path / "windows.json")
    assert [(s.st_ino, s.st_mtime_ns) for s in before] == [(s.st_ino, s.st_mtime_ns) for s in after]
    samples = run.read_samples(decode=True)
    for i in range(n):
        assert_case_stored(run, samples, 0, i)


def test_parts_of_an_attempt_abandoned_elsewhere_never_mix_into_the_case(tmp_path):
    path = tmp_path / "run"
    RunDir.create(path, "unit", {"seed": 0})
    run = RunDir.open(path)  # lists the samples before the other worker draws anything
    name = case_name(0, 0)
    _run_process(_abandoned_attempt, str(path), name)  # another worker draws part of the case, then dies
    store_case(run, 0, 0)  # the case is handed to this writer and computed in full
    samples = RunDir.open(path).read_samples(decode=True)
    assert_case_stored(run, samples, 0, 0)
    assert len(list((path / "samples.parquet").glob("part-*"))) == 3  # the abandoned part is still there
    # Once it is older than any write in progress could be, opening the run removes it.
    old = time.time() - 2 * rundir.STALE_TEMP_S
    for f in (path / "samples.parquet").glob("part-*"):
        if f.name not in run._records[name]["parts"]:
            os.utime(f, (old, old))
    again = RunDir.open(path)
    assert any("abandoned" in line for line in again.healed)
    assert len(list((path / "samples.parquet").glob("part-*"))) == 2
    assert_case_stored(again, again.read_samples(decode=True), 0, 0)


def test_storing_a_case_does_not_rewrite_the_derived_files(tmp_path):
    path = tmp_path / "run"
    run = RunDir.create(path, "unit", {})

    def stamp() -> list[tuple[int, int]]:
        stats = [os.stat(path / f) for f in ("curves.parquet", "windows.json")]
        return [(s.st_ino, s.st_mtime_ns) for s in stats]

    first = stamp()
    for i in range(3):
        store_case(run, 0, i)
        time.sleep(0.01)  # a rewrite would show as a new inode or modification time
        assert stamp() == first
    assert run.sync_derived() is True and stamp() != first
    curves = pd.read_parquet(path / "curves.parquet")
    assert list(dict.fromkeys(curves["case"])) == [case_name(0, i) for i in range(3)]
    synced = stamp()
    assert run.sync_derived() is False and stamp() == synced


def test_a_stream_line_torn_by_a_killed_writer_is_closed_by_the_next_append(tmp_path):
    run = RunDir.create(tmp_path / "run", "unit", {})
    run.append_record("log", {"n": 1})
    with open(tmp_path / "run" / "log.jsonl", "ab") as f:
        f.write(b'{"n": 2, "tor')  # a writer killed mid-line
    run.append_record("log", {"n": 3})
    assert run.records("log") == [{"n": 1}, {"n": 3}]
    with pytest.raises(CritwinError, match="not a plain file name") as err:
        run.append_record("../outside", {"n": 4})
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------------------
# Codecs
# ------------------------------------------------------------------------------------------------------------
def _one_call(samples: list) -> Draws:
    return Draws((0.0,), [list(samples)], [["a"] * len(samples)], [[None] * len(samples)], "a")


def test_arrays_round_trip_bit_identically_and_are_stored_as_binary(tmp_path):
    rng = np.random.default_rng(7)
    latent = rng.standard_normal((4, 4, 64, 64)).astype(np.float16)
    latent.flat[:6] = [np.nan, np.inf, -np.inf, -0.0, np.float16(6e-8), np.float16(-6e-8)]  # specials
    latent.view(np.uint16).flat[6] = 0x7E01  # a NaN with a payload: must survive bit for bit
    kinds = {
        "image f32": list(rng.standard_normal((4, 3, 64, 64)).astype(np.float32)),
        "latent f16": list(latent),
        "image u8": list(rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)),
    }
    run = RunDir.create(tmp_path / "run", "unit", {})
    for name, arrays in kinds.items():
        run.write_draws(name, _one_call(arrays))
    odd = [np.asfortranarray(kinds["image f32"][0]), kinds["image f32"][1][:, ::2, 1:], np.array(3.5),
           np.zeros((0, 3), dtype=np.int16), np.array([True, False]), np.arange(6, dtype=">i4").reshape(2, 3)]
    run.write_draws("odd", _one_call(odd))
    samples = RunDir.open(tmp_path / "run").read_samples(decode=True)
    raw = pd.read_parquet(tmp_path / "run" / "samples.parquet")
    assert set(raw["codec"]) == {"npy"}
    for name, arrays in {**kinds, "odd": odd}.items():
        got = samples[samples["case"] == name].sort_values("draw")["sample"].tolist()
        assert len(got) == len(arrays)
        for have, want in zip(got, arrays, strict=True):
            assert have.dtype == want.dtype and have.shape == want.shape
            assert np.ascontiguousarray(have).tobytes() == np.ascontiguousarray(want).tobytes()
    # Stored as bytes, not as text: each part is close to the raw size of its arrays.
    for name, arrays in kinds.items():
        (part,) = (tmp_path / "run" / "samples.parquet").glob(f"part-{rundir.case_key(name)}-*.parquet")
        raw_bytes = sum(a.nbytes for a in arrays)
        assert part.stat().st_size < 2 * raw_bytes, (name, part.stat().st_size, raw_bytes)


def test_each_sample_type_has_its_codec(tmp_path):
    rng = np.random.default_rng(1)
    pair = {"image": rng.standard_normal((3, 8, 8)).astype(np.float32),
            "latent": rng.standard_normal((4, 2, 2)).astype(np.float16)}
    plain = {"text": "two words", "ids": (1, 2, np.int64(3)), "p": np.float64(0.25), "x": float("nan")}
    run = RunDir.create(tmp_path / "run", "unit", {})
    run.write_draws("c", _one_call([pair, b"\x89PNG\r\n\x1a\n\x00", plain, None, [1.5, "a"]]))
    rows = run.read_samples().sort_values("draw")
    assert list(rows["codec"]) == ["npz", "bytes", "json", "json", "json"]
    assert rows["sample"].iloc[2] == b'{"text": "two words", "ids": [1, 2, 3], "p": 0.25, "x": "nan"}'
    back = [decode_sample(c, d) for c, d in zip(rows["codec"], rows["sample"], strict=True)]
    assert list(back[0]) == ["image", "latent"]
    assert all(back[0][k].dtype == v.dtype and back[0][k].tobytes() == v.tobytes() for k, v in pair.items())
    assert back[1:] == [b"\x89PNG\r\n\x1a\n\x00", {"text": "two words", "ids": [1, 2, 3], "p": 0.25,
                                                   "x": "nan"}, None, [1.5, "a"]]


class Spectrum:
    """A sample type of some later backend, unknown to the run store."""

    def __init__(self, freqs: np.ndarray):
        self.freqs = np.asarray(freqs, dtype=">f8")


def test_a_backend_registers_its_own_codec(tmp_path, monkeypatch):
    monkeypatch.setattr(codecs, "_CODECS", dict(codecs._CODECS))  # registrations end with the test
    register_codec("spectrum", lambda v: isinstance(v, Spectrum), lambda v: b"SPEC" + v.freqs.tobytes(),
                   lambda b: Spectrum(np.frombuffer(b[4:], dtype=">f8")))
    # Newest first: a codec for float64 arrays takes them from "npy"; other arrays stay with "npy".
    register_codec("f64", lambda v: isinstance(v, np.ndarray) and v.dtype == np.float64,
                   lambda v: v.astype("<f8").tobytes(), lambda b: np.frombuffer(b, dtype="<f8"))
    assert codecs.codecs()[:3] == ["f64", "spectrum", "npy"] and codecs.codecs()[-1] == "json"
    run = RunDir.create(tmp_path / "run", "unit", {})
    run.write_draws("c", _one_call([Spectrum([1.0, 2.5]), np.array([0.5, 1.0]), np.array([1], np.int8)]))
    rows = run.read_samples(decode=True).sort_values("draw")
    assert list(run.read_samples().sort_values("draw")["codec"]) == ["spectrum", "f64", "npy"]
    assert rows["sample"].iloc[0].freqs.tolist() == [1.0, 2.5]
    assert rows["sample"].iloc[1].tolist() == [0.5, 1.0]
    # A process that lacks the codec reads the stored bytes, and is told what is missing when it decodes.
    del codecs._CODECS["spectrum"]
    assert len(run.read_samples()) == 3
    with pytest.raises(CritwinError, match="codec 'spectrum'.*not registered") as err:
        run.read_samples(decode=True)
    assert "\n" not in str(err.value)
    for bad, match in (
        (lambda: register_codec("Bad Name", bool, bytes, bytes), "codec name 'Bad Name' is not allowed"),
        (lambda: register_codec("x", bool, "encode", bytes), "encode is str, not a function"),
    ):
        with pytest.raises(CritwinError, match=match):
            bad()
    register_codec("texty", lambda v: isinstance(v, Spectrum), lambda v: "not bytes", str)
    with pytest.raises(CritwinError, match="codec 'texty' returned str, not bytes"):
        run.write_draws("d", _one_call([Spectrum([1.0])]))


# ------------------------------------------------------------------------------------------------------------
# Format-2 run directories
# ------------------------------------------------------------------------------------------------------------
def _fixture_samples() -> pd.DataFrame:
    """The format-2 fixture's draws, read straight from its files (samples as JSON text)."""
    return pd.concat([pq.read_table(f).to_pandas() for f in sorted((FIXTURE / "samples.parquet").iterdir())],
                     ignore_index=True)


def test_a_format2_run_opens_upgraded_and_resumes(tmp_path):
    path = tmp_path / "old"
    shutil.copytree(FIXTURE, path)
    old_curves = pd.read_parquet(FIXTURE / "curves.parquet")
    old_windows = json.loads((FIXTURE / "windows.json").read_text())
    old_cfg = json.loads((FIXTURE / "config.json").read_text())
    assert old_cfg["critwin_run"] == 2

    run = RunDir.open(path)
    assert any("upgraded the run directory from format 2 to 3" in line for line in run.healed)
    for f in ("config.json", ".critwin/config.json"):
        cfg = json.loads((path / f).read_text())
        assert cfg == {**old_cfg, "critwin_run": 3, "upgraded_from": 2}
    assert run.case_names() == ["mood", "ending"]
    assert run.is_finished("mood") and not run.is_finished("ending")
    # The draws are the ones the old code wrote, now with a codec column; the documented read works.
    want = _fixture_samples()
    got = run.read_samples(decode=True)
    assert list(got["case"]) == list(want["case"]) and list(got["label"]) == list(want["label"])
    assert list(got["sample"]) == [json.loads(s) for s in want["sample"]]
    assert set(pd.read_parquet(path / "samples.parquet")["codec"]) == {"json"}
    # Derived files rebuilt in format 3 with the same content as the old code's.
    new_curves = pd.read_parquet(path / "curves.parquet")
    pd.testing.assert_frame_equal(new_curves, old_curves, check_dtype=False)
    new_windows = json.loads((path / "windows.json").read_text())
    assert new_windows["critwin_run"] == 3 and new_windows["cases"] == old_windows["cases"]
    assert run.records("problems") == [{"id": "mood", "status": "ok"}, {"id": "ending", "status": "started"}]
    assert run.read_parts("outputs").to_dict("list") == {"text": ["a", "b"], "n": [1, 2]}
    assert RunDir.open(path).healed == []  # upgraded once

    # Resume: the unfinished case is redone; the finished one is kept as it was.
    name, calls, curve = case_content(0, 0)
    run.start_case("ending")
    for d in calls:
        run.write_draws("ending", d)
    run.write_curve("ending", curve)
    run.write_case("ending", meta={"w": 0, "i": 0})
    back = RunDir.open(path)
    assert back.is_finished("ending") and back.case("ending").curve.label_counts == curve.label_counts
    samples = back.read_samples()
    mood = samples[samples["case"] == "mood"]
    want_mood = want[want["case"] == "mood"]["sample"]
    assert [json.loads(s) for s in mood["sample"]] == [json.loads(s) for s in want_mood]
    assert len(samples[samples["case"] == "ending"]) == 3 * K
    assert not pd.read_parquet(path / "samples.parquet").duplicated(["case", "call", "t", "draw"]).any()


def test_a_read_only_format2_run_is_read_as_it_is(tmp_path, monkeypatch):
    path = tmp_path / "old"
    shutil.copytree(FIXTURE, path)
    before = _files(path)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: mode != os.W_OK and real_access(p, mode, **kw))
    run = RunDir.open(path)
    assert run.config["critwin_run"] == 2 and run.healed == []
    want = _fixture_samples()
    got = run.read_samples(decode=True)
    assert list(got["codec"]) == ["json"] * len(want)
    assert list(got["sample"]) == [json.loads(s) for s in want["sample"]]
    assert [c.name for c in run.cases()] == ["mood", "ending"] and run.case("mood").meta["n"] == 8
    assert _files(path) == before  # nothing written


# ------------------------------------------------------------------------------------------------------------
# Two configs, one directory
# ------------------------------------------------------------------------------------------------------------
def test_another_config_pointed_at_a_run_is_refused_and_loses_nothing(tmp_path):
    path = tmp_path / "run"
    run = RunDir.create(path, "unit", {"seed": 0, "n": 4})
    store_case(run, 0, 0)
    run.sync_derived()
    before = _files(path)
    with pytest.raises(CritwinError, match=r"other settings \(seed: 0 there, 1 now\)") as err:
        RunDir.check_resumable(path, "unit", {"seed": 1, "n": 4}, ["seed", "n"])
    assert "\n" not in str(err.value)
    with pytest.raises(CritwinError, match="not an empty folder"):
        RunDir.create(path, "unit", {"seed": 1})
    assert _files(path) == before
    same = RunDir.check_resumable(path, "unit", {"seed": 0, "n": 4}, ["seed", "n"])
    assert same is not None and same.is_finished(case_name(0, 0))


def test_two_runs_created_in_one_folder_at_the_same_moment(tmp_path, monkeypatch):
    """The config is published exclusively: when another process's `create` wins the race (simulated by
    publishing its config right before ours), other settings are refused and the same settings join."""
    real = rundir._publish_new

    def race(theirs):
        def publish(path, text):
            real(path, json.dumps({"critwin_run": 3, "experiment": "unit", "created": "then", **theirs}))
            return real(path, text)

        return publish

    monkeypatch.setattr(rundir, "_publish_new", race({"seed": 1}))
    with pytest.raises(CritwinError, match="another run with other settings was started there") as err:
        RunDir.create(tmp_path / "a", "unit", {"seed": 0})
    assert "\n" not in str(err.value)
    assert json.loads((tmp_path / "a" / "config.json").read_text())["seed"] == 1  # theirs, untouched
    monkeypatch.setattr(rundir, "_publish_new", race({"seed": 0}))
    joined = RunDir.create(tmp_path / "b", "unit", {"seed": 0})
    assert joined.config["created"] == "then"
