"""Synthetic knowledge datasets with exactly known bit content.

One module per family -- `bios`, `biod`, `junk` (mixtures), `bior`, `random_strings` -- each
with its population, documents, exact bits and builder, and a `family.Family` that `dataset`
registers by kind; `build` writes a dataset, `dataset` loads one. `pools`, `templates` and
`documents` are what the families share; `qa` the bioS questions.
"""
