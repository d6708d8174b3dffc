"""The `tol-dagster` console script. It imports the command line inside a guard: Ctrl-C while
Dagster and the pipeline load (~2 s) ended in a Python traceback; it now ends as an interrupt
does later, with 130, one `tol-dagster:` line and, under `--json`, the one document."""

import json
import sys

#: What an interrupt while loading says (nothing had started).
_INTERRUPTED = "interrupted (SIGINT) while starting; nothing was done"


def run() -> None:
    """Load the command line, then run it with this process's arguments."""
    try:
        from tol_dagster.cli.main import main  # the guarded import is the point of this module
    except KeyboardInterrupt:
        print(f"tol-dagster: {_INTERRUPTED}", file=sys.stderr)
        if "--json" in sys.argv:
            words = [w for w in sys.argv[1:] if not w.startswith("-")][:1]
            document = {"command": " ".join(words), "exit_code": 130, "error": _INTERRUPTED}
            print(json.dumps({**document, "errors": [_INTERRUPTED]}, indent=1))
        sys.exit(130)
    sys.exit(main())
