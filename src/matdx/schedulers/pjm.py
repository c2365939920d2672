"""Fujitsu PJM (Fugaku): ``#PJM`` scripts, ``pjsub``, ``pjstat``/``pjstat -H``, ``pjdel``.

Bulk jobs are submitted with ``pjsub --bulk --sparam "first-last" script`` (sub-job ids
``12345[3]``, index in ``${PJM_BULKNUM}``); a job with ``after`` is submitted as a step of
that job, ``pjsub --step --sparam "jid=12345" script`` (ids ``12345_1``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from matdx.core.errors import InputError
from matdx.schedulers.base import (
    JobId,
    JobState,
    Scheduler,
    SchedulerError,
    assign,
    check_job_ids,
    one_line,
)
from matdx.sites.job import ResolvedJob, base_job_id
from matdx.sites.models import Llio

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
    # long names printed by some pjstat versions/options
    "ACCEPT": JobState.QUEUED,
    "QUEUED": JobState.QUEUED,
    "RUNNING": JobState.RUNNING,
    "HOLD": JobState.HELD,
    "EXIT": JobState.COMPLETED,
    "CANCEL": JobState.CANCELLED,
    "ERROR": JobState.FAILED,
    "REJECT": JobState.FAILED,
}
"""PJM job states: ACC/QUE queued; RNA, RNP, RUN, RNE, RNO, RSM running; SPP, SPD, HLD
held; EXT completed; CCL cancelled; ERR, RJT failed."""

EXIT_CODE_COLUMNS = ("EC", "EXIT_CODE", "PC", "PJM_CODE")
"""Columns of ``pjstat -H`` that, when non-zero for an ended (EXT) job, mean failure."""

_SUBMITTED = re.compile(r"\bJob\s+(\d+(?:_\d+|\[\d+\])?)\s+submitted")
_DATE = re.compile(r"^\(?\d{1,4}/\d{1,2}(?:/\d{1,2})?$")
_TIME = re.compile(r"^\d{1,2}:\d{2}(?::\d{2})?\)?$")


def parse_pjsub(stdout: str) -> JobId:
    """The job id in ``[INFO] PJM 0000 pjsub Job 12345 submitted.`` (not the 0000 code)."""
    m = _SUBMITTED.search(stdout)
    if not m:
        raise SchedulerError(f"pjsub printed no job id: {one_line(stdout) or 'nothing'}")
    return m.group(1)


def _row_cells(header: list[str], tokens: list[str]) -> dict[str, str]:
    """Assign tokens to header columns; ``*_DATE`` columns may take two (``11/17 09:01:41``)."""
    cells: dict[str, str] = {}
    i = 0
    for n, col in enumerate(header):
        if i >= len(tokens):
            break
        if (
            col.endswith("_DATE")
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


def parse_pjstat(text: str) -> list[tuple[str, JobState]]:
    """Rows of ``pjstat`` / ``pjstat -H`` / ``pjstat -E``, finding columns by header name.

    Tolerates extra columns, two-token dates and an exit-code column (``EC``, ``PC``...):
    an ``EXT`` job with a non-zero exit code is ``FAILED``.
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
        if not jid:
            continue
        state = PJM_STATES.get(st.upper(), JobState.UNKNOWN)
        if state is JobState.COMPLETED:
            for col in EXIT_CODE_COLUMNS:
                code = cells.get(col, "")
                if re.fullmatch(r"-?\d+", code) and int(code) != 0:
                    state = JobState.FAILED
        rows.append((jid, state))
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
        if job.group:
            out.append(f"{d} -g {job.group}")
        llio = prof.pjm.llio if prof.pjm is not None else Llio()
        if llio.gfscache:
            out.append(f"{d} -x PJM_LLIO_GFSCACHE={llio.gfscache}")
        shared = req.llio_sharedtmp_size or llio.sharedtmp_size
        if shared:
            out.append(f"{d} --llio sharedtmp-size={shared}")
        if llio.localtmp_size:
            out.append(f"{d} --llio localtmp-size={llio.localtmp_size}")
        if req.stdout:
            out.append(f"{d} -o {req.stdout}")
        out.append(f"{d} -e {req.stderr}" if req.stderr else f"{d} -j")
        if prof.pjm is None or prof.pjm.stats:
            out.append(f"{d} -S")
        return out

    def submit_args(self, script_path: str | Path, job: ResolvedJob | None = None) -> list[str]:
        """Arguments of ``pjsub``: bulk range or step dependency, then the script."""
        args: list[str] = []
        if job is not None and job.array is not None:
            args += ["--bulk", "--sparam", f"{job.array[0]}-{job.array[1]}"]
        if job is not None and job.request.after:
            args += ["--step", "--sparam", f"jid={base_job_id(job.request.after)}"]
        return [*args, str(script_path)]

    def submit(self, script_path: str | Path, job: ResolvedJob | None = None) -> JobId:
        """``pjsub [--bulk --sparam a-b | --step --sparam jid=N] <script>``."""
        path = Path(script_path)
        if not path.is_file():
            raise InputError(f"batch script {str(path)!r} does not exist")
        proc = self.run("pjsub", self.submit_args(path, job))
        return parse_pjsub(proc.stdout + "\n" + proc.stderr)

    def status(self, job_ids: Iterable[JobId]) -> dict[JobId, JobState]:
        """``pjstat <ids>`` for live jobs, then ``pjstat -H`` for ended ones."""
        ids = check_job_ids(job_ids)
        if not ids:
            return {}
        proc = self.run("pjstat", ids, check=False)
        found = assign(ids, parse_pjstat(proc.stdout))
        missing = [j for j in ids if j not in found]
        if missing:
            hist = self.run("pjstat", ["-H", *missing], check=False)
            rows = parse_pjstat(hist.stdout)
            if hist.returncode != 0 and not rows:  # some versions take no ids with -H
                rows = parse_pjstat(self.run("pjstat", ["-H"], check=False).stdout)
            found.update(assign(missing, rows))
        return {j: found.get(j, JobState.UNKNOWN) for j in ids}

    def cancel(self, job_id: JobId) -> None:
        """``pjdel <id>``."""
        (jid,) = check_job_ids([job_id])
        proc = self.run("pjdel", [jid], check=False)
        msg = (proc.stdout + proc.stderr).lower()
        if proc.returncode != 0 and "already" not in msg:
            raise SchedulerError(
                f"pjdel {jid} failed (exit {proc.returncode}): "
                f"{one_line(proc.stderr or proc.stdout)}"
            )

    def count_jobs(self, user: str | None = None) -> int:
        """Rows of ``pjstat`` (PJM shows the caller's own jobs)."""
        args = ["-u", user] if user else []
        return len(parse_pjstat(self.run("pjstat", args).stdout))
