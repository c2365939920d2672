"""Long paginated reads that cost one pass over the data, not one pass per page.

A page of a long read continues the database cursor the previous page left open, as
MongoDB's own ``getMore`` does. Re-querying for every page (``skip``, or a key range)
costs a collection scan per page on servers that cannot use an index for it (FerretDB 1.x
pushes down no range filter or sort), which makes reading everything quadratic.

The page token a client gets back is ``<cursor id>.<last key>``. The cursor belongs to the
identity that opened it: another caller presenting the token, a token whose cursor was
closed (idle for :data:`IDLE_SECONDS`, or the oldest of more than :data:`MAX_OPEN`), or
one served by another service process resumes from the key instead, with a new query
under its own tier filter. A token therefore never widens what its holder may read.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from matdx.core.errors import InputError
from matdx.store.access import Caller

IDLE_SECONDS = 600.0
MAX_OPEN = 64


@dataclass
class _Open:
    caller: Caller
    rows: Iterator[dict[str, Any]]
    used: float


class Cursors:
    """The open cursors of one service process."""

    def __init__(self, idle: float = IDLE_SECONDS, max_open: int = MAX_OPEN) -> None:
        self.idle = idle
        self.max_open = max_open
        self._open: OrderedDict[str, _Open] = OrderedDict()
        self._lock = threading.Lock()

    def _take(self, cid: str, caller: Caller) -> Iterator[dict[str, Any]] | None:
        now = time.monotonic()
        with self._lock:
            for old in [k for k, v in self._open.items() if now - v.used > self.idle]:
                del self._open[old]
            entry = self._open.pop(cid, None)
        if entry is None or entry.caller != caller:
            return None
        return entry.rows

    def _keep(self, cid: str, caller: Caller, rows: Iterator[dict[str, Any]]) -> None:
        with self._lock:
            self._open[cid] = _Open(caller, rows, time.monotonic())
            while len(self._open) > self.max_open:
                self._open.popitem(last=False)

    def page(
        self,
        caller: Caller,
        token: str | None,
        size: int,
        open_rows: Callable[[str], Iterator[dict[str, Any]]],
        key: Callable[[dict[str, Any]], str],
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a long read.

        Parameters
        ----------
        caller
            Who reads.
        token
            The previous page's token (``None`` for the first page).
        size
            Rows per page.
        open_rows
            Opens the read for ``caller``, in key order, after a key (``""``: from the start).
        key
            The key of a row.

        Returns
        -------
        rows, token
            The page and the token of the next one (``None`` after the last page).

        Raises
        ------
        InputError
            For a malformed token.
        """
        if token is None:
            cid, rows = secrets.token_urlsafe(12), None
            after = ""
        else:
            cid, dot, after = token.partition(".")
            if not dot or not cid:
                raise InputError("bad page token: pass back the one the previous page gave")
            rows = self._take(cid, caller)
        if rows is None:
            rows = open_rows(after)
        page = []
        for row in rows:
            page.append(row)
            if len(page) == size:
                break
        if len(page) < size:
            return page, None
        self._keep(cid, caller, rows)
        return page, f"{cid}.{key(page[-1])}"
