"""ASE's effective-medium theory: the cheap pre-screen engine."""
