"""The `tol-dagster` command line and its in-process Dagster runner.

`parser` declares the commands and `main` dispatches them; `runner` executes a job in this
process and maps its outcome to the exit codes; one module per command (`sync_command`,
`status`, `slice_commands`, `demo`). May import every other layer, `devtools` only for the
`sample`, `hub` and `demo` commands; nothing imports `cli`.
"""
