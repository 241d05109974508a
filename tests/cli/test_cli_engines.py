"""`--engine hf|vllm|openai` on every model-running command (`critwin.cli.engines`): each rule of the engine
flags is one line on stderr, exit code 2, no traceback and no file touched, before any model loads (run as
real `critwin` subprocesses, in the workspace of test_cli_bad_inputs.py); `--help` lists the flags; and
`EngineChoice.load` hands each engine the settings it takes. No engine or server is started here: the
engine tests do that.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from _servers import free_port
from test_cli_bad_inputs import CRITWIN, ERROR, _snapshot, ws  # noqa: F401  (ws: the shared workspace)

from critwin.cli import engines, main
from critwin.errors import CritwinError

SECRET = "sk-critwin-test-0123456789"
"""The value of CRITWIN_TEST_KEY in the subprocesses' environment: it must never be printed."""

JW = "jailbreak windows --model tiny --prompt 'how do i fix a lamp?' --prefill 'sure, here'"
JWT = "jailbreak windows --model truncated --prompt 'how do i fix a lamp?' --prefill 'sure, here'"
JR = "jailbreak repeat --model tiny --request 'how do i fix a lamp?' --words poem"
JD = "jailbreak detect --aligned tiny --unaligned tiny --data detect.jsonl"
ST = "structured --model tiny --template 'the {cat|dog} sat.' --prompt 'fill in: the cat sat.'"
STT = "structured --model truncated --template 'the {cat|dog} sat.' --prompt 'fill in: the cat sat.'"
OA = "--engine openai --base-url http://127.0.0.1:8000"

# (command line run in the workspace, text naming the problem, text naming the fix)
CASES: list[tuple[str, str, str]] = [
    # ---- scan
    ("scan --out o --engine openai", "--engine openai needs --base-url URL", "e.g. http://127.0.0.1:8000"),
    ("scan --out o --engine openai --base-url 127.0.0.1:8000", "--base-url '127.0.0.1:8000'",
     "give the server's address with its scheme"),
    ("scan --out o --engine vllm --engine-option nonsense=1",
     "--engine-option 'nonsense' is not a vLLM engine setting",
     "use one of block_size, max_model_len, kv_cache_gib, gpu_memory_utilization"),
    (f"scan --out o {OA} --api-key-env UNSET_VAR_XYZ", "--api-key-env UNSET_VAR_XYZ: the environment "
     "variable UNSET_VAR_XYZ is not set", "export the API key in it"),
    ("scan --out o --engine vllm --served-model m", "--served-model is for --engine openai only",
     "drop it or use --engine openai"),
    (f"scan --out o {OA} --max-concurrency 0", "--max-concurrency 0", "whole number >= 1"),
    ("scan --out o --engine openai --base-url http://x --served-model ' '", "--served-model is empty",
     "give the served model's name"),
    ("scan --out o --model truncated --engine vllm --engine-option max_model_len=lots",
     "--engine-option max_model_len=lots: max_model_len takes a whole number", "takes a whole number"),
    # ---- structured
    (f"{ST} --out o --engine hf --base-url http://x", "--base-url is for --engine openai only",
     "drop it or use --engine openai"),
    (f"{ST} --out o {OA} --engine-option max_model_len=64", "engine options are for --engine vllm only",
     "drop them or use --engine vllm"),
    (f"{STT} --out o --engine vllm --engine-option enforce_eager=maybe", "enforce_eager=maybe",
     "enforce_eager is true or false"),
    (f"{STT} --out o --engine vllm --engine-option kv_cache_gib=0", "kv_cache_gib=0", "a number > 0"),
    ("structured --from-run structured_run --engine vllm --out o", "--engine applies when sampling with "
     "--model", "drop it"),
    ("structured --from-run structured_run --base-url http://x --out o", "--base-url applies when sampling",
     "drop it"),
    # ---- jailbreak windows
    (f"{JWT} --out o --engine openai", "--engine openai needs --base-url URL", "OpenAI-compatible server"),
    (f"{JW} --out o --engine vllm --api-key-env CRITWIN_TEST_KEY", "--api-key-env is for --engine openai "
     "only", "drop it or use --engine openai"),
    (f"{JWT} --out o --engine vllm --engine-option gpu_memory_utilization=1.5",
     "gpu_memory_utilization=1.5: gpu_memory_utilization is the share of GPU memory", "a value in (0, 1]"),
    (f"{JWT} --out o --engine gpt", "--engine 'gpt' is unknown", "use one of hf, openai, vllm"),
    # ---- jailbreak repeat
    (f"{JR} --out o --engine vllm --max-concurrency 4", "--max-concurrency is for --engine openai only",
     "use --engine openai"),
    (f"{JR} --out o --engine vllm --engine-option max_model_len", "--engine-option 'max_model_len'",
     "write KEY=VALUE, e.g. max_model_len=4096"),
    (f"{JR} --out o --engine vllm --engine-option max_num_seqs=4 --engine-option max_num_seqs=8",
     "--engine-option max_num_seqs is given twice", "give each engine option once"),
    (f"{JR} --out o --engine vllm --engine-option dtype=float16", "the engine's dtype comes from --dtype",
     "pass --dtype float16 instead"),
    (f"{JR} --out o --engine openai --base-url http://x --api-key-env ' '", "--api-key-env ' '",
     "name the environment variable that holds the API key"),
    # ---- jailbreak detect
    (f"{JD} --out o {OA}", "detect needs the unaligned model's server too", "add --unaligned-base-url URL"),
    (f"{JD} --out o {OA} --unaligned-base-url http://127.0.0.1:8000/v1/",
     "--base-url and --unaligned-base-url are the same server", "--unaligned-served-model"),
    (f"{JD} --out o {OA} --unaligned-base-url ftp://b", "--unaligned-base-url 'ftp://b'",
     "with its scheme"),
    (f"{JD} --out o --engine vllm --unaligned-base-url http://x", "--unaligned-base-url is for --engine "
     "openai only", "use --engine openai"),
    (f"{JD} --out o --engine vllm --unaligned-served-model m", "--unaligned-served-model is for --engine "
     "openai only", "use --engine openai"),
    (f"{JD} --out o --engine openai --unaligned-base-url http://x", "--engine openai needs --base-url",
     "OpenAI-compatible server"),
    ("jailbreak detect --aligned truncated --unaligned truncated --data detect.jsonl --out o --engine vllm "
     "--engine-option block_size=0", "block_size=0", "whole number >= 1"),
    (f"{JD} --out o {OA} --unaligned-base-url http://127.0.0.1:8001 --api-key-env UNSET_VAR_XYZ",
     "the environment variable UNSET_VAR_XYZ is not set", "--api-key-env names the variable, never the key"),
]


def _critwin(root: Path, line: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real console script in the workspace `root`, with a clean environment holding one secret."""
    return subprocess.run([CRITWIN, *shlex.split(line)], cwd=root, capture_output=True, text=True,
                          timeout=timeout, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
                                                "HOME": str(root.parent), "CRITWIN_TEST_KEY": SECRET})


def test_the_table_covers_every_model_command():
    words = [shlex.split(line) for line, _, _ in CASES]
    commands = {" ".join(w[:2]) if w[0] == "jailbreak" else w[0] for w in words}
    assert commands == {"scan", "structured", "jailbreak windows", "jailbreak repeat", "jailbreak detect"}


@pytest.mark.slow
@pytest.mark.parametrize(("line", "problem", "fix"), CASES, ids=[c[0][:80] for c in CASES])
def test_bad_engine_flags_are_one_line_exit_2_before_any_model_loads(ws, line, problem, fix):  # noqa: F811
    """Cases on the damaged model directory (truncated) prove that the engine flags are checked before
    the model directory is even inspected."""
    before = _snapshot(ws)
    proc = _critwin(ws, line)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    (msg,) = lines
    assert msg.startswith(ERROR) and "Traceback" not in proc.stderr
    assert problem in msg, msg
    assert fix in msg, msg
    assert SECRET not in msg
    assert _snapshot(ws) == before


@pytest.mark.slow
def test_openai_needs_only_a_tokenizer_and_leaves_nothing_when_the_server_is_down(ws):  # noqa: F811
    """--engine openai: the model directory is the served model's local tokenizer (no weights needed; the
    preflight checks run on it), and a server nobody answers on is one line, with no run folder left."""
    tok = ws / "tokonly"
    if not tok.exists():
        tok.mkdir()
        for f in (ws / "tiny").iterdir():
            if f.suffix != ".safetensors":
                (tok / f.name).write_bytes(f.read_bytes())
    url = f"http://127.0.0.1:{free_port()}"
    # The preflight still runs on the local tokenizer: the context of tiny holds 256 tokens.
    proc = _critwin(ws, f"{ST.replace('tiny', 'tokonly')} --out o --max-new-tokens 100000 --engine openai "
                        f"--base-url {url}")
    assert proc.returncode == 2 and "the context of tokonly holds 256" in proc.stderr, proc.stderr
    before = _snapshot(ws)
    start = time.perf_counter()
    proc = _critwin(ws, f"{ST.replace('tiny', 'tokonly')} --out o --n 4 --engine openai --base-url {url} "
                        "--api-key-env CRITWIN_TEST_KEY --max-concurrency 2", timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR) and url in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and SECRET not in proc.stderr
    assert _snapshot(ws) == before  # no run folder, no api_cache
    assert time.perf_counter() - start < 110


# ---- --help ------------------------------------------------------------------------------------------------
COMMANDS = [["scan"], ["structured"], ["jailbreak", "windows"], ["jailbreak", "repeat"],
            ["jailbreak", "detect"]]
ENGINE_FLAGS = ["--engine", "--base-url", "--served-model", "--api-key-env", "--max-concurrency",
                "--engine-option"]


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_help_lists_the_engine_flags(path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as exc:
        main([*path, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ENGINE_FLAGS:
        assert flag in text, flag
    assert "hf (transformers), vllm" in " ".join(text.split())
    if path[-1] == "detect":
        assert "--unaligned-base-url" in text and "--unaligned-served-model" in text


# ---- EngineChoice ------------------------------------------------------------------------------------------
@pytest.fixture
def calls(monkeypatch):
    """load_sampler replaced by a recorder: (kind, path_or_url, settings) per call; no model loads."""
    seen: list[tuple[str, object, dict]] = []

    def fake(kind, path_or_url=None, **settings):
        seen.append((kind, path_or_url, settings))
        return SimpleNamespace(cache_dir=settings.get("cache_dir"))

    monkeypatch.setattr("critwin.samplers.registry.load_sampler", fake)
    return seen


SETTINGS = {"temperature": 0.6, "top_p": 0.9, "max_new_tokens": 32, "chat": None, "batch_size": 64,
            "cpu_threads": "auto"}
SAMPLING = {k: v for k, v in SETTINGS.items() if k not in ("batch_size", "cpu_threads")}


def test_hf_gets_every_setting_as_before(calls, tmp_path):
    engines.choose("hf").load("m", dtype="auto", device="cpu", out=tmp_path, **SETTINGS)
    assert calls == [("hf", "m", {"dtype": "auto", "device": "cpu", **SETTINGS})]


def test_vllm_gets_its_engine_options_and_no_hf_only_settings(calls, tmp_path):
    choice = engines.choose("vllm", engine_option=["max_model_len=512", "enforce_eager=false",
                                                   "gpu_memory_utilization=0.5"])
    assert choice.options == {"max_model_len": 512, "enforce_eager": False, "gpu_memory_utilization": 0.5}
    choice.load("m", dtype="float32", device="cuda", out=tmp_path, prefix_attention=True, **SETTINGS)
    assert calls == [("vllm", "m", {"dtype": "float32", "max_model_len": 512, "enforce_eager": False,
                                    "gpu_memory_utilization": 0.5, **SAMPLING})]
    assert choice.describe() == {"kind": "vllm", "base_url": None, "served_model": None,
                                 "max_concurrency": None, "options": choice.options}


def test_openai_gets_the_server_the_local_tokenizer_and_the_run_folder_cache(calls, tmp_path, monkeypatch):
    monkeypatch.setenv("CRITWIN_TEST_KEY", SECRET)
    choice = engines.choose("openai", "http://h:1", "served", "CRITWIN_TEST_KEY", 3)
    sampler = choice.load("tok", dtype="auto", device="cpu", out=tmp_path / "run", **SETTINGS)
    assert calls == [("openai", "http://h:1", {"model": "tok", "served_model": "served",
                                               "api_key_env": "CRITWIN_TEST_KEY", "max_concurrency": 3,
                                               "cache_dir": tmp_path / "run" / engines.API_CACHE,
                                               **SAMPLING})]
    assert sampler.cache_dir == tmp_path / "run" / engines.API_CACHE and not (tmp_path / "run").exists()
    assert choice.describe() == {"kind": "openai", "base_url": "http://h:1", "served_model": "served",
                                 "max_concurrency": 3, "options": {}}
    assert SECRET not in repr(choice.describe()) and "CRITWIN_TEST_KEY" not in repr(choice.describe())
    calls.clear()
    engines.choose("openai", "http://h:1").load("tok", dtype="auto", device="cpu")
    assert calls[0][2]["max_concurrency"] == engines.DEFAULT_MAX_CONCURRENCY


def test_scan_builds_through_the_engine_choice(calls):
    from critwin.experiments import reasoning as R

    ps = R.load_reasoning_problems(R.BUNDLED_PROBLEMS, "arith", limit=1)
    experiment = R.ReasoningExperiment([ps], R.ReasoningConfig.from_flat(k=2, max_new_tokens=16),
                                       str(R.BUNDLED_MODEL))
    choice = engines.choose("vllm", engine_option=["seed=3"])
    R.lm_factory(choice.load, "m", experiment, device="cpu", dtype="auto", cpu_threads=1)()
    sampling = {k: v for k, v in experiment.sampler_settings().items() if k != "batch_size"}
    assert calls == [("vllm", "m", {"dtype": "auto", "seed": 3, **sampling})]
    calls.clear()
    R.lm_factory("hf", "m", experiment, device="cpu")()  # a kind name, as before
    assert calls == [("hf", "m", {"device": "cpu", **experiment.sampler_settings()})]


@pytest.mark.parametrize("kind, missing, hint", [("vllm", "vllm", "critwin[vllm]"),
                                                 ("openai", "httpx", "critwin[api]")])
def test_a_missing_engine_package_names_the_extra(monkeypatch, kind, missing, hint):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == missing else real(name, *a))
    with pytest.raises(CritwinError, match=rf"--engine {kind} needs the optional dependency '{missing}'"
                                           rf".*{hint.replace('[', '.').replace(']', '.')}"):
        engines.choose(kind, "http://h:1" if kind == "openai" else None)


def test_option_values_are_typed():
    assert engines.parse_options(["a=1", "b=0.5", "c=TRUE", "d=text", "e= 2 "]) == {
        "a": 1, "b": 0.5, "c": True, "d": "text", "e": 2}
    engines.choose("vllm", engine_option=["gpu_memory_utilization=1", "kv_cache_gib=2", "seed=0"])
