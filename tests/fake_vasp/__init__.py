"""A fake ``vasp_std`` for tests: see ``fake_vasp.py`` and ``README.md``."""
