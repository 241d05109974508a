"""`critwin jailbreak windows|repeat|detect`: prefill-attack windows, the repeated-word grid, and the
likelihood-ratio jailbreak detector."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import typer

from critwin.cli.app import app, emit_json, log
from critwin.errors import CritwinError

jailbreak_app = typer.Typer(help="Jailbreak windows and detection.", no_args_is_help=True)
app.add_typer(jailbreak_app, name="jailbreak")


def _judge(spec: str, judge_model: Path | None, rubric_file: Path | None, dtype: str, device: str) -> Any:
    """refusal | llm (with --judge-model) | module:function (a user function fn(prompt, response))."""
    from critwin.features.judges import DEFAULT_RUBRIC, CallableJudge, LLMJudge, RefusalPhraseJudge

    if spec == "refusal":
        return RefusalPhraseJudge()
    if spec == "llm":
        if judge_model is None:
            raise CritwinError("--judge llm needs --judge-model PATH (a local causal LM directory)")
        from critwin.samplers.hf import HFSampler

        rubric = DEFAULT_RUBRIC
        if rubric_file is not None:
            if not rubric_file.is_file():
                raise CritwinError(f"--rubric-file {rubric_file} does not exist")
            rubric = rubric_file.read_text()
        js = HFSampler.from_pretrained(judge_model, dtype=dtype, device=device, temperature=0.0,
                                       max_new_tokens=8)

        def generate(prompts: list[str]) -> list[str]:
            return [getattr(r, "response_text", "") for r in js.generate_responses(prompts, seed=0)]

        return LLMJudge(generate, rubric)
    if ":" in spec:
        mod, _, fn = spec.partition(":")
        try:
            func = getattr(importlib.import_module(mod), fn)
        except (ImportError, AttributeError) as err:
            raise CritwinError(f"--judge {spec}: cannot import {fn} from {mod} ({err})") from err
        return CallableJudge(func)
    raise CritwinError(f"--judge {spec!r}: use refusal, llm or module:function")


def _sampler(model: Path, dtype: str, device: str, temperature: float, top_p: float, max_new_tokens: int,
             batch_size: int):
    from critwin.samplers.hf import HFSampler

    return HFSampler.from_pretrained(model, dtype=dtype, device=device, temperature=temperature, top_p=top_p,
                                     max_new_tokens=max_new_tokens, batch_size=batch_size)


@jailbreak_app.command("windows")
def windows(
    model: Path = typer.Option(..., "--model", help="Local Hugging Face causal LM directory (the target)."),
    out: Path = typer.Option(..., "--out", help="New run directory."),
    cases: Path = typer.Option(None, "--cases", help="JSONL: prompt, prefill (optional id) per line."),
    prompt: str = typer.Option(None, "--prompt", help="A single attack prompt (instead of --cases)."),
    prefill: str = typer.Option(None, "--prefill", help="Its prefill, e.g. 'Sure, here is how to'."),
    unit: str = typer.Option("chars", "--unit", help="Cut the prefill in chars or tokens."),
    step: int = typer.Option(1, "--step", help="Cut every STEP units."),
    k: int = typer.Option(16, "--k", help="Continuations per cut."),
    judge: str = typer.Option("refusal", "--judge", help="refusal, llm or module:function."),
    judge_model: Path = typer.Option(None, "--judge-model", help="Model directory of the LLM judge."),
    rubric_file: Path = typer.Option(None, "--rubric-file", help="Rubric with {prompt} and {response}."),
    max_prefill: int = typer.Option(512, "--max-prefill", help="Longest prefill allowed, in units."),
    temperature: float = typer.Option(1.0, "--temperature"),
    top_p: float = typer.Option(1.0, "--top-p"),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Continuation length in tokens."),
    batch_size: int = typer.Option(256, "--batch-size"),
    seed: int = typer.Option(0, "--seed"),
    dtype: str = typer.Option("auto", "--dtype"),
    device: str = typer.Option("auto", "--device"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (the summary) on stdout."),
) -> None:
    """P(comply) against prefill length: cut each prefill, draw K continuations per cut, judge them."""
    from critwin.experiments import jailbreak as J
    from critwin.report.build import write_report
    from critwin.rundir import RunDir

    if (cases is None) == (prompt is None):
        raise CritwinError("give --cases FILE or --prompt (with --prefill), not both")
    if prompt is not None:
        if not prompt.strip() or prefill is None:
            raise CritwinError("--prompt needs a non-empty prompt and --prefill")
        case_list = [J.AttackCase("case1", prompt, prefill)]
    else:
        case_list = J.load_cases(cases)
    if unit not in ("chars", "tokens"):
        raise CritwinError(f"--unit {unit!r}: use chars or tokens")
    # Validate every prefill before any loading or decoding (a long prefill fails fast); token cuts need
    # the model's tokenizer, so they are checked again once it is loaded.
    if unit == "chars":
        for c in case_list:
            J.cut_points(c.prefill, unit, step, max_prefill=max_prefill)
    judge_fn = _judge(judge, judge_model, rubric_file, dtype, device)
    sampler = _sampler(model, dtype, device, temperature, top_p, max_new_tokens, batch_size)
    cont = J.HFContinuer(sampler)
    for c in case_list:
        J.cut_points(c.prefill, unit, step, tokenizer=sampler.tokenizer, max_prefill=max_prefill)
    log(f"{len(case_list)} case(s): {k} continuations per cut ...")
    result = J.run_prefill_windows(case_list, cont, k=k, unit=unit, step=step, judge=judge_fn,
                                   tokenizer=sampler.tokenizer, max_prefill=max_prefill, seed=seed)
    run = RunDir.create(out, "jailbreak", {"kind": "prefill", "model": str(model), "unit": unit, "step": step,
                                           "k": k, "judge": judge, "temperature": temperature, "top_p": top_p,
                                           "max_new_tokens": max_new_tokens, "seed": seed})
    J.write_prefill_run(result, run)
    write_report(run)
    if as_json:
        emit_json({"run_dir": str(run.path), "index": str(run.path / "index.html"), **result.summary})
        return
    log(f"{result.summary['cases_with_window']} of {len(case_list)} case(s) have a window")
    print(run.path / "index.html")


def _csv(text: str, field: str, cast=str) -> list:
    try:
        vals = [cast(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CritwinError(f"{field}: comma-separated values expected, got {text!r}") from None
    if not vals:
        raise CritwinError(f"{field}: give at least one value")
    return vals


@jailbreak_app.command("repeat")
def repeat(
    model: Path = typer.Option(..., "--model", help="Local Hugging Face causal LM directory (the target)."),
    out: Path = typer.Option(..., "--out", help="New run directory."),
    request: list[str] = typer.Option(..., "--request", help="A request to attack (repeatable)."),
    words: str = typer.Option(..., "--words", help="Comma-separated words to repeat."),
    repeats: str = typer.Option("0,1,2,4,8,16,32", "--repeats", help="Comma-separated repeat counts."),
    position: str = typer.Option("prompt", "--position", help="prompt or prefill."),
    k: int = typer.Option(16, "--k", help="Responses per cell."),
    judge: str = typer.Option("refusal", "--judge", help="refusal, llm or module:function."),
    judge_model: Path = typer.Option(None, "--judge-model"),
    rubric_file: Path = typer.Option(None, "--rubric-file"),
    temperature: float = typer.Option(1.0, "--temperature"),
    top_p: float = typer.Option(1.0, "--top-p"),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens"),
    batch_size: int = typer.Option(256, "--batch-size"),
    seed: int = typer.Option(0, "--seed"),
    dtype: str = typer.Option("auto", "--dtype"),
    device: str = typer.Option("auto", "--device"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """The repeated-word attack: requests × words × repeat counts, K judged responses per cell."""
    from critwin.experiments import jailbreak as J
    from critwin.report.build import write_report
    from critwin.rundir import RunDir

    case_list = J.repeated_word_cases(request, _csv(words, "--words"), _csv(repeats, "--repeats", int),
                                      position=position)
    judge_fn = _judge(judge, judge_model, rubric_file, dtype, device)
    cont = J.HFContinuer(_sampler(model, dtype, device, temperature, top_p, max_new_tokens, batch_size))
    result = J.run_repeat_grid(case_list, cont, k=k, judge=judge_fn, seed=seed)
    run = RunDir.create(out, "jailbreak", {"kind": "repeat", "model": str(model), "words": words,
                                           "repeats": repeats, "position": position, "k": k, "judge": judge,
                                           "seed": seed})
    J.write_repeat_run(result, run)
    write_report(run)
    if as_json:
        emit_json({"run_dir": str(run.path), "grid": result.table.to_dict(orient="records")})
        return
    print(run.path / "index.html")


@jailbreak_app.command("detect")
def detect(
    aligned: Path = typer.Option(..., "--aligned", help="Aligned model directory."),
    unaligned: Path = typer.Option(..., "--unaligned", help="Unaligned (e.g. abliterated) model directory."),
    data: Path = typer.Option(..., "--data", help="JSONL rows: prompt, completion, label (0/1), split."),
    out: Path = typer.Option(..., "--out", help="New run directory (scores, metrics, ROC report)."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples for the intervals (0 = none)."),
    level: float = typer.Option(0.95, "--level", help="Confidence level of the intervals."),
    negatives: str = typer.Option("auto", "--negatives", help="auto, split or pooled benign rows per split."),
    boundary: str = typer.Option("strict", "--boundary", help="strict or expand (edge-straddling tokens)."),
    system: str = typer.Option(None, "--system", help="System prompt rendered before the user turn."),
    batch_size: int = typer.Option(16, "--batch-size", help="Sequences per forward pass."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    dtype: str = typer.Option("auto", "--dtype"),
    device: str = typer.Option("auto", "--device"),
    as_json: bool = typer.Option(False, "--json", help='Print {"splits": {split: {statistic: {...}}}}.'),
) -> None:
    """Score (prompt, completion) pairs under an aligned and an unaligned model and evaluate the
    likelihood-ratio detector and single-model baselines (AUROC, TPR at 1/5/10% FPR per split)."""
    from critwin.experiments import jailbreak_detect as D
    from critwin.report.build import write_report
    from critwin.rundir import RunDir
    from critwin.samplers.hf import load_causal_lm

    if boundary not in ("strict", "expand"):
        raise CritwinError(f"--boundary {boundary!r}: use strict or expand")
    examples = D.load_examples(data)
    pair_a = load_causal_lm(aligned, dtype=dtype, device=device)
    pair_u = load_causal_lm(unaligned, dtype=dtype, device=device)
    log(f"scoring {len(examples)} rows under both models ...")
    scored = D.score_examples(examples, pair_a, pair_u, system=system, boundary=boundary,
                              batch_size=batch_size)
    metrics = D.evaluate(scored.table, n_boot=n_boot, level=level, seed=seed, negatives=negatives)
    config = {"kind": "detect", "aligned": str(aligned), "unaligned": str(unaligned), "data": str(data),
              "n_boot": n_boot, "level": level, "seed": seed, "boundary": boundary, "negatives": negatives}
    run = RunDir.create(out, "jailbreak", config)
    D.write_detect_run(scored, metrics, run)
    write_report(run)
    compact = D.strip_roc(metrics)
    if as_json:
        emit_json({**compact, "run_dir": str(run.path), "index": str(run.path / "index.html")})
        return
    for split, per in compact["splits"].items():
        for stat, e in per.items():
            if isinstance(e, dict) and "auroc" in e:
                log(f"{split:>12} {stat:<26} AUROC {e['auroc']:.3f}  TPR@1%FPR {e['tpr_at_1pct_fpr']:.3f}")
    print(run.path / "index.html")
