"""ASE molecular dynamics: settings, integrators by ensemble, and one run in a directory.

Settings mirror the LAMMPS engine's: times in fs, temperature in K, pressure in bar. A run
reads its parameter file and starting atoms from the run directory and writes the thermo
table, the trajectory (ASE ``.traj``, production only), the final frame and a status file
(``ok``, ``unstable`` with the reason, or ``failed``) that the error handlers read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.emt import EMT
from ase.constraints import FixCom
from ase.io import read
from ase.io.trajectory import Trajectory
from ase.md.langevin import Langevin
from ase.md.md import MolecularDynamics
from ase.md.nose_hoover_chain import MTKNPT, IsotropicMTKNPT, NoseHooverChainNVT
from ase.md.nptberendsen import NPTBerendsen
from ase.md.nvtberendsen import NVTBerendsen
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet

from matdx.analysis.md import AMU_PER_A3_IN_G_PER_CM3
from matdx.core.errors import EngineError
from matdx.engines import mlip

PARAMETERS_FILE = "parameters.json"
INITIAL_FILE = "initial.traj"
TRAJECTORY_FILE = "md.traj"
FINAL_FILE = "final.traj"
THERMO_FILE = "thermo.dat"
STATUS_FILE = "status.json"

THERMO_COLUMNS = (
    "step",
    "time_ps",
    "temperature_K",
    "pressure_bar",
    "potential_energy_eV",
    "kinetic_energy_eV",
    "total_energy_eV",
    "conserved_energy_eV",
    "volume_A3",
    "density_g_cm3",
)
"""Columns of the thermo table (the same names as the LAMMPS engine's)."""

CALCULATORS: dict[str, Callable[[], Any]] = {"emt": EMT, "chgnet": mlip.chgnet_calculator}

MD_DEFAULTS: dict[str, Any] = {
    "ensemble": "langevin",
    "temperature": 300.0,
    "initial_temperature": None,
    "pressure": 0.0,
    "timestep": 1.0,
    "steps": 1000,
    "equilibration": 0,
    "thermo_interval": 10,
    "dump_interval": 100,
    "seed": 12345,
    "tdamp": None,
    "pdamp": None,
    "friction": 0.01,
    "compressibility": 1e-6,
    "calculator": "emt",
    "supercell": None,
    "min_timestep": 0.01,
    "max_temperature": None,
    "max_energy_drift": 0.5,
}
"""MD settings: ``friction`` 1/fs (Langevin), ``compressibility`` 1/bar (Berendsen NPT),
``max_temperature`` K and ``max_energy_drift`` eV/atom (of the conserved energy) define an
unstable integration."""


class UnstableError(Exception):
    """The integration blew up (raised by the stability observer)."""


def _dt(p: dict[str, Any]) -> float:
    return float(p["timestep"]) * units.fs


def _nve(atoms: Atoms, p: dict[str, Any]) -> MolecularDynamics:
    return VelocityVerlet(atoms, timestep=_dt(p))


def _langevin(atoms: Atoms, p: dict[str, Any]) -> MolecularDynamics:
    atoms.set_constraint(FixCom())
    rng = np.random.default_rng(p["seed"] + 1)
    return Langevin(
        atoms,
        _dt(p),
        temperature_K=p["temperature"],
        friction=p["friction"] / units.fs,
        fixcm=False,
        rng=rng,
    )


def _nvt(atoms: Atoms, p: dict[str, Any]) -> MolecularDynamics:
    return NoseHooverChainNVT(
        atoms, _dt(p), temperature_K=p["temperature"], tdamp=p["tdamp"] * units.fs
    )


def _nvt_berendsen(atoms: Atoms, p: dict[str, Any]) -> MolecularDynamics:
    return NVTBerendsen(atoms, _dt(p), temperature_K=p["temperature"], taut=p["tdamp"] * units.fs)


def _npt_args(p: dict[str, Any]) -> dict[str, float]:
    return {
        "temperature_K": p["temperature"],
        "pressure_au": p["pressure"] * units.bar,
        "tdamp": p["tdamp"] * units.fs,
        "pdamp": p["pdamp"] * units.fs,
    }


def _npt(atoms: Atoms, p: dict[str, Any]) -> MolecularDynamics:
    return MTKNPT(atoms, _dt(p), **_npt_args(p))


def _npt_iso(atoms: Atoms, p: dict[str, Any]) -> MolecularDynamics:
    return IsotropicMTKNPT(atoms, _dt(p), **_npt_args(p))


def _npt_berendsen(atoms: Atoms, p: dict[str, Any]) -> MolecularDynamics:
    return NPTBerendsen(
        atoms,
        _dt(p),
        temperature_K=p["temperature"],
        pressure_au=p["pressure"] * units.bar,
        taut=p["tdamp"] * units.fs,
        taup=p["pdamp"] * units.fs,
        compressibility_au=p["compressibility"] / units.bar,
    )


ENSEMBLES: dict[str, Callable[[Atoms, dict[str, Any]], MolecularDynamics]] = {
    "nve": _nve,
    "langevin": _langevin,
    "nvt": _nvt,
    "nvt_berendsen": _nvt_berendsen,
    "npt": _npt,
    "npt_iso": _npt_iso,
    "npt_berendsen": _npt_berendsen,
}
"""Ensemble → ASE integrator: velocity Verlet, Langevin, Nose–Hoover chain, Berendsen,
MTK barostat (full cell / isotropic), Berendsen barostat."""

CONSERVING = frozenset({"nve", "nvt", "npt", "npt_iso"})
"""Ensembles with a conserved energy to watch for drift."""


def build_parameters(settings: dict[str, Any]) -> dict[str, Any]:
    """Complete and check MD settings (see :data:`MD_DEFAULTS`).

    Raises
    ------
    EngineError
        If a setting is unknown or invalid.
    """
    unknown = sorted(set(settings) - set(MD_DEFAULTS))
    if unknown:
        raise EngineError(f"unknown ASE MD setting(s): {', '.join(unknown)}")
    p = {**MD_DEFAULTS, **settings, "task": "md"}
    if p["ensemble"] not in ENSEMBLES:
        raise EngineError(f"unknown ensemble {p['ensemble']!r} (known: {', '.join(ENSEMBLES)})")
    if p["calculator"] not in CALCULATORS:
        known = ", ".join(CALCULATORS)
        raise EngineError(f"unknown calculator {p['calculator']!r} (known: {known})")
    if not p["timestep"] > 0 or int(p["steps"]) < 1 or int(p["thermo_interval"]) < 1:
        raise EngineError("timestep, steps and thermo_interval must be positive")
    if p["ensemble"] != "nve" and not p["temperature"] > 0:
        raise EngineError(f"ensemble {p['ensemble']} needs a positive temperature")
    if p["initial_temperature"] is None:
        p["initial_temperature"] = p["temperature"]
    p["tdamp"] = p["tdamp"] or 100 * p["timestep"]
    p["pdamp"] = p["pdamp"] or 1000 * p["timestep"]
    hottest = max(float(p["temperature"]), float(p["initial_temperature"]))
    p["max_temperature"] = p["max_temperature"] or 3 * hottest + 300
    p["timestep_halvings"] = 0
    return p


def save_parameters(directory: Path, params: dict[str, Any]) -> None:
    """Write the parameter file of a run."""
    text = json.dumps(params, indent=1, sort_keys=True, default=_numpy_to_python)
    (Path(directory) / PARAMETERS_FILE).write_text(text)


def _numpy_to_python(obj: Any) -> Any:
    if isinstance(obj, np.generic | np.ndarray):
        return obj.tolist()
    raise EngineError(f"setting value {obj!r} is not JSON-serialisable")


def load_parameters(directory: Path) -> dict[str, Any]:
    """Read the parameter file of a run (:class:`EngineError` if missing or not JSON)."""
    path = Path(directory) / PARAMETERS_FILE
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        raise EngineError(f"cannot read the ASE MD parameter file {path}") from None


def _conserved_energy(atoms: Atoms, dyn: MolecularDynamics) -> float:
    """The integrator's conserved energy (thermostat and barostat terms included), else E_tot."""
    if hasattr(dyn, "get_conserved_energy"):
        return float(dyn.get_conserved_energy())
    return float(atoms.get_total_energy())


def _thermo_row(atoms: Atoms, dyn: MolecularDynamics, step: int) -> list[float]:
    epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
    stress = atoms.get_stress(voigt=True, include_ideal_gas=True)
    conserved = _conserved_energy(atoms, dyn)
    volume = atoms.get_volume()
    return [
        step,
        step * dyn.dt / (1000 * units.fs),
        atoms.get_temperature(),
        -float(np.mean(stress[:3])) / units.bar,
        epot,
        ekin,
        epot + ekin,
        conserved,
        volume,
        atoms.get_masses().sum() / volume * AMU_PER_A3_IN_G_PER_CM3,
    ]


def run_md(directory: Path) -> dict[str, Any]:
    """Run the MD described by the parameter file in ``directory``; return the status.

    The status (also written to ``status.json``) is ``{"status": "ok"}``,
    ``{"status": "unstable", "reason": ...}`` when the stability observer
    stopped the run, or ``{"status": "failed", "reason": ...}``.
    """
    d = Path(directory)
    p = load_parameters(d)
    rows: list[list[float]] = []
    status: dict[str, Any] = {"status": "ok"}
    try:
        atoms = read(d / INITIAL_FILE)
        atoms.calc = CALCULATORS[p["calculator"]]()
        if p["initial_temperature"] > 0:
            rng = np.random.default_rng(p["seed"])
            thermalize_momenta(atoms, p["initial_temperature"], exact_temperature=True, rng=rng)
            Stationary(atoms)
        dyn = ENSEMBLES[p["ensemble"]](atoms, p)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            _integrate(atoms, dyn, p, d, rows)  # a blow-up is caught by the observer
        atoms.get_stress(include_ideal_gas=True)
        atoms.write(d / FINAL_FILE)
    except UnstableError as exc:
        status = {"status": "unstable", "reason": str(exc)}
    except Exception as exc:  # reported as one line by the error handler
        status = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    if rows:
        np.savetxt(d / THERMO_FILE, np.array(rows), header=" ".join(THERMO_COLUMNS))
    (d / STATUS_FILE).write_text(json.dumps(status))
    return status


def _integrate(
    atoms: Atoms, dyn: MolecularDynamics, p: dict[str, Any], d: Path, rows: list[list[float]]
) -> None:
    n, equil = len(atoms), int(p["equilibration"])
    conserving = p["ensemble"] in CONSERVING
    reference: list[float] = []

    def watch() -> None:
        epot, temp = atoms.get_potential_energy(), atoms.get_temperature()
        if not (np.isfinite(epot) and np.isfinite(temp)):
            raise UnstableError(f"non-finite energy at step {dyn.nsteps}")
        if temp > p["max_temperature"]:
            raise UnstableError(f"temperature {temp:.3g} K above {p['max_temperature']:g} K")
        if conserving:
            e = _conserved_energy(atoms, dyn)
            reference[:] = reference or [e]
            if abs(e - reference[0]) / n > p["max_energy_drift"]:
                raise UnstableError(
                    f"conserved energy drifted by {abs(e - reference[0]) / n:.3g} eV/atom"
                )
        if dyn.nsteps % int(p["thermo_interval"]) == 0:
            rows.append(_thermo_row(atoms, dyn, dyn.nsteps))

    dyn.attach(watch, interval=1)
    if equil > 0:
        dyn.run(equil)
    interval = int(p["dump_interval"])
    if interval <= 0:
        dyn.run(int(p["steps"]))
        return
    with Trajectory(d / TRAJECTORY_FILE, "w", atoms, properties=["energy"]) as traj:
        if equil > 0:
            traj.write()
        dyn.attach(lambda: (dyn.nsteps - equil) % interval == 0 and traj.write(), interval=1)
        dyn.run(int(p["steps"]))
