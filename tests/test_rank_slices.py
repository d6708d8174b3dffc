"""A whole rank in one pass: every slice of a rank equals a brute-force DuckDB query by uuid set
with the mirror's exact schema, and the bytes of the slice its own key gives; homonyms get path
keys; `min_rows` filters; odd names and NULL ranks; a resync rebuilds only the changed value; a
kill between values leaves whole slices; `slices.yaml`'s `ranks:` and `slices add-rank`."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import pickle
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from mirror_testing import mirror_of, sample_mirror
from resync_testing import (
    CONFIG,
    User,
    dagster_home,
    edit_upstream,
    flip_a_byte,
    synced,
    synced_home,
    user,
)

from tol_dagster.cli.launch import load_code_location
from tol_dagster.cli.main import main
from tol_dagster.cli.runner import execute, exit_code
from tol_dagster.defs.instance import open_instance
from tol_dagster.defs.metadata import PREVIEW_ROWS
from tol_dagster.defs.published.jobs import rank_slices_job_name, slices_job_name
from tol_dagster.defs.published.keys import rank_slices_op_name
from tol_dagster.defs.published.partitions import add_slice_partition
from tol_dagster.defs.published.rank_asset import REMOVED_SHOWN, rank_metadata
from tol_dagster.defs.published.refresh import ranks_to_refresh
from tol_dagster.derived.summaries import build_summaries, read_summary
from tol_dagster.derived.taxon_index import build_taxon_index, read_taxon_index
from tol_dagster.errors import SettingsError, SliceSpecError, StoreError, ValidationFailed
from tol_dagster.schema import DEFAULT_CONFIG, SORT_KEY, expected_schema
from tol_dagster.settings import Settings
from tol_dagster.slices import check_batch, rank_pass, records
from tol_dagster.slices.catalog_file import read_catalog
from tol_dagster.slices.checks import (
    ROWS_MATCH_INDEX_COUNT,
    ROWS_SATISFY_KEY,
    SCHEMA_MATCHES_MIRROR,
    UUIDS_UNIQUE,
)
from tol_dagster.slices.emb_check import EMB_MATCHES_MIRROR
from tol_dagster.slices.extract import assemble_slice, extract_segment, extract_slice
from tol_dagster.slices.keys import SliceKey, parse_slice_key, to_sql_filter
from tol_dagster.slices.rank_pass import RANK_PASS, RankResult, publish_rank
from tol_dagster.slices.rank_plan import PlanValues, RankPlan, RankValue, plan_rank
from tol_dagster.slices.rank_results import Built, BuiltSlices
from tol_dagster.slices.rebuilds import RankSpec, declared_ranks, declared_slices
from tol_dagster.store import renames
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile

__all__ = ["dagster_home", "synced", "synced_home", "user"]  # fixtures, imported to be found

SCHEMA = expected_schema(DEFAULT_CONFIG)
#: The blocking checks every slice of a rank passes before it is published.
CHECKS = {
    ROWS_MATCH_INDEX_COUNT,
    ROWS_SATISFY_KEY,
    UUIDS_UNIQUE,
    SCHEMA_MATCHES_MIRROR,
    EMB_MATCHES_MIRROR,
}


class Ranked:
    """A mirror with its taxon index and lineage summary, and a home to publish into."""

    def __init__(self, files: list[MirrorFile], layout: Layout) -> None:
        self.files, self.layout = files, layout
        build_taxon_index(files, layout, DEFAULT_CONFIG)
        build_summaries(files, layout, DEFAULT_CONFIG)

    def plan(self, rank: str, min_rows: int = 1) -> RankPlan:
        index = read_taxon_index(self.layout, DEFAULT_CONFIG)
        lineage = read_summary(self.layout, DEFAULT_CONFIG, "lineage")
        return plan_rank(rank, index, lineage, self.files, min_rows)

    def publish(self, plan: RankPlan, workers: int = 1) -> RankResult:
        return publish_rank(
            plan, self.files, schema=SCHEMA, layout=self.layout, config=DEFAULT_CONFIG,
            commit="c0ffee", generation="g1", workers=workers,
        )  # fmt: skip

    def brute_uuids(self, key: SliceKey) -> set[str]:
        where, params = to_sql_filter(key)
        paths = [str(f.path) for f in self.files]
        rows = (
            duckdb.connect()
            .execute(f"SELECT uuid FROM read_parquet(?) WHERE {where}", [paths, *params])
            .fetchall()
        )
        return {uuid for (uuid,) in rows}


def _slice(layout: Layout, key: SliceKey) -> Path:
    return layout.slices_dir(DEFAULT_CONFIG) / key.file_name


@pytest.fixture(scope="module")
def family(
    small_sample: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Ranked, RankPlan, RankResult]:
    ranked = Ranked(sample_mirror(small_sample), Layout(tmp_path_factory.mktemp("home")))
    plan = ranked.plan("family")
    return ranked, plan, ranked.publish(plan)


def test_every_slice_of_a_rank_is_its_rows_by_brute_force_with_the_exact_schema(
    family: tuple[Ranked, RankPlan, RankResult],
) -> None:
    ranked, plan, result = family
    assert len(result.built) == len(plan.values) > 50 and not result.unchanged
    placed: list[str] = []
    for value in plan.values:
        path = _slice(ranked.layout, value.key)
        uuids = pq.read_table(path, columns=["uuid"])["uuid"].to_pylist()
        assert set(uuids) == ranked.brute_uuids(value.key), value.key.name
        assert len(uuids) == len(set(uuids)) == value.rows
        schema = pq.read_schema(path)
        assert schema.equals(SCHEMA, check_metadata=False), value.key.name
        assert schema.field("emb").type == pa.list_(pa.float16(), 768)
        placed += uuids
    families = (
        duckdb.connect()
        .execute(
            "SELECT count(*) FROM read_parquet(?) WHERE family IS NOT NULL",
            [[str(f.path) for f in ranked.files]],
        )
        .fetchone()
    )
    assert len(placed) == len(set(placed)) == families[0] - plan.unplaced_rows, (
        "every row with a family is in exactly one slice of the rank"
    )


def test_a_rank_slice_has_the_bytes_of_the_slice_its_own_key_gives(
    family: tuple[Ranked, RankPlan, RankResult], tmp_path: Path
) -> None:
    ranked, plan, result = family
    by_name = {r.key: r for r in result.built}
    index = read_taxon_index(ranked.layout, DEFAULT_CONFIG)
    biggest = max(plan.values, key=lambda v: v.rows)
    homonym = next(v for v in plan.values if len(v.key.conditions) > 1)
    for value in (biggest, homonym, plan.values[0], plan.values[-1]):
        single = extract_slice(
            value.key, ranked.files, index, tmp_path / value.key.file_name, schema=SCHEMA
        )
        assert single.sha256 == by_name[value.key.name].sha256, value.key.name
        # As the slices asset builds it on N workers: one segment per file, spliced together.
        segments = [
            extract_segment(value.key, [f], index, tmp_path / f"{i}.segment", schema=SCHEMA)
            for i, f in enumerate(ranked.files)
        ]
        stepped = assemble_slice(value.key, segments, tmp_path / "stepped.parquet", schema=SCHEMA)
        assert stepped.sha256 == single.sha256, value.key.name
    assert [v.first for v in plan.values] == sorted(v.first for v in plan.values), (
        "values are published in the mirror's order of their first row"
    )


def test_a_plan_refuses_an_index_naming_a_file_the_mirror_lacks(
    family: tuple[Ranked, RankPlan, RankResult],
) -> None:
    ranked, _, _ = family
    index = read_taxon_index(ranked.layout, DEFAULT_CONFIG)
    lineage = read_summary(ranked.layout, DEFAULT_CONFIG, "lineage")
    for rank in ("family", "species"):
        with pytest.raises(StoreError, match=f"names {ranked.files[-1].name}, which is not in"):
            plan_rank(rank, index, lineage, ranked.files[:-1])


def test_every_rank_slice_has_a_record_like_a_single_slice(
    family: tuple[Ranked, RankPlan, RankResult],
) -> None:
    ranked, _, result = family
    saved = {r["name"]: r for r in records.slice_records(ranked.layout, DEFAULT_CONFIG)}
    for built in result.built:
        record = saved[built.key]
        assert record["rank"] == "family" and record[rank_pass.RANK_PASS] == "family"
        path = _slice(ranked.layout, parse_slice_key(built.key))
        assert record["sha256"] == built.sha256 == sha256_file(path)
        assert record["rows"] == built.rows
        assert record["value"] == built.key.rsplit("family=", 1)[1]


def test_a_pass_keeps_under_two_hundred_bytes_a_published_slice(
    family: tuple[Ranked, RankPlan, RankResult],
) -> None:
    """What a worker sends back and the pass keeps per slice (868,000 species' `SliceResult`s,
    their checks' words and details, were ~3 kB each: 2.7 GB; a tuple of their fields ~350
    bytes)."""
    _, _, result = family
    tracemalloc.start()
    try:
        received = pickle.loads(pickle.dumps(result.built))  # as from a worker
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert received == result.built and list(received) == list(result.built)
    assert held / len(received) < 200, f"{held / len(received):.0f} bytes a slice"


def test_built_slices_give_back_each_slice_as_added_sharing_their_check_names() -> None:
    made = [
        Built(f"species=S {i}", i, 7 * i, hashlib.sha256(bytes([i])).hexdigest(), i / 3, checks)
        for i, checks in enumerate([("a", "b"), ("a", "b"), (), ("a", "b")])
    ]
    built = BuiltSlices(made[:2])
    built.extend(BuiltSlices(made[2:]))
    assert list(built) == made and len(built) == 4
    assert built[-1] == made[3] and built[1] == made[1]
    assert built.checks[0] is built.checks[1], "one tuple for slices in a row with the same"
    with pytest.raises(IndexError):
        built[4]


def test_a_pass_of_many_slices_keeps_its_metadata_small() -> None:
    """Raising `min_rows` may remove most of a rank, a first pass rebuild all of it: the run's
    metadata counts them and lists the largest rebuilt and the first removed, not them all."""
    built = BuiltSlices(Built(f"family=F{i}", i, 10 * i, "0" * 64, 0.1, ()) for i in range(500))
    removed = [f"family=Gone{i}" for i in range(5_000)]
    result = RankResult("family", built=built, removed=removed)
    metadata = rank_metadata(RankPlan("family", 1, [], 0, 0), result)
    assert metadata["rebuilt"].value == 500 and metadata["removed"].value == 5_000
    assert metadata["removed_slices"].value == removed[:REMOVED_SHOWN]
    shown = [record.data["name"] for record in metadata["rebuilt_slices"].value.records]
    assert shown == [f"family=F{i}" for i in range(499, 499 - PREVIEW_ROWS, -1)]


def test_homonyms_get_path_keys_split_at_the_topmost_differing_rank(
    family: tuple[Ranked, RankPlan, RankResult],
) -> None:
    ranked = family[0]
    plan = ranked.plan("genus")
    names = {v.key.name for v in plan.values}
    assert {"kingdom=Animalia/genus=Morus", "kingdom=Plantae/genus=Morus"} <= names
    assert "genus=Morus" not in names
    parents = (
        duckdb.connect()
        .execute(
            "SELECT genus FROM read_parquet(?) WHERE genus IS NOT NULL GROUP BY genus "
            "HAVING count(DISTINCT kingdom) > 1",
            [[str(f.path) for f in ranked.files]],
        )
        .fetchall()
    )
    path_keyed = {v.key.value for v in plan.values if len(v.key.conditions) > 1}
    assert {g for (g,) in parents} <= path_keyed
    for value in plan.values:
        if value.key.value == "Morus":
            assert value.rows == len(ranked.brute_uuids(value.key)) > 0


def test_a_plan_hands_out_its_values_made_from_columns_path_keys_included(
    family: tuple[Ranked, RankPlan, RankResult],
) -> None:
    """A plan keeps its values as columns (`PlanValues`): each value made when asked for is
    the same whether indexed, sliced or iterated, homonyms with their path keys."""
    values = family[0].plan("genus").values
    assert isinstance(values, PlanValues) and len(values) > 50
    made = list(values)
    assert made == [values[i] for i in range(len(values))]
    assert values[-1] == made[-1] and values[3:7] == made[3:7]
    assert any(len(v.key.conditions) > 1 for v in made), "the sample has homonyms"
    assert [v.first for v in made] == sorted(v.first for v in made), "in the mirror's order"
    with pytest.raises(IndexError):
        values[len(values)]


def test_min_rows_keeps_the_values_with_at_least_that_many_rows(
    family: tuple[Ranked, RankPlan, RankResult],
) -> None:
    ranked, everything, _ = family
    cut = sorted(v.rows for v in everything.values)[len(everything.values) // 2]
    plan = ranked.plan("family", min_rows=cut)
    assert {v.key.name for v in plan.values} == {
        v.key.name for v in everything.values if v.rows >= cut
    }
    assert plan.below_min_rows == len(everything.values) - len(plan.values) > 0


ODD_NAMES = ['O\'Brien "quoted" idae', "Ünïcødé–科 idae", "Slash/And%2Fidae"]


@pytest.fixture(scope="module")
def odd(small_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Ranked:
    """The sample with three families renamed to names with quotes, Unicode and a `/`, and
    one family's rows set to NULL, re-sorted as upstream sorts."""
    folder = tmp_path_factory.mktemp("odd")
    table = pa.concat_tables(pq.read_table(f.path) for f in sample_mirror(small_sample))
    names = pc.unique(table["family"].drop_null()).to_pylist()
    mapping = dict(zip(names[:3], ODD_NAMES, strict=True)) | {names[3]: None}
    column = pa.array([mapping.get(f, f) for f in table["family"].to_pylist()], pa.string())
    table = table.set_column(table.schema.get_field_index("family"), "family", column)
    table = table.sort_by([(c, "ascending") for c in SORT_KEY])
    for number, start in enumerate(range(0, table.num_rows, 2000)):
        pq.write_table(
            table.slice(start, 2000), folder / f"part-{number}.parquet", row_group_size=500
        )
    return Ranked(mirror_of(folder), Layout(tmp_path_factory.mktemp("home")))


def test_odd_names_are_slices_and_null_is_none(odd: Ranked) -> None:
    plan = odd.plan("family")
    result = odd.publish(plan)
    values = {v.key.value: v for v in plan.values}
    assert set(ODD_NAMES) <= set(values), "quotes, Unicode and '/' are values like any"
    assert None not in values and "NULL" not in values and "" not in values
    for name in ODD_NAMES:
        key = values[name].key
        uuids = set(pq.read_table(_slice(odd.layout, key), columns=["uuid"])["uuid"].to_pylist())
        assert uuids == odd.brute_uuids(key) != set()
    nulls = (
        duckdb.connect()
        .execute(
            "SELECT list(uuid) FROM read_parquet(?) WHERE family IS NULL",
            [[str(f.path) for f in odd.files]],
        )
        .fetchone()[0]
    )
    published = set()
    for built in result.built:
        path = _slice(odd.layout, parse_slice_key(built.key))
        published |= set(pq.read_table(path, columns=["uuid"])["uuid"].to_pylist())
    assert nulls and published.isdisjoint(nulls), "rows with a NULL family are in no slice"


#: Values of a rank no slice key can name (`keys.nameable`): upstream holds such dirt.
BLANK_NAMES = ["", "  ", "Feli\u200bdae"]
#: Genera an epithet does not split back off (a key splits a binomial at its first space).
SPLIT_GENERA = ["Incertae sedis", " Leading"]


def _write_sorted(table: pa.Table, folder: Path) -> list[MirrorFile]:
    table = table.sort_by([(c, "ascending") for c in SORT_KEY])
    for number, start in enumerate(range(0, table.num_rows, 2000)):
        pq.write_table(
            table.slice(start, 2000), folder / f"part-{number}.parquet", row_group_size=500
        )
    return mirror_of(folder)


@pytest.fixture(scope="module")
def dirty(small_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Ranked:
    """The sample with three families renamed to values no key names (blank, spaces, a
    zero-width space), a fourth family's first rows under a blank kingdom (a homonym whose
    parent no key names), and two genera of named species renamed to ones holding a space."""
    table = pa.concat_tables(pq.read_table(f.path) for f in sample_mirror(small_sample))
    names = pc.unique(table["family"].drop_null()).to_pylist()
    mapping = dict(zip(names[:3], BLANK_NAMES, strict=True))
    families = table["family"].to_pylist()
    column = pa.array([mapping.get(f, f) for f in families], pa.string())
    table = table.set_column(table.schema.get_field_index("family"), "family", column)
    kingdoms = table["kingdom"].to_pylist()
    for row in [r for r, f in enumerate(families) if f == names[3]][:5]:
        kingdoms[row] = ""
    column = pa.array(kingdoms, pa.string())
    table = table.set_column(table.schema.get_field_index("kingdom"), "kingdom", column)
    named = table.filter(pc.is_valid(table["species"]))
    genera = pc.unique(named["genus"].drop_null()).to_pylist()[:2]
    renamed = dict(zip(genera, SPLIT_GENERA, strict=True))
    column = pa.array([renamed.get(g, g) for g in table["genus"].to_pylist()], pa.string())
    table = table.set_column(table.schema.get_field_index("genus"), "genus", column)
    folder = tmp_path_factory.mktemp("dirty")
    return Ranked(_write_sorted(table, folder), Layout(tmp_path_factory.mktemp("home")))


def _dirty_count(ranked: Ranked, where: str) -> int:
    query = f"SELECT count(*) FROM read_parquet(?) WHERE {where}"
    paths = [str(f.path) for f in ranked.files]
    return int(duckdb.connect().execute(query, [paths]).fetchone()[0])


def test_values_no_key_can_name_are_left_out_of_a_rank_and_counted(dirty: Ranked) -> None:
    """Before, the plan made keys of them: the pass renamed such a slice into place, failed
    writing its record (exit 2) and left the rest of its group published without records."""
    plan = dirty.plan("family")
    for value in plan.values:
        assert parse_slice_key(value.key.name) == value.key
    assert plan.unnamed_values == tuple(sorted(BLANK_NAMES))
    blank = ", ".join(f"'{v}'" for v in BLANK_NAMES)
    assert plan.unnamed_rows == _dirty_count(dirty, f"family IN ({blank})") > 0
    result = dirty.publish(plan)
    assert len(result.built) == len(plan.values)
    placed: set[str] = set()
    for value in plan.values:
        uuids = set(pq.read_table(_slice(dirty.layout, value.key), columns=["uuid"])["uuid"])
        assert {u.as_py() for u in uuids} == dirty.brute_uuids(value.key), value.key.name
        placed |= {u.as_py() for u in uuids}
    assert not any(c[1] == "" for v in plan.values for c in v.key.conditions)
    assert plan.unplaced_rows >= _dirty_count(dirty, "kingdom = ''") == 5
    assert len(placed) + plan.unplaced_rows + plan.unnamed_rows == _dirty_count(
        dirty, "family IS NOT NULL"
    )
    published = list(dirty.layout.slices_dir(DEFAULT_CONFIG).glob("*.parquet"))
    recorded = list(records.slice_records(dirty.layout, DEFAULT_CONFIG))
    assert len(published) == len(recorded) == len(plan.values), "every slice has its record"


def test_an_epithet_whose_genus_holds_a_space_is_in_no_species_slice_and_counted(
    dirty: Ranked,
) -> None:
    """`Incertae sedis` + `alpha` is no binomial: `species=Incertae sedis alpha` names genus
    `Incertae` and epithet `sedis alpha`. Before, the plan made that key (its slice held other
    rows, or none), and the index placed the rows under it."""
    plan = dirty.plan("species")
    split = ", ".join(f"'{g}'" for g in SPLIT_GENERA)
    epithets = f"genus IN ({split}) AND species IS NOT NULL AND NOT contains(species, ' ')"
    assert _dirty_count(dirty, epithets) > 0
    assert plan.unnamed_rows == _dirty_count(dirty, epithets)
    for value in plan.values:
        assert parse_slice_key(value.key.name) == value.key
        assert not value.key.value.startswith(tuple(g.split()[0] for g in SPLIT_GENERA))
        assert not value.key.value.startswith(" ")
    assert sum(v.rows for v in plan.values) + plan.unplaced_rows + plan.unnamed_rows == (
        _dirty_count(dirty, "species IS NOT NULL")
    )
    index = read_taxon_index(dirty.layout, DEFAULT_CONFIG)
    species = index.filter(pc.equal(index["rank"], "species"))
    placed = sum(v.rows for v in plan.values) + plan.unplaced_rows
    assert pc.sum(species["rows"]).as_py() == placed, "the index holds no row without a binomial"


@pytest.fixture(scope="module")
def binomials(small_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Ranked:
    """The sample with one genus's species renamed so that a binomial's filter matches rows
    indexed under another value: most as epithet `× piperita` (a space in it: the index names
    them `× piperita`; the sample has such rows in another kingdom), its first row and one row
    of another kingdom as `Mentha × piperita` whole (the only rows the index names so, a
    homonym; its keys' filters also match genus + epithet), one epithet left empty."""
    folder = tmp_path_factory.mktemp("binomials")
    table = pa.concat_tables(pq.read_table(f.path) for f in sample_mirror(small_sample))
    counts = pc.value_counts(table["genus"].drop_null())
    genus = counts[pc.index(counts.field("counts"), pc.max(counts.field("counts"))).as_py()]
    genus = genus["values"].as_py()
    rows = pc.indices_nonzero(pc.equal(table["genus"], genus)).to_pylist()
    species, genera = table["species"].to_pylist(), table["genus"].to_pylist()
    kingdoms = table["kingdom"].to_pylist()
    other = next(r for r, k in enumerate(kingdoms) if k and k != kingdoms[rows[0]])
    for row in rows:
        genera[row], species[row] = "Mentha", "× piperita"
    species[rows[1]] = ""
    for row in (rows[0], other):
        genera[row], species[row] = "Mentha", "Mentha × piperita"
    for name, column in (("genus", genera), ("species", species)):
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(column))
    table = table.sort_by([(c, "ascending") for c in SORT_KEY])
    for number, start in enumerate(range(0, table.num_rows, 2000)):
        pq.write_table(
            table.slice(start, 2000), folder / f"part-{number}.parquet", row_group_size=500
        )
    return Ranked(mirror_of(folder), Layout(tmp_path_factory.mktemp("home")))


def _species_rows(ranked: Ranked, species: str) -> list[tuple[str]]:
    """The uuids of the rows whose species column is `species`."""
    paths = [str(f.path) for f in ranked.files]
    query = "SELECT uuid FROM read_parquet(?) WHERE species = ?"
    return duckdb.connect().execute(query, [paths, species]).fetchall()


def test_a_binomial_whose_filter_matches_more_than_its_index_entries_is_all_its_rows(
    binomials: Ranked,
) -> None:
    """`kingdom=…/species=Mentha × piperita` keeps the rows of genus `Mentha` and epithet
    `× piperita` of its kingdom too, which the index names under `× piperita`: its slice holds
    them all (it held one row), and every species' row count is the filter's."""
    plan = binomials.plan("species")
    values = {v.key.name: v for v in plan.values}
    for value in plan.values:
        assert value.rows == len(binomials.brute_uuids(value.key)), value.key.name
    wholes = [v for v in plan.values if v.key.value == "Mentha × piperita"]
    epithets = [v for v in plan.values if v.key.value == "× piperita"]
    assert len(wholes) == len(epithets) == 2, "homonyms of two kingdoms"
    assert sum(v.rows for v in wholes) > len(_species_rows(binomials, "Mentha × piperita")) == 2
    tricky = [*wholes, *epithets]
    assert "species=Mentha " not in values, "an empty epithet is no binomial"
    result = binomials.publish(dataclasses.replace(plan, values=tricky))
    assert len(result.built) == 4
    for value in tricky:
        path = _slice(binomials.layout, value.key)
        uuids = pq.read_table(path, columns=["uuid"])["uuid"].to_pylist()
        assert len(uuids) == value.rows and set(uuids) == binomials.brute_uuids(value.key)


def _three_files(small_sample: Path, folder: Path) -> tuple[list[MirrorFile], str]:
    """The sample in three files, the middle one holding exactly one family's rows (a family
    whose rows are one run): a resync can then change that family's rows alone."""
    table = pa.concat_tables(pq.read_table(f.path) for f in sample_mirror(small_sample))
    family = table["family"].to_pylist()
    runs: dict[str, list[int]] = {}
    for row, name in enumerate(family):
        runs.setdefault(name, []).append(row)
    name, rows = max(
        ((n, r) for n, r in runs.items() if n and r[-1] - r[0] + 1 == len(r) and len(r) >= 4),
        key=lambda item: len(item[1]),
    )
    cuts = [0, rows[0], rows[-1] + 1, table.num_rows]
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(3):
        part = table.slice(cuts[number], cuts[number + 1] - cuts[number])
        pq.write_table(part, folder / f"part-{number}.parquet", row_group_size=500)
    return mirror_of(folder), name


def test_a_resync_rebuilds_only_the_value_whose_rows_changed(
    small_sample: Path, tmp_path: Path
) -> None:
    files, changed = _three_files(small_sample, tmp_path / "v1")
    ranked = Ranked(files, Layout(tmp_path / "home"))
    first = ranked.publish(ranked.plan("family"))
    assert len(first.built) > 50
    middle = files[1]
    table = pq.read_table(middle.path)
    kept = table.slice(0, table.num_rows - 2)  # upstream dropped two of its images
    new = tmp_path / "v2"
    new.mkdir()
    pq.write_table(kept, new / middle.name, row_group_size=500)
    resynced = [MirrorFile(middle.name, sha256_file(new / middle.name), new / middle.name)]
    ranked = Ranked([files[0], *resynced, files[2]], ranked.layout)

    again = ranked.publish(ranked.plan("family"))

    assert [r.key for r in again.built] == [f"family={changed}"], "only that slice is rebuilt"
    assert len(again.unchanged) == len(first.built) - 1
    key = SliceKey((("family", changed),))
    assert again.built[0].rows == len(ranked.brute_uuids(key)) == len(table) - 2


def test_a_pass_removes_what_its_rank_no_longer_has_and_nothing_else(
    families: tuple[Ranked, RankPlan],
) -> None:
    """Values under a raised `min_rows` lose their slice and record; a value named in `keep`,
    a record of another rank's pass and a single slice's record stay, and so do the values
    still in the plan (unchanged: not rebuilt); a record whose slice file a killed pass already
    removed is removed now."""
    ranked, plan = families
    first = ranked.publish(plan)
    cut = sorted(v.rows for v in plan.values)[len(plan.values) // 2]
    smaller = ranked.plan("family", min_rows=cut)
    gone = sorted(v.key.name for v in plan.values if v.rows < cut)
    kept = gone.pop(0)
    folder = ranked.layout.slice_records_dir(DEFAULT_CONFIG)
    others = {"genus=Other": "genus", "family=Single": None}
    for name, rank in others.items():  # as a genus pass and a slice of its own write them
        record = {"name": name, "path": str(_slice(ranked.layout, parse_slice_key(name)))}
        record |= {rank_pass.RANK_PASS: rank} if rank else {}
        records.save_slice_record(ranked.layout, DEFAULT_CONFIG, record)
        Path(str(record["path"])).write_bytes(b"PAR1")
    half = "family=Halfremovedidae"  # a pass killed between its slice file and its record
    record = {"name": half, "path": str(_slice(ranked.layout, parse_slice_key(half)))}
    records.save_slice_record(
        ranked.layout, DEFAULT_CONFIG, record | {rank_pass.RANK_PASS: "family"}
    )

    again = publish_rank(
        smaller, ranked.files, schema=SCHEMA, layout=ranked.layout, config=DEFAULT_CONFIG,
        commit="c0ffee", generation="g1", keep={kept},
    )  # fmt: skip

    assert again.removed == sorted([*gone, half]) and len(again.built) == 0
    assert len(again.unchanged) == len(smaller.values) == len(first.built) - len(gone) - 1
    left = {r["name"] for r in records.slice_records(ranked.layout, DEFAULT_CONFIG)}
    assert left == {v.key.name for v in smaller.values} | {kept, *others}
    for name in gone:
        assert not _slice(ranked.layout, parse_slice_key(name)).exists()
    for name in [kept, *others]:
        assert _slice(ranked.layout, parse_slice_key(name)).exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        records.record_file_name(parse_slice_key(n)) for n in left
    ), "no other file is left in the records' folder"


def test_a_record_folder_hands_out_each_record_once_and_skips_temp_files(tmp_path: Path) -> None:
    """`take` reads a key's record and takes it off the list; `rest` reads the ones left, never
    a writer's temp file (half written) nor one removed since the listing."""
    layout = Layout(tmp_path)
    for name in ["family=A", "family=B", "family=C"]:
        records.save_slice_record(layout, DEFAULT_CONFIG, {"name": name, "rows": len(name)})
    folder = layout.slice_records_dir(DEFAULT_CONFIG)
    (folder / ".family=D.json.x1.tmp").write_text('{"na')
    listed = records.RecordFolder(layout, DEFAULT_CONFIG)
    (folder / records.record_file_name(parse_slice_key("family=C"))).unlink()

    assert listed.take(parse_slice_key("family=A")) == {"name": "family=A", "rows": 8}
    assert listed.take(parse_slice_key("family=A")) is None, "taken once"
    assert listed.take(parse_slice_key("family=E")) is None, "never built"
    assert [(p.name, r["name"]) for p, r in listed.rest()] == [("family%3DB.json", "family=B")]


@pytest.fixture
def families(small_sample: Path, tmp_path: Path) -> tuple[Ranked, RankPlan]:
    """A mirror with nothing published yet, and the plan of its families."""
    ranked = Ranked(sample_mirror(small_sample), Layout(tmp_path / "home"))
    return ranked, ranked.plan("family")


@pytest.mark.parametrize("limit", ["slices", "rows"])
def test_a_kill_between_values_leaves_whole_slices_and_a_resumable_pass(
    families: tuple[Ranked, RankPlan], monkeypatch: pytest.MonkeyPatch, limit: str
) -> None:
    """Slices are checked in groups (here of two, closed by their count or by their rows): a
    kill publishes none of the group it stops in, and leaves none of its temp files."""
    ranked, plan = families
    real = rank_pass._held
    calls = []

    def killed_at_the_fourth(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # what SIGINT does mid-pass
        return real(*args, **kwargs)

    if limit == "slices":
        monkeypatch.setattr(check_batch, "BATCH_SLICES", 2)
    else:
        rows = sum(v.rows for v in plan.values[:2])
        assert plan.values[2].rows < rows, "the third value alone closes no group"
        monkeypatch.setattr(check_batch, "BATCH_ROWS", rows)
    monkeypatch.setattr(rank_pass, "_held", killed_at_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        ranked.publish(plan)
    monkeypatch.setattr(rank_pass, "_held", real)

    assert _on_disk(ranked) == _file_names(plan.values[:2]), "two published, no temp file left"
    for record in records.slice_records(ranked.layout, DEFAULT_CONFIG):
        assert sha256_file(Path(str(record["path"]))) == record["sha256"], "whole, as recorded"
    assert read_catalog(ranked.layout, DEFAULT_CONFIG).num_rows == 0, (
        "the catalog is written once, after the pass: untouched by a killed one"
    )
    resumed = ranked.publish(plan)
    assert len(resumed.unchanged) == 2 and len(resumed.built) == len(plan.values) - 2


def test_a_value_failing_its_checks_stays_as_it_was_and_the_rest_of_its_group_is_published(
    families: tuple[Ranked, RankPlan], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked in groups (here of three), a value whose checks fail is not published: its old
    file stays as it was and its temp file is removed, while the values around it in its group
    are published and recorded; the pass then names it."""
    ranked, plan = families
    monkeypatch.setattr(check_batch, "BATCH_SLICES", 3)
    bad = plan.values[1]
    old = ranked.layout.slices_dir(DEFAULT_CONFIG) / bad.key.file_name
    old.parent.mkdir(parents=True)
    old.write_bytes(b"the slice published before")
    miscounted = dataclasses.replace(bad, rows=bad.rows + 1)  # an index counting one row more
    values = [plan.values[0], miscounted, *plan.values[2:]]
    with pytest.raises(ValidationFailed, match=f"1 of {len(values)} slices not published") as err:
        ranked.publish(dataclasses.replace(plan, values=values))

    assert f"slice {bad.key.name}: not published" in str(err.value)
    assert f"but the mirror counts {bad.rows + 1:,}" in str(err.value)
    assert old.read_bytes() == b"the slice published before"
    assert _on_disk(ranked) == _file_names(plan.values), "every other slice, no temp file"
    recorded = {r["name"] for r in records.slice_records(ranked.layout, DEFAULT_CONFIG)}
    assert recorded == {v.key.name for v in plan.values} - {bad.key.name}
    for record in records.slice_records(ranked.layout, DEFAULT_CONFIG):
        assert sha256_file(Path(str(record["path"]))) == record["sha256"], "whole, as recorded"
    again = ranked.publish(plan)
    assert [r.key for r in again.built] == [bad.key.name], "the others are left as built"
    assert set(again.built[0].checks) == CHECKS


def test_a_slice_of_a_groups_rows_or_more_is_read_by_its_own_streamed_query(
    families: tuple[Ranked, RankPlan], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group's one query hands all its rows over at once; a slice as large as a group
    alone (a real order holds 21.7M rows) reads its own, streamed, and is checked the same."""
    ranked, plan = families
    sizes = sorted(v.rows for v in plan.values)
    limit = sizes[-3]  # the two or three largest values read alone, the others together
    monkeypatch.setattr(check_batch, "BATCH_ROWS", limit)
    together: list[list[str]] = []
    real = check_batch.read_for_checks

    def spied(slices: list[tuple[Path, SliceKey]]) -> list[pa.Table | None]:
        together.append([key.name for _, key in slices])
        return real(slices)

    monkeypatch.setattr(check_batch, "read_for_checks", spied)
    result = ranked.publish(plan)

    large = {v.key.name for v in plan.values if v.rows >= limit}
    read = [name for names in together for name in names]
    assert large and not large & set(read), "the large slices read alone"
    assert sorted(read) == sorted(v.key.name for v in plan.values if v.rows < limit)
    assert len(result.built) == len(plan.values)
    assert all(set(built.checks) == CHECKS for built in result.built)
    assert _on_disk(ranked) == _file_names(plan.values)


def test_a_full_disk_at_a_slices_fsync_stops_the_pass_with_no_record_of_it(
    families: tuple[Ranked, RankPlan], monkeypatch: pytest.MonkeyPatch
) -> None:
    ranked, plan = families
    real = renames.fsync_file
    synced: list[Path] = []

    def full_at_the_third(path: Path) -> None:
        synced.append(path)
        if len(synced) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path)

    monkeypatch.setattr(renames, "fsync_file", full_at_the_third)
    with pytest.raises(OSError, match="No space left"):
        ranked.publish(plan)
    monkeypatch.setattr(renames, "fsync_file", real)

    assert _on_disk(ranked) == _file_names(plan.values[:2]), "the two synced, no temp file left"
    recorded = records.slice_records(ranked.layout, DEFAULT_CONFIG)
    assert all(Path(str(r["path"])).is_file() for r in recorded), "no record without its slice"
    resumed = ranked.publish(plan)
    assert len(resumed.built) + len(resumed.unchanged) == len(plan.values)
    assert _on_disk(ranked) == _file_names(plan.values)


def _on_disk(ranked: Ranked) -> list[str]:
    return sorted(p.name for p in ranked.layout.slices_dir(DEFAULT_CONFIG).iterdir())


def _file_names(values: list[RankValue]) -> list[str]:
    return sorted(v.key.file_name for v in values)


def test_the_slices_file_declares_ranks_and_refuses_bad_entries(tmp_path: Path) -> None:
    path = tmp_path / "slices.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "slices": {"all": ["family=Felidae"]},
                "ranks": ["family", {"rank": "genus", "min_rows": 5}],
            }
        )
    )
    assert declared_ranks(path, CONFIG) == [RankSpec("family", 1), RankSpec("genus", 5)]
    path.write_text(
        yaml.safe_dump({"ranks": {"all": ["order"], CONFIG: ["family"], "other": ["genus"]}})
    )
    assert declared_ranks(path, CONFIG) == [RankSpec("order"), RankSpec("family")]
    for bad, words in [
        (["famly"], "'famly' is not a rank; use one of kingdom"),
        (["scientific_name"], "scientific_name is not a rank to publish whole"),
        ([{"rank": "genus", "min_rows": 0}], "min_rows must be a whole number >= 1"),
        ([{"rank": "genus", "rows": 5}], "needs `rank` and may have `min_rows`"),
        ("family", "`ranks:` holds 'family' where a list belongs"),
        ({"all": 5}, "`ranks:` holds 5 where a list belongs"),
    ]:
        path.write_text(yaml.safe_dump({"ranks": bad}))
        with pytest.raises((SettingsError, SliceSpecError)) as raised:
            declared_ranks(path, CONFIG)
        assert str(path) in str(raised.value) and words in str(raised.value)
        assert raised.value.exit_code == 2


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (b"slices:\n  all: 5\n", "`slices:` holds 5 where a list belongs"),
        (b"slices:\n  all: family=Felidae\n", "holds 'family=Felidae' where a list belongs"),
        (b"slices:\n  all: [5]\n", "`slices:` entry 5: slice key '5': '5' has no '='"),
        (b"slices: [family=Felidae]\n", "expected `slices:` mapping config names"),
        (b"\xff\xfeslices: {}\n", "not valid UTF-8 YAML"),
    ],
)
def test_a_malformed_slices_file_is_bad_input_naming_it(
    tmp_path: Path, text: bytes, words: str
) -> None:
    """Before, `all: 5` or bytes that are not UTF-8 were an internal error (exit 70), and a
    string where a list belongs was read letter by letter ("slice key 'f'")."""
    path = tmp_path / "slices.yaml"
    path.write_bytes(text)
    with pytest.raises((SettingsError, SliceSpecError)) as raised:
        declared_slices(path, CONFIG)
    assert str(path) in str(raised.value) and words in str(raised.value)
    assert raised.value.exit_code == 2


def test_a_bad_rank_name_exits_2_naming_the_ranks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOL_HOME", str(tmp_path))
    assert main(["slices", "add-rank", "famly"]) == 2
    err = capsys.readouterr().err
    assert "'famly' is not a rank; use one of kingdom, phylum, class, order, family" in err


@pytest.mark.e2e
def test_add_rank_publishes_every_family_in_one_run_and_the_catalog_once(synced: User) -> None:
    outcome = synced.tol("slices", "add-rank", "family", "--min-rows", "2")
    assert outcome.code == 0, outcome.text
    layout = synced.layout
    catalog = read_catalog(layout, CONFIG).to_pylist()
    families = [row for row in catalog if row["rank"] == "family"]
    assert len(families) > 20 and f"{len(families):,} family slices" in outcome.out
    files = sorted(p.path for p in mirror_of(layout.mirror_dir(CONFIG)))
    for row in families[:: max(1, len(families) // 8)]:
        where, params = to_sql_filter(parse_slice_key(row["name"]))
        expected = (
            duckdb.connect()
            .execute(
                f"SELECT list(uuid) FROM read_parquet(?) WHERE {where}",
                [[str(f) for f in files], *params],
            )
            .fetchone()[0]
        )
        assert set(pq.read_table(row["path"], columns=["uuid"])["uuid"].to_pylist()) == set(
            expected
        )
        assert row["rows"] == len(expected) >= 2 and row["sha256"] == sha256_file(Path(row["path"]))
    assert records.published_ranks(layout, CONFIG) == {"family": 2}
    built_at = {r["name"]: r["built_at"] for r in families}

    again = synced.tol("slices", "add-rank", "family")
    assert again.code == 0, again.text
    after = {r["name"]: r["built_at"] for r in read_catalog(layout, CONFIG).to_pylist()}
    assert {n: after[n] for n in built_at} == built_at, "nothing changed: nothing rebuilt"


def _renamed(column: str, old: str, new: str) -> Callable[[pa.Table], pa.Table]:
    """An upstream edit renaming `old` to `new` in `column` (the rows keep their order)."""

    def edit(table: pa.Table) -> pa.Table:
        values = pc.if_else(pc.equal(table[column], old), new, table[column])
        return table.set_column(table.schema.get_field_index(column), column, values)

    return edit


@pytest.mark.e2e
def test_add_rank_publishes_a_rank_whose_upstream_holds_values_no_key_names(user: User) -> None:
    """A family with a zero-width space and a genus holding a space: `add-rank` exits 0, says
    how many rows no slice holds, and every slice it published has its catalog row. Before,
    `add-rank family` exited 2 at that value every time, leaving slices without catalog rows."""
    paths = sorted(user.folder.glob("*.parquet"))
    table = pa.concat_tables(pq.read_table(p) for p in paths)
    families = sorted(set(table["family"].drop_null().to_pylist()))
    family = next(f for f in families if not any(o.startswith(f) and o != f for o in families))
    genus = table.filter(pc.is_valid(table["species"]))["genus"].drop_null()[0].as_py()
    for path in paths:
        edit_upstream(path, _renamed("family", family, family + "\u200b"))
        edit_upstream(path, _renamed("genus", genus, genus + " sedis"))
    assert user.sync().code == 0
    said = {"family": repr(family + "\u200b"), "species": "an epithet whose genus"}
    for rank, value in (("family", family + "\u200b"), ("species", genus + " sedis")):
        outcome = user.tol("slices", "add-rank", rank)
        assert outcome.code == 0, outcome.text
        assert " rows are in no slice" in outcome.text and said[rank] in outcome.text
        catalog = read_catalog(user.layout, CONFIG).to_pylist()
        names = {row["name"] for row in catalog if row["rank"] == rank}
        published = records.slice_records(user.layout, CONFIG)
        assert names and {r["name"] for r in published if r.get(RANK_PASS) == rank} == names
        assert not any(value in name for name in names)


def test_a_min_rows_below_one_typed_in_the_launchpad_fails_in_words(synced: User) -> None:
    """Dagster's launchpad takes any Int: `min_rows: 0` failed with pydantic's stack, which
    the exit codes took for the Hub client's ValidationError ("the Hub could not be reached",
    exit 3)."""
    settings = Settings.from_env()
    result = execute(
        load_code_location(settings).resolve_job_def(rank_slices_job_name(CONFIG)),
        instance=open_instance(settings),
        run_config={"ops": {rank_slices_op_name(CONFIG): {"config": {"min_rows": 0}}}},
        partition_key="family",
    )
    code, lines = exit_code(result)
    assert code == 2 and "run config min_rows: 0: give a whole number >= 1" in lines[0], lines


def test_a_partition_spelling_a_slice_another_way_is_refused_naming_its_key(
    synced: User,
) -> None:
    """Added by hand in the UI, `genus=…/kingdom=…` published a file under the canonical name
    that no catalog row named and no audit checked."""
    settings = Settings.from_env()
    instance = open_instance(settings)
    spelled = "genus=Morus/kingdom=Animalia"
    add_slice_partition(instance, CONFIG, spelled)
    result = execute(
        load_code_location(settings).resolve_job_def(slices_job_name(CONFIG)),
        instance=instance,
        partition_key=spelled,
    )
    code, lines = exit_code(result)
    assert code == 2, lines
    assert f"partition '{spelled}' spells slice 'kingdom=Animalia/genus=Morus' another" in lines[0]
    assert not list(synced.layout.slices_dir(CONFIG).glob("*.parquet"))


@pytest.mark.e2e
def test_the_audit_names_add_rank_for_a_drifted_rank_slice_which_add_rank_rebuilds(
    synced: User,
) -> None:
    """Before, the audit named `tol-dagster slice KEY` (which made the slice a partition of
    its own) and `slices add-rank` left it drifted: its record still matched its rows."""
    assert synced.tol("slices", "add-rank", "order").code == 0
    layout = synced.layout
    orders = {
        r["name"]: r for r in read_catalog(layout, CONFIG).to_pylist() if r["rank"] == "order"
    }
    drifted = Path(orders["order=Carnivora"]["path"])
    published = drifted.read_bytes()
    flip_a_byte(drifted)

    audited = synced.tol("audit")
    assert audited.code == 4, audited.text
    assert f"rebuild it with `tol-dagster slices add-rank order --config {CONFIG}`" in audited.text

    again = synced.tol("slices", "add-rank", "order")
    assert again.code == 0, again.text
    assert drifted.read_bytes() == published
    after = {r["name"]: r for r in read_catalog(layout, CONFIG).to_pylist() if r["rank"] == "order"}
    assert {n: r["built_at"] for n, r in after.items() if n != "order=Carnivora"} == {
        n: r["built_at"] for n, r in orders.items() if n != "order=Carnivora"
    }, "only the drifted slice rebuilt"
    assert "order=Carnivora" in after, "still a slice of the rank's pass"
    assert synced.tol("slices", "add-rank", "order").code == 0
    again_after = {r["name"]: r["built_at"] for r in read_catalog(layout, CONFIG).to_pylist()}
    assert again_after["order=Carnivora"] == after["order=Carnivora"]["built_at"], (
        "mended: not built again while the audit's last word still names it"
    )
    assert synced.tol("audit").code == 0


def test_a_resync_refreshes_declared_and_published_ranks_the_file_winning(
    tmp_path: Path,
) -> None:
    layout, path = Layout(tmp_path / "home"), tmp_path / "slices.yaml"
    path.write_text(yaml.safe_dump({"ranks": [{"rank": "genus", "min_rows": 7}]}))
    records.save_rank_state(layout, CONFIG, "family", 3)  # `add-rank family --min-rows 3`
    records.save_rank_state(layout, CONFIG, "genus", 2)
    assert ranks_to_refresh(layout, CONFIG, path) == {"family": 3, "genus": 7}
