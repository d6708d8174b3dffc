"""Development tools: the local Hub, the sample generator, the demo's repo and the dev server.

Used by tests, benchmarks, the demo and the CLI's `sample`/`hub` commands; nothing in the
product imports them. They may import every earlier layer (the dev server opens the Dagster
instance through `defs`), never `cli`.

`sample` builds a TreeOfLife-shaped repo (from `sample_taxonomy`, `sample_rows`,
`sample_columns`, `sample_embeddings`; `sample_taxa` is its data table); `localhub` serves a
folder as a Hub dataset repo; `demo_repo` keeps the demo's sample; `dev_server` is `make dev`.
"""
