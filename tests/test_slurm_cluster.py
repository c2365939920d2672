"""Tests against the real single-node Slurm cluster that ``scripts/slurm.sh start`` runs.

The client commands find the cluster through ``SLURM_CONF``; when it is not set, the value
that ``scripts/slurm.sh start`` wrote to ``.ci/slurm.env`` is used. Without the cluster these
tests fail (they do not skip) and say how to start it.

Slurm time limits are whole minutes (``--time=00:00:05`` becomes one minute) and slurmctld
looks for overrunning jobs every 30 s, so the TIMEOUT test takes 60 to ~95 s.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
HOW = "start it with `bash scripts/slurm.sh start` and `source .ci/slurm.env`"
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
         "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


def _slurm_conf() -> str | None:
    if os.environ.get("SLURM_CONF"):
        return os.environ["SLURM_CONF"]
    env_file = ROOT / ".ci" / "slurm.env"
    if env_file.exists():
        m = re.search(r"^export SLURM_CONF=(\S+)", env_file.read_text(), re.M)
        if m:
            return m.group(1)
    return None


@pytest.fixture(scope="module")
def slurm_env() -> dict[str, str]:
    missing = [c for c in ("sinfo", "sbatch", "scontrol", "squeue") if shutil.which(c) is None]
    if missing:
        pytest.fail(f"Slurm client commands not found: {missing}; apt-get install slurm-wlm, "
                    f"then {HOW}")
    env = dict(os.environ)
    conf = _slurm_conf()
    if conf:
        env["SLURM_CONF"] = conf
    proc = subprocess.run(["sinfo", "-h", "-o", "%T %N"], env=env, capture_output=True,
                          text=True, timeout=30, check=False)
    states = proc.stdout.split()
    if proc.returncode != 0 or not states or not re.match(r"(idle|mixed|allocated)", states[0]):
        pytest.fail(f"the Slurm test cluster is not up (SLURM_CONF={conf}; sinfo rc="
                    f"{proc.returncode}: {proc.stdout.strip()} {proc.stderr.strip()}); {HOW}")
    return env


def run(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=30,
                          check=False)
    assert proc.returncode == 0, f"{args}: rc={proc.returncode}\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def sbatch(env: dict[str, str], *args: str) -> str:
    out = run(env, "sbatch", "--parsable", *args).strip()
    assert re.fullmatch(r"\d+(;\S+)?", out), out
    return out.split(";")[0]


def show_job(env: dict[str, str], jobid: str) -> dict[str, str]:
    """``scontrol show job`` as a dict (values up to the next space)."""
    text = run(env, "scontrol", "show", "job", jobid)
    return dict(re.findall(r"(\w[\w/:]*)=(\S*)", text))


def wait_final(env: dict[str, str], jobid: str, timeout: float) -> dict[str, str]:
    end = time.monotonic() + timeout
    while True:
        job = show_job(env, jobid)
        if job["JobState"] in FINAL:
            return job
        if time.monotonic() > end:
            raise AssertionError(f"job {jobid} still {job['JobState']} after {timeout} s: {job}")
        time.sleep(0.5)


def test_two_short_jobs_run_at_once_and_complete(slurm_env: dict[str, str],
                                                 tmp_path: Path) -> None:
    busy = run(slurm_env, "squeue", "-h", "-t", "RUNNING,PENDING").strip()
    script = (
        "echo job=$SLURM_JOB_ID name=$SLURM_JOB_NAME host=$(hostname) cpus=$SLURM_CPUS_ON_NODE\n"
        "date +%s.%N > {tag}.start; sleep 2; date +%s.%N > {tag}.end\n"
        "echo to-stderr >&2\n"
    )
    ids = [
        sbatch(slurm_env, f"--job-name=matdx-{tag}", "--ntasks=1", "--cpus-per-task=1",
               f"--chdir={tmp_path}", f"--output={tmp_path}/%x.%j.out",
               f"--error={tmp_path}/%x.%j.err", "--wrap", script.format(tag=tag))
        for tag in ("a", "b")
    ]
    listed = run(slurm_env, "squeue", "-h", "-j", ",".join(ids), "-o", "%i %T")
    assert {line.split()[0] for line in listed.splitlines()} <= set(ids)
    for jobid, tag in zip(ids, ("a", "b"), strict=True):
        job = wait_final(slurm_env, jobid, timeout=60)
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", job
        assert job["NodeList"] == "localhost" and job["NumCPUs"] == "1", job
        out = (tmp_path / f"matdx-{tag}.{jobid}.out").read_text()
        assert out.startswith(f"job={jobid} name=matdx-{tag} host=")
        assert (tmp_path / f"matdx-{tag}.{jobid}.err").read_text() == "to-stderr\n"
    if not busy:  # two 1-CPU jobs share the 2-CPU node (select/cons_tres, CR_Core)
        a0, a1, b0, b1 = (float((tmp_path / f"{t}.{e}").read_text())
                          for t in ("a", "b") for e in ("start", "end"))
        assert a0 < b1 and b0 < a1, "the two jobs did not run at the same time"


def test_job_over_its_time_limit_ends_in_timeout(slurm_env: dict[str, str],
                                                 tmp_path: Path) -> None:
    jobid = sbatch(slurm_env, "--job-name=matdx-timeout", "--time=00:00:05",
                   f"--output={tmp_path}/%j.out", "--wrap", "echo started; sleep 300")
    job = show_job(slurm_env, jobid)
    assert job["TimeLimit"] == "00:01:00"  # Slurm rounds limits up to whole minutes
    end = time.monotonic() + 60
    while show_job(slurm_env, jobid)["JobState"] != "RUNNING":
        assert time.monotonic() < end, f"job {jobid} did not start: {show_job(slurm_env, jobid)}"
        time.sleep(0.5)
    assert run(slurm_env, "squeue", "-h", "-j", jobid, "-o", "%T").strip() == "RUNNING"
    job = wait_final(slurm_env, jobid, timeout=150)
    assert job["JobState"] == "TIMEOUT" and job["Reason"] == "TimeLimit", job
    assert (tmp_path / f"{jobid}.out").read_text().startswith("started\n")
