"""What may go into a batch script, and how it is quoted.

Batch scripts mix two languages: directive lines (``#SBATCH``, ``#PJM``) that the batch
system parses and the shell ignores, and shell commands. A value can only break out of a
directive line with a line break, and out of a shell word with an unquoted metacharacter.
So:

* values written into directive lines (job names, resource groups, accounts, output paths,
  LLIO sizes) must match the strict patterns below: no blanks, quotes, ``$``, backticks,
  ``;`` or line breaks;
* values written into shell commands (program arguments, working directories, container
  images, environment values) are quoted with :func:`shlex.quote` and may hold any text
  but NUL;
* environment set-up lines of a site profile (``module load ...``, ``. setup-env.sh``)
  are *trusted* shell written by the site administrator and are copied verbatim; they
  are only checked to be one line each (:func:`check_shell_line`).
"""

from __future__ import annotations

import re
import shlex

JOB_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,62}$"
"""Job names: what Slurm and PJM both accept on a directive line (at most 63 bytes)."""

WORD_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Resource groups, partitions, groups and accounts."""

DIRECTIVE_PATH_PATTERN = r"^[A-Za-z0-9_./%+@:,=][A-Za-z0-9_./%+@:,=-]{0,1023}$"
"""Output paths written into directive lines (``%j`` style patterns allowed, no blanks)."""

ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
"""Environment variable names."""

SIZE_PATTERN = r"^[1-9][0-9]{0,8}(Ki|Mi|Gi|Ti)$"
"""LLIO sizes such as ``10Gi``."""

JOB_ID_PATTERN = r"^[0-9]{1,12}(?:_[0-9]{1,7}|\[[0-9]{1,7}\])?$"
"""Job ids: ``123``, Slurm array tasks ``123_4``, PJM bulk ``123[4]`` and step ``123_1``."""

_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.+-]")


def sanitize_job_name(text: str, default: str = "matdx") -> str:
    """Turn arbitrary text into a job name matching :data:`JOB_NAME_PATTERN`.

    Parameters
    ----------
    text
        Any text (for example a Firework name).
    default
        Name used when nothing usable is left.

    Returns
    -------
    str
        A safe job name of at most 63 characters.
    """
    name = _UNSAFE_NAME_CHARS.sub("_", text)[:63]
    if not name or not name[0].isalnum():
        name = ("j" + name)[:63] if name.strip("_.+-") else default
    return name


def check_no_nul(value: str) -> str:
    """Reject NUL, the one character that no quoting can carry into a shell word."""
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


def check_shell_line(value: str) -> str:
    """Accept one trusted shell line: no line breaks, NUL or other control characters."""
    if any(c in value for c in "\n\r\x00\x0b\x0c\x85\u2028\u2029"):
        raise ValueError("must be a single line (no line breaks or NUL characters)")
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def quote(value: str) -> str:
    """Quote one shell word (see :func:`shlex.quote`), refusing NUL."""
    return shlex.quote(check_no_nul(value))


def quote_argv(argv: list[str] | tuple[str, ...]) -> str:
    """Quote a whole argument vector into one shell command line."""
    return " ".join(quote(a) for a in argv)
