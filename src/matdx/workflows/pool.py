"""Worker processes that compute a run's calculations on every core of the machine.

``matdx run`` computes in the process that owns the database connection (and, with the
embedded store, the store file), which would leave all cores but one idle. Within
:func:`compute_pool` the pre-screen's calculations go to worker processes instead: a
worker receives a structure and the step's settings, computes, and hands back the result;
reading inputs, building records and every write stay in the calling process. The
workers are forked when the block starts (``matdx run`` starts it before planning, so
that they import the engines while the caller plans and inherit no database connection);
they never touch the store, and a worker whose caller is gone exits within a second.

Work is keyed by ``(settings hash, material id)``: a batch that is about to run can be
handed out ahead (:meth:`ComputePool.submit`) and collected when it runs
(:meth:`ComputePool.take`), so that the workers never wait for the caller's bookkeeping
between batches.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any

PRELOAD = ("matdx.workflows.compute", "matdx.engines.emt.core")
"""Modules each worker imports as soon as it starts."""

PARENT_CHECK_S = 1.0
"""How often a worker checks that its caller is still there."""

_active: list[ComputePool] = []


def default_workers() -> int:
    """The number of cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _start_worker(parent: int) -> None:
    """Worker initialiser: exit when the process that made the pool is gone.

    SIGTERM ends a worker at once (the parent may turn it into an exception for itself).
    """
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def watch() -> None:
        import time

        while True:
            time.sleep(PARENT_CHECK_S)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # pragma: no cover - pid reused by another user
                os._exit(1)

    threading.Thread(target=watch, name="matdx-pool-parent", daemon=True).start()


def _warm_up(modules: tuple[str, ...]) -> None:
    """Import ``modules`` (the first task of each worker)."""
    import importlib

    for name in modules:
        importlib.import_module(name)


class ComputePool:
    """``workers`` processes that run calculations, with results kept by key until taken.

    Parameters
    ----------
    workers
        Number of worker processes.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor = self._new_executor()
        self._work: dict[tuple[str, str], tuple[Future[Any], Callable[..., Any], tuple]] = {}

    def _new_executor(self) -> ProcessPoolExecutor:
        """Fork the workers now (the first task starts all of them) and warm them up."""
        import multiprocessing

        ex = ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_start_worker,
            initargs=(os.getpid(),),
        )
        for _ in range(self.workers):
            ex.submit(_warm_up, PRELOAD)
        return ex

    def submit(self, key: tuple[str, str], fn: Callable[..., Any], *args: Any) -> None:
        """Start ``fn(*args)`` in a worker, unless work under ``key`` is already held."""
        if key not in self._work:
            self._work[key] = (self._executor.submit(fn, *args), fn, args)

    def holds(self, key: tuple[str, str]) -> bool:
        """Whether work under ``key`` was submitted and not yet taken."""
        return key in self._work

    def take(self, key: tuple[str, str]) -> Any:
        """The result of the work under ``key`` (waiting for it); it is forgotten then.

        Raises
        ------
        BrokenProcessPool
            If a worker died (killed, or crashed in native code) while this work was
            held. New workers then take over the rest of the held work.
        """
        fut, _, _ = self._work.pop(key)
        try:
            return fut.result()
        except BrokenProcessPool:
            if self._executor._broken:  # type: ignore[attr-defined]
                self._restart()
            raise

    def _restart(self) -> None:
        """New workers, running again all work held (the old workers' results are lost)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = self._new_executor()
        for key, (_, fn, args) in list(self._work.items()):
            self._work[key] = (self._executor.submit(fn, *args), fn, args)

    def close(self, abort: bool = False) -> None:
        """Stop the workers (work not yet started is cancelled).

        With ``abort`` (the caller was interrupted) running work is not waited for: the
        workers are terminated.
        """
        self._work.clear()
        if abort:
            for process in list(self._executor._processes.values()):  # type: ignore[attr-defined]
                process.terminate()
        self._executor.shutdown(wait=True, cancel_futures=True)


@contextmanager
def compute_pool(workers: int | None) -> Iterator[ComputePool | None]:
    """Within the block, the pre-screen computes on ``workers`` processes.

    ``None`` means every core (:func:`default_workers`); with one worker nothing changes
    (calculations run in this process) and the block yields ``None``. Within a block
    already open, the block's pool is used again.
    """
    if _active:
        yield _active[-1]
        return
    n = default_workers() if workers is None else workers
    if n < 2:
        yield None
        return
    pool = ComputePool(n)
    _active.append(pool)
    interrupted = True
    try:
        yield pool
        interrupted = False
    except Exception:
        interrupted = False
        raise
    finally:
        _active.remove(pool)
        pool.close(abort=interrupted)


def active_pool() -> ComputePool | None:
    """The pool of the innermost :func:`compute_pool` block, if any."""
    return _active[-1] if _active else None


__all__ = ["ComputePool", "active_pool", "compute_pool", "default_workers"]
