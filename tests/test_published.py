"""The published layer through Dagster, as a user drives it: `tol-dagster sync`, then `slice KEY`
and `slices list|remove` (every run recorded in the instance), and the daemon's automation and
`mirror_change_sensor` rebuilding, after a one-file upstream change, the derived outputs from
that file alone, exactly the slices whose taxa have rows in it, then the catalog.

Expected slices are brute-force DuckDB queries over the whole mirror, written here by hand for
each key; the expected rebuild set is computed from the old and new upstream file alone.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import SMALL_SAMPLE
from resync_testing import (
    CONFIG,
    User,
    core_sync,
    dagster_home,
    flip_a_byte,
    job_checks,
    job_evaluations,
    set_card_rows,
    synced,
    synced_home,
    upstream_rows,
    user,
    write_upstream,
)

from tol_dagster.catalog import list_slices, read_arrow, read_duckdb, read_pandas
from tol_dagster.cli.demo import run_demo
from tol_dagster.definitions import build_definitions
from tol_dagster.defs.keys import asset_key
from tol_dagster.defs.mirror.jobs import AUDIT_JOB
from tol_dagster.defs.published import slice_asset
from tol_dagster.defs.published.automation import AUTOMATION_SENSOR, automated_keys
from tol_dagster.defs.published.jobs import DERIVED_JOB, rank_slices_job_name, slices_job_name
from tol_dagster.defs.published.keys import derived_keys, slices_op_name
from tol_dagster.defs.published.partitions import slices_partitions_name
from tol_dagster.defs.resources import resources_from
from tol_dagster.derived.table_audit import DERIVED_TABLES, TABLES_AUDIT_CHECK, table_path
from tol_dagster.devtools import sample
from tol_dagster.devtools.localhub import LocalHub
from tol_dagster.errors import ValidationFailed
from tol_dagster.hub.client import HubClient
from tol_dagster.settings import DEFAULT_SLICES_FILE, Settings
from tol_dagster.slices.audit import SLICES_AUDIT_CHECK
from tol_dagster.slices.catalog_file import CATALOG_SCHEMA, upsert_rows
from tol_dagster.slices.keys import parse_slice_key
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout
from tol_dagster.validation.checks import CheckResult

__all__ = ["dagster_home", "synced", "synced_home", "user"]  # fixtures, imported to be found

SENSOR = "mirror_change_sensor"
SENSOR_NAME_TAG = "dagster/sensor_name"
RUN_KEY_TAG = "dagster/run_key"
PARTITION_TAG = "dagster/partition"
#: The contract's catalog columns and types, spelled out (not imported from the code under test).
CATALOG_COLUMNS = {
    "config": pa.string(),
    "name": pa.string(),
    "rank": pa.string(),
    "value": pa.string(),
    "path": pa.string(),
    "rows": pa.int64(),
    "bytes": pa.int64(),
    "sha256": pa.string(),
    "upstream_commit": pa.string(),
}
#: The slices' blocking checks, by the names the issue gives them.
CHECKS = (
    "rows_match_summary",
    "rows_satisfy_key",
    "uuids_unique",
    "schema_matches_mirror",
    "emb_matches_mirror",
)
HELP = "rank is one of kingdom, phylum, class, order, family, genus, species, scientific_name"


# --- brute force ---------------------------------------------------------------------------------


def mirror_paths(user: User) -> list[Path]:
    return sorted(user.layout.mirror_dir(CONFIG).glob("*.parquet"))


def brute_force(files: Sequence[Path], where: str, params: Sequence[object] = ()) -> pa.Table:
    """The rows of `files` satisfying `where`, in mirror order, as stored: DuckDB picks the uuids
    over the whole mirror, pyarrow returns those rows with the mirror's exact types."""
    uuids = duckdb.execute(
        f"SELECT uuid FROM read_parquet(?) WHERE {where}", [[str(f) for f in files], *params]
    ).fetchall()
    table = pa.concat_tables(pq.read_table(f) for f in files)
    return table.filter(pc.is_in(table["uuid"], pa.array([u for (u,) in uuids], pa.string())))


def assert_slice_equals(path: Path, expected: pa.Table, mirror: Path) -> None:
    """The slice holds exactly `expected`'s uuids and rows, in order, with the mirror's schema."""
    table = pq.read_table(path)
    assert set(table["uuid"].to_pylist()) == set(expected["uuid"].to_pylist())
    assert table.equals(expected)
    assert pq.read_schema(path).equals(pq.read_schema(mirror), check_metadata=False)
    assert table.schema.field("emb").type == pa.list_(pa.float16(), 768)


def slice_file(user: User, key: str) -> Path:
    """Where the contract puts slice `key`: its canonical text, percent-encoded."""
    return user.home / "published" / CONFIG / "slices" / f"{quote(key, safe='')}.parquet"


def catalog_rows(user: User) -> dict[str, dict]:
    path = user.home / "published" / CONFIG / "catalog.parquet"
    return {row["name"]: row for row in pq.read_table(path).to_pylist()} if path.exists() else {}


def partitions(user: User) -> list[str]:
    with user.instance() as instance:
        return sorted(instance.get_dynamic_partitions(slices_partitions_name(CONFIG)))


def most_rows(user: User, column: str, wanted: re.Pattern[str]) -> str:
    """The value of `column` matching `wanted` that has the most rows in the mirror."""
    counts = duckdb.execute(
        f'SELECT "{column}", count(*) FROM read_parquet(?) GROUP BY 1',
        [[str(p) for p in mirror_paths(user)]],
    ).fetchall()
    hits = sorted(((n, v) for v, n in counts if v and wanted.search(v)), reverse=True)
    assert hits, f"the sample has no {column} matching {wanted.pattern}"
    return hits[0][1]


# --- the full flow from the command line -----------------------------------------------------------


def test_sync_then_slice_publishes_the_exact_taxon_catalogs_it_and_records_the_runs(
    user: User,
) -> None:
    synced = user.sync()
    assert synced.code == 0, synced.text
    started = datetime.now(UTC)

    outcome = user.tol("slice", "family=Felidae")

    assert outcome.code == 0, outcome.text
    path = slice_file(user, "family=Felidae")
    assert path.name == "family%3DFelidae.parquet"
    assert outcome.out.strip().splitlines()[-1] == str(path)
    mirror = mirror_paths(user)[0]
    expected = brute_force(mirror_paths(user), "family = ?", ["Felidae"])
    assert expected.num_rows > 0
    assert_slice_equals(path, expected, mirror)

    table = pq.read_table(user.home / "published" / CONFIG / "catalog.parquet")
    assert table.schema.names == [*CATALOG_COLUMNS, "built_at"]
    for name, kind in CATALOG_COLUMNS.items():
        assert table.schema.field(name).type == kind, name
    built_at = table.schema.field("built_at").type
    assert pa.types.is_timestamp(built_at) and built_at.tz == "UTC"
    [row] = table.to_pylist()
    assert {k: v for k, v in row.items() if k != "built_at"} == {
        "config": CONFIG,
        "name": "family=Felidae",
        "rank": "family",
        "value": "Felidae",
        "path": str(path),
        "rows": expected.num_rows,
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "upstream_commit": user.hub.head_commit(),
    }
    assert Path(row["path"]).is_absolute()
    assert started <= row["built_at"] <= datetime.now(UTC)

    listed = list_slices()
    assert listed["name"].tolist() == ["family=Felidae"]
    assert listed["path"].tolist() == [str(path)]
    assert read_arrow("family=Felidae").equals(expected)
    assert read_pandas("family=Felidae")["uuid"].tolist() == expected["uuid"].to_pylist()
    relation = read_duckdb("family=Felidae", con=duckdb.connect())
    assert relation.aggregate("count(*)").fetchall() == [(expected.num_rows,)]

    with user.instance() as instance:
        [slice_run] = instance.get_runs(dg.RunsFilter(tags={PARTITION_TAG: "family=Felidae"}))
        assert slice_run.status == dg.DagsterRunStatus.SUCCESS
        checks = [
            e.get_dagster_event().asset_check_evaluation_data
            for e in instance.all_logs(
                slice_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
            )
        ]
        passed = sorted(c.check_name for c in checks if c.passed)
        assert passed == sorted(CHECKS), checks
        materialized = instance.get_latest_materialization_event(asset_key(CONFIG, "slices"))
        assert materialized is not None and materialized.run_id == slice_run.run_id
        materialization = materialized.asset_materialization
        assert materialization is not None and materialization.partition == "family=Felidae"
        metadata = materialization.metadata
        assert metadata["dagster/row_count"].value == expected.num_rows
        assert metadata["sha256"].value == row["sha256"]
        for key in [
            asset_key(CONFIG, "mirror"),
            *derived_keys(CONFIG),
            asset_key(CONFIG, "catalog"),
        ]:
            event = instance.get_latest_materialization_event(key)
            assert event is not None, key
            run = instance.get_run_by_id(event.run_id)
            assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS, key
        assert partitions(user) == ["family=Felidae"]


def test_slices_list_shows_a_slice_and_remove_drops_partition_file_and_catalog_row(
    synced: User,
) -> None:
    assert synced.tol("slice", "family=Felidae").code == 0
    assert synced.tol("slice", "species=Puma concolor").code == 0
    path = slice_file(synced, "family=Felidae")

    listed = synced.tol("slices", "list")

    assert listed.code == 0, listed.text
    lines = {line.split("\t")[1]: line for line in listed.out.splitlines()}
    assert sorted(lines) == ["family=Felidae", "species=Puma concolor"]
    rows = catalog_rows(synced)["family=Felidae"]["rows"]
    config, _, count, size, listed_path = lines["family=Felidae"].split("\t")
    assert (config, count, listed_path) == (CONFIG, f"{rows:,} rows", str(path))
    assert size.endswith(" MB")

    removed = synced.tol("slices", "remove", "family=Felidae")

    assert removed.code == 0, removed.text
    assert partitions(synced) == ["species=Puma concolor"]
    assert not path.exists()
    assert sorted(catalog_rows(synced)) == ["species=Puma concolor"]
    assert slice_file(synced, "species=Puma concolor").is_file()
    assert "family=Felidae" not in synced.tol("slices", "list").out
    again = synced.tol("slices", "remove", "family=Felidae")
    assert again.code == 2 and "does not exist" in again.err


def test_a_bad_key_exits_2_says_what_is_allowed_and_writes_nothing(synced: User) -> None:
    assert synced.tol("slice", "family=Felidae").code == 0
    before = (files_under(synced.home), partitions(synced), run_ids(synced))

    for key in ["genre=Felis", "family=", "familyFelidae", ""]:
        outcome = synced.tol("slice", key)

        assert outcome.code == 2, (key, outcome.text)
        assert "expected rank=value" in outcome.err and HELP in outcome.err, key
        assert (files_under(synced.home), partitions(synced), run_ids(synced)) == before, key


def files_under(home: Path) -> dict[str, tuple[int, int]]:
    """Every file under the data home with its size and modification time."""
    return {
        str(p.relative_to(home)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(home.rglob("*"))
        if p.is_file()
    }


def run_ids(user: User) -> set[str]:
    with user.instance() as instance:
        return {run.run_id for run in instance.get_runs()}


def test_a_misspelt_taxon_exits_2_naming_close_matches_and_writes_nothing(synced: User) -> None:
    assert synced.tol("slice", "family=Felidae").code == 0
    before = (files_under(synced.home), partitions(synced), run_ids(synced))

    for key, match in [
        ("family=Felidea", "family=Felidae"),
        ("species=Puma concolr", "species=Puma concolor"),
        ("kingdom=Animalia/family=Felidea", "family=Felidae"),
    ]:
        outcome = synced.tol("slice", key)

        assert outcome.code == 2, (key, outcome.text)
        first = outcome.err.strip().splitlines()[0]
        assert "no rows in the mirror match" in first and match in first, (key, outcome.err)
        assert "--allow-empty" in first
        assert (files_under(synced.home), partitions(synced), run_ids(synced)) == before, key


def test_a_taxon_with_no_rows_is_published_empty_only_when_allowed(synced: User) -> None:
    outcome = synced.tol("slice", "family=Nonexistidae", "--allow-empty")

    assert outcome.code == 0, outcome.text
    path = slice_file(synced, "family=Nonexistidae")
    assert outcome.out.strip().splitlines()[-1] == str(path)
    assert pq.read_metadata(path).num_rows == 0
    mirror = mirror_paths(synced)[0]
    assert pq.read_schema(path).equals(pq.read_schema(mirror), check_metadata=False)
    assert catalog_rows(synced)["family=Nonexistidae"]["rows"] == 0
    warning = "slice family=Nonexistidae: no rows in the mirror match"
    assert warning in outcome.text
    with synced.instance() as instance:
        [run] = instance.get_runs(dg.RunsFilter(tags={PARTITION_TAG: "family=Nonexistidae"}))
        logged = [e.user_message for e in instance.all_logs(run.run_id)]
    assert any(warning in message for message in logged)
    # A rebuild (sensor, `make refresh`) keeps the consent given once.
    assert synced.tol("slice", "family=Nonexistidae").code == 0


def test_in_the_ui_a_taxon_with_no_rows_fails_the_run_naming_close_matches(
    synced: User,
) -> None:
    assert synced.tol("slice", "family=Felidae").code == 0
    settings = Settings.from_env()
    defs = build_definitions(settings)
    with synced.instance() as instance:
        instance.add_dynamic_partitions(slices_partitions_name(CONFIG), ["family=Felidea"])
        result = defs.resolve_job_def(slices_job_name(CONFIG)).execute_in_process(
            instance=instance, partition_key="family=Felidea", raise_on_error=False
        )
        assert not result.success
        [failure] = [
            e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE
        ]
        data = failure.step_failure_data
        assert data is not None and data.user_failure_data is not None
        assert data.error is not None and data.error.stack == [], "in words, no stack"
        assert data.error.cls_name == "EmptySliceError"
        assert data.user_failure_data.metadata["exit_code"].value == 2
        description = data.user_failure_data.description or ""
        assert "no rows in the mirror match" in description and "family=Felidae" in description
        matches = data.user_failure_data.metadata["close_matches"].value
        assert isinstance(matches, list) and matches[0] == "family=Felidae" and len(matches) <= 5
        assert not result.get_asset_materialization_events()
        assert not slice_file(synced, "family=Felidea").exists()

        allowed = defs.resolve_job_def(slices_job_name(CONFIG)).execute_in_process(
            instance=instance,
            partition_key="family=Felidea",
            run_config={"ops": {slices_op_name(CONFIG): {"config": {"allow_empty": True}}}},
            raise_on_error=False,
        )
        assert allowed.success
        assert pq.read_metadata(slice_file(synced, "family=Felidea")).num_rows == 0


@pytest.mark.parametrize(
    "raw",
    [
        "family=Fel\x07idae",
        "genus=Pan\u200bthera",
        "no-equals-sign",
        "genus=Morus/kingdom=Animalia",
    ],
)
def test_slices_remove_removes_a_partition_whose_name_does_not_parse_or_is_not_canonical(
    synced: User, raw: str
) -> None:
    assert synced.tol("slice", "family=Felidae").code == 0
    slices_dir = synced.home / "published" / CONFIG / "slices"
    stale = slices_dir / f"{quote(raw, safe='')}.parquet"  # as an older version named it
    stale.write_bytes(slice_file(synced, "family=Felidae").read_bytes())
    records = synced.layout.slice_records_dir(CONFIG)
    record = dict(
        json.loads((records / "family%3DFelidae.json").read_text()), name=raw, path=str(stale)
    )
    (records / "hand-made.json").write_text(json.dumps(record))
    [row] = catalog_rows(synced).values()
    raw_row = pa.Table.from_pylist([{**row, "name": raw}], schema=CATALOG_SCHEMA)
    upsert_rows(synced.layout, CONFIG, raw_row)
    with synced.instance() as instance:
        instance.add_dynamic_partitions(slices_partitions_name(CONFIG), [raw])
    assert raw in partitions(synced) and raw in catalog_rows(synced)

    removed = synced.tol("slices", "remove", raw)

    assert removed.code == 0, removed.text
    assert partitions(synced) == ["family=Felidae"]
    assert not stale.exists() and not (records / "hand-made.json").exists()
    assert sorted(catalog_rows(synced)) == ["family=Felidae"]
    assert slice_file(synced, "family=Felidae").is_file()
    again = synced.tol("slices", "remove", raw)
    assert again.code == 2 and "does not exist" in again.err


def test_path_keys_and_names_with_quotes_commas_parentheses_and_non_ascii_slice_exactly(
    synced: User,
) -> None:
    files = mirror_paths(synced)
    morus = duckdb.execute(
        "SELECT DISTINCT kingdom FROM read_parquet(?) WHERE genus = 'Morus' ORDER BY 1",
        [[str(f) for f in files]],
    ).fetchall()
    assert morus == [("Animalia",), ("Plantae",)], "the sample lost its Morus homonym"
    apostrophe = most_rows(synced, "scientific_name", re.compile(r"^(?=.*')(?=.*\()(?=.*,)"))
    double_quote = most_rows(synced, "scientific_name", re.compile(r'"'))
    accented = most_rows(
        synced, "scientific_name", re.compile(r"^(?=.*[^\x00-\x7f])(?=.*\()(?=.*,)")
    )
    epithet = most_rows(synced, "species", re.compile(r"[^\x00-\x7f]"))
    [(genus,)] = duckdb.execute(
        "SELECT DISTINCT genus FROM read_parquet(?) WHERE species = ?",
        [[str(f) for f in files], epithet],
    ).fetchall()
    binomial = f"{genus} {epithet}"
    cases = {
        "kingdom=Animalia/genus=Morus": ("kingdom = ? AND genus = ?", ["Animalia", "Morus"]),
        f"scientific_name={apostrophe}": ("scientific_name = ?", [apostrophe]),
        f"scientific_name={double_quote}": ("scientific_name = ?", [double_quote]),
        f"scientific_name={accented}": ("scientific_name = ?", [accented]),
        f"species={binomial}": (
            "(species = ? OR (genus = ? AND species = ?))",
            [binomial, genus, epithet],
        ),
    }

    for key, (where, params) in cases.items():
        outcome = synced.tol("slice", key)

        assert outcome.code == 0, (key, outcome.text)
        path = slice_file(synced, key)
        assert outcome.out.strip().splitlines()[-1] == str(path), key
        expected = brute_force(files, where, params)
        assert expected.num_rows > 0, key
        assert_slice_equals(path, expected, files[0])
        assert read_arrow(key).equals(expected), key

    assert set(
        pq.read_table(slice_file(synced, "kingdom=Animalia/genus=Morus"))["kingdom"].to_pylist()
    ) == {"Animalia"}
    assert partitions(synced) == sorted(cases)
    assert sorted(catalog_rows(synced)) == sorted(cases)
    assert catalog_rows(synced)["kingdom=Animalia/genus=Morus"]["rank"] == "genus"


# --- only what a resync affected is rebuilt ------------------------------------------------------

#: The slices the sensor test declares, each with its brute-force predicate.
SENSOR_SLICES: dict[str, tuple[str, list[str]]] = {
    "family=Felidae": ("family = ?", ["Felidae"]),
    "species=Puma concolor": (
        "(species = ? OR (genus = ? AND species = ?))",
        ["Puma concolor", "Puma", "concolor"],
    ),
    "family=Nymphalidae": ("family = ?", ["Nymphalidae"]),
    "kingdom=Animalia/genus=Morus": ("kingdom = ? AND genus = ?", ["Animalia", "Morus"]),
    "kingdom=Plantae/genus=Morus": ("kingdom = ? AND genus = ?", ["Plantae", "Morus"]),
}


@dataclass
class DaemonDriver:
    """Ticks what the daemon ticks after a resync, as it does: the automation conditions of the
    derived tables and the catalog (`published_automation_sensor`) and `mirror_change_sensor`
    (cursors kept, partitions added); executes each run they request in process, tagged as the
    daemon tags them (the automation's runs in Dagster's implicit asset job, as the daemon's)."""

    user: User
    cursor: str | None = None
    automation: dg.EvaluateAutomationConditionsResult | None = None

    def __post_init__(self) -> None:
        self.settings = Settings.from_env()
        self.defs = build_definitions(self.settings)
        self.sensor = self.defs.resolve_sensor_def(SENSOR)
        self.automation_sensor = self.defs.resolve_sensor_def(AUTOMATION_SENSOR)
        with self.user.instance() as instance:
            if instance.get_latest_materialization_event(asset_key(CONFIG, "mirror")) is None:
                # The synced home's mirror was published by the core alone (`core_sync`): tell
                # Dagster, as the resync run that publishes a mirror does.
                instance.report_runless_asset_event(
                    dg.AssetMaterialization(asset_key(CONFIG, "mirror"))
                )

    def tick(self) -> list[dg.RunRequest]:
        return [*self._automation_tick(), *self._sensor_tick()]

    def _automation_tick(self) -> list[dg.RunRequest]:
        """The assets whose conditions are true, as one run (the daemon's grouping of
        unpartitioned assets), or none."""
        sensor = self.automation_sensor
        assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
        with self.user.instance() as instance:
            self.automation = dg.evaluate_automation_conditions(
                defs=self.defs,
                instance=instance,
                asset_selection=sensor.asset_selection,
                cursor=self.automation.cursor if self.automation else None,
            )
        requested = self.automation.get_num_requested
        keys = [key for key in automated_keys(CONFIG) if requested(key)]
        tags = {SENSOR_NAME_TAG: AUTOMATION_SENSOR, **sensor.run_tags}
        return [dg.RunRequest(asset_selection=keys, tags=tags)] if keys else []

    def _sensor_tick(self) -> list[dg.RunRequest]:
        # Both contexts set Dagster's current state storage: they must close in LIFO order.
        with (
            self.user.instance() as instance,
            dg.build_sensor_context(
                instance_ref=instance.get_ref(),
                cursor=self.cursor,
                resources=resources_from(self.settings),
                definitions=self.defs,
            ) as context,
        ):
            data = self.sensor.evaluate_tick(context)
            for request in data.dynamic_partitions_requests or []:
                assert isinstance(request, dg.AddDynamicPartitionsRequest)
                instance.add_dynamic_partitions(
                    request.partitions_def_name, list(request.partition_keys)
                )
        self.cursor = data.cursor
        return list(data.run_requests or [])

    def run(self, requests: Sequence[dg.RunRequest]) -> list[dg.ExecuteInProcessResult]:
        results = []
        with self.user.instance() as instance:
            for request in requests:
                job = (
                    self.defs.resolve_job_def(request.job_name)
                    if request.job_name
                    else self.defs.resolve_implicit_global_asset_job_def()
                )
                run_key = {RUN_KEY_TAG: request.run_key} if request.run_key else {}
                result = job.execute_in_process(
                    instance=instance,
                    asset_selection=request.asset_selection,
                    partition_key=request.partition_key,
                    run_config=request.run_config,
                    tags={**request.tags, **run_key},
                    raise_on_error=False,
                )
                assert result.success, request
                results.append(result)
        return results


def settled(daemon: DaemonDriver) -> DaemonDriver:
    """`daemon` once it has run what it asks for: derived outputs, slices, the catalog."""
    for _ in range(4):
        if not (requests := daemon.tick()):
            break
        daemon.run(requests)
    assert daemon.tick() == []
    return daemon


def kinds(requests: Sequence[dg.RunRequest]) -> list[str]:
    """Each request as what it rebuilds: 'derived', 'catalog' or the slice's partition key."""
    named = {
        frozenset(derived_keys(CONFIG)): "derived",
        frozenset([asset_key(CONFIG, "catalog")]): "catalog",
    }
    out = []
    for request in requests:
        if request.partition_key is not None:
            assert request.job_name == slices_job_name(CONFIG)
            out.append(request.partition_key)
        else:
            out.append(named[frozenset(request.asset_selection or ())])
    return sorted(out)


def taxa_in(file: Path) -> set[str]:
    """The sensor test's slices with at least one row in `file`."""
    counts = {
        key: duckdb.execute(
            f"SELECT count(*) FROM read_parquet(?) WHERE {where}", [str(file), *params]
        ).fetchall()
        for key, (where, params) in SENSOR_SLICES.items()
    }
    return {key for key, count in counts.items() if count != [(0,)]}


def daemon_runs(user: User) -> dict[str, dg.DagsterRun]:
    """The runs the slice sensor and the automation launched."""
    with user.instance() as instance:
        return {
            r.run_id: r
            for name in (SENSOR, AUTOMATION_SENSOR)
            for r in instance.get_runs(dg.RunsFilter(tags={SENSOR_NAME_TAG: name}))
        }


def declare(user: User, keys: Sequence[str], folder: Path, env: pytest.MonkeyPatch) -> User:
    """`user` with `keys` declared in their slices file."""
    path = folder / "slices.yaml"
    path.write_text(yaml.safe_dump({"slices": {CONFIG: list(keys)}}))
    env.setenv("TOL_SLICES_FILE", str(path))
    return user


@pytest.fixture
def declared(synced: User, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> User:
    """The synced user with `SENSOR_SLICES` declared in their slices file."""
    return declare(synced, list(SENSOR_SLICES), tmp_path, monkeypatch)


def test_after_one_file_changes_the_sensor_rebuilds_that_files_parts_then_exactly_its_slices(
    declared: User,
) -> None:
    user = declared
    daemon = DaemonDriver(user)
    generation = user.layout.mirror_dir(CONFIG).resolve().name

    # The published mirror, nothing derived: the automation builds the derived tables of its
    # generation, the sensor then every declared slice, the automation then the catalog.
    [derive] = daemon.tick()
    assert kinds([derive]) == ["derived"]
    [result] = daemon.run([derive])
    assert _data_versions(result) == dict.fromkeys(derived_keys(CONFIG), generation)
    first = daemon.tick()
    assert kinds(first) == sorted(SENSOR_SLICES)
    assert partitions(user) == sorted(SENSOR_SLICES)
    daemon.run(first)
    catalog_run = daemon.tick()
    assert kinds(catalog_run) == ["catalog"]
    daemon.run(catalog_run)
    assert daemon.tick() == []
    assert sorted(catalog_rows(user)) == sorted(SENSOR_SLICES)
    old_commit = user.hub.head_commit()

    # Upstream drops every row of a Felidae species found in one file only.
    names = [p.name for p in mirror_paths(user)]
    (genus, species, name), *_ = duckdb.execute(
        """
        SELECT genus, species, any_value(parse_filename(filename))
        FROM read_parquet(?, filename = true) WHERE family = 'Felidae'
        GROUP BY genus, species HAVING count(DISTINCT filename) = 1 ORDER BY count(*) DESC
        """,
        [[str(p) for p in mirror_paths(user)]],
    ).fetchall()
    edited = user.folder / name
    old = user.layout.mirror_dir(CONFIG) / name
    table = pq.read_table(edited)
    dropped = pc.and_(pc.equal(table["genus"], genus), pc.equal(table["species"], species))
    write_upstream(edited, table.filter(pc.invert(dropped)))
    set_card_rows(user.root, upstream_rows(user.root))
    affected = taxa_in(old) | taxa_in(edited)
    assert affected and affected != set(SENSOR_SLICES), "the edit must leave some slices alone"
    untouched = {key: _file_state(slice_file(user, key)) for key in set(SENSOR_SLICES) - affected}
    before = set(daemon_runs(user))

    synced = user.sync()
    assert synced.code == 0, synced.text
    assert [p.name for p in mirror_paths(user)] == names
    new_generation = user.layout.mirror_dir(CONFIG).resolve().name
    assert new_generation != generation

    # First only the derived outputs, which follow the new generation and rescan the changed
    # file alone.
    [derive] = daemon.tick()
    assert kinds([derive]) == ["derived"]
    [result] = daemon.run([derive])
    assert _data_versions(result) == dict.fromkeys(derived_keys(CONFIG), new_generation)
    metadata = _materialized_metadata(result)
    for table_name in ("lineage", "files"):
        assert metadata[asset_key(CONFIG, "summary", table_name)]["files_rescanned"].value == 1
    assert metadata[asset_key(CONFIG, "taxon_index")]["files_reindexed"].value == 1
    assert metadata[asset_key(CONFIG, "centroids")]["files_reread"].value == 1

    # Then exactly the slices whose taxa have rows in that file, then the catalog.
    rebuild = daemon.tick()
    assert kinds(rebuild) == sorted(affected)
    daemon.run(rebuild)
    refresh = daemon.tick()
    assert kinds(refresh) == ["catalog"]
    daemon.run(refresh)
    assert daemon.tick() == []

    new_runs = [r for run_id, r in daemon_runs(user).items() if run_id not in before]
    assert sorted(r.tags[PARTITION_TAG] for r in new_runs if PARTITION_TAG in r.tags) == sorted(
        affected
    )
    assert len(new_runs) == len(affected) + 2
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in new_runs)
    for key, state in untouched.items():
        assert _file_state(slice_file(user, key)) == state, key
    files = mirror_paths(user)
    rows = catalog_rows(user)
    for key in SENSOR_SLICES:
        where, params = SENSOR_SLICES[key]
        assert_slice_equals(slice_file(user, key), brute_force(files, where, params), files[0])
        commit = user.hub.head_commit() if key in affected else old_commit
        assert rows[key]["upstream_commit"] == commit, key
        assert rows[key]["sha256"] == sha256_file(slice_file(user, key)), key


def test_a_slice_rebuilt_with_the_same_bytes_still_gets_its_catalog_row_refreshed(
    synced: User, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = settled(DaemonDriver(declare(synced, ["family=Felidae"], tmp_path, monkeypatch)))
    before = catalog_rows(synced)["family=Felidae"]

    # Rebuilt from the UI: the same rows, so the same bytes, but built again.
    rebuilt = daemon.defs.resolve_job_def(slices_job_name(CONFIG))
    with synced.instance() as instance:
        assert rebuilt.execute_in_process(instance=instance, partition_key="family=Felidae").success
    assert sha256_file(slice_file(synced, "family=Felidae")) == before["sha256"]

    refresh = daemon.tick()
    assert kinds(refresh) == ["catalog"]
    daemon.run(refresh)
    after = catalog_rows(synced)["family=Felidae"]
    assert after["built_at"] > before["built_at"]
    assert daemon.tick() == []


def _file_state(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return sha256_file(path), stat.st_ino, stat.st_mtime_ns


def _data_versions(result: dg.ExecuteInProcessResult) -> dict[dg.AssetKey, str | None]:
    """The data version each materialization of `result` recorded (the derived tables': the
    mirror generation they read)."""
    materializations = [e.materialization for e in result.get_asset_materialization_events()]
    return {m.asset_key: (m.tags or {}).get("dagster/data_version") for m in materializations}


def _materialized_metadata(
    result: dg.ExecuteInProcessResult,
) -> dict[dg.AssetKey, Mapping[str, dg.MetadataValue]]:
    materializations = [e.materialization for e in result.get_asset_materialization_events()]
    return {m.asset_key: m.metadata for m in materializations}


# --- make demo -----------------------------------------------------------------------------------


def test_the_demo_publishes_the_declared_slices_and_reports_them_with_summary_lines(
    tmp_path: Path,
    dagster_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sample, "DEMO_SAMPLE", {**SMALL_SAMPLE})
    for name in [n for n in os.environ if n.startswith("TOL_")]:
        monkeypatch.delenv(name)
    home = tmp_path / "home"
    monkeypatch.setenv("TOL_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.setenv("TOL_HUB_ENDPOINT", "http://127.0.0.1:9")  # the demo sets its own Hub's

    code = run_demo()

    out = capsys.readouterr().out
    assert code == 0, out
    assert f"ok: tol/{CONFIG}/mirror mirror_matches_manifest:" in out
    assert re.search(rf"^ok: tol/{CONFIG}/catalog slices_match_catalog: \d+ published", out, re.M)
    for table in DERIVED_TABLES:
        line = rf"^ok: tol/{CONFIG}/{table} {TABLES_AUDIT_CHECK}: .* holds the bytes published"
        assert re.search(line, out, re.M), table
    declared = yaml.safe_load(DEFAULT_SLICES_FILE.read_text())["slices"]
    names = [*declared.get("all", []), *declared.get(CONFIG, [])]
    assert names, "slices.yaml declares no slice"
    published = list_slices(config=CONFIG, home=home).set_index("name")
    assert re.search(rf"^\s+{len(names)} slices in ", out, re.M), out
    for name in names:
        listed = re.search(rf"^\s+{re.escape(name)}\s+([\d,]+) rows", out, re.M)
        assert listed, (name, out)
        assert int(listed[1].replace(",", "")) == published.loc[name, "rows"]
        assert Path(published.loc[name, "path"]).is_file()

    mirror = [str(p) for p in sorted((home / "mirror" / CONFIG).glob("*.parquet"))]
    orders = dict(
        duckdb.execute(
            "SELECT coalesce(\"order\", 'NULL'), count(*) FROM read_parquet(?) GROUP BY 1",
            [mirror],
        ).fetchall()
    )
    sources = dict(
        duckdb.execute(
            "SELECT coalesce(source_dataset, 'NULL'), count(*) FROM read_parquet(?) GROUP BY 1",
            [mirror],
        ).fetchall()
    )
    top = _reported(out, "top orders by images")
    assert len(top) == min(5, len(orders))
    assert all(orders[name] == images for name, images in top.items())
    assert min(top.values()) >= max(n for name, n in orders.items() if name not in top)
    assert _reported(out, "images per source") == sources


def _reported(out: str, label: str) -> dict[str, int]:
    """`name count, name count` after `label:` in the demo's report."""
    line = re.search(rf"^\s+{label}: (.*)$", out, re.M)
    assert line, (label, out)
    return {name: int(n.replace(",", "")) for name, n in re.findall(r"(\S+) ([\d,]+)", line[1])}


def test_two_mirrored_configs_are_checked_for_the_same_uuids_in_the_same_order(
    tmp_path: Path,
) -> None:
    second = "bioclip-2.5-vith14_float16"
    root = tmp_path / "root"
    sample.build_sample(root, rows=3000, files=2, seed=5, row_group_size=500)
    sample.build_sample(root, rows=3000, files=1, seed=5, row_group_size=500, config=second)
    home = tmp_path / "home"
    with LocalHub(root) as hub:
        client = HubClient(hub.endpoint, hub.repo_id, None)
        for config in (CONFIG, second):
            core_sync(Layout(home), client, config)
        settings = Settings.from_env(
            {
                "TOL_HOME": str(home),
                "TOL_HUB_ENDPOINT": hub.endpoint,
                "TOL_CONFIGS": f"{CONFIG},{second}",
            }
        )
        with dg.instance_for_test() as instance:
            result = (
                build_definitions(settings)
                .resolve_job_def(AUDIT_JOB)
                .execute_in_process(instance=instance, raise_on_error=False)
            )
    verdicts = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert verdicts["uuids_aligned_with_bioclip_2_float16"] is True, verdicts


def test_partitions_that_do_not_parse_are_skipped_by_rebuilds_with_a_warning_naming_the_fix(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tol_dagster.slices.rebuilds import _parseable

    kept = _parseable(["family=Felidae", "family=Fel\x07idae", "genus=Morus"], CONFIG)

    assert kept == ["family=Felidae", "genus=Morus"]
    assert "U+0007" in caplog.text and "tol-dagster slices remove" in caplog.text


def test_no_catalog_run_at_a_restart_or_a_new_partition_only_after_a_slice_is_built(
    synced: User, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make dev` restarts the daemon (a fresh evaluation of the conditions) and the UI adds a
    partition: neither changes the catalog, so neither may cost a run; a built slice does."""
    daemon = settled(DaemonDriver(declare(synced, ["family=Felidae"], tmp_path, monkeypatch)))

    restarted = DaemonDriver(synced)
    restarted.cursor = daemon.cursor  # the sensor's cursor is kept; the conditions start anew
    assert restarted.tick() == [], "a restart with nothing changed launches nothing"
    with synced.instance() as instance:
        instance.add_dynamic_partitions(slices_partitions_name(CONFIG), ["genus=Panthera"])
    assert restarted.tick() == [], "no catalog run for a partition not built yet"
    assert restarted.tick() == []

    built = restarted.defs.resolve_job_def(slices_job_name(CONFIG))
    with synced.instance() as instance:
        assert built.execute_in_process(instance=instance, partition_key="genus=Panthera").success
    refresh = restarted.tick()
    assert kinds(refresh) == ["catalog"]
    restarted.run(refresh)
    assert restarted.tick() == []
    assert "genus=Panthera" in catalog_rows(synced)


def test_a_mirror_published_between_the_derived_request_and_the_next_tick_is_not_lost(
    synced: User, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's race: the automation requests the derived tables, their run ends, and a
    resync publishes a new mirror before the automation's next tick. On that tick the request is
    `newly_requested` and the mirror `newly_updated` at once; the update must win (the run may
    have read the generation before), or the new generation waits for the next resync."""
    daemon = DaemonDriver(declare(synced, [], tmp_path, monkeypatch))
    [derive] = daemon.tick()
    assert kinds([derive]) == ["derived"]
    daemon.run([derive])
    with synced.instance() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key(CONFIG, "mirror")))
    follow = daemon.tick()
    assert kinds(follow) == ["derived"], "the mirror published after the request was lost"
    daemon.run(follow)
    assert daemon.tick() == [], "once rebuilt after the new mirror, nothing more"


def test_a_slice_failing_a_blocking_check_keeps_the_published_one_and_records_the_verdicts(
    synced: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert synced.tol("slice", "family=Felidae").code == 0
    path = synced.layout.slices_dir(CONFIG) / parse_slice_key("family=Felidae").file_name
    before = path.read_bytes()
    real_checks = slice_asset.slice_checks

    def one_fails(*args: Any, **kwargs: Any) -> list[CheckResult]:
        verdicts = list(real_checks(*args, **kwargs))
        first = verdicts[0]
        return [CheckResult(first.check, False, f"{first.check}: planted failure"), *verdicts[1:]]

    monkeypatch.setattr(slice_asset, "slice_checks", one_fails)

    outcome = synced.tol("slice", "family=Felidae")

    assert outcome.code == ValidationFailed.exit_code, outcome.text
    assert "planted failure" in outcome.text
    assert path.read_bytes() == before, "the published slice is untouched"
    with synced.instance() as instance:
        [run, *_] = instance.get_runs(dg.RunsFilter(job_name=slices_job_name(CONFIG)), limit=1)
        verdicts = {
            e.dagster_event.asset_check_evaluation_data.check_name: (
                e.dagster_event.asset_check_evaluation_data.passed
            )
            for e in instance.all_logs(
                run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
            )
            if e.dagster_event is not None
        }
    assert len(verdicts) == 5 and list(verdicts.values()).count(False) == 1, verdicts
    assert not list(synced.layout.step_outputs_dir().rglob("slice_segments/*.parquet")), (
        "a refused slice's segments are removed too"
    )


def test_the_slice_sensor_rebuilds_once_a_slice_the_weekly_audit_found_drifted(
    synced: User, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = ["family=Felidae", "genus=Panthera"]
    daemon = settled(DaemonDriver(declare(synced, keys, tmp_path, monkeypatch)))
    path = slice_file(synced, "family=Felidae")
    published = path.read_bytes()
    flip_a_byte(path)
    assert not job_checks(AUDIT_JOB)[SLICES_AUDIT_CHECK].passed

    requests = daemon.tick()

    assert kinds(requests) == ["family=Felidae"], requests
    assert ":repair:" in (requests[0].run_key or "")
    daemon.run(requests)
    assert path.read_bytes() == published
    settled(daemon)  # the catalog follows; the same evaluation is never answered twice
    assert job_checks(AUDIT_JOB)[SLICES_AUDIT_CHECK].passed
    assert daemon.tick() == []


def test_the_slice_sensor_rebuilds_once_the_rank_pass_slices_the_weekly_audit_found_drifted(
    synced: User, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, a rank pass's slice was left to the command the check named: a rank run skips
    a slice whose record still matches its rows, and a byte flipped in place keeps its size."""
    declared = tmp_path / "slices.yaml"
    declared.write_text(yaml.safe_dump({"ranks": ["family"]}))
    monkeypatch.setenv("TOL_SLICES_FILE", str(declared))
    daemon = settled(DaemonDriver(synced))
    drifted = [slice_file(synced, key) for key in ("family=Felidae", "family=Canidae")]
    published = {path: path.read_bytes() for path in drifted}
    others = {
        path: path.stat().st_mtime_ns
        for path in drifted[0].parent.glob("family*.parquet")
        if path not in published
    }
    assert len(others) >= 2, "the rank's other slices, left alone"
    for path in drifted:
        flip_a_byte(path)
    assert not job_checks(AUDIT_JOB)[SLICES_AUDIT_CHECK].passed

    [request] = daemon.tick()

    assert request.job_name == rank_slices_job_name(CONFIG) and request.partition_key == "family"
    assert ":repair-rank:" in (request.run_key or "")
    daemon.run([request])
    assert {path: path.read_bytes() for path in drifted} == published
    assert {path: path.stat().st_mtime_ns for path in others} == others
    settled(daemon)  # the catalog follows; the same evaluation is never answered twice
    assert job_checks(AUDIT_JOB)[SLICES_AUDIT_CHECK].passed
    assert daemon.tick() == []


def test_the_slice_sensor_rebuilds_once_the_derived_tables_the_weekly_audit_found_drifted(
    synced: User, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = settled(DaemonDriver(declare(synced, ["family=Felidae"], tmp_path, monkeypatch)))
    path = table_path(synced.layout, CONFIG, "summary/rank_counts")
    published = path.read_bytes()
    flip_a_byte(path)
    audited = [e for e in job_evaluations(AUDIT_JOB) if e.check_name == TABLES_AUDIT_CHECK]
    assert [e.asset_key for e in audited if not e.passed] == [
        asset_key(CONFIG, "summary", "rank_counts")
    ]

    requests = daemon.tick()

    assert kinds(requests) == ["derived"], requests
    assert requests[0].job_name == DERIVED_JOB and ":repair-derived:" in (requests[0].run_key or "")
    daemon.run(requests)
    assert path.read_bytes() == published
    settled(daemon)  # the build's own check passed: nothing more is asked
    assert all(e.passed for e in job_evaluations(AUDIT_JOB))


@pytest.mark.parametrize("cursor", ["{", '["a"]', '{"bioclip-2_float16": {"pending": []}}'])
def test_a_slice_sensor_cursor_set_by_hand_starts_it_over_without_rebuilding_what_is_current(
    synced: User, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cursor: str
) -> None:
    daemon = settled(DaemonDriver(declare(synced, ["family=Felidae"], tmp_path, monkeypatch)))
    kept = daemon.cursor
    daemon.cursor = cursor
    assert daemon.tick() == [], "the slices of this generation are not built again"
    assert daemon.cursor is not None and json.loads(daemon.cursor) == json.loads(kept or "")
