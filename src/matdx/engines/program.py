"""How an engine starts its external program and gets the program's output.

Every engine that runs a program (pw.x, lmp) starts it with :func:`start_program`: never
through a shell, in its run directory, standard input closed, standard output and error
in two files of that directory that its handlers and parser read. A launcher that does
not pass the ranks' output on (Fujitsu MPI's ``mpiexec`` writes it to per-rank files,
:mod:`matdx.core.rank_output`) declares where rank 0's files land (the profile's
``output``); when the program ends, the files of this launch are appended to the
engine's two files, so that the engine reads the program's output wherever it ran.
"""

from __future__ import annotations

import glob
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from matdx.core.rank_output import RankOutput

_Snapshot = dict[str, tuple[int, int]]


class ProgramProcess(subprocess.Popen):  # type: ignore[type-arg]
    """A started program that runs ``on_end`` once, when it is first seen to have ended.

    custodian waits for a job's process (``wait``, or ``poll`` with monitors) before its
    handlers look at the outputs, so they see the collected output.
    """

    def __init__(self, args: Sequence[str], on_end: Callable[[], None] | None,
                 **kwargs: Any) -> None:
        self._on_end = on_end
        super().__init__(list(args), **kwargs)

    def _ended(self) -> None:
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the program; collect its output once it has ended."""
        code = super().wait(timeout)
        self._ended()
        return code

    def poll(self) -> int | None:
        """The exit status, ``None`` while it runs; collect its output once it has ended."""
        code = super().poll()
        if code is not None:
            self._ended()
        return code


def _snapshot(directory: Path, pattern: str) -> _Snapshot:
    """Files matching ``pattern`` in ``directory`` with their modification time and size."""
    found: _Snapshot = {}
    for name in glob.glob(pattern, root_dir=directory):
        try:
            st = os.stat(directory / name)
        except OSError:
            continue
        found[name] = (st.st_mtime_ns, st.st_size)
    return found


def _written(directory: Path, pattern: str, before: _Snapshot) -> Path | None:
    """The file matching ``pattern`` written since ``before`` (the newest if several)."""
    new = [(stat, name) for name, stat in _snapshot(directory, pattern).items()
           if before.get(name) != stat]
    return directory / max(new)[1] if new else None


def _collector(directory: Path, output: RankOutput, targets: tuple[Path, Path]
               ) -> Callable[[], None]:
    """What to do when the program ends: append rank 0's new files to ``targets``."""
    patterns = (output.stdout, output.stderr)
    before = [_snapshot(directory, p) for p in patterns]

    def collect() -> None:
        for pattern, seen, target in zip(patterns, before, targets, strict=True):
            found = _written(directory, pattern, seen)
            if found is not None:
                with open(target, "ab") as fh:
                    fh.write(found.read_bytes())

    return collect


def start_program(
    command: Sequence[str],
    directory: Path,
    stdout_file: str,
    stderr_file: str,
    env: Mapping[str, str] | None = None,
    output: RankOutput | None = None,
) -> ProgramProcess:
    """Start ``command`` in ``directory``; its output ends up in ``stdout_file``/``stderr_file``.

    Parameters
    ----------
    command
        Launcher, program and arguments.
    directory
        Working directory of the program.
    stdout_file, stderr_file
        Files (in ``directory``, truncated) for the standard output and error.
    env
        The program's whole environment (default: this process's).
    output
        Where the launcher writes rank 0's output instead (the profile's ``output``):
        appended to the two files when the program ends. ``None``: the launcher's own
        output is the program's.

    Raises
    ------
    OSError
        The launcher cannot be started.
    """
    directory = Path(directory)
    targets = (directory / stdout_file, directory / stderr_file)
    on_end = _collector(directory, output, targets) if output is not None else None
    with open(targets[0], "wb") as out, open(targets[1], "wb") as err:
        return ProgramProcess(
            command, on_end, cwd=directory, stdin=subprocess.DEVNULL, stdout=out,
            stderr=err, env=dict(os.environ if env is None else env),
        )
