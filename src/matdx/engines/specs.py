"""The engines' registry entries: what each engine is and can do, as data.

Reading :data:`ENGINES` imports no engine: the workflow layer validates a campaign with
``ENGINES["qe"].elements_setting``, ``.tasks``, ``.seconds_per_structure``; the engine
class is imported by :meth:`EngineSpec.engine_class` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING

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
    batched
        :meth:`~matdx.engines.base.Engine.calculate_many` computes many structures
        together faster than one at a time (a machine-learned potential's batched
        inference); the pipeline then hands it a Firework's structures at once.
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
    mpi: bool = False
    batched: bool = False

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
            mpi=True,
        ),
        EngineSpec(
            "asemd",
            "matdx.engines.asemd.core:AseMdEngine",
            "ASE molecular dynamics with EMT",
            ("md", "relax", "static"),
            0.15,
        ),
        EngineSpec(
            "chgnet",
            "matdx.engines.chgnet.core:ChgnetEngine",
            "CHGNet pretrained universal potential (pip install 'matdx[mlip]')",
            ("relax", "vc-relax", "static", "md"),
            0.5,
            batched=True,
        ),
        EngineSpec(
            "qe",
            "matdx.engines.qe.core:QeEngine",
            "Quantum ESPRESSO pw.x (MATDX_QE_COMMAND, pseudopotentials from MATDX_QE_PSEUDO_DIR)",
            ("relax", "vc-relax", "static"),
            120.0,
            resumable=True,
            elements_setting="pseudo_elements",
            mpi=True,
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
