"""Retrying database operations while the server is away, with exponential backoff."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("matdx.retry")

MAX_WAIT_S = 600.0
"""Give up after the server has been unreachable this long (then the error is raised)."""


def retry_db(
    fn: Callable[[], T],
    what: str,
    where: str = "the database",
    max_wait_s: float = MAX_WAIT_S,
    first_delay_s: float = 1.0,
    max_delay_s: float = 30.0,
) -> T:
    """Call ``fn``; while the server is unreachable, wait and call again.

    Only connection problems (pymongo's ``AutoReconnect`` family: server selection
    timeouts, refused or reset connections) are retried; every other error is raised at
    once. One line per attempt goes to stderr, so a user sees why a run is waiting.

    Parameters
    ----------
    fn
        The operation, without arguments.
    what
        What it does, for the message (``"write 40 calculations"``).
    where
        The server, already redacted (``"mongodb://alice:***@db:27017/matdx"``).
    max_wait_s
        Total time to keep trying.
    first_delay_s, max_delay_s
        Backoff: the delay doubles from the first up to the maximum.

    Returns
    -------
    The result of ``fn``.
    """
    from pymongo.errors import AutoReconnect

    start = time.monotonic()
    delay = first_delay_s
    while True:
        try:
            return fn()
        except AutoReconnect as exc:
            waited = time.monotonic() - start
            if waited + delay > max_wait_s:
                raise
            reason = str(exc).split(",")[0].split("(")[0].strip()[:120]
            msg = (
                f"matdx: {where} is unreachable ({reason}); retrying to {what} in "
                f"{delay:.0f} s (waiting {waited:.0f} s so far)"
            )
            print(msg, file=sys.stderr, flush=True)
            log.warning(msg)
            time.sleep(delay)
            delay = min(delay * 2, max_delay_s)
