"""The campaign pipeline: loading, planning, steps, and the bridge to FireWorks.

Only :mod:`matdx.workflows.fireworks_adapter` imports FireWorks; running on clusters is
:mod:`matdx.execution`.
"""
