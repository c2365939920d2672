"""Progress reporting without tying the workflow layer to a terminal library."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

Advance = Callable[[int], None]


class ProgressSink(Protocol):
    """Something that shows the progress of named stages."""

    def stage(self, label: str, total: int | None) -> Iterator[Advance]:
        """Context manager yielding a function that advances the stage by ``n``."""
        ...  # pragma: no cover

    def message(self, text: str) -> None:
        """Print a line of information."""
        ...  # pragma: no cover


class NullProgress:
    """Shows nothing."""

    @contextmanager
    def stage(self, label: str, total: int | None) -> Iterator[Advance]:
        """Yield a no-op advance function."""
        yield lambda n: None

    def message(self, text: str) -> None:
        """Drop the message."""
