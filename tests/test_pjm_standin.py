"""Black-box tests of the Fujitsu PJM stand-in in ``tests/pjm_standin`` (see its README.md).

The commands are run as a user would run them: through ``subprocess`` with ``PATH`` starting
with ``tests/pjm_standin`` and a private ``PJM_STANDIN_STATE``. Jobs really run, detached.
"""

from __future__ import annotations

import getpass
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

STANDIN = Path(__file__).resolve().parent / "pjm_standin"
SUBMITTED = re.compile(r"^\[INFO\] PJM 0000 pjsub Job (\d+(?:_\d+)?) submitted\.$")
ERROR = re.compile(r"^\[ERR\.\] PJM \d{4} (pjsub|pjstat|pjdel) \S")
HEADER = (
    "JOB_ID     JOB_NAME   MD ST  USER     START_DATE      ELAPSE_LIM NODE_REQUIRE    "
    "VNODE  CORE V_MEM"
)
RUNNING = {"RNA", "RNP", "RUN", "RNE", "RNO"}
FINAL = {"EXT", "CCL", "ERR"}


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def parse_table(text: str) -> list[dict[str, str]]:
    """Parse pjstat output by the header's column offsets (fixed-width, like the real one)."""
    lines = text.rstrip("\n").splitlines()
    cols = [(m.group(), m.start()) for m in re.finditer(r"\S+", lines[0])]
    rows = []
    for line in lines[1:]:
        row = {}
        for i, (title, start) in enumerate(cols):
            stop = cols[i + 1][1] if i + 1 < len(cols) else None
            row[title] = line[start:stop].strip()
        rows.append(row)
    return rows


def process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


class PJM:
    """Runs the stand-in's commands in a private state directory and work directory."""

    def __init__(self, tmp_path: Path) -> None:
        self.state = tmp_path / "state"
        self.work = tmp_path / "work"
        self.work.mkdir()
        self.env = dict(os.environ)
        self.env.update(
            PATH=f"{STANDIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            PJM_STANDIN_STATE=str(self.state),
            PJM_STANDIN_RSCGRPS="fast:4:120,tiny:1:10",
            PJM_STANDIN_KILL_GRACE="1",
        )

    def run(self, *args: str, check: bool = True, stdin: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            list(args), cwd=self.work, env=env or self.env, input=stdin,
            capture_output=True, text=True, timeout=30,
        )
        if check:
            assert proc.returncode == 0, f"{args}: rc={proc.returncode}\n{proc.stdout}{proc.stderr}"
        return proc

    def script(self, name: str, body: str) -> str:
        (self.work / name).write_text(body)
        return name

    def submit(self, *args: str, **kw: Any) -> str:
        out = self.run("pjsub", *args, **kw).stdout
        m = SUBMITTED.match(out.rstrip("\n"))
        assert m and out.count("\n") == 1, f"unexpected pjsub output {out!r}"
        return m.group(1)

    def stat(self, *args: str) -> list[dict[str, str]]:
        return parse_table(self.run("pjstat", *args).stdout)

    def row(self, jobid: str, *args: str) -> dict[str, str] | None:
        return next((r for r in self.stat(*args) if r["JOB_ID"] == jobid), None)

    def wait_state(self, jobid: str, states: set[str], timeout: float) -> dict[str, str]:
        def probe() -> dict[str, str] | None:
            r = self.row(jobid, "-v") or self.row(jobid, "-H", "-v")
            return r if r and r["ST"] in states else None

        return wait_until(probe, timeout, f"job {jobid} in {sorted(states)}")

    def wait_end(self, jobid: str, timeout: float = 10) -> dict[str, str]:
        return wait_until(lambda: self.row(jobid, "-H", "-v"), timeout, f"job {jobid} to end")


@pytest.fixture
def pjm(tmp_path: Path) -> Iterator[PJM]:
    p = PJM(tmp_path)
    yield p
    # cancel whatever a failed test left running
    if p.state.exists():
        ids = [r["JOB_ID"] for r in p.stat()]
        if ids:
            p.run("pjdel", *ids, check=False)
            wait_until(lambda: not p.stat(), 10, "leftover jobs to be cancelled")


def test_submit_message_runs_job_and_writes_default_output_files(pjm: PJM) -> None:
    pjm.script("hello.sh", "#!/bin/bash\necho hello from $PJM_JOBID\necho oops >&2\nexit 3\n")
    first = pjm.submit("hello.sh")
    second = pjm.submit("hello.sh")
    assert int(second) == int(first) + 1
    for jobid in (first, second):
        row = pjm.wait_end(jobid)
        assert row["ST"] == "EXT" and row["EC"] == "3" and row["PC"] == "0", row
    assert (pjm.work / f"hello.sh.{first}.out").read_text() == f"hello from {first}\n"
    assert (pjm.work / f"hello.sh.{first}.err").read_text() == "oops\n"
    # -j merges stderr into stdout
    merged = pjm.submit("-j", "hello.sh")
    pjm.wait_end(merged)
    assert (pjm.work / f"hello.sh.{merged}.out").read_text() == f"hello from {merged}\noops\n"
    assert not list(pjm.work.glob(f"*.{merged}.err"))
    # a job name starting with a digit gets a "J" in front in the file names (NormalJob)
    pjm.script("7up.sh", "#!/bin/sh\necho seven\n")
    seven = pjm.submit("7up.sh")
    pjm.wait_end(seven)
    assert (pjm.work / f"J7up.sh.{seven}.out").read_text() == "seven\n"
    # a script on standard input is named STDIN
    stdin_job = pjm.submit(stdin="#!/bin/sh\necho piped\n")
    pjm.wait_end(stdin_job)
    assert (pjm.work / f"STDIN.{stdin_job}.out").read_text() == "piped\n"


def test_job_environment_directives_and_options(pjm: PJM, tmp_path: Path) -> None:
    pjm.script(
        "env.sh",
        "#!/bin/bash\n"
        "#PJM -L \"node=2\"\n"
        "#PJM -L \"rscgrp=fast\"\n"
        "#PJM -L \"elapse=01:30\"\n"
        "#PJM --mpi \"proc=8\" # comment after a directive\n"
        "#PJM -N from_script\n"
        "#PJM -x FROM_SCRIPT=1\n"
        "#PJM --llio localtmp-size=10Gi\n"
        "#PJM -g grp1\n"
        "env | sort > env.$PJM_JOBID.txt\n"
        "echo \"args:$*\" >> env.$PJM_JOBID.txt\n",
    )
    env = dict(pjm.env, SUBMIT_ONLY="visible-with-X")
    # command-line options win over the script's directives
    jobid = pjm.submit("-N", "from_cli", "-x", "FOO=bar,BAZ=qux,PJM_JOBID=forged",
                       "--comment", "note", "env.sh", "a1", "a2", env=env)
    with_x = pjm.submit("-X", "env.sh", env=env)
    for j in (jobid, with_x):
        assert pjm.wait_end(j)["ST"] == "EXT"
    got = dict(
        line.split("=", 1)
        for line in (pjm.work / f"env.{jobid}.txt").read_text().splitlines()
        if "=" in line
    )
    expected = {
        "PJM_JOBID": jobid,
        "PJM_SUBJOBID": jobid,
        "PJM_JOBNAME": "from_cli",
        "PJM_O_WORKDIR": str(pjm.work),
        "PJM_JOBDIR": str(pjm.work),
        "PJM_ENVIRONMENT": "BATCH",
        "PJM_COMMENT": "note",
        "FOO": "bar",
        "BAZ": "qux",
        "FROM_SCRIPT": "1",
        "PWD": str(pjm.work),
    }
    assert {k: got.get(k) for k in expected} == expected
    assert "SUBMIT_ONLY" not in got and "PJM_STANDIN_STATE" not in got  # no -X: not inherited
    assert "args:a1 a2" in (pjm.work / f"env.{jobid}.txt").read_text()
    assert "SUBMIT_ONLY=visible-with-X" in (pjm.work / f"env.{with_x}.txt").read_text()
    assert (pjm.work / f"from_cli.{jobid}.out").exists()
    row = pjm.row(jobid, "-H", "-v")
    assert row is not None and row["GROUP"] == "grp1" and row["RSC_GRP"] == "fast"


def test_runs_under_the_system_python(pjm: PJM) -> None:
    python = "/usr/bin/python3"
    if not os.access(python, os.X_OK):
        python = "python3"
    pjm.script("sys.sh", "#!/bin/sh\necho ok\n")
    out = pjm.run(python, str(STANDIN / "pjsub"), "sys.sh").stdout
    jobid = SUBMITTED.match(out.strip()).group(1)  # type: ignore[union-attr]
    assert pjm.wait_end(jobid)["ST"] == "EXT"
    assert "JOB_ID" in pjm.run(python, str(STANDIN / "pjstat"), "-H").stdout


def test_bulk_job_runs_one_sub_job_per_number(pjm: PJM) -> None:
    pjm.script("bulk.sh", "#!/bin/bash\necho \"n=$PJM_BULKNUM sub=$PJM_SUBJOBID\"\nsleep 1\n")
    jobid = pjm.submit("--bulk", "--sparam", "1-3", "bulk.sh")
    assert jobid.isdigit()
    top = pjm.stat()
    assert [r["JOB_ID"] for r in top] == [jobid] and top[0]["MD"] == "BU"
    expanded = [r["JOB_ID"] for r in pjm.stat("-E")]
    assert expanded == [jobid, f"{jobid}[1]", f"{jobid}[2]", f"{jobid}[3]"]
    assert pjm.row(f"{jobid}[2]", f"{jobid}[2]") is not None  # a sub-job id as argument
    end = pjm.wait_end(jobid)
    assert end["ST"] == "EXT" and end["MD"] == "BU"
    for n in (1, 2, 3):
        text = (pjm.work / f"bulk.sh.{jobid}[{n}].out").read_text()
        assert text == f"n={n} sub={jobid}[{n}]\n"
    assert {r["ST"] for r in pjm.stat("-H", "-E") if r["JOB_ID"].startswith(jobid)} == {"EXT"}


def test_elapse_limit_kills_the_job(pjm: PJM) -> None:
    pjm.script("long.sh", "#!/bin/bash\necho $$ > pid.txt\nsleep 60\necho not reached\n")
    t0 = time.monotonic()
    jobid = pjm.submit("-L", "rscgrp=fast,elapse=2", "-S", "long.sh")
    row = pjm.wait_end(jobid, timeout=10)
    took = time.monotonic() - t0
    assert 1.5 < took < 7, f"job ended after {took:.1f} s for a 2 s limit"
    # Fugaku: the job ends (EXT) with PJM code 11, elapse limit exceeded
    assert row["ST"] == "EXT" and row["PC"] == "11" and row["SN"] == "15" and row["EC"] == "143"
    assert "ELAPSE" in row["REASON"]
    assert pjm.row(jobid) is None  # no longer among unfinished jobs
    history = pjm.row(jobid, "-H")
    assert history is not None and history["ELAPSE_LIM"] == "0000:00:02"
    stats = (pjm.work / f"long.sh.{jobid}.stats").read_text()
    assert re.search(r"^ PJM CODE\s+: 11$", stats, re.M), stats
    assert "not reached" not in (pjm.work / f"long.sh.{jobid}.out").read_text()
    pid = int((pjm.work / "pid.txt").read_text())
    assert not process_alive(pid)


def test_pjdel_cancels_running_and_queued_jobs(pjm: PJM) -> None:
    pjm.script(
        "long.sh",
        "#!/bin/bash\nsleep 60 &\necho $! > child.$PJM_JOBID\necho $$ > pid.$PJM_JOBID\nwait\n",
    )
    running = pjm.submit("long.sh")
    queued = pjm.submit("long.sh", env=dict(pjm.env, PJM_STANDIN_QUEUE_DELAY="60"))
    pjm.wait_state(running, {"RUN"}, 5)
    wait_until(lambda: (pjm.work / f"pid.{running}").exists(), 5, "the job script to start")
    assert pjm.row(queued)["ST"] == "QUE"  # type: ignore[index]
    out = pjm.run("pjdel", running, queued).stdout
    assert out.splitlines() == [
        f"[INFO] PJM 0100 pjdel Accepted job {running}.",
        f"[INFO] PJM 0100 pjdel Accepted job {queued}.",
    ]
    for jobid, started in ((running, True), (queued, False)):
        row = pjm.wait_end(jobid)
        assert row["ST"] == "CCL" and row["PC"] == "1", row
        assert (row["START_DATE"] != "-") is started
    for name in ("pid", "child"):  # the script and the sleep it put in the background
        pid = int((pjm.work / f"{name}.{running}").read_text())
        assert not process_alive(pid), name
    again = pjm.run("pjdel", running, check=False)
    unknown = pjm.run("pjdel", "999999", check=False)
    for proc in (again, unknown):
        assert proc.returncode != 0 and ERROR.match(proc.stderr), proc.stderr
    assert unknown.stderr == "[ERR.] PJM 0112 pjdel Job 999999 does not exist.\n"


def test_pjstat_columns(pjm: PJM) -> None:
    pjm.script("cols.sh", "#!/bin/bash\nsleep 30\n")
    jobid = pjm.submit("-L", "rscgrp=fast,node=2,elapse=1:00", "-N", "colsjob", "cols.sh")
    waiting = pjm.submit("-L", "node=4:noncont", "cols.sh",
                         env=dict(pjm.env, PJM_STANDIN_QUEUE_DELAY="60"))
    pjm.wait_state(jobid, {"RUN"}, 5)
    pjm.wait_state(waiting, {"QUE"}, 5)
    text = pjm.run("pjstat").stdout
    assert text.splitlines()[0] == HEADER
    rows = {r["JOB_ID"]: r for r in parse_table(text)}
    run = rows[jobid]
    assert run["JOB_NAME"] == "colsjob" and run["MD"] == "NM" and run["ST"] == "RUN"
    assert run["USER"] == getpass.getuser()
    assert re.fullmatch(r"\d\d/\d\d \d\d:\d\d:\d\d", run["START_DATE"]), run
    assert run["ELAPSE_LIM"] == "0000:01:00" and run["NODE_REQUIRE"] == "2"
    assert (run["VNODE"], run["CORE"], run["V_MEM"]) == ("-", "-", "-")
    que = rows[waiting]
    assert que["ST"] == "QUE" and re.fullmatch(r"\(\d\d/\d\d \d\d:\d\d\)", que["START_DATE"])
    assert que["ELAPSE_LIM"] == "0072:00:00" and que["NODE_REQUIRE"] == "4:noncont"
    # whitespace-split parsing, as scripts commonly do it, sees the same fields
    line = next(ln for ln in text.splitlines() if ln.startswith(jobid))
    assert line.split()[:4] == [jobid, "colsjob", "NM", "RUN"]
    assert pjm.run("pjstat", "not-a-job", check=False).returncode != 0
    pjm.run("pjdel", jobid, waiting)


@pytest.mark.parametrize(
    "options",
    [
        ["-L", "rscgrp=nosuchgroup"],
        ["-L", "rscgrp=fast,node=5"],
        ["-L", "rscgrp=small,elapse=72:00:01"],
        ["-L", "rscgrp=tiny,elapse=11"],
        ["-L", "node=0"],
        ["--mpi", "proc=9,max-proc-per-node=4", "-L", "node=2"],
        ["--no-such-option"],
        # options real PJM may have but Fugaku's guide does not document
        ["-o", "out.txt"],
        ["-e", "err.txt"],
        ["-z", "jid"],
        ["-p", "1"],
        ["-L", "rscgrp=large,node=1"],
        ["-L", "nosuchresource=1"],
        ["--mpi", "rank-map-bynode"],
        ["-s", "-S"],
        ["--spath", "x.stats"],
        ["--sparam", "1-2"],
        ["--bulk", "--step", "--sparam", "1-2"],
        ["--bulk"],
        ["--step", "--sparam", "jid=1,jnam=a"],
        ["--step", "--sparam", "nosuch=1"],
        ["--step", "--sparam", "sd=ec!=0"],
        ["--name", "1bad"],
        ["--interact"],
    ],
)
def test_rejected_submissions(pjm: PJM, options: list[str]) -> None:
    pjm.script("ok.sh", "#!/bin/sh\ntrue\n")
    proc = pjm.run("pjsub", *options, "ok.sh", check=False)
    assert proc.returncode != 0
    assert ERROR.match(proc.stderr), proc.stderr
    assert proc.stdout == ""
    assert not (pjm.state / "jobs").exists() or not list((pjm.state / "jobs").iterdir())


def test_limits_in_script_directives_are_checked(pjm: PJM) -> None:
    pjm.script("big.sh", '#!/bin/sh\n#PJM -L "rscgrp=small,node=385"\ntrue\n')
    proc = pjm.run("pjsub", "big.sh", check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip() == "[ERR.] PJM 0057 pjsub node=385 is greater than the upper limit (384)."
    # the guide's messages: elapse in seconds (pjsubCommandOptions), lower limit (UsageRules)
    pjm.script("ok.sh", "#!/bin/sh\ntrue\n")
    over = pjm.run("pjsub", "-L", "rscgrp=small,elapse=72:00:01", "ok.sh", check=False)
    assert over.stderr == "[ERR.] PJM 0057 pjsub elapse=259201 is greater than the upper limit (259200).\n"
    low = pjm.run("pjsub", "-L", "rscgrp=large", "ok.sh", check=False)
    assert low.stderr == "[ERR.] PJM 0054 pjsub node=1 is less than the lower limit (385).\n"
    assert pjm.run("pjsub", "missing.sh", check=False).returncode != 0


def test_step_job_runs_steps_in_order(pjm: PJM) -> None:
    pjm.script(
        "step.sh",
        "#!/bin/bash\ndate +%s.%N > t.$PJM_SUBJOBID.start\nsleep 0.5\n"
        "date +%s.%N > t.$PJM_SUBJOBID.end\nexit ${RC:-0}\n",
    )
    first = pjm.submit("--step", "-x", "RC=2", "step.sh")
    jobid, stepno = first.split("_")
    assert stepno == "0"
    second = pjm.submit("--step", "--sparam", f"jid={jobid}", "step.sh")
    third = pjm.submit("--step", "--sparam", f"jid={jobid},sd=ec!=0:all:1", "step.sh")
    assert (second, third) == (f"{jobid}_1", f"{jobid}_2")
    assert [r["JOB_ID"] for r in pjm.stat("-E")][:1] == [jobid]
    pjm.wait_end(jobid)
    rows = {r["JOB_ID"]: r for r in pjm.stat("-H", "-E", "-v")}
    assert rows[jobid]["MD"] == "ST"
    assert rows[first]["EC"] == "2" and rows[second]["EC"] == "0"
    assert rows[third]["ST"] == "EXT"  # step 1 ended with 0, so sd=ec!=0 did not cancel it
    end_0 = float((pjm.work / f"t.{first}.end").read_text())
    start_1 = float((pjm.work / f"t.{second}.start").read_text())
    assert start_1 >= end_0


def test_step_dependency_cancels_following_steps(pjm: PJM) -> None:
    # sub-jobs join a step job only while one of its sub-jobs remains: the first sleeps
    pjm.script("fail.sh", "#!/bin/sh\nsleep 1\nexit 1\n")
    first = pjm.submit("--step", "fail.sh")
    jobid = first.split("_")[0]
    pjm.submit("--step", "--sparam", f"jid={jobid},sd=ec!=0:all", "fail.sh")
    pjm.submit("--step", "--sparam", f"jid={jobid}", "fail.sh")
    pjm.wait_end(jobid)
    rows = {r["JOB_ID"]: r for r in pjm.stat("-H", "-E", "-v")}
    assert [rows[f"{jobid}_{n}"]["ST"] for n in range(3)] == ["EXT", "CCL", "CCL"]
    assert rows[f"{jobid}_1"]["PC"] == "6"


def test_concurrent_submissions_get_distinct_increasing_ids(pjm: PJM) -> None:
    pjm.script("quick.sh", "#!/bin/sh\ntrue\n")
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: pjm.submit("quick.sh"), range(8)))
    assert len(set(ids)) == 8
    numbers = sorted(int(i) for i in ids)
    assert numbers == list(range(numbers[0], numbers[0] + 8))
    later = pjm.submit("quick.sh")
    assert int(later) == numbers[-1] + 1
    for jobid in ids:
        assert pjm.wait_end(jobid)["ST"] == "EXT"


def test_step_dependency_on_a_named_sub_job_and_by_job_name(pjm: PJM) -> None:
    """StepJob: ``sd=ec!=0:one:0`` tests sub-job 0 and deletes only this one; ``jnam``."""
    pjm.script("fail.sh", "#!/bin/sh\nsleep 1\nexit 1\n")
    pjm.script("ok.sh", "#!/bin/sh\nexit 0\n")
    first = pjm.submit("--step", "--sparam", "jnam=chain", "fail.sh")
    jobid = first.split("_")[0]
    assert pjm.submit("--step", "--sparam", "jnam=chain", "ok.sh") == f"{jobid}_1"
    assert pjm.submit("--step", "--sparam", f"jid={jobid},sd=ec!=0:one:0", "ok.sh") == f"{jobid}_2"
    assert pjm.submit("--step", "--sparam", f"jid={jobid}", "ok.sh") == f"{jobid}_3"
    pjm.wait_end(jobid)
    rows = {r["JOB_ID"]: r for r in pjm.stat("-H", "-E", "-v")}
    assert [rows[f"{jobid}_{n}"]["ST"] for n in range(4)] == ["EXT", "EXT", "CCL", "EXT"]
    assert rows[f"{jobid}_0"]["JOB_NAME"] == "chain" and rows[f"{jobid}_2"]["PC"] == "6"
    # a step job that has ended takes no more sub-jobs
    late = pjm.run("pjsub", "--step", "--sparam", f"jid={jobid}", "ok.sh", check=False)
    assert late.returncode == 1
    assert late.stderr == f"[ERR.] PJM 0012 pjsub Job {jobid} does not exist.\n"


def test_pjstat_takes_only_documented_options(pjm: PJM) -> None:
    """DisplayingJobStatus: -H [day=N] (1-90), -v, -s, -S, -E; ranges of ids; nothing else."""
    pjm.script("quick.sh", "#!/bin/sh\ntrue\n")
    first = pjm.submit("quick.sh")
    second = pjm.submit("quick.sh")
    pjm.wait_end(first)
    pjm.wait_end(second)
    both = [r["JOB_ID"] for r in pjm.stat("-H", "day=1", f"{first}-{second}")]
    assert both == [first, second]
    for bad in (["-A"], ["-u", "root"], ["-H", "day=0"], ["-H", "day=91"], ["day=3"],
                ["-s", "-v"], ["-s", "-S"], ["--limit"]):
        proc = pjm.run("pjstat", *bad, check=False)
        assert proc.returncode == 1 and ERROR.match(proc.stderr), (bad, proc.stderr)


def test_singularity_job_environment_is_accepted(pjm: PJM) -> None:
    """``-L jobenv=singularity`` (Fugaku's Singularity guide) is recorded; the job runs."""
    pjm.script("img.sh", '#!/bin/sh\n#PJM -L "jobenv=singularity"\necho in-job\n')
    jobid = pjm.submit("img.sh")
    assert pjm.wait_end(jobid)["ST"] == "EXT"
    assert (pjm.work / f"img.sh.{jobid}.out").read_text() == "in-job\n"


# --- Fujitsu MPI's mpiexec inside a job (MPI/HowToExecuteABackgroundJob) -----------------

RANK = "sh -c 'echo node=$PJM_STANDIN_NODE; sleep 1'"


def test_concurrent_mpiexec_with_the_slot_farms_vcoord_files(pjm: PJM) -> None:
    import shlex

    from matdx.sites.models import load_profile
    from matdx.sites.slots import launch_prefix, plan_job, resolve_request, vcoord_text

    fugaku = load_profile(Path(__file__).resolve().parents[1] / "hpc_profiles" / "fugaku.yaml")
    slots = plan_job(fugaku, 3, resolve_request(fugaku, {"ranks_per_node": 2, "threads": 24}))
    assert len(slots) == 3
    lines = []
    for i, slot in enumerate(slots):
        (pjm.work / f"vcoord.{i}").write_text(vcoord_text(slot))
        prefix = launch_prefix(fugaku, slot, vcoordfile=f"vcoord.{i}")
        lines.append(f"{shlex.join(prefix)} {RANK} &")
    pjm.script("slots.sh", "#!/bin/bash\n#PJM -L node=3\n" + "\n".join(lines) + "\nwait\n")
    jobid = pjm.submit("-X", "slots.sh")
    row = pjm.wait_end(jobid, 30)
    assert row["EC"] == "0", (pjm.work / f"slots.sh.{jobid}.err").read_text()
    # -stdout-proc ./output.%j/%m/%/1000r/stdout: one file per call (%m) and rank
    nodes = {}
    for f in (pjm.work / f"output.{jobid}").glob("*/0/stdout.*"):
        count, _rank = f.name.split(".")[1:]
        assert f.parent.parent.name == count
        nodes.setdefault(count, set()).add(f.read_text().strip())
    # three calls ran at once, each with its two ranks on its own node
    assert sorted(nodes.values(), key=sorted) == [{"node=0"}, {"node=1"}, {"node=2"}]


@pytest.mark.parametrize(
    ("vcoords", "message"),
    [
        (["(0)\n(1)\n", "(1)\n(2)\n"], "VCOORD coordinates [1] are used by another mpiexec"),
        (["(0)\n(3)\n"], "line 2: node 3 is beyond the job's 3 node(s)"),
        (["0\n1\n"], "line 1: '0' is not a coordinate (x)"),
        (["(0)\n"], "has 1 coordinate(s) for -n 2"),
    ],
)
def test_mpiexec_refuses_bad_or_overlapping_vcoord_files(pjm: PJM, vcoords, message) -> None:
    lines = []
    for i, text in enumerate(vcoords):
        (pjm.work / f"v{i}").write_text(text)
        lines.append(f"mpiexec --vcoordfile v{i} -n 2 sh -c 'sleep 2' &")
    pjm.script("bad.sh", "#!/bin/bash\n#PJM -L node=3\n" + "\n".join(lines) + "\nwait\n")
    jobid = pjm.submit("-X", "bad.sh")
    pjm.wait_end(jobid, 30)
    err = (pjm.work / f"bad.sh.{jobid}.err").read_text()
    assert message in err, err


def test_mpiexec_output_goes_to_per_rank_files_never_to_its_own(pjm: PJM) -> None:
    """MPI/InputOutputRedirection: default naming, -std-proc's one file, no empty files."""
    pjm.script("io.sh", "#!/bin/bash\n#PJM -L node=1\n"
               "mpiexec -n 2 sh -c 'echo out$PJM_STANDIN_RANK; echo err >&2'\n"
               "mpiexec -n 1 -std-proc both sh -c 'echo a; echo b >&2; echo c'\n"
               "mpiexec -n 1 -stdout-proc quiet/out true\n"
               "PLE_MPI_STD_EMPTYFILE=on mpiexec -n 1 -stdout-proc kept/out true\n")
    jobid = pjm.submit("-X", "io.sh")
    assert pjm.wait_end(jobid, 30)["EC"] == "0"
    work = pjm.work
    assert (work / f"io.sh.{jobid}.out").read_text() == ""  # nothing on mpiexec's stdout
    # ./output.<jobid>/<rank rounded down to 1000>/<count>/stdout.<count>.<rank>
    first = work / f"output.{jobid}" / "0" / "1"
    assert (first / "stdout.1.0").read_text() == "out0\n"
    assert (first / "stdout.1.1").read_text() == "out1\n"
    assert (first / "stderr.1.1").read_text() == "err\n"
    assert (work / "both.2.0").read_text() == "a\nb\nc\n"
    # an empty output makes no file (PLE_MPI_STD_EMPTYFILE=off by default); the directory is
    # made all the same
    assert (work / "quiet").is_dir() and not list((work / "quiet").iterdir())
    assert not (work / f"output.{jobid}" / "0" / "3" / "stderr.3.0").exists()
    assert (work / "kept" / "out.4.0").read_text() == ""
