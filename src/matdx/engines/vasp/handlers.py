"""custodian error handlers for VASP runs, chosen per task.

All handlers but one are custodian's own (:mod:`custodian.vasp.handlers`), in the set that
Materials Project workflows use. The exception is :class:`MaxForceErrorHandler`: custodian
removed its handler of that name, but Materials Project input sets still relax to an energy
criterion (no EDIFFG: VASP's default, 10 × EDIFF), so a "converged" relaxation can end with
large forces. This one restores it on custodian's machinery (``backup``, ``VaspModder``)
with the removed handler's check and correction.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
from custodian.custodian import ErrorHandler
from custodian.utils import backup
from custodian.vasp.handlers import (
    VASP_BACKUP_FILES,
    FrozenJobErrorHandler,
    IncorrectSmearingHandler,
    LargeSigmaHandler,
    MeshSymmetryErrorHandler,
    NonConvergingErrorHandler,
    PositiveEnergyErrorHandler,
    PotimErrorHandler,
    StdErrHandler,
    UnconvergedErrorHandler,
    VaspErrorHandler,
)
from custodian.vasp.interpreter import VaspModder
from custodian.vasp.io import load_vasprun
from pymatgen.io.vasp.inputs import VaspInput


class MaxForceErrorHandler(ErrorHandler):
    """A relaxation that VASP calls converged but whose forces are still large.

    Check: the run is converged (pymatgen's ``Vasprun.converged``) and the largest force
    on a free atom (selective dynamics respected) exceeds ``max_force_threshold``.
    Correction: continue from CONTCAR with half the EDIFFG of the INCAR (default
    10 × EDIFF), as custodian's former ``MaxForceErrorHandler`` did.

    Parameters
    ----------
    output_filename
        The vasprun file.
    max_force_threshold
        Largest acceptable force (eV/Å).
    """

    is_monitor = False

    def __init__(self, output_filename: str = "vasprun.xml", max_force_threshold: float = 0.25):
        self.output_filename = output_filename
        self.max_force_threshold = max_force_threshold

    def check(self, directory: str = "./") -> bool:
        """True if a converged relaxation ended with a force above the threshold."""
        try:
            v = load_vasprun(os.path.join(directory, self.output_filename))
            if not v.converged or int(v.parameters.get("NSW", 0)) <= 0:
                return False
            forces = np.array(v.ionic_steps[-1]["forces"], dtype=float)
            sdyn = v.final_structure.site_properties.get("selective_dynamics")
            if sdyn is not None:
                forces[~np.asarray(sdyn, dtype=bool)] = 0.0
            return bool(np.linalg.norm(forces, axis=1).max() > self.max_force_threshold)
        except Exception:
            return False

    def correct(self, directory: str = "./") -> dict[str, Any]:
        """Copy CONTCAR to POSCAR and halve EDIFFG."""
        backup(VASP_BACKUP_FILES | {self.output_filename}, directory=directory)
        vi = VaspInput.from_directory(directory)
        ediff = float(vi["INCAR"].get("EDIFF", 1e-4))
        ediffg = float(vi["INCAR"].get("EDIFFG", 10 * ediff))
        actions = [
            {"file": "CONTCAR", "action": {"_file_copy": {"dest": "POSCAR"}}},
            {"dict": "INCAR", "action": {"_set": {"EDIFFG": ediffg * 0.5}}},
        ]
        VaspModder(vi=vi, directory=directory).apply_actions(actions)
        return {"errors": ["MaxForce"], "actions": actions}


_COMMON: tuple[Callable[[], ErrorHandler], ...] = (
    VaspErrorHandler,
    StdErrHandler,
    MeshSymmetryErrorHandler,
    UnconvergedErrorHandler,
    NonConvergingErrorHandler,
    PositiveEnergyErrorHandler,
    FrozenJobErrorHandler,
    LargeSigmaHandler,
)

HANDLER_SETS: dict[str, tuple[Callable[[], ErrorHandler], ...]] = {
    "relax": (*_COMMON, PotimErrorHandler, IncorrectSmearingHandler, MaxForceErrorHandler),
    "static": _COMMON,
}
"""Handler factories of each task (fresh handlers per run: they keep error counts)."""


def default_handlers(task: str) -> list[ErrorHandler]:
    """New instances of the handlers of ``task``."""
    return [factory() for factory in HANDLER_SETS[task]]


__all__ = ["HANDLER_SETS", "MaxForceErrorHandler", "default_handlers"]
