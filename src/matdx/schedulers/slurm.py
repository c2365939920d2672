"""Slurm batch system: ``#SBATCH`` scripts, ``sbatch``, ``squeue``, ``sacct``, ``scancel``.

Status comes from ``squeue`` while a job is known to the controller, then from ``sacct``;
on clusters without accounting (``accounting_storage/none``) from ``scontrol show job``,
which knows ended jobs for ``MinJobAge`` (5 minutes by default).
"""

from __future__ import annotations

import getpass
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
from matdx.sites.duration import format_slurm_time
from matdx.sites.job import ResolvedJob

SLURM_STATES: dict[str, JobState] = {
    "PENDING": JobState.QUEUED,
    "CONFIGURING": JobState.QUEUED,
    "REQUEUED": JobState.QUEUED,
    "REQUEUE_FED": JobState.QUEUED,
    "REQUEUE_HOLD": JobState.HELD,
    "RESV_DEL_HOLD": JobState.HELD,
    "SUSPENDED": JobState.HELD,
    "STOPPED": JobState.HELD,
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "CANCELLED": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED,
    "FAILED": JobState.FAILED,
    "TIMEOUT": JobState.FAILED,
    "NODE_FAIL": JobState.FAILED,
    "PREEMPTED": JobState.FAILED,
    "BOOT_FAIL": JobState.FAILED,
    "DEADLINE": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED,
    "SPECIAL_EXIT": JobState.FAILED,
}
"""Slurm job states (long names as squeue ``%T``, sacct and scontrol print them)."""

HELD_REASONS = frozenset({"JobHeldUser", "JobHeldAdmin"})


def slurm_state(text: str, reason: str = "") -> JobState:
    """Map a Slurm state (``"CANCELLED by 0"``, ``"FAILED+"``) to ours."""
    word = text.strip().split(" ")[0].rstrip("+") if text.strip() else ""
    state = SLURM_STATES.get(word.upper(), JobState.UNKNOWN)
    if state is JobState.QUEUED and reason.strip() in HELD_REASONS:
        return JobState.HELD
    return state


def parse_sbatch(stdout: str) -> JobId:
    """The job id from ``sbatch --parsable``: ``12345`` or ``12345;cluster``."""
    for line in reversed(stdout.strip().splitlines()):
        m = re.match(r"^\s*(\d+)(?:;\S+)?\s*$", line)
        if m:
            return m.group(1)
    raise SchedulerError(f"sbatch printed no job id: {one_line(stdout) or 'nothing'}")


def parse_squeue(text: str) -> list[tuple[str, JobState]]:
    """Rows of ``squeue -h -o "%i %T %r"`` (the reason column is optional)."""
    rows = []
    for line in text.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2:
            rows.append((parts[0], slurm_state(parts[1], parts[2] if len(parts) > 2 else "")))
    return rows


def parse_sacct(text: str) -> list[tuple[str, JobState]]:
    """Rows of ``sacct -n -P -X -o JobID,JobIDRaw,State`` (or ``JobID,State``)."""
    rows = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or not parts[0]:
            continue
        state = slurm_state(parts[-1])
        rows.extend((jid, state) for jid in dict.fromkeys(p for p in parts[:-1] if p))
    return rows


def parse_scontrol(text: str) -> list[tuple[str, JobState]]:
    """Rows of ``scontrol show job <id>`` (one record per job or array task)."""
    rows = []
    for record in re.split(r"\n\s*\n", text):
        fields = dict(re.findall(r"(\w+)=(\S*)", record))
        if "JobState" not in fields or "JobId" not in fields:
            continue
        state = slurm_state(fields["JobState"], fields.get("Reason", ""))
        rows.append((fields["JobId"], state))
        task = fields.get("ArrayTaskId")
        if fields.get("ArrayJobId") and task and task != "N/A":
            sub = task if task.isdigit() else f"[{task}]"
            rows.append((f"{fields['ArrayJobId']}_{sub}", state))
    return rows


class SlurmScheduler(Scheduler):
    """Slurm batch system."""

    kind = "slurm"
    array_index_var = "SLURM_ARRAY_TASK_ID"

    def directives(self, job: ResolvedJob) -> list[str]:
        """``#SBATCH`` lines; every value was checked against a strict pattern."""
        req = job.request
        d = "#SBATCH"
        out = [
            f"{d} --job-name={job.job_name}",
            f"{d} --nodes={job.nodes}",
            f"{d} --ntasks-per-node={job.ranks_per_node}",
            f"{d} --cpus-per-task={job.threads_per_rank}",
            f"{d} --time={format_slurm_time(job.elapse)}",
            f"{d} --partition={job.rscgrp}",
        ]
        if job.group:
            out.append(f"{d} --account={job.group}")
        if req.stdout:
            out.append(f"{d} --output={req.stdout}")
        if req.stderr:
            out.append(f"{d} --error={req.stderr}")
        if job.array is not None:
            out.append(f"{d} --array={job.array[0]}-{job.array[1]}")
        if req.after:
            out.append(f"{d} --dependency=afterok:{req.after}")
        return out

    def extra_exports(self, job: ResolvedJob) -> list[tuple[str, str]]:
        """Export SRUN_CPUS_PER_TASK (srun ignores sbatch's ``--cpus-per-task`` since 22.05)."""
        return [("SRUN_CPUS_PER_TASK", str(job.threads_per_rank))]

    def submit(self, script_path: str | Path, job: ResolvedJob | None = None) -> JobId:
        """``sbatch --parsable <script>`` (array and dependency are in the script)."""
        path = Path(script_path)
        if not path.is_file():
            raise InputError(f"batch script {str(path)!r} does not exist")
        proc = self.run("sbatch", ["--parsable", str(path)])
        return parse_sbatch(proc.stdout)

    def status(self, job_ids: Iterable[JobId]) -> dict[JobId, JobState]:
        """States from squeue for live jobs, then sacct, else ``scontrol show job``."""
        ids = check_job_ids(job_ids)
        if not ids:
            return {}
        proc = self.run("squeue", ["-h", "-o", "%i %T %r", "-j", ",".join(ids)], check=False)
        if proc.returncode != 0 and "invalid job id" not in proc.stderr.lower():
            raise SchedulerError(
                f"squeue failed (exit {proc.returncode}): {one_line(proc.stderr) or 'no message'}"
            )
        found = assign(ids, parse_squeue(proc.stdout) if proc.returncode == 0 else [])
        missing = [j for j in ids if j not in found]
        if missing:
            found.update(self._ended(missing))
        return {j: found.get(j, JobState.UNKNOWN) for j in ids}

    def _ended(self, ids: list[JobId]) -> dict[JobId, JobState]:
        try:
            proc = self.run(
                "sacct",
                ["-n", "-P", "-X", "-o", "JobID,JobIDRaw,State", "-j", ",".join(ids)],
                check=False,
            )
        except SchedulerError:
            proc = None
        if proc is not None and proc.returncode == 0 and "disabled" not in proc.stderr:
            found = assign(ids, parse_sacct(proc.stdout))
            ids = [j for j in ids if j not in found]
        else:  # no accounting (accounting_storage/none): the controller still knows recent jobs
            found = {}
        for jid in ids:
            sc = self.run("scontrol", ["show", "job", jid], check=False)
            if sc.returncode == 0:
                found.update(assign([jid], parse_scontrol(sc.stdout)))
        return found

    def cancel(self, job_id: JobId) -> None:
        """``scancel <id>``; a job that already ended is not an error."""
        (jid,) = check_job_ids([job_id])
        proc = self.run("scancel", [jid], check=False)
        msg = (proc.stderr or proc.stdout).lower()
        if proc.returncode != 0 and "already complet" not in msg:
            raise SchedulerError(
                f"scancel {jid} failed (exit {proc.returncode}): {one_line(proc.stderr)}"
            )

    def count_jobs(self, user: str | None = None) -> int:
        """Lines of ``squeue -h -u <user>`` (a pending array counts once)."""
        proc = self.run("squeue", ["-h", "-o", "%i", "-u", user or getpass.getuser()])
        return sum(1 for line in proc.stdout.splitlines() if line.strip())
