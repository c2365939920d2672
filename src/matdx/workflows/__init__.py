"""Campaign workflows: loading, planning, steps, and the FireWorks adapter.

Only :mod:`matdx.workflows.fireworks_adapter` imports FireWorks.
"""
