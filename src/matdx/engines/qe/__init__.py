"""Quantum ESPRESSO (pw.x): static, relax and vc-relax calculations with error recovery.

The engine is split like ASE's ``GenericFileIOCalculator``: a *template* that is the same
on every machine — :mod:`.inputs` builds one JSON-able parameter dictionary (namelists,
k-point mesh, pseudopotential files, structure) and writes the pw.x input from it with ASE's
``write_espresso_in``; :mod:`.pseudo` chooses one pseudopotential per element from a
configured family (``"debian"``: the files in ``/usr/share/espresso/pseudo``, PBE first),
recording file names and MD5 sums; :mod:`.parse` reads the output (ASE's reader plus
convergence, version, wall time, band gap, magnetic moments) and refuses empty, truncated or
corrupt files — and a *profile* (:class:`~matdx.engines.base.EngineProfile`) holding this
machine's command (``MATDX_QE_COMMAND``, default ``/usr/bin/mpirun --allow-run-as-root
-np 2 pw.x``), pseudopotential directory and family (:func:`.core.default_profile`).

:mod:`.core` runs pw.x as a custodian ``Job`` (:class:`.core.PWJob`: writes the input from
the current parameters, starts the command without a shell). The handlers of
:mod:`.handlers` correct failed runs by changing the parameters with custodian's declarative
actions: an unconverged SCF gets more iterations, gentler mixing and then CG
diagonalisation; a relaxation out of ionic steps restarts from its last geometry; a run
stopped at ``max_seconds`` continues from pw.x's restart files; a killed or out-of-memory
run gets fewer MPI ranks, then less memory-hungry diagonalisation, then gives up. Every
correction is returned in ``CalcResult.corrections``.

Deadlines and resumption (:mod:`.resume`): ``calculate(..., deadline=<epoch seconds>)`` gives
pw.x a ``max_seconds`` that ends it before the deadline (10 % of the time left, at least 5 s,
kept free); a run stopped there is not restarted in the same call but raises
:class:`~matdx.core.errors.DeadlineReachedError`, leaving pw.x's restart files and the record
``matdx_qe_state.json`` in the work directory. The next call for the same calculation and
directory continues with ``restart_mode='restart'`` (``extra["resumed"]``, a ``DeadlineResume``
correction); a run killed without a clean stop starts again from scratch.

Public API (import from :mod:`matdx.engines.qe.core`): :class:`~.core.QeEngine` (the
registry's ``qe`` engine: ``QeEngine(profile, max_corrections).calculate(structure, task,
settings, workdir, deadline)``) and ``default_profile``.
"""
