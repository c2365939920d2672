"""Local scheduler: run batch scripts with bash in the background on this machine.

Each job gets a directory ``<state_dir>/<id>/`` holding ``pid`` (process id and start
time), ``exit_code`` (written when the script ends), ``cancelled`` (written by
:meth:`LocalScheduler.cancel`) and, by default, ``stdout``. A small fixed bash wrapper
(arguments passed positionally, never interpolated) runs the script, enforces the elapse
limit with ``timeout``, runs bulk/array indices one after another with
``MATDX_ARRAY_INDEX`` set, and records the exit code. The job runs in its own session, so
it survives the submitting process and :meth:`~LocalScheduler.cancel` can stop everything it
started. Because all state is in files, ``status`` works from any process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path

from matdx.core.errors import InputError
from matdx.schedulers.base import (
    ACTIVE_STATES,
    JobId,
    JobState,
    Scheduler,
    SchedulerError,
    check_job_ids,
)
from matdx.sites.job import ResolvedJob
from matdx.sites.models import SiteProfile

WRAPPER = r"""
script=$1 state=$2 limit=$3 shell=$4 tmo=$5
run() {
  if [ "$limit" -gt 0 ] && command -v "$tmo" >/dev/null 2>&1; then
    "$tmo" -k 10 "$limit" "$shell" "$script"
  else
    "$shell" "$script"
  fi
}
rc=0
if [ "$#" -ge 7 ]; then
  i=$6
  while [ "$i" -le "$7" ]; do
    MATDX_ARRAY_INDEX=$i
    export MATDX_ARRAY_INDEX
    run
    r=$?
    if [ "$rc" -eq 0 ]; then rc=$r; fi
    i=$((i + 1))
  done
else
  run
  rc=$?
fi
printf '%s\n' "$rc" > "$state/exit_code.tmp" && mv -f "$state/exit_code.tmp" "$state/exit_code"
exit "$rc"
"""


def _proc_start(pid: int) -> tuple[str, str] | None:
    """(state letter, start time) of a process from /proc, or ``None`` if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], fields[19]


def _alive(pid: int, start: str | None) -> bool:
    info = _proc_start(pid)
    if info is None:
        if Path("/proc/self/stat").exists():
            return False
        try:  # no /proc: ask the kernel
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    state, started = info
    return state not in ("Z", "X") and (start is None or started == start)


def _session_members(sid: int) -> list[int]:
    """Processes of session ``sid`` (the job and everything it started, even in new groups)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry.name)) == sid:
                    out.append(int(entry.name))
    return out


class LocalScheduler(Scheduler):
    """Background bash processes on this machine, with state kept in files."""

    kind = "local"
    array_index_var = None  # the wrapper sets MATDX_ARRAY_INDEX itself

    def __init__(self, profile: SiteProfile | None = None, state_dir: str | Path | None = None):
        super().__init__(profile)
        if state_dir is None and profile is not None and profile.local is not None:
            state_dir = profile.local.state_dir
        if state_dir is None:
            from matdx.core.settings import get_settings

            state_dir = get_settings().data_dir / "local-jobs"
        self.state_dir = Path(state_dir).expanduser()

    def directives(self, job: ResolvedJob) -> list[str]:
        """No batch system: only a comment."""
        return [f"# local job {job.job_name} (run by matdx's local scheduler)"]

    def _new_job_dir(self) -> tuple[JobId, Path]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        existing = [int(p.name) for p in self.state_dir.iterdir() if p.name.isdigit()]
        n = max(existing, default=0) + 1
        while True:
            d = self.state_dir / str(n)
            try:
                d.mkdir()
            except FileExistsError:
                n += 1
                continue
            return str(n), d

    def submit(self, script_path: str | Path, job: ResolvedJob | None = None) -> JobId:
        """Start the script in the background; returns at once with the job id.

        Output goes to the job's ``stdout``/``stderr`` paths (``%j`` becomes the id,
        relative paths are relative to the current directory, like sbatch), else to
        ``<state_dir>/<id>/stdout``.
        """
        script = Path(script_path).resolve()
        if not script.is_file():
            raise InputError(f"batch script {str(script_path)!r} does not exist")
        jid, d = self._new_job_dir()
        req = job.request if job is not None else None
        out_path = Path(req.stdout.replace("%j", jid)) if req and req.stdout else d / "stdout"
        err_path = Path(req.stderr.replace("%j", jid)) if req and req.stderr else None
        limit = job.elapse if job is not None else 0
        array = [str(job.array[0]), str(job.array[1])] if job and job.array else []
        argv = [
            self.command("bash"),
            "-c",
            WRAPPER,
            "matdx-local",
            str(script),
            str(d),
            str(limit),
            self.command("bash"),
            self.command("timeout"),
            *array,
        ]
        try:
            with contextlib.ExitStack() as stack:
                out = stack.enter_context(open(out_path, "ab"))
                err = stack.enter_context(open(err_path, "ab")) if err_path else subprocess.STDOUT
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as exc:
            (d / "exit_code").write_text("127\n")
            raise SchedulerError(f"cannot start local job: {exc}") from None
        info = _proc_start(proc.pid)
        (d / "pid").write_text(f"{proc.pid} {info[1] if info else '-'}\n")
        (d / "script").write_text(str(script) + "\n")
        return jid

    def _state(self, jid: JobId) -> JobState:
        d = self.state_dir / jid
        if not d.is_dir():
            return JobState.UNKNOWN
        cancelled = (d / "cancelled").exists()
        code_file = d / "exit_code"
        if code_file.exists():
            try:
                code = int(code_file.read_text().strip())
            except ValueError:
                return JobState.FAILED
            if code == 0:
                return JobState.COMPLETED
            return JobState.CANCELLED if cancelled else JobState.FAILED
        if cancelled:
            return JobState.CANCELLED
        try:
            pid_text, start = (d / "pid").read_text().split()
        except (OSError, ValueError):
            return JobState.QUEUED  # being started
        if _alive(int(pid_text), None if start == "-" else start):
            return JobState.RUNNING
        if code_file.exists():  # ended between the two checks
            return self._state(jid)
        return JobState.FAILED  # killed without recording an exit code

    def status(self, job_ids: Iterable[JobId]) -> dict[JobId, JobState]:
        """States read from the job directories."""
        return {jid: self._state(jid) for jid in check_job_ids(job_ids)}

    def cancel(self, job_id: JobId) -> None:
        """Stop the job's whole session with SIGTERM (a finished job is left alone)."""
        (jid,) = check_job_ids([job_id])
        d = self.state_dir / jid
        if not d.is_dir():
            raise InputError(f"unknown local job {jid}")
        if self._state(jid) not in ACTIVE_STATES:
            return
        (d / "cancelled").write_text("")
        try:
            pid = int((d / "pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        members = _session_members(pid) if Path("/proc").is_dir() else []
        for p in members or [pid]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGTERM)

    def count_jobs(self, user: str | None = None) -> int:
        """Local jobs still queued or running."""
        if not self.state_dir.is_dir():
            return 0
        ids = [p.name for p in self.state_dir.iterdir() if p.name.isdigit()]
        return sum(1 for j in ids if self._state(j) in ACTIVE_STATES)
