"""Composition and structure descriptors of materials, from pymatgen's element data.

Composition features are Magpie-style statistics (fraction-weighted mean, minimum,
maximum, range and mean absolute deviation) of element properties, plus the
stoichiometric L^p norms. Structure features describe the cell (density, volume per atom,
packing fraction, space group) and the first coordination shells from a neighbour list
(coordination numbers, nearest-neighbour distances relative to atomic radii, fraction of
unlike neighbours and bond-weighted property differences), which is what tells apart the
orderings of one composition.

Featurize the structure the model will see at prediction time: for screening, that is the
generated (unrelaxed) structure, not the relaxed one, which is only known after the
calculation.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Sequence
from functools import cache, lru_cache
from typing import Any

import numpy as np
import pandas as pd
from pymatgen.core import Composition, Structure
from pymatgen.core.periodic_table import Element

from matdx.core.symmetry import spacegroup

FEATURES_VERSION = "1"
"""Changes whenever a feature's definition changes (stored with trained models)."""

ELEMENT_PROPERTIES = (
    "Z",
    "atomic_mass",
    "X",
    "atomic_radius",
    "atomic_radius_calculated",
    "row",
    "group",
    "mendeleev_no",
    "melting_point",
    "molar_volume",
    "ionization_energy",
    "electron_affinity",
    "n_s_valence",
    "n_p_valence",
    "n_d_valence",
    "n_f_valence",
    "n_valence",
    "n_unfilled",
)
"""Element properties whose statistics make the composition features."""

STATS = ("mean", "min", "max", "range", "avg_dev")
LP_NORMS = (2, 3, 5, 7, 10)

BOND_PROPERTIES = ("X", "atomic_radius", "n_valence", "group", "row", "molar_volume")
"""Properties whose differences across first-shell bonds are structure features."""

SHELL_TOL = 1.2
"""A neighbour is in the first shell of a site if closer than 1.2 × its nearest distance."""
SECOND_SHELL_TOL = 1.5
SYMPREC = 0.1
"""Tolerance (Å) of the space-group feature: looser than the reported groups'
(:data:`matdx.core.symmetry.SYMPREC`), and the one the models were fitted with."""
_AMU_G_PER_A3 = 1.66053906660  # 1 amu/Å³ in g/cm³

_CAPACITY = {"s": 2, "p": 6, "d": 10, "f": 14}
_ORBITAL = re.compile(r"(\d+)([spdf])(\d+)")


def _valence(el: Element) -> dict[str, float]:
    """Valence electrons per orbital type (outside the noble-gas core) and unfilled states."""
    text = el.electronic_structure.split(".")
    counts = dict.fromkeys(_CAPACITY, 0)
    unfilled = 0
    for part in text:
        m = _ORBITAL.fullmatch(part)
        if m:
            kind, n = m.group(2), int(m.group(3))
            counts[kind] += n
            unfilled += _CAPACITY[kind] - n
    out = {f"n_{k}_valence": float(v) for k, v in counts.items()}
    out["n_valence"] = float(sum(counts.values()))
    out["n_unfilled"] = float(unfilled)
    return out


def _raw_property(el: Element, name: str) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = getattr(el, name)
        except (AttributeError, KeyError, ValueError, TypeError):
            return float("nan")
    if value is None:
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


@lru_cache(maxsize=1)
def _fill_values() -> dict[str, float]:
    """Median of every property over elements 1–103: the value used where data is missing."""
    rows = [_element_row_raw(z) for z in range(1, 104)]
    return {p: float(np.nanmedian([r[p] for r in rows])) for p in ELEMENT_PROPERTIES}


@cache
def _element_row_raw(z: int) -> dict[str, float]:
    el = Element.from_Z(z)
    row = {p: _raw_property(el, p) for p in ELEMENT_PROPERTIES if not p.startswith("n_")}
    row.update(_valence(el))
    return row


@cache
def element_vector(z: int) -> np.ndarray:
    """Properties of element ``z`` in :data:`ELEMENT_PROPERTIES` order (missing → median)."""
    raw = _element_row_raw(z)
    fill = _fill_values()
    return np.array(
        [raw[p] if np.isfinite(raw[p]) else fill[p] for p in ELEMENT_PROPERTIES], dtype=float
    )


def composition_feature_names() -> list[str]:
    """Names of the composition features, in order."""
    names = ["n_elements", *[f"lp{p}_norm" for p in LP_NORMS]]
    names += [f"{s}_{p}" for p in ELEMENT_PROPERTIES for s in STATS]
    return names


def structure_feature_names() -> list[str]:
    """Names of the structure features, in order."""
    names = [
        "nsites",
        "volume_per_atom",
        "density",
        "packing_fraction",
        "spacegroup_number",
        "cn_mean",
        "cn_std",
        "cn_min",
        "cn_max",
        "nn_dist_mean",
        "nn_dist_rel_mean",
        "nn_dist_rel_std",
        "frac_unlike_1",
        "frac_unlike_2",
        "sro_1",
        "sro_2",
    ]
    for p in BOND_PROPERTIES:
        names += [f"bond_mean_absdiff_{p}", f"bond_max_site_absdiff_{p}"]
    return names


@lru_cache(maxsize=4096)
def _composition_features(key: tuple[tuple[int, float], ...]) -> tuple[float, ...]:
    z = [k for k, _ in key]
    frac = np.array([f for _, f in key])
    frac = frac / frac.sum()
    props = np.array([element_vector(i) for i in z])  # (n_el, n_prop)
    mean = frac @ props
    mn, mx = props.min(axis=0), props.max(axis=0)
    dev = frac @ np.abs(props - mean)
    stats = np.stack([mean, mn, mx, mx - mn, dev], axis=1).ravel()  # per property, STATS order
    norms = [float(np.sum(frac**p) ** (1 / p)) for p in LP_NORMS]
    return (float(len(z)), *norms, *stats.tolist())


def composition_features(comp: Composition | str) -> np.ndarray:
    """Composition features of one composition (see :func:`composition_feature_names`)."""
    comp = Composition(comp) if isinstance(comp, str) else comp
    amounts = comp.get_el_amt_dict()
    key = tuple(sorted((Element(el).Z, round(float(a), 10)) for el, a in amounts.items()))
    return np.array(_composition_features(key))


def atomic_fractions(formulas: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Element list and atomic-fraction matrix (one row per formula)."""
    comps = [Composition(f) for f in formulas]
    elements = sorted({el.symbol for c in comps for el in c.elements})
    col = {el: i for i, el in enumerate(elements)}
    frac = np.zeros((len(comps), len(elements)))
    for i, c in enumerate(comps):
        for el, x in c.fractional_composition.get_el_amt_dict().items():
            frac[i, col[el]] = x
    return elements, frac


def as_structure(obj: Structure | dict[str, Any] | str) -> Structure:
    """A structure from a pymatgen Structure, its dict, or its JSON text."""
    if isinstance(obj, Structure):
        return obj
    if isinstance(obj, str):
        obj = json.loads(obj)
    if isinstance(obj, dict):
        return Structure.from_dict(obj)
    raise TypeError(f"cannot make a structure from {type(obj).__name__}")


def _neighbours(s: Structure) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour pairs (centre, neighbour, distance) out to the second shell of every site."""
    n = len(s)
    r = 1.9 * (s.volume / n) ** (1 / 3)
    for _ in range(6):
        centres, nbrs, _, dist = s.get_neighbor_list(r)
        keep = dist > 1e-8
        centres, nbrs, dist = centres[keep], nbrs[keep], dist[keep]
        if len(centres):
            dmin = np.full(n, np.inf)
            np.minimum.at(dmin, centres, dist)
            if np.all(np.isfinite(dmin)) and r >= SECOND_SHELL_TOL * dmin.max():
                return centres, nbrs, dist
        r *= 1.5
    raise ValueError("no neighbours found: is the structure periodic and ordered?")


def structure_features(s: Structure) -> np.ndarray:
    """Structure features of one structure (see :func:`structure_feature_names`)."""
    n = len(s)
    z = np.array([site.specie.Z for site in s])
    props = np.array([element_vector(int(i)) for i in z])  # (n, n_prop)
    radius = props[:, ELEMENT_PROPERTIES.index("atomic_radius")]
    vol = s.volume
    packing = float(np.sum(4.0 / 3.0 * np.pi * radius**3) / vol)
    _, number = spacegroup((s.lattice.matrix, s.frac_coords, z.tolist()), symprec=SYMPREC)
    sg_number = float(number or 0)

    centres, nbrs, dist = _neighbours(s)
    dmin = np.full(n, np.inf)
    np.minimum.at(dmin, centres, dist)
    first = dist < SHELL_TOL * dmin[centres]
    second = dist < SECOND_SHELL_TOL * dmin[centres]
    cn = np.bincount(centres[first], minlength=n).astype(float)
    rel = dmin / (2.0 * radius)  # nearest distance over twice the atomic radius
    unlike = z[centres] != z[nbrs]
    frac = np.bincount(z, minlength=z.max() + 1)[np.unique(z)] / n
    random_unlike = 1.0 - float(np.sum(frac**2))

    def unlike_frac(mask: np.ndarray) -> float:
        return float(unlike[mask].mean()) if mask.any() else 0.0

    u1, u2 = unlike_frac(first), unlike_frac(second)
    sro1 = 1.0 - u1 / random_unlike if random_unlike > 0 else 0.0
    sro2 = 1.0 - u2 / random_unlike if random_unlike > 0 else 0.0
    out = [
        float(n),
        vol / n,
        float(props[:, ELEMENT_PROPERTIES.index("atomic_mass")].sum() * _AMU_G_PER_A3 / vol),
        packing,
        sg_number,
        float(cn.mean()),
        float(cn.std()),
        float(cn.min()),
        float(cn.max()),
        float(dmin.mean()),
        float(rel.mean()),
        float(rel.std()),
        u1,
        u2,
        sro1,
        sro2,
    ]
    c1, n1 = centres[first], nbrs[first]
    for p in BOND_PROPERTIES:
        col = ELEMENT_PROPERTIES.index(p)
        diff = np.abs(props[c1, col] - props[n1, col])
        per_site = np.bincount(c1, weights=diff, minlength=n) / np.maximum(cn, 1.0)
        out += [float(diff.mean()) if len(diff) else 0.0, float(per_site.max())]
    return np.array(out)


def featurize(
    df: pd.DataFrame,
    structure: bool | None = None,
    structure_column: str = "structure",
    formula_column: str = "formula_pretty",
) -> tuple[pd.DataFrame, list[str]]:
    """Descriptors of every material (row) of ``df``.

    Parameters
    ----------
    df
        One row per material, with a ``structure`` column (pymatgen Structure, its dict
        or JSON text) and/or a ``formula_pretty`` column.
    structure
        Add the structure features; ``None`` means "if ``structure_column`` exists".
        Without structures, compositions are read from ``formula_column``.
    structure_column, formula_column
        Column names.

    Returns
    -------
    x, feature_names
        A float DataFrame with ``df``'s index and one column per feature, and the list
        of its column names. Deterministic and finite for ordered periodic structures.

    Raises
    ------
    KeyError
        If the needed column is missing.
    """
    use_structure = structure_column in df.columns if structure is None else structure
    names = composition_feature_names()
    if use_structure:
        names = names + structure_feature_names()
        if structure_column not in df.columns:
            raise KeyError(f"no {structure_column!r} column to featurize")
        rows = []
        for obj in df[structure_column]:
            s = as_structure(obj)
            rows.append(np.concatenate([composition_features(s.composition),
                                        structure_features(s)]))
    else:
        if formula_column not in df.columns:
            raise KeyError(f"no {formula_column!r} column to featurize")
        rows = [composition_features(f) for f in df[formula_column]]
    data = np.vstack(rows) if rows else np.empty((0, len(names)))
    return pd.DataFrame(data, index=df.index, columns=names), names


def feature_matrix(x: pd.DataFrame, feature_names: Sequence[str]) -> np.ndarray:
    """``x`` as a float array with exactly ``feature_names`` as columns, in order.

    Raises
    ------
    KeyError
        If a feature is missing from ``x``.
    """
    missing = [f for f in feature_names if f not in x.columns]
    if missing:
        raise KeyError(f"features missing: {', '.join(missing[:5])}")
    return x.loc[:, list(feature_names)].to_numpy(dtype=float)
