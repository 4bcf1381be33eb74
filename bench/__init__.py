"""Benchmarks: each script prints figures (`--json` for one object); see BENCHMARKS.md."""
