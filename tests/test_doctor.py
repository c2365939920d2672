"""``matdx doctor``: one line per check, with a fix for each failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
