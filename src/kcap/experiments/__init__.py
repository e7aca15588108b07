"""Experiments and reporting: the SQLite results store, the demo, reports."""
