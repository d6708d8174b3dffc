"""Derived tables built from a pinned mirror generation: summaries, the taxon index, centroids;
and what each was last built from (`built_from`), so a resync rebuilds only what it affected.

Per-file parts are cached by sha256 (`store.file_cache`) and recombined, so a resync recomputes
only what changed. May import: the foundations, `store`, `validation`.
"""
