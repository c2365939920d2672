"""LAMMPS with EAM potentials: molecular dynamics (NVE, NVT, NPT, Langevin) and minimization.

:mod:`~matdx.engines.lammps.inputs` writes the data file and input script,
:mod:`~matdx.engines.lammps.parse` reads ``log.lammps`` and dumps,
:mod:`~matdx.engines.lammps.handlers` holds the custodian error handlers and
:mod:`~matdx.engines.lammps.core` runs LAMMPS (``calculate``, ``relax``).
"""
