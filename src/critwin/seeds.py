"""Per-case random streams: a case's draws depend only on the run's seed and the case's id, never on the
order, chunking or number of workers that compute the cases, so a resumed or re-split run draws the same."""

from __future__ import annotations

import hashlib

import numpy as np


def case_entropy(seed: int, *keys: str | int) -> list[int]:
    """SeedSequence entropy of (seed, keys...): strings enter through SHA-256, so ids of any form work."""
    words = [int(seed)]
    for k in keys:
        if isinstance(k, int):
            words.append(int(k))
        else:
            digest = hashlib.sha256(str(k).encode("utf-8")).digest()
            words += [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return words


def case_rng(seed: int, *keys: str | int) -> np.random.Generator:
    """The generator of one case: `np.random.default_rng` of `case_entropy(seed, *keys)`."""
    return np.random.default_rng(case_entropy(seed, *keys))
