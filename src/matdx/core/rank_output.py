"""Where an MPI launcher writes the standard output and error of a program's ranks.

Most launchers (Open MPI's ``mpirun``, ``srun``) pass the ranks' output on to their own
standard output and error. Fujitsu MPI's ``mpiexec`` never does: every process writes to
files of its own (Fugaku user guide 1.52, MPI/InputOutputRedirection):

- without output options, rank ``r`` of the ``m``-th ``mpiexec`` of job ``j`` writes to
  ``./output.<j>/<r rounded down to 1000>/<m>/stdout.<m>.<r>`` (and ``stderr.<m>.<r>``) in
  the current directory ("How to specify standard output / standard error output /
  standard input", "Standard Output File Naming Conventions");
- ``-stdout-proc P`` (``-ofout-proc``) writes the standard output to ``P.<m>.<r>``,
  ``-stderr-proc P`` (``-oferr-proc``) the standard error, ``-std-proc P`` (``-of-proc``)
  both to the same file; the other stream keeps the default path ("Output list by option
  specification"). ``P`` may hold the meta characters ``%j`` (job id), ``%m`` (count of
  ``mpiexec`` calls in the job), ``%r`` (rank) and ``%/Nr`` (rank rounded down to ``N``)
  ("About standard output / standard error output when executing large-scale jobs");
- ``-of``/``-std``, ``-ofout``/``-stdout``, ``-oferr``/``-stderr`` are ignored (the
  default applies), and an empty output makes no file unless ``PLE_MPI_STD_EMPTYFILE=on``
  (same pages).

:func:`fujitsu_rank_output` turns a launch's words into :class:`RankOutput`, glob patterns
of rank 0's two files relative to the program's working directory; the job id and the
``mpiexec`` count are not known before the launch, so they match anything.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from dataclasses import dataclass

STDOUT_OPTIONS = ("-stdout-proc", "-ofout-proc", "-std-proc", "-of-proc")
"""Fujitsu MPI ``mpiexec`` options naming the per-rank standard output files."""

STDERR_OPTIONS = ("-stderr-proc", "-oferr-proc", "-std-proc", "-of-proc")
"""Fujitsu MPI ``mpiexec`` options naming the per-rank standard error files."""

DEFAULT_PATHS = {"stdout": "./output.%j/%/1000r/%m/stdout",
                 "stderr": "./output.%j/%/1000r/%m/stderr"}
"""Fujitsu MPI's per-rank output paths without output options (``.<m>.<r>`` follows)."""

_META = re.compile(r"%(?:/\d+)?[jmr]")


@dataclass(frozen=True)
class RankOutput:
    """Where rank 0 of a launch writes its standard output and error.

    Attributes
    ----------
    stdout, stderr
        Glob patterns relative to the program's working directory; each launch writes
        one file matching each (none for an empty stream).
    """

    stdout: str
    stderr: str


def _pattern(path: str, rank: int) -> str:
    """A per-rank path with its meta characters as a glob for ``rank``, ``.<m>.<rank>`` added."""
    parts: list[str] = []
    last = 0
    for m in _META.finditer(path):
        parts.append(glob.escape(path[last:m.start()]))
        meta = m.group()
        if meta.endswith("r"):
            n = int(meta[2:-1]) if meta.startswith("%/") else 1
            parts.append(str(rank // n * n))
        else:  # %j, %m: the job id and mpiexec count, known only once it runs
            parts.append("*")
        last = m.end()
    parts.append(glob.escape(path[last:]))
    return "".join(parts) + f".*.{rank}"


def _option(words: Sequence[str], names: Sequence[str]) -> str | None:
    """The value of the last of ``names`` among the launcher's options, if any."""
    value = None
    for i, word in enumerate(words[:-1]):
        if word in names:
            value = words[i + 1]
    return value


def fujitsu_rank_output(words: Sequence[str], rank: int = 0) -> RankOutput:
    """Where Fujitsu MPI's ``mpiexec`` with these launch words puts ``rank``'s output.

    Parameters
    ----------
    words
        The launcher and its options (the program may follow).
    rank
        The rank in ``MPI_COMM_WORLD``.
    """
    out = _option(words, STDOUT_OPTIONS) or DEFAULT_PATHS["stdout"]
    err = _option(words, STDERR_OPTIONS) or DEFAULT_PATHS["stderr"]
    return RankOutput(_pattern(out, rank), _pattern(err, rank))


def per_rank_output(words: Sequence[str]) -> RankOutput | None:
    """Rank 0's output files of a command using Fujitsu MPI's per-rank output options.

    Only Fujitsu MPI's ``mpiexec`` has these options; ``None`` for any other command
    (its launcher passes the output on).
    """
    if any(w in (*STDOUT_OPTIONS, *STDERR_OPTIONS) for w in words[:-1]):
        return fujitsu_rank_output(words)
    return None
