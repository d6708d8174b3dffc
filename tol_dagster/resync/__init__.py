"""The resync: from an upstream commit to a published mirror generation, gated.

Three steps, separate so Dagster can put the gate's blocking checks between staging and
publishing, each in its own module: `stage` (with `plan`, `fetch`, `facts` and `reuse`) fetches
and verifies only what changed; `gate` turns per-file and cross-file facts into one result per
check; `publish` switches the mirror to a new generation and writes the manifest. The steps share
small JSON state (`state`). Beside them: the audit (`audit`, which only reports drift: `stage`
repairs it) and the per-taxon revision diff (`revision_diff`), and the adoption of a copy the user already has
(`adopt`, reported by `adopt_report`), which fills staging before `stage` runs.
May import: the foundations, `hub`, `store`, `settings`, `validation`.
"""
