"""Engine-agnostic analysis of computed results (thermodynamics, plots)."""
