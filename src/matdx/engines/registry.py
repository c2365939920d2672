"""Registry of engines by the name a campaign file uses (``engine: emt``).

Each entry (:class:`~matdx.engines.specs.EngineSpec`, in :mod:`matdx.engines.specs`) holds
the engine's capabilities as data, so that the workflow layer validates a campaign without
importing any engine: ``ENGINES["qe"].elements_setting``, ``.tasks``. The engine itself
(an :class:`~matdx.engines.base.Engine`) is imported on :func:`get_engine` only.
"""

from __future__ import annotations

from collections.abc import Sequence

from matdx.core.errors import InputError
from matdx.engines.base import Engine, require_task
from matdx.engines.specs import ENGINES, EngineSpec

__all__ = ["ENGINES", "EngineSpec", "check_elements", "check_task", "get_engine"]


def _spec(name: str) -> EngineSpec:
    try:
        return ENGINES[name]
    except KeyError:
        raise InputError(f"unknown engine {name!r} (known: {', '.join(sorted(ENGINES))})") from None


def get_engine(name: str) -> Engine:
    """The engine registered as ``name``, with this machine's default profile.

    Raises
    ------
    InputError
        If the name is not registered.
    """
    return _spec(name).engine_class()()


def check_task(engine: str, task: str) -> None:
    """Raise :class:`InputError` if ``engine`` (a registered name) has no task ``task``."""
    require_task(engine, _spec(engine).tasks, task)


def check_elements(engine: str, elements: Sequence[str]) -> None:
    """Raise :class:`InputError` if ``engine`` cannot treat one of ``elements``."""
    supported = get_engine(engine).supported_elements()
    if supported is None:
        return
    bad = [el for el in elements if el not in supported]
    if bad:
        raise InputError(
            f"engine {engine!r} does not support {', '.join(bad)} "
            f"(supported: {', '.join(sorted(supported))})"
        )


__all__ = ["ENGINES", "EngineSpec", "check_elements", "check_task", "get_engine"]
