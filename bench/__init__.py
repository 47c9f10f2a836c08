"""Benchmarks: ``python -m bench.<name>``; each prints figures and ratios to a baseline measured
in the same run (medians)."""
