"""The `tol-dagster` command line and its in-process Dagster runner.

May import anything but `devtools` beyond its `sample`, `hub` and `demo` commands; nothing
imports `cli`.
"""
