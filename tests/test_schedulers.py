"""Schedulers: golden scripts, quoting safety, output parsers, stand-in batch commands,
the local scheduler with real processes, and the FireWorks queue adapters."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matdx.core.errors import InputError
from matdx.schedulers import (
    SCHEDULERS,
    JobState,
    LocalScheduler,
    PjmScheduler,
    SchedulerError,
    SlurmScheduler,
    get_scheduler,
    scheduler_for,
)
from matdx.schedulers.base import aggregate, covers
from matdx.schedulers.pjm import parse_pjstat, parse_pjsub
from matdx.schedulers.slurm import parse_sacct, parse_sbatch, parse_scontrol, parse_squeue
from matdx.sites import JobRequest, load_profile, parse_job_request, resolve_job
from matdx.sites.job import ResolvedJob
from matdx.sites.models import SCHEDULER_TOOLS

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "hpc_profiles"
GOLDEN = Path(__file__).resolve().parent / "golden"
QE = ["pw.x", "-nk", "4", "-in", "scf.in"]


@pytest.fixture(scope="module")
def fugaku():
    return load_profile(PROFILES / "fugaku.yaml")


@pytest.fixture(scope="module")
def x86():
    return load_profile(PROFILES / "x86_slurm.yaml")


@pytest.fixture(scope="module")
def local():
    return load_profile(PROFILES / "local.yaml")


def render(profile, **fields) -> str:
    return scheduler_for(profile).render(resolve_job(profile, JobRequest(**fields)))


def bash_syntax_ok(script: str) -> bool:
    return subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def run_bash(script: str, cwd: Path | None = None) -> SimpleNamespace:
    """Run a script with bash; output decoded without newline translation."""
    proc = subprocess.run(
        ["bash", "-s"], input=script.encode(), capture_output=True, cwd=cwd, timeout=30
    )
    return SimpleNamespace(
        returncode=proc.returncode, stdout=proc.stdout.decode(), stderr=proc.stderr.decode()
    )


# -- registry ------------------------------------------------------------------------------


def test_registry(fugaku, x86, local):
    assert {"slurm": SlurmScheduler, "pjm": PjmScheduler, "local": LocalScheduler} == SCHEDULERS
    assert isinstance(scheduler_for(fugaku), PjmScheduler)
    assert isinstance(scheduler_for(x86), SlurmScheduler)
    assert isinstance(get_scheduler("local", local), LocalScheduler)
    with pytest.raises(InputError, match="unknown scheduler 'pbs'"):
        get_scheduler("pbs")
    with pytest.raises(InputError, match="uses pjm, not slurm"):
        get_scheduler("slurm", fugaku)
    assert set(SCHEDULER_TOOLS) == set(SCHEDULERS)
    # render() also takes an unresolved request when the scheduler has a profile
    request = JobRequest(group="g", nodes=2, command=["a.out"])
    assert scheduler_for(fugaku).render(request) == render(fugaku, **request.model_dump())
    with pytest.raises(InputError, match="needs a site profile"):
        get_scheduler("slurm").render(request)
    with pytest.raises(InputError, match="site fugaku uses pjm, not slurm"):
        get_scheduler("slurm").render(resolve_job(fugaku, request))


# -- golden scripts ------------------------------------------------------------------------


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("MATDX_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"rendered script differs from {path}"


def test_golden_fugaku_qe_4_nodes(fugaku):
    script = render(
        fugaku,
        job_name="qe-scf",
        nodes=4,
        elapse="24:00:00",
        group="hp120000",
        rscgrp="small",
        command=QE,
    )
    check_golden("fugaku_qe_4nodes.pjm.sh", script)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for expected in (
        '#PJM -L "node=4"',
        '#PJM -L "rscgrp=small"',
        '#PJM -L "elapse=24:00:00"',
        '#PJM --mpi "proc=16"',
        '#PJM --mpi "max-proc-per-node=4"',
        "#PJM -g hp120000",
        "#PJM -x PJM_LLIO_GFSCACHE=/vol0004",
        "#PJM --llio sharedtmp-size=10Gi",
        "#PJM -j",
        "#PJM -S",
        "export OMP_NUM_THREADS=12",
        ". /vol0004/apps/oss/spack/share/spack/setup-env.sh",
        "spack load quantum-espresso@7.2 %fj@4.10.0 arch=linux-rhel8-a64fx",
        "mpiexec -stdout-proc ./output.%j/%m/%/1000r/stdout"
        " -stderr-proc ./output.%j/%m/%/1000r/stderr pw.x -nk 4 -in scf.in",
    ):
        assert expected in lines
    # all directives come before the first command, as PJM requires
    last_directive = max(i for i, line in enumerate(lines) if line.startswith("#PJM"))
    first_command = min(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    assert last_directive < first_command
    qe = "spack load quantum-espresso@7.2 %fj@4.10.0 arch=linux-rhel8-a64fx"
    assert lines.index(qe) < lines.index("export OMP_NUM_THREADS=12")
    assert bash_syntax_ok(script)


def test_golden_x86_slurm_qe_4_nodes(x86):
    script = render(
        x86,
        job_name="qe-scf",
        nodes=4,
        elapse="24:00:00",
        group="proj42",
        rscgrp="normal",
        stdout="qe-scf.%j.out",
        command=QE,
    )
    check_golden("x86_slurm_qe_4nodes.slurm.sh", script)
    lines = script.splitlines()
    for expected in (
        "#SBATCH --job-name=qe-scf",
        "#SBATCH --nodes=4",
        "#SBATCH --ntasks-per-node=32",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --time=1-00:00:00",
        "#SBATCH --partition=normal",
        "#SBATCH --account=proj42",
        "#SBATCH --output=qe-scf.%j.out",
        "export OMP_NUM_THREADS=2",
        "export SRUN_CPUS_PER_TASK=2",
        "module load gcc/12 openmpi/4.1 quantum-espresso/7.2",
        "srun --cpu-bind=cores pw.x -nk 4 -in scf.in",
    ):
        assert expected in lines
    assert not any(line.startswith("#SBATCH --error") for line in lines)  # merged output
    assert bash_syntax_ok(script)


def test_pjm_bulk_output_and_llio_override(fugaku):
    script = render(
        fugaku,
        group="g1",
        nodes=2,
        ranks_per_node=8,
        threads_per_rank=6,
        array="0-9",
        llio_sharedtmp_size="80Gi",
        command=["a.out"],
    )
    lines = script.splitlines()
    assert '#PJM --mpi "proc=16"' in lines and '#PJM --mpi "max-proc-per-node=8"' in lines
    assert "#PJM -j" in lines and not any(ln.startswith(("#PJM -o", "#PJM -e")) for ln in lines)
    # the guide documents no -o/-e: PJM names the files <job name>.<job id>.out/.err
    for field in ("stdout", "stderr"):
        with pytest.raises(InputError, match=f"field {field}: PJM writes"):
            resolve_job(fugaku, JobRequest(group="g1", **{field: "x.out"}))
    assert "#PJM --llio sharedtmp-size=80Gi" in lines
    assert 'export MATDX_ARRAY_INDEX="${PJM_BULKNUM}"' in lines
    assert "export OMP_NUM_THREADS=6" in lines


def test_slurm_array_dependency_and_long_time(x86):
    script = render(
        x86,
        group="p",
        rscgrp="long",
        elapse="7d",
        array="1-100",
        after="4242",
        stderr="e.%A_%a",
        command=["a.out"],
    )
    lines = script.splitlines()
    assert "#SBATCH --time=7-00:00:00" in lines
    assert "#SBATCH --array=1-100" in lines
    assert "#SBATCH --dependency=afterok:4242" in lines
    assert "#SBATCH --error=e.%A_%a" in lines
    assert 'export MATDX_ARRAY_INDEX="${SLURM_ARRAY_TASK_ID}"' in lines


def test_container_and_launcher_placeholders(local):
    container = {"image": "/images/qe 7.2.sif", "options": ["--bind", "/data"]}
    prof = type(local).model_validate({**local.model_dump(), "container": container})
    script = render(prof, command=["pw.x", "-in", "scf.in"])
    assert script.splitlines()[-1] == (
        "/usr/bin/mpirun --allow-run-as-root -np 2 apptainer exec --bind /data "
        "'/images/qe 7.2.sif' pw.x -in scf.in"
    )
    no_container = render(prof, command=["true"], use_container=False, use_launcher=False)
    assert no_container.splitlines()[-1] == "true"


# -- quoting and injection -------------------------------------------------------------------

PAYLOADS = [
    "$(touch pwned1)",
    "`touch pwned2`",
    "; touch pwned3",
    "a'b\"c",
    "x\ntouch pwned4\ny",
    "&& touch pwned5 || touch pwned6 | cat > pwned7",
    "${IFS}$HOME*?[a]{b,c}~",
    "\\",
    "",
]


@pytest.mark.parametrize("name", ["fugaku", "x86_slurm", "local"])
def test_metacharacters_in_shell_values_stay_inert(tmp_path, name):
    """Workdir, arguments and env values full of metacharacters are quoted: running the
    script prints them back verbatim and creates none of the 'pwned' files."""
    profile = load_profile(PROFILES / f"{name}.yaml")
    profile = profile.model_copy(update={"setup": []})  # no module/spack on this machine
    workdir = tmp_path / "dir $(touch pwned0) `x`; ' \" \n end"
    workdir.mkdir()
    script = render(
        profile,
        group="g",
        workdir=str(workdir),
        command=["printf", "[%s]\\n", *PAYLOADS],
        use_launcher=False,
        env={"MATDX_T": "$(touch pwned8)`touch pwned9`;x"},
    )
    assert bash_syntax_ok(script)
    out = run_bash(script, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "".join(f"[{p}]\n" for p in PAYLOADS)
    assert not list(tmp_path.rglob("pwned*"))
    env_out = run_bash(
        render(
            profile,
            group="g",
            command=["printenv", "MATDX_T"],
            use_launcher=False,
            env={"MATDX_T": "$(touch pwned8)`touch pwned9`;x"},
        ),
        cwd=tmp_path,
    )
    assert env_out.stdout == "$(touch pwned8)`touch pwned9`;x\n"
    assert not list(tmp_path.rglob("pwned*"))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("job_name", "job;touch pwned"),
        ("job_name", "a\n#SBATCH --nodes=999"),
        ("job_name", "$(id)"),
        ("stdout", "out.$(id)"),
        ("stdout", "out\ntouch pwned"),
        ("stderr", "e`id`"),
        ("rscgrp", 'small" -L "node=9999'),
        ("group", "g\n#PJM -L node=9999"),
        ("array", "0-9;id"),
        ("after", "1 && id"),
        ("llio_sharedtmp_size", "10Gi;id"),
    ],
)
def test_directive_values_with_metacharacters_are_rejected(fugaku, field, value):
    with pytest.raises(InputError, match=f"field {field}:"):
        parse_job_request({"group": "g", field: value})


def test_render_refuses_a_smuggled_directive(fugaku, x86):
    """Even a request built without validation cannot break out of a directive line."""
    bad = JobRequest.model_construct(**{**JobRequest().model_dump(), "job_name": "x\ntouch pwned"})
    for prof in (fugaku, x86):
        job = ResolvedJob(prof, bad, prof.rscgrp_default, "g", 1, 1, 1, 60, None)
        with pytest.raises(InputError, match="unsafe directive line"):
            scheduler_for(prof).render(job)


def test_setup_lines_are_trusted_but_single_lines(fugaku):
    """Profile set-up lines are admin-written shell and are copied verbatim (documented as
    trusted); a line break inside one is refused."""
    prof = fugaku.model_copy(update={"setup": ["module load a; module load b"]})
    assert "module load a; module load b" in render(prof, group="g").splitlines()
    with pytest.raises(ValueError, match="single line"):
        type(fugaku).model_validate({**fugaku.model_dump(), "setup": ["ok\nrm -rf /"]})


TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=80)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arg=TEXT, env_value=TEXT)
def test_arbitrary_arguments_round_trip_through_bash(local, arg, env_value, tmp_path_factory):
    script = render(
        local,
        command=["printf", "%s|", arg, "$MATDX_T"],
        use_launcher=False,
        env={"MATDX_T": env_value},
    )
    where = tmp_path_factory.mktemp("bash")
    out = run_bash(script + 'printf "%s" "$MATDX_T"\n', cwd=where)
    assert out.returncode == 0
    assert not list(where.iterdir())  # nothing in the argument made the script write a file
    assert out.stdout == f"{arg}|$MATDX_T|{env_value}"


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=80))
def test_arbitrary_names_and_paths_never_reach_directives_unchecked(x86, text):
    """Arbitrary text as a job name or output path is either refused or yields exactly the
    usual directive lines, each on one line."""
    for field in ("job_name", "stdout"):
        try:
            request = parse_job_request({"group": "p", field: text})
        except InputError as exc:
            assert "\n" not in str(exc) and f"field {field}:" in str(exc)
            continue
        script = scheduler_for(x86).render(resolve_job(x86, request))
        directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
        assert len(directives) == (8 if field == "stdout" else 7)
        assert re.fullmatch(r"[A-Za-z0-9_./%+@:,=-]+", text)
        assert script.count("\n") == len(script.splitlines())


def test_bad_job_ids_never_reach_commands(x86, fugaku, local, tmp_path):
    for sched in (SlurmScheduler(x86), PjmScheduler(fugaku), LocalScheduler(local, tmp_path)):
        for bad in ("-u root", "1;id", "$(id)", "12 13", ""):
            with pytest.raises(InputError, match="not a job id"):
                sched.status([bad])
            with pytest.raises(InputError, match="not a job id"):
                sched.cancel(bad)


# -- parsers of real-format outputs ------------------------------------------------------

PJSTAT = """\
JOB_ID     JOB_NAME   MD ST  USER     START_DATE      ELAPSE_LIM NODE_REQUIRE    VNODE  CORE V_MEM
12345      qe-scf     NM RUN u12345   11/17 09:01:41  0024:00:00 4               -      -    -
12346      qe-relax   NM QUE u12345   -               0001:00:00 4               -      -    -
12347      bulk.sh    BU RNO u12345   11/17 09:01:42  0001:00:00 12:2x3x2        -      -    -
12348[3]   bulk.sh    BU RNA u12345   11/17 09:01:42  0001:00:00 1               -      -    -
12349_1    step.sh    ST HLD u12345   (11/17 10:00)   0001:00:00 1               -      -    -
12350      held.sh    NM SPD u12345   11/17 09:01:43  0001:00:00 1               -      -    -
12351      acc.sh     NM ACC u12345   -               0001:00:00 1               -      -    -
12352      rne.sh     NM RNE u12345   11/17 09:01:43  0001:00:00 1               -      -    -
"""

PJSTAT_H = """\
JOB_ID     JOB_NAME   MD ST  USER     START_DATE      ELAPSE_LIM NODE_REQUIRE    VNODE  CORE V_MEM     EC  PC
12340      qe-scf     NM EXT u12345   11/16 21:10:05  0024:00:00 4               -      -    -         0   0
12341      qe-scf     NM EXT u12345   11/16 21:11:00  0024:00:00 4               -      -    -         1   0
12342      qe-scf     NM CCL u12345   -               0024:00:00 4               -      -    -         -   1
12343      qe-scf     NM ERR u12345   11/16 21:12:00  0024:00:00 4               -      -    -         -   20
12344      qe-scf     NM RJT u12345   -               0024:00:00 4               -      -    -         -   2
12339      timeout    NM EXT u12345   11/16 09:00:00  0001:00:00 1               -      -    -         0   11
"""

# pjstat -H -v: PC (PJM code) and REASON decide how an ended job ended (DisplayingJobStatus,
# CheckingAbnormalEndOfJob)
PJSTAT_HV = """\
JOB_ID     JOB_NAME   MD ST  USER     GROUP    START_DATE      ELAPSE_TIM ELAPSE_LIM NODE_REQUIRE    VNODE  CORE V_MEM V_POL E_POL RANK  LST EC  PC  SN  PRI ACCEPT         RSC_GRP    REASON
12360      a          NM EXT u1       hp1      11/29 03:02:14  0000:00:02 0000:00:02 1               -      -    -     -     -     -     RNO 0   0   -   -   11/29 03:02:14 small      -
12361      a          NM EXT u1       hp1      11/29 03:02:14  0000:00:02 0000:00:02 1               -      -    -     -     -     -     RNO 143 11  15  -   11/29 03:02:14 small      ELAPSE LIMIT EXCEEDED
12362      a          NM EXT u1       hp1      11/29 03:02:14  0000:00:02 0000:00:02 1               -      -    -     -     -     -     RNO -   -   -   -   11/29 03:02:14 small      LIMIT OVER MEMORY
12363      a          NM CCL u1       hp1      -               -          0000:00:02 1               -      -    -     -     -     -     QUE -   6   -   -   11/29 03:02:14 small      -
12364      a          NM CCL u1       hp1      11/29 03:02:14  0000:00:02 0000:00:02 1               -      -    -     -     -     -     RUN -   18  -   -   11/29 03:02:14 small      ANOTHER JOB STARTED
12365      a          NM EXT u1       hp1      11/29 03:02:14  0000:00:02 0000:00:02 1               -      -    -     -     -     -     RNO 0   20  -   -   11/29 03:02:14 small      -
"""


def test_parse_pjstat_running_table():
    rows = dict(parse_pjstat(PJSTAT))
    assert rows == {
        "12345": JobState.RUNNING,
        "12346": JobState.QUEUED,
        "12347": JobState.RUNNING,
        "12348[3]": JobState.RUNNING,
        "12349_1": JobState.HELD,
        "12350": JobState.HELD,
        "12351": JobState.QUEUED,
        "12352": JobState.RUNNING,
    }


def test_parse_pjstat_history_with_exit_codes():
    rows = dict(parse_pjstat(PJSTAT_H))
    assert rows == {
        "12340": JobState.COMPLETED,
        "12341": JobState.FAILED,  # EXT with exit code 1
        "12342": JobState.CANCELLED,
        "12343": JobState.FAILED,
        "12344": JobState.FAILED,
        "12339": JobState.FAILED,  # EXT with PJM code 11 (elapse limit)
    }


def test_parse_pjstat_killed_and_cancelled_jobs():
    assert dict(parse_pjstat(PJSTAT_HV)) == {
        "12360": JobState.COMPLETED,
        "12361": JobState.FAILED,  # killed at the elapse limit (PC 11)
        "12362": JobState.FAILED,  # REASON only: memory limit
        "12363": JobState.CANCELLED,  # deleted by a step job's dependency (PC 6)
        "12364": JobState.FAILED,  # ended for another job (PC 18)
        "12365": JobState.FAILED,  # node down (PC 20) whatever the exit code
    }


def test_parse_pjstat_tolerates_reordered_columns_and_noise():
    text = (
        "[INFO] PJM 0000 pjstat ...\n"
        "ST  JOB_ID   USER  JOB_NAME\n"
        "EXT 777      u1    a\n"
        "CCL 778      u1    b\n"
    )
    assert dict(parse_pjstat(text)) == {}  # rows must start with the id... unless
    text2 = "JOB_ID USER ST\n777 u1 EXT\n778 u1 CCL\n779 u1 ???\n"
    assert dict(parse_pjstat(text2)) == {
        "777": JobState.COMPLETED,
        "778": JobState.CANCELLED,
        "779": JobState.UNKNOWN,
    }
    assert parse_pjstat("") == []


@pytest.mark.parametrize(
    ("out", "jid"),
    [
        ("[INFO] PJM 0000 pjsub Job 12345 submitted.\n", "12345"),
        ("[INFO] PJM 0000 pjsub Job 8 submitted.\n", "8"),
        ("[INFO] PJM 0000 pjsub Job 12345_0 submitted.\n", "12345_0"),
        ("[WARN] PJM 0051 something\n[INFO] PJM 0000 pjsub Job 99999 submitted.\n", "99999"),
    ],
)
def test_parse_pjsub(out, jid):
    assert parse_pjsub(out) == jid


@pytest.mark.parametrize(
    "out",
    ["[ERR.] PJM 0007 pjsub Staging option error (3).", "[INFO] PJM 0000 pjsub", ""],
)
def test_parse_pjsub_failure(out):
    with pytest.raises(SchedulerError, match="pjsub printed no job id"):
        parse_pjsub(out)


def test_parse_sbatch():
    assert parse_sbatch("12345\n") == "12345"
    assert parse_sbatch("12345;cluster1\n") == "12345"
    assert parse_sbatch("sbatch: warning: something\n4242\n") == "4242"
    with pytest.raises(SchedulerError, match="sbatch printed no job id"):
        parse_sbatch("Submitted batch job\n")


def test_parse_squeue_sacct_scontrol():
    squeue = (
        "100 RUNNING None\n"
        "101_3 RUNNING None\n"
        "101_[4-9%2] PENDING JobArrayTaskLimit\n"
        "102 PENDING JobHeldUser\n"
        "103 COMPLETING None\n"
        "104 PENDING Priority\n"
    )
    assert parse_squeue(squeue) == [
        ("100", JobState.RUNNING),
        ("101_3", JobState.RUNNING),
        ("101_[4-9%2]", JobState.QUEUED),
        ("102", JobState.HELD),
        ("103", JobState.RUNNING),
        ("104", JobState.QUEUED),
    ]
    assert parse_squeue("105 SUSPENDED\n") == [("105", JobState.HELD)]
    sacct = (
        "200|200|COMPLETED\n"
        "201_0|201|COMPLETED\n"
        "201_1|202|FAILED\n"
        "203|203|CANCELLED by 0\n"
        "204|204|TIMEOUT\n"
        "205|205|OUT_OF_MEMORY\n"
        "206|206|NODE_FAIL\n"
    )
    rows = parse_sacct(sacct)
    assert ("203", JobState.CANCELLED) in rows
    assert ("201_1", JobState.FAILED) in rows and ("202", JobState.FAILED) in rows
    assert {s for j, s in rows if j in ("204", "205", "206")} == {JobState.FAILED}
    assert parse_sacct("300|RUNNING\n") == [("300", JobState.RUNNING)]
    scontrol = (
        "JobId=401 ArrayJobId=400 ArrayTaskId=1 JobName=arr\n"
        "   UserId=root(0) GroupId=root(0) MCS_label=N/A\n"
        "   JobState=COMPLETED Reason=None Dependency=(null)\n"
        "\n"
        "JobId=400 ArrayJobId=400 ArrayTaskId=0 JobName=arr\n"
        "   JobState=FAILED Reason=NonZeroExitCode Dependency=(null)\n"
    )
    assert parse_scontrol(scontrol) == [
        ("401", JobState.COMPLETED),
        ("400_1", JobState.COMPLETED),
        ("400", JobState.FAILED),
        ("400_0", JobState.FAILED),
    ]


def test_id_matching_and_aggregation():
    assert covers("123_4", "123") and covers("123_4", "123_4") and not covers("123_4", "123_5")
    assert covers("123_[5-9%2]", "123_7") and not covers("123_[5-9%2]", "123_10")
    assert covers("123_[1,3,5-6]", "123_5") and not covers("123_[1,3,5-6]", "123_2")
    assert covers("123[3]", "123[3]") and covers("123[3]", "123") and not covers("123", "123[3]")
    assert covers("123+0", "123") and not covers("1234", "123")
    assert aggregate([JobState.COMPLETED, JobState.RUNNING, JobState.FAILED]) is JobState.RUNNING
    assert aggregate([JobState.COMPLETED, JobState.FAILED]) is JobState.FAILED
    assert aggregate([JobState.COMPLETED, JobState.CANCELLED]) is JobState.CANCELLED
    assert aggregate([]) is JobState.UNKNOWN


# -- batch commands through stand-ins on PATH ----------------------------------------------------


class FakeBin:
    """Stand-in batch commands: each logs its arguments and runs a given bash body."""

    def __init__(self, path: Path):
        self.path = path

    def add(self, name: str, body: str) -> None:
        script = self.path / name
        log = self.path / f"{name}.log"
        script.write_text(
            f"#!/bin/bash\n(IFS=$'\\t'; printf '%s\\n' \"$*\") >> {shlex.quote(str(log))}\n{body}\n"
        )
        script.chmod(0o755)

    def calls(self, name: str) -> list[list[str]]:
        log = self.path / f"{name}.log"
        return [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def fakebin(tmp_path, monkeypatch):
    d = tmp_path / "bin"
    d.mkdir()
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}/usr/bin{os.pathsep}/bin")
    return FakeBin(d)


def cat(text: str, rc: int = 0, stream: str = "") -> str:
    redirect = " >&2" if stream == "err" else ""
    return f"cat{redirect} <<'EOF'\n{text}EOF\nexit {rc}"


def test_slurm_submit_status_cancel(fakebin, x86, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text(render(x86, group="p", command=["true"]))
    fakebin.add("sbatch", cat("4242;cluster1\n"))
    sched = SlurmScheduler(x86)
    assert sched.submit(script) == "4242"
    assert fakebin.calls("sbatch") == [["--parsable", str(script)]]

    fakebin.add("squeue", cat("100 RUNNING None\n101_3 RUNNING None\n101_[4-9] PENDING None\n"))
    fakebin.add("sacct", cat("102|102|COMPLETED\n103|103|CANCELLED by 0\n104_0|104|FAILED\n"))
    states = sched.status(["100", "101", "101_7", "102", "103", "104", "105"])
    assert states == {
        "100": JobState.RUNNING,
        "101": JobState.RUNNING,
        "101_7": JobState.QUEUED,
        "102": JobState.COMPLETED,
        "103": JobState.CANCELLED,
        "104": JobState.FAILED,
        "105": JobState.UNKNOWN,
    }
    (squeue_args,) = fakebin.calls("squeue")
    assert squeue_args == ["-h", "-o", "%i %T %r", "-j", "100,101,101_7,102,103,104,105"]
    (sacct_args,) = fakebin.calls("sacct")
    assert sacct_args[:5] == ["-n", "-P", "-X", "-o", "JobID,JobIDRaw,State"]
    assert sacct_args[-2:] == ["-j", "102,103,104,105"]  # only what squeue did not know

    fakebin.add("scancel", "exit 0")
    sched.cancel("100")
    assert fakebin.calls("scancel") == [["100"]]


def test_slurm_without_accounting_falls_back_to_scontrol(fakebin, x86):
    fakebin.add(
        "squeue", cat("slurm_load_jobs error: Invalid job id specified\n", rc=1, stream="err")
    )
    fakebin.add(
        "sacct", cat("sacct: error: Slurm accounting storage is disabled\n", rc=1, stream="err")
    )
    fakebin.add(
        "scontrol",
        'if [ "$3" = 7 ]; then\n'
        + cat("JobId=7 JobName=t\n   JobState=COMPLETED Reason=None\n")
        + "\nfi\n"
        + cat("slurm_load_jobs error: Invalid job id specified\n", rc=1, stream="err"),
    )
    assert SlurmScheduler(x86).status(["7", "8"]) == {
        "7": JobState.COMPLETED,
        "8": JobState.UNKNOWN,
    }
    assert fakebin.calls("scontrol") == [["show", "job", "7"], ["show", "job", "8"]]


def test_slurm_errors(fakebin, x86, tmp_path):
    missing = {"squeue": str(tmp_path / "nowhere" / "squeue")}
    absent = SlurmScheduler(type(x86).model_validate({**x86.model_dump(), "commands": missing}))
    with pytest.raises(SchedulerError, match="nowhere/squeue not found: is slurm installed"):
        absent.status(["1"])
    sched = SlurmScheduler(x86)
    fakebin.add("squeue", cat("squeue: error: Unable to contact slurm controller\n", 1, "err"))
    with pytest.raises(SchedulerError, match=r"squeue failed .*Unable to contact"):
        sched.status(["1"])
    fakebin.add(
        "sbatch", cat("sbatch: error: Batch job submission failed: Invalid account\n", 1, "err")
    )
    script = tmp_path / "j.sh"
    script.write_text("#!/bin/bash\n")
    with pytest.raises(SchedulerError) as info:
        sched.submit(script)
    assert "Invalid account" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(InputError, match="does not exist"):
        sched.submit(tmp_path / "missing.sh")
    fakebin.add(
        "scancel",
        cat(
            "scancel: error: Kill job error on job id 5: Job/step already "
            "completing or completed\n",
            1,
            "err",
        ),
    )
    sched.cancel("5")  # already over: not an error
    fakebin.add("scancel", cat("scancel: error: Invalid job id 6\n", 1, "err"))
    with pytest.raises(SchedulerError, match="scancel 6 failed"):
        sched.cancel("6")


def test_profile_command_paths_are_used(fakebin, x86, tmp_path):
    custom = tmp_path / "opt" / "slurm-sbatch"
    custom.parent.mkdir()
    custom.write_text("#!/bin/bash\necho 777\n")
    custom.chmod(0o755)
    prof = type(x86).model_validate({**x86.model_dump(), "commands": {"sbatch": str(custom)}})
    script = tmp_path / "j.sh"
    script.write_text("#!/bin/bash\n")
    assert SlurmScheduler(prof).submit(script) == "777"


def test_pjm_submit_bulk_step_status_cancel(fakebin, fugaku, tmp_path):
    sched = PjmScheduler(fugaku)
    script = tmp_path / "qe.sh"
    job = resolve_job(fugaku, JobRequest(group="hp1", nodes=4, command=QE))
    script.write_text(sched.render(job))

    fakebin.add("pjsub", cat("[INFO] PJM 0000 pjsub Job 12345 submitted.\n"))
    assert sched.submit(script, job) == "12345"
    bulk = resolve_job(fugaku, JobRequest(group="hp1", array="0-9", command=QE))
    assert sched.submit(script, bulk) == "12345"
    fakebin.add("pjsub", cat("[INFO] PJM 0000 pjsub Job 12345_0 submitted.\n"))
    first = resolve_job(fugaku, JobRequest(group="hp1", step=True, command=QE))
    assert sched.submit(script, first) == "12345_0"
    fakebin.add("pjsub", cat("[INFO] PJM 0000 pjsub Job 12345_1 submitted.\n"))
    step = resolve_job(fugaku, JobRequest(group="hp1", after="12345_0", command=QE))
    assert sched.submit(script, step) == "12345_1"
    assert fakebin.calls("pjsub") == [
        [str(script)],
        ["--bulk", "--sparam", "0-9", str(script)],
        ["--step", str(script)],
        ["--step", "--sparam", "jid=12345,sd=ec!=0:all:0", str(script)],
    ]

    fakebin.add("pjstat", 'if [ "$1" = -H ]; then\n' + cat(PJSTAT_H) + "\nfi\n" + cat(PJSTAT))
    states = sched.status(["12345", "12346", "12348[3]", "12340", "12341", "99999"])
    assert states == {
        "12345": JobState.RUNNING,
        "12346": JobState.QUEUED,
        "12348[3]": JobState.RUNNING,
        "12340": JobState.COMPLETED,
        "12341": JobState.FAILED,
        "99999": JobState.UNKNOWN,
    }
    assert fakebin.calls("pjstat") == [
        ["12345", "12346", "12348[3]", "12340", "12341", "99999"],
        ["-H", "day=3", "-v", "12340", "12341", "99999"],
    ]
    assert sched.count_jobs() == 8
    assert not any(fakebin.calls("pjstat")[-1])  # plain pjstat, no -u (undocumented)
    with pytest.raises(InputError, match="only your own jobs"):
        sched.count_jobs("someone-else")

    fakebin.add("pjdel", cat("[INFO] PJM 0100 pjdel Accepted job 12345.\n"))
    sched.cancel("12345")
    assert fakebin.calls("pjdel") == [["12345"]]
    fakebin.add("pjdel", cat("[ERR.] PJM 0112 pjdel Job 12340 does not exist.\n", 1, "err"))
    sched.cancel("12340")  # it has ended (pjstat -H): left alone
    with pytest.raises(SchedulerError, match="pjdel 1 failed"):
        sched.cancel("1")


def test_pjm_orders_jobs_only_as_step_jobs(fugaku, x86):
    """Fugaku's guide: a job follows another only as the next sub-job of a step job."""
    with pytest.raises(InputError, match="field after: PJM runs a job after another only"):
        resolve_job(fugaku, JobRequest(group="g", after="12345"))
    with pytest.raises(InputError, match="field step: a PJM bulk job cannot be a step job"):
        resolve_job(fugaku, JobRequest(group="g", step=True, array="0-3"))
    with pytest.raises(InputError, match=r"field step: .* has no step jobs"):
        resolve_job(x86, JobRequest(group="g", step=True))
    history = PjmScheduler(fugaku.model_copy(
        update={"pjm": fugaku.pjm.model_copy(update={"history_days": 30})}
    )).history_args(["7"])
    assert history == ["-H", "day=30", "-v", "7"]


# -- the local scheduler, with real processes ------------------------------------------------


def wait_for(sched, jid, done=frozenset({"COMPLETED", "FAILED", "CANCELLED"}), timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        state = sched.status([jid])[jid]
        if state in done:
            return state
        time.sleep(0.05)
    raise AssertionError(f"job {jid} still {state} after {timeout} s")


@pytest.fixture
def lsched(local, tmp_path):
    return LocalScheduler(local, state_dir=tmp_path / "state")


def submit_local(sched, local, tmp_path, name="job", **fields) -> tuple[str, ResolvedJob]:
    job = resolve_job(local, JobRequest(use_launcher=False, **fields))
    script = tmp_path / f"{name}.sh"
    script.write_text(sched.render(job))
    return sched.submit(script, job), job


def test_local_job_completes_and_fails(lsched, local, tmp_path):
    ok, _ = submit_local(
        lsched, local, tmp_path, "ok", command=["sh", "-c", "echo out-$OMP_NUM_THREADS"]
    )
    bad, _ = submit_local(lsched, local, tmp_path, "bad", command=["sh", "-c", "exit 3"])
    assert ok != bad
    assert wait_for(lsched, ok) == JobState.COMPLETED
    assert wait_for(lsched, bad) == JobState.FAILED
    assert (lsched.state_dir / ok / "stdout").read_text() == "out-1\n"
    assert (lsched.state_dir / bad / "exit_code").read_text().strip() == "3"
    assert lsched.status(["424242"]) == {"424242": JobState.UNKNOWN}


def test_local_status_and_cancel_across_processes(lsched, local, tmp_path):
    jid, _ = submit_local(
        lsched, local, tmp_path, command=["sh", "-c", "sleep 60 & sleep 60; wait"]
    )
    assert wait_for(lsched, jid, done={"RUNNING"}) == JobState.RUNNING
    assert lsched.count_jobs() == 1
    code = (
        "import sys; from matdx.schedulers import LocalScheduler as L; "
        "s = L(state_dir=sys.argv[1]); print(s.status([sys.argv[2]])[sys.argv[2]]); "
        "s.cancel(sys.argv[2]); print(s.status([sys.argv[2]])[sys.argv[2]])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(lsched.state_dir), jid],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.split() == ["RUNNING", "CANCELLED"], out.stderr
    assert wait_for(lsched, jid) == JobState.CANCELLED
    pid = int((lsched.state_dir / jid / "pid").read_text().split()[0])
    time.sleep(0.3)
    survivors = [
        p.name
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and _sid(int(p.name)) == pid and _state(int(p.name)) != "Z"
    ]
    assert survivors == []  # both sleeps (in the script's own session) were stopped
    assert lsched.count_jobs() == 0
    lsched.cancel(jid)  # cancelling an ended job is a no-op


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_local_elapse_limit_and_array(lsched, local, tmp_path):
    slow, _ = submit_local(lsched, local, tmp_path, "slow", elapse=1, command=["sleep", "30"])
    t0 = time.monotonic()
    assert wait_for(lsched, slow) == JobState.FAILED
    assert time.monotonic() - t0 < 15
    assert (lsched.state_dir / slow / "exit_code").read_text().strip() == "124"

    out = tmp_path / "arr.%j.out"
    arr, _ = submit_local(
        lsched,
        local,
        tmp_path,
        "arr",
        array="2-4",
        stdout=str(out),
        command=["sh", "-c", 'echo "index $MATDX_ARRAY_INDEX"'],
    )
    assert wait_for(lsched, arr) == JobState.COMPLETED
    assert (tmp_path / f"arr.{arr}.out").read_text() == "index 2\nindex 3\nindex 4\n"


def test_local_mpirun_job(lsched, local, tmp_path):
    """The local profile's launcher line really starts 2 ranks with Open MPI."""
    if not Path("/usr/bin/mpirun").exists():
        pytest.fail("/usr/bin/mpirun is missing (install openmpi-bin, see scripts/install.sh)")
    job = resolve_job(local, JobRequest(command=["sh", "-c", "echo rank-$OMPI_COMM_WORLD_RANK"]))
    script = tmp_path / "mpi.sh"
    script.write_text(lsched.render(job))
    jid = lsched.submit(script, job)
    assert wait_for(lsched, jid, timeout=60) == JobState.COMPLETED, (
        lsched.state_dir / jid / "stdout"
    ).read_text()
    lines = (lsched.state_dir / jid / "stdout").read_text().split()
    assert sorted(x for x in lines if x.startswith("rank-")) == ["rank-0", "rank-1"]


# -- FireWorks queue adapters ---------------------------------------------------------------


def test_qadapter_file_loads_and_renders_the_same_script(fugaku, tmp_path):
    from fireworks.utilities.fw_serializers import load_object, load_object_from_file

    from matdx.schedulers.fireworks_qadapter import (
        MatdxQueueAdapter,
        PjmQueueAdapter,
        write_qadapter,
    )

    request = JobRequest(job_name="qe", nodes=4, elapse="24h", group="hp120000")
    rocket = "rlaunch -c /home/u/fw_config singleshot"
    path = write_qadapter(tmp_path / "my_qadapter.yaml", fugaku, request, rocket_launch=rocket)
    text = path.read_text()
    assert "_fw_name: '{{matdx.schedulers.fireworks_qadapter.PjmQueueAdapter}}'" in text
    assert "_fw_q_type: pjm" in text and "elapse: '24:00:00'" in text

    qa = load_object_from_file(str(path))
    assert isinstance(qa, PjmQueueAdapter) and isinstance(qa, MatdxQueueAdapter)
    launch_dir = tmp_path / "launcher_2024-01-01"
    expected = PjmScheduler(fugaku).render(
        resolve_job(
            fugaku,
            request.model_copy(
                update={
                    "command": shlex.split(rocket),
                    "use_launcher": False,
                    "workdir": str(launch_dir),
                }
            ),
        )
    )
    script = qa.get_script_str(str(launch_dir))
    assert script == expected
    assert '#PJM -L "node=4"' in script and '#PJM --mpi "proc=16"' in script
    assert script.splitlines()[-1] == "rlaunch -c /home/u/fw_config singleshot"
    # FireWorks copies adapters through to_dict/load_object; from_file works too
    assert load_object(qa.to_dict()).get_script_str(str(launch_dir)) == expected
    assert PjmQueueAdapter.from_file(str(path)).get_script_str(str(launch_dir)) == expected


def test_qadapter_overrides_and_job_names(fugaku, tmp_path):
    from matdx.schedulers.fireworks_qadapter import make_qadapter

    qa = make_qadapter(fugaku, JobRequest(group="hp1"), rocket_launch="rlaunch singleshot")
    # what qlaunch -r does: job name from the Firework, then spec._queueadapter
    qa.update(job_name="relax Cu3Au; $(rm -rf ~)", nodes=8, elapse="2h")
    qa["rocket_launch"] += " --fw_id 42"
    script = qa.get_script_str(str(tmp_path))
    lines = script.splitlines()
    assert "#PJM -N relax_Cu3Au____rm_-rf___" in lines
    assert '#PJM -L "node=8"' in lines and '#PJM -L "elapse=02:00:00"' in lines
    assert lines[-1] == "rlaunch singleshot --fw_id 42"
    assert bash_syntax_ok(script)
    qa.update(nodes=1000)
    with pytest.raises(InputError, match="qadapter, field nodes: 1000 nodes exceeds"):
        qa.get_script_str(str(tmp_path))


def test_qadapter_errors(fugaku, x86):
    from matdx.schedulers.fireworks_qadapter import (
        PjmQueueAdapter,
        SlurmQueueAdapter,
        make_qadapter,
    )

    with pytest.raises(InputError, match="field group: site fugaku requires a group"):
        make_qadapter(fugaku, JobRequest())
    qa = make_qadapter(x86, JobRequest(group="p"))
    with pytest.raises(InputError, match="is not 'pjm'"):
        PjmQueueAdapter.from_dict({**qa.to_dict()})
    broken = SlurmQueueAdapter(q_type="slurm", profile={"site": "x"}, rocket_launch="rlaunch")
    with pytest.raises(InputError, match="qadapter profile, field scheduler: Field required"):
        broken.get_script_str(".")


def test_qadapter_submit_and_count_with_stand_ins(fakebin, fugaku, tmp_path, monkeypatch):
    from matdx.schedulers.fireworks_qadapter import make_qadapter

    qa = make_qadapter(
        fugaku, JobRequest(group="hp1", array="0-3"), rocket_launch="rlaunch rapidfire"
    )
    fakebin.add("pjsub", cat("[INFO] PJM 0000 pjsub Job 31337 submitted.\n"))
    fakebin.add("pjstat", cat(PJSTAT))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FW_submit.script").write_text(qa.get_script_str(str(tmp_path)))
    assert qa.submit_to_queue("FW_submit.script") == 31337
    assert fakebin.calls("pjsub") == [["--bulk", "--sparam", "0-3", "FW_submit.script"]]
    assert qa.get_njobs_in_queue() == 8


def test_qlaunch_with_the_local_adapter(local, tmp_path):
    """FireWorks' own queue launcher writes FW_submit.script with our adapter and submits it."""
    from fireworks.queue.queue_launcher import launch_rocket_to_queue

    from matdx.schedulers.fireworks_qadapter import write_qadapter

    state = tmp_path / "state"
    prof = type(local).model_validate({**local.model_dump(), "local": {"state_dir": str(state)}})
    path = write_qadapter(
        tmp_path / "my_qadapter.yaml",
        prof,
        JobRequest(elapse="5m"),
        rocket_launch="sh -c 'pwd > where.txt; echo launched'",
    )
    from fireworks.utilities.fw_serializers import load_object_from_file

    qa = load_object_from_file(str(path))
    lpad = SimpleNamespace(logdir=None)  # fill mode never queries the LaunchPad
    cwd = os.getcwd()
    try:
        jid = launch_rocket_to_queue(lpad, None, qa, str(tmp_path), False, "CRITICAL", True, True)
    finally:
        os.chdir(cwd)
    assert isinstance(jid, int)
    (launcher_dir,) = tmp_path.glob("launcher_*")
    assert (launcher_dir / "FW_submit.script").read_text().splitlines()[-1] == (
        "sh -c 'pwd > where.txt; echo launched'"
    )
    sched = LocalScheduler(prof)
    assert wait_for(sched, str(jid)) == JobState.COMPLETED
    assert (launcher_dir / "where.txt").read_text().strip() == str(launcher_dir)
    assert (state / str(jid) / "stdout").read_text() == "launched\n"


# -- a real Slurm cluster (opt-in) ----------------------------------------------------------


@pytest.mark.skipif(
    not os.environ.get("MATDX_TEST_SLURM_PROFILE"),
    reason="set MATDX_TEST_SLURM_PROFILE=hpc_profiles/ci_slurm.yaml on a host running Slurm",
)
def test_real_slurm_cluster(tmp_path):
    profile = load_profile(os.environ["MATDX_TEST_SLURM_PROFILE"])
    sched = scheduler_for(profile)
    job = resolve_job(
        profile,
        JobRequest(
            job_name="matdx-ci",
            elapse="2m",
            stdout=str(tmp_path / "out.%j"),
            workdir=str(tmp_path),
            command=["hostname"],
        ),
    )
    script = tmp_path / "job.sh"
    script.write_text(sched.render(job))
    jid = sched.submit(script, job)
    assert wait_for(sched, jid, timeout=180) == JobState.COMPLETED
    assert (tmp_path / f"out.{jid}").read_text().strip()
