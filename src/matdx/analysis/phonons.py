"""Harmonic phonons with phonopy, forces from any engine.

The workflow is phonopy's, split so that forces come from anywhere: phonopy generates the
displaced supercells, ``forces_fn`` computes their forces (EMT, an ML potential, VASP
statics...), phonopy builds the force constants and gives the phonon DOS, the band
structure, thermal properties and the frequencies from which dynamical stability is
judged (phonopy reports an imaginary frequency as a negative number).

The band path is Setyawan and Curtarolo's, from pymatgen, for the standard primitive cell;
its q-points are carried over to phonopy's primitive cell through the lattice
transformation that pymatgen's ``StructureMatcher`` finds between the two cells.

The result keeps large arrays apart from its small summary (:class:`PhononResult`):
``summary`` goes into a calculation's ``extra``, ``arrays`` into files or GridFS.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from pymatgen.core import Structure

from matdx.core.errors import EngineError
from matdx.schemas.results import CalcResult

ForcesFn = Callable[[list[Structure]], list[np.ndarray]]
"""Forces (eV/Å, one ``(n_atoms, 3)`` array per structure) of a list of supercells."""

IMAGINARY_TOL_THZ = 0.05
"""Frequencies below ``-IMAGINARY_TOL_THZ`` (THz) count as imaginary modes."""


class PhononSummary(BaseModel):
    """The small part of a phonon calculation, for a calculation's ``extra``.

    Frequencies in THz; thermal properties per mole of atoms (phonopy's per-cell values
    divided by the number of atoms in the primitive cell): kJ/mol and J/K/mol.
    """

    supercell_matrix: list[list[int]]
    primitive_matrix: list[list[float]]
    displacement: float = Field(..., description="Atomic displacement (Å).")
    n_displacements: int
    n_atoms_primitive: int
    n_atoms_supercell: int
    mesh: list[int] = Field(..., description="q-point mesh of the DOS and thermal properties.")
    max_frequency: float = Field(..., description="Highest frequency on the mesh (THz).")
    min_frequency: float = Field(..., description="Lowest frequency on mesh and path (THz).")
    min_frequency_qpoint: list[float] = Field(..., description="Where (primitive reciprocal).")
    imaginary_tolerance: float = IMAGINARY_TOL_THZ
    dynamically_stable: bool = Field(..., description="No frequency below -imaginary_tolerance.")
    band_path: list[list[str]] = Field(..., description="Labels of each continuous path.")
    zero_point_energy: float | None = Field(None, description="F at 0 K (kJ/mol of atoms).")
    thermal_300K: dict[str, float] | None = Field(  # noqa: N815
        None, description="free_energy (kJ/mol), entropy and heat_capacity (J/K/mol) at 300 K."
    )


@dataclass
class PhononResult:
    """Summary, large arrays, and the phonopy object of a phonon calculation.

    Attributes
    ----------
    summary
        Small, storable results.
    arrays
        ``force_constants``; ``mesh_qpoints``, ``mesh_weights``, ``mesh_frequencies``;
        ``dos_frequencies``, ``dos`` (states/THz per primitive cell); ``band_qpoints``,
        ``band_distances``, ``band_frequencies`` (all path segments concatenated);
        ``temperatures`` (K), ``free_energy`` (kJ/mol), ``entropy``, ``heat_capacity``
        (J/K/mol), per mole of atoms.
    phonopy
        The :class:`phonopy.Phonopy` object, for anything further.
    """

    summary: PhononSummary
    arrays: dict[str, np.ndarray]
    phonopy: Any = field(repr=False)

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write the arrays, the summary and phonopy's parameters into ``directory``.

        Returns
        -------
        dict
            Paths of ``phonons.npz`` (arrays), ``phonon_summary.json`` and
            ``phonopy_params.yaml`` (cells, displacements, forces: reloadable with
            ``phonopy.load``).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {
            "arrays": directory / "phonons.npz",
            "summary": directory / "phonon_summary.json",
            "phonopy": directory / "phonopy_params.yaml",
        }
        np.savez_compressed(paths["arrays"], **self.arrays)
        paths["summary"].write_text(self.summary.model_dump_json(indent=1))
        self.phonopy.save(str(paths["phonopy"]))
        return paths


def forces_from_engine(calculate: Callable[[Structure], CalcResult]) -> ForcesFn:
    """A ``forces_fn`` from an engine's single-point calculation (e.g. a VASP static)."""

    def forces_fn(structures: list[Structure]) -> list[np.ndarray]:
        out = []
        for s in structures:
            result = calculate(s)
            if result.forces is None:
                raise EngineError(f"{result.engine} returned no forces")
            out.append(np.asarray(result.forces, dtype=float))
        return out

    return forces_fn


def band_path(primitive: Structure) -> tuple[list[list[np.ndarray]], list[list[str]]]:
    """High-symmetry path of ``primitive`` in the basis of its own reciprocal lattice.

    Returns
    -------
    paths, labels
        For each continuous path, its q-points (fractional) and their labels.
    """
    from pymatgen.core.structure_matcher import StructureMatcher
    from pymatgen.symmetry.kpath import KPathSetyawanCurtarolo

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "input structure does not match the standard"
        kpath = KPathSetyawanCurtarolo(primitive)
    matcher = StructureMatcher(
        ltol=0.05, stol=0.05, angle_tol=2, primitive_cell=False, scale=False,
        attempt_supercell=False,
    )
    found = matcher.get_transformation(primitive, kpath.prim)
    if found is None:
        raise EngineError("cannot relate the primitive cell to its standard setting")
    # primitive lattice = sc @ standard lattice (up to a rotation), so q = q_std @ sc.T
    sc = np.asarray(found[0], dtype=float)
    points = kpath.kpath["kpoints"]
    paths = [[np.asarray(points[label]) @ sc.T for label in seg] for seg in kpath.kpath["path"]]
    return paths, [list(seg) for seg in kpath.kpath["path"]]


def phonons(
    structure: Structure,
    forces_fn: ForcesFn,
    supercell_matrix: Sequence[Sequence[int]] | Sequence[int] | int,
    displacement: float = 0.01,
    mesh: float | Sequence[int] = 50.0,
    temperatures: Sequence[float] | None = None,
    *,
    primitive_matrix: str | Sequence[Sequence[float]] | None = "auto",
    symmetrize: bool = True,
    subtract_residual_forces: bool = False,
    band_npoints: int = 51,
    imaginary_tol: float = IMAGINARY_TOL_THZ,
) -> PhononResult:
    """Harmonic phonons of ``structure`` by finite displacements.

    Parameters
    ----------
    structure
        Relaxed unit cell.
    forces_fn
        Computes the forces of the displaced supercells (any engine).
    supercell_matrix
        Supercell of the unit cell: 3×3, three diagonal numbers, or one number.
    displacement
        Atomic displacement (Å).
    mesh
        q-point mesh (three numbers) or, as one number, phonopy's length for an automatic
        mesh.
    temperatures
        Temperatures (K) of the thermal properties; default 0 to 1000 K by 10 K.
    primitive_matrix
        phonopy's primitive matrix; ``"auto"`` finds the primitive cell.
    symmetrize
        Symmetrize the force constants (translational invariance, index permutation).
    subtract_residual_forces
        Also compute the undisplaced supercell and subtract its forces.
    band_npoints
        q-points per band-path segment.
    imaginary_tol
        Frequencies below ``-imaginary_tol`` (THz) make the structure unstable.

    Returns
    -------
    PhononResult

    Raises
    ------
    EngineError
        If ``forces_fn`` returns the wrong number or shape of forces.
    """
    from phonopy import Phonopy
    from phonopy.phonon.band_structure import get_band_qpoints_and_path_connections
    from pymatgen.io.phonopy import get_phonopy_structure, get_pmg_structure

    with warnings.catch_warnings():  # phonopy warns about "auto" even when asked for
        warnings.filterwarnings("ignore", message="primitive_matrix defaulted to 'auto'")
        ph = Phonopy(
            get_phonopy_structure(structure),
            supercell_matrix=_supercell_matrix(supercell_matrix),
            primitive_matrix=primitive_matrix,
        )
    ph.generate_displacements(distance=displacement)
    cells = [get_pmg_structure(c) for c in ph.supercells_with_displacements]
    n_sc = len(ph.supercell)
    if subtract_residual_forces:
        cells.insert(0, get_pmg_structure(ph.supercell))
    forces = [np.asarray(f, dtype=float) for f in forces_fn(cells)]
    if len(forces) != len(cells) or any(f.shape != (n_sc, 3) for f in forces):
        raise EngineError(
            f"forces_fn returned {len(forces)} force arrays for {len(cells)} supercells "
            f"of {n_sc} atoms"
        )
    if subtract_residual_forces:
        residual = forces.pop(0)
        forces = [f - residual for f in forces]
    ph.forces = np.array(forces)
    ph.produce_force_constants()
    if symmetrize:
        ph.symmetrize_force_constants()

    ph.run_mesh(mesh, with_eigenvectors=False)
    m = ph.get_mesh_dict()
    ph.run_total_dos()
    dos = ph.get_total_dos_dict()

    paths, labels = band_path(get_pmg_structure(ph.primitive))
    qpoints, connections = get_band_qpoints_and_path_connections(paths, npoints=band_npoints)
    ph.run_band_structure(qpoints, path_connections=connections)
    bands = ph.get_band_structure_dict()
    band_q = np.concatenate(bands["qpoints"])
    band_f = np.concatenate(bands["frequencies"])

    temps = np.arange(0.0, 1001.0, 10.0) if temperatures is None else np.asarray(temperatures)
    ph.run_thermal_properties(temperatures=temps, exclude_gamma_acoustic=True)
    tp = ph.get_thermal_properties_dict()
    n_prim = len(ph.primitive)
    thermal = {k: np.asarray(tp[k]) / n_prim for k in ("free_energy", "entropy", "heat_capacity")}

    mesh_f = np.asarray(m["frequencies"])
    all_q = np.concatenate([np.asarray(m["qpoints"]), band_q])
    all_f = np.concatenate([mesh_f.min(axis=1), band_f.min(axis=1)])
    i_min = int(np.argmin(all_f))
    summary = PhononSummary(
        supercell_matrix=np.asarray(ph.supercell_matrix, dtype=int).tolist(),
        primitive_matrix=np.asarray(ph.primitive_matrix, dtype=float).tolist(),
        displacement=displacement,
        n_displacements=len(ph.supercells_with_displacements),
        n_atoms_primitive=n_prim,
        n_atoms_supercell=n_sc,
        mesh=[int(x) for x in ph.mesh_numbers],
        max_frequency=float(mesh_f.max()),
        min_frequency=float(all_f[i_min]),
        min_frequency_qpoint=[float(x) for x in all_q[i_min]],
        imaginary_tolerance=imaginary_tol,
        dynamically_stable=bool(all_f[i_min] >= -imaginary_tol),
        band_path=labels,
        zero_point_energy=_at(temps, thermal["free_energy"], 0.0),
        thermal_300K=_row(temps, thermal, 300.0),
    )
    arrays = {
        "force_constants": np.asarray(ph.force_constants),
        "mesh_qpoints": np.asarray(m["qpoints"]),
        "mesh_weights": np.asarray(m["weights"]),
        "mesh_frequencies": mesh_f,
        "dos_frequencies": np.asarray(dos["frequency_points"]),
        "dos": np.asarray(dos["total_dos"]),
        "band_qpoints": band_q,
        "band_distances": np.concatenate(bands["distances"]),
        "band_frequencies": band_f,
        "temperatures": temps,
        **thermal,
    }
    return PhononResult(summary=summary, arrays=arrays, phonopy=ph)


def _supercell_matrix(value: Sequence[Sequence[int]] | Sequence[int] | int) -> np.ndarray:
    arr = np.asarray(value, dtype=int)
    if arr.ndim == 0:
        return np.eye(3, dtype=int) * int(arr)
    if arr.shape == (3,):
        return np.diag(arr)
    return arr


def _at(temps: np.ndarray, values: np.ndarray, t: float) -> float | None:
    hit = np.flatnonzero(np.isclose(temps, t))
    return float(values[hit[0]]) if hit.size else None


def _row(temps: np.ndarray, table: dict[str, np.ndarray], t: float) -> dict[str, float] | None:
    hit = np.flatnonzero(np.isclose(temps, t))
    return {k: float(v[hit[0]]) for k, v in table.items()} if hit.size else None


__all__ = [
    "IMAGINARY_TOL_THZ",
    "ForcesFn",
    "PhononResult",
    "PhononSummary",
    "band_path",
    "forces_from_engine",
    "phonons",
]
