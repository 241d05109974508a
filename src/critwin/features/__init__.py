"""Features: map a sample to a hashable label, or None when it cannot be read (an unparseable item)."""
