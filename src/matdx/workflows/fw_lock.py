"""Workflow locks that exclude on FerretDB as well as on MongoDB.

FireWorks locks a workflow before it rewrites it (``WFLock``: a ``find_one_and_update``
that sets ``locked`` on the workflow document if it is absent). MongoDB makes that one
atomic step; FerretDB 1.x reads and then writes, so two processes that complete Fireworks
of one workflow at the same moment can both take the lock, and the second rewrite of the
workflow document loses the first one's states (measured: 4 processes x 30 locked
increments of one counter on FerretDB left 74 of 120). A campaign's analysis Firework then
stays WAITING after all its batches completed.

Here each LaunchPad method that rewrites a workflow first takes
:func:`~matdx.workflows.coordination.exclusive` on the workflow (a unique key, atomic on
every server). A lock older than FireWorks' ``WFLOCK_EXPIRATION_SECS`` belongs to a process
that died holding it (a job killed at its walltime) and is broken. FireWorks' own
``WFLock`` still runs inside, so plain ``lpad`` commands exclude each other as before.
This module does not import FireWorks.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from matdx.workflows.coordination import exclusive

_held = threading.local()


@contextmanager
def workflow_lock(lp: Any, fw_id: int) -> Iterator[None]:
    """Hold the lock of the workflow that contains Firework ``fw_id``.

    Re-entrant within a thread (FireWorks' methods call each other). A lock held longer
    than ``lp.wf_lock_stale_after_s`` is broken.

    Raises
    ------
    ValueError
        No workflow contains ``fw_id``.
    """
    wf = lp.workflows.find_one({"nodes": fw_id}, {"_id": 1})
    if wf is None:
        raise ValueError(f"no workflow contains Firework {fw_id}")
    key = f"wf:{wf['_id']}"
    depth: dict[str, int] = _held.__dict__.setdefault("depth", {})
    if depth.get(key):
        depth[key] += 1
        try:
            yield
        finally:
            depth[key] -= 1
        return
    with exclusive(lp.db, key, stale_after_s=lp.wf_lock_stale_after_s):
        depth[key] = 1
        try:
            yield
        finally:
            depth[key] = 0


class WorkflowLocking:
    """LaunchPad methods that rewrite a workflow, each under :func:`workflow_lock`.

    Mixed into a :class:`fireworks.LaunchPad` subclass, before ``LaunchPad``.
    """

    wf_lock_stale_after_s: float = 300.0
    """Age after which a workflow lock's holder is presumed dead (the adapter sets
    FireWorks' ``WFLOCK_EXPIRATION_SECS``)."""

    def _refresh_wf(self, fw_id: int) -> None:
        with workflow_lock(self, fw_id):
            super()._refresh_wf(fw_id)  # type: ignore[misc]

    def append_wf(self, new_wf: Any, fw_ids: list[int], *args: Any, **kwargs: Any) -> None:
        """FireWorks' ``append_wf``, its read of the workflow included, under the lock."""
        with workflow_lock(self, fw_ids[0]):
            super().append_wf(new_wf, fw_ids, *args, **kwargs)  # type: ignore[misc]

    def rerun_fw(self, fw_id: int, *args: Any, **kwargs: Any) -> list[int]:
        """FireWorks' ``rerun_fw`` under the lock."""
        with workflow_lock(self, fw_id):
            return super().rerun_fw(fw_id, *args, **kwargs)  # type: ignore[misc]
