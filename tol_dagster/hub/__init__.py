"""The Hub: everything that talks to the Hugging Face Hub (or the local one) and nothing else.

Owns the client (`client`: metadata, and the jobs below composed), the wire objects it hands out
(`remote`), the one retry loop and its bounds (`retry`), which failures are worth another attempt
and which `UpstreamError` the others become (`failures`), downloads verified by sha256 and
resumed across processes (`download`, `partial`), the reading of the tree listing (`tree`), where
the token may go (`origin`), the dataset card (`card`), and the checks of every untrusted value the
Hub sends before it is used in a path (`untrusted`).
May import: the foundations only (`errors`, `schema`, the package's `__version__`); never
`settings`, `store` or a later stage.
"""
