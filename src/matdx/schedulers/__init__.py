"""Batch schedulers: render scripts, submit, follow and cancel jobs.

Choose one by the profile's ``scheduler`` key through :data:`SCHEDULERS`::

    profile = load_profile("hpc_profiles/fugaku.yaml")
    sched = scheduler_for(profile)
    job = resolve_job(profile, JobRequest(nodes=4, elapse="24h", group="hp120000",
                                          command=["pw.x", "-in", "scf.in"]))
    path.write_text(sched.render(job))
    job_id = sched.submit(path, job)
    sched.status([job_id])  # {"12345": JobState.QUEUED}

FireWorks queue adapters live in :mod:`matdx.schedulers.fireworks_qadapter` (the only module
here that imports FireWorks).
"""

from __future__ import annotations

from matdx.core.errors import InputError
from matdx.schedulers.base import (
    ACTIVE_STATES,
    FINAL_STATES,
    JobId,
    JobState,
    Scheduler,
    SchedulerError,
)
from matdx.schedulers.local import LocalScheduler
from matdx.schedulers.pjm import PjmScheduler
from matdx.schedulers.slurm import SlurmScheduler
from matdx.sites.models import SiteProfile

SCHEDULERS: dict[str, type[Scheduler]] = {
    "slurm": SlurmScheduler,
    "pjm": PjmScheduler,
    "local": LocalScheduler,
}


def get_scheduler(kind: str, profile: SiteProfile | None = None) -> Scheduler:
    """A scheduler by name (``slurm``, ``pjm``, ``local``).

    Parameters
    ----------
    kind
        Registry key.
    profile
        Site profile for program paths and timeouts (must use the same scheduler).

    Raises
    ------
    InputError
        If ``kind`` is unknown or does not match the profile.
    """
    try:
        cls = SCHEDULERS[kind]
    except KeyError:
        raise InputError(
            f"unknown scheduler {kind!r} (choose from {', '.join(SCHEDULERS)})"
        ) from None
    return cls(profile)


def scheduler_for(profile: SiteProfile) -> Scheduler:
    """The scheduler a profile names, configured from it."""
    return get_scheduler(profile.scheduler, profile)


__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "SCHEDULERS",
    "JobId",
    "JobState",
    "LocalScheduler",
    "PjmScheduler",
    "Scheduler",
    "SchedulerError",
    "SlurmScheduler",
    "get_scheduler",
    "scheduler_for",
]
