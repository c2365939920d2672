"""Registry of engines by the name a campaign file uses (``engine: emt``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

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
    resumable
        ``calculate`` takes ``deadline=`` (epoch seconds), stops cleanly before it with
        :class:`~matdx.core.errors.DeadlineReachedError`, and continues in the same work
        directory when called again.
    elements_setting
        Setting that takes all the elements of a campaign, so that every calculation of
        it uses the same element-specific inputs (pseudopotentials, cutoffs).
    tasks
        Tasks of the module's ``calculate(structure, task, settings, workdir)``, by the
        name campaign steps use → the engine's own name.
    """

    name: str
    module: str
    description: str
    seconds_per_structure: float = 60.0
    tasks: tuple[tuple[str, str], ...] = ()
    elements_setting: str | None = None
    resumable: bool = False

    def load(self) -> object:
        """Import the engine module (on demand, so unused engines cost nothing)."""
        return import_module(self.module)

    def relaxer(self) -> Callable[..., CalcResult]:
        """The engine's ``relax`` function."""
        return self.load().relax  # type: ignore[attr-defined, no-any-return]

    def calculator(self, task: str) -> Callable[..., CalcResult]:
        """``f(structure, settings, workdir)`` running ``task`` (a campaign step's name).

        Raises
        ------
        InputError
            If the engine has no such task.
        """
        own = dict(self.tasks).get(task)
        if own is None:
            raise InputError(
                f"engine {self.name!r} has no task {task!r} "
                f"(it has: {', '.join(t for t, _ in self.tasks) or 'none'})"
            )
        import inspect

        calculate = self.load().calculate  # type: ignore[attr-defined]
        resumable = self.resumable and "deadline" in inspect.signature(calculate).parameters

        def run(
            structure: Any,
            settings: dict[str, Any],
            workdir: Any = None,
            deadline: float | None = None,
        ) -> CalcResult:
            extra = {"deadline": deadline} if resumable and deadline is not None else {}
            return calculate(structure, own, settings=settings, workdir=workdir, **extra)  # type: ignore[no-any-return]

        return run

    def supported_elements(self) -> frozenset[str] | None:
        """Elements the engine can treat, or ``None`` if not limited."""
        return getattr(self.load(), "SUPPORTED_ELEMENTS", None)


_RELAX_STATIC = (("relax", "relax"), ("vc-relax", "vc-relax"), ("static", "static"))

ENGINES: dict[str, EngineInfo] = {
    "emt": EngineInfo(
        "emt", "matdx.engines.emt.core", "ASE effective-medium theory (EMT)", 0.15, _RELAX_STATIC
    ),
    "lammps": EngineInfo(
        "lammps",
        "matdx.engines.lammps.core",
        "LAMMPS with EAM potentials (MD, minimization)",
        0.5,
        (("md", "md"), ("relax", "relax"), ("static", "static")),
        resumable=True,
    ),
    "asemd": EngineInfo(
        "asemd",
        "matdx.engines.asemd.core",
        "ASE molecular dynamics with EMT",
        0.15,
        (("md", "md"), ("relax", "relax"), ("static", "static")),
    ),
    "qe": EngineInfo(
        "qe",
        "matdx.engines.qe.core",
        "Quantum ESPRESSO pw.x (MATDX_QE_COMMAND, pseudopotentials from MATDX_QE_PSEUDO_DIR)",
        120.0,
        (("relax", "relax"), ("vc-relax", "vc-relax"), ("static", "scf")),
        "pseudo_elements",
        resumable=True,
    ),
    "vasp": EngineInfo(
        "vasp",
        "matdx.engines.vasp.core",
        "VASP via pymatgen's MP input sets and custodian (licensed; MATDX_VASP_COMMAND)",
        3600.0,
        (("relax", "relax"), ("static", "static")),
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
