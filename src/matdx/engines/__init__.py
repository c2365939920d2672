"""Calculation engines.

Each engine is a *template* (inputs, run, parse: the same on every machine) plus, for
external codes, a *profile* holding the command for one machine. Engines depend on
schemas and core only: never on workflows, the store or FireWorks.
"""
