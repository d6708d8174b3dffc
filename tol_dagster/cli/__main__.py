"""`python -m tol_dagster.cli ...`: the same command line as the `tol-dagster` script."""

import sys

from tol_dagster.cli.main import main

sys.exit(main())
