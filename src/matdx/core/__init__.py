"""Core utilities shared by every layer: settings, errors, hashing, YAML loading."""
