"""VASP inputs from pymatgen's Materials Project input sets.

The INCAR, KPOINTS, POSCAR and POTCAR of a task come from one pymatgen input set
(:data:`INPUT_SETS`), with the user's overrides passed through pymatgen's own
``user_*_settings`` arguments. POTCARs are licensed and never stored: they are assembled
from the library pymatgen is configured with (``PMG_VASP_PSP_DIR``); without one, the
input set writes ``POTCAR.spec`` (the POTCAR symbols, one per line) instead, so that
inputs can be written and checked anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pymatgen.core import SETTINGS, Structure
from pymatgen.io.vasp.sets import MPRelaxSet, MPStaticSet, VaspInputSet

from matdx.core.errors import InputError

INPUT_SETS: dict[str, type[VaspInputSet]] = {
    "relax": MPRelaxSet,
    "static": MPStaticSet,
}
"""pymatgen input set of each task."""

SETTING_KEYS: dict[str, str] = {
    "incar": "user_incar_settings",
    "kpoints": "user_kpoints_settings",
    "potcar": "user_potcar_settings",
    "potcar_functional": "user_potcar_functional",
}
"""matdx setting name → keyword of the pymatgen input set it is passed to."""


def potcar_library() -> str | None:
    """The POTCAR directory pymatgen is configured with (``PMG_VASP_PSP_DIR``), if any."""
    path = SETTINGS.get("PMG_VASP_PSP_DIR")
    return str(path) if path and Path(path).is_dir() else None


def input_set(
    structure: Structure, task: str, settings: Mapping[str, Any] | None = None
) -> VaspInputSet:
    """The pymatgen input set of ``task`` for ``structure`` with the user's overrides.

    Parameters
    ----------
    structure
        Structure to compute.
    task
        A key of :data:`INPUT_SETS` (``"relax"``, ``"static"``).
    settings
        Overrides: ``incar`` (INCAR tags; ``None`` removes a tag), ``kpoints`` (e.g.
        ``{"reciprocal_density": 200}`` or ``{"grid_density": 1000}``), ``potcar``
        (element → POTCAR symbol), ``potcar_functional`` (e.g. ``"PBE_54"``).

    Raises
    ------
    InputError
        For an unknown task or setting.
    """
    try:
        cls = INPUT_SETS[task]
    except KeyError:
        raise InputError(f"unknown VASP task {task!r} (known: {', '.join(INPUT_SETS)})") from None
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(SETTING_KEYS))
    if unknown:
        raise InputError(
            f"unknown VASP setting(s) {', '.join(unknown)} (known: {', '.join(SETTING_KEYS)})"
        )
    kwargs = {SETTING_KEYS[k]: v for k, v in settings.items() if v is not None}
    return cls(structure, **kwargs)


def write_inputs(
    structure: Structure,
    task: str,
    directory: str | Path,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the VASP inputs of ``task`` into ``directory``.

    Writes INCAR, KPOINTS, POSCAR and either POTCAR (when pymatgen has a POTCAR library)
    or POTCAR.spec.

    Returns
    -------
    dict
        What was written, for a calculation's ``parameters``: input set name, user
        settings, INCAR (dict), KPOINTS (dict), POTCAR symbols and functional, and
        ``potcar_spec`` (True when only POTCAR.spec was written).
    """
    vis = input_set(structure, task, settings)
    spec = potcar_library() is None
    vi = vis.get_input_set(potcar_spec=spec)
    vi.write_input(output_dir=str(directory), files_to_transfer=vis.files_to_transfer)
    return {
        "task": task,
        "input_set": type(vis).__name__,
        "user_settings": dict(settings or {}),
        "incar": dict(vi["INCAR"]),
        "kpoints": vi["KPOINTS"].as_dict() if vi.get("KPOINTS") is not None else None,
        "potcar_symbols": list(vis.potcar_symbols),
        "potcar_functional": vis.potcar_functional,
        "potcar_spec": spec,
    }


__all__ = ["INPUT_SETS", "SETTING_KEYS", "input_set", "potcar_library", "write_inputs"]
