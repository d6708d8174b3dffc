#!/usr/bin/env bash
# One image, one role per container: the first argument says which (deploy/compose.yaml names
# it; Dagster's Helm chart and run launchers pass a `dagster …` command instead). Every role
# first writes the instance yaml of its mode into DAGSTER_HOME (SQLite, or PostgreSQL when
# TOL_DAGSTER_PG_URL is set; the yaml names that variable, never its value), so every process
# of a deployment reads the same instance. Arguments after the role are passed on (a later
# `-p`/`--port` wins over the defaults below).
set -euo pipefail

ROLES="code-server, webserver, daemon, worker (or a 'dagster …' command)"
WORKSPACE="$(dirname "$0")/workspace.yaml"
# Where the code server listens and where the webserver and the daemon find it (workspace.yaml).
export TOL_CODE_SERVER_HOST="${TOL_CODE_SERVER_HOST:-code-server}"
export TOL_CODE_SERVER_PORT="${TOL_CODE_SERVER_PORT:-4000}"

usage() {
	echo "entrypoint: $1; expected a role: $ROLES" >&2
	exit 2
}

# The instance yaml of this mode, written by the code that every command of ours uses; a
# dagster.yaml written by someone else (the Helm chart mounts its own) is left as it is.
render_instance() {
	DAGSTER_HOME="$(python - <<'PY'
import sys

from tol_dagster.defs.instance import ensure_dagster_home
from tol_dagster.errors import TolError
from tol_dagster.settings import Settings

try:
    print(ensure_dagster_home(Settings.from_env()))
except TolError as exc:
    print(f"entrypoint: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)
PY
)"
	export DAGSTER_HOME
}

[[ $# -ge 1 ]] || usage "no role given"
role="$1"
shift
case "$role" in
code-server | webserver | daemon | worker | dagster) ;;
*) usage "unknown role '$role'" ;;
esac

render_instance
case "$role" in
code-server) exec dagster code-server start -h 0.0.0.0 -p "$TOL_CODE_SERVER_PORT" -m tol_dagster.definitions "$@" ;;
webserver) exec dagster-webserver -h 0.0.0.0 -p 3000 -w "$WORKSPACE" "$@" ;;
daemon) exec dagster-daemon run -w "$WORKSPACE" "$@" ;;
worker) exec tol-dagster worker "$@" ;;
dagster) exec dagster "$@" ;;
esac
