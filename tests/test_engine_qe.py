"""Quantum ESPRESSO engine against the real pw.x (Debian's 6.7, ``/usr/bin/mpirun``).

Small cutoffs, meshes and the norm-conserving ``Si.pbe-rrkj.UPF`` keep the runs short where
accuracy is not the point; most runs use one MPI rank (the machine's two cores are shared),
the comparison with a direct pw.x run and the killed run use the default two-rank profile.
Every failure that a handler corrects is a real failure of pw.x.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from ase.eos import EquationOfState
from ase.io.espresso import units as qe_units
from pymatgen.core import Lattice, Structure

from matdx.core.errors import EngineError, InputError
from matdx.engines.base import EngineProfile
from matdx.engines.qe.core import QeEngine, default_profile
from matdx.engines.qe.inputs import build_parameters, kpoint_mesh, write_input
from matdx.engines.qe.parse import last_structure, read_output


def calculate(
    structure, task, settings=None, workdir=None, profile=None, max_corrections=5, deadline=None
):
    """The pw.x engine's ``calculate`` with ``profile`` (default: this machine's)."""
    engine = QeEngine(profile, max_corrections)
    return engine.calculate(structure, task, settings, workdir, deadline)


PSEUDO_DIR = Path("/usr/share/espresso/pseudo")
NC = {"pseudopotentials": {"Si": "Si.pbe-rrkj.UPF"}}
FAST = {"ecutwfc": 16, "kpts": [4, 4, 4], **NC}
"""Cheap Si settings: 16 Ry, 4×4×4, norm-conserving."""
DENSE = {"ecutwfc": 24, "kpts": [8, 8, 8], "conv_thr": 1e-11, "mixing_beta": 0.3, **NC}
"""Si settings for runs that must last a few seconds (walltime, killed)."""


@pytest.fixture(scope="module", autouse=True)
def _pw_x() -> None:
    if shutil.which("pw.x") is None or not Path("/usr/bin/mpirun").is_file():
        pytest.fail("pw.x and /usr/bin/mpirun are needed (Debian: quantum-espresso, openmpi-bin)")
    os.environ["OMP_NUM_THREADS"] = "1"


def one_rank() -> EngineProfile:
    return dataclasses.replace(
        default_profile(), command=("/usr/bin/mpirun", "--allow-run-as-root", "-np", "1", "pw.x")
    )


def silicon(a: float = 5.47, second: tuple[float, float, float] = (0.25, 0.25, 0.25)) -> Structure:
    lattice = Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])
    return Structure(lattice, ["Si", "Si"], [[0, 0, 0], list(second)])


def cubic_a(structure: dict) -> float:
    return float((4 * Structure.from_dict(structure).volume) ** (1 / 3))


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text and text.strip() == text and text
    return text


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    """Si SCF with FAST settings on one rank, kept in a work directory."""
    workdir = tmp_path_factory.mktemp("qe-fast")
    return calculate(silicon(), "static", FAST, workdir=workdir, profile=one_rank()), workdir


@pytest.fixture(scope="module")
def dense_reference() -> object:
    """Si SCF with DENSE settings on one rank, uninterrupted."""
    return calculate(silicon(), "static", DENSE, profile=one_rank())


# --- 1. the engine gives what pw.x gives ----------------------------------------------


def test_scf_matches_direct_pw_run(tmp_path: Path) -> None:
    result = calculate(silicon(), "static", FAST, workdir=tmp_path / "engine")

    direct = tmp_path / "direct"
    direct.mkdir()
    profile = default_profile()
    params = build_parameters(
        silicon(), "scf", FAST, profile.data["pseudo_dir"], profile.data["pseudo_family"]
    )
    write_input(params, direct / "pw.in")
    assert (direct / "pw.in").read_text() == (tmp_path / "engine" / "pw.in").read_text()
    run = subprocess.run(
        ["/usr/bin/mpirun", "--allow-run-as-root", "-np", "2", "pw.x", "-in", "pw.in"],
        cwd=direct,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=True,
    )
    ry = re.findall(r"^!\s+total energy\s+=\s+(-?\d+\.\d+) Ry", run.stdout, re.M)
    assert len(ry) == 1
    assert result.energy == pytest.approx(float(ry[0]) * qe_units["Ry"], abs=1e-6)
    # the engine splits the k-points over its two ranks (pw.x's -nk), the direct run the
    # plane waves: the same energy
    engine_out = (tmp_path / "engine" / "pw.out").read_text()
    assert re.search(r"K-points division:\s+npool\s+=\s+2$", engine_out, re.M)
    assert "K-points division" not in run.stdout

    assert result.engine == "qe" and result.task == "static" and result.converged
    assert result.corrections == []
    assert result.parameters["command"][-4:] == ["-nk", "2", "-in", "pw.in"]
    assert result.parameters["command"][:5] == [
        "/usr/bin/mpirun",
        "--allow-run-as-root",
        "-np",
        "2",
        "pw.x",
    ]
    assert re.match(r"\d+\.\d+", result.code_version)
    assert -108.0 < result.energy_per_atom < -106.0
    assert np.shape(result.forces) == (2, 3) and np.abs(result.forces).max() < 1e-3
    assert len(result.stress) == 6 and result.stress[3:] == pytest.approx([0, 0, 0], abs=1e-6)
    assert result.spacegroup_number == 227
    assert result.volume_per_atom == pytest.approx(5.47**3 / 8, rel=1e-5)
    assert 0.3 < result.band_gap < 1.2 and result.extra["is_metal"] is False
    pseudo = result.parameters["pseudo"]
    assert pseudo["family"] == "debian" and pseudo["functional"] == "PBE"
    md5 = hashlib.md5((PSEUDO_DIR / "Si.pbe-rrkj.UPF").read_bytes()).hexdigest()
    assert pseudo["files"] == {"Si": {"file": "Si.pbe-rrkj.UPF", "md5": md5}}


def test_metal_has_no_gap() -> None:
    a = 4.05
    al = Structure(
        Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), ["Al"], [[0, 0, 0]]
    )
    result = calculate(al, "static", {"ecutwfc": 15, "kpts": [6, 6, 6]}, profile=one_rank())
    assert result.converged and result.band_gap is None and result.extra["is_metal"] is True
    assert result.parameters["pseudo"]["functional"] == "LDA"  # Debian has Al in LDA only
    assert result.parameters["input_data"]["system"]["smearing"] == "mv"


def test_default_inputs_from_the_pseudopotentials() -> None:
    params = build_parameters(silicon(), "vc-relax", {"max_seconds": 600})
    assert params["pseudopotentials"] == {"Si": "Si.pbe-nl-rrkjus_psl.1.0.0.UPF"}  # PBE, pslibrary
    system = params["input_data"]["system"]
    assert (system["ecutwfc"], system["ecutrho"]) == (44.0, 176.0)  # the file's suggestion
    # the default protocol, "moderate": Marzari-Vanderbilt 0.02 Ry, 0.15 Å⁻¹
    assert (system["occupations"], system["smearing"], system["degauss"]) == (
        "smearing",
        "mv",
        0.02,
    )
    control = params["input_data"]["control"]
    assert control["calculation"] == "vc-relax" and control["max_seconds"] == 600
    assert control["tprnfor"] and control["tstress"]
    # |b| = 2π√3/a = 1.990 Å⁻¹ → ceil(1.990 / 0.15) = 14
    assert params["kpts"] == [14, 14, 14] == kpoint_mesh(silicon().lattice, 0.15)
    assert "nspin" not in system  # no magnetic element, no moments given: no spin
    fixed = build_parameters(silicon(), "scf", {"occupations": "fixed"})["input_data"]["system"]
    assert "smearing" not in fixed and fixed["nbnd"] == 8  # 4 occupied + 4 empty
    assert "Si" in QeEngine().supported_elements() and "Na" not in QeEngine().supported_elements()


def test_protocols_set_mesh_smearing_and_cutoffs() -> None:
    fast = build_parameters(silicon(), "scf", {"protocol": "fast"})
    precise = build_parameters(silicon(), "scf", {"protocol": "precise"})
    assert fast["kpts"] == [7, 7, 7] and precise["kpts"] == [20, 20, 20]
    assert fast["input_data"]["system"]["degauss"] == 0.02
    assert precise["input_data"]["system"]["degauss"] == 0.01
    # precise: the file's suggested cutoffs (44/176 Ry) × 1.25
    assert (precise["input_data"]["system"]["ecutwfc"], precise["input_data"]["system"]["ecutrho"]) == (55.0, 220.0)
    # explicit settings win over the protocol's
    mine = build_parameters(silicon(), "scf", {"protocol": "fast", "kspacing": 0.5, "degauss": 0.005})
    assert mine["kpts"] == [4, 4, 4] and mine["input_data"]["system"]["degauss"] == 0.005
    with pytest.raises(InputError, match=r"unknown pw\.x protocol 'sloppy'"):
        build_parameters(silicon(), "scf", {"protocol": "sloppy"})


def test_fcc_nickel_is_magnetic_by_default(tmp_path: Path) -> None:
    """The Materials Project's initial moment (5 μB for Ni) without any setting; fcc Ni
    ends near its measured 0.6 μB (LDA ultrasoft, experimental a = 3.52 Å)."""
    ni = Structure(Lattice([[0, 1.76, 1.76], [1.76, 0, 1.76], [1.76, 1.76, 0]]), ["Ni"], [[0, 0, 0]])
    settings = {"protocol": "fast", "pseudopotentials": {"Ni": "Ni.pz-nd-rrkjus.UPF"}}
    params = build_parameters(ni, "scf", settings)
    assert params["input_data"]["system"]["nspin"] == 2
    assert params["starting_magnetization"] == [pytest.approx(0.5)]  # 5 μB / 10 electrons
    result = calculate(ni, "static", settings, workdir=tmp_path, profile=one_rank())
    assert 0.55 < result.extra["total_magnetization"] < 0.7
    assert result.magmoms is not None and 0.5 < result.magmoms[0] < 0.75
    # and without spin on request
    off = build_parameters(ni, "scf", {**settings, "spin_polarized": False})
    assert "nspin" not in off["input_data"]["system"]


# --- 2. vc-relax ----------------------------------------------------------------------


def test_vc_relax_returns_to_equilibrium_lattice_constant() -> None:
    settings = {"ecutwfc": 24, "kpts": [4, 4, 4], **NC}
    scan = [
        calculate(silicon(a), "static", settings, profile=one_rank())
        for a in np.linspace(5.39, 5.59, 5)
    ]
    volumes = [r.volume_per_atom * 2 for r in scan]
    v0, _, _ = EquationOfState(volumes, [r.energy for r in scan], eos="birchmurnaghan").fit()
    a_ref = (4 * v0) ** (1 / 3)
    assert 5.40 < a_ref < 5.58  # inside the scan

    strained = silicon(1.03 * a_ref)
    result = calculate(strained, "vc-relax", settings, profile=one_rank())
    a_relaxed = cubic_a(result.structure)
    print(f"E(V) a0 = {a_ref:.4f} Å, vc-relax from {1.03 * a_ref:.4f} Å → {a_relaxed:.4f} Å")
    assert abs(a_relaxed - a_ref) / a_ref < 0.005
    assert result.task == "vc-relax" and result.converged and result.n_steps > 1
    assert result.spacegroup_number == 227
    assert abs(np.mean(result.stress[:3])) < 1e-3  # < 0.16 GPa


# --- 3. handlers, each provoked by a real failure -------------------------------------


def test_scf_not_converged_is_corrected(fast_run: tuple) -> None:
    reference, _ = fast_run
    result = calculate(silicon(), "static", {**FAST, "electron_maxstep": 2}, profile=one_rank())
    assert [c["handler"] for c in result.corrections] == ["ScfConvergenceHandler"]
    assert result.corrections[0]["errors"] == ["SCF not converged (electron_maxstep reached)"]
    changes = result.corrections[0]["actions"][0]["action"]["_set"]
    assert changes["input_data->electrons->electron_maxstep"] == 100
    assert changes["input_data->electrons->mixing_beta"] == 0.35
    assert result.parameters["input_data"]["electrons"]["mixing_beta"] == 0.35
    assert result.parameters["input_data_initial"]["electrons"]["electron_maxstep"] == 2
    assert result.converged and result.energy == pytest.approx(reference.energy, abs=1e-5)


def test_relaxation_out_of_steps_restarts_from_last_geometry(tmp_path: Path) -> None:
    start = silicon(second=(0.27, 0.25, 0.24))
    result = calculate(start, "relax", {**FAST, "nstep": 1}, workdir=tmp_path, profile=one_rank())
    assert [c["handler"] for c in result.corrections] == ["RelaxStepsHandler"]
    changes = result.corrections[0]["actions"][0]["action"]["_set"]
    after_one_step = last_structure((tmp_path / "pw.out.1").read_text())
    restarted = Structure.from_dict(changes["structure"])
    assert np.allclose(restarted.cart_coords, after_one_step.cart_coords)
    assert not np.allclose(restarted.cart_coords, start.cart_coords, atol=1e-3)
    assert changes["input_data->control->nstep"] == 50
    first = read_output(tmp_path / "pw.out.1")
    assert first.relax_converged is False
    assert result.converged and result.task == "relax" and result.n_steps > 1
    assert result.energy < first.energy
    assert np.abs(result.forces).max() < 0.026  # forc_conv_thr 1e-3 Ry/bohr


def test_walltime_stop_is_restarted_from_restart_files(tmp_path: Path, dense_reference) -> None:
    limit = round(max(1.0, 0.6 * dense_reference.extra["pw_wall_time_s"]), 1)
    result = calculate(
        silicon(),
        "static",
        {**DENSE, "max_seconds": limit},
        workdir=tmp_path,
        profile=one_rank(),
        max_corrections=8,
    )
    handlers = {c["handler"] for c in result.corrections}
    assert handlers == {"WalltimeHandler"}
    assert result.corrections[0]["actions"][0]["action"]["_set"] == {
        "input_data->control->restart_mode": "restart"
    }
    assert "Maximum CPU time exceeded" in (tmp_path / "pw.out.1").read_text()
    assert "Calculation restarted from" in (tmp_path / "pw.out").read_text()
    assert result.converged
    assert result.energy == pytest.approx(dense_reference.energy, abs=1e-5)


def _pw_processes(workdir: Path) -> list[int]:
    """Our pw.x processes: those running in ``workdir``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().strip() == "pw.x" and os.readlink(
                    proc / "cwd"
                ) == str(workdir):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def test_killed_run_is_retried_with_fewer_ranks(tmp_path: Path, dense_reference) -> None:
    workdir = tmp_path.resolve()
    killed: list[int] = []

    def kill_first_run() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            out = workdir / "pw.out"
            if out.exists() and "iteration #  1" in out.read_text(errors="replace"):
                for pid in _pw_processes(workdir)[:1]:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.05)

    thread = threading.Thread(target=kill_first_run, daemon=True)
    thread.start()
    result = calculate(silicon(), "static", DENSE, workdir=workdir)  # default profile: 2 ranks
    thread.join(timeout=5)
    assert killed, "the first pw.x run ended before it could be killed"
    assert [c["handler"] for c in result.corrections] == ["KilledHandler"]
    assert "signal 9" in result.corrections[0]["errors"][0]
    assert result.corrections[0]["actions"][0]["action"]["_set"]["mpi_ranks"] == 1
    # one rank left: no k-point pools (pools follow the ranks)
    assert result.parameters["command"][-3:] == ["pw.x", "-in", "pw.in"]
    assert result.parameters["command"][:5] == [
        "/usr/bin/mpirun",
        "--allow-run-as-root",
        "-np",
        "1",
        "pw.x",
    ]
    assert "JOB DONE" not in (workdir / "pw.out.1").read_text()
    assert result.converged
    assert result.energy == pytest.approx(dense_reference.energy, abs=1e-5)


def test_unrecoverable_run_gives_one_line_error() -> None:
    with pytest.raises(EngineError) as exc:
        calculate(
            silicon(),
            "static",
            {**FAST, "electron_maxstep": 1},
            profile=one_rank(),
            max_corrections=1,
        )
    assert one_line(exc).startswith("pw.x failed: SCF not converged (electron_maxstep reached)")


# --- 4. bad input ---------------------------------------------------------------------


def test_missing_pseudopotential(tmp_path: Path) -> None:
    nacl = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    with pytest.raises(EngineError) as exc:
        calculate(nacl, "static", workdir=tmp_path / "run")
    assert (
        one_line(exc)
        == "no pseudopotential for Cl, Na in family debian (/usr/share/espresso/pseudo)"
    )
    assert not (tmp_path / "run").exists()  # nothing ran
    with pytest.raises(EngineError) as exc:
        calculate(silicon(), "static", {"pseudopotentials": {"Si": "Si.missing.UPF"}})
    assert "Si.missing.UPF" in one_line(exc)


def test_missing_executable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bogus = EngineProfile.from_text("/usr/bin/mpirun --allow-run-as-root -np 1 /nonexistent/pw.x")
    with pytest.raises(EngineError) as exc:
        calculate(silicon(), "static", FAST, workdir=tmp_path / "a", profile=bogus)
    assert one_line(exc) == "executable '/nonexistent/pw.x' not found"
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("MATDX_QE_COMMAND", "pw.x")
    with pytest.raises(EngineError) as exc:
        calculate(silicon(), "static", FAST, workdir=tmp_path / "b")
    assert one_line(exc) == "executable 'pw.x' not found"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_pw_error_message_is_reported() -> None:
    with pytest.raises(EngineError) as exc:
        calculate(silicon(), "static", {**FAST, "input_dft": "nonsense"}, profile=one_rank())
    assert re.search(r"pw\.x error in routine \S+ \(\d+\): .+", one_line(exc))


def test_bad_settings() -> None:
    with pytest.raises(InputError, match=r"^engine 'qe' has no task 'md' \(it has: relax"):
        calculate(silicon(), "md", FAST)
    with pytest.raises(InputError, match=r"unknown pw\.x setting.*ecutwfcc"):
        calculate(silicon(), "static", {"ecutwfcc": 20})
    with pytest.raises(InputError, match="ecutrho"):
        calculate(silicon(), "static", {"ecutwfc": 20, "ecutrho": 40})


def _damage(text: str, how: str) -> str:
    if how == "empty":
        return ""
    if how == "truncated":
        return text[: len(text) // 2]
    if how == "corrupt":  # a garbled number in the final energy
        return re.sub(r"(!\s+total energy\s+=\s+)-(\d+)\.", r"\1-2#@.", text)
    if how == "corrupt-forces":
        return re.sub(r"(atom\s+1\s+type\s+1\s+force\s+=\s+)\S+", r"\g<1>1.0E+*x", text)
    if how == "not-pw":
        return "&CONTROL\n calculation = 'scf'\n/\n"
    raise ValueError(how)


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("empty", "empty pw.x output"),
        ("truncated", "truncated pw.x output"),
        ("corrupt", "corrupt pw.x output"),
        ("corrupt-forces", "corrupt pw.x output"),
        ("not-pw", "is not pw.x output"),
    ],
)
def test_parser_rejects_damaged_output(
    tmp_path: Path, fast_run: tuple, how: str, reason: str
) -> None:
    _, workdir = fast_run
    good = (workdir / "pw.out").read_text()
    assert read_output(workdir / "pw.out").energy == pytest.approx(fast_run[0].energy, abs=1e-9)
    damaged = tmp_path / "pw.out"
    damaged.write_text(_damage(good, how))
    assert damaged.read_text() != good
    with pytest.raises(EngineError) as exc:
        read_output(damaged)
    assert reason in one_line(exc)


def test_parser_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EngineError) as exc:
        read_output(tmp_path / "none.out")
    assert one_line(exc).startswith("cannot read pw.x output")


def test_k_point_pools_follow_ranks_and_irreducible_k_points() -> None:
    from matdx.engines.qe.inputs import pools

    fcc = Structure(Lattice.cubic(3.61), ["Cu"] * 4,
                    [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]]).get_primitive_structure()
    p = build_parameters(fcc, "static", {"kpts": [16, 16, 16]}, str(PSEUDO_DIR), "debian")
    # 145 irreducible k-points (pw.x prints the same number): one pool per rank
    assert [pools(p, r) for r in (None, 1, 2, 4, 48)] == [1, 1, 2, 4, 48]
    gamma = build_parameters(fcc, "static", {"kpts": [1, 1, 1]}, str(PSEUDO_DIR), "debian")
    assert pools(gamma, 4) == 1  # one k-point: the plane waves are split
    two = build_parameters(fcc, "static", {"kpts": [2, 1, 1]}, str(PSEUDO_DIR), "debian")
    assert pools(two, 4) == 2 and pools(two, 3) == 1  # a divisor of the ranks
    asked = build_parameters(fcc, "static", {"kpts": [16, 16, 16], "pools": 4},
                             str(PSEUDO_DIR), "debian")
    assert pools(asked, 48) == 4 and pools(asked, 6) == 3 and pools(asked, 2) == 2
    for bad in (0, 2.5, True, "2"):
        with pytest.raises(InputError, match="pools"):
            build_parameters(fcc, "static", {"pools": bad}, str(PSEUDO_DIR), "debian")
