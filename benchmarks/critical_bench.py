"""Benchmark: critical tokens by bisection (`--strategy critical`) against Critical Tokens' own rollouts from
every prefix (`--strategy every-prefix`, 64 per prefix), side by side in one run.

Both run `critwin critical-tokens` on the same bundled problems (same model, seed and originals); the
bisection must find the same critical token in every wrong chain where every-prefix finds one (reported
as `same_token`), and the draws and wall seconds of both are compared. On the exact toy language (success:
the field is music; 100 seeded texts without music) both are graded against the exact critical token.

Last stdout line: one JSON object with `draw_ratio` (every-prefix draws / bisection draws, per problem),
`seconds_ratio`, the per-strategy numbers and the toy-language check.
Usage: python benchmarks/critical_bench.py [--problems P] [--texts N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from critwin.curves import scan
from critwin.experiments.reasoning import read_records
from critwin.methods.critical import critical_token
from critwin.samplers.toy_lm import ToyLMSampler, demo_language
from critwin.schedules import PAPER_FRACTIONS, kept_positions
from critwin.strategies import CriticalBisect, EveryPrefix


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def reasoning(strategy: str, problems: int, out: Path) -> dict:
    critwin = Path(sys.executable).parent / "critwin"
    cmd = [str(critwin), "critical-tokens", "--strategy", strategy, "--limit", str(problems),
           "--threads", "1", "--no-progress", "--out", str(out), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    summary = json.loads(done.stdout)
    records = {r["case"]: r for r in read_records(out)}
    return {"seconds": summary["seconds"], "records": records,
            "draws_per_problem": float(np.mean([r.get("n_draws", 0) for r in records.values()]))}


def toy(texts: int) -> dict:
    lang = demo_language()
    sampler = ToyLMSampler(lang)
    truth = {"science": lang.decision_position("topic"), "art": lang.decision_position("field")}
    grid = [lang.length - k for k in kept_positions(lang.length, PAPER_FRACTIONS)]

    def music(text):
        return lang.parse(text)["field"] == "music"

    out = {}
    makers = {"every-prefix": lambda: EveryPrefix(n=64), "critical": lambda: CriticalBisect(grid)}
    for name, make in makers.items():
        rng = np.random.default_rng(0)
        exact, draws, done = 0, [], 0
        while done < texts:
            (x,) = sampler.sample(1, rng)
            parsed = lang.parse(x)
            if parsed["field"] == "music":
                continue
            done += 1
            curve = scan(sampler, x, feature=music, strategy=make(), seed=done, reference=True)
            c = critical_token(curve).critical
            exact += c is not None and c.kept_hi == c.kept_lo + 1 and c.token == truth[parsed["topic"]]
            draws.append(int(curve.n_total.sum()))
        out[name] = {"exact": exact, "texts": texts, "draws_per_text": float(np.mean(draws))}
    out["draw_ratio"] = out["every-prefix"]["draws_per_text"] / out["critical"]["draws_per_text"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=20, help="bundled reasoning problems")
    ap.add_argument("--texts", type=int, default=100, help="toy-language texts")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for strategy in ("every-prefix", "critical"):
            runs[strategy] = reasoning(strategy, args.problems, Path(tmp) / strategy)
            log(f"{strategy}: {runs[strategy]['draws_per_problem']:.0f} draws per problem, "
                f"{runs[strategy]['seconds']:.1f} s")
    dense, cheap = runs["every-prefix"], runs["critical"]
    wrong = [c for c, r in dense["records"].items() if (r.get("critical") or {}).get("critical")]
    same = sum(cheap["records"][c]["critical"]["critical"] is not None
               and cheap["records"][c]["critical"]["critical"]["token"] == dense["records"][c]["critical"]
               ["critical"]["token"] for c in wrong)
    toy_result = toy(args.texts)
    log(f"toy language: {toy_result}")
    print(json.dumps({
        "problems": args.problems,
        "wrong_chains_with_critical": len(wrong),
        "same_token": same,
        "draws_per_problem": {s: r["draws_per_problem"] for s, r in runs.items()},
        "seconds": {s: r["seconds"] for s, r in runs.items()},
        "draw_ratio": dense["draws_per_problem"] / cheap["draws_per_problem"],
        "seconds_ratio": dense["seconds"] / cheap["seconds"],
        "toy_language": toy_result,
    }))


if __name__ == "__main__":
    main()
