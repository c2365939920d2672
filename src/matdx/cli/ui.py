"""Terminal output: rich progress bars, plain progress lines in logs, one-line errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from matdx.core.progress import Advance

console = Console(width=None if Console().is_terminal else 160)
err_console = Console(stderr=True)

LOG_EVERY_S = 15.0
"""Without a terminal, a progress line is printed at most this often (and at the end)."""


class RichProgress:
    """Progress bars on a terminal; periodic plain lines when output goes to a log."""

    def __init__(self, con: Console | None = None) -> None:
        self.console = con or err_console

    @contextmanager
    def stage(self, label: str, total: int | None) -> Iterator[Advance]:
        """Show one bar (or log lines) while the stage runs."""
        if not self.console.is_terminal:
            with self._lines(label, total) as advance:
                yield advance
            return
        with Progress(
            TextColumn("[bold]{task.description:<12}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
        ) as bar:
            task = bar.add_task(label, total=total)
            yield lambda n: bar.advance(task, n)

    @contextmanager
    def _lines(self, label: str, total: int | None) -> Iterator[Advance]:
        start = last = time.monotonic()
        done = [0]

        def line() -> str:
            of = f"/{total}" if total is not None else ""
            return f"{label:<12} {done[0]}{of}  {time.monotonic() - start:6.1f} s"

        def advance(n: int) -> None:
            nonlocal last
            done[0] += n
            if time.monotonic() - last >= LOG_EVERY_S:
                last = time.monotonic()
                self.console.print(line(), highlight=False)

        yield advance
        self.console.print(line(), highlight=False)

    def message(self, text: str) -> None:
        """Print a line."""
        self.console.print(text)


def one_line(text: str) -> str:
    """Collapse a message to a single line."""
    return " ".join(str(text).split())
