"""MD analysis on frames with known answers: perfect crystals, random walks, EMT Cu."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet

from matdx.analysis import md

A_CU = 3.615


def test_rdf_of_perfect_fcc_peaks_at_a_over_sqrt2() -> None:
    atoms = bulk("Cu", "fcc", a=A_CU, cubic=True).repeat(2)  # 7.23 Å box, r_max beyond L/2
    r, g = md.radial_distribution([atoms], r_max=6.0, n_bins=300)
    dr = r[1] - r[0]
    assert md.first_peak(r, g) == pytest.approx(A_CU / np.sqrt(2), abs=dr)
    assert np.all(g[r < 0.95 * A_CU / np.sqrt(2)] == 0)
    # coordination shells 12, 6, 24: integrate ρ g(r) over spherical shells
    rho = len(atoms) / atoms.get_volume()
    edges = np.append(r - dr / 2, r[-1] + dr / 2)
    cn = np.cumsum(rho * g * 4 / 3 * np.pi * np.diff(edges**3))
    assert cn[np.searchsorted(r, 3.0)] == pytest.approx(12, abs=1e-6)
    assert cn[np.searchsorted(r, 4.0)] == pytest.approx(18, abs=1e-6)
    assert cn[np.searchsorted(r, 4.8)] == pytest.approx(42, abs=1e-6)


def test_partial_rdf_of_l12_cu3au() -> None:
    a = 3.75
    atoms = Atoms(
        "AuCu3",
        scaled_positions=[(0, 0, 0), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)],
        cell=[a] * 3,
        pbc=True,
    ).repeat(3)
    r, g = md.radial_distribution([atoms], r_max=4.5, n_bins=225, pair=("Au", "Cu"))
    assert md.first_peak(r, g) == pytest.approx(a / np.sqrt(2), abs=r[1] - r[0])
    r, g = md.radial_distribution([atoms], r_max=4.5, n_bins=225, pair=("Au", "Au"))
    assert md.first_peak(r, g) == pytest.approx(a, abs=r[1] - r[0])  # no Au-Au at a/√2


def _random_walk(d_true: float, dt: float, n_frames: int, n_atoms: int, box: float) -> list[Atoms]:
    rng = np.random.default_rng(7)
    steps = rng.normal(0.0, np.sqrt(2 * d_true * dt), size=(n_frames - 1, n_atoms, 3))
    start = rng.uniform(0, box, size=(1, n_atoms, 3))
    pos = np.concatenate([start, start + np.cumsum(steps, axis=0)])
    frames = []
    for p in pos:
        atoms = Atoms(f"Ar{n_atoms}", positions=p, cell=[box] * 3, pbc=True)
        atoms.wrap()  # stored wrapped, as a code that wraps would write them
        frames.append(atoms)
    return frames


def test_random_walk_gives_its_diffusion_coefficient() -> None:
    d_true, dt = 0.05, 0.1  # Å²/ps, ps between frames
    frames = _random_walk(d_true, dt, n_frames=300, n_atoms=800, box=20.0)
    msd = md.mean_squared_displacement(frames, dt)
    fit = md.diffusion_coefficient(msd)
    assert fit.diffusion == pytest.approx(d_true, rel=0.05)
    assert fit.diffusion_cm2_s == pytest.approx(d_true * 1e-4, rel=0.05)
    assert fit.r2 > 0.99
    # without unwrapping, the wrapped positions jump across the box: a wrong, huge MSD
    wrong = md.mean_squared_displacement(frames, dt, unwrap=False)
    assert wrong.msd[-1] > 10 * msd.msd[-1]


def test_window_and_errors() -> None:
    frames = _random_walk(0.05, 0.1, n_frames=50, n_atoms=200, box=15.0)
    msd = md.mean_squared_displacement(frames, 0.1, max_lag=20)
    assert len(msd.time_ps) == 21
    fit = md.diffusion_coefficient(msd, window_ps=(0.5, 2.0))
    assert fit.window_ps == (0.5, 2.0)
    with pytest.raises(ValueError, match="fewer than two"):
        md.diffusion_coefficient(msd, window_ps=(10.0, 20.0))
    with pytest.raises(ValueError, match="two frames"):
        md.mean_squared_displacement(frames[:1], 0.1)


def test_msd_of_emt_solid_is_bounded(tmp_path) -> None:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.calc = EMT()
    thermalize_momenta(atoms, 600, exact_temperature=True, rng=np.random.default_rng(1))
    Stationary(atoms)
    dyn = VelocityVerlet(atoms, 5 * units.fs)
    frames: list[Atoms] = []
    dyn.attach(lambda: frames.append(atoms.copy()), interval=10)
    dyn.run(400)
    path = tmp_path / "solid.traj"
    write(path, frames)
    loaded = md.load_frames(path)  # from the file, as for an engine trajectory
    msd = md.mean_squared_displacement(loaded, 10 * 5e-3)
    fit = md.diffusion_coefficient(msd)
    assert msd.msd.max() < 0.1  # vibrations only: <u²> ~ 0.02 Å² at ~300 K
    assert abs(fit.diffusion) < 2e-3  # Å²/ps, i.e. < 2e-7 cm²/s: no diffusion
    r, g = md.radial_distribution(loaded[::5], r_max=4.0, n_bins=100)
    assert md.first_peak(r, g) == pytest.approx(3.61 / np.sqrt(2), abs=0.1)


def test_density_and_thermal_expansion() -> None:
    cu = bulk("Cu", "fcc", a=A_CU, cubic=True)
    assert md.density(cu) == pytest.approx(8.935, abs=1e-3)  # 4·63.546 u / 3.615³ Å³
    alpha_v, v0 = 5e-5, 11.8
    temps = np.array([100.0, 300.0, 500.0, 700.0])
    vols = v0 * (1 + alpha_v * (temps - 300.0))
    fit = md.thermal_expansion(temps, vols, reference_temperature=300.0)
    assert fit.alpha_volume == pytest.approx(alpha_v, rel=1e-9)
    assert fit.alpha_linear == pytest.approx(alpha_v / 3, rel=1e-9)
    assert fit.reference_volume == pytest.approx(v0)
    with pytest.raises(ValueError, match="two or more distinct"):
        md.thermal_expansion([300.0, 300.0], [1.0, 1.1])


def test_block_average_and_drift() -> None:
    rng = np.random.default_rng(3)
    x = 5.0 + rng.normal(0, 1.0, 10_000)
    mean, sem = md.block_average(x, n_blocks=10)
    assert mean == pytest.approx(5.0, abs=0.05)
    assert sem == pytest.approx(0.01, rel=0.6)
    assert md.block_average([1.0]) == (1.0, None)
    t = np.linspace(0, 10, 101)
    assert md.energy_drift(t, -100 + 0.02 * t, n_atoms=10) == pytest.approx(0.002)
    assert md.energy_drift(t[:1], t[:1], 10) is None
