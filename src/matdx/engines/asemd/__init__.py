"""Molecular dynamics with ASE integrators and ASE calculators (EMT).

:mod:`~matdx.engines.asemd.dynamics` sets up and runs the integrator,
:mod:`~matdx.engines.asemd.handlers` holds the custodian error handlers and
:mod:`~matdx.engines.asemd.core` runs it under custodian (:class:`~.core.AseMdEngine`).
"""
