"""The ASE MD engine with EMT Cu: thermostats, barostat, instability handling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from matdx.analysis import md
from matdx.core.errors import EngineError, InputError
from matdx.engines.asemd.core import AseMdEngine

ENGINE = AseMdEngine()

CU = bulk("Cu", "fcc", a=3.61, cubic=True)


@pytest.mark.parametrize(
    ("ensemble", "initial"),
    [("langevin", 0.0), ("nvt", 600.0)],  # from a cold start / from a hot start
)
def test_thermostat_reaches_300k(ensemble: str, initial: float, tmp_path: Path) -> None:
    settings = {
        "supercell": 3,
        "ensemble": ensemble,
        "temperature": 300.0,
        "initial_temperature": initial,
        "timestep": 2.0,
        "friction": 0.02,
        "equilibration": 250,
        "steps": 400,
        "dump_interval": 50,
    }
    res = ENGINE.calculate(CU, "md", settings, workdir=tmp_path)
    avg, err = res.extra["averages"], res.extra["standard_errors"]
    assert avg["temperature_K"] == pytest.approx(300, rel=0.1)
    assert err["temperature_K"] < 20
    assert res.engine == "asemd" and res.corrections == [] and res.n_steps == 650
    assert res.extra["n_samples"] == 400 // 10 + 1
    frames = md.load_frames(res.extra["trajectory"])  # .traj in the workdir
    assert len(frames) == 400 // 50 + 1
    assert md.mean_squared_displacement(frames, 0.1).msd.max() < 0.1
    if ensemble == "nvt":  # Nose-Hoover chain: its conserved energy does not drift
        assert res.extra["conserved_energy_max_deviation_eV_per_atom"] < 1e-3


def test_npt_gives_positive_thermal_expansion(tmp_path: Path) -> None:
    results = []
    for temp in (200.0, 800.0):
        settings = {
            "supercell": 2,
            "ensemble": "npt",
            "temperature": temp,
            "initial_temperature": 2 * temp,
            "timestep": 2.0,
            "pdamp": 500.0,
            "equilibration": 300,
            "steps": 500,
            "dump_interval": 0,
        }
        results.append(ENGINE.calculate(CU, "md", settings, workdir=tmp_path / f"T{temp:g}"))
    v_cold, v_hot = (r.extra["averages"]["volume_A3"] / 32 for r in results)
    assert v_hot > v_cold * 1.02
    fit = md.thermal_expansion_from_results(results)
    assert 0.5e-5 < fit.alpha_linear < 5e-5  # Cu: 1.7e-5 /K (EMT: a few 1e-5)
    d_cold, d_hot = (r.extra["averages"]["density_g_cm3"] for r in results)
    assert d_hot < d_cold


def test_huge_timestep_is_halved_and_recorded(tmp_path: Path) -> None:
    settings = {
        "supercell": 2,
        "ensemble": "nvt",
        "temperature": 300.0,
        "timestep": 40.0,
        "steps": 200,
        "dump_interval": 0,
    }
    res = ENGINE.calculate(CU, "md", settings, workdir=tmp_path)
    assert len(res.corrections) >= 1
    first = res.corrections[0]
    assert first["handler"] == "UnstableIntegrationHandler"
    assert "at timestep 40 fs" in first["errors"][0]
    assert first["actions"][0]["action"]["_set"] == {"timestep": 20.0}
    assert res.parameters["timestep"] == 40.0 / 2 ** len(res.corrections)
    assert (tmp_path / "attempt.1" / "status.json").read_text().count("unstable") == 1
    assert res.n_steps == 200 and np.isfinite(res.energy)


def test_unstable_beyond_the_bound(tmp_path: Path) -> None:
    settings = {
        "supercell": 2,
        "ensemble": "nve",
        "initial_temperature": 300.0,
        "timestep": 400.0,
        "min_timestep": 100.0,
        "steps": 50,
    }
    with pytest.raises(EngineError, match=r"^ASE MD still unstable .* 2 timestep halving"):
        ENGINE.calculate(CU, "md", settings, workdir=tmp_path)


def test_bad_input() -> None:
    with pytest.raises(EngineError, match=r"^EMT has no parameters for Fe$"):
        ENGINE.calculate(bulk("Fe", "bcc", a=2.87), "md")
    with pytest.raises(EngineError, match="unknown ensemble 'npht'"):
        ENGINE.calculate(CU, "md", {"ensemble": "npht"})
    with pytest.raises(EngineError, match="unknown ASE MD setting"):
        ENGINE.calculate(CU, "md", {"temprature": 300})
    with pytest.raises(InputError, match=r"^engine 'asemd' has no task 'phonons' \(it has: md"):
        ENGINE.calculate(CU, "phonons")


def test_relax_and_static_share_the_result_schema() -> None:
    relaxed = ENGINE.calculate(
        bulk("Cu", "fcc", a=3.7), "relax", {"relax_cell": True, "fmax": 0.01}
    )
    static = ENGINE.calculate(CU, "static", {"supercell": 2})
    assert relaxed.converged and relaxed.spacegroup_symbol == "Fm-3m"
    assert static.energy_per_atom == pytest.approx(
        ENGINE.calculate(CU, "static").energy_per_atom, abs=1e-9
    )
