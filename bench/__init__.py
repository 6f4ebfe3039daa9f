"""Benchmark harness for blogstore (issue 7): dataset generator, load generator, limits.

Run it with `uv run python -m bench load ...` and `uv run python -m bench run ...`; see
BENCHMARKS.md for the commands and the figures measured on the reference machine.
"""
