"""Experiments: thin compositions of samplers, features, scan and windows (DESIGN §2)."""
