"""The whole definitions graph, as a snapshot: any change to it is a visible diff in review.

Update the snapshot deliberately with `TOL_UPDATE_SNAPSHOTS=1 pytest tests/test_definitions.py`.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.remote_representation.external_data import asset_node_snaps_from_repo

from tol_dagster import definitions
from tol_dagster.definitions import build_definitions
from tol_dagster.defs.published.jobs import slices_job_name
from tol_dagster.settings import Settings

SNAPSHOTS = Path(__file__).parent / "snapshots"
SNAPSHOT = SNAPSHOTS / "definitions.txt"
#: Two configs add what one cannot show: a second set of assets and the alignment check.
TWO_CONFIGS = "bioclip-2_float16,bioclip-2.5-vith14_float16"


def describe(defs: dg.Definitions) -> str:
    """A stable text rendering of asset keys, deps, partitions, code versions, automation
    conditions, checks, jobs, sensors and schedules."""
    graph = defs.resolve_asset_graph()
    keys = sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string())
    lines = ["# assets (key <- deps) [group]"]
    for key in keys:
        node = graph.get(key)
        deps = ", ".join(sorted(d.to_user_string() for d in node.parent_keys))
        lines.append(f"{key.to_user_string()} <- [{deps}] [{node.group_name}]")
    lines.append("# partitions (asset: kind name)")
    for key in keys:
        partitions = graph.get(key).partitions_def
        if partitions is not None:
            name = getattr(partitions, "name", None)
            lines.append(f"{key.to_user_string()}: {type(partitions).__name__} {name}")
    lines.append("# code versions (asset: version)")
    for key in keys:
        if (version := graph.get(key).code_version) is not None:
            lines.append(f"{key.to_user_string()}: {version}")
    lines.append("# automation (asset: condition)")
    for key in keys:
        if (condition := graph.get(key).automation_condition) is not None:
            lines.append(f"{key.to_user_string()}: {condition.get_label() or condition.name}")
    lines.append("# checks (asset:check blocking)")
    for check in sorted(
        graph.asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)
    ):
        spec = graph.get_check_spec(check)
        lines.append(f"{check.asset_key.to_user_string()}:{check.name} blocking={spec.blocking}")
    lines.append("# jobs (job: selected assets; number of checks)")
    for job in sorted(defs.resolve_all_job_defs(), key=lambda j: j.name):
        if job.name.startswith("__"):
            continue
        layer = job.asset_layer
        selected = ", ".join(sorted(k.to_user_string() for k in layer.selected_asset_keys))
        lines.append(f"{job.name}: [{selected}]; {len(layer.asset_graph.asset_check_keys)} checks")
    lines.append("# sensors")
    for sensor in sorted(defs.sensors or [], key=lambda s: s.name):
        targets = ", ".join(sorted(target.job_name for target in sensor.targets))
        if isinstance(sensor, dg.AutomationConditionSensorDefinition):
            selected = sensor.asset_selection.resolve(graph)
            targets = f"automation of {len(selected)} assets"
        lines.append(f"{sensor.name} -> {targets} default={sensor.default_status.value}")
    lines.append("# schedules")
    for schedule in sorted(defs.schedules or [], key=lambda s: s.name):
        lines.append(
            f"{schedule.name} {schedule.cron_schedule} -> {schedule.job_name} default={schedule.default_status.value}"
        )
    lines.append("# pools (asset: pool)")
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        pool = graph.get(key).pools
        if pool:
            lines.append(f"{key.to_user_string()}: {', '.join(sorted(pool))}")
    return "\n".join(lines) + "\n"


def test_definitions_load_with_default_settings(tmp_path: Path) -> None:
    defs = build_definitions(Settings.from_env({"TOL_HOME": str(tmp_path)}))
    dg.Definitions.validate_loadable(defs)


def assert_matches_snapshot(defs: dg.Definitions, snapshot: Path) -> None:
    text = describe(defs)
    if os.environ.get("TOL_UPDATE_SNAPSHOTS") == "1":
        snapshot.write_text(text)
    assert text == snapshot.read_text(), (
        f"the definitions graph changed ({snapshot.name}): review, then TOL_UPDATE_SNAPSHOTS=1"
    )


def test_definitions_graph_matches_the_snapshot(tmp_path: Path) -> None:
    defs = build_definitions(Settings.from_env({"TOL_HOME": str(tmp_path)}))
    assert_matches_snapshot(defs, SNAPSHOT)


def test_definitions_graph_of_two_configs_matches_its_snapshot(tmp_path: Path) -> None:
    defs = build_definitions(
        Settings.from_env({"TOL_HOME": str(tmp_path), "TOL_CONFIGS": TWO_CONFIGS})
    )
    assert_matches_snapshot(defs, SNAPSHOTS / "definitions_two_configs.txt")


def test_two_configs_get_their_own_assets_side_by_side(tmp_path: Path) -> None:
    defs = build_definitions(
        Settings.from_env(
            {
                "TOL_HOME": str(tmp_path),
                "TOL_CONFIGS": TWO_CONFIGS,
            }
        )
    )
    dg.Definitions.validate_loadable(defs)
    assert {job.name for job in defs.resolve_all_job_defs()} >= {
        "Slices_bioclip_2_float16_job",
        "Slices_bioclip_2_5_vith14_float16_job",
    }  # one slices job per partitions definition: a job cannot mix two
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    for config in ("bioclip-2_float16", "bioclip-2.5-vith14_float16"):
        assert {f"tol/{config}/remote", f"tol/{config}/staged", f"tol/{config}/mirror"} <= keys


def test_the_code_location_names_the_variables_its_resources_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "TOL_HOME": str(tmp_path),
        "TOL_REPO_ID": "someone/a-copy",
        "TOL_MAX_PARALLEL_DOWNLOADS": "8",
        "TOL_HUB_ENDPOINT": "http://127.0.0.1:9/",  # normalized by the settings: a literal
    }
    for name in [n for n in os.environ if n.startswith("TOL_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    defs = definitions.defs()  # what `dagster dev` and the daemon load

    read = defs.get_repository_def().get_env_vars_by_top_level_resource()
    assert {name: sorted(users) for name, users in read.items()} == {
        "TOL_HOME": ["resync_slot", "storage"],
        "TOL_REPO_ID": ["hub"],
        "TOL_MAX_PARALLEL_DOWNLOADS": ["hub"],
    }
    resources = defs.resources or {}
    with dg.build_resources({"hub": resources["hub"], "storage": resources["storage"]}) as built:
        assert (built.hub.repo_id, built.hub.max_parallel_downloads) == ("someone/a-copy", 8)
        assert built.hub.endpoint == "http://127.0.0.1:9"
        assert built.storage.home == str(tmp_path)


def test_the_ui_materializes_a_slice_under_its_config_s_slices_job() -> None:
    """The UI runs an asset under the first of the snapshot's job names (its `getCommonJob`):
    for a slice that must be the config's slices job, not Dagster's hidden `__ASSET_JOB`."""
    settings = Settings(home=Path("/nonexistent"), configs=("bioclip-2_float16",))
    repo = build_definitions(settings).get_repository_def()
    snaps = {snap.asset_key: snap for snap in asset_node_snaps_from_repo(repo)}

    job_names = snaps[dg.AssetKey(["tol", "bioclip-2_float16", "slices"])].job_names

    assert "__ASSET_JOB" in job_names
    assert job_names[0] == slices_job_name("bioclip-2_float16")
