"""`critwin structured`: staircase windows of a structured-output prompt (template with blanks)."""

from __future__ import annotations

from pathlib import Path

import typer

from critwin.cli.app import app, emit_json, log
from critwin.errors import CritwinError


def _read_template(template: str | None, template_file: Path | None) -> str:
    from critwin.features.choices import DEFAULT_TEMPLATE

    if template and template_file:
        raise CritwinError("--template and --template-file: give one, not both")
    if template_file is not None:
        if not template_file.is_file():
            raise CritwinError(f"--template-file {template_file} does not exist; pass a text file")
        return template_file.read_text().strip("\n")
    return template or DEFAULT_TEMPLATE


@app.command("structured")
def structured(
    model: Path = typer.Option(None, "--model", help="Local Hugging Face causal LM directory."),
    from_run: Path = typer.Option(
        None, "--from-run", help="Re-analyze the outputs stored in a previous structured run (no model)."
    ),
    out: Path = typer.Option(..., "--out", help="New run directory (config, outputs, curves, report)."),
    template: str = typer.Option(
        None, "--template", help='Template with blanks, e.g. "The {cat|dog} sat on the {mat|rug}." '
        "(default: a five-blank, two-option sentence)."
    ),
    template_file: Path = typer.Option(None, "--template-file", help="Read the template from a file."),
    instruction: str = typer.Option(None, "--instruction", help="Instruction put before the template."),
    prompt: str = typer.Option(None, "--prompt", help="Whole user prompt (default: instruction + template)."),
    n: int = typer.Option(1000, "--n", help="Samples drawn once from the model."),
    batch_size: int = typer.Option(256, "--batch-size", help="Samples per decoding batch."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature."),
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

    if (model is None) == (from_run is None):
        raise CritwinError("give exactly one of --model (sample now) or --from-run (re-analyze a stored run)")
    if mode not in ("full", "search"):
        raise CritwinError(f"--mode {mode!r}: use 'full' or 'search'")
    if n < 1 or batch_size < 1:
        raise CritwinError("--n and --batch-size: use whole numbers >= 1")
    config: dict = {}
    if from_run is not None:
        old = RunDir.open(from_run)
        tmpl, outputs = S.read_run(old)
        config = {k: v for k, v in old.config.items() if k not in ("critwin_run", "experiment", "created")}
        config["reanalyzed_from"] = str(from_run)
    else:
        from critwin.samplers.hf import HFSampler

        tmpl = ChoiceTemplate.parse(_read_template(template, template_file))
        user_prompt = prompt or tmpl.prompt(instruction)
        sampler = HFSampler.from_pretrained(
            model, dtype=dtype, device=device, temperature=temperature, top_p=top_p,
            max_new_tokens=max_new_tokens, batch_size=batch_size,
        ).with_prompt(user_prompt)
        log(f"drawing {n} outputs from {model} ...")
        outputs = S.draw_outputs(sampler, n, tmpl, batch_size=batch_size, seed=seed, decode=sampler.decode,
                                 mode=mode, progress=True)
        config = {"model": str(model), "prompt": user_prompt, "n": n, "temperature": temperature,
                  "top_p": top_p, "max_new_tokens": max_new_tokens, "seed": seed, "mode": mode}
    config.update({"template": tmpl.as_text(), "equality": equality, "top": top})
    result = S.analyze(outputs, tmpl, top=top, min_count=min_count, equality=equality)
    run = RunDir.create(out, "structured", config)
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
    log(f"{s['n_ok']} of {s['n_samples']} outputs fill the template; {s['n_distinct']} distinct; plateau fit "
        f"max |residual| {s['max_abs_residual']}, coverage {s['coverage']}")
    print(run.path / "index.html")
