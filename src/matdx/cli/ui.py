"""Terminal output: tables or JSON/CSV, progress bars and spinners, one-line errors."""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

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


OUTPUT_FORMATS = ("table", "json", "csv")
"""Output formats of the commands that list records (``--format``)."""


def output_format(fmt: str | None) -> str:
    """The ``--format`` to use: as given, else a table on a terminal and CSV otherwise.

    Raises
    ------
    InputError
        For an unknown format.
    """
    from matdx.core.errors import InputError

    if fmt is None:
        return "table" if console.is_terminal else "csv"
    if fmt not in OUTPUT_FORMATS:
        raise InputError(f"unknown output format {fmt!r} (choose from {', '.join(OUTPUT_FORMATS)})")
    return fmt


@dataclass(frozen=True)
class Column:
    """One column of a listing: record key, table header, table text of a value.

    A column with ``table=False`` is only in JSON and CSV (the table says it in its title).
    """

    key: str
    header: str = ""
    text: Callable[[Any], str] = str
    justify: str = "left"
    table: bool = True


def fixed(digits: int) -> Callable[[Any], str]:
    """Table text of a number with ``digits`` decimals (``–`` for none)."""
    return lambda x: "–" if x is None else f"{x:.{digits}f}"


def emit(
    rows: Sequence[dict[str, Any]], columns: Sequence[Column], fmt: str, title: str = ""
) -> None:
    """Print records as a table (terminal), a JSON array or CSV (raw values, keyed by name).

    Parameters
    ----------
    rows
        Records: the :attr:`Column.key` of each column is read from each.
    columns
        What to show, in order.
    fmt
        ``table``, ``json`` or ``csv`` (see :func:`output_format`).
    title
        Title of the table.
    """
    keys = [c.key for c in columns]
    if fmt == "json":
        print(json.dumps([{k: r.get(k) for k in keys} for r in rows], default=str, indent=1))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(keys)
        for r in rows:
            writer.writerow([_cell(r.get(k)) for k in keys])
        sys.stdout.flush()
    else:
        table = Table(title=title or None)
        shown = [c for c in columns if c.table]
        for c in shown:
            table.add_column(c.header or c.key, justify=c.justify)  # type: ignore[arg-type]
        for r in rows:
            table.add_row(*(c.text(r.get(c.key)) for c in shown))
        console.print(table)


def _cell(value: Any) -> Any:
    """A CSV cell: empty for none, JSON text for a list or mapping."""
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value, default=str, sort_keys=True)
    return value


def emit_json(data: Any) -> None:
    """Print one JSON document on stdout."""
    print(json.dumps(data, default=str, indent=1))


@contextmanager
def busy(text: str) -> Iterator[None]:
    """A spinner on the terminal's stderr while a slow step runs (nothing in a log)."""
    if not err_console.is_terminal:
        yield
        return
    with err_console.status(text):
        yield
