"""Synthetic knowledge datasets with exactly known bit content (bioS, bioD, QA)."""
