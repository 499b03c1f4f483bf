"""The project's benchmarks: speed goals measured on this machine and recorded in docs/benchmarks.md.

Tests assert behaviour only; how fast something happens is measured here, by ``benchmarks/run.py``.
"""
