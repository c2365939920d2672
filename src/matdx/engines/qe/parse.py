"""Read pw.x output: results of a finished run, and what went wrong with a failed one.

Energies, forces, stress, structures and eigenvalues come from ASE's
``read_espresso_out`` (eV, Å; stress in eV/Å³, tensile positive, Voigt order as ASE);
this module adds what ASE does not read — SCF and relaxation convergence, the code
version, pw.x's wall time, magnetic moments in the format of pw.x 6.x, the band gap —
and refuses output that is empty, truncated, corrupt or from a failed run
(:class:`~matdx.core.errors.EngineError`, one line). :func:`diagnose` classifies a failed
run for the error handlers (:data:`FAILURES`).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io.espresso import read_espresso_out
from pymatgen.core import Lattice, Structure

from matdx.core.errors import EngineError

_ERROR = re.compile(
    r"%{10,}\s*\n\s*Error in routine\s+(\S+)\s*\(\s*(-?\d+)\s*\):\s*\n\s*(.*?)\s*\n\s*%{10,}", re.S
)
_SIGNALS = re.compile(
    r"Killed|signal 9|SIGKILL|exited on signal|oom-kill|Out of memory|out of memory"
    r"|Cannot allocate memory|bad_alloc|not enough slots"
)
_RELAX_DONE = ("bfgs converged", "Damped Dynamics: convergence achieved")


def pw_error(output: str) -> str | None:
    """pw.x's own error message (``Error in routine ...``) in one line, if any."""
    match = _ERROR.search(output)
    if not match:
        return None
    routine, code, text = match.groups()
    return f"error in routine {routine} ({code.strip()}): {' '.join(text.split())}"


FAILURES: dict[str, Callable[[str, str], bool]] = {
    "pw_error": lambda out, err: pw_error(out) is not None,
    "walltime": lambda out, err: "Maximum CPU time exceeded" in out,
    "scf_unconverged": lambda out, err: "convergence NOT achieved" in out,
    "relax_unconverged": lambda out, err: "The maximum number of steps has been reached" in out,
    "killed": lambda out, err: "JOB DONE" not in out or _SIGNALS.search(err) is not None,
}
"""Failure kind → test on (stdout, stderr) of pw.x; the first that holds is the diagnosis."""


def diagnose(output: str, stderr: str = "") -> str | None:
    """The failure of a pw.x run (a key of :data:`FAILURES`), ``None`` if it ended well."""
    if "JOB DONE" in output and not _SIGNALS.search(stderr):
        # a finished run: only pw.x's own messages count, not MPI's noise on stderr
        stderr = ""
    return next((kind for kind, test in FAILURES.items() if test(output, stderr)), None)


def describe(output: str, stderr: str = "") -> str:
    """One line saying why a run failed (for error messages)."""
    kind = diagnose(output, stderr)
    if kind == "pw_error":
        return f"pw.x {pw_error(output)}"
    if kind == "killed":
        lines = [ln.strip() for ln in stderr.splitlines() if _SIGNALS.search(ln)]
        note = f": {lines[0][:160]}" if lines else ""
        return f"pw.x was killed or ended abnormally (no 'JOB DONE'){note}"
    messages = {
        "walltime": "pw.x stopped at max_seconds",
        "scf_unconverged": "SCF not converged (electron_maxstep reached)",
        "relax_unconverged": "relaxation not converged (nstep reached)",
    }
    return messages.get(kind or "", "pw.x ended without a diagnosed error")


@dataclass
class PWOutput:
    """The results of one finished pw.x run (eV, Å, eV/Å, eV/Å³, μB, s)."""

    energy: float
    structure: Structure
    code_version: str
    relax_converged: bool | None
    n_ionic_steps: int
    forces: list[list[float]] | None = None
    stress: list[float] | None = None
    n_scf_iterations: int | None = None
    fermi_energy: float | None = None
    band_gap: float | None = None
    is_metal: bool | None = None
    magmoms: list[float] | None = None
    total_magnetization: float | None = None
    wall_time_s: float | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def converged(self) -> bool:
        """Whether the run converged (the SCF always has; a relaxation may not have)."""
        return self.relax_converged is not False


def _seconds(text: str) -> float:
    """pw.x clock text (``1h 2m``, ``1m 2.30s``, ``0.28s``) → seconds."""
    scale = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
    return sum(float(n) * scale[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)\s*([dhms])", text))


def _clean_structure(atoms: Atoms) -> Structure:
    return Structure(
        Lattice(np.asarray(atoms.cell)),
        atoms.get_chemical_symbols(),
        atoms.positions,
        coords_are_cartesian=True,
    )


def last_structure(output: str) -> Structure | None:
    """The last geometry pw.x printed (with or without results), ``None`` if there is none."""
    try:
        images = list(
            read_espresso_out(io.StringIO(output), index=slice(-1, None), results_required=False)
        )
    except Exception:  # any unreadable output means: no geometry
        return None
    return _clean_structure(images[-1]) if images else None


def _magnetism(output: str, natoms: int) -> tuple[list[float] | None, float | None]:
    totals = re.findall(r"total magnetization\s*=\s*(-?\d+\.\d+)", output)
    blocks = output.split("Magnetic moment per site")
    moments = None
    if len(blocks) > 1:
        found = re.findall(r"magn[:=]\s*(-?\d+\.\d+)", blocks[-1])[:natoms]
        moments = [float(m) for m in found] if len(found) == natoms else None
    return moments, float(totals[-1]) if totals else None


def band_gap(atoms: Atoms, output: str) -> tuple[float | None, bool | None]:
    """Band gap (eV) and metallicity of the last image.

    With fixed occupations and empty bands pw.x prints the highest occupied and lowest
    unoccupied levels. With smearing, the eigenvalues at every k-point decide: a band that
    has eigenvalues on both sides of the Fermi energy makes a metal (gap ``None``);
    otherwise the gap is the lowest level above it minus the highest below it.
    """
    levels = re.findall(
        r"highest occupied, lowest unoccupied level \(ev\):\s*(\S+)\s+(\S+)", output
    )
    if levels:
        homo, lumo = map(float, levels[-1])
        return max(0.0, lumo - homo), lumo - homo <= 0.0
    calc = atoms.calc
    kpts = getattr(calc, "kpts", None)
    efermi = getattr(calc, "eFermi", None)
    if not kpts or efermi is None or "the Fermi energ" not in output:
        return None, None
    bands = np.array([k.eps_n for k in kpts], dtype=float)  # (spin × k, band)
    nspin = 1 + max(k.s for k in kpts)
    bands = bands.reshape(nspin, -1, bands.shape[-1])
    crosses = (bands.min(axis=1) < efermi) & (bands.max(axis=1) > efermi)
    if crosses.any():
        return None, True
    below, above = bands[bands <= efermi], bands[bands > efermi]
    if below.size == 0 or above.size == 0:
        return None, None
    return float(above.min() - below.max()), False


def parse_output(output: str, name: str = "pw.x output") -> PWOutput:
    """Parse the text of a finished pw.x run.

    Raises
    ------
    EngineError
        Empty, not pw.x, truncated, corrupt, pw.x error, or no converged energy.
    """
    if not output.strip():
        raise EngineError(f"empty {name}")
    if "Program PWSCF" not in output:
        raise EngineError(f"{name} is not pw.x output (no 'Program PWSCF' header)")
    error = pw_error(output)
    if error:
        raise EngineError(f"pw.x {error} ({name})")
    if "JOB DONE" not in output:
        raise EngineError(f"truncated {name} (no 'JOB DONE'): pw.x was killed or is still running")
    unfinished = diagnose(output)
    if unfinished in ("walltime", "scf_unconverged") or "!    total energy" not in output:
        why = describe(output) if unfinished else "no '!    total energy' line"
        raise EngineError(f"no converged energy in {name}: {why}")
    try:
        images = list(read_espresso_out(io.StringIO(output), index=slice(None)))
        atoms = images[-1] if images else None
        energy = atoms.calc.results.get("energy") if atoms is not None else None
        forces = atoms.calc.results.get("forces") if atoms is not None else None
        stress = atoms.calc.results.get("stress") if atoms is not None else None
    except Exception as exc:  # ASE fails in many ways on damaged text
        text = " ".join(str(exc).split())[:160]
        raise EngineError(f"corrupt {name}: {type(exc).__name__}: {text}") from None
    if atoms is None or energy is None:
        raise EngineError(f"corrupt {name}: no energy for the last structure")
    values = [np.asarray(v, dtype=float) for v in (energy, forces, stress) if v is not None]
    if not all(np.isfinite(v).all() for v in values):
        raise EngineError(f"corrupt {name}: energy, forces or stress not finite")
    if forces is not None and np.shape(forces) != (len(atoms), 3):
        raise EngineError(f"corrupt {name}: forces of {np.shape(forces)} for {len(atoms)} atoms")
    version = re.search(r"Program PWSCF v\.?\s*(\S+)", output)
    wall = re.findall(r"PWSCF\s*:.*?CPU(.*?)WALL", output)
    iterations = re.findall(r"convergence has been achieved in\s+(\d+)\s+iterations", output)
    relaxing = "Geometry Optimization" in output or "Damped Dynamics" in output
    relax_done = any(s in output for s in _RELAX_DONE) and not FAILURES["relax_unconverged"](
        output, ""
    )
    gap, metal = band_gap(atoms, output)
    moments, total = _magnetism(output, len(atoms))
    return PWOutput(
        energy=float(energy),
        structure=_clean_structure(atoms),
        code_version=version.group(1) if version else "unknown",
        relax_converged=relax_done if relaxing else None,
        n_ionic_steps=len(images),
        forces=np.asarray(forces).tolist() if forces is not None else None,
        stress=np.asarray(stress).tolist() if stress is not None else None,
        n_scf_iterations=int(iterations[-1]) if iterations else None,
        fermi_energy=getattr(atoms.calc, "eFermi", None),
        band_gap=gap,
        is_metal=metal,
        magmoms=moments,
        total_magnetization=total,
        wall_time_s=_seconds(wall[-1]) if wall else None,
    )


def read_output(path: str | Path, label: str | None = None) -> PWOutput:
    """Parse a pw.x output file (see :func:`parse_output`).

    ``label`` names the file in error messages (default ``"pw.x output <path>"``).

    Raises
    ------
    EngineError
        Missing, unreadable, empty, truncated or corrupt file, or a failed run.
    """
    path = Path(path)
    try:
        output = path.read_text(errors="replace")
    except OSError as exc:
        raise EngineError(f"cannot read pw.x output {path}: {exc.strerror or exc}") from None
    return parse_output(output, name=label or f"pw.x output {path}")


__all__ = [
    "FAILURES",
    "PWOutput",
    "band_gap",
    "describe",
    "diagnose",
    "last_structure",
    "parse_output",
    "pw_error",
    "read_output",
]
