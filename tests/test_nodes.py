"""The compute nodes' environment: matdx's Python on nodes of another architecture.

Fugaku's login nodes are x86-64 and its compute nodes aarch64: a job must not run the
submitting host's Python there. The profile says what runs instead (``compute_env``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from matdx.core.errors import InputError
from matdx.execution.submit import farm_launch_argv
from matdx.schedulers import scheduler_for
from matdx.sites import JobRequest, load_profile, resolve_job
from matdx.sites.nodes import ambiguous_spack_specs, check_job_text, node_env

ROOT = Path(__file__).resolve().parents[1]
FUGAKU = ROOT / "hpc_profiles" / "fugaku.yaml"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "matdx.cli.main", *args], capture_output=True, text=True, check=False
    )


def test_fugaku_jobs_use_the_nodes_python_not_this_hosts():
    profile = load_profile(FUGAKU)
    job = resolve_job(profile, JobRequest(group="hp1", nodes=2))
    for host in ("x86_64", "aarch64"):
        argv = farm_launch_argv(job, host=host)
        assert argv == ["mpiexec", "-stdout-proc", "./output.%j/%m/%/1000r/stdout",
                        "-stderr-proc", "./output.%j/%m/%/1000r/stderr",
                        "/vol0004/apps/matdx/aarch64/bin/python"]
        assert not any(sys.prefix in a for a in argv)
    script = scheduler_for(profile).render(job.request.model_copy(update={"command": argv}))
    setup = script.splitlines()
    # the nodes' Python comes from Spack, with specs that name one install
    assert "spack load python@3.11.6 %fj@4.10.0 arch=linux-rhel8-a64fx" in setup
    assert ambiguous_spack_specs([*profile.setup, *profile.compute_env.setup]) == []
    check_job_text(profile, script, host="x86_64")  # nothing of this host in it


def test_a_job_with_this_hosts_python_is_refused_for_foreign_nodes():
    profile = load_profile(FUGAKU)
    script = f"#!/bin/bash\n{sys.executable} -m matdx.cli.main farm c\n"
    with pytest.raises(InputError, match=r"would use .* this x86_64 host's Python environment"):
        check_job_text(profile, script, host="x86_64")
    local = load_profile(ROOT / "hpc_profiles" / "local.yaml")
    check_job_text(local, script)  # same architecture: this Python is the nodes' Python
    assert node_env(local).python == [sys.executable] and node_env(local).from_host


def test_profile_check_reports_the_nodes_and_refuses_a_missing_python(tmp_path):
    ok = cli("profile", "check", str(FUGAKU))
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[0] == "ok: fugaku (pjm)"
    assert lines[1].startswith("compute nodes: aarch64 (")
    assert lines[2].startswith("matdx on the nodes: /vol0004/apps/matdx/aarch64/bin/python")
    assert not any(line.startswith("warning") for line in lines)

    text = FUGAKU.read_text().replace(
        "  python: /vol0004/apps/matdx/aarch64/bin/python\n", ""
    ).replace("spack load quantum-espresso@7.2 %fj@4.10.0 arch=linux-rhel8-a64fx",
              "spack load quantum-espresso")
    bad = tmp_path / "nopython.yaml"
    bad.write_text(text)
    if node_env(load_profile(FUGAKU)).host_arch == "aarch64":
        pytest.skip("this host is aarch64 like the nodes")
    out = cli("profile", "check", str(bad))
    assert out.returncode != 0 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "set compute_env.python" in out.stderr

    warn = tmp_path / "ambiguous.yaml"
    warn.write_text(FUGAKU.read_text().replace(
        "spack load quantum-espresso@7.2 %fj@4.10.0 arch=linux-rhel8-a64fx",
        "spack load quantum-espresso"))
    out = cli("profile", "check", str(warn))
    assert out.returncode == 0
    assert "warning: 'spack load quantum-espresso' names no version or hash" in out.stdout
