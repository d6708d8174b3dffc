"""Validation: the contract a mirror file must meet and the checks that prove it.

Owns the check vocabulary (`CheckResult`, check names), per-file facts, sort order, uuid and
`emb` digests, metadata expectations and the cross-config alignment check.
May import: the foundations and `store`.
"""
