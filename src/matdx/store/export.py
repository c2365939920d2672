"""Exports of a campaign's results: DataFrame, Parquet, CSV, JSON and extxyz."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matdx.core.errors import InputError
from matdx.store.repository import Caller, Store

COLUMNS = [
    "material_id",
    "formula_pretty",
    "chemsys",
    "nelements",
    "nsites",
    "spacegroup_symbol",
    "spacegroup_number",
    "energy_per_atom",
    "formation_energy_per_atom",
    "energy_above_hull",
    "is_stable",
    "volume_per_atom",
    "decomposes_to",
    "tier",
    "owner",
    "rights",
    "export_control",
    "engine",
    "settings_hash",
]


def flatten(row: dict[str, Any]) -> dict[str, Any]:
    """One summary document as a flat record with the :data:`COLUMNS`."""
    sym = row.get("symmetry") or {}
    method = row.get("method") or {}
    flat = {k: row.get(k) for k in COLUMNS}
    flat.update(
        spacegroup_symbol=sym.get("symbol"),
        spacegroup_number=sym.get("number"),
        engine=method.get("engine"),
        settings_hash=method.get("settings_hash"),
    )
    flat["decomposes_to"] = ",".join(row.get("decomposes_to") or [])
    return flat


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
    """Yield a temporary path next to ``path``; move it into place only on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    df.to_csv(path, index=False)


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    df.to_parquet(path, index=False)


def _write_json(df: pd.DataFrame, path: Path) -> None:
    df.to_json(path, orient="records", indent=1)


TABLE_WRITERS: dict[str, Callable[[pd.DataFrame, Path], None]] = {
    "csv": _write_csv,
    "parquet": _write_parquet,
    "json": _write_json,
}
FORMATS = (*TABLE_WRITERS, "extxyz")


def write_extxyz(
    store: Store, campaign: str, caller: Caller, settings_hash: str, path: Path
) -> int:
    """Relaxed structures with energy, forces and stress, for ML potential training.

    Returns
    -------
    int
        Number of frames written.
    """
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    rows = {r["material_id"]: r for r in store.summaries(campaign, caller)}
    calcs = store.calculations(sorted(rows), settings_hash)
    frames = []
    for c in calcs:
        out = c["output"]
        s = out["structure"]
        lattice = np.array(s["lattice"]["matrix"])
        atoms = Atoms(
            symbols=[site["species"][0]["element"] for site in s["sites"]],
            positions=[site["xyz"] for site in s["sites"]],
            cell=lattice,
            pbc=True,
        )
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
        )
        if r.get("formation_energy_per_atom") is not None:
            atoms.info["formation_energy_per_atom"] = r["formation_energy_per_atom"]
        frames.append(atoms)
    with atomic_path(path) as tmp:
        write(tmp, frames, format="extxyz")
    return len(frames)


def export(
    store: Store, campaign: str, caller: Caller, fmt: str, path: Path, settings_hash: str
) -> int:
    """Write a campaign's results in format ``fmt`` to ``path``, atomically.

    Returns
    -------
    int
        Number of records written.

    Raises
    ------
    InputError
        For an unknown format.
    """
    if fmt == "extxyz":
        return write_extxyz(store, campaign, caller, settings_hash, path)
    if fmt not in TABLE_WRITERS:
        raise InputError(f"unknown export format {fmt!r} (choose from {', '.join(FORMATS)})")
    df = results_frame(store, campaign, caller)
    with atomic_path(path) as tmp:
        TABLE_WRITERS[fmt](df, tmp)
    return len(df)
