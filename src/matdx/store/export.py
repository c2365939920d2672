"""Exports of a campaign's results: DataFrame, Parquet, CSV, JSON, extxyz and OPTIMADE.

Table exports carry the summary's declared export fields under the Materials Project's
(emmet's) names and types, plus the relaxed ``structure`` (pymatgen's dictionary): JSON as
nested documents (``symmetry`` an object, ``composition`` a mapping, ``decomposes_to`` a
list of ``{material_id, formula, amount}``), Parquet as flat columns with typed lists,
maps and structs, CSV as flat columns with lists and mappings as JSON text.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matdx.core.errors import InputError
from matdx.store.access import Caller, can_see
from matdx.store.documents import SUMMARY
from matdx.store.repository import Store

COLUMNS = list(SUMMARY.columns)
"""Columns of the results DataFrame, from the summary's field declarations."""
EXPORT_COLUMNS = [*COLUMNS, "structure"]
"""Columns of CSV and Parquet exports: the declared ones and the relaxed structure."""
OPTIMADE_CONTEXT = ("campaign", "tier", "rights")
"""Record fields that OPTIMADE entries carry as ``_matdx_`` properties after the
summary's quantities (its ``property`` fields with a query range)."""


STEP_IDENTITY = (
    "material_id",
    "campaign",
    "formula_pretty",
    "chemsys",
    "elements",
    "nelements",
    "nsites",
    "formula_anonymous",
    "composition",
    "composition_reduced",
    "tier",
    "owner",
    "groups",
    "rights",
    "export_control",
    "derived_access",
    "derived_hidden",
)
"""Summary fields a later step's rows keep: what the material is and who may read it."""

STEP_FIELDS = (
    "energy_per_atom",
    "formation_energy_per_atom",
    "energy_above_hull",
    "is_stable",
    "decomposes_to",
    "volume_per_atom",
    "converged",
)
"""Summary fields a later step's block fills (absent in the block: empty, never the
pre-screen's value; so are the pre-screen structure's volume, density and crystal system)."""

_BLOCK_ONLY = frozenset({*STEP_FIELDS, "spacegroup", "spacegroup_number", "engine", "calc_id"})


def step_rows(rows: list[dict[str, Any]], step: str) -> list[dict[str, Any]]:
    """The summaries as one later step sees them: its own values, none of the pre-screen's.

    Parameters
    ----------
    rows
        Summary documents (with their ``steps`` blocks).
    step
        Step name.

    Returns
    -------
    list of dict
        One row per material the step computed, shaped like a summary (identity and
        governance from the summary; energies, hull, volume, symmetry and method from the
        step's block) plus the block's other values (e.g. MD averages and their standard
        errors) under their own names.
    """
    out = []
    for r in rows:
        block = (r.get("steps") or {}).get(step)
        if not block:
            continue
        row = {k: r[k] for k in STEP_IDENTITY if k in r}
        row.update({k: block.get(k) for k in STEP_FIELDS})
        row["symmetry"] = {
            "symbol": block.get("spacegroup"),
            "number": block.get("spacegroup_number"),
        }
        row["method"] = {"engine": block.get("engine"), "settings_hash": block.get("settings_hash")}
        row["step"] = step
        row.update({k: v for k, v in block.items() if k not in _BLOCK_ONLY and k not in row})
        out.append(row)
    return out


def flatten(row: dict[str, Any]) -> dict[str, Any]:
    """One summary document as a flat record with the :data:`COLUMNS`."""
    return SUMMARY.flatten(row)


def step_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Table columns of a step's rows: the summary's, then the step's own values."""
    extra = sorted(
        {k for r in rows for k, v in r.items() if k not in SUMMARY.fields and _scalar(v)}
    )
    return [*COLUMNS, *(k for k in extra if k not in COLUMNS)]


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def results_frame(
    store: Store,
    campaign: str,
    caller: Caller,
    sort: str | None = None,
    ascending: bool = True,
    limit: int = 0,
) -> pd.DataFrame:
    """A campaign's results visible to ``caller`` as a DataFrame (one row per material)."""
    rows = store.summaries(campaign, caller, sort=sort, ascending=ascending, limit=limit)
    return pd.DataFrame([flatten(r) for r in rows], columns=COLUMNS)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place only on success.

    Raises
    ------
    InputError
        If the directory of ``path`` does not exist (it is not created).
    """
    if not path.parent.is_dir():
        raise InputError(
            f"cannot write {str(path)!r}: directory {str(path.parent)!r} does not exist"
        )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _columns(records: list[dict[str, Any]]) -> list[str]:
    """:data:`EXPORT_COLUMNS`, then any further ones of the records (a step's own values)."""
    extra = sorted({k for r in records for k in r} - set(EXPORT_COLUMNS))
    return [*EXPORT_COLUMNS, *extra]


def _write_csv(records: list[dict[str, Any]], path: Path) -> None:
    pd.DataFrame(records, columns=_columns(records)).to_csv(path, index=False)


def parquet_types() -> dict[str, Any]:
    """Arrow types of the columns whose values are lists or mappings (others: inferred)."""
    import pyarrow as pa

    return {
        "elements": pa.list_(pa.string()),
        "composition": pa.map_(pa.string(), pa.float64()),
        "composition_reduced": pa.map_(pa.string(), pa.float64()),
        "decomposes_to": pa.list_(
            pa.struct(
                [("material_id", pa.string()), ("formula", pa.string()), ("amount", pa.float64())]
            )
        ),
    }


def _write_parquet(records: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = parquet_types()
    arrays = []
    columns = _columns(records)
    for col in columns:
        values = [r.get(col) for r in records]
        if col in types and types[col] == pa.map_(pa.string(), pa.float64()):
            values = [None if v is None else list(v.items()) for v in values]
        arrays.append(pa.array(values, type=types.get(col)))
    units = {n: a.unit for n, a in SUMMARY.about.items() if a.unit}
    table = pa.table(arrays, names=columns).replace_schema_metadata(
        {"matdx.units": json.dumps(units, ensure_ascii=False)}
    )
    pq.write_table(table, path)


def _write_json(records: list[dict[str, Any]], path: Path) -> None:
    path.write_text(json.dumps(records, default=str, indent=1), encoding="utf-8")


TABLE_WRITERS: dict[str, Callable[[list[dict[str, Any]], Path], None]] = {
    "csv": _write_csv,
    "parquet": _write_parquet,
    "json": _write_json,
}
FORMATS = (*TABLE_WRITERS, "extxyz", "optimade")


def export_records(
    summaries: list[dict[str, Any]], structures: dict[str, dict[str, Any]], fmt: str
) -> list[dict[str, Any]]:
    """The records a table export ``fmt`` writes (see the module docstring)."""
    nested = fmt == "json"
    out = []
    for r in summaries:
        rec = SUMMARY.flatten(r, nested=nested, text=fmt == "csv")
        structure = structures.get(r["material_id"])
        rec["structure"] = structure if nested or structure is None else json.dumps(structure)
        out.append(rec)
    return out


def _visible_calculations(
    store: Store, rows: dict[str, dict[str, Any]], caller: Caller, settings_hash: str
) -> list[dict[str, Any]]:
    return [c for c in store.calculations(sorted(rows), settings_hash) if can_see(c, caller)]


def write_extxyz(
    store: Store,
    campaign: str,
    caller: Caller,
    settings_hash: str,
    path: Path,
    rows: dict[str, dict[str, Any]] | None = None,
) -> int:
    """Relaxed structures with energy, forces and stress, for ML potential training.

    Returns
    -------
    int
        Number of frames written.
    """
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    rows = (
        rows
        if rows is not None
        else {r["material_id"]: r for r in store.summaries(campaign, caller)}
    )
    frames = []
    for c in _visible_calculations(store, rows, caller, settings_hash):
        out = c["output"]
        atoms = to_atoms(out["structure"])
        atoms.calc = SinglePointCalculator(
            atoms,
            energy=out["energy"],
            forces=np.array(out["forces"]),
            stress=np.array(out["stress"]),
        )
        r = rows[c["material_id"]]
        atoms.info.update(
            material_id=c["material_id"],
            campaign=campaign,
            engine=c["engine"],
            settings_hash=settings_hash,
            tier=r.get("tier", c.get("tier")),
            rights=r.get("rights", c.get("rights")),
            export_control=bool(r.get("export_control", c.get("export_control"))),
        )
        if r.get("formation_energy_per_atom") is not None:
            atoms.info["formation_energy_per_atom"] = r["formation_energy_per_atom"]
        atoms.info.update(
            {k: v for k, v in r.items() if k not in SUMMARY.fields and _scalar(v) and v is not None}
        )
        frames.append(atoms)
    with atomic_path(path) as tmp:
        write(tmp, frames, format="extxyz")
    return len(frames)


def to_atoms(structure: dict[str, Any]) -> Any:
    """ASE atoms of a pymatgen structure dict (no pymatgen object needed)."""
    from ase import Atoms

    return Atoms(
        symbols=[site["species"][0]["element"] for site in structure["sites"]],
        positions=[site["xyz"] for site in structure["sites"]],
        cell=np.array(structure["lattice"]["matrix"]),
        pbc=True,
    )


def optimade_entry(
    row: dict[str, Any], structure: dict[str, Any], last_modified: Any = None
) -> dict[str, Any]:
    """One result as an OPTIMADE ``structures`` entry (matdx properties prefixed ``_matdx_``).

    Parameters
    ----------
    row
        The material's summary.
    structure
        The structure the entry describes (pymatgen dict).
    last_modified
        When the result was last changed (default: the summary's ``updated_at``).
    """
    from matdx.store.optimade import structure_attributes

    when = last_modified or row.get("updated_at")
    attributes = structure_attributes(structure, when if isinstance(when, datetime) else None)
    for key in (*SUMMARY.quantities, *OPTIMADE_CONTEXT):
        attributes[f"_matdx_{key}"] = row.get(key)
    # a later step's own values (its name, MD averages and errors, magnetisation, ...)
    for key, value in row.items():
        if key not in SUMMARY.fields and _scalar(value):
            attributes[f"_matdx_{key}"] = value
    attributes["_matdx_space_group_number"] = (row.get("symmetry") or {}).get("number")
    return {"id": row["material_id"], "type": "structures", "attributes": attributes}


def write_optimade(
    store: Store,
    campaign: str,
    caller: Caller,
    settings_hash: str,
    path: Path,
    rows: dict[str, dict[str, Any]] | None = None,
) -> int:
    """Relaxed structures and properties as an OPTIMADE-shaped JSON document."""
    import json
    from datetime import UTC

    from matdx import __version__

    rows = (
        rows
        if rows is not None
        else {r["material_id"]: r for r in store.summaries(campaign, caller)}
    )
    data = [
        optimade_entry(rows[c["material_id"]], c["output"]["structure"])
        for c in _visible_calculations(store, rows, caller, settings_hash)
    ]
    doc = {
        "data": data,
        "meta": {
            "api_version": "1.1.0",
            "more_data_available": False,
            "data_returned": len(data),
            "time_stamp": datetime.now(UTC).isoformat(),
            "provider": {
                "name": "matdx",
                "prefix": "matdx",
                "description": f"matdx {__version__} export of campaign {campaign}",
            },
        },
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return len(data)


def export(
    store: Store,
    campaign: str,
    caller: Caller,
    fmt: str,
    path: Path,
    settings_hash: str,
    allow_export_controlled: bool = False,
    step: str | None = None,
) -> int:
    """Write a campaign's results in format ``fmt`` to ``path``, atomically.

    Parameters
    ----------
    store, campaign, caller
        Where the results are, whose, and who reads them.
    fmt
        Key of :data:`FORMATS`.
    path
        File to write.
    settings_hash
        Settings hash of the calculations whose structures (extxyz, optimade) are written:
        the pre-screen's, or ``step``'s.
    allow_export_controlled
        Write export-controlled records too.
    step
        A later step: its own values (:func:`step_rows`), not the pre-screen's.

    Returns
    -------
    int
        Number of records written.

    Raises
    ------
    InputError
        For an unknown format, or export-controlled records without permission.
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r} (choose from {', '.join(FORMATS)})")
    summaries = store.summaries(campaign, caller)
    if step is not None:
        summaries = step_rows(summaries, step)
    controlled = sum(bool(r.get("export_control")) for r in summaries)
    if controlled and not allow_export_controlled:
        raise InputError(
            f"{controlled} of {len(summaries)} records are export-controlled: they are not "
            "exported without --allow-export-controlled"
        )
    rows = {r["material_id"]: r for r in summaries}
    if fmt == "extxyz":
        return write_extxyz(store, campaign, caller, settings_hash, path, rows)
    if fmt == "optimade":
        return write_optimade(store, campaign, caller, settings_hash, path, rows)
    structures = {
        c["material_id"]: c["output"].get("structure")
        for c in _visible_calculations(store, rows, caller, settings_hash)
    }
    records = export_records(summaries, structures, fmt)
    if step is not None:
        # a step's own values (MD averages and errors, magnetisation, ...) after the rest
        extra = [c for c in step_columns(summaries) if c not in COLUMNS]
        for rec, r in zip(records, summaries, strict=True):
            rec.update({k: r.get(k) for k in extra})
    with atomic_path(path) as tmp:
        TABLE_WRITERS[fmt](records, tmp)
    return len(records)
