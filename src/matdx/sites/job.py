"""Job requests and their resolution against a site profile.

A :class:`JobRequest` says what a job wants (nodes, layout, elapse, resource group, group,
names, output paths, the program); fields left out take the profile's defaults.
:func:`resolve_job` fills them in and checks the request against the site's limits, giving a
:class:`ResolvedJob` that every scheduler renders the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from matdx.core.errors import InputError
from matdx.core.yamlio import Loc, line_of, validate_yaml_model
from matdx.sites.duration import Duration, format_hms
from matdx.sites.models import ResourceGroup, SiteProfile, StrictModel, check_env
from matdx.sites.quoting import (
    DIRECTIVE_PATH_PATTERN,
    JOB_ID_PATTERN,
    JOB_NAME_PATTERN,
    SIZE_PATTERN,
    WORD_PATTERN,
    check_no_nul,
)

ARRAY_PATTERN = r"^[0-9]{1,6}-[0-9]{1,6}$"


class JobRequest(StrictModel):
    """What one batch job asks for; ``None`` fields take the site profile's defaults."""

    job_name: str = Field("matdx", pattern=JOB_NAME_PATTERN, description="Job name.")
    nodes: int = Field(1, ge=1, le=1_000_000, description="Number of nodes.")
    ranks_per_node: int | None = Field(None, ge=1, le=4096, description="MPI ranks per node.")
    threads_per_rank: int | None = Field(
        None, ge=1, le=4096, description="OpenMP threads per rank."
    )
    elapse: Duration | None = Field(None, description="Wall time: HH:MM:SS, 72h, 30m or seconds.")
    rscgrp: str | None = Field(
        None, pattern=WORD_PATTERN, description="Resource group (PJM) or partition (Slurm)."
    )
    group: str | None = Field(
        None, pattern=WORD_PATTERN, description="Group (PJM -g) or account (Slurm)."
    )
    stdout: str | None = Field(
        None, pattern=DIRECTIVE_PATH_PATTERN, description="Standard output file."
    )
    stderr: str | None = Field(
        None,
        pattern=DIRECTIVE_PATH_PATTERN,
        description="Standard error file (default: merged into standard output).",
    )
    array: str | None = Field(
        None,
        pattern=ARRAY_PATTERN,
        description="Bulk/array index range 'first-last'; the index is in $MATDX_ARRAY_INDEX.",
    )
    after: str | None = Field(
        None,
        pattern=JOB_ID_PATTERN,
        description="Start after this job succeeded (Slurm afterok; on PJM the next sub-job "
        "of a step job, so a sub-job id such as 12345_0).",
    )
    step: bool = Field(
        False, description="PJM: begin a step job (pjsub --step), which later jobs follow."
    )
    workdir: str | None = Field(None, description="Directory the program runs in.")
    command: list[str] = Field(
        default_factory=list, description="Program and arguments (each is quoted)."
    )
    use_launcher: bool = Field(True, description="Start the command with the MPI launcher.")
    use_container: bool = Field(True, description="Run the command in the site's container.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment.")
    llio_sharedtmp_size: str | None = Field(
        None, pattern=SIZE_PATTERN, description="PJM LLIO shared temporary area, e.g. 10Gi."
    )
    llio_gfscache: str | None = Field(
        None,
        pattern=r"^/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*(:/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*)*$",
        description="PJM_LLIO_GFSCACHE for this job (default: the profile's).",
    )

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, v: str | None) -> str | None:
        if v is not None:
            check_no_nul(v)
            if not v:
                raise ValueError("must not be empty")
        return v

    @field_validator("command")
    @classmethod
    def _command(cls, v: list[str]) -> list[str]:
        for arg in v:
            check_no_nul(arg)
        if v and not v[0]:
            raise ValueError("the program name must not be empty")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        return check_env(v)

    @field_validator("array")
    @classmethod
    def _array(cls, v: str | None) -> str | None:
        if v is not None:
            first, last = (int(x) for x in v.split("-"))
            if first > last:
                raise ValueError(f"range {v} runs backwards")
        return v


@dataclass(frozen=True)
class RankPlacement:
    """Where one rank's threads sit on its node."""

    rank: int
    first_core: int
    last_core: int
    domains: tuple[int, ...]


@dataclass(frozen=True)
class ResolvedJob:
    """A job request with every default filled in and every limit checked.

    Attributes
    ----------
    profile
        The site.
    request
        The request as given.
    rscgrp, group
        Resource group/partition and group/account (``None`` if not needed).
    nodes, ranks_per_node, threads_per_rank
        Layout.
    elapse
        Wall time in seconds.
    array
        ``(first, last)`` bulk/array indices, or ``None``.
    """

    profile: SiteProfile
    request: JobRequest
    rscgrp: str
    group: str | None
    nodes: int
    ranks_per_node: int
    threads_per_rank: int
    elapse: int
    array: tuple[int, int] | None

    @property
    def job_name(self) -> str:
        """Job name."""
        return self.request.job_name

    @property
    def total_ranks(self) -> int:
        """MPI ranks over all nodes."""
        return self.nodes * self.ranks_per_node

    @property
    def cores_used_per_node(self) -> int:
        """Cores per node occupied by ranks × threads."""
        return self.ranks_per_node * self.threads_per_rank

    @property
    def resource_group(self) -> ResourceGroup:
        """The resource group's limits."""
        return self.profile.resource_groups[self.rscgrp]

    @property
    def elapse_hms(self) -> str:
        """Elapse as ``HH:MM:SS``."""
        return format_hms(self.elapse)

    def placement(self) -> list[RankPlacement]:
        """Cores and NUMA domains (CMGs) of each rank on a node, packed in rank order."""
        per_domain = self.profile.node.cores_per_domain
        out = []
        for r in range(self.ranks_per_node):
            first = r * self.threads_per_rank
            last = first + self.threads_per_rank - 1
            doms = tuple(range(first // per_domain, last // per_domain + 1))
            out.append(RankPlacement(r, first, last, doms))
        return out


class _Failer:
    """Formats resolution errors like :func:`matdx.core.yamlio.validate_yaml_model`."""

    def __init__(self, what: str, lines: dict[Loc, int] | None) -> None:
        self.what = what
        self.lines = lines or {}

    def __call__(self, field: str, message: str) -> InputError:
        line = line_of((field,), self.lines) if self.lines else None
        where = f" line {line}" if line else ""
        return InputError(f"{self.what}{where}, field {field}: {message}")


def resolve_job(
    profile: SiteProfile,
    request: JobRequest,
    what: str = "job",
    lines: dict[Loc, int] | None = None,
) -> ResolvedJob:
    """Fill in a request's defaults from the profile and check it against the limits.

    Parameters
    ----------
    profile
        The site.
    request
        The job request.
    what
        Name used in error messages (``"job"``, ``"job file qe.yaml"``).
    lines
        Key → line map if the request came from a YAML file.

    Returns
    -------
    ResolvedJob
        The complete job.

    Raises
    ------
    InputError
        ``"<what>, field <name>: <message>"`` naming the offending field: unknown resource
        group, too many nodes, elapse above the limit, ranks × threads above the cores per
        node, a missing group where the site requires one, options the site cannot honour.
    """
    fail = _Failer(what, lines)
    site = f"site {profile.site}"

    rscgrp = request.rscgrp or profile.rscgrp_default
    known = ", ".join(sorted(profile.resource_groups))
    if rscgrp is None:
        raise fail("rscgrp", f"{site} has several resource groups, choose one of: {known}")
    if rscgrp not in profile.resource_groups:
        raise fail("rscgrp", f"unknown resource group {rscgrp!r} on {site} (known: {known})")
    rg = profile.resource_groups[rscgrp]

    group = request.group or profile.default_group
    if profile.group_required and not group:
        word = "an account" if profile.scheduler == "slurm" else "a group"
        raise fail("group", f"{site} requires {word} for every job")

    if request.nodes > rg.max_nodes:
        raise fail(
            "nodes",
            f"{request.nodes} nodes exceeds the limit of resource group {rscgrp!r} "
            f"({rg.max_nodes})",
        )
    if request.nodes < rg.min_nodes:
        raise fail(
            "nodes",
            f"{request.nodes} nodes is below the minimum of resource group {rscgrp!r} "
            f"({rg.min_nodes})",
        )

    rpn = request.ranks_per_node or profile.default_layout.ranks_per_node
    tpr = request.threads_per_rank or profile.default_layout.threads_per_rank
    cores = profile.node.cores_per_node
    if rpn * tpr > cores:
        field = "ranks_per_node" if request.ranks_per_node is not None else "threads_per_rank"
        raise fail(
            field,
            f"{rpn} ranks × {tpr} threads = {rpn * tpr} cores exceeds the {cores} cores "
            f"per node of {site}",
        )

    elapse = request.elapse or rg.default_elapse
    if elapse is None:
        raise fail("elapse", f"required: resource group {rscgrp!r} has no default_elapse")
    if elapse > rg.max_elapse:
        raise fail(
            "elapse",
            f"{format_hms(elapse)} exceeds the limit of resource group {rscgrp!r} "
            f"({format_hms(rg.max_elapse)})",
        )

    for field in ("llio_sharedtmp_size", "llio_gfscache"):
        if getattr(request, field) is not None and profile.scheduler != "pjm":
            raise fail(field, f"{site} ({profile.scheduler}) has no LLIO")
    if profile.scheduler == "pjm":
        _check_pjm_order(request, fail)
    elif request.step:
        raise fail("step", f"{site} ({profile.scheduler}) has no step jobs: use after")

    array = None
    if request.array is not None:
        first, last = (int(x) for x in request.array.split("-"))
        array = (first, last)

    return ResolvedJob(
        profile=profile,
        request=request,
        rscgrp=rscgrp,
        group=group,
        nodes=request.nodes,
        ranks_per_node=rpn,
        threads_per_rank=tpr,
        elapse=elapse,
        array=array,
    )


def _check_pjm_order(request: JobRequest, fail: _Failer) -> None:
    """PJM orders jobs only as the sub-jobs of a step job (Fugaku guide, JobExecution/StepJob)."""
    if request.array is not None and (request.after is not None or request.step):
        raise fail("after" if request.after else "step", "a PJM bulk job cannot be a step job")
    for field in ("stdout", "stderr"):
        if getattr(request, field) is not None:
            raise fail(
                field,
                "PJM writes <job name>.<job id>.out and .err in the submission directory; "
                "Fugaku's guide documents no option that renames them",
            )
    if request.after is not None and not re.fullmatch(r"\d+_\d+", request.after):
        raise fail(
            "after",
            f"PJM runs a job after another only as the next sub-job of a step job: give the "
            f"sub-job id (e.g. {base_job_id(request.after)}_0) of a job submitted with step",
        )


def parse_job_request(
    data: Any, what: str = "job", lines: dict[Loc, int] | None = None
) -> JobRequest:
    """Validate a mapping as a :class:`JobRequest`, raising a one-line InputError."""
    return validate_yaml_model(JobRequest, data, lines or {}, what)  # type: ignore[return-value]


def array_indices(spec: tuple[int, int] | None) -> range | None:
    """The indices of a bulk/array range (inclusive), or ``None``."""
    return None if spec is None else range(spec[0], spec[1] + 1)


def base_job_id(job_id: str) -> str:
    """The parent job of an array task, bulk sub-job or step: ``123_4``/``123[4]`` → ``123``."""
    return re.split(r"[_\[]", job_id, maxsplit=1)[0]
