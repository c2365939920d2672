"""Terminal output: rich progress bars and one-line errors."""

from __future__ import annotations

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


class RichProgress:
    """Progress bars on the terminal (plain lines when output is not a terminal)."""

    def __init__(self, con: Console | None = None) -> None:
        self.console = con or err_console

    @contextmanager
    def stage(self, label: str, total: int | None) -> Iterator[Advance]:
        """Show one bar while the stage runs."""
        with Progress(
            TextColumn("[bold]{task.description:<12}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        ) as bar:
            task = bar.add_task(label, total=total)
            yield lambda n: bar.advance(task, n)

    def message(self, text: str) -> None:
        """Print a line."""
        self.console.print(text)


def one_line(text: str) -> str:
    """Collapse a message to a single line."""
    return " ".join(str(text).split())
