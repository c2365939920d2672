"""Task slots: a job's nodes and cores split between the MPI tasks that run at once.

A step's task asks for ``nodes`` × ``ranks_per_node`` MPI ranks of ``threads`` OpenMP threads
(:class:`~matdx.schemas.campaign.TaskResources`, resolved against the site's nodes by
:func:`resolve_request`). A :class:`CorePool` holds the cores of a job's nodes and hands out
:class:`Slot` objects, each a set of cores no other running task has: whole nodes for
tasks of more than one node (or on sites whose launcher places processes by node only, such
as Fujitsu MPI's ``--vcoordfile``), else cores of one node, each rank's threads within one
NUMA domain (a CMG of the A64FX) when they fit in one. The sum of ranks × threads of the
tasks on a node never exceeds its cores.

:func:`launch_prefix` turns a slot into the words that start the task's program on it,
from the profile's ``task_launcher`` template or the scheduler's default
(:data:`TASK_LAUNCHERS`): a Slurm job step of its own (``srun --exact``), a Fujitsu MPI
``mpiexec --vcoordfile`` (:func:`vcoord_text`, one ``(node)`` line per rank, 0-based within
the job's nodes), or Open MPI's ``mpirun`` on a set of cores; :func:`rank_output` says
where that launch writes rank 0's output when it does not pass it on (Fujitsu MPI).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from matdx.core.errors import InputError
from matdx.core.rank_output import RankOutput, fujitsu_rank_output
from matdx.schemas.campaign import TaskResources
from matdx.sites.models import NodeSpec, SiteProfile

TASK_LAUNCHERS: dict[str, str] = {
    # a job step of its own within the allocation, on the slot's nodes and cores
    "slurm": "srun --exact -N {nodes} -n {ranks} -c {threads_per_rank} --cpu-bind=cores "
    "-w {hosts}",
    # Fugaku user guide 1.52, MPI/HowToExecuteABackgroundJob: concurrent mpiexec with
    # non-overlapping VCOORD files; MPI/InputOutputRedirection: -stdout-proc/-stderr-proc
    "pjm": "mpiexec --vcoordfile {vcoordfile} -n {ranks} "
    "-stdout-proc ./output.%j/%m/%/1000r/stdout -stderr-proc ./output.%j/%m/%/1000r/stderr",
    # Open MPI: every rank restricted to the slot's cores
    "local": "mpirun -np {ranks} taskset -c {cores}",
}
"""Default task launch template of each scheduler (a profile's ``task_launcher`` overrides)."""

WHOLE_NODES: dict[str, bool] = {"slurm": False, "pjm": True, "local": False}
"""Whether the scheduler's launcher gives tasks whole nodes only.

Fujitsu MPI places the processes of concurrent ``mpiexec`` calls by the node coordinates of
their VCOORD files, which must not overlap (Fugaku user guide, MPI/HowToExecuteABackgroundJob).
"""

RANK_OUTPUT: dict[str, Callable[[Sequence[str]], RankOutput]] = {"pjm": fujitsu_rank_output}
"""Where the scheduler's launcher writes rank 0's standard output and error, from the launch
words, where it does not pass them on: Fujitsu MPI's ``mpiexec`` writes per-rank files
(Fugaku user guide, MPI/InputOutputRedirection; :mod:`matdx.core.rank_output`)."""

MAX_LAUNCHES: dict[str, int] = {"pjm": 128}
"""Most MPI tasks a job may run at once, where the launcher limits it: Fujitsu MPI runs at
most 128 background ``mpiexec`` (Fugaku user guide, MPI/HowToExecuteABackgroundJob,
"PLE 0050 plexec cannot be executed any further")."""


@dataclass(frozen=True)
class SlotRequest:
    """One task's resolved needs: ``nodes`` × ``ranks_per_node`` ranks of ``threads``."""

    nodes: int
    ranks_per_node: int
    threads: int
    mpi: bool = True

    @property
    def ranks(self) -> int:
        """MPI ranks of the task."""
        return self.nodes * self.ranks_per_node

    @property
    def cores_per_node(self) -> int:
        """Cores the task takes on each of its nodes."""
        return self.ranks_per_node * self.threads

    def describe(self) -> str:
        """``"1 node × 4 ranks × 12 threads"``."""
        kind = "" if self.mpi else " (serial)"
        return (
            f"{self.nodes} node{'s' * (self.nodes > 1)} × {self.ranks_per_node} "
            f"rank{'s' * (self.ranks_per_node > 1)} × {self.threads} "
            f"thread{'s' * (self.threads > 1)}{kind}"
        )


SERIAL = SlotRequest(1, 1, 1, mpi=False)
"""What a task that computes in its own process (EMT, analysis) takes: one core."""


def resolve_request(
    profile: SiteProfile,
    resources: TaskResources | Mapping[str, Any] | None,
    mpi: bool = True,
    what: str = "task",
) -> SlotRequest:
    """A step's resources on this site's nodes; the profile's defaults fill the gaps.

    Parameters
    ----------
    profile
        The site (nodes, ``default_layout``).
    resources
        The step's ``resources`` (``None``: one node with the profile's default layout).
    mpi
        The engine starts an MPI program; a serial one takes :data:`SERIAL`.
    what
        Name used in errors (``"step dft"``).

    Raises
    ------
    InputError
        The task does not fit on the site's nodes.
    """
    if not mpi:
        return SERIAL
    res = TaskResources.model_validate(dict(resources or {}))
    layout = profile.default_layout
    node = profile.node
    if res.ranks is not None:
        per_node = res.ranks // res.nodes
    else:
        per_node = res.ranks_per_node or layout.ranks_per_node
    threads = res.threads or (layout.threads_per_rank if res.ranks is None else 1)
    request = SlotRequest(res.nodes, per_node, threads)
    check_request(node, request, what)
    return request


def check_request(node: NodeSpec, request: SlotRequest, what: str = "task") -> None:
    """Refuse a task that does not fit on one of these nodes (one line, naming the limit)."""
    if request.cores_per_node > node.cores_per_node:
        raise InputError(
            f"{what}: {request.ranks_per_node} ranks × {request.threads} threads per node "
            f"need {request.cores_per_node} cores; a node has {node.cores_per_node}"
        )
    per_domain = node.cores_per_domain
    if node.numa_domains > 1 and request.threads <= per_domain:
        fit = per_domain // request.threads * node.numa_domains
        if request.ranks_per_node > fit:
            raise InputError(
                f"{what}: {request.ranks_per_node} ranks of {request.threads} threads do not "
                f"fit in {node.numa_domains} {node.numa_name}s of {per_domain} cores without "
                f"a rank straddling two (at most {fit} per node)"
            )


@dataclass(frozen=True)
class Slot:
    """Nodes and cores of one running task.

    Attributes
    ----------
    nodes
        Node indices within the job (0-based, as Fujitsu MPI's VCOORD files count them).
    cores
        Core numbers the task has on each of its nodes.
    request
        What the task asked for.
    """

    nodes: tuple[int, ...]
    cores: tuple[int, ...]
    request: SlotRequest

    def core_list(self) -> str:
        """Cores as a list for ``taskset -c`` / ``--cpu-set`` (``"0,1"``)."""
        return ",".join(str(c) for c in self.cores)


class CorePool:
    """The cores of a job's nodes, handed out as slots of disjoint cores.

    Parameters
    ----------
    nodes
        Nodes of the job.
    node
        What one node has (cores, NUMA domains).
    whole_nodes
        Hand out whole nodes only (see :data:`WHOLE_NODES`).
    """

    def __init__(self, nodes: int, node: NodeSpec, whole_nodes: bool = False) -> None:
        self.node = node
        self.whole_nodes = whole_nodes
        self.free: list[set[int]] = [set(range(node.cores_per_node)) for _ in range(nodes)]

    @property
    def nodes(self) -> int:
        """Nodes of the job."""
        return len(self.free)

    def fits(self, request: SlotRequest) -> bool:
        """Whether the request could run at all in this job (on its empty nodes)."""
        return request.nodes <= self.nodes and request.cores_per_node <= self.node.cores_per_node

    def used(self, node: int) -> int:
        """Cores of ``node`` held by slots."""
        return self.node.cores_per_node - len(self.free[node])

    def take(self, request: SlotRequest, first_node_only: bool = False) -> Slot | None:
        """Cores for ``request`` that no running task has, or ``None`` if none are free now.

        ``first_node_only``: place it on node 0 (a serial task runs in the farm's own
        process, on the job's first node).
        """
        full = self.node.cores_per_node
        candidates = [0] if first_node_only else list(range(self.nodes))
        whole = (self.whole_nodes and request.mpi) or request.nodes > 1
        if whole or request.cores_per_node == full:
            idle = [n for n in candidates if len(self.free[n]) == full]
            if len(idle) < request.nodes:
                return None
            chosen = tuple(idle[: request.nodes])
            for n in chosen:
                self.free[n].clear()
            return Slot(chosen, tuple(range(full)), request)
        for n in candidates:
            cores = self._cores_on(n, request)
            if cores is not None:
                self.free[n] -= set(cores)
                return Slot((n,), tuple(sorted(cores)), request)
        return None

    def _cores_on(self, n: int, request: SlotRequest) -> list[int] | None:
        """Cores of node ``n`` for each rank's threads, within one NUMA domain if they fit."""
        per_domain = self.node.cores_per_domain
        free = set(self.free[n])
        taken: list[int] = []
        for _ in range(request.ranks_per_node):
            if request.threads <= per_domain:
                domains = [
                    sorted(c for c in free if c // per_domain == d)
                    for d in range(self.node.numa_domains)
                ]
                block = next((d[: request.threads] for d in domains if len(d) >= request.threads),
                             None)
            else:
                block = sorted(free)[: request.threads]
                block = block if len(block) == request.threads else None
            if block is None:
                return None
            free -= set(block)
            taken += block
        return taken

    def give(self, slot: Slot) -> None:
        """Return a slot's cores."""
        for n in slot.nodes:
            self.free[n] |= set(slot.cores)


def plan_job(profile: SiteProfile, nodes: int, request: SlotRequest) -> list[Slot]:
    """The slots a job of ``nodes`` nodes holds at once for tasks of ``request``."""
    pool = CorePool(nodes, profile.node, WHOLE_NODES[profile.scheduler])
    limit = MAX_LAUNCHES.get(profile.scheduler) if request.mpi else None
    slots: list[Slot] = []
    while (limit is None or len(slots) < limit) and (
        slot := pool.take(request, first_node_only=not request.mpi)
    ) is not None:
        slots.append(slot)
    return slots


def vcoord_text(slot: Slot) -> str:
    """A Fujitsu MPI VCOORD file for the slot: one ``(node)`` line per rank.

    Node coordinates are 0-based within the job, one dimension (Fugaku user guide,
    MPI/HowToExecuteABackgroundJob, "Create VCOORD_FILE file").
    """
    return "".join(
        f"({n})\n" for n in slot.nodes for _ in range(slot.request.ranks_per_node)
    )


def task_template(profile: SiteProfile) -> str:
    """The profile's task launch template, else its scheduler's (:data:`TASK_LAUNCHERS`)."""
    if profile.task_launcher is not None:
        return profile.task_launcher.command
    return TASK_LAUNCHERS[profile.scheduler]


def launch_prefix(
    profile: SiteProfile,
    slot: Slot,
    hosts: list[str] | None = None,
    vcoordfile: str = "",
    job_name: str = "matdx",
) -> tuple[str, ...]:
    """The words that start a task's program on ``slot`` (the program itself follows).

    Parameters
    ----------
    profile
        The site (task launch template).
    slot
        The task's nodes and cores.
    hosts
        Host names of the job's nodes, in order (Slurm's ``-w``).
    vcoordfile
        Path of the slot's VCOORD file (Fujitsu MPI).
    """
    r = slot.request
    names = [hosts[n] if hosts and n < len(hosts) else str(n) for n in slot.nodes]
    text = task_template(profile).format(
        nodes=r.nodes,
        ranks=r.ranks,
        ranks_per_node=r.ranks_per_node,
        threads_per_rank=r.threads,
        job_name=job_name,
        cores=slot.core_list(),
        hosts=",".join(names),
        vcoordfile=vcoordfile,
    )
    return tuple(shlex.split(text))


def rank_output(profile: SiteProfile, prefix: Sequence[str]) -> RankOutput | None:
    """Where a task launched with ``prefix`` writes rank 0's output (:data:`RANK_OUTPUT`).

    ``None``: the launcher passes it on to its own standard output and error.
    """
    rule = RANK_OUTPUT.get(profile.scheduler)
    return rule(prefix) if rule is not None else None


def slot_env(slot: Slot) -> dict[str, str]:
    """Environment of a task's program on ``slot`` (its OpenMP threads)."""
    return {"OMP_NUM_THREADS": str(slot.request.threads)}
