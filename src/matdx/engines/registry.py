"""Registry of engines by the name a campaign file uses (``engine: emt``).

Each entry (:class:`EngineSpec`) holds the engine's capabilities as data, so that the
workflow layer validates a campaign without importing any engine:
``ENGINES["qe"].elements_setting``, ``.tasks``, ``.seconds_per_structure``. The engine
itself (an :class:`~matdx.engines.base.Engine`) is imported on :func:`get_engine` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING

from matdx.core.errors import InputError
from matdx.engines.base import require_task

if TYPE_CHECKING:
    from matdx.engines.base import Engine


@dataclass(frozen=True)
class EngineSpec:
    """An engine's registry entry: where it lives and what it can do.

    Attributes
    ----------
    name
        Registry key.
    target
        ``"module:Class"`` of the :class:`~matdx.engines.base.Engine` subclass.
    description
        One line for ``matdx`` help and errors.
    tasks
        Campaign task names the engine runs (relax, vc-relax, static, md).
    seconds_per_structure
        Rough cost of one calculation on one core, for packing tasks into batch jobs.
    resumable
        ``calculate(..., deadline=)`` stops cleanly before the deadline with
        :class:`~matdx.core.errors.DeadlineReachedError` and continues in the same work
        directory when called again.
    elements_setting
        Setting that takes all the elements of a campaign, so that every calculation of
        it uses the same element-specific inputs (pseudopotentials, cutoffs).
    """

    name: str
    target: str
    description: str
    tasks: tuple[str, ...]
    seconds_per_structure: float = 60.0
    resumable: bool = False
    elements_setting: str | None = None

    def engine_class(self) -> type[Engine]:
        """Import the engine's class (on demand, so unused engines cost nothing)."""
        module, cls = self.target.split(":")
        return getattr(import_module(module), cls)  # type: ignore[no-any-return]


ENGINES: dict[str, EngineSpec] = {
    spec.name: spec
    for spec in (
        EngineSpec(
            "emt",
            "matdx.engines.emt.core:EmtEngine",
            "ASE effective-medium theory (EMT)",
            ("relax", "vc-relax", "static"),
            0.15,
        ),
        EngineSpec(
            "lammps",
            "matdx.engines.lammps.core:LammpsEngine",
            "LAMMPS with EAM potentials (MD, minimization)",
            ("md", "relax", "static"),
            0.5,
            resumable=True,
        ),
        EngineSpec(
            "asemd",
            "matdx.engines.asemd.core:AseMdEngine",
            "ASE molecular dynamics with EMT",
            ("md", "relax", "static"),
            0.15,
        ),
        EngineSpec(
            "qe",
            "matdx.engines.qe.core:QeEngine",
            "Quantum ESPRESSO pw.x (MATDX_QE_COMMAND, pseudopotentials from MATDX_QE_PSEUDO_DIR)",
            ("relax", "vc-relax", "static"),
            120.0,
            resumable=True,
            elements_setting="pseudo_elements",
        ),
        EngineSpec(
            "vasp",
            "matdx.engines.vasp.core:VaspEngine",
            "VASP via pymatgen's MP input sets and custodian (licensed; MATDX_VASP_COMMAND)",
            ("relax", "static"),
            3600.0,
        ),
    )
}


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
