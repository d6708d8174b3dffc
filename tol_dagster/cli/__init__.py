"""The `tol-dagster` command line and its in-process Dagster runner.

`parser` declares the commands and `main` dispatches them; `runner` executes a job in this
process (made by `launch` as the UI would make it) and maps its outcome to the exit codes;
`verbosity`, `progress_view` (the bar drawn from `tol_dagster.progress`) and `report` (the
final report, the `--json` document) decide what the terminal shows; one module per command
(`sync_command`, `status`, `slice_commands`, `demo`). May import every other layer, `devtools`
only for the `sample`, `hub` and `demo` commands; nothing imports `cli`.
"""
