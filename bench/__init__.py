"""Benchmarks: timings and request counts, apart from the tests. Run ``python -m bench``."""
