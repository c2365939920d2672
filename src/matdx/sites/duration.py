"""Wall-clock durations: ``"HH:MM:SS"``, ``"72h"``, ``"30m"``, ``"1h30m"`` or seconds."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator

_HMS = re.compile(r"^(?:(\d{1,3})-)?(\d{1,5}):([0-5]\d):([0-5]\d)$")
_UNITS = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_MAX_SECONDS = 366 * 24 * 3600

DURATION_HELP = "expected HH:MM:SS, [D-]HH:MM:SS, a number of seconds, or e.g. 72h, 30m, 1h30m"


def parse_duration(value: object) -> int:
    """Parse a duration into whole seconds.

    Parameters
    ----------
    value
        ``"HH:MM:SS"`` (hours may exceed 24), ``"D-HH:MM:SS"``, ``"72h"``, ``"30m"``,
        ``"1d12h"``, ``"90s"``, a string of digits or a non-negative integer (seconds).

    Returns
    -------
    int
        Seconds, at least 1.

    Raises
    ------
    ValueError
        If the value is malformed, zero, negative or longer than a year.
    """
    if isinstance(value, bool):
        raise ValueError(DURATION_HELP)
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, float) and value.is_integer():
        seconds = int(value)
    elif isinstance(value, str):
        seconds = _parse_text(value.strip())
    else:
        raise ValueError(DURATION_HELP)
    if seconds <= 0:
        raise ValueError("must be a positive duration")
    if seconds > _MAX_SECONDS:
        raise ValueError("must be at most one year")
    return seconds


def _parse_text(text: str) -> int:
    if text.startswith("-"):
        raise ValueError("must be a positive duration")
    if text.isdigit():
        return int(text)
    m = _HMS.match(text)
    if m:
        days, h, mi, s = (int(g) if g else 0 for g in m.groups())
        return ((days * 24 + h) * 60 + mi) * 60 + s
    m = _UNITS.match(text.lower())
    if text and m and any(m.groups()):
        d, h, mi, s = (int(g) if g else 0 for g in m.groups())
        return ((d * 24 + h) * 60 + mi) * 60 + s
    raise ValueError(DURATION_HELP)


def format_hms(seconds: int) -> str:
    """Format seconds as ``HH:MM:SS`` (hours may exceed 24), as PJM's ``elapse`` wants."""
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h:02d}:{m:02d}:{s:02d}"


def format_slurm_time(seconds: int) -> str:
    """Format seconds as Slurm's ``--time``: ``HH:MM:SS``, or ``D-HH:MM:SS`` from one day."""
    d, rest = divmod(int(seconds), 86400)
    return f"{d}-{format_hms(rest)}" if d else format_hms(rest)


Duration = Annotated[int, BeforeValidator(parse_duration)]
"""A pydantic field type: any accepted duration, stored as whole seconds."""
