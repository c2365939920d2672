"""Candidate generation: pure functions from chemical space to pymatgen structures."""
