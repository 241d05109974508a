"""The local runner: every item in this process, in the given order."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from critwin.runners.base import setup

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Local:
    """Computes the items one after another here (a sampler still batches the draws within an item).

    Example:
        `map` yields (item, result) pairs in order; a task's `setup()` runs once, before the first item:

        >>> from critwin.runners import Local
        >>> list(Local().map(lambda x: x * x, [1, 2, 3]))
        [(1, 1), (2, 4), (3, 9)]
        >>> class AddOne:
        ...     def setup(self):
        ...         print("setup")
        ...     def __call__(self, item):
        ...         return item + 1
        >>> list(Local().map(AddOne(), [10, 20]))
        setup
        [(10, 11), (20, 21)]
    """

    def map(self, task: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[T, R]]:
        setup(task)
        for item in items:
            yield item, task(item)
