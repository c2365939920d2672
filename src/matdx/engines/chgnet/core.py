"""CHGNet, a pretrained universal potential, through ASE: relaxations, single points, MD.

Relaxations run ASE's optimizers on CHGNet's own ASE calculator, as CHGNet's
``StructOptimizer`` does (positions, and the cell through
:class:`ase.filters.FrechetCellFilter`). Many structures relax together in lockstep
(:func:`relax_many`): each optimizer takes its own steps, unchanged, while the model
evaluates all structures still moving in one batched forward pass per step. MD runs in
the ASE MD engine's integrator (:mod:`matdx.engines.asemd`) with the CHGNet calculator.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from ase import Atoms
from ase.filters import FrechetCellFilter
from pymatgen.core import Element, Structure

from matdx.core.errors import EngineError, InputError
from matdx.core.symmetry import spacegroup
from matdx.engines import mlip
from matdx.engines.asemd import core as asemd
from matdx.engines.base import Engine, check_structure
from matdx.engines.emt.core import OPTIMIZERS, to_atoms, to_structure
from matdx.schemas.results import CalcResult

SUPPORTED_ELEMENTS = frozenset(Element.from_Z(z).symbol for z in range(1, mlip.CHGNET_MAX_Z + 1))
"""Elements CHGNet treats (H to Pu)."""

RELAX_KEYS = ("optimizer", "fmax", "steps", "batch_size")
"""Settings of ``relax`` and ``vc-relax``."""

BATCH_SIZE = 16
"""Structures per forward pass of the model (CHGNet's own default)."""


def relax_many(
    structures: Sequence[Structure],
    *,
    relax_cell: bool = True,
    optimizer: Literal["BFGS", "FIRE"] = "FIRE",
    fmax: float = 0.1,
    steps: int = 500,
    batch_size: int = BATCH_SIZE,
) -> list[CalcResult | Exception]:
    """Relax many structures with CHGNet, all evaluated together at each step.

    Each structure has its own ASE optimizer, whose steps are those of a relaxation of
    that structure alone (``optimizer.run``): only the model's evaluations are batched.
    A structure leaves the batch when it has converged or used its ``steps``.

    Parameters
    ----------
    structures
        Starting structures.
    relax_cell
        Relax the cell with :class:`ase.filters.FrechetCellFilter` as well.
    optimizer
        ``"BFGS"`` or ``"FIRE"`` (CHGNet's ``StructOptimizer`` default).
    fmax
        Force threshold in eV/Å (on the generalised forces when the cell relaxes).
    steps
        Most optimizer steps of each structure (``0``: a single point).
    batch_size
        Structures per forward pass of the model.

    Returns
    -------
    list of CalcResult or Exception
        One per structure, in order: its result, or the error that stopped it
        (:class:`InputError` for overlapping atoms or a singular cell).
    """
    start = time.perf_counter()
    out: list[CalcResult | Exception] = [EngineError("not computed")] * len(structures)
    atoms: dict[int, Atoms] = {}
    for i, s in enumerate(structures):
        try:
            check_structure(s)
            _check_elements(s)
        except (InputError, EngineError) as exc:
            out[i] = exc
            continue
        a = to_atoms(s)
        a.calc = mlip.chgnet_calculator()
        atoms[i] = a
    mlip.evaluate(list(atoms.values()), batch_size)
    opts = {
        i: OPTIMIZERS[optimizer](FrechetCellFilter(a) if relax_cell else a, logfile=None)
        for i, a in atoms.items()
    }
    for opt in opts.values():
        opt.fmax = fmax  # as Optimizer.irun sets it
    converged = {i: _converged(opt) for i, opt in opts.items()}
    moving = [i for i in opts if not converged[i] and steps > 0]
    while moving:
        for i in moving:
            opts[i].step()
            opts[i].nsteps += 1
        mlip.evaluate([atoms[i] for i in moving], batch_size)
        for i in moving:
            converged[i] = _converged(opts[i])
        moving = [i for i in moving if not converged[i] and opts[i].nsteps < steps]
    wall = (time.perf_counter() - start) / max(len(structures), 1)
    parameters = {"relax_cell": relax_cell, "optimizer": optimizer, "fmax": fmax, "steps": steps}
    for i, a in atoms.items():
        try:
            out[i] = _result(a, "vc-relax" if relax_cell else "relax", parameters, wall)
            out[i] = out[i].model_copy(
                update={"converged": converged[i], "n_steps": int(opts[i].nsteps)}
            )
        except EngineError as exc:
            out[i] = exc
    return out


def _converged(opt: Any) -> bool:
    return bool(opt.gradient_converged(opt.optimizable.get_gradient()))


def _check_elements(structure: Structure) -> None:
    missing = sorted({site.specie.symbol for site in structure} - SUPPORTED_ELEMENTS)
    if missing:
        raise EngineError(f"CHGNet does not treat {', '.join(missing)}")


def _result(atoms: Atoms, task: str, parameters: dict[str, Any], wall: float) -> CalcResult:
    energy = float(atoms.get_potential_energy())
    if not np.isfinite(energy):
        raise EngineError("CHGNet energy is not finite")
    n = len(atoms)
    symbol, number = spacegroup(atoms)
    magmoms = atoms.calc.results.get("magmoms")
    return CalcResult(
        engine="chgnet",
        code_version=mlip.chgnet_version(),
        task=task,
        parameters=parameters,
        energy=energy,
        energy_per_atom=energy / n,
        volume_per_atom=float(atoms.get_volume()) / n,
        forces=np.asarray(atoms.get_forces(), float).tolist(),
        stress=np.asarray(atoms.get_stress(voigt=True), float).tolist(),
        structure=to_structure(atoms).as_dict(),
        spacegroup_symbol=symbol,
        spacegroup_number=number,
        converged=True,
        n_steps=0,
        wall_time_s=wall,
        extra={"magmoms": np.asarray(magmoms, float).ravel().tolist()}
        if magmoms is not None
        else {},
    )


class ChgnetEngine(Engine):
    """CHGNet: ``relax`` (positions), ``vc-relax`` (and cell), ``static`` or ``md``.

    Settings of ``relax``/``vc-relax``: ``optimizer`` (FIRE), ``fmax`` (0.1 eV/Å),
    ``steps`` (500), ``batch_size`` (see :func:`relax_many`); of ``static``:
    ``batch_size``; of ``md``: those of the ASE MD engine
    (:class:`~matdx.engines.asemd.core.AseMdEngine`). No files are written except by
    ``md``; a deadline only keeps a calculation from starting once passed.
    :meth:`calculate_many` relaxes or evaluates a batch of structures together.
    """

    key = "chgnet"

    def supported_elements(self) -> frozenset[str]:
        """Elements CHGNet treats."""
        return SUPPORTED_ELEMENTS

    def run(
        self,
        structure: Structure | Atoms,
        task: str,
        settings: dict[str, Any],
        workdir: str | Path | None,
        deadline: float | None,
    ) -> CalcResult:
        """Run a declared task (see the class)."""
        if task == "md":
            if isinstance(structure, Structure):
                _check_elements(structure)
            result = asemd.md(
                structure, {**settings, "calculator": "chgnet"}, workdir, self.max_corrections
            )
            return result.model_copy(
                update={"engine": "chgnet", "code_version": mlip.chgnet_version()}
            )
        if isinstance(structure, Atoms):
            structure = to_structure(structure)
        result = self.calculate_many([structure], task, settings)[0]
        if isinstance(result, Exception):
            raise result
        return result

    def calculate_many(
        self,
        structures: Sequence[Structure],
        task: str,
        settings: dict[str, Any] | None = None,
    ) -> list[CalcResult | Exception]:
        """Relax (``relax``, ``vc-relax``) or evaluate (``static``) structures together.

        Returns
        -------
        list of CalcResult or Exception
            One per structure, in order: its result or the error that stopped it.

        Raises
        ------
        InputError
            For another task or an unknown setting.
        """
        settings = dict(settings or {})
        if task not in ("relax", "vc-relax", "static"):
            raise InputError(f"engine 'chgnet' computes {task!r} one structure at a time")
        allowed = ("batch_size",) if task == "static" else RELAX_KEYS
        unknown = sorted(set(settings) - set(allowed))
        if unknown:
            raise InputError(f"unknown chgnet {task} setting(s): {', '.join(unknown)}")
        if task == "static":
            settings["steps"] = 0
        results = relax_many(structures, relax_cell=task == "vc-relax", **settings)
        if task == "static":
            results = [
                r.model_copy(update={"task": "static", "parameters": {}, "converged": True})
                if isinstance(r, CalcResult)
                else r
                for r in results
            ]
        return results
