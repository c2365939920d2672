"""What every scheduler does: render a batch script, submit it, follow it, cancel it.

Scripts share one body (see :meth:`Scheduler.render`); the schedulers differ in their
directive lines and in the programs they run. Programs are run with argument lists, never
through a shell, and are looked up by the names in the profile's ``commands`` (default: the
bare program name, found on ``PATH``), so tests can put stand-ins first on ``PATH``.
"""

from __future__ import annotations

import re
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import ClassVar, TypeAlias

from matdx.core.errors import InputError, MatdxError
from matdx.sites.job import JobRequest, ResolvedJob, resolve_job
from matdx.sites.models import SCHEDULER_TOOLS, SiteProfile
from matdx.sites.quoting import JOB_ID_PATTERN, quote, quote_argv

JobId: TypeAlias = str


class JobState(StrEnum):
    """Our view of a batch job's state, whatever the batch system."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    HELD = "HELD"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    UNKNOWN = "UNKNOWN"


ACTIVE_STATES = frozenset({JobState.QUEUED, JobState.RUNNING, JobState.HELD})
FINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})


class SchedulerError(MatdxError):
    """A batch-system program is missing, failed, or printed something we cannot read."""

    exit_code = 3


def one_line(text: str, limit: int = 300) -> str:
    """Collapse program output to one short line for an error message."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def aggregate(states: Iterable[JobState]) -> JobState:
    """One state for a job made of several (array tasks, bulk sub-jobs).

    Active beats final (running, then queued, then held); among final states a failure
    beats a cancellation beats completion.
    """
    s = set(states)
    for st in (
        JobState.RUNNING,
        JobState.QUEUED,
        JobState.HELD,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.COMPLETED,
    ):
        if st in s:
            return st
    return JobState.UNKNOWN


_ROW_ID = re.compile(r"^(\d+)(?:\+\d+)?(?:_(\[[^\]]*\]|\d+)|\[(\d+)\])?$")


def _split_id(job_id: str) -> tuple[str, str | None] | None:
    m = _ROW_ID.match(job_id.strip())
    if not m:
        return None
    return m.group(1), m.group(2) or m.group(3)


def _expand(sub: str) -> set[str] | None:
    """``[1,3,5-7%2]`` → {"1","3","5","6","7"}; a plain number → itself."""
    if not sub.startswith("["):
        return {str(int(sub))}
    out: set[str] = set()
    for part in sub.strip("[]").split("%")[0].split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            if not (a.isdigit() and b.isdigit()) or int(b) - int(a) > 1_000_000:
                return None
            out.update(str(i) for i in range(int(a), int(b) + 1))
        elif part.isdigit():
            out.add(str(int(part)))
    return out


def covers(row_id: str, requested: JobId) -> bool:
    """Whether a status row is about the ``requested`` job.

    Rows look like ``123``, ``123_4``, ``123_[5-9%2]`` or ``123[4]``. A parent id covers all
    its tasks; a task id only itself.
    """
    row, req = _split_id(row_id), _split_id(requested)
    if row is None or req is None or row[0] != req[0]:
        return False
    if req[1] is None:
        return True
    if row[1] is None:
        return False
    members = _expand(row[1])
    return members is not None and str(int(req[1].strip("[]"))) in members


def assign(
    requested: Iterable[JobId], rows: Iterable[tuple[str, JobState]]
) -> dict[JobId, JobState]:
    """Give each requested id the aggregate state of the rows about it.

    Ids that no row is about are left out.
    """
    rows = list(rows)
    out: dict[JobId, JobState] = {}
    for jid in requested:
        hits = [st for rid, st in rows if covers(rid, jid)]
        if hits:
            out[jid] = aggregate(hits)
    return out


def check_job_ids(job_ids: Iterable[JobId]) -> list[JobId]:
    """Refuse job ids that are not plain ids (they become program arguments)."""
    out = []
    for jid in job_ids:
        jid = str(jid)
        if not re.match(JOB_ID_PATTERN, jid):
            raise InputError(f"not a job id: {jid!r}")
        if jid not in out:
            out.append(jid)
    return out


class Scheduler(ABC):
    """A batch system: render, submit, status, cancel.

    Parameters
    ----------
    profile
        Site profile: gives the program paths (``commands``) and the command timeout.
        Without one, programs are found on ``PATH`` with a 60 s timeout.
    """

    kind: ClassVar[str]
    array_index_var: ClassVar[str | None] = None
    """Variable the batch system sets to the bulk/array index (copied to MATDX_ARRAY_INDEX)."""

    def __init__(self, profile: SiteProfile | None = None) -> None:
        if profile is not None and profile.scheduler != self.kind:
            raise InputError(f"profile {profile.site} uses {profile.scheduler}, not {self.kind}")
        self.profile = profile
        self.timeout = profile.command_timeout if profile is not None else 60.0

    # -- rendering -------------------------------------------------------------------

    @abstractmethod
    def directives(self, job: ResolvedJob) -> list[str]:
        """Batch-system directive lines (``#SBATCH ...``) for the job."""

    def extra_exports(self, job: ResolvedJob) -> list[tuple[str, str]]:
        """Scheduler-specific environment variables."""
        return []

    def staging_lines(self, job: ResolvedJob) -> list[str]:
        """Scheduler-specific lines run after the set-up, before the program (e.g. LLIO)."""
        return []

    def resolve(self, job: ResolvedJob | JobRequest) -> ResolvedJob:
        """Accept a resolved job, or resolve a request against this scheduler's profile."""
        if isinstance(job, ResolvedJob):
            return job
        if self.profile is None:
            raise InputError("a job request needs a site profile to be resolved against")
        return resolve_job(self.profile, job)

    def render(self, job: ResolvedJob | JobRequest) -> str:
        """The batch script of a job.

        Layout: shebang, directives, a summary comment, the profile's trusted set-up lines,
        exported variables (``OMP_NUM_THREADS``, profile and job ``env``, the array index),
        ``cd`` to the working directory, and the launch line
        ``<launcher> <container exec> <command>``.
        """
        job = self.resolve(job)
        if job.profile.scheduler != self.kind:
            raise InputError(
                f"site {job.profile.site} uses {job.profile.scheduler}, not {self.kind}"
            )
        req, prof = job.request, job.profile
        head = self.directives(job)
        for line in head:
            if not line.startswith("#") or any(c in line for c in "\n\r\x00"):
                raise InputError(f"unsafe directive line for job {req.job_name}")
        lines = ["#!/bin/bash", *head]
        lines.append(
            f"# matdx job {req.job_name} on {prof.site} ({prof.scheduler}): {job.nodes} node(s)"
            f" x {job.ranks_per_node} ranks x {job.threads_per_rank} threads,"
            f" elapse {job.elapse_hms}"
        )
        if prof.setup or prof.compute_env.setup:
            lines.append("# site set-up (trusted lines from the profile)")
            lines.extend([*prof.setup, *prof.compute_env.setup])
        lines.extend(self.staging_lines(job))
        exports = [("OMP_NUM_THREADS", str(job.threads_per_rank)), *self.extra_exports(job)]
        exports += list(prof.env.items()) + list(req.env.items())
        lines.extend(f"export {k}={quote(v)}" for k, v in exports)
        if job.array is not None and self.array_index_var:
            lines.append(f'export MATDX_ARRAY_INDEX="${{{self.array_index_var}}}"')
        if req.workdir is not None:
            lines.append(f"cd -- {quote(req.workdir)} || exit 1")
        launch = launch_line(job)
        lines.append(launch if launch is not None else "# (no command given)")
        return "\n".join(lines) + "\n"

    # -- batch-system operations -----------------------------------------------------

    @abstractmethod
    def submit(self, script_path: str | Path, job: ResolvedJob | None = None) -> JobId:
        """Submit a script and return its job id.

        ``job`` (the job the script was rendered from) supplies submit-time options such as
        a PJM bulk range or step dependency.
        """

    @abstractmethod
    def status(self, job_ids: Iterable[JobId]) -> dict[JobId, JobState]:
        """States of the given jobs (``UNKNOWN`` for jobs the batch system has forgotten)."""

    @abstractmethod
    def cancel(self, job_id: JobId) -> None:
        """Cancel a job (a job that already ended is left alone)."""

    @abstractmethod
    def count_jobs(self, user: str | None = None) -> int:
        """Number of the user's jobs queued or running (for FireWorks' ``qlaunch``)."""

    # -- helpers ---------------------------------------------------------------------

    def command(self, tool: str) -> str:
        """Program to run for ``tool``: the profile's path, else the bare name."""
        if tool not in SCHEDULER_TOOLS[self.kind]:
            raise ValueError(f"{self.kind} does not use {tool}")
        return self.profile.command(tool) if self.profile is not None else tool

    def run(
        self, tool: str, args: list[str], *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a batch-system program with an argument list (no shell).

        Raises
        ------
        SchedulerError
            If the program is missing, times out, or (with ``check``) exits non-zero.
        """
        argv = [self.command(tool), *args]
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=self.timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except FileNotFoundError:
            raise SchedulerError(
                f"{argv[0]} not found: is {self.kind} installed here (PATH or the profile's "
                f"commands)?"
            ) from None
        except subprocess.TimeoutExpired:
            raise SchedulerError(f"{argv[0]} did not answer within {self.timeout:g} s") from None
        except OSError as exc:
            raise SchedulerError(f"cannot run {argv[0]}: {exc}") from None
        if check and proc.returncode != 0:
            raise SchedulerError(
                f"{tool} failed (exit {proc.returncode}): "
                f"{one_line(proc.stderr or proc.stdout) or 'no message'}"
            )
        return proc


def format_launcher(template: str, job: ResolvedJob) -> str:
    """A launcher template (trusted profile text) with the job's layout filled in."""
    return template.format(
        nodes=job.nodes,
        ranks=job.total_ranks,
        ranks_per_node=job.ranks_per_node,
        threads_per_rank=job.threads_per_rank,
        job_name=job.job_name,
    )


def launch_line(job: ResolvedJob) -> str | None:
    """``<launcher> <container exec> <program args>``, or ``None`` without a command.

    The launcher template is trusted profile text with only numbers and the (validated)
    job name substituted; the container words and program arguments are quoted.
    """
    req, prof = job.request, job.profile
    if not req.command:
        return None
    parts = []
    if req.use_launcher:
        parts.append(format_launcher(prof.launcher.command, job))
    if req.use_container and prof.container is not None:
        c = prof.container
        parts.append(quote_argv([*c.exec_command, *c.options, c.image]))
    parts.append(quote_argv(req.command))
    return " ".join(parts)
