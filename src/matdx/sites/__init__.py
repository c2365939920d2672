"""Site profiles (machines, limits, launchers) and job requests resolved against them."""

from __future__ import annotations

from matdx.sites.duration import format_hms, format_slurm_time, parse_duration
from matdx.sites.job import (
    JobRequest,
    RankPlacement,
    ResolvedJob,
    parse_job_request,
    resolve_job,
)
from matdx.sites.models import SiteProfile, load_profile, parse_profile
from matdx.sites.quoting import sanitize_job_name

__all__ = [
    "JobRequest",
    "RankPlacement",
    "ResolvedJob",
    "SiteProfile",
    "format_hms",
    "format_slurm_time",
    "load_profile",
    "parse_duration",
    "parse_job_request",
    "parse_profile",
    "resolve_job",
    "sanitize_job_name",
]
