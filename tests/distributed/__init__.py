"""Helpers for tests/test_distributed.py: a launcher that bounds and cleans up worker
processes (harness.py), and the worker scripts it runs (each sets up its devices before the
framework initialises, which is why they run in their own processes)."""
