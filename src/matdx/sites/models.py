"""Site profiles: what a machine offers and how jobs are started on it.

A profile (``hpc_profiles/<site>.yaml``) describes one machine: its batch system, its
nodes (cores, NUMA domains such as the four CMGs of an A64FX, memory), the resource groups
or partitions with their limits, whether a group/account must be given, the environment
set-up lines, the MPI launcher and an optional container. :func:`load_profile` reads and
validates one; :mod:`matdx.sites.job` resolves job requests against it.

Durations in YAML should be quoted (``"24:00:00"``) or written with units (``24h``):
unquoted ``HH:MM:SS`` is read by YAML 1.1 as a base-60 number of seconds, which happens to
give the same value, but ``MM:SS`` would too.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from matdx.core.yamlio import load_yaml, validate_yaml_model
from matdx.sites.duration import Duration, format_hms
from matdx.sites.quoting import (
    ENV_NAME_PATTERN,
    SIZE_PATTERN,
    WORD_PATTERN,
    check_no_nul,
    check_shell_line,
)

SchedulerKind = Literal["slurm", "pjm", "local"]

SITE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

LAUNCHER_FIELDS = ("nodes", "ranks", "ranks_per_node", "threads_per_rank", "job_name")
"""Placeholders a launcher template may use, e.g. ``mpirun -np {ranks}``."""

TASK_LAUNCHER_FIELDS = (*LAUNCHER_FIELDS, "cores", "hosts", "vcoordfile")
"""Placeholders of a task launch template: also the slot's cores (``0,1``), host names
(``node1,node2``) and VCOORD file (see :mod:`matdx.sites.slots`)."""

SCHEDULER_TOOLS: dict[str, tuple[str, ...]] = {
    "slurm": ("sbatch", "squeue", "sacct", "scontrol", "scancel"),
    "pjm": ("pjsub", "pjstat", "pjdel"),
    "local": ("bash", "timeout"),
}
"""External programs each scheduler runs; a profile's ``commands`` may point them elsewhere."""


class StrictModel(BaseModel):
    """Base for profile sections: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSpec(StrictModel):
    """One compute node."""

    cpu: str = Field("", max_length=200, description="Processor (informational).")
    cores_per_node: int = Field(..., ge=1, le=4096, description="Cores available to jobs.")
    numa_domains: int = Field(
        1, ge=1, le=64, description="NUMA domains per node (4 CMGs on A64FX, sockets on x86)."
    )
    numa_name: str = Field("NUMA", pattern=WORD_PATTERN, description="Name of a NUMA domain.")
    memory_gib: float = Field(..., gt=0, le=1_000_000, description="Memory per node (GiB).")
    hostnames: list[str] = Field(
        default_factory=list, description="Node host names (informational, e.g. a test cluster)."
    )

    @model_validator(mode="after")
    def _domains(self) -> NodeSpec:
        if self.cores_per_node % self.numa_domains:
            raise ValueError(
                f"{self.cores_per_node} cores cannot be split evenly into "
                f"{self.numa_domains} {self.numa_name} domains"
            )
        return self

    @property
    def cores_per_domain(self) -> int:
        """Cores in one NUMA domain."""
        return self.cores_per_node // self.numa_domains


class Layout(StrictModel):
    """Processes and threads on one node."""

    ranks_per_node: int = Field(..., ge=1, le=4096, description="MPI ranks per node.")
    threads_per_rank: int = Field(..., ge=1, le=4096, description="OpenMP threads per rank.")


class ResourceGroup(StrictModel):
    """A PJM resource group or a Slurm partition, with its limits."""

    min_nodes: int = Field(1, ge=1, description="Fewest nodes a job in this group may use.")
    max_nodes: int = Field(..., ge=1, description="Most nodes a job in this group may use.")
    max_elapse: Duration = Field(..., description="Longest elapse (wall) time.")
    default_elapse: Duration | None = Field(
        None, description="Elapse time used when a job gives none."
    )
    description: str = Field("", max_length=500)

    @model_validator(mode="after")
    def _limits(self) -> ResourceGroup:
        if self.min_nodes > self.max_nodes:
            raise ValueError("min_nodes is larger than max_nodes")
        if self.default_elapse is not None and self.default_elapse > self.max_elapse:
            raise ValueError(
                f"default_elapse {format_hms(self.default_elapse)} exceeds max_elapse "
                f"{format_hms(self.max_elapse)}"
            )
        return self


class Llio(StrictModel):
    """Fugaku's Lightweight Layered IO (LLIO) options."""

    gfscache: str | None = Field(
        None,
        pattern=r"^/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*(:/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*)*$",
        description="Volumes cached by LLIO (PJM_LLIO_GFSCACHE), e.g. /vol0004.",
    )
    sharedtmp_size: str | None = Field(
        None, pattern=SIZE_PATTERN, description="Shared temporary area per job, e.g. 10Gi."
    )
    localtmp_size: str | None = Field(
        None, pattern=SIZE_PATTERN, description="Node-local temporary area, e.g. 10Gi."
    )
    gfscache_from_paths: bool = Field(
        False,
        description="Add to gfscache the volumes of the paths each job uses (data directory, "
        "Python, image), read from their resolved paths.",
    )
    volume_pattern: str = Field(
        r"^/vol[0-9]{4}$",
        description="Regular expression a volume (first component of a resolved path) matches.",
    )
    transfer: list[str] = Field(
        default_factory=list,
        description="Read-only files and directories every node reads (the node's Python "
        "environment, an image), distributed to the nodes' second-layer cache at the start "
        "of each job: files with llio_transfer, directories with dir_transfer (at most "
        "16,384 files in all).",
    )
    transfer_spack: bool = Field(
        False,
        description="After the set-up lines, distribute the Spack directories on PATH and "
        "LD_LIBRARY_PATH with dir_transfer (Spack's executables and libraries).",
    )

    @field_validator("transfer")
    @classmethod
    def _transfer(cls, v: list[str]) -> list[str]:
        for path in v:
            if not re.fullmatch(r"/[A-Za-z0-9_.+/-]*", path) or "/../" in f"{path}/":
                raise ValueError(f"{path!r} is not a plain absolute path")
        return v

    @field_validator("volume_pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a regular expression ({exc})") from None
        return v


class PjmOptions(StrictModel):
    """Options of Fujitsu PJM sites."""

    llio: Llio = Field(default_factory=Llio, description="LLIO settings.")
    stats: bool = Field(True, description="Write a job statistics file (#PJM -S).")
    data_area_only: bool = Field(
        False,
        description="Jobs run only from a data area, not from the home directory (Fugaku).",
    )
    history_days: int = Field(
        3,
        ge=1,
        le=90,
        description="Days of ended jobs pjstat -H day=N looks back (1-90, PJM's default 3).",
    )


class LocalOptions(StrictModel):
    """Options of the local (no batch system) scheduler."""

    state_dir: str | None = Field(
        None, description="Where local job states are kept (default: <data_dir>/local-jobs)."
    )


class Launcher(StrictModel):
    """How parallel programs are started inside a job."""

    FIELDS: ClassVar[tuple[str, ...]] = LAUNCHER_FIELDS

    command: str = Field(
        ...,
        min_length=1,
        description="Trusted command template, e.g. 'mpirun -np {ranks}'; placeholders: "
        + ", ".join(LAUNCHER_FIELDS)
        + "; write {{ and }} for literal braces.",
    )

    @field_validator("command")
    @classmethod
    def _template(cls, v: str) -> str:
        check_shell_line(v)
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(v) if f is not None]
        except ValueError as exc:
            raise ValueError(f"malformed template ({exc})") from None
        for f in fields:
            if f not in cls.FIELDS:
                raise ValueError(f"unknown placeholder {{{f}}} (known: {', '.join(cls.FIELDS)})")
        return v


class TaskLauncher(Launcher):
    """How one MPI task of a slot farm starts its program on its slot (words before it)."""

    FIELDS: ClassVar[tuple[str, ...]] = TASK_LAUNCHER_FIELDS


class Container(StrictModel):
    """A container image that programs are run in (``mpiexec ... apptainer exec img prog``)."""

    image: str = Field(..., min_length=1, description="Image file, e.g. /path/qe.sif.")
    exec_command: list[str] = Field(
        default_factory=lambda: ["apptainer", "exec"],
        min_length=1,
        description="Command that runs a program in the image.",
    )
    options: list[str] = Field(
        default_factory=list, description="Options before the image, e.g. [--bind, /vol0004]."
    )
    jobenv: str | None = Field(
        None,
        pattern=WORD_PATTERN,
        description="PJM job environment the image needs (#PJM -L jobenv=...; Fugaku runs "
        "Singularity images in jobs submitted with jobenv=singularity).",
    )

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        return check_no_nul(v)

    @field_validator("exec_command", "options")
    @classmethod
    def _words(cls, v: list[str]) -> list[str]:
        for w in v:
            check_no_nul(w)
        return v


class ComputeEnv(StrictModel):
    """How matdx itself runs on the compute nodes: their architecture and its Python.

    A job's task farm is ``<farm launcher> <python> -m matdx.cli.main farm ...``. On nodes
    of the submitting host's architecture ``python`` may be left out: the job uses the
    submitting Python. On nodes of another one (Fugaku: x86-64 login nodes, aarch64
    compute nodes) nothing of the submitting host's environment can run there, so
    ``python`` must name a Python with matdx and mpi4py on the nodes, after ``setup``.
    """

    arch: str | None = Field(
        None,
        pattern=WORD_PATTERN,
        description="Compute-node architecture (uname -m), e.g. aarch64.",
    )
    python: str | None = Field(
        None,
        min_length=1,
        description="Python (with matdx and mpi4py) on the compute nodes, after the set-up.",
    )
    setup: list[str] = Field(
        default_factory=list,
        description="Trusted shell lines that give that Python (spack load ... with full specs).",
    )

    @field_validator("python")
    @classmethod
    def _python(cls, v: str | None) -> str | None:
        return None if v is None else check_shell_line(v)

    @field_validator("setup")
    @classmethod
    def _setup(cls, v: list[str]) -> list[str]:
        return _check_lines(v)


def _check_lines(v: list[str]) -> list[str]:
    for i, line in enumerate(v):
        try:
            check_shell_line(line)
        except ValueError as exc:
            raise ValueError(f"line {i + 1} {exc}") from None
    return v


class SiteProfile(StrictModel):
    """A machine: batch system, nodes, limits, environment and launcher."""

    site: str = Field(..., pattern=SITE_PATTERN, description="Site name.")
    description: str = Field("", max_length=1000)
    scheduler: SchedulerKind = Field(..., description="Batch system: slurm, pjm or local.")
    node: NodeSpec
    default_layout: Layout = Field(..., description="Ranks per node × threads per rank.")
    resource_groups: dict[str, ResourceGroup] = Field(
        ..., min_length=1, description="PJM resource groups or Slurm partitions by name."
    )
    default_rscgrp: str | None = Field(
        None, description="Resource group used when a job names none."
    )
    group_required: bool = Field(
        False, description="Jobs must name a group (PJM -g) or account (Slurm --account)."
    )
    default_group: str | None = Field(
        None, pattern=WORD_PATTERN, description="Group/account used when a job names none."
    )
    setup: list[str] = Field(
        default_factory=list,
        description="Trusted shell lines run before the program (module loads, spack).",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment variables (values are quoted)."
    )
    launcher: Launcher
    farm_launcher: Launcher | None = Field(
        None,
        description="How the matdx task farm (Python with mpi4py) is started, when that "
        "differs from the launcher of the simulation codes (e.g. an MPICH-built mpi4py "
        "beside Open MPI programs); default: the launcher.",
    )
    task_launcher: TaskLauncher | None = Field(
        None,
        description="How a slot farm starts one MPI task on its slot (its nodes and cores), "
        "e.g. 'srun --exact -N {nodes} -n {ranks} -c {threads_per_rank} -w {hosts}'; "
        "default: the scheduler's (matdx.sites.slots.TASK_LAUNCHERS).",
    )
    container: Container | None = None
    compute_env: ComputeEnv = Field(
        default_factory=ComputeEnv, description="Architecture and Python of the compute nodes."
    )
    pjm: PjmOptions | None = Field(None, description="PJM-only options (LLIO, statistics).")
    local: LocalOptions | None = Field(None, description="Local-scheduler options.")
    commands: dict[str, str] = Field(
        default_factory=dict,
        description="Paths of the batch-system programs (default: found on PATH).",
    )
    command_timeout: float = Field(
        60, gt=0, le=3600, description="Seconds to wait for a batch-system command."
    )

    @field_validator("resource_groups")
    @classmethod
    def _group_names(cls, v: dict[str, ResourceGroup]) -> dict[str, ResourceGroup]:
        for name in v:
            if not isinstance(name, str) or not re.match(WORD_PATTERN, name):
                raise ValueError(f"resource group name {name!r} is not a plain word")
        return v

    @field_validator("setup")
    @classmethod
    def _setup(cls, v: list[str]) -> list[str]:
        return _check_lines(v)

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        return check_env(v)

    @field_validator("default_layout")
    @classmethod
    def _layout_fits(cls, v: Layout, info: ValidationInfo) -> Layout:
        node = info.data.get("node")
        if node is not None and v.ranks_per_node * v.threads_per_rank > node.cores_per_node:
            raise ValueError(
                f"default_layout {v.ranks_per_node} ranks × {v.threads_per_rank} threads "
                f"exceeds the {node.cores_per_node} cores per node"
            )
        return v

    @field_validator("default_rscgrp")
    @classmethod
    def _default_rscgrp(cls, v: str | None, info: ValidationInfo) -> str | None:
        groups = info.data.get("resource_groups")
        if v is not None and groups is not None and v not in groups:
            raise ValueError(
                f"default_rscgrp {v!r} is not a resource group (known: {', '.join(sorted(groups))})"
            )
        return v

    @field_validator("pjm", "local")
    @classmethod
    def _section_matches(cls, v: BaseModel | None, info: ValidationInfo) -> BaseModel | None:
        kind = info.data.get("scheduler")
        if v is not None and kind is not None and kind != info.field_name:
            raise ValueError(f"the {info.field_name} section is not for {kind} sites")
        return v

    @field_validator("commands")
    @classmethod
    def _commands(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        kind = info.data.get("scheduler")
        known = SCHEDULER_TOOLS.get(kind, ()) if kind else ()
        for tool, path in v.items():
            if kind and tool not in known:
                raise ValueError(f"unknown program {tool!r} for {kind} (known: {', '.join(known)})")
            if not path or any(c in path for c in "\n\r\x00"):
                raise ValueError(f"{tool} must be one non-empty line")
        return v

    @model_validator(mode="after")
    def _jobenv_on_pjm(self) -> SiteProfile:
        if self.container is not None and self.container.jobenv and self.scheduler != "pjm":
            raise ValueError(f"container.jobenv is a PJM option, not one of {self.scheduler}")
        return self

    @property
    def rscgrp_default(self) -> str | None:
        """The resource group used when a job names none (the only one if there is one)."""
        if self.default_rscgrp is not None:
            return self.default_rscgrp
        return next(iter(self.resource_groups)) if len(self.resource_groups) == 1 else None

    def command(self, tool: str) -> str:
        """The program to run for ``tool`` (``sbatch``, ``pjstat``...): configured or bare."""
        return self.commands.get(tool, tool)


def check_env(v: dict[str, str]) -> dict[str, str]:
    """Check environment variable names and values (values are quoted when written)."""
    for name, value in v.items():
        if not isinstance(name, str) or not re.match(ENV_NAME_PATTERN, name):
            raise ValueError(f"{name!r} is not a valid environment variable name")
        if not isinstance(value, str):
            raise ValueError(f"the value of {name} must be a string")
        check_no_nul(value)
    return v


def load_profile(path: str | Path) -> SiteProfile:
    """Read and validate a site profile.

    Parameters
    ----------
    path
        YAML file (``hpc_profiles/fugaku.yaml``).

    Returns
    -------
    SiteProfile
        The validated profile.

    Raises
    ------
    InputError
        ``"profile <file> line N, field a.b: message"`` for the first problem found.
    """
    data, lines = load_yaml(path, what="profile")
    what = f"profile {Path(path).name}"
    return validate_yaml_model(SiteProfile, data, lines, what)  # type: ignore[return-value]


def parse_profile(data: object, what: str = "profile") -> SiteProfile:
    """Validate an already-loaded profile mapping (e.g. embedded in a qadapter file)."""
    return validate_yaml_model(SiteProfile, data, {}, what)  # type: ignore[return-value]
