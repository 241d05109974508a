"""Exact critical-window theory: mixtures, forward processes, TV, window edges and bounds (DESIGN §1)."""
