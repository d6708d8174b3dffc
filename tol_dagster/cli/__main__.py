import sys

from tol_dagster.cli.main import main

sys.exit(main())
