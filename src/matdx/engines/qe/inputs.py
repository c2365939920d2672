"""pw.x input: the parameter dictionary of a calculation, and the input file written from it.

:func:`build_parameters` turns a structure, a task and user settings into one JSON-able
dictionary — the namelists (``input_data``), k-point mesh, pseudopotential files, structure,
starting magnetisation and MPI ranks. The error handlers change *this* dictionary with
custodian's declarative actions (``{"_set": {"input_data->electrons->mixing_beta": 0.35}}``)
and :func:`write_input` writes it with ASE's ``write_espresso_in`` before every attempt.

Settings are pw.x keywords, flat (``ecutwfc=30``, ``mixing_beta=0.3``, ``max_seconds=3600``,
``restart_mode="restart"``, ``occupations="fixed"``; sorted into their namelist with ASE's
keyword table) or nested (``input_data={"system": {...}}``), plus the engine's own:

``protocol``
    Accuracy protocol (:data:`~matdx.engines.qe.protocols.PROTOCOLS`: ``fast``,
    ``moderate``, ``precise``; default ``moderate``): k-point spacing, smearing and cutoffs.
``kspacing``
    Largest distance between k-points in Å⁻¹, 2π included (VASP's ``KSPACING``):
    Monkhorst–Pack divisions ``ceil(|b_i| / kspacing)``; default the protocol's.
``kpts``, ``koffset``
    Explicit mesh (three integers) and offsets (0 or 1 each), instead of ``kspacing``.
``pseudo_family``, ``pseudo_dir``, ``pseudopotentials``
    Family and directory (default from the profile) and element → file overrides.
``pseudo_elements``
    Choose the pseudopotentials as for these elements too (a campaign's elements), so that
    every calculation of a hull uses the same files and cutoffs.
``pools``
    k-point pools (pw.x's ``-nk``): the ranks split into this many groups, each computing
    its own k-points, far faster than splitting plane waves for the small cells of a
    screening campaign (fcc Cu, 145 k-points, 2 ranks: 15 s instead of 74 s). Default:
    as many as there are ranks, but no more than the irreducible k-points (a large cell
    with few k-points keeps plane-wave parallelism); always a divisor of the ranks.
``keep_outdir``
    Keep pw.x's ``outdir`` (wavefunctions, charge density) after a successful run in a
    given work directory; by default it is removed (it is only needed for restarts).
``magmoms``, ``spin_polarized``
    Initial moments in μB (per element or per site; else the structure's ``magmom``
    site property; else the Materials Project's initial moments of the magnetic elements,
    :func:`~matdx.engines.qe.protocols.default_magmoms`; ``spin_polarized=True`` alone
    gives 1 μB per atom, ``spin_polarized=False`` no spin), converted to pw.x's
    ``starting_magnetization`` (fraction of the valence charge).

Defaults: cutoffs from the pseudopotentials (:meth:`PseudoSelection.cutoffs`, scaled by the
protocol; a given ``ecutwfc`` alone keeps their ``ecutrho``/``ecutwfc`` ratio), the
protocol's Marzari–Vanderbilt smearing (``occupations="fixed"`` for insulators, with four
empty bands so that the gap is printed), ``conv_thr`` 1e-9 Ry per atom, forces and stress
on, ``verbosity="high"`` (eigenvalues at every k-point, for the band gap).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.io.espresso import Namelist, write_espresso_in
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from matdx.core.errors import InputError
from matdx.engines.qe.protocols import Protocol, default_magmoms, protocol
from matdx.engines.qe.pseudo import PseudoSelection, select

TASKS: dict[str, str] = {"scf": "scf", "static": "scf", "relax": "relax", "vc-relax": "vc-relax"}
"""Task name → pw.x ``calculation``."""


_SECTIONS = ("control", "system", "electrons", "ions", "cell")
_ENGINE_KEYS = frozenset(
    {
        "protocol",
        "kspacing",
        "kpts",
        "koffset",
        "pseudo_family",
        "pseudo_dir",
        "pseudopotentials",
        "pseudo_elements",
        "keep_outdir",
        "pools",
        "magmoms",
        "spin_polarized",
        "input_data",
    }
)
_EMPTY_BANDS = 4


def kpoint_mesh(lattice: Lattice, spacing: float) -> list[int]:
    """Monkhorst–Pack divisions with at most ``spacing`` Å⁻¹ (2π included) between points."""
    if spacing <= 0:
        raise InputError(f"kspacing must be positive, not {spacing}")
    return [max(1, math.ceil(b / spacing - 1e-9)) for b in lattice.reciprocal_lattice.abc]


def _sort_keywords(flat: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Put flat pw.x keywords into their namelists (ASE's keyword table)."""
    from ase.io.espresso_namelist.keys import ALL_KEYS

    nested: dict[str, dict[str, Any]] = {}
    unknown = []
    for key, value in flat.items():
        section = Namelist.search_key(key.lower(), ALL_KEYS["pw"])
        if section is None:
            unknown.append(key)
        else:
            nested.setdefault(section, {})[key.lower()] = value
    if unknown:
        raise InputError(f"unknown pw.x setting(s): {', '.join(sorted(unknown))}")
    return nested


def _merge(base: dict[str, dict[str, Any]], extra: Mapping[str, Mapping[str, Any]]) -> None:
    for section, values in extra.items():
        if not isinstance(values, Mapping):
            raise InputError(f"input_data[{section!r}] must be a mapping of pw.x keywords")
        base.setdefault(section.lower(), {}).update({k.lower(): v for k, v in values.items()})


def _site_moments(structure: Structure, settings: Mapping[str, Any]) -> list[float] | None:
    """Initial moments (μB) per site, or ``None`` for a spin-unpolarised run."""
    given = settings.get("magmoms")
    if isinstance(given, Mapping):
        moments = [float(given.get(site.specie.symbol, 0.0)) for site in structure]
    elif given is not None:
        moments = [float(m) for m in given]
        if len(moments) != len(structure):
            raise InputError(f"magmoms has {len(moments)} values for {len(structure)} sites")
    elif "magmom" in structure.site_properties:
        moments = [float(m or 0.0) for m in structure.site_properties["magmom"]]
    elif settings.get("spin_polarized"):
        moments = [1.0] * len(structure)
    elif settings.get("spin_polarized") is None:
        table = default_magmoms()
        moments = [table.get(site.specie.symbol, 0.0) for site in structure]
    else:
        return None
    if not any(moments) and not settings.get("spin_polarized"):
        return None
    return moments


def _cutoffs(selection: PseudoSelection, proto: Protocol) -> tuple[float, float]:
    """``(ecutwfc, ecutrho)`` of a protocol: the files' suggestions, scaled (whole Ry)."""
    wfc, rho = selection.cutoffs(proto.fallback_wfc)
    return float(math.ceil(wfc * proto.cutoff_scale)), float(math.ceil(rho * proto.cutoff_scale))


def _defaults(
    structure: Structure, task: str, selection: PseudoSelection, proto: Protocol
) -> dict[str, dict[str, Any]]:
    ecutwfc, ecutrho = _cutoffs(selection, proto)
    return {
        "control": {
            "calculation": TASKS[task],
            "prefix": "matdx",
            "outdir": "./out",
            "pseudo_dir": str(selection.directory),
            "restart_mode": "from_scratch",
            "tprnfor": True,
            "tstress": True,
            "verbosity": "high",
        },
        "system": {
            "ecutwfc": ecutwfc,
            "ecutrho": ecutrho,
            "occupations": "smearing",
            "smearing": proto.smearing,
            "degauss": proto.degauss,
        },
        "electrons": {
            "conv_thr": 1e-9 * len(structure),
            "mixing_beta": 0.7,
            "electron_maxstep": 100,
            "diagonalization": "david",
        },
        "ions": {},
        "cell": {},
    }


def build_parameters(
    structure: Structure,
    task: str,
    settings: Mapping[str, Any] | None = None,
    pseudo_dir: str | Path | None = None,
    pseudo_family: str = "debian",
) -> dict[str, Any]:
    """The parameter dictionary of one pw.x calculation.

    Parameters
    ----------
    structure
        Structure to compute.
    task
        ``"scf"`` (or ``"static"``), ``"relax"`` or ``"vc-relax"``.
    settings
        pw.x keywords and engine settings (module docstring).
    pseudo_dir, pseudo_family
        Pseudopotential directory and family when ``settings`` do not name them.

    Returns
    -------
    dict
        ``task``, ``input_data`` (namelists), ``kpts``, ``koffset``, ``pseudopotentials``
        (element → file), ``pseudo`` (family, directory, functional, files with MD5),
        ``structure`` (pymatgen dict), ``starting_magnetization`` (per site or ``None``),
        ``mpi_ranks`` (``None``: as the profile says), ``pools`` (``None``: chosen from
        the ranks and k-points, :func:`pools`).

    Raises
    ------
    InputError
        Unknown task or setting, bad k-points or moments.
    EngineError
        No pseudopotential for an element (see :func:`~matdx.engines.qe.pseudo.select`).
    """
    if task not in TASKS:
        raise InputError(f"unknown pw.x task {task!r} (known: {', '.join(TASKS)})")
    settings = dict(settings or {})
    flat = {k: v for k, v in settings.items() if k not in _ENGINE_KEYS}
    user = _sort_keywords(flat)
    _merge(user, settings.get("input_data") or {})
    directory = settings.get("pseudo_dir") or pseudo_dir
    # one choice for a whole campaign's elements: energies of different structures must
    # come from the same pseudopotentials (and cutoffs) to be compared on one hull
    selection = select(
        {site.specie.symbol for site in structure} | set(settings.get("pseudo_elements") or ()),
        family=settings.get("pseudo_family", pseudo_family),
        directory=Path(directory) if directory else None,
        overrides=settings.get("pseudopotentials"),
    )
    proto = protocol(settings.get("protocol"))
    input_data = _defaults(structure, task, selection, proto)
    user_system = user.get("system", {})
    if "ecutwfc" in user_system and "ecutrho" not in user_system:
        wfc, rho = _cutoffs(selection, proto)
        user_system["ecutrho"] = float(math.ceil(user_system["ecutwfc"] * rho / wfc))
    _merge(input_data, user)
    input_data["control"]["calculation"] = TASKS[task]
    system = input_data["system"]
    if float(system["ecutrho"]) < 4 * float(system["ecutwfc"]):
        wfc, rho = system["ecutwfc"], system["ecutrho"]
        raise InputError(f"ecutrho ({rho} Ry) must be at least 4 × ecutwfc ({wfc} Ry)")
    if system.get("occupations") != "smearing":
        for key in ("smearing", "degauss"):
            if key not in user.get("system", {}):
                system.pop(key, None)
    if system.get("occupations") == "fixed" and "nbnd" not in system:
        electrons = sum(selection.valence(site.specie.symbol) or 0.0 for site in structure)
        system["nbnd"] = math.ceil(electrons / 2) + _EMPTY_BANDS
    if settings.get("kpts") is not None:
        kpts = [int(n) for n in settings["kpts"]]
        if len(kpts) != 3 or min(kpts) < 1:
            raise InputError(f"kpts must be three positive integers, not {settings['kpts']!r}")
    else:
        kpts = kpoint_mesh(structure.lattice, float(settings.get("kspacing", proto.kspacing)))
    koffset = settings.get("koffset", (0, 0, 0))
    koffset = [int(koffset)] * 3 if isinstance(koffset, (int, bool)) else [int(k) for k in koffset]
    requested_pools = settings.get("pools")
    if requested_pools is not None and (
        type(requested_pools) is not int or requested_pools < 1
    ):
        raise InputError(f"pools must be a positive integer, not {requested_pools!r}")
    moments = _site_moments(structure, settings)
    fractions = None
    if moments is not None:
        fractions = [
            float(np.clip(m / (selection.valence(site.specie.symbol) or 1.0), -1.0, 1.0))
            for m, site in zip(moments, structure, strict=True)
        ]
        input_data["system"]["nspin"] = 2
    bare = structure.copy()
    for prop in list(bare.site_properties):
        bare.remove_site_property(prop)
    return {
        "task": task,
        "input_data": input_data,
        "kpts": kpts,
        "koffset": koffset,
        "pseudopotentials": selection.filenames(),
        "pseudo": selection.provenance(),
        "structure": bare.as_dict(),
        "starting_magnetization": fractions,
        "mpi_ranks": None,
        "pools": requested_pools,
    }


def pools(parameters: Mapping[str, Any], ranks: int | None) -> int:
    """k-point pools of a run of ``parameters`` on ``ranks`` MPI ranks (see ``pools`` above).

    The largest divisor of ``ranks`` that is at most the requested pools, or (by default)
    at most the irreducible k-points (twice as many with spin: pw.x treats each spin as a
    k-point of its own). 1 without ranks.
    """
    from matdx.core.symmetry import irreducible_kpoints

    if not ranks or ranks < 2:
        return 1
    limit = parameters.get("pools")
    if limit is None:
        structure = Structure.from_dict(parameters["structure"])
        shift = parameters.get("koffset", (0, 0, 0))
        limit = irreducible_kpoints(structure, parameters["kpts"], shift)
        if parameters.get("starting_magnetization") is not None:
            limit *= 2
    return max(d for d in range(1, ranks + 1) if ranks % d == 0 and d <= limit)


def to_atoms(parameters: Mapping[str, Any]) -> Atoms:
    """The structure of ``parameters`` as ASE atoms, with starting magnetisation set."""
    atoms = AseAtomsAdaptor.get_atoms(Structure.from_dict(parameters["structure"]))
    atoms.calc = None
    fractions = parameters.get("starting_magnetization")
    if fractions is not None:
        atoms.set_initial_magnetic_moments(fractions)
    return atoms


def write_input(parameters: Mapping[str, Any], path: str | Path) -> None:
    """Write the pw.x input file of ``parameters`` with ASE's ``write_espresso_in``."""
    with open(path, "w") as fh:
        write_espresso_in(
            fh,
            to_atoms(parameters),
            input_data=copy.deepcopy(dict(parameters["input_data"])),
            pseudopotentials=dict(parameters["pseudopotentials"]),
            kpts=tuple(parameters["kpts"]),
            koffset=tuple(parameters["koffset"]),
        )


__all__ = [
    "TASKS",
    "build_parameters",
    "kpoint_mesh",
    "to_atoms",
    "write_input",
]
