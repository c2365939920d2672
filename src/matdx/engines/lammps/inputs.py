"""LAMMPS inputs: EAM potential choice, settings, data file and input script.

Units are LAMMPS ``metal`` units except the time settings, which are in fs (``timestep``,
``tdamp``, ``pdamp``) as in ASE; ``pressure`` is in bar. The settings of a run live in a
JSON parameter file in the run directory: the input script is rendered from it before each
attempt, and error handlers change it (custodian's ``Modder``) before the next one.

MD scripts write a checkpoint (``restart``) every ``checkpoint_interval`` steps, alternating
between two files, stop at ``timer timeout`` when the parameters carry ``timeout_s`` (set
for each attempt from the deadline) and then write a last checkpoint and jump to the end;
with ``run["resume"]`` in the parameters they start from a checkpoint (``read_restart``)
instead of the data file and run the remaining steps only (``run N upto``). See
:mod:`matdx.engines.lammps.checkpoint`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.lammps.coordinatetransform import Prism
from ase.data import chemical_symbols
from ase.io.lammpsdata import write_lammps_data

from matdx.core.errors import EngineError

DEFAULT_POTENTIALS_DIR = "/usr/share/lammps/potentials"

DATA_FILE = "structure.data"
INPUT_FILE = "in.lammps"
LOG_FILE = "log.lammps"
PARAMETERS_FILE = "parameters.json"
TRAJECTORY_FILE = "traj.lammpstrj"
FINAL_DUMP = "final.dump"
STDOUT_FILE = "lammps.out"
STDERR_FILE = "lammps.err"
CHECKPOINT_FILES = ("checkpoint.a.restart", "checkpoint.b.restart")
"""Periodic MD checkpoints, written alternately (one is whole while the other is written)."""
STOP_FILE = "checkpoint.stop.restart"
"""Checkpoint written when an MD run stops at its deadline."""
STOP_MARK = "MATDX_DEADLINE_STOP"
"""Printed to the log, with the step, when an MD run stops at its deadline."""
STOP_LABEL = "matdx_stop"

PAIR_STYLES: dict[str, str] = {".eam.alloy": "eam/alloy", ".eam.fs": "eam/fs", ".eam": "eam"}
"""Potential file suffix → LAMMPS pair style, in order of preference."""

THERMO_KEYWORDS = "step time temp press pe ke etotal econserve vol density pxx pyy pzz pyz pxz pxy"
"""Thermo output of every run (``thermo_style custom``)."""

ENSEMBLES: dict[str, str] = {
    "nve": "fix integ all nve",
    "nvt": "fix integ all nvt temp {T} {T} {tdamp}",
    "npt": "fix integ all npt temp {T} {T} {tdamp} {barostat} {P} {P} {pdamp}",
    "langevin": "fix integ all nve\nfix bath all langevin {T} {T} {tdamp} {seed} zero yes",
}
"""Ensemble name → LAMMPS fixes (times in ps)."""

MIN_STYLES: dict[str, str] = {"BFGS": "cg", "CG": "cg", "SD": "sd", "FIRE": "fire"}
"""Optimizer name (ASE's or LAMMPS's) → ``min_style``; LAMMPS has no BFGS, CG stands in."""

_CELL_MIN_STYLES = frozenset({"cg", "sd"})  # the styles fix box/relax works with

EQUILIBRATION_DAMPING_TIMES = 5
"""Default equilibration of an MD run: this many of its thermostat's damping times (its
barostat's for NPT)."""

COMMON_DEFAULTS: dict[str, Any] = {"potential": None, "potentials_dir": None, "supercell": None}
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "md": {
        "ensemble": "nvt",
        "temperature": 300.0,
        "initial_temperature": None,
        "pressure": 0.0,
        "timestep": 1.0,
        "steps": 1000,
        "equilibration": None,
        "thermo_interval": 10,
        "dump_interval": 100,
        "seed": 12345,
        "tdamp": None,
        "pdamp": None,
        "barostat": None,
        "min_timestep": 0.01,
        "checkpoint_interval": 1000,
    },
    "relax": {
        "relax_cell": True,
        "optimizer": "BFGS",
        "fmax": 0.05,
        "stress_tol": 0.1,
        "cycles": 20,
        "steps": 300,
        "pressure": 0.0,
        "thermo_interval": 10,
    },
    "static": {},
}
"""Settings of each task and their defaults (``None``: derived from other settings)."""


@dataclass(frozen=True)
class Potential:
    """An EAM potential file: path, LAMMPS pair style and the elements it parametrises."""

    path: str
    pair_style: str
    elements: tuple[str, ...]

    @classmethod
    def from_file(cls, path: Path) -> Potential:
        """Read the elements from the header of a DYNAMO funcfl/setfl file.

        Raises
        ------
        EngineError
            If the name has no EAM suffix or the header cannot be read.
        """
        style = pair_style_of(path)
        if style is None:
            raise EngineError(f"{path.name} is not an EAM potential ({', '.join(PAIR_STYLES)})")
        try:
            with open(path, errors="replace") as fd:
                head = [fd.readline() for _ in range(5)]
            if style == "eam":  # funcfl: line 2 is "Z mass a0 lattice"
                elements: tuple[str, ...] = (chemical_symbols[int(float(head[1].split()[0]))],)
            else:  # setfl: line 4 is "N El1 ... ElN"
                tokens = head[3].split()
                elements = tuple(tokens[1 : 1 + int(tokens[0])])
        except (OSError, IndexError, ValueError):
            raise EngineError(f"cannot read the header of potential {path}") from None
        if not elements or any(el not in chemical_symbols[1:] for el in elements):
            raise EngineError(f"cannot read the elements of potential {path}")
        return cls(str(path), style, elements)

    def commands(self, specorder: list[str]) -> list[str]:
        """``pair_style``/``pair_coeff`` lines for atom types ``specorder`` (type 1, 2, ...)."""
        path = f'"{self.path}"' if any(c.isspace() for c in self.path) else self.path
        if self.pair_style == "eam":
            return ["pair_style eam", f"pair_coeff 1 1 {path}"]
        return [f"pair_style {self.pair_style}", f"pair_coeff * * {path} {' '.join(specorder)}"]


def pair_style_of(path: Path) -> str | None:
    """Pair style of a potential file from its name, or ``None`` if not an EAM file."""
    return next((st for suf, st in PAIR_STYLES.items() if path.name.endswith(suf)), None)


def _scan(directory: Path) -> list[Potential]:
    if not directory.is_dir():
        raise EngineError(f"potentials directory {directory} does not exist")
    found = []
    for path in sorted(directory.iterdir()):
        if pair_style_of(path) is not None and path.is_file():
            try:
                found.append(Potential.from_file(path))
            except EngineError:
                continue
    return found


def available_elements(directory: str | Path) -> frozenset[str]:
    """Elements that have an EAM potential in ``directory``."""
    return frozenset(el for pot in _scan(Path(directory)) for el in pot.elements)


def find_potential(
    elements: list[str], directory: str | Path, name: str | None = None
) -> Potential:
    """Choose the EAM potential for a set of elements.

    Parameters
    ----------
    elements
        Elements of the structure.
    directory
        Directory of potential files.
    name
        A file name in ``directory`` (or a path) to use instead of choosing.

    Returns
    -------
    Potential
        The file whose elements include all of ``elements``, preferring the fewest extra
        elements, then eam/alloy over eam/fs over funcfl eam, then the file name.

    Raises
    ------
    EngineError
        If no file fits, or ``name`` is missing or lacks an element.
    """
    directory = Path(directory)
    wanted = set(elements)
    if name:
        path = Path(name) if Path(name).is_absolute() else directory / name
        if not path.is_file():
            raise EngineError(f"potential {name} not found in {directory}")
        pot = Potential.from_file(path)
        missing = sorted(wanted - set(pot.elements))
        if missing:
            raise EngineError(
                f"potential {path.name} has no parameters for {', '.join(missing)} "
                f"(it has {', '.join(pot.elements)})"
            )
        return pot
    fits = [p for p in _scan(directory) if wanted <= set(p.elements)]
    if not fits:
        raise EngineError(f"no EAM potential for {'-'.join(sorted(wanted))} in {directory}")
    styles = list(PAIR_STYLES.values())
    return min(fits, key=lambda p: (len(p.elements), styles.index(p.pair_style), Path(p.path).name))


def build_parameters(
    task: str,
    settings: dict[str, Any],
    *,
    triclinic: bool,
    potential: Potential,
    specorder: list[str],
) -> dict[str, Any]:
    """Complete and check the settings of a run.

    Parameters
    ----------
    task
        ``"md"``, ``"relax"`` or ``"static"``.
    settings
        User settings (see :data:`TASK_DEFAULTS`).
    triclinic
        Whether the LAMMPS box is triclinic (decides the barostat / cell-relax coupling).
    potential
        The EAM potential.
    specorder
        Element of each atom type.

    Returns
    -------
    dict
        JSON-serialisable parameters, every default resolved.

    Raises
    ------
    EngineError
        If the task or a setting is unknown or a value is invalid.
    """
    if task not in TASK_DEFAULTS:
        raise EngineError(f"unknown LAMMPS task {task!r} (known: {', '.join(TASK_DEFAULTS)})")
    defaults = {**COMMON_DEFAULTS, **TASK_DEFAULTS[task]}
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        raise EngineError(f"unknown LAMMPS {task} setting(s): {', '.join(unknown)}")
    p = {**defaults, **settings, "task": task, "triclinic": triclinic}
    p.update(potential=asdict(potential), specorder=list(specorder))
    RESOLVERS.get(task, lambda _: None)(p)
    return p


def _resolve_md(p: dict[str, Any]) -> None:
    if p["ensemble"] not in ENSEMBLES:
        raise EngineError(f"unknown ensemble {p['ensemble']!r} (known: {', '.join(ENSEMBLES)})")
    if not p["timestep"] > 0 or int(p["steps"]) < 1 or int(p["thermo_interval"]) < 1:
        raise EngineError("timestep, steps and thermo_interval must be positive")
    if p["ensemble"] != "nve" and not p["temperature"] > 0:
        raise EngineError(f"ensemble {p['ensemble']} needs a positive temperature")
    if p["initial_temperature"] is None:
        p["initial_temperature"] = p["temperature"]
    # thermostat/barostat times are fixed now, so that a smaller timestep keeps them
    p["tdamp"] = p["tdamp"] or 100 * p["timestep"]
    p["pdamp"] = p["pdamp"] or 1000 * p["timestep"]
    if p["equilibration"] is None:
        # several damping times of the slowest coupling before anything is averaged
        damping = {"nve": 0.0, "npt": max(p["pdamp"], p["tdamp"])}.get(p["ensemble"], p["tdamp"])
        p["equilibration"] = math.ceil(EQUILIBRATION_DAMPING_TIMES * damping / p["timestep"])
    if int(p["equilibration"]) < 0:
        raise EngineError("equilibration must be a number of steps (0: none)")
    p["barostat"] = p["barostat"] or ("tri" if p["triclinic"] else "aniso")
    if p["barostat"] not in ("iso", "aniso", "tri") or (
        p["barostat"] == "tri" and not p["triclinic"]
    ):
        raise EngineError(f"barostat {p['barostat']!r} not possible for this box")
    p["seed"] = int(p["seed"]) if int(p["seed"]) > 0 else 12345
    p["timestep_halvings"] = 0
    if int(p["checkpoint_interval"] or 0) < 0:
        raise EngineError("checkpoint_interval must be a number of steps (0: no checkpoints)")
    p["checkpoint_interval"] = int(p["checkpoint_interval"] or 0)


def _resolve_min(p: dict[str, Any]) -> None:
    style = MIN_STYLES.get(str(p["optimizer"]).upper())
    if style is None:
        raise EngineError(f"unknown optimizer {p['optimizer']!r} (known: {', '.join(MIN_STYLES)})")
    if p["relax_cell"] and style not in _CELL_MIN_STYLES:
        style = "cg"
    p["min_style"] = style
    p["box_relax"] = ("tri" if p["triclinic"] else "aniso") if p["relax_cell"] else None
    if not float(p["stress_tol"]) > 0 or int(p["cycles"]) < 1:
        raise EngineError("stress_tol (kbar) and cycles must be positive")


def _stop_check(target: int) -> str:
    """After a run: if ``timer timeout`` ended it before ``target``, checkpoint and stop."""
    return (
        f'if "$(step) < {target}" then "write_restart {STOP_FILE}" '
        f'"print \'{STOP_MARK} $(step)\'" "jump SELF {STOP_LABEL}"'
    )


def _md_commands(p: dict[str, Any]) -> list[str]:
    resume = (p.get("run") or {}).get("resume")
    start = int(resume["step"]) if resume else 0
    # a resumed Langevin bath draws new random numbers, not those of the first segment
    seed = (p["seed"] + 1 + start) % 900_000_000 or 1
    fix = ENSEMBLES[p["ensemble"]].format(
        T=p["temperature"],
        P=p["pressure"],
        tdamp=p["tdamp"] / 1000,
        pdamp=p["pdamp"] / 1000,
        barostat=p["barostat"],
        seed=seed,
    )
    equilibration, end = int(p["equilibration"]), int(p["equilibration"]) + int(p["steps"])
    out = [f"timestep {p['timestep'] / 1000:.12g}"]
    if p.get("timeout_s") is not None:
        out.append(f"timer timeout {max(1, int(p['timeout_s']))} every 10")
    if int(p.get("checkpoint_interval") or 0) > 0:
        out.append(f"restart {int(p['checkpoint_interval'])} {' '.join(CHECKPOINT_FILES)}")
    if p["initial_temperature"] > 0 and not resume:
        t0, seed = p["initial_temperature"], p["seed"]
        out.append(f"velocity all create {t0} {seed} mom yes rot no dist gaussian")
    out += fix.splitlines()
    if equilibration > start:
        out += [f"run {equilibration} upto", _stop_check(equilibration)]
    if int(p["dump_interval"]) > 0:
        out += [
            f"dump traj all custom {int(p['dump_interval'])} {TRAJECTORY_FILE} id element xu yu zu",
            f"dump_modify traj element {' '.join(p['specorder'])} sort id format float %.10g"
            + (" append yes" if resume else ""),
        ]
    out += [f"run {end} upto", _stop_check(end)]
    return out


def _min_commands(p: dict[str, Any]) -> list[str]:
    """Minimise; with the cell, repeat until every stress component is within tolerance.

    A minimisation with ``fix box/relax`` stops when the largest force, the cell's
    generalised forces included, is below the force tolerance: for a small cell those are
    small at stresses of several kbar, and the line search may stop with the cell still
    strained. So the force tolerance is tight (``fmax`` / 1000) and minimisations, each
    starting from the cell the last one left (box/relax's reference cell reset), repeat
    up to ``cycles`` times until the largest relaxable component of the
    stress (from the target ``pressure``) is below half of ``stress_tol`` kbar. The
    result is converged when the largest principal stress (from the target) is below
    ``stress_tol``.
    """
    out = [f"min_style {p['min_style']}", "min_modify norm max"]
    steps = int(p["steps"])
    if not p["box_relax"]:
        out.append(f"minimize 0.0 {p['fmax']} {steps} {10 * steps}")
        return out
    target = float(p["pressure"])
    # the components the cell can relax: an orthogonal box (aniso) keeps its angles
    parts = [f"abs(p{c}-{target:.12g})" for c in ("xx", "yy", "zz")]
    if p["box_relax"] == "tri":
        parts += ["abs(pxy)", "abs(pxz)", "abs(pyz)"]
    tol_bar = 500.0 * float(p["stress_tol"])  # half the tolerance, kbar → bar
    within = " && ".join(f"{part}<{tol_bar:.12g}" for part in parts)
    out += [
        f'variable matdx_relaxed equal "{within}"',
        f"fix relax all box/relax {p['box_relax']} {p['pressure']} vmax 0.001",
        f"variable matdx_cycle loop {int(p['cycles'])}",
        "label matdx_relax",
        f"minimize 0.0 {float(p['fmax']) / 1000:.6g} {steps} {10 * steps}",
        'if "${matdx_relaxed} == 1" then "jump SELF matdx_relax_done"',
        "next matdx_cycle",
        "jump SELF matdx_relax",
        "label matdx_relax_done",
        "unfix relax",
        "run 0",
    ]
    return out


RESOLVERS = {"md": _resolve_md, "relax": _resolve_min}
"""Task → function completing its settings in place."""

TASK_COMMANDS = {"md": _md_commands, "relax": _min_commands, "static": lambda p: ["run 0"]}


def render_input(p: dict[str, Any]) -> str:
    """The LAMMPS input script of parameters ``p`` (from :func:`build_parameters`)."""
    pot = Potential(
        p["potential"]["path"], p["potential"]["pair_style"], tuple(p["potential"]["elements"])
    )
    els = " ".join(p["specorder"])
    resume = (p.get("run") or {}).get("resume") if p["task"] == "md" else None
    start = (
        [f"read_restart {resume['file']}"]
        if resume
        else ["units metal", "atom_style atomic", "boundary p p p", f"read_data {DATA_FILE}"]
    )
    lines = [
        f"# matdx LAMMPS input: task {p['task']}",
        *start,
        *pot.commands(p["specorder"]),
        "neighbor 2.0 bin",
        "neigh_modify every 1 delay 0 check yes",
        f"thermo_style custom {THERMO_KEYWORDS}",
        "thermo_modify flush yes norm no format float %.12g",
        f"thermo {int(p.get('thermo_interval', 1))}",
        *TASK_COMMANDS[p["task"]](p),
        f"write_dump all custom {FINAL_DUMP} id element x y z fx fy fz "
        f"modify element {els} sort id format float %.15g",
    ]
    if p["task"] == "md":
        lines.append(f"label {STOP_LABEL}")
    return "\n".join(lines) + "\n"


def write_structure(atoms: Atoms, path: Path, specorder: list[str]) -> Prism:
    """Write ``atoms`` as a LAMMPS data file; return the ASE↔LAMMPS coordinate transform."""
    prism = Prism(np.asarray(atoms.cell), reduce_cell=True)
    with open(path, "w") as fd:
        write_lammps_data(
            fd,
            atoms,
            specorder=specorder,
            prismobj=prism,
            masses=True,
            units="metal",
            atom_style="atomic",
        )
    return prism


def save_parameters(directory: Path, params: dict[str, Any]) -> None:
    """Write the parameter file of a run."""
    text = json.dumps(params, indent=1, sort_keys=True, default=_numpy_to_python)
    path = Path(directory) / PARAMETERS_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # a run killed while writing leaves the previous file whole


def _numpy_to_python(obj: Any) -> Any:
    if isinstance(obj, np.generic | np.ndarray):
        return obj.tolist()
    raise EngineError(f"setting value {obj!r} is not JSON-serialisable")


def load_parameters(directory: Path) -> dict[str, Any]:
    """Read the parameter file of a run.

    Raises
    ------
    EngineError
        If it is missing or not JSON.
    """
    path = Path(directory) / PARAMETERS_FILE
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        raise EngineError(f"cannot read the LAMMPS parameter file {path}") from None
