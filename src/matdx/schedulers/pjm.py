"""Fujitsu PJM (Fugaku): ``#PJM`` scripts, ``pjsub``, ``pjstat``, ``pjdel``, as documented.

Every option used here is in the public Fugaku user guide (RIKEN-RCCS/fugaku-doc,
``docs/user-guide/sys-use/user-guide-use-1.52``; pages cited below by name):

* bulk jobs: ``pjsub --bulk --sparam "first-last" script``, sub-job ids ``12345[3]``, the
  number in ``${PJM_BULKNUM}`` (JobExecution/BulkJob);
* step jobs: the first sub-job ``pjsub --step script`` (id ``12345_0``), each next one
  ``pjsub --step --sparam "jid=12345,sd=ec!=0:all:0" script`` (id ``12345_1``), which PJM
  deletes, with every later sub-job, unless sub-job 0 ended with exit status 0
  (JobExecution/StepJob, "Job submission example with dependency");
* ``pjstat [ids]`` lists the caller's unfinished jobs; ``pjstat -H day=N -v [ids]`` those
  ended in the last N days (1-90), ``-v`` adding the REASON and PC (PJM code) columns
  (JobExecution/DisplayingJobStatus; LayeredStorageAndLLIO/TheSecondLayerStrage names
  "the PC (PJM CODE) value of the pjstat" command);
* ``pjdel id`` answers ``[INFO] PJM 0100 pjdel Accepted job id.`` or ``[ERR.] PJM 0112
  pjdel Job id does not exist.`` (JobExecution/DeletingAJobJobOperations).

A job that ended (ST ``EXT``) is ``COMPLETED`` only if nothing says otherwise: a non-zero
PJM code (11: elapse limit exceeded, 12: memory, 20: node down... see
JobExecution/CheckingAbnormalEndOfJob), a non-zero exit code, or a REASON that reports a
forced end (:data:`FORCED_END_REASONS`) make it ``FAILED``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from matdx.core.errors import InputError
from matdx.schedulers.base import (
    FINAL_STATES,
    JobId,
    JobState,
    Scheduler,
    SchedulerError,
    assign,
    check_job_ids,
    one_line,
)
from matdx.sites.job import ResolvedJob
from matdx.sites.models import Llio
from matdx.sites.quoting import quote

PJM_STATES: dict[str, JobState] = {
    "ACC": JobState.QUEUED,
    "QUE": JobState.QUEUED,
    "RNA": JobState.RUNNING,
    "RNP": JobState.RUNNING,
    "RUN": JobState.RUNNING,
    "RNE": JobState.RUNNING,
    "RNO": JobState.RUNNING,
    "RSM": JobState.RUNNING,
    "SPP": JobState.HELD,
    "SPD": JobState.HELD,
    "HLD": JobState.HELD,
    "EXT": JobState.COMPLETED,
    "CCL": JobState.CANCELLED,
    "ERR": JobState.FAILED,
    "RJT": JobState.FAILED,
}
"""The ST column (DisplayingJobStatus, "job status"): ACC/QUE queued; RNA, RNP, RUN, RNE,
RNO, RSM running; SPP, SPD, HLD held; EXT ended; CCL cancelled; ERR, RJT failed."""

CANCEL_CODES = frozenset({1, 6})
"""PJM codes of a job cancelled on purpose: by ``pjdel`` (1) or by a step job's dependency
expression (6) (CheckingAbnormalEndOfJob, PJM code table). Every other non-zero code is a
failure: 11 elapse limit, 12 memory, 13 disk, 16 output file, 18 ended for another job,
20 node down, 23 OOM killer..."""

FORCED_END_REASONS = frozenset(
    {
        "ELAPSE LIMIT EXCEEDED",
        "LIMIT OVER MEMORY",
        "FILE IO ERROR",
        "NO CURRENT DIR",
        "ANOTHER JOB STARTED",
        "DEADLINE SCHEDULE STARTED",
        "INTERNAL ERROR",
        "LOST COMM",
        "RESUME FAIL",
        "SUSPEND FAIL",
        "GATE CHECK",
    }
)
"""REASON messages (``pjstat -v``, DisplayingJobStatus "output messages") that mean the
system ended or refused the job."""

DATE_COLUMNS = ("_DATE", "ACCEPT")
"""Columns (by name ending) whose values are a date and a time (``11/29 03:02:14``)."""

# Common file distribution (LayeredStorageAndLLIO/TheSecondLayerStrage; Spack guide)
LLIO_TRANSFER = "/usr/bin/llio_transfer"
DIR_TRANSFER = "/home/system/tool/dir_transfer"
LLIO_TRANSFER_MAX_FILES = 16_384
SPACK_ROOT = "/vol0004/apps/oss/spack"

_SUBMITTED = re.compile(r"\bJob\s+(\d+(?:_\d+|\[\d+\])?)\s+submitted")
_DATE = re.compile(r"^\(?\d{1,4}/\d{1,2}(?:/\d{1,2})?$")
_TIME = re.compile(r"^\d{1,2}:\d{2}(?::\d{2})?\)?$")
_STEP_ID = re.compile(r"^(\d+)_(\d+)$")


def parse_pjsub(stdout: str) -> JobId:
    """The job id in ``[INFO] PJM 0000 pjsub Job 12345 submitted.`` (not the 0000 code)."""
    m = _SUBMITTED.search(stdout)
    if not m:
        raise SchedulerError(f"pjsub printed no job id: {one_line(stdout) or 'nothing'}")
    return m.group(1)


def _row_cells(header: list[str], tokens: list[str]) -> dict[str, str]:
    """Assign tokens to header columns; date columns may take two (``11/17 09:01:41``).

    The last column (REASON under ``-v``) takes the rest of the line: its messages have
    spaces (``ELAPSE LIMIT EXCEEDED``).
    """
    cells: dict[str, str] = {}
    i = 0
    for n, col in enumerate(header):
        if i >= len(tokens):
            break
        if (
            col.endswith(DATE_COLUMNS)
            and i + 1 < len(tokens)
            and _DATE.match(tokens[i])
            and _TIME.match(tokens[i + 1])
        ):
            cells[col] = f"{tokens[i]} {tokens[i + 1]}"
            i += 2
        elif n == len(header) - 1:
            cells[col] = " ".join(tokens[i:])
            i = len(tokens)
        else:
            cells[col] = tokens[i]
            i += 1
    return cells


def _code(cells: dict[str, str], column: str) -> int | None:
    value = cells.get(column, "")
    return int(value) if re.fullmatch(r"-?\d+", value) else None


def end_state(st: str, cells: dict[str, str]) -> JobState:
    """Our state of a row: its ST code, refined by PC, EC and REASON once it ended."""
    state = PJM_STATES.get(st.upper(), JobState.UNKNOWN)
    if state not in (JobState.COMPLETED, JobState.CANCELLED):
        return state
    pc, ec = _code(cells, "PC"), _code(cells, "EC")
    forced = cells.get("REASON", "").strip().upper() in FORCED_END_REASONS
    if state is JobState.CANCELLED:
        return JobState.FAILED if forced or (pc and pc not in CANCEL_CODES) else state
    return JobState.FAILED if forced or pc or ec else state


def parse_pjstat(text: str) -> list[tuple[str, JobState]]:
    """Rows of ``pjstat`` / ``pjstat -H -v`` / ``pjstat -E``, finding columns by header name.

    Tolerates extra columns and two-token dates; an ended job is ``FAILED`` when its PC,
    EC or REASON say so (:func:`end_state`).
    """
    rows: list[tuple[str, JobState]] = []
    header: list[str] | None = None
    for line in text.splitlines():
        tokens = line.split()
        if not tokens:
            continue
        if "JOB_ID" in tokens and "ST" in tokens:
            header = tokens
            continue
        if header is None or not re.match(r"^\d", tokens[0]):
            continue
        cells = _row_cells(header, tokens)
        jid, st = cells.get("JOB_ID"), cells.get("ST", "")
        if jid:
            rows.append((jid, end_state(st, cells)))
    return rows


class PjmScheduler(Scheduler):
    """Fujitsu Technical Computing Suite job manager (PJM)."""

    kind = "pjm"
    array_index_var = "PJM_BULKNUM"

    def directives(self, job: ResolvedJob) -> list[str]:
        """``#PJM`` lines; every value was checked against a strict pattern."""
        req, prof = job.request, job.profile
        d = "#PJM"
        out = [
            f"{d} -N {job.job_name}",
            f'{d} -L "node={job.nodes}"',
            f'{d} -L "rscgrp={job.rscgrp}"',
            f'{d} -L "elapse={job.elapse_hms}"',
            f'{d} --mpi "proc={job.total_ranks}"',
            f'{d} --mpi "max-proc-per-node={job.ranks_per_node}"',
        ]
        if prof.container is not None and prof.container.jobenv:
            out.append(f'{d} -L "jobenv={prof.container.jobenv}"')
        if job.group:
            out.append(f"{d} -g {job.group}")
        llio = prof.pjm.llio if prof.pjm is not None else Llio()
        gfscache = req.llio_gfscache or llio.gfscache
        if gfscache:  # the volumes the job uses (NormalJob, SampleScripts)
            out.append(f"{d} -x PJM_LLIO_GFSCACHE={gfscache}")
        shared = req.llio_sharedtmp_size or llio.sharedtmp_size
        if shared:
            out.append(f"{d} --llio sharedtmp-size={shared}")
        if llio.localtmp_size:
            out.append(f"{d} --llio localtmp-size={llio.localtmp_size}")
        out.append(f"{d} -j")  # stderr into <name>.<id>.out (pjsubCommandOptions)
        if prof.pjm is None or prof.pjm.stats:
            out.append(f"{d} -S")
        return out

    def staging_lines(self, job: ResolvedJob) -> list[str]:
        """Common-file distribution of the profile's LLIO ``transfer`` paths.

        Files go through ``llio_transfer``, directories through ``dir_transfer``, and with
        ``transfer_spack`` the Spack directories on ``PATH`` and ``LD_LIBRARY_PATH`` after
        the set-up lines' ``spack load`` (Fugaku guide, LayeredStorageAndLLIO/
        TheSecondLayerStrage "Common file distribution function", at most 16,384 files;
        Spack guide, "dir_transfer" for multi-node jobs).
        """
        llio = job.profile.pjm.llio if job.profile.pjm is not None else Llio()
        lines = []
        if llio.transfer or llio.transfer_spack:
            lines.append("# distribute files every node reads to the LLIO cache")
        files = 0
        for path in llio.transfer:
            target = Path(path)
            if target.is_dir():
                files += sum(len(names) for _, _, names in os.walk(target))
                lines.append(f"{DIR_TRANSFER} {quote(path)}")
            elif target.is_file():
                files += 1
                lines.append(f"{LLIO_TRANSFER} {quote(path)}")
            else:
                raise InputError(f"LLIO transfer path {path} does not exist")
        if files > LLIO_TRANSFER_MAX_FILES:
            raise InputError(
                f"LLIO transfer paths hold {files} files, more than llio_transfer's "
                f"{LLIO_TRANSFER_MAX_FILES}: name fewer directories in pjm.llio.transfer"
            )
        if llio.transfer_spack:
            for var in ("PATH", "LD_LIBRARY_PATH"):
                lines.append(
                    f"echo \"${var}\" | tr ':' '\\n' | grep '^{SPACK_ROOT}' "
                    f"| xargs -r {DIR_TRANSFER}"
                )
        return lines

    def submit_args(self, script_path: str | Path, job: ResolvedJob | None = None) -> list[str]:
        """Arguments of ``pjsub``: bulk range, or step job, then the script.

        A job with ``after`` (a sub-job id ``J_N``, checked by
        :func:`matdx.sites.job.resolve_job`) becomes the next sub-job of step job ``J``,
        deleted with every later one unless sub-job ``N`` ended with exit status 0
        (``sd=ec!=0:all:N``, StepJob); a job with ``step`` starts a new step job.
        """
        args: list[str] = []
        if job is not None and job.array is not None:
            args += ["--bulk", "--sparam", f"{job.array[0]}-{job.array[1]}"]
        if job is not None and job.request.after:
            m = _STEP_ID.match(job.request.after)
            if m is None:  # resolve_job refuses it; a hand-built ResolvedJob may not
                raise InputError(
                    f"PJM follows only a step job's sub-job (J_N), not {job.request.after}"
                )
            args += ["--step", "--sparam", f"jid={m[1]},sd=ec!=0:all:{m[2]}"]
        elif job is not None and job.request.step:
            args.append("--step")
        return [*args, str(script_path)]

    def submit(self, script_path: str | Path, job: ResolvedJob | None = None) -> JobId:
        """``pjsub [--bulk --sparam a-b | --step [--sparam jid=J,sd=...]] <script>``."""
        path = Path(script_path)
        if not path.is_file():
            raise InputError(f"batch script {str(path)!r} does not exist")
        proc = self.run("pjsub", self.submit_args(path, job))
        return parse_pjsub(proc.stdout + "\n" + proc.stderr)

    def history_args(self, job_ids: list[JobId]) -> list[str]:
        """``-H day=N -v <ids>``: ended jobs of the profile's history window, with REASON/PC."""
        days = self.profile.pjm.history_days if self.profile and self.profile.pjm else 3
        return ["-H", f"day={days}", "-v", *job_ids]

    def status(self, job_ids: Iterable[JobId]) -> dict[JobId, JobState]:
        """``pjstat <ids>`` for unfinished jobs, then ``pjstat -H day=N -v <ids>`` for the rest."""
        ids = check_job_ids(job_ids)
        if not ids:
            return {}
        proc = self.run("pjstat", ids, check=False)
        found = assign(ids, parse_pjstat(proc.stdout))
        missing = [j for j in ids if j not in found]
        if missing:
            hist = self.run("pjstat", self.history_args(missing), check=False)
            found.update(assign(missing, parse_pjstat(hist.stdout)))
        return {j: found.get(j, JobState.UNKNOWN) for j in ids}

    def cancel(self, job_id: JobId) -> None:
        """``pjdel <id>``; a job that already ended is left alone."""
        (jid,) = check_job_ids([job_id])
        proc = self.run("pjdel", [jid], check=False)
        if proc.returncode == 0:
            return
        if self.status([jid])[jid] in FINAL_STATES:
            return
        raise SchedulerError(
            f"pjdel {jid} failed (exit {proc.returncode}): {one_line(proc.stderr or proc.stdout)}"
        )

    def count_jobs(self, user: str | None = None) -> int:
        """Rows of ``pjstat``: the caller's unfinished jobs.

        PJM lists the jobs of the user who runs ``pjstat`` (DisplayingJobStatus); the guide
        documents no option to list another user's, so ``user`` must be that user or
        ``None``.
        """
        import getpass

        if user and user != getpass.getuser():
            raise InputError(f"pjstat lists only your own jobs, not those of {user}")
        return len(parse_pjstat(self.run("pjstat", []).stdout))
