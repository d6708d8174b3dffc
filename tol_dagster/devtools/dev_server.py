"""`make dev`: the Dagster UI and daemon (sensors and schedules tick), next to the local Hub.

If `TOL_HUB_ENDPOINT` points at the local Hub's address (the Makefile's default), the sample
repo is served there; any other endpoint (the real Hub) is used as is.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from tol_dagster.defs.instance import ensure_dagster_home, open_instance
from tol_dagster.defs.mirror.resync_slot import ensure_resync_pools
from tol_dagster.devtools.demo_repo import ensure_demo_repo
from tol_dagster.devtools.localhub import LocalHub
from tol_dagster.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    """Run `dagster dev` (and the local Hub when the endpoint is its) until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--local-hub-port", type=int, default=8765)
    parser.add_argument("--dagster-port", type=int, default=3000)
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    dagster_home = ensure_dagster_home(settings)
    # Before the daemon's first pass: runs queued then are held by the pools' limits too.
    with open_instance(settings) as instance:
        ensure_resync_pools(instance, settings.configs)
    local_endpoint = f"http://127.0.0.1:{args.local_hub_port}"
    hub = None
    if settings.hub_endpoint == local_endpoint:
        hub = LocalHub(
            ensure_demo_repo(settings.layout), repo_id=settings.repo_id, port=args.local_hub_port
        ).start()
        print(f"local Hub serving {settings.layout.demo_repo()} at {hub.endpoint}")
    else:
        print(f"using the Hub at {settings.hub_endpoint}")
    command = [
        str(Path(sys.executable).with_name("dagster")),
        "dev",
        "-w",
        str(REPO_ROOT / "workspace.yaml"),
        "-h",
        "127.0.0.1",
        "-p",
        str(args.dagster_port),
    ]
    print(f"Dagster UI: http://127.0.0.1:{args.dagster_port}  (Ctrl-C stops everything)")
    # From DAGSTER_HOME: `dagster dev` warns when the folder it starts in holds a dagster.yaml
    # other than DAGSTER_HOME's, and the repo's top holds the template it was copied from.
    dagster = subprocess.Popen(
        command,
        env=os.environ.copy(),
        cwd=dagster_home,
        # Started in the background, a shell hands SIGINT down ignored; `dagster dev` stops on it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # A SIGTERM (a service manager, `kill`) reaches only us: pass it on as the Ctrl-C that
    # `dagster dev` shuts its children down on.
    signal.signal(signal.SIGTERM, lambda *_: dagster.send_signal(signal.SIGINT))
    try:
        return dagster.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached `dagster dev` too: let it stop its webserver, daemon and code servers
        # (killing it would orphan them, still holding the port).
        dagster.wait()
        return 0
    finally:
        if hub is not None:
            hub.stop()


if __name__ == "__main__":
    sys.exit(main())
