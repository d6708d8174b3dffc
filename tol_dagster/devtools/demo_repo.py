"""The demo's sample repo: generated once under the data home (deterministic), then reused."""

from __future__ import annotations

import json
from pathlib import Path

from tol_dagster.devtools import sample
from tol_dagster.store.layout import Layout


def ensure_demo_repo(layout: Layout) -> Path:
    """The sample repo for the demo, generated once (deterministic) and reused afterwards."""
    # `sample.DEMO_SAMPLE` read at call time: the demo's test swaps in a smaller sample.
    repo = layout.demo_repo()
    marker = layout.home / "demo-hub.json"
    wanted = json.dumps(sample.DEMO_SAMPLE, sort_keys=True)
    if marker.is_file() and marker.read_text() == wanted and (repo / "README.md").is_file():
        return repo
    print(
        f"building the sample repo in {repo} ({sample.DEMO_SAMPLE['rows']:,} rows, {sample.DEMO_SAMPLE['files']} files)…"
    )
    report = sample.build_sample(repo, **sample.DEMO_SAMPLE)  # type: ignore[arg-type]
    print(
        f"  {report.rows:,} rows in {report.seconds:.1f} s ({report.rows_per_second:,.0f} rows/s)"
    )
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(wanted)
    return repo
