"""The ``matdx`` command line."""
