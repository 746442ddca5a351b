"""Benchmarks: bench/README.md lists them; bench/common.py is what they share."""
