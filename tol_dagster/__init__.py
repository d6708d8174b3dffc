"""tol-dagster: a verified local mirror of TreeOfLife-200M-Embeddings and per-taxon slices."""

__version__ = "0.1.0"
