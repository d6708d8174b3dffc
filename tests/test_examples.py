"""The `examples/` consumers run against a published mirror and slice, as a user runs them: the
nearest-centroid classifier as a script, the downstream code location through Dagster."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import dagster as dg
import pytest
from resync_testing import CONFIG, core_sync

from tol_dagster.catalog import list_slices
from tol_dagster.cli.main import main
from tol_dagster.definitions import build_definitions
from tol_dagster.defs.keys import asset_key
from tol_dagster.devtools.localhub import LocalHub
from tol_dagster.devtools.sample import build_sample
from tol_dagster.hub.client import HubClient
from tol_dagster.settings import Settings
from tol_dagster.store.layout import Layout
from tol_dagster.store.manifest import load_manifest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
#: Enough rows that Felidae holds several species with a dozen held-out images between them.
EXAMPLE_SAMPLE = {"rows": 20_000, "files": 3, "seed": 7, "row_group_size": 2_000}


def _as_user(env: pytest.MonkeyPatch, home: Path) -> None:
    """Point this process at `home` as a user's environment would (no other TOL_ setting)."""
    for name in [n for n in os.environ if n.startswith("TOL_")]:
        env.delenv(name)
    env.setenv("TOL_HOME", str(home))
    env.setenv("DAGSTER_HOME", str(home.parent / "dagster"))


@pytest.fixture(scope="module")
def published_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data home with the sample mirrored and `family=Felidae` published by `tol-dagster slice`."""
    base = tmp_path_factory.mktemp("examples")
    build_sample(base / "repo", **EXAMPLE_SAMPLE)  # type: ignore[arg-type]
    home = base / "home"
    with LocalHub(base / "repo") as hub:
        core_sync(Layout(home), HubClient(hub.endpoint, hub.repo_id, None))
    with pytest.MonkeyPatch.context() as env:
        _as_user(env, home)
        assert main(["slice", "family=Felidae"]) == 0
    return home


def test_nearest_centroid_classifies_a_published_family_well_above_chance(
    published_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _as_user(monkeypatch, published_home)

    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "nearest_centroid.py"), "family=Felidae"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    found = re.search(
        r"family=Felidae: (\d+) species, (\d+) training / (\d+) held-out images; "
        r"nearest-centroid accuracy ([\d.]+) \(chance ([\d.]+)\)",
        done.stdout,
    )
    assert found, done.stdout
    species, training, held_out = (int(found[i]) for i in (1, 2, 3))
    accuracy, chance = float(found[4]), float(found[5])
    assert species >= 3 and held_out >= 10, done.stdout
    published = list_slices(config=CONFIG, home=published_home)
    rows = dict(zip(published["name"], published["rows"], strict=True))["family=Felidae"]
    assert training + held_out <= rows
    assert chance == pytest.approx(1 / species, abs=1e-3)
    assert accuracy >= chance + (1 - chance) / 2, done.stdout
    mirrored = re.search(r"family=Felidae: (\d+) of the mirror's (\d+) images", done.stdout)
    assert mirrored, done.stdout
    assert (int(mirrored[1]), int(mirrored[2])) == (rows, _mirror_rows(published_home))


def _mirror_rows(home: Path) -> int:
    manifest = load_manifest(Layout(home), CONFIG)
    assert manifest is not None
    return manifest.total_rows


def _load(path: Path) -> ModuleType:
    """Import a file as `dagster dev -f FILE` does: as a module of its own."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_downstream_location_loads_depends_on_the_stable_keys_and_reads_the_catalog(
    published_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _as_user(monkeypatch, published_home)
    downstream = _load(EXAMPLES / "downstream_location.py")
    dg.Definitions.validate_loadable(downstream.defs)
    catalog_key = asset_key(CONFIG, "catalog")
    ours = build_definitions(Settings.from_env())
    assert ours.resolve_assets_def(catalog_key).keys == {catalog_key}
    inventory = downstream.defs.resolve_assets_def("slice_inventory")
    assert inventory.asset_deps[inventory.key] == {catalog_key}
    kingdom_counts = downstream.defs.resolve_assets_def("kingdom_counts")
    assert kingdom_counts.asset_deps[kingdom_counts.key] == {asset_key(CONFIG, "mirror")}

    with dg.instance_for_test() as instance:
        result = downstream.defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance
        )
        assert result.success
        [materialized] = result.asset_materializations_for_node("slice_inventory")
        [kingdoms] = result.asset_materializations_for_node("kingdom_counts")

    published = list_slices(config=CONFIG, home=published_home)
    assert materialized.metadata["slices"].value == len(published) == 1
    assert kingdoms.metadata["images"].value == _mirror_rows(published_home)
    assert kingdoms.metadata["files"].value == EXAMPLE_SAMPLE["files"]
    assert materialized.metadata["images"].value == int(published["rows"].sum()) > 0
