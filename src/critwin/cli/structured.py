"""`critwin structured`: staircase windows of a structured-output prompt (template with blanks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from critwin.cli import checks, engines
from critwin.cli.app import app, emit_json, log
from critwin.errors import CritwinError

if TYPE_CHECKING:
    from critwin.rundir import RunDir


def _read_template(template: str | None, template_file: Path | None) -> str:
    from critwin.features.choices import DEFAULT_TEMPLATE

    if template and template_file:
        raise CritwinError("--template and --template-file: give one, not both")
    if template_file is not None:
        from critwin.files import read_text

        return read_text(template_file, "--template-file", "a UTF-8 text file with the template").strip("\n")
    return template or DEFAULT_TEMPLATE


def _preflight(model: Path, template: str | None, template_file: Path | None, prompt: str | None,
               instruction: str | None, n: int, max_new_tokens: int, weights: bool = True) -> None:
    """What sampling needs, checked from the model's tokenizer and config.json before the weights load:
    the template parses, the prompt and the options are text the tokenizer can encode, the prompt plus
    --max-new-tokens fit in the context, and N outputs fit in memory. `weights=False`: the directory is a
    served model's local tokenizer (--engine openai), which needs no weights."""
    from critwin.features.choices import ChoiceTemplate

    tmpl = ChoiceTemplate.parse(_read_template(template, template_file))
    user_prompt = prompt or tmpl.prompt(instruction)
    info = checks.model(model, weights=weights)
    checks.encodable(info, user_prompt, "the prompt" if prompt else "the prompt (--instruction + template)")
    checks.encodable(info, "".join(tmpl.literals) + "".join(o for opts in tmpl.options for o in opts),
                     "the template")
    n_prompt = len(info.encode_prompt(user_prompt, chat=info.has_chat_template)[0])
    checks.context(info, n_prompt + max_new_tokens,
                   f"the prompt ({n_prompt} tokens) + --max-new-tokens {max_new_tokens}",
                   "shorten the prompt or lower --max-new-tokens")
    checks.memory(n, max_new_tokens, f"--n {n}", "--n", 1)


@app.command("structured", short_help="Staircase windows of a structured-output prompt.")
def structured(
    model: Path = typer.Option(None, "--model", help="Local Hugging Face causal LM directory."),
    from_run: Path = typer.Option(
        None, "--from-run", help="Re-analyze the outputs stored in a previous structured run (no model)."
    ),
    out: Path = typer.Option(..., "--out", help="Run directory (config, outputs, curves, report)."),
    template: str = typer.Option(
        None, "--template", help='Template with blanks, e.g. "The {cat|dog} sat on the {mat|rug}." '
        "(default: a five-blank, two-option sentence)."
    ),
    template_file: Path = typer.Option(None, "--template-file", help="Read the template from a file."),
    instruction: str = typer.Option(None, "--instruction", help="Instruction put before the template."),
    prompt: str = typer.Option(None, "--prompt", help="Whole user prompt (default: instruction + template)."),
    n: int = typer.Option(1000, "--n", help="Samples drawn once from the model."),
    batch_size: int = typer.Option(256, "--batch-size", help="Samples per decoding batch."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature (0 = greedy)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling threshold (1 = off)."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="Longest output in tokens."),
    mode: str = typer.Option("full", "--mode", help="full: the output must be the filled template; search: "
                             "find it inside longer text."),
    equality: str = typer.Option("choices", "--equality", help="choices: same tuple of choices; exact: same "
                                 "tokens."),
    top: int = typer.Option(8, "--top", help="Staircases of the most frequent distinct outputs."),
    min_count: int = typer.Option(1, "--min-count", help="Skip outputs seen fewer times."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16, float16."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda."),
    engine: str = engines.ENGINE,
    base_url: str = engines.BASE_URL,
    served_model: str = engines.SERVED_MODEL,
    api_key_env: str = engines.API_KEY_ENV,
    max_concurrency: int = engines.MAX_CONCURRENCY,
    engine_option: list[str] = engines.ENGINE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (the summary) on stdout."),
) -> None:
    """Draw N outputs once, estimate P(output = s | prefix of s) per token and character, and compare the
    staircase with the theory (windows at the deciding token of each chosen word)."""
    from critwin.driver import run
    from critwin.experiments import structured as S
    from critwin.features.choices import ChoiceTemplate
    from critwin.rundir import RunDir
    from critwin.serialize import jsonable

    # Flags, paths, the template and what the model can hold are checked before any weight loads.
    if (model is None) == (from_run is None):
        raise CritwinError("give exactly one of --model (sample now) or --from-run (re-analyze a stored run)")
    checks.choice(mode, "--mode", ("full", "search"))
    checks.choice(equality, "--equality", ("choices", "exact"))
    checks.whole(n, "--n")
    checks.whole(batch_size, "--batch-size")
    checks.sampling(temperature, top_p)
    checks.whole(max_new_tokens, "--max-new-tokens")
    checks.whole(top, "--top")
    checks.whole(min_count, "--min-count")
    checks.whole(seed, "--seed", 0)
    checks.device_and_dtype(device, dtype)
    if from_run is not None:
        given = [f for f, v in (("--engine", None if engine == "hf" else engine), ("--base-url", base_url),
                                ("--served-model", served_model), ("--api-key-env", api_key_env),
                                ("--max-concurrency", max_concurrency),
                                ("--engine-option", engine_option or None)) if v is not None]
        if given:
            raise CritwinError(f"{given[0]} applies when sampling with --model; --from-run re-analyzes the "
                               "stored outputs without a model, so drop it")
        choice = None
    else:
        choice = engines.choose(engine, base_url, served_model, api_key_env, max_concurrency, engine_option)
    checks.out_dir(out, "structured")
    factory = None
    if from_run is not None:
        given = [f for f, v in (("--template", template), ("--template-file", template_file),
                                ("--prompt", prompt), ("--instruction", instruction)) if v is not None]
        if given:
            raise CritwinError(f"{given[0]} applies when sampling with --model; --from-run reuses the stored "
                               "template and prompt, so drop it")
        experiment = S.StructuredExperiment.reanalysis(from_run, equality=equality, top=top,
                                                       min_count=min_count)
    else:
        _preflight(model, template, template_file, prompt, instruction, n, max_new_tokens,
                   choice.needs_weights)
        tmpl = ChoiceTemplate.parse(_read_template(template, template_file))
        cfg = S.StructuredConfig.from_flat(
            template=tmpl.as_text(), prompt=prompt or tmpl.prompt(instruction), seed=seed, n=n,
            batch_size=batch_size, mode=mode, temperature=temperature, top_p=top_p,
            max_new_tokens=max_new_tokens, equality=equality, top=top, min_count=min_count,
        )
        experiment = S.StructuredExperiment(cfg, str(model.resolve()))

        def factory():  # the model loads only once the run directory checks out
            return choice.load(model, dtype=dtype, device=device, out=out,
                               **experiment.sampler_settings()).with_prompt(experiment.prompt)

    res = run(experiment, factory=factory, out=out, progress=from_run is None, log=log)
    if res.n_failed:
        raise CritwinError(f"{res.n_failed} of {res.n_cases} batches of outputs could not be drawn "
                           f"(batch {res.failures[0]}); rerun the same command to draw them")
    stored = RunDir.open(res.out)
    missing = S.missing_outputs(stored)
    if missing:  # a batch lost between its draw and the analysis
        raise CritwinError(f"{res.out}: {missing[0]}; rerun the same command to draw the rest")
    summary = json.loads((res.out / S.SUMMARY).read_text())
    if as_json:
        emit_json({"run_dir": str(res.out), "index": str(res.out / "index.html"),
                   "summary": jsonable(summary), "targets": _targets(stored),
                   "engine": None if choice is None else choice.describe()})
        return
    s = summary
    log(f"{s['n_ok']} of {s['n_samples']} outputs fill the template; {s['n_distinct']} distinct; theory "
        f"check "
        f"({s['check']}): {s['n_rejected']} of {s['n_tested']} plateaus rejected, coverage {s['coverage']}, "
        f"max |residual| {s['max_abs_residual']}")
    print(res.out / "index.html")


def _targets(run: RunDir) -> list[dict[str, Any]]:
    """The staircases of a structured run as the --json "targets": per distinct output (most frequent
    first) its text, choices, count, and per unit its detected windows and deciding positions."""
    targets: dict[str, dict[str, Any]] = {}
    for name in run.case_names():
        rec = run.case(name)
        meta = rec.meta
        if meta.get("kind") != "structured":
            continue
        tg = targets.setdefault(meta["target"], {"output": meta["text"], "choices": list(meta["choices"]),
                                                 "count": meta["count"], "windows": {}, "deciding": {}})
        tg["windows"][meta["unit"]] = [[w.t_lo, w.t_hi] for w in rec.detected]
        tg["deciding"][meta["unit"]] = list(meta["deciding"])
    return list(targets.values())
