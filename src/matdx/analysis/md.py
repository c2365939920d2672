"""Molecular-dynamics analysis, the same for every engine.

Thermodynamic averages with block-averaged standard errors, mean-squared displacement and
diffusion coefficients (Einstein relation), radial distribution functions, densities and
thermal expansion from NPT runs. Trajectories are lists of :class:`ase.Atoms` or any file
ASE reads (the ``.traj`` files of the ASE engine, the text dumps of the LAMMPS engine).

Units: Å, ps, K, eV; densities in g/cm³; diffusion coefficients in Å²/ps
(1 Å²/ps = 10⁻⁴ cm²/s).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

AMU_PER_A3_IN_G_PER_CM3 = 1.66053906660
"""1 amu/Å³ in g/cm³."""

A2_PER_PS_IN_CM2_PER_S = 1e-4
"""1 Å²/ps in cm²/s."""

AVERAGED = (
    "temperature_K",
    "pressure_bar",
    "total_energy_eV",
    "potential_energy_eV",
    "volume_A3",
    "density_g_cm3",
)
"""Thermo columns averaged over the production part of a run."""


def block_average(
    values: Sequence[float] | np.ndarray, n_blocks: int = 5
) -> tuple[float, float | None]:
    """Mean of a correlated series and its standard error from block averages.

    Parameters
    ----------
    values
        Time series.
    n_blocks
        Number of contiguous blocks (blocks should be longer than the correlation time).

    Returns
    -------
    tuple
        Mean and standard error (``None`` with fewer than two samples).
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("no samples to average")
    nb = min(n_blocks, x.size)
    if nb < 2:
        return float(x.mean()), None
    size = x.size // nb
    blocks = x[: nb * size].reshape(nb, size).mean(axis=1)
    return float(x.mean()), float(blocks.std(ddof=1) / np.sqrt(nb))


def thermo_averages(
    table: Mapping[str, np.ndarray], keys: Iterable[str] = AVERAGED, n_blocks: int = 5
) -> tuple[dict[str, float], dict[str, float | None]]:
    """Averages and standard errors of the thermo columns ``keys`` present in ``table``."""
    means: dict[str, float] = {}
    errors: dict[str, float | None] = {}
    for key in keys:
        if key in table and len(table[key]):
            means[key], errors[key] = block_average(table[key], n_blocks)
    return means, errors


def energy_drift(time_ps: np.ndarray, energy: np.ndarray, n_atoms: int) -> float | None:
    """Slope of a linear fit of an energy against time, in eV/atom/ps (``None`` if < 2 points)."""
    t, e = np.asarray(time_ps, dtype=float), np.asarray(energy, dtype=float)
    if t.size < 2 or np.ptp(t) == 0:
        return None
    return float(np.polyfit(t, e, 1)[0] / n_atoms)


DRIFT_FRACTION = 0.002
"""A change of the mean between the halves of a run's production larger than this fraction
of the mean flags the quantity as still drifting (or ringing slower than the run)."""


def half_difference(values: Sequence[float] | np.ndarray, n_blocks: int = 5) -> dict[str, Any]:
    """Whether a series still drifts: its second half's mean against its first half's.

    Parameters
    ----------
    values
        Time series (the production part of a run).
    n_blocks
        Blocks per half for the standard errors.

    Returns
    -------
    dict
        ``change`` (second minus first half), ``change_stderr`` (from the block errors of
        the halves), ``relative_change`` and ``drifting``: the change is larger than
        :data:`DRIFT_FRACTION` of the mean (``None`` with too few samples). A barostat
        still ringing over the production part moves its halves' means apart by more
        than that, an equilibrated solid's by less: 0.02-0.11 % for fcc Cu (108 atoms,
        300 K, 4 ps), 0.24 % for the same run started 3 % compressed with a 5 ps damping
        time and no equilibration.
    """
    x = np.asarray(values, dtype=float)
    half = x.size // 2
    if half < 2:
        return {"change": None, "change_stderr": None, "relative_change": None, "drifting": None}
    m1, e1 = block_average(x[:half], n_blocks)
    m2, e2 = block_average(x[half:], n_blocks)
    err = float(np.hypot(e1 or 0.0, e2 or 0.0))
    change = m2 - m1
    mean = float(x.mean())
    relative = change / mean if mean else None
    drifting = relative is not None and abs(relative) > DRIFT_FRACTION
    return {
        "change": float(change),
        "change_stderr": err,
        "relative_change": relative,
        "drifting": bool(drifting),
    }


def summarize_thermo(
    table: Mapping[str, np.ndarray], n_atoms: int, n_blocks: int = 5
) -> dict[str, Any]:
    """Production summary of an MD thermo table, in the layout of ``CalcResult.extra``.

    Parameters
    ----------
    table
        Columns of the production part (names as in :data:`AVERAGED`, plus ``time_ps``
        and ``conserved_energy_eV``).
    n_atoms
        Number of atoms.
    n_blocks
        Blocks for the standard errors.

    Returns
    -------
    dict
        ``averages`` and ``standard_errors`` of the :data:`AVERAGED` columns,
        ``n_samples``, ``energy_drift_eV_per_atom_ps`` (linear fit of the conserved
        energy), ``conserved_energy_max_deviation_eV_per_atom`` and, with a volume
        column, ``volume_relative_change`` (second half of the run against the first)
        and ``volume_drifting`` (:func:`half_difference`).
    """
    means, errors = thermo_averages(table, AVERAGED, n_blocks)
    conserved = np.asarray(table["conserved_energy_eV"], dtype=float)
    drift: dict[str, Any] = {}
    if "volume_A3" in table and len(table["volume_A3"]):
        half = half_difference(table["volume_A3"], n_blocks)
        drift = {
            "volume_relative_change": half["relative_change"],
            "volume_drifting": half["drifting"],
        }
    return {
        **drift,
        "averages": means,
        "standard_errors": errors,
        "n_samples": int(conserved.size),
        "energy_drift_eV_per_atom_ps": energy_drift(table["time_ps"], conserved, n_atoms),
        "conserved_energy_max_deviation_eV_per_atom": float(
            np.max(np.abs(conserved - conserved[0])) / n_atoms
        ),
    }


def load_frames(
    source: str | Path | Iterable[Atoms], index: str | int | slice = ":"
) -> list[Atoms]:
    """Frames of a trajectory file (any format ASE reads) or of an iterable of atoms."""
    if isinstance(source, str | Path):
        from ase.io import read

        frames = read(source, index=index)
        return frames if isinstance(frames, list) else [frames]
    return list(source)


def density(atoms: Atoms) -> float:
    """Mass density of ``atoms`` in g/cm³."""
    return float(atoms.get_masses().sum() / atoms.get_volume() * AMU_PER_A3_IN_G_PER_CM3)


def unwrapped_positions(frames: Sequence[Atoms]) -> np.ndarray:
    """Positions, shape ``(frames, atoms, 3)``, made continuous across periodic boundaries.

    Each displacement between consecutive frames is taken as the minimum image in
    fractional coordinates (so frames must be closer in time than it takes an atom to
    cross half the cell), which also handles a cell that changes (NPT).
    """
    scaled = np.array([f.get_scaled_positions(wrap=False) for f in frames])
    cells = np.array([np.asarray(f.cell) for f in frames])
    step = np.diff(scaled, axis=0)
    step -= np.round(step)
    continuous = np.concatenate([scaled[:1], scaled[:1] + np.cumsum(step, axis=0)])
    return np.einsum("fni,fij->fnj", continuous, cells)


@dataclass(frozen=True)
class MSD:
    """Mean-squared displacement (Å²) against lag time (ps)."""

    time_ps: np.ndarray
    msd: np.ndarray


def mean_squared_displacement(
    frames: Sequence[Atoms],
    frame_interval_ps: float,
    *,
    unwrap: bool = True,
    remove_com: bool = True,
    max_lag: int | None = None,
    indices: Sequence[int] | None = None,
) -> MSD:
    """MSD averaged over atoms and time origins.

    Parameters
    ----------
    frames
        Trajectory frames (same atoms in the same order).
    frame_interval_ps
        Time between consecutive frames.
    unwrap
        Unwrap positions with :func:`unwrapped_positions` (harmless for positions that are
        already unwrapped); ``False`` uses positions as stored.
    remove_com
        Subtract the centre-of-mass motion of the whole system.
    max_lag
        Largest lag in frames (default: half the trajectory, for enough time origins).
    indices
        Atoms to average over (default all).
    """
    if len(frames) < 2:
        raise ValueError("the MSD needs at least two frames")
    pos = unwrapped_positions(frames) if unwrap else np.array([f.positions for f in frames])
    if remove_com:
        m = frames[0].get_masses()
        pos = pos - (np.einsum("fni,n->fi", pos, m) / m.sum())[:, None, :]
    if indices is not None:
        pos = pos[:, list(indices)]
    n = len(pos)
    max_lag = min(max_lag or max(n // 2, 1), n - 1)
    msd = np.zeros(max_lag + 1)
    for lag in range(1, max_lag + 1):
        msd[lag] = np.mean(np.sum((pos[lag:] - pos[:-lag]) ** 2, axis=-1))
    return MSD(np.arange(max_lag + 1) * frame_interval_ps, msd)


@dataclass(frozen=True)
class DiffusionFit:
    """Diffusion coefficient D (Å²/ps, and cm²/s) from a fit MSD = 2·dim·D·t + c (Å²)."""

    diffusion: float
    diffusion_cm2_s: float
    intercept: float
    r2: float
    window_ps: tuple[float, float]


def diffusion_coefficient(
    msd: MSD, window_ps: tuple[float, float] | None = None, dim: int = 3
) -> DiffusionFit:
    """Einstein-relation diffusion coefficient.

    Parameters
    ----------
    msd
        From :func:`mean_squared_displacement`.
    window_ps
        Fit window (default: from 20 % of the longest lag to the longest lag, leaving out
        the ballistic start).
    dim
        Dimensionality of the motion.
    """
    t, y = msd.time_ps, msd.msd
    lo, hi = window_ps if window_ps is not None else (0.2 * t[-1], t[-1])
    sel = (t >= lo) & (t <= hi)
    if sel.sum() < 2:
        raise ValueError(f"fewer than two MSD points in the window {lo:g}-{hi:g} ps")
    slope, intercept = np.polyfit(t[sel], y[sel], 1)
    resid = y[sel] - (slope * t[sel] + intercept)
    total = np.sum((y[sel] - y[sel].mean()) ** 2)
    r2 = 1.0 - float(np.sum(resid**2) / total) if total > 0 else 0.0
    d = float(slope / (2 * dim))
    return DiffusionFit(d, d * A2_PER_PS_IN_CM2_PER_S, float(intercept), r2, (float(lo), float(hi)))


def radial_distribution(
    frames: Sequence[Atoms],
    r_max: float,
    n_bins: int = 200,
    pair: tuple[str, str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Radial distribution function g(r), averaged over frames (periodic images included).

    Parameters
    ----------
    frames
        Periodic frames; ``r_max`` may exceed half the cell (ASE neighbour lists).
    r_max
        Largest distance (Å).
    n_bins
        Number of bins on ``[0, r_max]``.
    pair
        Elements ``(A, B)`` for the partial g_AB(r) (neighbours B around A); default all.

    Returns
    -------
    tuple
        Bin centres (Å) and g(r).
    """
    edges = np.linspace(0.0, r_max, n_bins + 1)
    total = np.zeros(n_bins)
    for frame in frames:
        atoms = frame.copy()
        atoms.wrap()
        i, j, d = neighbor_list("ijd", atoms, r_max)
        symbols = np.array(atoms.get_chemical_symbols())
        n_a = n_b = len(atoms)
        if pair is not None:
            keep = (symbols[i] == pair[0]) & (symbols[j] == pair[1])
            d = d[keep]
            n_a, n_b = int(np.sum(symbols == pair[0])), int(np.sum(symbols == pair[1]))
            if n_a == 0 or n_b == 0:
                raise ValueError(f"no {pair[0]}-{pair[1]} pairs: element missing")
        counts, _ = np.histogram(d, edges)
        total += counts / (n_a * n_b / atoms.get_volume())
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    return 0.5 * (edges[1:] + edges[:-1]), total / len(frames) / shell


def first_peak(r: np.ndarray, g: np.ndarray) -> float:
    """Position of the first (nearest-neighbour) peak: the first local maximum above g = 1."""
    above = np.flatnonzero(g > 1.0)
    if above.size == 0:
        raise ValueError("g(r) never exceeds 1")
    start = above[0]
    end = start
    while end + 1 < len(g) and g[end + 1] >= g[end]:
        end += 1
    return float(r[end])


@dataclass(frozen=True)
class ThermalExpansion:
    """Fit V(T) = intercept + slope·T and α_V = slope/V(T_ref), α_L = α_V/3 (1/K) at T_ref (K)."""

    alpha_volume: float
    alpha_linear: float
    slope: float
    intercept: float
    reference_temperature: float
    reference_volume: float


def thermal_expansion(
    temperatures: Sequence[float],
    volumes: Sequence[float],
    reference_temperature: float | None = None,
) -> ThermalExpansion:
    """Volumetric and linear thermal-expansion coefficients from NPT volumes.

    Parameters
    ----------
    temperatures
        Temperatures (K) of the NPT runs (at least two distinct).
    volumes
        Mean volumes (any unit, e.g. Å³ or Å³/atom: the coefficients are ratios).
    reference_temperature
        Temperature at which α = (dV/dT)/V is evaluated (default: mean temperature).

    Returns
    -------
    ThermalExpansion
        α_V and α_L = α_V/3 (cubic or isotropic expansion).
    """
    t, v = np.asarray(temperatures, dtype=float), np.asarray(volumes, dtype=float)
    if t.size != v.size or np.unique(t).size < 2:
        raise ValueError("need volumes at two or more distinct temperatures")
    slope, intercept = np.polyfit(t, v, 1)
    t_ref = float(t.mean() if reference_temperature is None else reference_temperature)
    v_ref = float(intercept + slope * t_ref)
    alpha_v = float(slope / v_ref)
    return ThermalExpansion(alpha_v, alpha_v / 3, float(slope), float(intercept), t_ref, v_ref)


def thermal_expansion_from_results(results: Iterable[Any]) -> ThermalExpansion:
    """:func:`thermal_expansion` from NPT :class:`~matdx.schemas.results.CalcResult` objects.

    Uses the production averages ``extra["averages"]["temperature_K"]`` and
    ``["volume_A3"]`` divided by the number of atoms.
    """
    temps, vols = [], []
    for res in results:
        avg = res.extra["averages"]
        temps.append(avg["temperature_K"])
        vols.append(avg["volume_A3"] / len(res.structure["sites"]))
    return thermal_expansion(temps, vols)
