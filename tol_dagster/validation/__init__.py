"""Validation: the contract a mirror file must meet and the checks that prove it.

Owns the check vocabulary (`checks`: `CheckResult`, check names) and one module per check or
family of checks: `file_facts` (the gate's pass over one file, `FileFacts`), `contract`
(schema), `row_counts`, `emb_scan` (the one pass over `emb`), `emb_digests`, `emb_norms`,
`emb_unchanged`, `expectations` (Great Expectations on the metadata columns), `sort_order`,
`uuid_index` (uuid uniqueness within and across files) and `alignment` (across configs).
May import: the foundations and `store`.
"""
