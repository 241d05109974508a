"""A pre-imported critwin process that forks one child per command, so that tests can SIGKILL real
`critwin` processes at random moments without paying the interpreter and torch start-up for every one.

Protocol (one JSON line each way): the test writes {"args": [...], "stderr": PATH}; the zygote forks, the
child runs `critwin.cli.main(args)` with stdout and stderr sent to PATH, and the zygote answers
{"pid": PID} at once and {"pid": PID, "exit": CODE} (or {"signal": N}) when the child ends. The zygote
itself only imports (and loads the bundled diffusers pipeline once, to import its classes): it
computes nothing, so no torch or OpenMP threads exist when it forks.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import matplotlib.pyplot  # noqa: F401  imported before forking, so children start warm
import torch  # noqa: F401
import transformers  # noqa: F401

import critwin.cli
import critwin.experiments.diffusion
import critwin.experiments.jailbreak
import critwin.experiments.reasoning
import critwin.experiments.structured
import critwin.report.build
import critwin.samplers.diffusers_pipeline
import critwin.samplers.hf  # noqa: F401

# diffusers imports its pipeline classes lazily, when a pipeline loads: once here, not in every child.
critwin.samplers.diffusers_pipeline.load_pipeline(critwin.samplers.diffusers_pipeline.bundled_pipeline_dir())


def run_child(args: list[str], stderr: str) -> None:
    fd = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    # As a `critwin` started from a terminal: a shell that starts the suite in the background (`make test &`)
    # leaves SIGINT ignored in every process below it, and the Ctrl-C test would then send it in vain.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    code = 0
    try:
        critwin.cli.main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - report the crash as the exit code, like an interpreter would
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    for line in sys.stdin:
        msg = json.loads(line)
        pid = os.fork()
        if pid == 0:
            run_child(msg["args"], msg["stderr"])
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            print(json.dumps({"pid": pid, "signal": os.WTERMSIG(status)}), flush=True)
        else:
            print(json.dumps({"pid": pid, "exit": os.WEXITSTATUS(status)}), flush=True)


if __name__ == "__main__":
    main()
