"""Every command refuses bad input the same way: exit code 2, exactly one stderr line that names the
problem and the fix, no traceback, and no user file touched (the whole workspace is snapshotted before
and after each case). All cases fail before any model weights load: they use tiny random models whose
tokenizers and configs are read, a damaged weight file, and the bundled reasoning model's tokenizer.

Most cases run in-process through `critwin.cli.main` (fast); a handful run as real `critwin` subprocesses
to prove that the console script prints no traceback either.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from critwin.cli import main

CRITWIN = str(Path(sys.executable).parent / "critwin")
ERROR = "critwin: error: "

# A theory spec whose means are far beyond what float64 resolves next to unit noise.
HUGE_SPEC = {"mixture": {"kind": "gaussian", "means": [[1e308], [-1e308]], "weights": [0.5, 0.5]}, "eps": 0.1,
             "pairs": [{"targ": [0], "init": [0, 1]}]}
GOOD_SPEC = {"mixture": {"kind": "gaussian", "means": [[0], [4]], "weights": [0.5, 0.5]}, "eps": 0.1,
             "pairs": [{"targ": [0], "init": [0, 1]}]}


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """The workspace every case runs in (as the current folder): models, input files and run folders."""
    from critwin.samplers.hf_tiny import char_tokenizer, save_tiny_model, tiny_causal_lm

    root = tmp_path_factory.mktemp("bad-inputs")
    # Tiny random llama models (context 256) with the character tokenizer: with and without a chat template.
    save_tiny_model(root / "tiny", arch="llama", max_positions=256)
    save_tiny_model(root / "nochat", chat_template=None, arch="llama", max_positions=256)
    # The same model with its weight file cut short (a partial copy).
    (root / "truncated").mkdir()
    for f in (root / "tiny").iterdir():
        data = f.read_bytes()
        cut = len(data) // 2 if f.suffix == ".safetensors" else len(data)
        (root / "truncated" / f.name).write_bytes(data[:cut])
    # A model whose tokenizer numbers the characters differently (same size, other vocabulary).
    other = char_tokenizer("zyxwvutsrqponmlkjihgfedcba0123456789 .,:;=+-*/()?!\n",
                           chat_template="{% for m in messages %}{{ m['content'] }}\n{% endfor %}")
    tiny_causal_lm(len(other), arch="llama", max_positions=256).save_pretrained(root / "othertok")
    other.save_pretrained(root / "othertok")
    (root / "t5").mkdir()
    (root / "t5" / "config.json").write_text(json.dumps({"model_type": "t5", "is_encoder_decoder": True}))
    (root / "noconfig").mkdir()
    (root / "noconfig" / "weights.bin").write_bytes(b"x")

    (root / "folder").mkdir()
    # Diffusers pipelines: a tiny latent text-to-image one and a pixel one (the exact score of a mixture).
    from critwin.samplers.diffusers_tiny import exact_mixture_pipeline, save_tiny_latent_pipeline
    from critwin.theory import GaussianMixture

    save_tiny_latent_pipeline(root / "latent")
    exact_mixture_pipeline(GaussianMixture([[-1.0], [1.0]], 0.1, [0.5, 0.5])).save_pretrained(root / "pixel")
    (root / "notarun").mkdir()
    (root / "notarun" / "keep.txt").write_text("mine")
    for name, cfg in (("structured_run", {"critwin_run": 2, "experiment": "structured"}),
                      ("repeat_run", {"critwin_run": 2, "experiment": "jailbreak", "kind": "repeat"})):
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps(cfg))
    (root / "afile.txt").write_text("not a folder")
    (root / "latin1.jsonl").write_bytes(b'{"question": "caf\xe9", "answer": "1"}\n')
    (root / "latin1.yaml").write_bytes(b"mixture:\n  kind: gaussian\n# caf\xe9\n")
    (root / "latin1.txt").write_bytes(b"the {a|b} caf\xe9\n")
    (root / "huge.json").write_text(json.dumps(HUGE_SPEC))
    (root / "spec.json").write_text(json.dumps(GOOD_SPEC))
    (root / "broken.json").write_text('{"mixture": ')
    _jsonl(root / "noquestion.jsonl", [{"prompt": "x", "answer": "1"}, {"prompt": "y", "answer": "2"}])
    _jsonl(root / "accent.jsonl", [{"id": "p0", "question": "Add up a=1, b=2, c=3.", "answer": "6"},
                                   {"id": "p1", "question": "Add up a=1, b=2, é=3.", "answer": "6"}])
    _jsonl(root / "cases.jsonl", [{"prompt": "how do i fix a lamp?", "prefill": "sure, here is how"}])
    _jsonl(root / "noprefill.jsonl", [{"prompt": "how do i fix a lamp?"}])
    _jsonl(root / "accent_cases.jsonl", [{"prompt": "how do i fix a lamp?", "prefill": "sure, voilà"}])
    (root / "badjson.jsonl").write_text('{"prompt": "how", "prefill": \n')
    detect_rows = [{"prompt": f"how do i {v} a cat?", "completion": "sure, here is how.", "label": i % 2,
                    "split": "a"} for i, v in enumerate(("fix", "rob", "wash", "hurt"))]
    _jsonl(root / "detect.jsonl", detect_rows)
    _jsonl(root / "detect_accent.jsonl", [*detect_rows, {**detect_rows[0], "completion": "voilà"}])
    _jsonl(root / "detect_label.jsonl", [{**detect_rows[0], "label": 7}])
    (root / "judge_syntax.py").write_text("def judge(prompt, response)\n    return True\n")
    (root / "judge_ok.py").write_text("def judge(prompt, response):\n    return True\n")
    (root / "rubric.txt").write_text("Judge {prompt} and {response}.")
    (root / "norubric.txt").write_text("No placeholders here.")
    return root


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under `root` with the hash of its content ("dir" for folders)."""
    return {
        str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


T = "--model tiny"
JW = "jailbreak windows --model tiny --prompt 'how do i fix a lamp?' --prefill 'sure, here'"
JR = "jailbreak repeat --model tiny --request 'how do i fix a lamp?' --words poem"
JD = "jailbreak detect --aligned tiny --unaligned tiny --data detect.jsonl"
ST = "structured --model tiny --template 'the {cat|dog} sat.' --prompt 'fill in: the cat sat.'"

# (command line run in the workspace, text naming the problem, text naming the fix)
CASES: list[tuple[str, str, str]] = [
    # ---- scan (the bundled running-sum model unless --model is given)
    ("scan --out o --dense --fractions 0.5", "--dense and --fractions", "give one"),
    ("scan --out o --chat maybe", "--chat 'maybe'", "use auto, on or off"),
    ("scan --out o --limit 0", "--limit 0", "whole number >= 1"),
    ("scan --out o --threads 0", "--threads 0", "whole number >= 1"),
    ("scan --out o --batch-size 0", "--batch-size 0", "whole number >= 1"),
    ("scan --out o --max-new-tokens 0", "--max-new-tokens 0", "whole number >= 1"),
    ("scan --out o --device tpu", "--device 'tpu'", "use auto, cpu or cuda"),
    ("scan --out o --dtype float8", "--dtype 'float8'", "use one of auto"),
    ("scan --out o --level 1.5", "--level 1.5", "value in (0, 1)"),
    ("scan --out o --paper-threshold 0", "--paper-threshold 0", "value in (0, 1]"),
    ("scan --out o --elicit-prompt ' '", "--elicit-prompt is empty", "give the follow-up question"),
    ("scan --out o --data missing.jsonl", "missing.jsonl: no such file", "pass a JSONL file"),
    ("scan --out o --data folder", "folder is a folder, not a file", "pass a JSONL file"),
    ("scan --out o --data latin1.jsonl", "is not UTF-8 text (byte 0xe9 on line 1)", "save it as UTF-8"),
    ("scan --out o --data noquestion.jsonl --task exact", "no usable rows", "check the file and the field"),
    ("scan --out o --data accent.jsonl --strict", "cannot encode 'é'", "drop --strict"),
    ("scan --out o --fields question", "field mapping part 'question' invalid", "write field=key"),
    ("scan --out o --data accent.jsonl --dataset nosuch", "nosuch", "use"),
    ("scan --out o --task poetry", "--task 'poetry' unknown", "use one of"),
    ("scan --out o --answer-from guess", "--answer-from 'guess' unknown", "use continuation or elicit"),
    ("scan --out o -k 0", "-k 0", "resample at least 1"),
    ("scan --out o --fractions a,b", "--fractions 'a,b'", "give comma-separated numbers"),
    ("scan --out o --fractions 2", "cut position 2 is out of range", "fractions kept lie in"),
    ("scan --out o --dense --dense-step 0", "--dense-step 0", "whole number of tokens >= 1"),
    ("scan --out o --temperature -1", "--temperature -1", "finite value >= 0"),
    ("scan --out o --top-p 0", "--top-p 0", "value in (0, 1]"),
    ("scan --out o --seed -1", "--seed -1", "whole number >= 0"),
    ("scan --out o --min-jump 2", "--min-jump 2", "difference of probabilities in [0, 1]"),
    ("scan --out o --engine vlm", "--engine 'vlm' is unknown", "use one of hf"),
    ("scan --out o --engine gaussian", "a testbed sampler, not a lm one", "use one of hf"),
    ("scan --out o --shard 3/3", "--shard '3/3'", "0 <= I < M"),
    ("scan --out o --shard half", "--shard 'half'", "0 <= I < M"),
    ("scan --out afile.txt", "--out afile.txt is a file", "choose a folder"),
    ("scan --out afile.txt/run", "is a file, so no folder can be made there", "choose another path"),
    ("scan --out notarun", "--out notarun exists and is not a critwin run", "choose a new or empty folder"),
    ("scan --out structured_run", "holds a 'structured' run, not 'reasoning'", "choose a new folder"),
    ("scan --out o --model missing", "--model missing does not exist", "pass a local Hugging Face model"),
    ("scan --out o --model afile.txt", "--model afile.txt is a file", "pass the model's folder"),
    ("scan --out o --model noconfig", "has no config.json", "save_pretrained"),
    ("scan --out o --model t5", "is an encoder-decoder (t5)", "pass a decoder-only causal LM"),
    ("scan --out o --model truncated", "model.safetensors is damaged", "re-save or re-copy the model"),
    ("scan --out o -k 1000000000000", "need at least", "use -k"),
    ("scan --out o --max-new-tokens 1000000000", "the context of", "use --max-new-tokens"),
    ("scan --out o --model nochat --chat on", "--chat on: the tokenizer of nochat has no chat template",
     "use --chat off"),
    ("scan --out o --model nochat --answer-from elicit", "needs the chat template",
     "use --answer-from continuation"),
    ("scan --out o --model nochat --stump", "--stump asks for the answer in a second user turn",
     "drop --stump"),
    ("scan --out o --outcome right", "--outcome 'right' unknown", "use same or correct"),
    ("critical-tokens --out o --eps 0", "--eps 0", "probability in (0, 1)"),
    ("critical-tokens --out o --strategy critical --n-max 5", "--n-max caps --strategy adaptive",
     "certifies --eps"),
    ("forks --out o --fork-threshold 0", "--fork-threshold 0", "probability in (0, 1]"),
    ("forks --out o --engine vllm", "--forks needs the model's next-token distribution", "use --engine hf"),
    ("anchors --out o -k 0", "-k 0", "whole number >= 1"),
    ("revise --out o --revise-prompt ''", "--revise-prompt is empty", "give the re-prompt text"),
    ("revise --out o --revise-prompt 'Überprüfen'", "--revise-prompt: the model's tokenizer cannot encode",
     "characters it knows"),
    ("anchors --out o --fractions 0.5", "--sentences cuts at the sentence boundaries", "drop --fractions"),
    ("forks --out o --fork-positions 5,400", "--fork-positions 400: responses have at most 300 tokens",
     "use positions in that range"),
    ("forks --out o --fork-positions 3,-1", "--fork-positions -1", "whole numbers >= 0"),
    ("forks --out o --fork-positions 3,x", "--fork-positions '3,x'", "comma-separated token positions"),
    ("scan --out o --fork-positions 3", "--fork-positions picks where --forks forces tokens", "add --forks"),
    ("forks --out o -k 20000", "--forks with -k 20000", "use -k"),
    ("scan --out o --counterfactual", "--counterfactual scores sentences", "needs --sentences"),
    ("anchors --out o --similarity-threshold 2", "--similarity-threshold 2", "lies in [-1, 1]"),
    ("anchors --out o --embedder nope", "--embedder nope is not a folder", "sentence-transformers model"),
    ("anchors --out o --embedder folder", "--embedder folder holds no model", "sentence-transformers model"),
    ("compare nope1 nope2", "compare: run directory nope1 does not exist", "pass the folder a critwin run"),
    ("compare nope1 nope2 --out afile.txt", "--out afile.txt is a file", "choose a folder"),
    ("compare nope1 nope2 --out notarun", "--out notarun exists and is not a critwin compare report",
     "choose a new or empty folder"),
    ("pivotal --out o --outcome same", "critwin pivotal scores endings by correctness", "--outcome correct"),
    ("pivotal --out o --export-dpo folder", "--export-dpo folder", "exists; pass --force"),
    ("pivotal --out o --export-activations folder", "--export-activations folder", "exists; pass --force"),
    ("pivotal --out o --export-activations a.safetensors --layers 0,x", "--layers '0,x'",
     "give comma-separated whole numbers"),
    ("pivotal --out o --export-activations a.safetensors --layers 9", "--layers 9: the model has 4 layers",
     "choose layers in that range"),
    ("pivotal --out o --layers 0", "--layers picks the layers of --export-activations",
     "drop --layers"),
    ("pivotal --out o --export-activations a.safetensors --model truncated", "model.safetensors is damaged",
     "re-save or re-copy"),
    # ---- structured
    ("structured --out o", "give exactly one of --model", "--from-run"),
    (f"{ST} --out o --mode loose", "--mode 'loose'", "use one of full, search"),
    (f"{ST} --out o --equality fuzzy", "--equality 'fuzzy'", "use one of choices, exact"),
    (f"{ST} --out o --n 0", "--n 0", "whole number >= 1"),
    (f"{ST} --out o --top-p 2", "--top-p 2", "value in (0, 1]"),
    (f"{ST} --out o --top 0", "--top 0", "whole number >= 1"),
    (f"{ST} --out o --template-file latin1.txt", "--template and --template-file", "give one, not both"),
    (f"structured {T} --out o --template-file latin1.txt", "latin1.txt is not UTF-8", "save it as UTF-8"),
    (f"structured {T} --out o --template-file folder", "--template-file folder is a folder", "pass a UTF-8"),
    (f"structured {T} --out o --template-file nope.txt", "--template-file nope.txt: no such file", "pass a"),
    (f"structured {T} --out o --template 'no blanks'", "no blanks found", "write each blank as"),
    (f"structured {T} --out o --template 'the {{a|b}}.'", "cannot encode 'F' (U+0046)",
     "replace or remove those characters"),
    (f"{ST} --out o --max-new-tokens 1000000000", "tokens, but the context of tiny holds 256",
     "lower --max-new-tokens"),
    (f"{ST} --out o --n 1000000000000", "need at least", "use --n"),
    (f"{ST} --out afile.txt", "--out afile.txt is a file", "choose a folder"),
    (f"{ST} --out repeat_run", "holds a 'jailbreak' run, not 'structured'", "choose a new folder"),
    ("structured --model truncated --out o", "model.safetensors is damaged", "re-save or re-copy"),
    ("structured --from-run structured_run --template 'x {a|b}' --out o", "--template applies when sampling",
     "drop it"),
    ("structured --from-run missing --out o", "missing does not exist", "pass the folder"),
    # ---- jailbreak windows
    ("jailbreak windows --model tiny --out o", "give --cases FILE or --prompt", "not both"),
    ("jailbreak windows --model tiny --out o --prompt 'how'", "--prompt needs a non-empty prompt",
     "--prefill"),
    ("jailbreak windows --model tiny --out o --cases cases.jsonl --prefill sure",
     "--prefill goes with --prompt", "carries its own prefill"),
    (f"{JW} --out o --unit words", "--unit 'words'", "use one of chars, tokens"),
    (f"{JW} --out o --step 0", "--step 0", "whole number >= 1"),
    (f"{JW} --out o --k 0", "--k 0", "whole number >= 1"),
    (f"{JW} --out o --chat sometimes", "--chat 'sometimes'", "use one of auto, on, off"),
    ("jailbreak windows --model tiny --out o --cases latin1.jsonl", "latin1.jsonl is not UTF-8 text",
     "save it as UTF-8"),
    ("jailbreak windows --model tiny --out o --cases folder", "--cases folder is a folder", "pass a UTF-8"),
    ("jailbreak windows --model tiny --out o --cases noprefill.jsonl", "line 1: no 'prefill' field",
     'or "prefill": "" for none'),
    ("jailbreak windows --model tiny --out o --cases badjson.jsonl", "line 1: not valid JSON", "fix the"),
    ("jailbreak windows --model tiny --out o --cases accent_cases.jsonl", "cannot encode 'à' (U+00E0)",
     "replace or remove"),
    ("jailbreak windows --model nochat --out o --prompt 'how' --prefill 'sure'",
     "a prefill attack (the prefill starts the assistant turn) needs a chat template", "pass --chat off"),
    ("jailbreak windows --model nochat --out o --prompt 'how' --prefill 'sure' --chat on",
     "--chat on: the tokenizer of nochat has no chat template", "use --chat off"),
    (f"{JW} --out o --judge vibes", "--judge 'vibes'", "use refusal, llm or module:function"),
    (f"{JW} --out o --judge llm", "--judge llm needs --judge-model", "a local causal LM directory"),
    (f"{JW} --out o --judge llm --judge-model truncated", "--judge-model truncated/model.safetensors",
     "re-save"),
    (f"{JW} --out o --judge nosuchmod:judge", "no module named 'nosuchmod'", "./judge.py:judge"),
    (f"{JW} --out o --judge judge_ok:judge", "no module 'judge_ok' on the import path, but ./judge_ok.py",
     "pass --judge ./judge_ok.py:judge or add this folder to PYTHONPATH"),
    (f"{JW} --out o --judge ./missing.py:judge", "missing.py is not a file", "pass an existing Python file"),
    (f"{JW} --out o --judge ./judge_ok.py:nofn", "has no function 'nofn'", "name a function"),
    (f"{JW} --out o --judge ./judge_syntax.py:judge", "raised SyntaxError", "fix it"),
    (f"{JW} --out o --rubric-file rubric.txt", "--rubric-file is read by the LLM judge only",
     "add --judge llm or drop it"),
    (f"{JW} --out o --judge-model tiny", "--judge-model is used by --judge llm only", "drop it"),
    (f"{JW} --out o --judge llm --judge-model tiny --rubric-file norubric.txt",
     "must contain the placeholder", "{response}"),
    (f"{JW} --out o --k 1000000000000", "need at least", "use --k"),
    (f"{JW} --out o --max-new-tokens 1000000000", "but the context of tiny holds 256",
     "lower --max-new-tokens"),
    (f"{JW} --out o --max-prefill 3", "over the limit max_prefill=3 (--max-prefill)", "raise the limit"),
    (f"{JW} --out afile.txt", "--out afile.txt is a file", "choose a folder"),
    (f"{JW} --out repeat_run", "holds a 'jailbreak repeat' run, not 'jailbreak prefill'", "choose a new"),
    (f"{JW} --out o --temperature -2", "--temperature -2", "finite value >= 0"),
    # ---- jailbreak repeat
    (f"{JR} --out o --repeats 100000", "--repeats 100000: the longest prompt then has",
     "use repeat counts up to"),
    (f"{JR} --out o --repeats 1,1", "--repeats '1,1'", "give distinct whole numbers >= 0"),
    (f"{JR} --out o --repeats a,b", "--repeats: comma-separated values expected", "'a,b'"),
    (f"{JR} --out o --position middle", "--position 'middle'", "use one of prompt, prefill"),
    ("jailbreak repeat --model tiny --request 'how' --words ' ' --out o", "--words", "give at least one"),
    ("jailbreak repeat --model tiny --request ' ' --words poem --out o", "--request: empty request",
     "give the text of each request"),
    ("jailbreak repeat --model nochat --request 'how' --words poem --position prefill --out o",
     "--position prefill (the prefill starts the assistant turn) needs a chat template", "--chat off"),
    (f"{JR} --out o --repeats 0,1,2 --k 1000000000000", "need at least", "use --k"),
    # ---- jailbreak detect
    (f"{JD} --out o --n-boot -5", "--n-boot -5", "whole number >= 0"),
    (f"{JD} --out o --level 0", "--level 0", "value in (0, 1)"),
    (f"{JD} --out o --negatives some", "--negatives 'some'", "use one of auto, split, pooled"),
    (f"{JD} --out o --boundary loose", "--boundary 'loose'", "use one of strict, expand"),
    (f"{JD} --out o --batch-size 0", "--batch-size 0", "whole number >= 1"),
    ("jailbreak detect --aligned tiny --unaligned tiny --data latin1.jsonl --out o",
     "latin1.jsonl is not UTF-8 text", "save it as UTF-8"),
    ("jailbreak detect --aligned tiny --unaligned tiny --data folder --out o", "--data folder is a folder",
     "pass a UTF-8 JSONL file"),
    ("jailbreak detect --aligned tiny --unaligned tiny --data detect_label.jsonl --out o",
     "label must be 0 (benign) or 1 (jailbreak), got 7", "fix the label"),
    ("jailbreak detect --aligned tiny --unaligned othertok --data detect.jsonl --out o",
     "--aligned and --unaligned have different tokenizers", "share one tokenizer"),
    ("jailbreak detect --aligned nochat --unaligned tiny --data detect.jsonl --out o",
     "--aligned nochat: the tokenizer has no chat template", "add one to the model directory"),
    ("jailbreak detect --aligned tiny --unaligned tiny --data detect_accent.jsonl --out o",
     "--data row 5: the completion: the tokenizer of tiny cannot encode 'à'", "replace or remove"),
    ("jailbreak detect --aligned tiny --unaligned truncated --data detect.jsonl --out o",
     "--unaligned truncated/model.safetensors is damaged", "re-save"),
    (f"{JD} --out notarun", "--out notarun exists and is not a critwin run", "choose a new or empty folder"),
    # ---- theory
    ("theory latin1.yaml --no-plot", "SPEC latin1.yaml is not UTF-8 text", "save it as UTF-8"),
    ("theory huge.json --no-plot", "mixture.means: entries up to 1e+12", "use smaller means"),
    ("theory spec.json --out plot.xyz", "unsupported file type ('.xyz')", "use .png, .svg, .pdf"),
    ("theory spec.json --out folder", "--out folder is a folder", "give a file name such as"),
    ("theory spec.json --out afile.txt/plot.png", "is a file, so no folder can be made", "another path"),
    ("theory demo --out demo.png", "unsupported file type ('.png')", "use .html, .htm"),
    ("theory folder", "SPEC folder is a folder, not a file", "pass a JSON/YAML spec file"),
    ("theory nope.json", "SPEC nope.json: no such file", "pass a JSON/YAML spec file"),
    ("theory broken.json", "is not valid JSON/YAML", "fix the syntax"),
    ("theory spec.json --eps 2", "--eps 2", "strictly between 0 and 1"),
    ("theory --means 'a;b'", "--means: must be numbers", "separated by commas"),
    ("theory spec.json --means '0;1'", "give either a spec file or --means", "not both"),
    ("theory --means '0;1' --pair 0-1", "--pair: use TARG:INIT", '"0:0,1"'),
    ("theory spec.json --se-target 0.9", "--se-target: must lie in (0, 0.5)", "e.g. 0.005"),
    ("theory", "SPEC: missing", "give a JSON/YAML spec file"),
    # ---- report
    ("report missing", "missing does not exist", "pass the folder a critwin run wrote"),
    ("report afile.txt", "afile.txt is a file, not a run directory", "pass the folder"),
    ("report notarun", "is not a critwin run directory", "pass the folder a run wrote"),
    # ---- demo
    ("demo --n 0 --out d", "--n 0", "whole number >= 1"),
    ("demo --n-language 0 --out d", "--n-language 0", "whole number >= 1"),
    ("demo --seed -1 --out d", "--seed -1", "whole number >= 0"),
    ("demo --out notarun", "exists and is not an empty folder", "choose a new folder"),
    ("demo --out afile.txt/d", "is a file, so no folder can be made there", "choose another path"),
    # ---- grade
    ("grade --task exact --data missing.jsonl", "missing.jsonl: no such file", "pass a JSONL file"),
    ("grade --task exact --data folder", "--data folder is a folder", "pass a JSONL file"),
    ("grade --task exact --data latin1.jsonl", "is not UTF-8 text", "save it as UTF-8"),
    ("grade --task exact --data badjson.jsonl", "line 1: not valid JSON", "write one JSON object per line"),
    ("grade --task poetry --data cases.jsonl", "--task 'poetry' unknown", "use math, mc or exact"),
    # ---- diffusion (the bundled digit DDPM unless --pipeline is given)
    ("diffusion scan --out o --pipeline folder", "folder is not a diffusers pipeline directory",
     "save one with pipeline.save_pretrained"),
    ("diffusion scan --out o --pipeline latent", "latent text-to-image pipeline", "give a prompt"),
    ("diffusion scan --out o --pipeline pixel", "--classifier: give the image classifier", ".skops"),
    ("diffusion scan --out o --feature missing.skops", "--classifier missing.skops: no such file", "no such"),
    ("diffusion scan --out o --scheduler heun2", "scheduler 'heun2' is unknown", "use one of ddpm"),
    ("diffusion scan --out o --levels 1", "--levels 1", "whole number >= 2"),
    ("scan --out o --runner sky", "--runner 'sky'", "use local or ray"),
    ("scan --out o --workers 2", "--workers is for --runner ray", "add --runner ray or drop it"),
    ("scan --out o --runner ray --workers 0", "--workers 0", "whole number >= 1"),
    ("scan --out o --runner ray --gpus-per-worker -1", "--gpus-per-worker -1", "a number >= 0"),
    ("scan --out o --runner ray --ray-address nowhere", "--ray-address 'nowhere'", "use HOST:PORT"),
    ("scan --out o --runner ray --ray-address 127.0.0.1:1", "no Ray cluster answers there",
     "ray start --head"),
    ("diffusion scan --out o --labels spec.json", "--labels needs --data", "the images the labels"),
    ("diffusion scan --out notarun", "notarun", "critwin"),
    ("diffusion demo --draws 0", "--draws 0", ">= 1"),
]


def _run(capfd, argv: list[str]) -> tuple[int, list[str]]:
    capfd.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    _, err = capfd.readouterr()
    return exc.value.code, err.splitlines()


def test_the_table_covers_every_command():
    words = [shlex.split(line) for line, _, _ in CASES]
    commands = {" ".join(w[:2]) if w[0] in ("jailbreak", "diffusion") else w[0] for w in words}
    assert commands == {"scan", "structured", "jailbreak windows", "jailbreak repeat", "jailbreak detect",
                        "theory", "report", "demo", "grade", "diffusion scan", "diffusion demo", "anchors",
                        "forks", "critical-tokens", "pivotal", "compare", "revise"}
    assert len(CASES) >= 60


@pytest.mark.parametrize(("line", "problem", "fix"), CASES, ids=[c[0][:70] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(ws, monkeypatch, capfd, line, problem, fix):
    monkeypatch.chdir(ws)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = _snapshot(ws)
    code, lines = _run(capfd, shlex.split(line))
    assert code == 2, lines
    assert len(lines) == 1, lines
    (msg,) = lines
    assert msg.startswith(ERROR) and "Traceback" not in msg
    assert problem in msg, msg
    assert fix in msg, msg
    assert _snapshot(ws) == before


SUBPROCESS_CASES = [
    ("theory latin1.yaml --no-plot", "is not UTF-8 text"),
    ("report afile.txt", "is a file, not a run directory"),
    ("scan --out o --data folder", "is a folder, not a file"),
    ("structured --model truncated --template 'the {a|b}.' --prompt 'fill' --out o", "is damaged"),
    ("jailbreak windows --model tiny --prompt 'how' --prefill 'sure' --judge judge_ok:judge --out o",
     "pass --judge ./judge_ok.py:judge"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("line", "needle"), SUBPROCESS_CASES, ids=[c[0][:60] for c in SUBPROCESS_CASES])
def test_the_console_script_prints_one_line_and_no_traceback(ws, line, needle):
    """The real `critwin` entry point (whose import path does not hold the current folder)."""
    before = _snapshot(ws)
    proc = subprocess.run([CRITWIN, *shlex.split(line)], cwd=ws, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(ws.parent)})
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR) and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert _snapshot(ws) == before
