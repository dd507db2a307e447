"""Benchmarks; ``bench/run_all.py`` runs each ``bench/*.py`` not starting with ``_``."""
