"""LAMMPS with EAM potentials: molecular dynamics (NVE, NVT, NPT, Langevin) and minimization.

:mod:`~matdx.engines.lammps.inputs` writes the data file and input script,
:mod:`~matdx.engines.lammps.parse` reads ``log.lammps`` and dumps,
:mod:`~matdx.engines.lammps.handlers` holds the custodian error handlers,
:mod:`~matdx.engines.lammps.checkpoint` the checkpoints, deadline stops and resumption of MD
runs, and :mod:`~matdx.engines.lammps.core` runs LAMMPS (``calculate``, ``relax``).

MD runs write a checkpoint every ``checkpoint_interval`` steps (default 1000); with
``deadline=`` (epoch seconds) they stop at ``timer timeout`` before it, write a last
checkpoint and raise :class:`~matdx.core.errors.DeadlineReachedError`. Called again on the same
work directory with the same settings and structure, a stopped or killed MD run continues from
its latest checkpoint for the remaining steps, and its result covers the whole production run.
"""
