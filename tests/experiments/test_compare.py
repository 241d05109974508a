"""`critwin compare`: positions of each method read from hand-made reasoning records (known answers), their
agreement and rates at the first wrong step with Wilson intervals, and the one-line errors for runs that
cannot be compared."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from html.parser import HTMLParser
from urllib.parse import unquote

import pytest
from PIL import Image
from scipy import stats

from critwin.cli import main
from critwin.experiments.compare import agree, compare_runs, positions
from critwin.rundir import RunDir, append_jsonl


def record(
    i, *, correct=False, error=None, window=None, critical=None, pivotal=(), outcome="same", draws=100
):
    return {
        "dataset": "d",
        "id": f"p{i}",
        "case": f"d/p{i}",
        "order": [0, i],
        "status": "ok",
        "response": f"r{i}",
        "correct": correct,
        "first_error": None if error is None else {"token": error},
        "curve": {"outcome": outcome},
        "windows": [] if window is None else [{"kept_lo": window[0], "kept_hi": window[1], "jump": 0.6}],
        "critical": None
        if critical is None
        else {"critical": {"kept_lo": critical[0], "kept_hi": critical[1]}},
        "pivotal": [{"token": t, "delta": d} for t, d in pivotal],
        "n_draws": draws,
    }


def make_run(path, records, model="m"):
    run = RunDir.create(path, "reasoning", {"model": model})
    for r in records:
        append_jsonl(run.path / "problems.jsonl", r)
    return run.path


def test_positions_of_each_method():
    rec = record(
        0, window=(10, 14), critical=(12, 13), pivotal=[(12, -0.5), (20, -0.7), (5, 0.4)], outcome="same"
    )
    assert positions(rec) == {"window": (10, 14), "critical": (12, 13), "pivotal": (20, 21)}
    assert "window" not in positions(record(0, window=(1, 2), outcome="correct"))  # P(correct) windows
    assert positions(record(0, pivotal=[(5, 0.4)])) == {}  # no harmful pivotal token
    assert agree((10, 14), (16, 17)) and not agree((10, 14), (17, 18)) and agree((5, 6), (5, 6), 0)


def scan_and_critical_runs(tmp_path):
    """A scan run and a critical-tokens run of four problems with known positions and first wrong tokens."""
    scan = make_run(
        tmp_path / "scan",
        [
            record(0, error=12, window=(11, 13)),
            record(1, error=30, window=(50, 52)),
            record(2, correct=True, window=(5, 9)),
            record(3, error=8),
        ],
    )
    crit = make_run(
        tmp_path / "crit",
        [
            record(0, error=12, critical=(12, 13), outcome="correct", draws=1000),
            record(1, error=30, critical=(30, 31), outcome="correct", draws=1000),
            record(2, correct=True, outcome="correct", draws=1000),
            record(3, error=8, critical=(9, 10), outcome="correct", draws=1000),
        ],
    )
    return scan, crit


def test_rates_agreement_and_draws_from_known_records(tmp_path):
    scan, crit = scan_and_critical_runs(tmp_path)
    got = compare_runs([scan, crit])
    assert got["n_problems"] == 4
    w, c = got["methods"]["window"], got["methods"]["critical"]
    assert (w["n_with_position"], c["n_with_position"]) == (3, 3)
    assert w["at_first_error"]["n"] == 2 and w["at_first_error"]["rate"] == 0.5  # correct: not judged
    assert c["at_first_error"]["rate"] == 1.0
    ci = stats.binomtest(1, 2).proportion_ci(0.95, "wilson")
    assert w["at_first_error"]["ci"] == pytest.approx([ci.low, ci.high])
    assert (w["mean_draws"], c["mean_draws"]) == (100, 1000)
    pair = got["agreement"]["window vs critical"]  # p0: 11-13 and 12-13 agree; p1: 50-52 and 30-31 do not
    assert (pair["n"], pair["rate"]) == (2, 0.5)
    assert got["problems"]["d/p0"] == {"window": [11, 13], "critical": [12, 13]}
    assert got["first_errors"] == {"d/p0": 12, "d/p1": 30, "d/p2": None, "d/p3": 8}


def test_runs_that_cannot_be_compared_are_one_line_errors(tmp_path, capsys):
    a = make_run(tmp_path / "a", [record(0, window=(1, 2))])
    other_model = make_run(tmp_path / "b", [record(0, window=(1, 2))], model="other")
    other_data = make_run(tmp_path / "c", [record(5, window=(1, 2))])
    other_text = make_run(tmp_path / "d", [{**record(0, window=(1, 2)), "response": "something else"}])
    RunDir.create(tmp_path / "e", "structured", {})
    cases = [
        ([a], "at least two run directories"),
        ([a, other_model], "different models"),
        ([a, other_data], "share no finished problem"),
        ([a, other_text], "different original responses"),
        ([a, tmp_path / "e"], "'structured' run"),
        ([a, tmp_path / "nope"], "compare:"),
    ]
    for runs, message in cases:
        with pytest.raises(SystemExit) as done:
            main(["compare", *map(str, runs), "--json"])
        assert done.value.code == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_the_command_prints_one_json_object(tmp_path, capsys):
    a = make_run(tmp_path / "a", [record(0, error=3, window=(2, 4))])
    b = make_run(tmp_path / "b", [record(0, error=3, pivotal=[(3, -0.5)], outcome="correct")])
    forked = {**record(0, error=3, draws=40), "forks": {"n_draws": 500, "top": {"kept_lo": 3, "kept_hi": 4}}}
    assert compare_runs([a, make_run(tmp_path / "f", [forked])])["methods"]["fork"]["mean_draws"] == 540
    with pytest.raises(SystemExit) as done:
        main(["compare", str(a), str(b), "--json"])
    assert done.value.code in (0, None)
    out = json.loads(capsys.readouterr().out)
    assert out["agreement"]["window vs pivotal"]["rate"] == 1.0


class _Page(HTMLParser):
    """The tables (rows of cell texts, header row first), image sources and link targets of a page."""

    def __init__(self, text):
        super().__init__()
        self.tables, self.images, self.links, self._cell = [], [], [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "a" and not attrs["href"].startswith("#"):  # not the page's own navigation
            self.links.append(attrs["href"])

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def table(self, first_column):
        """The rows of the table whose first header is `first_column`, keyed by their first cell."""
        (rows,) = [t for t in self.tables if t[0][0] == first_column]
        return rows[0], {r[0]: r for r in rows[1:]}


def numbers(cell):
    return [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", cell)]


def shown_share(cell, share):
    """Whether a cell shows a share's rate and interval (two decimals), or an em dash when it has none."""
    if share["rate"] is None:
        return cell == "—"
    return numbers(cell) == pytest.approx([share["rate"], *share["ci"]], abs=0.005)


def snapshot(root):
    return {str(p.relative_to(root)): p.is_dir() or hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


def test_out_writes_the_comparison_and_a_report_of_its_numbers(tmp_path, capsys):
    scan, crit = scan_and_critical_runs(tmp_path)
    (scan / "index.html").write_text("<html></html>")  # the scan's own report; the critical run has none
    out = tmp_path / "cmp"
    with pytest.raises(SystemExit) as done:
        main(["compare", str(scan), str(crit), "--json", "--out", str(out)])
    assert done.value.code in (0, None)
    want = compare_runs([scan, crit])
    printed = json.loads(capsys.readouterr().out)
    assert printed == {**want, "index": str(out / "index.html")}
    assert json.loads((out / "comparison.json").read_text()) == want

    page = _Page((out / "index.html").read_text(encoding="utf-8"))
    head, rows = page.table("method")
    assert set(rows) == set(want["methods"]) == {"window", "critical"}
    col = {name: i for i, name in enumerate(head)}
    for name, m in want["methods"].items():
        row = rows[name]
        assert row[col["run"]] == m["run"]
        assert int(row[col["problems with a position"]]) == m["n_with_position"]
        assert shown_share(row[col["at the first wrong step (95% Wilson)"]], m["at_first_error"]), row
        assert int(row[col["n (wrong chains judged)"]]) == m["at_first_error"]["n"]
        assert float(row[col["mean draws per problem"]]) == pytest.approx(m["mean_draws"])
    _, pairs = page.table("pair")
    assert set(pairs) == {"window vs critical"}
    for pair, share in want["agreement"].items():
        assert shown_share(pairs[pair][1], share) and int(pairs[pair][2]) == share["n"]
    head, problems = page.table("case")
    assert set(problems) == set(want["problems"]) == {"d/p0", "d/p1", "d/p2", "d/p3"}
    for case, spans in want["problems"].items():
        row = dict(zip(head, problems[case], strict=True))
        token = want["first_errors"][case]
        assert row["first wrong token"] == ("—" if token is None else str(token))
        for name in want["methods"]:
            span = spans.get(name)
            assert row[f"{name} [kept_lo, kept_hi)"] == ("—" if span is None else f"[{span[0]}, {span[1]})")
    assert problems["d/p3"][2] == "—" and problems["d/p2"][1] == "—"  # no window; a correct chain

    # The figure: embedded in the page, a valid PNG, and the file the figure cache kept of it.
    (src,) = page.images
    png = base64.b64decode(src.removeprefix("data:image/png;base64,"))
    with Image.open(io.BytesIO(png)) as im:
        im.verify()
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
    (cached,) = (out / ".critwin" / "figures").glob("*.png")
    assert cached.read_bytes() == png
    # Links to each run's own page, relative to the report's folder.
    assert sorted((out / unquote(href)).resolve() for href in page.links) == sorted(
        (run / "index.html").resolve() for run in (scan, crit))
    assert all(not href.startswith("/") for href in page.links)


def test_out_refuses_other_folders_before_any_work_and_rewrites_its_own(tmp_path, capsys):
    scan, crit = scan_and_critical_runs(tmp_path)
    (tmp_path / "afile.txt").write_text("mine")
    (tmp_path / "notarun").mkdir()
    (tmp_path / "notarun" / "keep.txt").write_text("mine")
    bad = [
        ([scan, crit], "afile.txt", "--out {} is a file; choose a folder"),
        ([scan, crit], "afile.txt/sub", "is a file, so no folder can be made there"),
        ([scan, crit], "notarun", "--out {} exists and is not a critwin compare report"),
        ([scan, crit], scan.name, "--out {} exists and is not a critwin compare report"),  # a run folder
        # Checked before the runs are read: the --out error, not the missing run's.
        ([tmp_path / "nope", crit], "notarun", "--out {} exists and is not a critwin compare report"),
    ]
    for runs, out, message in bad:
        before = snapshot(tmp_path)
        with pytest.raises(SystemExit) as done:
            main(["compare", *map(str, runs), "--json", "--out", str(tmp_path / out)])
        assert done.value.code == 2
        captured = capsys.readouterr()
        err = captured.err
        assert message.format(tmp_path / out) in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and captured.out == ""
        assert snapshot(tmp_path) == before

    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as done:  # without --out nothing is written
        main(["compare", str(scan), str(crit)])
    assert done.value.code in (0, None) and snapshot(tmp_path) == before

    out = tmp_path / "cmp"
    out.mkdir()  # an empty folder is a place for a report
    for tolerance in ("3", "0"):  # the second run rewrites the first one's report
        with pytest.raises(SystemExit) as done:
            main(["compare", str(scan), str(crit), "--out", str(out), "--tolerance", tolerance])
        assert done.value.code in (0, None)
        assert f"report: {out / 'index.html'}" in capsys.readouterr().err
        assert json.loads((out / "comparison.json").read_text()) == compare_runs([scan, crit], int(tolerance))
    _, methods = _Page((out / "index.html").read_text(encoding="utf-8")).table("method")
    # The page is the new one: with no slack p3's critical token [9, 10) misses its first wrong token 8.
    assert numbers(methods["critical"][3])[0] == pytest.approx(2 / 3, abs=0.005)
    assert len(list((out / ".critwin" / "figures").glob("*.png"))) == 1  # one build's figures only
