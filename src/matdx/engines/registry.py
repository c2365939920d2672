"""Registry of engines by the name a campaign file uses (``engine: emt``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module

from matdx.core.errors import InputError
from matdx.schemas.results import CalcResult

Relaxer = Callable[..., CalcResult]


@dataclass(frozen=True)
class EngineInfo:
    """What the workflow layer needs to know about an engine.

    Attributes
    ----------
    name
        Registry key.
    module
        Module holding ``relax(structure, **settings)`` and ``SUPPORTED_ELEMENTS``.
    description
        One line for ``matdx`` help and errors.
    seconds_per_structure
        Rough cost of one calculation on one core, for packing tasks into batch jobs.
    """

    name: str
    module: str
    description: str
    seconds_per_structure: float = 60.0

    def load(self) -> object:
        """Import the engine module (on demand, so unused engines cost nothing)."""
        return import_module(self.module)

    def relaxer(self) -> Callable[..., CalcResult]:
        """The engine's ``relax`` function."""
        return self.load().relax  # type: ignore[attr-defined, no-any-return]

    def supported_elements(self) -> frozenset[str] | None:
        """Elements the engine can treat, or ``None`` if not limited."""
        return getattr(self.load(), "SUPPORTED_ELEMENTS", None)


ENGINES: dict[str, EngineInfo] = {
    "emt": EngineInfo("emt", "matdx.engines.emt.core", "ASE effective-medium theory (EMT)", 0.15),
    "lammps": EngineInfo(
        "lammps", "matdx.engines.lammps.core", "LAMMPS with EAM potentials (MD, minimization)", 0.5
    ),
    "asemd": EngineInfo(
        "asemd", "matdx.engines.asemd.core", "ASE molecular dynamics with EMT", 0.15
    ),
    "vasp": EngineInfo(
        "vasp",
        "matdx.engines.vasp.core",
        "VASP via pymatgen's MP input sets and custodian (licensed; MATDX_VASP_COMMAND)",
        3600.0,
    ),
}


def get_engine(name: str) -> EngineInfo:
    """Look up an engine by name.

    Raises
    ------
    InputError
        If the name is not registered.
    """
    try:
        return ENGINES[name]
    except KeyError:
        raise InputError(f"unknown engine {name!r} (known: {', '.join(sorted(ENGINES))})") from None


def check_elements(engine: str, elements: list[str]) -> None:
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


__all__ = ["ENGINES", "EngineInfo", "check_elements", "get_engine"]
