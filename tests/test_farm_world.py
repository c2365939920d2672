"""The farm refuses to start when MPI sees another number of ranks than the job launched.

Real mismatches: MPICH's mpiexec starting 2 ranks of a job that launched 3, and 2 processes
started without an MPI launcher (each a world of one), as a launcher of another MPI than
mpi4py's would start them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from matdx.core.errors import InputError
from matdx.execution.farm import check_world_size

MPIEXEC = Path(sys.executable).parent / "mpiexec"
FARM = [sys.executable, "-m", "matdx.cli.main", "farm", "no-such-campaign", "--walltime", "60"]


def run(argv: list[str], ranks: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MATDX_FARM_RANKS=ranks, MATDX_DATA_DIR=str(tmp_path))
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)


def test_check_world_size():
    check_world_size(4, {"MATDX_FARM_RANKS": "4"})
    check_world_size(4, {})  # not launched by a matdx job script: nothing to compare
    with pytest.raises(InputError, match=r"MPI sees 1 rank\(s\) but the job launched 4"):
        check_world_size(1, {"MATDX_FARM_RANKS": "4"})


@pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec beside this Python")
def test_fewer_ranks_than_launched(tmp_path):
    proc = run([str(MPIEXEC), "-n", "2", *FARM], "3", tmp_path)
    assert proc.returncode != 0
    # one line from each rank (two ranks' lines may interleave in the shared stderr pipe)
    assert proc.stderr.count("error: farm: MPI sees 2 rank(s) but the job launched 3") == 2


def test_processes_without_mpi_launcher_each_alone(tmp_path):
    procs = [
        subprocess.Popen(FARM, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, MATDX_FARM_RANKS="2", MATDX_DATA_DIR=str(tmp_path)))
        for _ in range(2)
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode != 0 and out == ""
        assert err.strip().splitlines() == [
            "error: farm: MPI sees 1 rank(s) but the job launched 2 (MATDX_FARM_RANKS): the "
            "launcher does not belong to the MPI of this Python's mpi4py; set the profile's "
            "farm_launcher to that MPI's mpiexec"
        ]
