"""The README's Python example runs as written, on the bundled model and problems instead of the user's."""

from __future__ import annotations

import json
import re
from pathlib import Path

from critwin.experiments import reasoning as R

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    text = README.read_text()
    block = re.search(r"<!-- example:start -->\n```python\n(.*?)```\n<!-- example:end -->", text, re.S)
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 17  # the short script a user writes
    # Only the user's paths and sizes change: the bundled model and running-sum problems, a small k.
    swaps = {
        'model = "path/to/model"': f'model = "{R.BUNDLED_MODEL}"',
        'data = "problems.jsonl"': f'data = "{R.BUNDLED_PROBLEMS}"',
        'load_reasoning_problems(data, "math")': 'load_reasoning_problems(data, "arith", limit=3)',
        'task="math", k=16, max_new_tokens=1024': 'task="arith", k=4, max_new_tokens=300',
    }
    for old, new in swaps.items():
        assert old in code, old
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README example", "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("reasoning_problems share with a window")
    summary = json.loads((tmp_path / "runs" / "my-model" / "summary.json").read_text())
    d = summary["datasets"]["reasoning_problems"]
    assert d["n_problems"] + d["n_failed"] == 3
    assert f"{d['share_with_window']}" in out
