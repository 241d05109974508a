"""`critwin structured`: staircase windows of a structured-output prompt (template with blanks)."""

from __future__ import annotations

from pathlib import Path

import typer

from critwin.cli import checks
from critwin.cli.app import app, emit_json, log
from critwin.errors import CritwinError, RunInterrupted


def _read_template(template: str | None, template_file: Path | None) -> str:
    from critwin.features.choices import DEFAULT_TEMPLATE

    if template and template_file:
        raise CritwinError("--template and --template-file: give one, not both")
    if template_file is not None:
        from critwin.files import read_text

        return read_text(template_file, "--template-file", "a UTF-8 text file with the template").strip("\n")
    return template or DEFAULT_TEMPLATE


def _preflight(model: Path, template: str | None, template_file: Path | None, prompt: str | None,
               instruction: str | None, n: int, max_new_tokens: int) -> None:
    """What sampling needs, checked from the model's tokenizer and config.json before the weights load:
    the template parses, the prompt and the options are text the tokenizer can encode, the prompt plus
    --max-new-tokens fit in the context, and N outputs fit in memory."""
    from critwin.features.choices import ChoiceTemplate
    from critwin.samplers.hf import encode_prompt

    tmpl = ChoiceTemplate.parse(_read_template(template, template_file))
    user_prompt = prompt or tmpl.prompt(instruction)
    info = checks.model(model)
    checks.encodable(info, user_prompt, "the prompt" if prompt else "the prompt (--instruction + template)")
    checks.encodable(info, "".join(tmpl.literals) + "".join(o for opts in tmpl.options for o in opts),
                     "the template")
    n_prompt = len(encode_prompt(info.tokenizer, user_prompt, chat=info.has_chat_template)[0])
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
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (the summary) on stdout."),
) -> None:
    """Draw N outputs once, estimate P(output = s | prefix of s) per token and character, and compare the
    staircase with the theory (windows at the deciding token of each chosen word)."""
    from critwin.experiments import structured as S
    from critwin.features.choices import ChoiceTemplate
    from critwin.report.build import write_report
    from critwin.rundir import RunDir

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
    checks.out_dir(out, "structured")
    if from_run is not None:
        given = [f for f, v in (("--template", template), ("--template-file", template_file),
                                ("--prompt", prompt), ("--instruction", instruction)) if v is not None]
        if given:
            raise CritwinError(f"{given[0]} applies when sampling with --model; --from-run reuses the stored "
                               "template and prompt, so drop it")
    else:
        _preflight(model, template, template_file, prompt, instruction, n, max_new_tokens)
    if from_run is not None:
        old = RunDir.open(from_run)
        tmpl, outputs = S.read_run(old)
        config = {k: v for k, v in old.config.items() if k not in ("critwin_run", "experiment", "created")}
        config.update({"reanalyzed_from": str(from_run), "equality": equality, "top": top,
                       "min_count": min_count})
        run = RunDir.check_resumable(out, "structured", config, S.RESUME_KEYS) or RunDir.create(
            out, "structured", config
        )
    else:
        from critwin.samplers.hf import HFSampler

        tmpl = ChoiceTemplate.parse(_read_template(template, template_file))
        user_prompt = prompt or tmpl.prompt(instruction)
        config = {"model": str(model.resolve()), "prompt": user_prompt, "n": n, "temperature": temperature,
                  "top_p": top_p, "max_new_tokens": max_new_tokens, "seed": seed, "mode": mode,
                  "batch_size": batch_size, "template": tmpl.as_text(), "equality": equality, "top": top,
                  "min_count": min_count}
        # A rerun into the same folder with the same settings resumes it: checked before the model loads.
        existing = RunDir.check_resumable(out, "structured", config, S.RESUME_KEYS)
        sampler = HFSampler.from_pretrained(
            model, dtype=dtype, device=device, temperature=temperature, top_p=top_p,
            max_new_tokens=max_new_tokens, batch_size=batch_size,
        ).with_prompt(user_prompt)
        run = existing or RunDir.create(out, "structured", config)
        if existing:
            n_done = len(run.part_names(S.OUTPUTS_TABLE))
            log(f"resuming {run.path}: {n_done} batch(es) of outputs already drawn")
        log(f"drawing {n} outputs from {model} ...")
        try:
            outputs = S.draw_outputs(sampler, n, tmpl, batch_size=batch_size, seed=seed,
                                     decode=sampler.decode,
                                     mode=mode, progress=True, run=run)
        except KeyboardInterrupt:
            n_batches = -(-n // batch_size)
            raise RunInterrupted(len(run.part_names(S.OUTPUTS_TABLE)), n_batches, run.path) from None
    result = S.analyze(outputs, tmpl, top=top, min_count=min_count, equality=equality)
    S.write_run(result, run)
    write_report(run)
    targets = [
        {
            "output": tg.text,
            "choices": list(tg.choices),
            "count": tg.count,
            "windows": {u: [[w.t_lo, w.t_hi] for w in st.windows] for u, st in tg.staircases.items()},
            "deciding": {u: list(st.deciding) for u, st in tg.staircases.items()},
        }
        for tg in result.targets
    ]
    if as_json:
        emit_json({"run_dir": str(run.path), "index": str(run.path / "index.html"),
                   "summary": S.to_plain(result.summary), "targets": targets})
        return
    s = result.summary
    log(f"{s['n_ok']} of {s['n_samples']} outputs fill the template; {s['n_distinct']} distinct; theory "
        f"check "
        f"({s['check']}): {s['n_rejected']} of {s['n_tested']} plateaus rejected, coverage {s['coverage']}, "
        f"max |residual| {s['max_abs_residual']}")
    print(run.path / "index.html")
