"""Fixtures of the sampler tests: `vllm_server`, one real vLLM OpenAI-compatible server (shared by every
pytest-xdist worker of the run, see `_servers.SharedServer`) serving a snapshot of the bundled model."""

from pathlib import Path

from _servers import vllm_server_fixture

import critwin


def _bundled_model() -> Path:
    return Path(critwin.__file__).resolve().parent / "assets" / "reasoning_model"


vllm_server = vllm_server_fixture(_bundled_model)
