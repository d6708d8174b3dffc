"""Per-taxon slices: keys, where a taxon's rows are, extraction, the slice checks and records.

May import: the foundations, `store`, `validation`, `derived` (the taxon index).
"""
