"""The resync: from an upstream commit to a published mirror generation, gated.

Owns planning, staging (download and inspect), the gate, the atomic publish, the audit and the
per-taxon revision diff. May import: the foundations, `hub`, `store`, `validation`.
"""
