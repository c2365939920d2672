"""Parse a finished VASP run (pymatgen's ``Vasprun`` and ``Outcar``) into result fields.

Units follow :class:`~matdx.schemas.results.CalcResult` and ASE: VASP writes the stress in
kBar with the opposite sign (positive = the cell pushes outwards, i.e. under compression);
it is returned in eV/Å³, tensile positive, Voigt order xx, yy, zz, yz, xz, xy, as
``ase.io.read(..., format="vasp-xml").get_stress()`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from ase.units import GPa
from monty.os.path import zpath
from pymatgen.io.vasp.outputs import Outcar, Vasprun

from matdx.core.errors import EngineError
from matdx.core.symmetry import spacegroup

KBAR_TO_EV_PER_A3 = -0.1 * GPa
"""Factor from VASP stress (kBar, compressive positive) to eV/Å³ (tensile positive)."""

_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def stress_to_voigt(stress_kbar: Any) -> list[float]:
    """VASP 3×3 stress (kBar) → Voigt stress in eV/Å³ with ASE's sign."""
    s = np.asarray(stress_kbar, dtype=float) * KBAR_TO_EV_PER_A3
    return [float(s[i, j]) for i, j in _VOIGT]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:300]


def _tail(path: Path) -> str:
    """Last non-empty line of a text file (or '')."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


def read_vasprun(directory: Path) -> Vasprun:
    """Parse ``vasprun.xml`` of a run (eigenvalues, no DOS/projections/POTCAR).

    Raises
    ------
    EngineError
        If it is missing, empty, truncated or corrupt (one line, with the last line of
        the run's stderr or stdout when there is no vasprun at all).
    """
    path = Path(zpath(str(directory / "vasprun.xml")))
    if not path.is_file():
        notes = []
        hint = _tail(directory / "std_err.txt") or _tail(directory / "vasp.out")
        if hint:
            notes.append(f"last output: {hint!r}")
        if (directory / "POTCAR.spec").exists() and not (directory / "POTCAR").exists():
            notes.append("no POTCAR: PMG_VASP_PSP_DIR is not configured, only POTCAR.spec written")
        detail = f" ({'; '.join(notes)})" if notes else ""
        raise EngineError(f"VASP wrote no vasprun.xml in {directory}{detail}")
    if path.stat().st_size == 0:
        raise EngineError(f"{path} is empty")
    try:
        return Vasprun(
            str(path),
            parse_projected_eigen=False,
            parse_potcar_file=False,
            exception_on_bad_xml=True,
        )
    except Exception as exc:
        raise EngineError(f"cannot parse {path}: {_one_line(exc)}") from None


def read_magmoms(directory: Path) -> tuple[list[float] | None, float | None]:
    """Site magnetic moments and total moment (μB) from OUTCAR, ``(None, None)`` if absent.

    Raises
    ------
    EngineError
        If OUTCAR exists but cannot be parsed.
    """
    path = Path(zpath(str(directory / "OUTCAR")))
    if not path.is_file():
        return None, None
    try:
        outcar = Outcar(str(path))
    except Exception as exc:
        raise EngineError(f"cannot parse {path}: {_one_line(exc)}") from None
    moments = [float(m["tot"]) for m in outcar.magnetization] or None
    total = outcar.total_mag
    return moments, (float(total) if total is not None else None)


def parse_run(directory: str | Path) -> dict[str, Any]:
    """Result fields of the VASP run in ``directory``.

    Returns
    -------
    dict
        Keyword arguments for :class:`~matdx.schemas.results.CalcResult` (all but
        ``engine``, ``task``, ``parameters``, ``corrections``, ``wall_time_s``), with
        VASP-specific data under ``extra``.

    Raises
    ------
    EngineError
        If the run's output is missing or unreadable, or has no energy.
    """
    directory = Path(directory)
    vr = read_vasprun(directory)
    if not vr.ionic_steps:
        raise EngineError(f"{directory / 'vasprun.xml'} has no ionic step")
    last = vr.ionic_steps[-1]
    energy = float(vr.final_energy)
    if not np.isfinite(energy):
        raise EngineError(f"{directory / 'vasprun.xml'} has no total energy")
    structure = vr.final_structure
    n = len(structure)
    forces = np.asarray(last["forces"], dtype=float) if "forces" in last else None
    stress = stress_to_voigt(last["stress"]) if "stress" in last else None
    try:
        gap, cbm, vbm, direct = vr.eigenvalue_band_properties
        gap_info = {"cbm": float(cbm), "vbm": float(vbm), "is_gap_direct": bool(direct)}
        band_gap: float | None = float(gap)
    except Exception:
        band_gap, gap_info = None, {}
    max_force = float(np.linalg.norm(forces, axis=1).max()) if forces is not None else None
    magmoms, total_mag = read_magmoms(directory)
    symbol, number = spacegroup(structure)
    return {
        "code_version": str(vr.vasp_version),
        "energy": energy,
        "energy_per_atom": energy / n,
        "volume_per_atom": float(structure.volume) / n,
        "forces": forces.tolist() if forces is not None else None,
        "stress": stress,
        "structure": structure.as_dict(),
        "spacegroup_symbol": symbol,
        "spacegroup_number": number,
        "converged": bool(vr.converged),
        "n_steps": len(vr.ionic_steps),
        "band_gap": band_gap,
        "magmoms": magmoms,
        "extra": {
            "converged_electronic": bool(vr.converged_electronic),
            "converged_ionic": bool(vr.converged_ionic),
            "free_energy": float(last["e_fr_energy"]),
            "efermi": float(vr.efermi) if vr.efermi is not None else None,
            "max_force": max_force,
            "total_magnetization": total_mag,
            **gap_info,
        },
    }


__all__ = ["KBAR_TO_EV_PER_A3", "parse_run", "read_magmoms", "read_vasprun", "stress_to_voigt"]
