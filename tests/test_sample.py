"""The sample generator: upstream's layout, schema, sort and parquet settings, and realistic rows."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SMALL_SAMPLE

from tol_dagster.devtools.sample import DEMO_SAMPLE, README_TAXA, build_sample
from tol_dagster.errors import SettingsError
from tol_dagster.hub.card import config_names, expected_rows, parse_card
from tol_dagster.schema import (
    DEFAULT_CONFIG,
    METADATA_COLUMNS,
    RANKS,
    SORT_KEY,
    STRING_COLUMNS,
    expected_schema,
    quote_ident,
)

TINY = {"rows": 1500, "files": 2, "seed": 3, "row_group_size": 400}
OTHER_CONFIG = "bioclip-2.5-vith14_float16"


def _files(out: Path, config: str = DEFAULT_CONFIG) -> list[Path]:
    return sorted((out / config).glob("*.parquet"))


def _metadata(out: Path, config: str = DEFAULT_CONFIG) -> pa.Table:
    return pa.concat_tables(
        pq.read_table(f, columns=list(METADATA_COLUMNS)) for f in _files(out, config)
    )


def _vectors(out: Path) -> tuple[np.ndarray, pa.Table]:
    table = pa.concat_tables(pq.read_table(f) for f in _files(out))
    emb = table.column("emb").combine_chunks()
    return emb.values.to_numpy().reshape(len(table), -1).astype(np.float32), table


def _taxon_sql(rank: str, value: str) -> str:
    """Rows of a README taxon; a binomial matches `Genus epithet` or the bare epithet."""
    if rank == "species" and " " in value:
        genus, epithet = value.split(" ", 1)
        return f"(species = '{value}' OR (genus = '{genus}' AND species = '{epithet}'))"
    return f"{quote_ident(rank)} = '{value}'"


def _spans(out: Path, row_group_size: int) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(rows, files, row groups) holding each README taxon."""
    glob = str(out / DEFAULT_CONFIG / "*.parquet")
    con = duckdb.connect()
    spans = {}
    for rank, value in README_TAXA:
        spans[rank, value] = con.execute(
            "SELECT count(*), count(DISTINCT filename), "
            f"count(DISTINCT (filename, file_row_number // {row_group_size})) "
            f"FROM read_parquet('{glob}', filename = true, file_row_number = true) "
            f"WHERE {_taxon_sql(rank, value)}"
        ).fetchone()
    return spans


def test_files_are_named_like_upstream_and_have_the_configs_exact_schema(
    small_sample: Path,
) -> None:
    files = _files(small_sample)
    assert [f.name for f in files] == [f"train-{i:05d}-of-00003.parquet" for i in range(3)]
    for path in files:
        assert pq.read_schema(path).remove_metadata() == expected_schema(DEFAULT_CONFIG)


def test_rows_are_sorted_bytewise_with_nulls_last_within_and_across_files(
    small_sample: Path,
) -> None:
    columns = pa.concat_tables(
        pq.read_table(f, columns=list(SORT_KEY)) for f in _files(small_sample)
    ).to_pydict()
    keys = [
        tuple((1, b"") if v is None else (0, v.encode()) for v in row)
        for row in zip(*(columns[c] for c in SORT_KEY), strict=True)
    ]
    assert keys == sorted(keys)
    # The check has teeth: NULLs sit mid-key and non-ASCII bytes sort after ASCII.
    assert any(row[RANKS.index("class") + 1] == (1, b"") and row[0] != (1, b"") for row in keys)


def test_files_hold_equal_rows_in_row_groups_of_the_requested_size(small_sample: Path) -> None:
    size = SMALL_SAMPLE["row_group_size"]
    counts = []
    for path in _files(small_sample):
        meta = pq.ParquetFile(path).metadata
        groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert all(n == size for n in groups[:-1]) and 0 < groups[-1] <= size
        counts.append(meta.num_rows)
    assert sum(counts) == SMALL_SAMPLE["rows"]
    assert max(counts) - min(counts) <= 1


def test_every_column_chunk_is_zstd_with_a_page_index_and_metadata_has_statistics(
    small_sample: Path,
) -> None:
    for path in _files(small_sample):
        meta = pq.ParquetFile(path).metadata
        names = [meta.schema.column(j).path.split(".")[0] for j in range(meta.num_columns)]
        for i in range(meta.num_row_groups):
            for j, name in enumerate(names):
                chunk = meta.row_group(i).column(j)
                assert chunk.compression == "ZSTD"
                assert chunk.has_offset_index, (path.name, i, name)
                if name in METADATA_COLUMNS:
                    assert chunk.has_column_index, (path.name, i, name)
                    assert chunk.is_stats_set, (path.name, i, name)


def test_the_same_arguments_give_the_same_bytes(tmp_path: Path) -> None:
    first, second, other_seed = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    build_sample(first, **TINY)
    build_sample(second, **TINY)
    build_sample(other_seed, **{**TINY, "seed": TINY["seed"] + 1})
    names = ["README.md", *(f"{DEFAULT_CONFIG}/{f.name}" for f in _files(first))]
    assert [(first / n).read_bytes() for n in names] == [(second / n).read_bytes() for n in names]
    assert (first / names[1]).read_bytes() != (other_seed / names[1]).read_bytes()


def test_files_and_row_group_size_change_the_layout_but_not_the_rows(tmp_path: Path) -> None:
    build_sample(tmp_path / "a", **TINY)
    build_sample(tmp_path / "b", **{**TINY, "files": 3, "row_group_size": 123})
    first, second = (pq.read_table(tmp_path / name / DEFAULT_CONFIG) for name in "ab")
    assert first.equals(second)
    assert len(_files(tmp_path / "b")) == 3


def test_a_second_config_holds_the_same_rows_in_the_same_order_and_joins_the_card(
    tmp_path: Path,
) -> None:
    out = tmp_path / "repo"
    build_sample(out, **TINY)
    report = build_sample(out, **TINY, config=OTHER_CONFIG)
    assert report.rows == TINY["rows"] and len(report.files) == TINY["files"]
    assert _metadata(out, OTHER_CONFIG).equals(_metadata(out, DEFAULT_CONFIG))
    assert pq.read_schema(report.files[0]).remove_metadata() == expected_schema(OTHER_CONFIG)
    card = parse_card((out / "README.md").read_text("utf-8"))
    assert sorted(config_names(card)) == sorted([DEFAULT_CONFIG, OTHER_CONFIG])
    assert expected_rows(card, DEFAULT_CONFIG) == expected_rows(card, OTHER_CONFIG) == TINY["rows"]
    paths = {c["config_name"]: c["data_files"][0]["path"] for c in card["configs"]}
    assert paths[OTHER_CONFIG] == f"{OTHER_CONFIG}/*.parquet"
    emb = pq.read_table(report.files[0], columns=["emb"]).column("emb").combine_chunks()
    norms = np.linalg.norm(emb.values.to_numpy().reshape(len(emb), -1).astype(np.float32), axis=1)
    assert np.allclose(norms, 1.0, atol=0.01)  # BioCLIP 2.5 vectors are unit-norm upstream


@pytest.mark.parametrize(
    ("change", "message"),
    [({"rows": 1600}, r"--rows 1500"), ({"seed": 4}, r"another --seed")],
    ids=["rows", "seed"],
)
def test_a_config_that_cannot_align_with_one_already_built_is_refused(
    tmp_path: Path, change: dict[str, int], message: str
) -> None:
    out = tmp_path / "repo"
    build_sample(out, **TINY)
    with pytest.raises(SettingsError, match=message):
        build_sample(out, **{**TINY, **change}, config=OTHER_CONFIG)
    assert not (out / OTHER_CONFIG).exists()


def test_rebuilding_with_fewer_files_removes_the_stale_ones(tmp_path: Path) -> None:
    out = tmp_path / "repo"
    build_sample(out, **TINY)
    build_sample(out, **{**TINY, "files": 1})
    assert [f.name for f in _files(out)] == ["train-00000-of-00001.parquet"]


@pytest.mark.parametrize(
    "arguments",
    [{"rows": 0}, {"files": 0}, {"rows": 2, "files": 3}, {"dim": 0}, {"row_group_size": 0}],
)
def test_impossible_arguments_are_settings_errors(
    tmp_path: Path, arguments: dict[str, int]
) -> None:
    with pytest.raises(SettingsError):
        build_sample(tmp_path, **{**TINY, **arguments})


def test_fixture_taxa_span_two_files_and_two_row_groups(small_sample: Path) -> None:
    spans = _spans(small_sample, SMALL_SAMPLE["row_group_size"])
    for taxon in [("family", "Felidae"), ("species", "Danaus plexippus")]:
        _, files, groups = spans[taxon]
        assert files >= 2 and groups >= 2, (taxon, spans[taxon])


def test_at_the_demo_size_every_readme_taxon_spans_two_files_and_two_row_groups(
    tmp_path: Path,
) -> None:
    # Placement depends on rows, files, seed and row-group size only: a narrow dim is enough.
    build_sample(tmp_path, **DEMO_SAMPLE, dim=4)
    for taxon, (rows, files, groups) in _spans(tmp_path, DEMO_SAMPLE["row_group_size"]).items():
        assert files >= 2 and groups >= 2, (taxon, rows, files, groups)


def test_the_sample_has_the_dirt_and_holes_of_the_real_data(small_sample: Path) -> None:
    con = duckdb.connect()
    con.register("t", _metadata(small_sample))

    def one(sql: str) -> object:
        return con.execute(sql).fetchone()[0]  # type: ignore[index]

    others = " AND ".join(f"{quote_ident(c)} IS NULL" for c in STRING_COLUMNS)
    hex_rows = one(r"SELECT count(*) FROM t WHERE regexp_full_match(uuid, '[0-9a-f]{32}')")
    assert hex_rows > 0
    assert (
        one(rf"SELECT count(*) FROM t WHERE regexp_full_match(uuid, '[0-9a-f]{{32}}') AND {others}")
        == hex_rows
    )
    v4 = "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
    assert one(f"SELECT count(*) FROM t WHERE NOT regexp_full_match(uuid, '{v4}')") == hex_rows
    lower = " AND ".join(f"{quote_ident(c)} IS NULL" for c in RANKS[1:])
    assert one(f"SELECT count(*) FROM t WHERE kingdom = 'incertae sedis' AND {lower}") > 0
    assert (
        one("SELECT count(*) FROM t WHERE kingdom = 'incertae sedis' AND phylum IS NOT NULL") == 0
    )
    assert one('SELECT count(*) FROM t WHERE class IS NULL AND "order" IS NOT NULL') > 0
    assert (
        one(
            "SELECT count(*) FROM t WHERE class IN ('Squamata', 'Testudines') AND \"order\" IS NULL"
        )
        > 0
    )
    assert one("SELECT count(*) FROM t WHERE species IS NULL AND genus IS NOT NULL") > 0
    assert (
        one("SELECT count(*) FROM t WHERE species IS NULL AND scientific_name LIKE 'BOLD:A%'") > 0
    )
    assert one("SELECT count(*) FROM t WHERE species LIKE '% %'") > 0
    assert one("SELECT count(DISTINCT kingdom) FROM t WHERE genus = 'Morus'") >= 2
    names = "concat_ws('|', scientific_name, common_name, publisher)"
    for pattern in ["'", '"', "(", ","]:
        assert one(f"SELECT count(*) FROM t WHERE contains({names}, $${pattern}$$)") > 0, pattern
    assert one(f"SELECT count(*) FROM t WHERE regexp_matches({names}, '[^\\x00-\\x7F]')") > 0
    for column in ["basisOfRecord", "img_type", "publisher"]:
        assert (
            one(
                f"SELECT count(*) FROM t WHERE {column} IS NOT NULL AND source_dataset IS DISTINCT FROM 'gbif'"
            )
            == 0
        )
    shares = dict(
        con.execute("SELECT source_dataset, count(*) / 6000 FROM t GROUP BY ALL").fetchall()
    )
    assert shares["gbif"] > 0.9 and 0.01 < shares["eol"] < 0.05 and 0.01 < shares["bioscan"] < 0.05
    kingdoms = dict(con.execute("SELECT kingdom, count(*) / 6000 FROM t GROUP BY ALL").fetchall())
    assert 0.4 < kingdoms["Animalia"] < 0.56 and 0.38 < kingdoms["Plantae"] < 0.52
    assert 0.2 < one("SELECT avg((common_name IS NULL)::int) FROM t") < 0.38  # type: ignore[operator]
    assert one("SELECT avg((publisher = 'iNaturalist.org')::int) FROM t") > 0.5  # type: ignore[operator]


def test_taxa_have_zipf_like_tails_at_every_rank(small_sample: Path) -> None:
    con = duckdb.connect()
    con.register("t", _metadata(small_sample))
    for rank in ["order", "family", "genus"]:
        sizes = [n for (n,) in con.execute(
            f"SELECT count(*) n FROM t WHERE {quote_ident(rank)} IS NOT NULL GROUP BY {quote_ident(rank)} ORDER BY n DESC"
        ).fetchall()]  # fmt: skip
        assert sizes[0] > 15 * np.median(sizes), rank  # a few huge groups, a long small tail
        assert sum(n < 5 for n in sizes) > len(sizes) / 5, rank


def test_embeddings_have_bioclip2_norms_and_nested_cosine_structure(small_sample: Path) -> None:
    vectors, table = _vectors(small_sample)
    norms = np.linalg.norm(vectors, axis=1)
    assert norms.min() >= 36 and norms.max() <= 70 and 45 < norms.mean() < 53
    assert -8.0 < vectors.mean(axis=0).min() < -6.5  # the large shared offset in one dimension
    unit = vectors / norms[:, None]
    columns = table.select(["family", "genus", "species"]).to_pydict()
    groups: dict[str, dict[tuple[str, ...], list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, (family, genus, species) in enumerate(zip(*columns.values(), strict=True)):
        if family and genus and species:
            groups["species"][family, genus, species].append(i)
            groups["genus"][family, genus].append(i)

    def mean_cosine(pairs: list[tuple[int, int]]) -> float:
        left, right = np.array(pairs).T
        return float(np.mean(np.sum(unit[left] * unit[right], axis=1)))

    same_species = [(m[k], m[k + 1]) for m in groups["species"].values() for k in range(len(m) - 1)]
    species_of = {i: key for key, members in groups["species"].items() for i in members}
    same_genus = [
        (a, b)
        for members in groups["genus"].values()
        for a, b in zip(members, members[::-1], strict=True)
        if species_of[a] != species_of[b]
    ]
    rng = np.random.default_rng(0)
    random_pairs = [tuple(p) for p in rng.integers(0, len(unit), (5000, 2)) if p[0] != p[1]]
    assert len(same_species) > 1000 and len(same_genus) > 200
    species, genus, random = (
        mean_cosine(same_species),
        mean_cosine(same_genus),
        mean_cosine(random_pairs),
    )
    assert species > genus + 0.04 > random + 0.1, (species, genus, random)
    assert 0.5 < random < 0.7 and species > 0.85


def test_the_card_declares_the_config_with_its_row_count(small_sample: Path) -> None:
    text = (small_sample / "README.md").read_text("utf-8")
    card = parse_card(text)
    assert config_names(card) == [DEFAULT_CONFIG]
    assert expected_rows(card, DEFAULT_CONFIG) == SMALL_SAMPLE["rows"]
    assert re.search(r"generated", text, re.IGNORECASE)
