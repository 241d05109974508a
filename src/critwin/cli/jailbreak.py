"""`critwin jailbreak windows|repeat|detect`: prefill-attack windows, the repeated-word grid, and the
likelihood-ratio jailbreak detector."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import typer

from critwin.cli import checks, engines
from critwin.cli.app import app, emit_json, log
from critwin.errors import CritwinError, first_line

jailbreak_app = typer.Typer(
    help="Jailbreak windows and detection.", no_args_is_help=True, rich_markup_mode=None  # see cli/app.py
)

JUDGE_HELP = "refusal (refusal phrases), llm (needs --judge-model) or module:function / ./file.py:function."
CHAT_HELP = ("auto: the chat template (required for a prefill); on: require it; off: plain text prompt + "
             "prefill.")
app.add_typer(jailbreak_app, name="jailbreak", short_help="Jailbreak windows and detection.")


class _JudgeModel:
    """The LLM judge's model, loaded by `load()` (the run's factory calls it, once the run directory checks
    out; a worker elsewhere loads it at its first verdict)."""

    def __init__(self, path: Path, dtype: str, device: str) -> None:
        self.path, self.dtype, self.device = path, dtype, device
        self.sampler: Any = None

    def load(self) -> Any:
        if self.sampler is None:
            from critwin.samplers.registry import load_sampler

            self.sampler = load_sampler("hf", self.path, dtype=self.dtype, device=self.device,
                                        temperature=0.0, max_new_tokens=8)
        return self.sampler

    def __call__(self, prompts: list[str]) -> list[str]:
        return [getattr(r, "response_text", "") for r in self.load().generate_responses(prompts, seed=0)]

    def __getstate__(self) -> dict[str, Any]:  # a worker elsewhere loads its own copy
        return {**self.__dict__, "sampler": None}


def _judge(spec: str, judge_model: Path | None, rubric_file: Path | None, dtype: str,
           device: str) -> tuple[Any, _JudgeModel | None]:
    """(judge, its model to load in the factory or None): refusal | llm (with --judge-model) |
    module:function (a user function fn(prompt, response))."""
    from critwin.features.judges import DEFAULT_RUBRIC, CallableJudge, LLMJudge, RefusalPhraseJudge

    if spec == "refusal":
        return RefusalPhraseJudge(), None
    if spec == "llm":
        if judge_model is None:
            raise CritwinError("--judge llm needs --judge-model PATH (a local causal LM directory)")
        rubric = DEFAULT_RUBRIC
        if rubric_file is not None:
            from critwin.files import read_text

            rubric = read_text(rubric_file, "--rubric-file")
        generate = _JudgeModel(judge_model, dtype, device)
        return LLMJudge(generate, rubric), generate
    if ":" in spec:
        return CallableJudge(_user_function(spec)), None
    raise CritwinError(f"--judge {spec!r}: use refusal, llm or module:function")


@functools.cache
def _user_function(spec: str) -> Any:
    """The function of --judge MODULE:FUNCTION or --judge PATH.py:FUNCTION (imported once per process).

    A console script does not put the current folder on the import path, so a module that is only a file
    here gets a hint to pass it as ./file.py:function (or to set PYTHONPATH) instead of a bare
    "No module named".
    """
    target, _, name = spec.rpartition(":")
    if not target or not name.isidentifier():
        raise CritwinError(f"--judge {spec!r}: write module:function or ./file.py:function")
    if target.endswith(".py") or "/" in target:
        path = Path(target)
        if not path.is_file():
            raise CritwinError(f"--judge {spec}: {path} is not a file; pass an existing Python file")
        module_name = f"critwin_user_judge_{path.stem}"
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise CritwinError(f"--judge {spec}: {path} cannot be imported; pass a .py file")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module
        # No __pycache__ next to the user's file: critwin leaves the folders it reads as it found them.
        bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
        try:
            loader_spec.loader.exec_module(module)
        except Exception as err:  # user code: its import error is one line, naming the file
            del sys.modules[module_name]
            raise CritwinError(
                f"--judge {spec}: importing {path} raised {first_line(err)}; fix it"
            ) from None
        finally:
            sys.dont_write_bytecode = bytecode
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as err:
            local = Path(*target.split(".")).with_suffix(".py")
            if err.name == target.split(".")[0] and local.is_file():
                raise CritwinError(
                    f"--judge {spec}: no module {target!r} on the import path, but ./{local} is here; pass "
                    f"--judge ./{local}:{name} or add this folder to PYTHONPATH"
                ) from None
            raise CritwinError(
                f"--judge {spec}: no module named {err.name!r}; pass a file as ./judge.py:{name}, or add "
                "the module's folder to PYTHONPATH"
            ) from None
        except Exception as err:  # user code: its import error is one line, naming the module
            raise CritwinError(
                f"--judge {spec}: importing {target} raised {first_line(err)}; fix it"
            ) from None
    func = getattr(module, name, None)
    if not callable(func):
        raise CritwinError(f"--judge {spec}: {target} has no function {name!r}; name a function fn(prompt, "
                           "response) defined there")
    return func


def _check_judge(spec: str, judge_model: Path | None, rubric_file: Path | None) -> None:
    """Everything about --judge that can be checked cheaply: the spec, the user function's import, the
    judge model directory and the rubric (the judge model's weights load later)."""
    if judge_model is not None and spec != "llm":
        raise CritwinError(f"--judge-model is used by --judge llm only, not {spec!r}; drop it or use llm")
    if spec in ("refusal", "llm"):
        if spec == "llm":
            if judge_model is None:
                raise CritwinError("--judge llm needs --judge-model PATH (a local causal LM directory)")
            checks.model(judge_model, "--judge-model")
        if rubric_file is not None:
            from critwin.features.judges import LLMJudge
            from critwin.files import read_text

            if spec != "llm":
                raise CritwinError("--rubric-file is read by the LLM judge only; add --judge llm or drop it")
            LLMJudge(lambda ps: ps, read_text(rubric_file, "--rubric-file"))  # checks the placeholders
        return
    if rubric_file is not None:
        raise CritwinError("--rubric-file is read by the LLM judge only; add --judge llm or drop it")
    if ":" not in spec:
        raise CritwinError(f"--judge {spec!r}: use refusal, llm or module:function")
    _user_function(spec)


def _factory(choice: engines.EngineChoice, model: Path, sampling: Any, dtype: str, device: str,
             batch_size: int, chat: bool, judge_model: _JudgeModel | None, out: Path) -> Any:
    """Builds the run's sampler (the continuer over the target model, on the chosen engine) and loads the LLM
    judge's model: called by the driver once the run directory checks out."""

    def build() -> Any:
        from critwin.experiments.jailbreak import HFContinuer

        if judge_model is not None:
            judge_model.load()
        settings = {**sampling.sampler_settings(), "chat": chat}
        return HFContinuer(choice.load(model, dtype=dtype, device=device, batch_size=batch_size, out=out,
                                       **settings))

    return build


def _raise_failures(res: Any, unit: str) -> None:
    """A run with failed cases (an error the backend, the judge or the scorer raised) ends with one line
    after the report is written; a rerun computes just those."""
    if res.failures:
        raise CritwinError(
            f"{res.n_failed} of {res.n_cases} {unit} failed (first: {res.failures[0]}); the others are saved "
            f"in {res.out}: fix the cause and rerun the same command to compute just those"
        )


def _common(k: int, temperature: float, top_p: float, max_new_tokens: int, batch_size: int, seed: int,
            dtype: str, device: str, chat: str) -> None:
    """The flags windows and repeat share, checked before anything loads."""
    checks.whole(k, "--k")
    checks.sampling(temperature, top_p)
    checks.whole(max_new_tokens, "--max-new-tokens")
    checks.whole(batch_size, "--batch-size")
    checks.whole(seed, "--seed", 0)
    checks.choice(chat, "--chat", checks.CHAT_MODES)
    checks.device_and_dtype(device, dtype)


def _case_tokens(info: Any, case_list: list, use_chat: bool, where: str) -> tuple[int, str]:
    """(tokens, id) of the longest case as the model sees it (prompt through the chat template, then the
    prefill), after checking that the tokenizer can encode every prompt and prefill. Needs only the
    tokenizer, so it runs before the weights load."""
    longest, name = 0, ""
    for c in case_list:
        checks.encodable(info, c.prompt, f"{where} {c.id}: the prompt")
        checks.encodable(info, c.prefill, f"{where} {c.id}: the prefill")
        n = len(info.encode_prompt(c.prompt, chat=use_chat)[0])
        n += len(info.encode_text(c.prefill)) if c.prefill else 0
        if n > longest:
            longest, name = n, c.id
    return longest, name


def _log_judge_failures(draws: Any) -> None:
    """Say when the judge failed on some responses (recorded as failed items, with their reasons)."""
    from critwin.experiments.jailbreak import JUDGE_FAILURE

    failed = draws["failure"].fillna("").astype(str)
    failed = failed[failed.str.startswith(JUDGE_FAILURE)]
    if len(failed):
        log(f"the judge failed on {len(failed)} of {len(draws)} responses; they are failed items, never "
            f"outcomes (first: {failed.iloc[0][len(JUDGE_FAILURE):]})")


@jailbreak_app.command("windows", short_help="P(comply) against the length of a prefill attack.")
def windows(
    model: Path = typer.Option(..., "--model", help="Local Hugging Face causal LM directory (the target)."),
    out: Path = typer.Option(..., "--out", help="Run directory (new, or this run's folder to resume it)."),
    cases: Path = typer.Option(None, "--cases", help="JSONL: prompt, prefill (optional id) per line."),
    prompt: str = typer.Option(None, "--prompt", help="A single attack prompt (instead of --cases)."),
    prefill: str = typer.Option(None, "--prefill", help="Its prefill, e.g. 'Sure, here is how to'."),
    unit: str = typer.Option("chars", "--unit", help="Cut the prefill in chars or tokens."),
    step: int = typer.Option(1, "--step", help="Cut every STEP units."),
    k: int = typer.Option(16, "--k", help="Continuations per cut."),
    strategy: str = checks.STRATEGY,
    budget: int = checks.BUDGET,
    n_min: int = checks.N_MIN,
    n_max: int = checks.N_MAX,
    judge: str = typer.Option("refusal", "--judge", help=JUDGE_HELP),
    judge_model: Path = typer.Option(None, "--judge-model", help="Model directory of the LLM judge."),
    rubric_file: Path = typer.Option(None, "--rubric-file", help="Rubric with {prompt} and {response}."),
    max_prefill: int = typer.Option(512, "--max-prefill", help="Longest prefill allowed, in units."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature (0 = greedy)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling threshold (1 = off)."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Continuation length in tokens."),
    batch_size: int = typer.Option(256, "--batch-size", help="Rows per decoding batch."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling (same seed, same draws)."),
    chat: str = typer.Option("auto", "--chat", help=CHAT_HELP),
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
    """P(comply) against prefill length: cut each prefill, draw K continuations per cut, judge them.

    --strategy adaptive|bisect|every-prefix chooses the cuts (any unit of the prefill) and draws instead,
    within --budget draws per case.
    """
    from critwin.driver import run
    from critwin.experiments import jailbreak as J
    from critwin.rundir import RunDir

    # Everything that can be checked without the weights is checked first: flags, paths, cases, the judge,
    # and what the model's tokenizer and context can hold.
    if (cases is None) == (prompt is None):
        raise CritwinError("give --cases FILE or --prompt (with --prefill), not both")
    if prompt is not None and (not prompt.strip() or prefill is None):
        raise CritwinError("--prompt needs a non-empty prompt and --prefill")
    if prompt is None and prefill is not None:
        raise CritwinError("--prefill goes with --prompt; with --cases every row carries its own prefill")
    checks.choice(unit, "--unit", ("chars", "tokens"))
    checks.whole(step, "--step")
    checks.whole(max_prefill, "--max-prefill")
    _common(k, temperature, top_p, max_new_tokens, batch_size, seed, dtype, device, chat)
    search = checks.search(strategy, budget, n_min, n_max)
    choice = engines.choose(engine, base_url, served_model, api_key_env, max_concurrency, engine_option)
    checks.out_dir(out, "jailbreak", "prefill")
    if prompt is not None:
        case_list = [J.AttackCase("case1", prompt, prefill)]
    else:
        case_list = J.load_cases(cases, "--cases")

    def first_cuts(tokenizer: Any = None) -> list[int]:
        """Cuts of each case's first round (the --step grid; every-prefix: every unit)."""
        every = 1 if search.strategy == "every-prefix" else step
        return [len(J.cut_points(c.prefill, unit, every, tokenizer=tokenizer, max_prefill=max_prefill)[0])
                for c in case_list]

    if unit == "chars":
        checks.first_round(search, max(first_cuts()), k)
    _check_judge(judge, judge_model, rubric_file)
    info = checks.model(model, weights=choice.needs_weights)
    use_chat = checks.chat_mode(info, chat, needs="a prefill attack (the prefill starts the assistant turn)")
    per_case = first_cuts(info.tokenizer)
    checks.first_round(search, max(per_case), k)
    n_draws = sum(per_case)
    longest, name = _case_tokens(info, case_list, use_chat, "case")
    checks.context(info, longest + max_new_tokens,
                   f"case {name} (prompt and prefill: {longest} tokens) + --max-new-tokens {max_new_tokens}",
                   "shorten the prompt or prefill, or lower --max-new-tokens")
    checks.memory(n_draws * k, max_new_tokens, f"--k {k} with {n_draws} cuts in all", "--k", n_draws)
    judge_fn, judge_lm = _judge(judge, judge_model, rubric_file, dtype, device)
    sampling = J.AttackSampling(temperature, top_p, max_new_tokens, chat)
    experiment = J.PrefillWindows(
        case_list, J.PrefillCuts(unit, step, k, max_prefill), sampling=sampling, judge=judge_fn,
        judge_name=judge, model=str(model.resolve()), seed=seed, tokenizer=info.tokenizer, search=search,
    )
    log(f"{len(case_list)} case(s): {k} continuations per cut ..." if search.strategy == "fixed" else
        f"{len(case_list)} case(s): --strategy {search.strategy} ...")
    # A rerun into the same folder with the same settings resumes it; the models load only once the run
    # directory checks out.
    factory = _factory(choice, model, sampling, dtype, device, batch_size, use_chat, judge_lm, out)
    res = run(experiment, factory=factory, out=out, progress=True, log=log)
    _raise_failures(res, "case(s)")
    result = J.read_prefill_run(RunDir.open(res.out))
    if as_json:
        emit_json({"run_dir": str(res.out), "index": str(res.out / "index.html"), **result.summary,
                   "engine": choice.describe(), "strategy": search.strategy})
        return
    _log_judge_failures(result.draws)
    log(f"{result.summary['cases_with_window']} of {len(case_list)} case(s) have a window")
    print(res.out / "index.html")


def _csv(text: str, field: str, cast=str) -> list:
    try:
        vals = [cast(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CritwinError(f"{field}: comma-separated values expected, got {text!r}") from None
    if not vals:
        raise CritwinError(f"{field}: give at least one value")
    return vals


@jailbreak_app.command("repeat", short_help="The repeated-word attack grid.")
def repeat(
    model: Path = typer.Option(..., "--model", help="Local Hugging Face causal LM directory (the target)."),
    out: Path = typer.Option(..., "--out", help="Run directory (new, or this run's folder to resume it)."),
    request: list[str] = typer.Option(
        ..., "--request", metavar="TEXT", help="A request to attack (repeatable)."
    ),
    words: str = typer.Option(..., "--words", help="Comma-separated words to repeat."),
    repeats: str = typer.Option("0,1,2,4,8,16,32", "--repeats", help="Comma-separated repeat counts."),
    position: str = typer.Option("prompt", "--position", help="Repeat the word in the prompt or prefill."),
    k: int = typer.Option(16, "--k", help="Responses per cell."),
    judge: str = typer.Option("refusal", "--judge", help=JUDGE_HELP),
    judge_model: Path = typer.Option(None, "--judge-model", help="Model directory of the LLM judge."),
    rubric_file: Path = typer.Option(None, "--rubric-file", help="Rubric with {prompt} and {response}."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature (0 = greedy)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling threshold (1 = off)."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Response length in tokens."),
    batch_size: int = typer.Option(256, "--batch-size", help="Rows per decoding batch."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling (same seed, same draws)."),
    chat: str = typer.Option("auto", "--chat", help=CHAT_HELP),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16, float16."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda."),
    engine: str = engines.ENGINE,
    base_url: str = engines.BASE_URL,
    served_model: str = engines.SERVED_MODEL,
    api_key_env: str = engines.API_KEY_ENV,
    max_concurrency: int = engines.MAX_CONCURRENCY,
    engine_option: list[str] = engines.ENGINE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """The repeated-word attack: requests × words × repeat counts, K judged responses per cell."""
    from critwin.driver import run
    from critwin.experiments import jailbreak as J
    from critwin.rundir import RunDir

    # Flags, paths, the judge and what the model can hold are checked before the weights load.
    checks.choice(position, "--position", ("prompt", "prefill"))
    _common(k, temperature, top_p, max_new_tokens, batch_size, seed, dtype, device, chat)
    choice = engines.choose(engine, base_url, served_model, api_key_env, max_concurrency, engine_option)
    if any(not r.strip() for r in request):
        raise CritwinError("--request: empty request; give the text of each request")
    counts = _csv(repeats, "--repeats", int)
    word_list = _csv(words, "--words")
    if any(r < 0 for r in counts) or len(set(counts)) != len(counts):
        raise CritwinError(f"--repeats {repeats!r}: give distinct whole numbers >= 0, e.g. 0,1,2,4,8")
    checks.out_dir(out, "jailbreak", "repeat")
    _check_judge(judge, judge_model, rubric_file)
    info = checks.model(model, weights=choice.needs_weights)
    needs = "--position prefill (the prefill starts the assistant turn)" if position == "prefill" else None
    use_chat = checks.chat_mode(info, chat, needs=needs)
    # The largest count is tokenized before the grid is built, so a huge one is refused at once.
    top = max(counts)
    n_top, _ = _case_tokens(info, J.repeated_word_cases(request, word_list, [top],
                                                        position=position), use_chat, "--request")
    if info.context is not None and n_top + max_new_tokens > info.context:
        n_none, _ = _case_tokens(info, J.repeated_word_cases(request, word_list, [0],
                                                             position=position), use_chat, "--request")
        per = max((n_top - n_none) / top, 1e-9) if top else 1.0
        most = max(int((info.context - max_new_tokens - n_none) // per), 0)
        raise CritwinError(
            f"--repeats {top}: the longest prompt then has {n_top} tokens, and with --max-new-tokens "
            f"{max_new_tokens} it needs {n_top + max_new_tokens}, but the context of {info.path} holds "
            f"{info.context} (max_position_embeddings in its config.json); use repeat counts up to {most}"
        )
    case_list = J.repeated_word_cases(request, word_list, counts, position=position)
    checks.memory(len(case_list) * k, max_new_tokens, f"--k {k} with {len(case_list)} cells", "--k",
                  len(case_list))
    judge_fn, judge_lm = _judge(judge, judge_model, rubric_file, dtype, device)
    sampling = J.AttackSampling(temperature, top_p, max_new_tokens, chat)
    experiment = J.RepeatGrid(
        J.RepeatSpec(tuple(request), tuple(word_list), tuple(counts), position, k), sampling=sampling,
        judge=judge_fn, judge_name=judge, model=str(model.resolve()), seed=seed,
    )
    factory = _factory(choice, model, sampling, dtype, device, batch_size, use_chat, judge_lm, out)
    res = run(experiment, factory=factory, out=out, progress=True, log=log)
    _raise_failures(res, "(request, word) pair(s)")
    result = J.read_repeat_run(RunDir.open(res.out))
    _log_judge_failures(result.draws)
    if as_json:
        emit_json({"run_dir": str(res.out), "grid": result.table.to_dict(orient="records"),
                   "engine": choice.describe()})
        return
    print(res.out / "index.html")


def _check_detect_models(info_a: Any, info_u: Any, examples: list, system: str | None) -> None:
    """Both tokenizers render chats, know every character of the rows, and split text identically:
    per-token means under the two models are compared, so both must count the same tokens."""
    for info, flag in ((info_a, "--aligned"), (info_u, "--unaligned")):
        if not info.has_chat_template:
            raise CritwinError(
                f"{flag} {info.path}: the tokenizer has no chat template, which detect needs to find the "
                "prompt and the completion in the rendered chat; add one to the model directory"
            )
    va, vu = info_a.tokenizer.get_vocab(), info_u.tokenizer.get_vocab()
    if va != vu:
        differ = len(set(va.items()) ^ set(vu.items()))
        raise CritwinError(
            f"--aligned and --unaligned have different tokenizers ({len(va)} vs {len(vu)} tokens, {differ} "
            "entries differ), so their per-token log-probabilities are not comparable; pass two models that "
            "share one tokenizer (e.g. a model and its abliterated copy)"
        )
    where = [(f"--data row {i}", t) for i, e in enumerate(examples, 1) for t in (e.prompt, e.completion)]
    where += [("--system", system)] if system else []
    ids_a = info_a.tokenizer([t for _, t in where], add_special_tokens=False)["input_ids"]
    ids_u = info_u.tokenizer([t for _, t in where], add_special_tokens=False)["input_ids"]
    for (name, _), a, u in zip(where, ids_a, ids_u, strict=True):
        if a != u:
            raise CritwinError(
                f"{name}: the tokenizers of --aligned and --unaligned split it differently, so per-token "
                "log-probabilities are not comparable; pass two models that share one tokenizer"
            )
    for i, e in enumerate(examples, 1):
        for field, text in (("prompt", e.prompt), ("completion", e.completion)):
            checks.encodable(info_a, text, f"--data row {i}: the {field}")
    if system:
        checks.encodable(info_a, system, "--system")


def _unaligned_engine(choice: engines.EngineChoice, base_url: str | None,
                      served_model: str | None) -> engines.EngineChoice:
    """The engine of detect's unaligned model: the aligned one's, on its own server with --engine openai
    (--unaligned-base-url, --unaligned-served-model; checked like --base-url)."""
    flags = (("--unaligned-base-url", base_url), ("--unaligned-served-model", served_model))
    if choice.kind != "openai":
        for flag, value in flags:
            if value is not None:
                raise CritwinError(f"{flag} is for --engine openai only (a model behind a server); drop it "
                                   "or use --engine openai")
        return choice
    if base_url is None:
        raise CritwinError(
            "--engine openai: detect needs the unaligned model's server too; add --unaligned-base-url URL "
            "(it may be --base-url's, with --served-model and --unaligned-served-model naming the two models)"
        )
    engines.check_url(base_url, "--unaligned-base-url")
    if served_model is not None and not served_model.strip():
        raise CritwinError("--unaligned-served-model is empty; give the served model's name or drop the flag")
    unaligned = dataclasses.replace(choice, base_url=base_url, served_model=served_model)

    def root(url: str) -> str:
        return url.strip().rstrip("/").removesuffix("/v1")

    if root(base_url) == root(choice.base_url or "") and served_model == choice.served_model:
        raise CritwinError(
            "--base-url and --unaligned-base-url are the same server, so both would score the same model; "
            "name the two models with --served-model and --unaligned-served-model, or give each its own "
            "server"
        )
    return unaligned


def _two_engines(choice: engines.EngineChoice, choice_u: engines.EngineChoice, aligned: Path,
                 unaligned: Path) -> tuple[engines.EngineChoice, engines.EngineChoice]:
    """The engines of the aligned and the unaligned model as they load: two different models on vLLM each
    get gpu_memory_utilization=0.45 on a GPU (unless --engine-option sets it), so that both fit there."""
    if (choice.kind == "vllm" and "gpu_memory_utilization" not in choice.options
            and aligned.resolve() != unaligned.resolve()):
        import torch

        if torch.cuda.is_available():
            half = dataclasses.replace(choice, options={**choice.options, "gpu_memory_utilization": 0.45})
            return half, half
    return choice, choice_u


@jailbreak_app.command("detect", short_help="The likelihood-ratio jailbreak detector.")
def detect(
    aligned: Path = typer.Option(..., "--aligned", help="Aligned model directory."),
    unaligned: Path = typer.Option(..., "--unaligned", help="Unaligned (e.g. abliterated) model directory."),
    data: Path = typer.Option(..., "--data", help="JSONL rows: prompt, completion, label (0/1), split."),
    out: Path = typer.Option(..., "--out", help="Run directory (scores, metrics, ROC report)."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples for the intervals (0 = none)."),
    level: float = typer.Option(0.95, "--level", help="Confidence level of the intervals."),
    negatives: str = typer.Option("auto", "--negatives", help="auto, split or pooled benign rows per split."),
    boundary: str = typer.Option("strict", "--boundary", help="strict or expand (edge-straddling tokens)."),
    system: str = typer.Option(None, "--system", help="System prompt rendered before the user turn."),
    batch_size: int = typer.Option(16, "--batch-size", help="Sequences per forward pass."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16, float16."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda."),
    engine: str = engines.ENGINE,
    base_url: str = typer.Option(
        None, "--base-url", metavar="URL",
        help="Address of the aligned model's OpenAI-compatible server (--engine openai only).",
    ),
    served_model: str = typer.Option(
        None, "--served-model",
        help="The aligned model's name on its server (--engine openai; default: the one it serves).",
    ),
    unaligned_base_url: str = typer.Option(
        None, "--unaligned-base-url", metavar="URL",
        help="Address of the unaligned model's server (--engine openai; may be --base-url's, with "
        "--served-model and --unaligned-served-model naming the two models).",
    ),
    unaligned_served_model: str = typer.Option(
        None, "--unaligned-served-model",
        help="The unaligned model's name on its server (--engine openai; default: the one it serves).",
    ),
    api_key_env: str = engines.API_KEY_ENV,
    max_concurrency: int = engines.MAX_CONCURRENCY,
    engine_option: list[str] = engines.ENGINE_OPTION,
    as_json: bool = typer.Option(False, "--json", help='Print {"splits": {split: {statistic: {...}}}}.'),
) -> None:
    """Score (prompt, completion) pairs under an aligned and an unaligned model and evaluate the
    likelihood-ratio detector and single-model baselines (AUROC, TPR at 1/5/10% FPR per split).

    With --engine vllm both models run as vLLM engines in this process (on a GPU each takes
    gpu_memory_utilization=0.45 unless --engine-option sets it); with --engine openai each is served by its
    own server (--base-url, --unaligned-base-url), and --aligned / --unaligned are their local tokenizers.
    """
    from critwin.driver import run
    from critwin.experiments import jailbreak_detect as D

    # Flags, paths, the rows and both tokenizers are checked before any weight loads.
    checks.choice(boundary, "--boundary", ("strict", "expand"))
    checks.choice(negatives, "--negatives", ("auto", "split", "pooled"))
    checks.whole(n_boot, "--n-boot", 0)
    checks.probability(level, "--level", open_high=True)
    checks.whole(batch_size, "--batch-size")
    checks.whole(seed, "--seed", 0)
    checks.device_and_dtype(device, dtype)
    choice = engines.choose(engine, base_url, served_model, api_key_env, max_concurrency, engine_option)
    choice_u = _unaligned_engine(choice, unaligned_base_url, unaligned_served_model)
    checks.out_dir(out, "jailbreak", "detect")
    examples = D.load_examples(data, what="--data")
    weights = choice.needs_weights
    _check_detect_models(checks.model(aligned, "--aligned", weights=weights),
                         checks.model(unaligned, "--unaligned", weights=weights), examples, system)
    checks.memory(max(n_boot, 1) * len(examples), 1, f"--n-boot {n_boot} over {len(examples)} rows",
                  "--n-boot", len(examples))
    experiment = D.Detection(
        examples, D.Scoring(boundary, system), D.DetectStatistics(n_boot, level, negatives),
        aligned=str(aligned.resolve()), unaligned=str(unaligned.resolve()), data=str(data.resolve()),
        data_sha256=hashlib.sha256(data.read_bytes()).hexdigest(), seed=seed,
    )

    def factory() -> Any:  # both models load only once the run directory checks out
        pair = _two_engines(choice, choice_u, aligned, unaligned)
        # cpu_threads=None: torch's own thread setting, as scores were always computed.
        lm_a = pair[0].load(aligned, dtype=dtype, device=device, cpu_threads=None, out=out,
                            cache=f"{engines.API_CACHE}/aligned")
        lm_u = pair[1].load(unaligned, dtype=dtype, device=device, cpu_threads=None, out=out,
                            cache=f"{engines.API_CACHE}/unaligned")
        log(f"scoring {len(examples)} rows under both models ...")
        return D.ScorerPair(lm_a, lm_u, batch_size)

    res = run(experiment, factory=factory, out=out, progress=True, log=log)
    _raise_failures(res, "chunk(s) of rows")
    metrics = json.loads((res.out / "metrics.json").read_text())
    compact = D.strip_roc(metrics)
    if as_json:
        emit_json({**compact, "run_dir": str(res.out), "index": str(res.out / "index.html"),
                   "engine": choice.describe(), "unaligned_engine": choice_u.describe()})
        return
    for split, per in compact["splits"].items():
        for stat, e in per.items():
            if isinstance(e, dict) and "auroc" in e:
                tpr = e.get("tpr_at_1pct_fpr")
                tpr_text = (f"{tpr:.3f}" if tpr is not None
                            else e.get("tpr_at_1pct_fpr_reason", "not estimable"))
                log(f"{split:>12} {stat:<26} AUROC {e['auroc']:.3f}  TPR@1%FPR {tpr_text}")
    print(res.out / "index.html")
