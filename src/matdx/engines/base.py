"""What every engine shares: its machine profile, its calculation request, error recovery.

An engine is a *template* — writing inputs, running, parsing, the same on every machine —
plus an :class:`EngineProfile` holding the command for one machine (as ASE's
``GenericFileIOCalculator`` separates a calculator's template from its profile). Engines
return :class:`~matdx.schemas.results.CalcResult` whatever the code.

Error recovery follows custodian's model and uses custodian itself: a code runs as a
:class:`custodian.custodian.Job`, problems are found by
:class:`custodian.custodian.ErrorHandler` objects whose ``check()`` looks at the run and
whose ``correct()`` returns declarative actions (``{"dict": "parameters", "action":
{"_set": {"mixing_beta": 0.3}}}``), applied with custodian's ``Modder`` to the engine's
parameter dictionary before the next attempt (:func:`modify`, :func:`apply_actions`);
:func:`run_with_recovery` runs custodian with a bound on corrections and returns every
correction so that it is stored in the calculation's provenance.

*The engine contract.* Every engine is an :class:`Engine` with one method,
``calculate(structure, task, settings, workdir=None, deadline=None) -> CalcResult``, for
the campaign task names it declares (``relax``, ``vc-relax``, ``static``, ``md``; each
engine maps them to its code's own names, e.g. pw.x's ``scf``). Its capabilities are data
of its registry entry (:class:`~matdx.engines.specs.EngineSpec`), readable
without importing the engine: ``name``, ``description``, ``tasks``, ``resumable``,
``elements_setting``, ``seconds_per_structure``; ``supported_elements()`` is asked of the
engine (``None``: not limited). :meth:`Engine.calculate` checks the task (one-line
:class:`~matdx.core.errors.InputError` otherwise) and the deadline, then calls the
engine's :meth:`Engine.run`. Every engine accepts ``deadline`` (seconds since the epoch):
a *resumable* engine stops cleanly before it and continues in the same work directory
when called again; the others start nothing once it has passed.

*Giving up.* A handler that has no correction left returns :func:`give_up`'s
``{"errors": [message], "actions": None}``, which custodian treats as unrecoverable;
:func:`run_with_recovery` then raises :class:`~matdx.core.errors.EngineError` with that
one-line message. Handlers never raise to give up (a deadline stop, which is no failure,
raises :class:`~matdx.core.errors.DeadlineReachedError`). A continuation from restart
files or a checkpoint is recorded as a correction too (:func:`resume_correction`).
"""

from __future__ import annotations

import shlex
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from matdx.core.errors import DeadlineReachedError, EngineError, InputError
from matdx.core.rank_output import RankOutput, per_rank_output
from matdx.engines.specs import ENGINES, EngineSpec

if TYPE_CHECKING:
    from matdx.schemas.results import CalcResult


@dataclass(frozen=True)
class EngineProfile:
    """The command that runs a code on one machine.

    Attributes
    ----------
    command
        Program and arguments, e.g. ``["/usr/bin/mpirun", "--allow-run-as-root", "-np",
        "2", "pw.x"]`` here or ``["mpiexec", "pw.x"]`` on Fugaku.
    env
        Extra environment of the run.
    data
        Site data paths (pseudopotential directory, potentials directory, ...).
    output
        Where the launcher writes rank 0's standard output and error, when it does not
        pass them on (Fujitsu MPI's per-rank files); ``None``: on its own. The engine
        collects them into its output files (:func:`matdx.engines.program.start_program`).
        Left out, a command with Fujitsu MPI's per-rank output options (``mpiexec
        -stdout-proc ...``) gets the files they name
        (:func:`matdx.core.rank_output.per_rank_output`).
    """

    command: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)
    output: RankOutput | None = None

    def __post_init__(self) -> None:
        if self.output is None:
            object.__setattr__(self, "output", per_rank_output(self.command))

    @classmethod
    def from_text(cls, command: str, **kwargs: Any) -> EngineProfile:
        """Build a profile from a command line (split like a shell, never run by one)."""
        return cls(tuple(shlex.split(command)), **kwargs)

    def check(self) -> None:
        """Raise :class:`EngineError` if the program is not found."""
        import shutil

        if not self.command:
            raise EngineError("empty engine command")
        # the launcher (first word) and the program (last word: pw.x, lmp, vasp_std)
        for prog in dict.fromkeys((self.command[0], self.command[-1])):
            if shutil.which(prog) is None and not Path(prog).is_file():
                raise EngineError(f"executable {prog!r} not found")


@dataclass(frozen=True)
class TaskLaunch:
    """How the task being run starts its MPI program: the launch prefix of its slot.

    A slot farm (:mod:`matdx.execution.slots`) gives each task cores and nodes of its own
    and runs it within :func:`task_launch`; an MPI engine's profile is then ``prefix`` plus
    the engine's program (:func:`slot_profile`), e.g. ``("srun", "--exact", "-N", "1",
    "-n", "4", "-c", "12", "pw.x")``, instead of the machine's global command.

    Attributes
    ----------
    prefix
        Launcher and its options, up to (not including) the program.
    env
        Environment of the program (``OMP_NUM_THREADS`` of the slot).
    output
        Where the launcher writes rank 0's standard output and error, when it does not
        pass them on (:func:`matdx.sites.slots.rank_output`); ``None``: on its own.
    """

    prefix: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    output: RankOutput | None = None


_TASK_LAUNCH: ContextVar[TaskLaunch | None] = ContextVar("matdx_task_launch", default=None)


@contextmanager
def task_launch(launch: TaskLaunch | None) -> Iterator[None]:
    """Run the block's MPI engines with ``launch`` (``None``: the machine's own command)."""
    token = _TASK_LAUNCH.set(launch)
    try:
        yield
    finally:
        _TASK_LAUNCH.reset(token)


def slot_profile(command: str, **kwargs: Any) -> EngineProfile:
    """An MPI engine's profile: the machine's ``command``, or the current slot's launch.

    Within :func:`task_launch` the command's last word (the program, ``pw.x``) runs after
    the slot's prefix, with the slot's environment over ``kwargs["env"]`` and the slot's
    ``output``; elsewhere the profile is ``command`` as it is
    (:meth:`EngineProfile.from_text`).
    """
    launch = _TASK_LAUNCH.get()
    if launch is None:
        return EngineProfile.from_text(command, **kwargs)
    env = {**kwargs.pop("env", {}), **launch.env}
    return EngineProfile(
        (*launch.prefix, shlex.split(command)[-1]), env=env, output=launch.output, **kwargs
    )


def run_with_recovery(
    job: Any,
    handlers: Sequence[Any],
    max_errors: int = 5,
    directory: Path | None = None,
) -> list[dict[str, Any]]:
    """Run a custodian ``Job`` with ``handlers``; return the corrections made.

    Parameters
    ----------
    job
        A :class:`custodian.custodian.Job`.
    handlers
        :class:`custodian.custodian.ErrorHandler` objects.
    max_errors
        Most corrections before giving up.
    directory
        Working directory of the run.

    Returns
    -------
    list of dict
        One entry per correction: ``{"errors": [...], "actions": [...], "handler": name}``.

    Raises
    ------
    EngineError
        If the run still fails after ``max_errors`` corrections, or a handler gave up
        (:func:`give_up`: the message is the handler's).
    """
    import logging

    from custodian import Custodian
    from custodian.custodian import CustodianError

    # corrections are returned and stored; custodian's own log lines stay out of the terminal
    logging.getLogger("custodian").addHandler(logging.NullHandler())

    c = Custodian(
        list(handlers),
        [job],
        max_errors=max_errors,
        directory=str(directory or "."),
        gzipped_output=False,
        checkpoint=False,
        terminate_on_nonzero_returncode=False,
    )
    started = _track_processes(job)
    try:
        log = c.run()
    except BaseException as exc:
        # interrupted (a signal, a timeout, an error in a handler) or given up: whatever
        # the job started must not keep running, and holding cores, after this call
        for process in started:
            _stop(process)
        if not isinstance(exc, CustodianError):
            raise
        last = c.run_log[-1].get("corrections", []) if c.run_log else []
        given_up = [corr for corr in last if not corr.get("actions")]
        if given_up and given_up[-1].get("errors"):
            raise EngineError("; ".join(map(str, given_up[-1]["errors"]))) from None
        raise EngineError(f"{type(job).__name__} failed: {exc}") from None
    corrections = []
    for entry in log:
        for corr in entry.get("corrections", []):
            corrections.append(
                {
                    "errors": list(corr.get("errors", [])),
                    "actions": corr.get("actions"),
                    "handler": type(corr.get("handler")).__name__
                    if corr.get("handler") is not None
                    else None,
                }
            )
    return corrections


def _track_processes(job: Any) -> list[Any]:
    """Record every process ``job.run`` returns (custodian's Job contract: a Popen)."""
    started: list[Any] = []
    run = job.run

    def tracked(*args: Any, **kwargs: Any) -> Any:
        process = run(*args, **kwargs)
        if hasattr(process, "poll"):
            started.append(process)
        return process

    job.run = tracked
    return started


def _stop(process: Any, grace: float = 10.0) -> None:
    """End ``process`` if it still runs.

    SIGTERM first (mpirun passes it on to its ranks), SIGKILL after ``grace`` seconds.
    """
    import subprocess

    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def give_up(message: str) -> dict[str, Any]:
    """What a handler's ``correct()`` returns when it has no correction left.

    custodian treats a correction without actions as unrecoverable; :func:`run_with_recovery`
    raises :class:`~matdx.core.errors.EngineError` with ``message``.
    """
    return {"errors": [message], "actions": None}


def modify(parameters: dict[str, Any], actions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Apply custodian actions on ``"parameters"`` to ``parameters`` (in place; returned)."""
    from custodian.ansible.interpreter import Modder

    modder = Modder()
    for act in actions:
        if act.get("dict") == "parameters":
            modder.modify(act["action"], parameters)
    return parameters


def apply_actions(
    directory: Path,
    actions: Sequence[dict[str, Any]],
    load: Callable[[Path], dict[str, Any]],
    save: Callable[[Path, dict[str, Any]], None],
) -> None:
    """Apply custodian actions on ``"parameters"`` to the parameter file of a run.

    Parameters
    ----------
    directory
        The run directory.
    actions
        custodian actions; those on ``"parameters"`` are applied.
    load, save
        The engine's reader and writer of its parameter file in ``directory``.
    """
    save(Path(directory), modify(load(Path(directory)), actions))


def resume_correction(reason: str, updates: dict[str, Any], handler: str) -> dict[str, Any]:
    """The correction entry recording that a call continued an earlier, unfinished run.

    Parameters
    ----------
    reason
        Why the earlier run did not finish (one line).
    updates
        The parameter changes of the continuation (custodian ``_set`` keys).
    handler
        Name recorded as the correction's ``handler``.
    """
    return {
        "errors": [reason],
        "actions": [{"dict": "parameters", "action": {"_set": updates}}],
        "handler": handler,
    }


MIN_SEPARATION = 0.5
"""Atoms closer than this (Å) make a structure physically meaningless."""


def check_structure(structure: Any, min_separation: float = MIN_SEPARATION) -> None:
    """Refuse a structure with overlapping atoms or a (nearly) singular cell.

    Raises
    ------
    InputError
        One line saying what is wrong.
    """
    import numpy as np

    from matdx.core.errors import InputError

    volume = float(abs(np.linalg.det(structure.lattice.matrix)))
    if not np.isfinite(volume) or volume < 1e-3 * len(structure):
        raise InputError(f"structure has a singular cell (volume {volume:.3g} Å³)")
    centers, neighbors, _, dist = structure.get_neighbor_list(min_separation)
    if len(dist):
        k = int(np.argmin(dist))
        raise InputError(
            f"structure has atoms {int(centers[k])} and {int(neighbors[k])} {dist[k]:.3f} Å "
            f"apart (closer than {min_separation} Å)"
        )


DEADLINE_MARGIN_FRACTION = 0.1
"""Share of the time left before a deadline that a run keeps free."""

DEADLINE_MIN_MARGIN_S = 5.0
"""Smallest margin (s) a run keeps before its deadline."""

MIN_RUN_S = 2.0
"""Shortest run time (s) worth starting a program for; with less, the deadline has come."""


def deadline_budget(deadline: float | None, now: float | None = None) -> float | None:
    """Seconds a run starting now may take: the time left minus a safety margin.

    The margin is :data:`DEADLINE_MARGIN_FRACTION` of the time left, at least
    :data:`DEADLINE_MIN_MARGIN_S`. ``None`` without a deadline; may be below
    :data:`MIN_RUN_S` or negative when the deadline is near.
    """
    if deadline is None:
        return None
    left = deadline - (time.time() if now is None else now)
    return left - max(DEADLINE_MIN_MARGIN_S, DEADLINE_MARGIN_FRACTION * left)


class Engine(ABC):
    """A calculation engine: one ``calculate`` for every task, capabilities as data.

    Subclasses set :attr:`key` (their registry name) and implement :meth:`run`; their
    capabilities come from their registry entry, so that the workflow layer reads them
    without importing the engine.

    Parameters
    ----------
    profile
        The command of this machine (external codes; default: the engine's own default,
        read from the environment at each call).
    max_corrections
        Most custodian corrections of one calculation before giving up.
    """

    key: ClassVar[str]
    """Registry name (``"emt"``, ``"qe"``, ...)."""

    def __init__(self, profile: EngineProfile | None = None, max_corrections: int = 5) -> None:
        self.profile = profile
        self.max_corrections = max_corrections

    @property
    def spec(self) -> EngineSpec:
        """The engine's registry entry."""
        return ENGINES[self.key]

    @property
    def name(self) -> str:
        """Registry name."""
        return self.spec.name

    @property
    def description(self) -> str:
        """One line for help and errors."""
        return self.spec.description

    @property
    def tasks(self) -> tuple[str, ...]:
        """Campaign task names the engine runs (relax, vc-relax, static, md)."""
        return self.spec.tasks

    @property
    def resumable(self) -> bool:
        """Whether a run stopped at its deadline continues in the same work directory."""
        return self.spec.resumable

    @property
    def elements_setting(self) -> str | None:
        """Setting that takes all the elements of a campaign (e.g. ``pseudo_elements``)."""
        return self.spec.elements_setting

    @property
    def seconds_per_structure(self) -> float:
        """Rough cost of one calculation on one core (s)."""
        return self.spec.seconds_per_structure

    def supported_elements(self) -> frozenset[str] | None:
        """Elements the engine can treat, ``None`` if not limited."""
        return None

    def calculate(
        self,
        structure: Any,
        task: str,
        settings: Mapping[str, Any] | None = None,
        workdir: str | Path | None = None,
        deadline: float | None = None,
    ) -> CalcResult:
        """Run ``task`` on ``structure``.

        Parameters
        ----------
        structure
            pymatgen ``Structure`` (engines running ASE also take ASE ``Atoms``).
        task
            A campaign task name the engine declares (:attr:`tasks`).
        settings
            The engine's settings of the task.
        workdir
            Run directory (default: a temporary one; engines writing no files ignore it).
        deadline
            Seconds since the epoch by which the call must have returned. A resumable
            engine stops before it, raises :class:`~matdx.core.errors.DeadlineReachedError`
            and continues in the same ``workdir`` when called again; any other engine
            starts nothing once the deadline has passed.

        Raises
        ------
        InputError
            ``engine 'x' has no task 'y' (it has: ...)``, or bad settings.
        DeadlineReachedError
            The deadline came before the calculation could finish.
        EngineError
            The calculation failed.
        """
        require_task(self.name, self.tasks, task)
        if deadline is not None and not self.resumable and time.time() >= deadline:
            raise DeadlineReachedError(f"deadline passed before {self.name} {task} started")
        return self.run(structure, task, dict(settings or {}), workdir, deadline)

    def calculate_many(
        self,
        structures: Sequence[Any],
        task: str,
        settings: Mapping[str, Any] | None = None,
    ) -> list[CalcResult | Exception]:
        """Run ``task`` on many structures (no work directory, no deadline).

        This default runs :meth:`calculate` on each in turn; an engine whose registry
        entry says ``batched`` computes them together.

        Returns
        -------
        list of CalcResult or Exception
            One per structure, in order: its result or the error that stopped it.
        """
        out: list[CalcResult | Exception] = []
        for structure in structures:
            try:
                out.append(self.calculate(structure, task, settings))
            except Exception as exc:
                out.append(exc)
        return out

    @abstractmethod
    def run(
        self,
        structure: Any,
        task: str,
        settings: dict[str, Any],
        workdir: str | Path | None,
        deadline: float | None,
    ) -> CalcResult:
        """Run a declared ``task`` (called by :meth:`calculate`, which checked it)."""


def require_task(engine: str, tasks: Sequence[str], task: str) -> None:
    """Raise :class:`InputError` if ``task`` is not one of the engine's ``tasks``."""
    if task not in tasks:
        raise InputError(
            f"engine {engine!r} has no task {task!r} (it has: {', '.join(tasks) or 'none'})"
        )
