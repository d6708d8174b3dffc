"""Development tools: the local Hub, the sample generator, the demo's repo and the dev server.

Used by tests, benchmarks, the demo and the CLI's `sample`/`hub` commands; nothing in the
product imports them, and they never import `cli`.
"""
