"""Fugaku's LLIO volumes and data area, from the paths a job really uses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from matdx.core.errors import InputError
from matdx.schedulers import scheduler_for
from matdx.sites import JobRequest, load_profile, resolve_job
from matdx.sites.llio import check_data_dir, job_volumes, node_paths, volume_of
from matdx.sites.models import Llio

ROOT = Path(__file__).resolve().parents[1]
#: the top-level directory the repository sits on (/work here, /check in CI)
TOP = "/" + ROOT.parts[1]
FUGAKU = ROOT / "hpc_profiles" / "fugaku.yaml"


@pytest.fixture
def fugaku_here():
    """Fugaku's profile with this machine's top-level directories as volumes."""
    profile = load_profile(FUGAKU)
    llio = profile.pjm.llio.model_copy(update={"volume_pattern": rf"^/(vol[0-9]{{4}}|tmp|{ROOT.parts[1]})$"})
    return profile.model_copy(update={"pjm": profile.pjm.model_copy(update={"llio": llio})})


def test_volumes_come_from_resolved_paths(tmp_path, fugaku_here):
    # a link in /tmp to a directory on the repository's volume, as /home/<user> links to /vol000N on Fugaku
    link = tmp_path / "home-link"
    link.symlink_to(ROOT)
    pattern = fugaku_here.pjm.llio.volume_pattern
    assert volume_of(link / "runs", pattern) == TOP
    assert volume_of(tmp_path / "plain", pattern) == "/tmp"
    assert volume_of("/etc/passwd", pattern) is None
    paths = [link / "runs" / "submit-1", *node_paths(fugaku_here)]
    assert node_paths(fugaku_here) == ["/vol0004/apps/matdx/aarch64/bin/python"]
    # Spack's /vol0004 always, the job directory's real volume, not /tmp (the link)
    # (in sorted order: /check sorts before /vol0004, /work after it)
    volumes = ":".join(sorted(["/vol0004", TOP]))
    assert job_volumes(fugaku_here, paths) == volumes
    job = resolve_job(fugaku_here, JobRequest(group="g", llio_gfscache=volumes))
    assert f"#PJM -x PJM_LLIO_GFSCACHE={volumes}" in scheduler_for(fugaku_here).render(job)
    # a profile without gfscache_from_paths keeps its fixed list
    fixed = fugaku_here.pjm.llio.model_copy(update={"gfscache_from_paths": False})
    plain = fugaku_here.model_copy(
        update={"pjm": fugaku_here.pjm.model_copy(update={"llio": fixed})}
    )
    assert job_volumes(plain, paths) == "/vol0004"


def test_data_dir_in_home_is_refused_on_fugaku(tmp_path):
    profile = load_profile(FUGAKU)
    real_home = tmp_path / "vol0003" / "home" / "u"
    real_home.mkdir(parents=True)
    home = tmp_path / "home-u"
    home.symlink_to(real_home)
    for data_dir in (home / ".local" / "share" / "matdx", real_home / "matdx"):
        with pytest.raises(InputError, match="set MATDX_DATA_DIR to a directory of your group"):
            check_data_dir(profile, data_dir, home=home)
    check_data_dir(profile, tmp_path / "vol0004" / "data" / "g" / "matdx", home=home)
    check_data_dir(load_profile(ROOT / "hpc_profiles" / "local.yaml"), home / "x", home=home)


def test_submit_from_home_fails_with_one_line(tmp_path):
    env = dict(os.environ, HOME=str(tmp_path), MATDX_DATA_DIR=str(tmp_path / "matdx"))
    proc = subprocess.run(
        [sys.executable, "-m", "matdx.cli.main", "submit", str(ROOT / "workflows" / "cu_au_pt.yaml"),
         "--profile", str(FUGAKU), "--account", "hp1", "--elapse", "1h"],
        capture_output=True, text=True, env=env, check=False,
    )
    assert proc.returncode != 0 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert "in your home directory" in proc.stderr and "MATDX_DATA_DIR" in proc.stderr
    assert not (tmp_path / "matdx").exists()


def with_transfers(profile, **llio):
    """``profile`` with LLIO settings changed."""
    changed = profile.pjm.llio.model_copy(update=llio)
    return profile.model_copy(update={"pjm": profile.pjm.model_copy(update={"llio": changed})})


def test_common_files_are_distributed_within_the_guide_limit(tmp_path, fugaku_here):
    env = tmp_path / "node-env"
    (env / "bin").mkdir(parents=True)
    for i in range(3):
        (env / "bin" / f"f{i}").write_text("x")
    image = tmp_path / "matdx.sif"
    image.write_text("x")
    profile = with_transfers(fugaku_here, transfer=[str(env), str(image)], transfer_spack=True)
    job = resolve_job(profile, JobRequest(job_name="t", nodes=2, group="hp120001",
                                          command=["true"]))
    lines = scheduler_for(profile).render(job).splitlines()
    spack = lines.index("spack load py-mpi4py@3.1.4 %fj@4.10.0 ^python@3.11.6 "
                        "arch=linux-rhel8-a64fx")
    program = next(i for i, ln in enumerate(lines) if ln.startswith("mpiexec"))
    staged = lines[spack + 1:program]
    assert f"/home/system/tool/dir_transfer {env}" in staged
    assert f"/usr/bin/llio_transfer {image}" in staged
    assert sum("grep '^/vol0004/apps/oss/spack' | xargs -r /home/system/tool/dir_transfer"
               in ln for ln in staged) == 2
    # the transferred paths' volumes are cached too
    assert "/tmp" in job_volumes(profile, [tmp_path, *node_paths(profile)]).split(":")
    # more files than llio_transfer distributes, or a missing path: one-line errors
    big = with_transfers(fugaku_here, transfer=[str(env)])
    for i in range(3, 16_385):
        (env / "bin" / f"f{i}").touch()
    with pytest.raises(InputError, match="16385 files, more than llio_transfer's 16384"):
        scheduler_for(big).render(resolve_job(big, JobRequest(job_name="t", group="g1",
                                                              command=["true"])))
    gone = with_transfers(fugaku_here, transfer=[str(tmp_path / "missing")])
    with pytest.raises(InputError, match="does not exist"):
        scheduler_for(gone).render(resolve_job(gone, JobRequest(job_name="t", group="g1",
                                                                command=["true"])))
    with pytest.raises(ValueError, match="not a plain absolute path"):
        Llio.model_validate({"transfer": ["relative/env"]})
