"""FireWorks queue adapters backed by matdx's schedulers and site profiles.

``qlaunch -q my_qadapter.yaml ...`` loads the adapter named by ``_fw_name`` (an explicit
``{{module.Class}}`` reference, so no FireWorks configuration is needed), asks it for the
queue script (:meth:`MatdxQueueAdapter.get_script_str`), submits it
(:meth:`~MatdxQueueAdapter.submit_to_queue`) and counts queued jobs
(:meth:`~MatdxQueueAdapter.get_njobs_in_queue`). The adapter file holds:

``_fw_name``, ``_fw_q_type`` (``slurm``/``pjm``/``local``), ``_fw_q_name`` (site),
``profile``
    The site profile, embedded as a mapping (or a path to its YAML file).
``rocket_launch``
    The command the job runs (``rlaunch -c <config dir> singleshot``), split with shlex and
    quoted word by word; it is not started with the MPI launcher.
any :class:`~matdx.sites.job.JobRequest` field
    ``nodes``, ``elapse``, ``rscgrp``, ``group``, ``job_name``...; FireWorks may override
    them per Firework through ``spec._queueadapter``. ``job_name`` (which ``qlaunch -r``
    sets from the Firework's name) is made safe with
    :func:`~matdx.sites.quoting.sanitize_job_name`.
``logdir``
    Optional FireWorks queue log directory.

This is the only module of :mod:`matdx.schedulers` that imports FireWorks.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any, ClassVar

import yaml
from fireworks.queue.queue_adapter import QueueAdapterBase
from fireworks.utilities.fw_serializers import serialize_fw

from matdx.core.errors import InputError
from matdx.schedulers import get_scheduler
from matdx.schedulers.base import JobId, Scheduler
from matdx.sites.duration import format_hms
from matdx.sites.job import JobRequest, ResolvedJob, parse_job_request, resolve_job
from matdx.sites.models import SiteProfile, load_profile, parse_profile
from matdx.sites.quoting import sanitize_job_name

NOT_JOB_FIELDS = frozenset({"command", "workdir", "use_launcher"})
"""JobRequest fields the adapter sets itself (from rocket_launch and the launch directory)."""

JOB_FIELDS = tuple(f for f in JobRequest.model_fields if f not in NOT_JOB_FIELDS)


class MatdxQueueAdapter(QueueAdapterBase):
    """A FireWorks queue adapter rendering and submitting through a matdx scheduler.

    Parameters
    ----------
    q_type
        Scheduler kind (``slurm``, ``pjm``, ``local``); fixed by the subclasses.
    q_name
        Name for FireWorks' logs (the site name).
    **kwargs
        The adapter's keys (``profile``, ``rocket_launch``, job fields, ``logdir``).
    """

    _fw_name = "{{matdx.schedulers.fireworks_qadapter.MatdxQueueAdapter}}"
    q_kind: ClassVar[str | None] = None

    def __init__(self, q_type: str | None = None, q_name: str | None = None, **kwargs: Any):
        super().__init__(None)
        self.q_type = q_type or self.q_kind
        if self.q_type is None:
            raise InputError("qadapter: _fw_q_type is missing (slurm, pjm or local)")
        if self.q_kind is not None and self.q_type != self.q_kind:
            raise InputError(f"qadapter: _fw_q_type {self.q_type!r} is not {self.q_kind!r}")
        self.q_name = q_name or self.q_type
        self.update(kwargs)

    @serialize_fw
    def to_dict(self) -> dict[str, Any]:
        """The adapter file's mapping (FireWorks adds ``_fw_name``)."""
        return {"_fw_q_type": self.q_type, "_fw_q_name": self.q_name, **dict(self)}

    @classmethod
    def from_dict(cls, m_dict: dict[str, Any]) -> MatdxQueueAdapter:
        """Build from an adapter file's mapping."""
        return cls(
            q_type=m_dict.get("_fw_q_type"),
            q_name=m_dict.get("_fw_q_name"),
            **{k: v for k, v in m_dict.items() if not k.startswith("_fw")},
        )

    # -- matdx side ------------------------------------------------------------------

    def site_profile(self) -> SiteProfile:
        """The embedded (or referenced) site profile, validated."""
        data = self.get("profile")
        if isinstance(data, str | os.PathLike):
            profile = load_profile(data)
        elif isinstance(data, dict):
            profile = parse_profile(data, what="qadapter profile")
        else:
            raise InputError("qadapter: 'profile' must be a mapping or a profile file path")
        if profile.scheduler != self.q_type:
            raise InputError(
                f"qadapter: _fw_q_type is {self.q_type} but profile {profile.site} uses "
                f"{profile.scheduler}"
            )
        return profile

    def scheduler(self) -> Scheduler:
        """The matdx scheduler for this adapter's profile."""
        profile = self.site_profile()
        return get_scheduler(profile.scheduler, profile)

    def job(self, launch_dir: str | os.PathLike[str]) -> ResolvedJob:
        """The job this adapter submits from ``launch_dir``, resolved against the profile."""
        profile = self.site_profile()
        fields = {k: self[k] for k in JOB_FIELDS if k in self and self[k] is not None}
        if "job_name" in fields:
            fields["job_name"] = sanitize_job_name(str(fields["job_name"]))
        rocket = self.get("rocket_launch")
        if not isinstance(rocket, str) or not rocket.strip():
            raise InputError("qadapter: 'rocket_launch' must be a command line")
        try:
            fields["command"] = shlex.split(rocket)
        except ValueError as exc:
            raise InputError(f"qadapter: rocket_launch cannot be split ({exc})") from None
        fields["use_launcher"] = False
        fields["workdir"] = os.path.abspath(launch_dir)
        request = parse_job_request(fields, what="qadapter")
        return resolve_job(profile, request, what="qadapter")

    # -- FireWorks side --------------------------------------------------------------

    def get_script_str(self, launch_dir: str) -> str:
        """The batch script, rendered by the matdx scheduler."""
        return self.scheduler().render(self.job(launch_dir))

    def submit_to_queue(self, script_file: str) -> int | str:
        """Submit the script (FireWorks runs this from the launch directory)."""
        job_id: JobId = self.scheduler().submit(Path(script_file), self.job(os.getcwd()))
        return int(job_id) if job_id.isdigit() else job_id

    def get_njobs_in_queue(self, username: str | None = None) -> int:
        """Number of the user's queued and running jobs."""
        return self.scheduler().count_jobs(username)


class SlurmQueueAdapter(MatdxQueueAdapter):
    """Queue adapter for Slurm sites."""

    _fw_name = "{{matdx.schedulers.fireworks_qadapter.SlurmQueueAdapter}}"
    q_kind = "slurm"


class PjmQueueAdapter(MatdxQueueAdapter):
    """Queue adapter for Fujitsu PJM sites (Fugaku)."""

    _fw_name = "{{matdx.schedulers.fireworks_qadapter.PjmQueueAdapter}}"
    q_kind = "pjm"


class LocalQueueAdapter(MatdxQueueAdapter):
    """Queue adapter running jobs in the background on this machine."""

    _fw_name = "{{matdx.schedulers.fireworks_qadapter.LocalQueueAdapter}}"
    q_kind = "local"


QADAPTERS: dict[str, type[MatdxQueueAdapter]] = {
    "slurm": SlurmQueueAdapter,
    "pjm": PjmQueueAdapter,
    "local": LocalQueueAdapter,
}


def make_qadapter(
    profile: SiteProfile,
    job: JobRequest,
    rocket_launch: str = "rlaunch singleshot",
    logdir: str | None = None,
) -> MatdxQueueAdapter:
    """A queue adapter for a profile and a job request (checked against the site's limits).

    Parameters
    ----------
    profile
        Site profile (embedded into the adapter).
    job
        Job request; its ``command``, ``workdir`` and ``use_launcher`` are ignored (the job
        runs ``rocket_launch`` in the launch directory).
    rocket_launch
        Command the job runs, e.g. ``rlaunch -c /path/to/config singleshot``.
    logdir
        FireWorks queue-launcher log directory.
    """
    cls = QADAPTERS[profile.scheduler]
    fields = job.model_dump(
        mode="json", exclude_none=True, exclude_defaults=True, exclude=set(NOT_JOB_FIELDS)
    )
    if "elapse" in fields:
        fields["elapse"] = format_hms(fields["elapse"])
    extra: dict[str, Any] = {"logdir": logdir} if logdir is not None else {}
    qa = cls(
        q_type=profile.scheduler,
        q_name=profile.site,
        rocket_launch=rocket_launch,
        **fields,
        **extra,
        profile=profile.model_dump(mode="json", exclude_none=True),
    )
    qa.job(".")  # fail now, not at qlaunch time
    return qa


def write_qadapter(
    path: str | Path,
    profile: SiteProfile,
    job: JobRequest,
    rocket_launch: str = "rlaunch singleshot",
    logdir: str | None = None,
) -> Path:
    """Write a ``my_qadapter.yaml`` for ``qlaunch`` (see :func:`make_qadapter`).

    Returns
    -------
    Path
        The file written.
    """
    qa = make_qadapter(profile, job, rocket_launch=rocket_launch, logdir=logdir)
    out = Path(path)
    header = (
        f"# FireWorks queue adapter for site {profile.site} ({profile.scheduler}), "
        "written by matdx.\n# Use with: qlaunch -q <this file> ...\n"
    )
    data = qa.to_dict()
    data = {"_fw_name": data.pop("_fw_name"), **data}
    out.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return out
