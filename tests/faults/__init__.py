"""Fault-injection, bad-input, load and permission tests (``pytest -m faults``)."""
