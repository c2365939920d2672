"""Engine-agnostic results: what every engine returns and what the store keeps."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class Provenance(BaseModel):
    """Where, when and with what a calculation ran."""

    matdx_version: str
    code_versions: dict[str, str] = Field(default_factory=dict, description="ase, pymatgen, ...")
    host: str
    launch_dir: str | None = None
    work_dir: str | None = Field(None, description="Directory of the calculation's files.")
    fw_id: int | None = None
    started_at: datetime
    ended_at: datetime
    wall_time_s: float = Field(..., description="Wall time of the calculation (s).")
    corrections: list[dict[str, Any]] = Field(
        default_factory=list, description="Error-recovery actions applied, in order."
    )


class CalcResult(BaseModel):
    """The result of one calculation on one structure, in one schema for every engine.

    Units: energies eV, lengths Å, forces eV/Å, stress eV/Å³ (Voigt order xx, yy, zz, yz, xz, xy).
    """

    engine: str
    code_version: str
    task: str = Field(..., description="'relax', 'static', 'md', ...")
    parameters: dict[str, Any] = Field(default_factory=dict, description="Engine input settings.")
    energy: float = Field(..., description="Total energy (eV).")
    energy_per_atom: float = Field(..., description="Energy per atom (eV/atom).")
    volume_per_atom: float = Field(..., description="Volume per atom (Å³/atom).")
    forces: list[list[float]] | None = Field(None, description="Forces (eV/Å).")
    stress: list[float] | None = Field(None, description="Stress, Voigt (eV/Å³).")
    structure: dict[str, Any] = Field(..., description="Final structure (pymatgen dict).")
    spacegroup_symbol: str | None = None
    spacegroup_number: int | None = None
    converged: bool = True
    n_steps: int = 0
    band_gap: float | None = Field(None, description="Band gap (eV) where defined.")
    magmoms: list[float] | None = Field(None, description="Magnetic moments (μB) where defined.")
    wall_time_s: float = 0.0
    corrections: list[dict[str, Any]] = Field(
        default_factory=list, description="Error-recovery corrections applied, in order."
    )
    extra: dict[str, Any] = Field(
        default_factory=dict,
        description="Engine- or task-specific results (MD averages, phonon data, ...).",
    )
