"""``matdx doctor``: one line per check, with a fix for each failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def doctor(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ}
    env.pop("MATDX_DB_URI", None)
    return subprocess.run([sys.executable, "-m", "matdx.cli.main", "doctor", *args],
                          capture_output=True, text=True, timeout=300, env=env)


def lines(out: str) -> dict[str, str]:
    rows = {}
    for ln in out.splitlines():
        parts = ln.split(None, 2)
        if len(parts) == 3 and parts[0] in ("ok", "FAIL", "skip"):
            rows[parts[1]] = f"{parts[0]} {parts[2]}"
    return rows


@pytest.mark.ferretdb
def test_this_machine_passes_every_check(ferret_base):
    out = doctor("--db", ferret_base + "t_doctor", "--profile",
                 str(ROOT / "hpc_profiles" / "ci_slurm.yaml"))
    rows = lines(out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("database", "mpi", "profile", "emt", "quantum-espresso", "lammps"):
        assert rows[name].startswith("ok"), rows
    assert "FerretDB" in rows["database"]
    assert "PWSCF v.6.7" in rows["quantum-espresso"] and "LAMMPS 29 Sep 2021" in rows["lammps"]


def test_failures_name_a_fix_and_exit_non_zero(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "hpc_profiles" / "fugaku.yaml").read_text().replace(
        "ranks_per_node: 4", "ranks_per_node: 40"))
    out = doctor("--db", "mongodb://alice:pw@127.0.0.1:9/x?serverSelectionTimeoutMS=500",
                 "--profile", str(bad))
    rows = lines(out.stdout)
    assert out.returncode == 1
    assert rows["database"].startswith("FAIL") and "fix:" in rows["database"]
    assert "alice:***@" in rows["database"] and "pw@" not in out.stdout
    assert rows["profile"].startswith("FAIL") and "ranks" in rows["profile"]
    assert "Traceback" not in out.stderr


def test_on_a_pjm_compute_node_it_wants_fujitsu_mpi_and_the_data_volume_cached(tmp_path):
    """As in a Fugaku job: PJM_JOBID and PJM_LLIO_GFSCACHE set, this machine's MPICH."""
    data = yaml.safe_load((ROOT / "hpc_profiles" / "fugaku.yaml").read_text())
    data["pjm"]["llio"]["volume_pattern"] = "^/tmp$"  # /tmp stands for a /vol000N volume
    profile = tmp_path / "fugaku.yaml"
    profile.write_text(yaml.safe_dump(data))
    env = {**os.environ, "PJM_JOBID": "4242", "PJM_LLIO_GFSCACHE": "/vol0004",
           "MATDX_DATA_DIR": str(tmp_path / "data")}
    env.pop("MATDX_DB_URI", None)
    out = subprocess.run([sys.executable, "-m", "matdx.cli.main", "doctor", "--profile",
                          str(profile)], capture_output=True, text=True, timeout=300, env=env)
    rows = lines(out.stdout)
    assert out.returncode == 1
    assert rows["mpi-library"].startswith("FAIL in PJM job 4242, mpi4py uses MPICH")
    assert "not Fujitsu MPI" in rows["mpi-library"]
    assert rows["llio"].startswith(f"FAIL data directory {tmp_path / 'data'} is on /tmp, not in "
                                   "PJM_LLIO_GFSCACHE=/vol0004")
    env["PJM_LLIO_GFSCACHE"] = "/vol0004:/tmp"
    out = subprocess.run([sys.executable, "-m", "matdx.cli.main", "doctor", "--profile",
                          str(profile)], capture_output=True, text=True, timeout=300, env=env)
    assert lines(out.stdout)["llio"] == f"ok data directory {tmp_path / 'data'} is on /tmp, cached"
