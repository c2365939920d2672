"""Container support: Apptainer definitions and the launch lines a profile renders.

Apptainer cannot be installed here, so images are not built; the rendered lines are checked.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from matdx.core.errors import InputError
from matdx.schedulers import scheduler_for
from matdx.sites import JobRequest, load_profile, resolve_job
from matdx.sites.nodes import node_env

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_exist_for_both_architectures():
    x86 = (ROOT / "containers" / "matdx-x86_64.def").read_text()
    arm = (ROOT / "containers" / "matdx-aarch64.def").read_text()
    assert "Bootstrap: docker" in x86 and "From: python:3.11-slim-bookworm" in x86
    assert "From: arm64v8/python:3.11-slim-bookworm" in arm
    for text in (x86, arm):
        assert "pip install" in text and "/opt/matdx" in text and "%test" in text


def test_fugaku_profile_runs_tasks_in_the_image():
    profile = load_profile(ROOT / "hpc_profiles" / "fugaku_apptainer.yaml")
    job = resolve_job(profile, JobRequest(group="hp1", nodes=2, command=["pw.x", "-in", "a b"]))
    last = scheduler_for(profile).render(job).splitlines()[-1]
    assert last == (
        "mpiexec -stdout-proc ./output.%j/%m/%/1000r/stdout"
        " -stderr-proc ./output.%j/%m/%/1000r/stderr singularity exec "
        "--bind /vol0004 /vol0004/apps/matdx/matdx-aarch64.sif pw.x -in 'a b'"
    )
    # the task farm's Python is the image's, started by the launcher
    assert node_env(profile, host="x86_64").python == ["singularity", "exec", "--bind", "/vol0004",
                                "/vol0004/apps/matdx/matdx-aarch64.sif", "python"]


def test_fugaku_jobs_with_an_image_ask_for_the_singularity_job_environment(tmp_path):
    """Fugaku runs Singularity in jobs submitted with -L jobenv=singularity."""
    profile = load_profile(ROOT / "hpc_profiles" / "fugaku_apptainer.yaml")
    script = scheduler_for(profile).render(resolve_job(profile, JobRequest(group="hp1")))
    assert '#PJM -L "jobenv=singularity"' in script.splitlines()
    plain = load_profile(ROOT / "hpc_profiles" / "fugaku.yaml")
    assert "jobenv" not in scheduler_for(plain).render(resolve_job(plain, JobRequest(group="g")))
    x86 = load_profile(ROOT / "hpc_profiles" / "x86_slurm.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (ROOT / "hpc_profiles" / "x86_slurm.yaml").read_text()
        + "container: {image: /a.sif, jobenv: singularity}\n"
    )
    assert x86.container is None
    with pytest.raises(InputError, match=r"container\.jobenv is a PJM option"):
        load_profile(bad)
