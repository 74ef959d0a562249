"""Benchmarks: `make bench` runs every `bench/bench_*.py` module's `run()` and merges their figures.

Each module exposes ``run() -> dict[str, float]``; the figures land in ``bench/results.json`` (a flat
JSON object of named figures) and are printed as a table. ``BENCH_ONLY=name`` runs a single module.
"""
