"""A file's sums per lineage read from `emb`'s pages equal DuckDB's bit for bit, however the pages
cut the runs, and what the pages cannot hold (NULL rows, another list type) still sums, through
DuckDB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mirror_testing import sample_mirror

from tol_dagster.derived import lineage_sums
from tol_dagster.derived.lineage_sums import duckdb_sums, file_sums
from tol_dagster.derived.sorted_runs import run_starts
from tol_dagster.schema import RANKS, STRING_COLUMNS, config_dim
from tol_dagster.validation.emb_digests import emb_pages

DIM = config_dim("bioclip-2_float16")


def _refuse(path: Path, *args: object) -> pa.Table:
    raise AssertionError(f"{path} was read by DuckDB, not from its pages")


@pytest.fixture(scope="module")
def files(small_sample: Path) -> list[Path]:
    return [file.path for file in sample_mirror(small_sample)]


def _rewritten(source: Path, out: Path, table: pa.Table | None = None, **options: object) -> Path:
    """`source`'s rows (or `table`) written as upstream writes them, with `options` on top."""
    pq.write_table(
        pq.read_table(source) if table is None else table,
        out,
        compression="zstd",
        write_page_index=True,
        use_dictionary=list(STRING_COLUMNS),
        **options,  # type: ignore[arg-type]
    )
    return out


def test_page_sums_equal_duckdbs_bit_for_bit(
    files: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = [duckdb_sums(path, DIM) for path in files]
    monkeypatch.setattr(lineage_sums, "duckdb_sums", _refuse)
    recurring = 0
    for path, want in zip(files, expected, strict=True):
        got = file_sums(path, DIM)
        assert got.equals(want), path.name
        assert _as_dict(got) == _numpy_sums(pq.read_table(path))
        recurring += len(run_starts(pq.read_table(path, columns=list(RANKS)), RANKS))
        recurring -= got.num_rows
    assert recurring > 0, "the sample must hold a lineage in two source datasets of one file"


def test_pages_of_a_few_rows_cut_runs_and_still_sum_exactly(
    files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = {"data_page_size": 4096, "row_group_size": 300}  # halves of 4 and 3 row groups
    path = _rewritten(files[0], tmp_path / "small-pages.parquet", **small)
    pages = emb_pages(path, pq.ParquetFile(path))
    assert pages is not None and len(list(pages)) > pq.read_metadata(path).num_rows // 4
    want = duckdb_sums(path, DIM)
    monkeypatch.setattr(lineage_sums, "duckdb_sums", _refuse)
    got = file_sums(path, DIM)
    assert got.equals(want)
    assert got.equals(file_sums(files[0], DIM))  # same rows, other pages: same sums


def _with_null_emb(source: Path, rows: list[int]) -> pa.Table:
    table = pq.read_table(source)
    emb = table["emb"].combine_chunks()
    mask = np.zeros(len(emb), dtype=bool)
    mask[rows] = True
    nulled = pa.FixedSizeListArray.from_arrays(emb.values, DIM, mask=pa.array(mask))
    return table.set_column(table.schema.get_field_index("emb"), "emb", nulled)


def _numpy_sums(table: pa.Table) -> dict[tuple[str | None, ...], tuple[int, list[float]]]:
    """Each lineage's count and float64 sum of its rows with an `emb`, row by row in order."""
    sums: dict[tuple[str | None, ...], tuple[int, np.ndarray]] = {}
    for row in table.filter(table["emb"].is_valid()).to_pylist():
        key = tuple(row[rank] for rank in RANKS)
        count, total = sums.get(key, (0, np.zeros(len(row["emb"]))))
        sums[key] = (count + 1, total + np.asarray(row["emb"], np.float32))
    return {key: (count, total.tolist()) for key, (count, total) in sums.items()}


def _as_dict(sums: pa.Table) -> dict[tuple[str | None, ...], tuple[int, list[float]]]:
    return {
        tuple(row[rank] for rank in RANKS): (row["images"], row["sum"]) for row in sums.to_pylist()
    }


def test_null_rows_are_left_out_through_duckdb(files: list[Path], tmp_path: Path) -> None:
    table = _with_null_emb(files[0], [0, 7, 1999])
    path = _rewritten(files[0], tmp_path / "nulls.parquet", table)
    got = file_sums(path, DIM)
    assert got.equals(duckdb_sums(path, DIM))
    assert _as_dict(got) == _numpy_sums(table)
    assert got["images"].to_numpy().sum() == table.num_rows - 3


def test_a_variable_list_is_summed_through_duckdb_and_its_width_checked(
    files: list[Path], tmp_path: Path
) -> None:
    table = pq.read_table(files[1])
    emb = table["emb"].combine_chunks()
    listed = pa.ListArray.from_arrays(
        pa.array(np.arange(len(emb) + 1, dtype=np.int32) * DIM), emb.values
    )
    variable = table.set_column(table.schema.get_field_index("emb"), "emb", listed)
    path = _rewritten(files[1], tmp_path / "list.parquet", variable)
    assert file_sums(path, DIM).equals(file_sums(files[1], DIM))
    with pytest.raises(ValueError, match=f"{path}: its embeddings are not 512 values wide"):
        file_sums(path, 512)


@pytest.mark.parametrize("value_type", [pa.float32(), pa.float64()])
def test_wider_floats_sum_as_duckdb_sums_them_as_float32(
    files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value_type: pa.DataType
) -> None:
    table = pq.read_table(files[2])
    values = table["emb"].combine_chunks().values.to_numpy().astype(np.float64)
    values += np.linspace(0, 1e-6, len(values))  # float64 digits that float32 rounds away
    wide = pa.FixedSizeListArray.from_arrays(pa.array(values).cast(value_type), DIM)
    single = table.set_column(table.schema.get_field_index("emb"), "emb", wide)
    path = _rewritten(files[2], tmp_path / "wide.parquet", single, data_page_size=1 << 16)
    want = duckdb_sums(path, DIM)
    with monkeypatch.context() as patched:
        patched.setattr(lineage_sums, "duckdb_sums", _refuse)
        got = file_sums(path, DIM)
    assert got.drop_columns(["sum"]).equals(want.drop_columns(["sum"]))
    np.testing.assert_allclose(
        np.stack(got["sum"].to_numpy(zero_copy_only=False)),
        np.stack(want["sum"].to_numpy(zero_copy_only=False)),
        rtol=1e-12,
    )
    assert _as_dict(file_sums(files[2], DIM)).keys() == _as_dict(got).keys()


@pytest.mark.parametrize("width", [8, 12, 24])
def test_a_width_whose_pages_are_not_read_in_place_goes_to_duckdb_at_once(
    files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    table = pq.read_table(files[0])
    values = table["emb"].combine_chunks().values.to_numpy().reshape(-1, DIM)[:, :width]
    emb = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), width)
    narrow = table.set_column(table.schema.get_field_index("emb"), "emb", emb)
    path = _rewritten(files[0], tmp_path / f"width-{width}.parquet", narrow)
    assert (emb_pages(path, pq.ParquetFile(path)) is None) == (width != 24)
    if width != 24:
        monkeypatch.setattr(lineage_sums, "_page_sums", _refuse)  # no work done twice
    else:
        monkeypatch.setattr(lineage_sums, "duckdb_sums", _refuse)
    got = file_sums(path, width)
    assert _as_dict(got) == _numpy_sums(narrow)


def test_lineages_out_of_order_across_source_datasets_keep_their_own_sums(
    files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = pq.read_table(files[0]).slice(0, 40)
    kingdoms = ["Zeta"] * 20 + ["Alpha"] * 20  # one lineage a source: sorted, they swap
    for name, values in [("source_dataset", ["a"] * 20 + ["b"] * 20), ("kingdom", kingdoms)]:
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(values))
    for rank in RANKS[1:]:
        table = table.set_column(
            table.schema.get_field_index(rank), rank, pa.nulls(40, pa.string())
        )
    path = _rewritten(files[0], tmp_path / "swapped.parquet", table)
    want = duckdb_sums(path, DIM)
    monkeypatch.setattr(lineage_sums, "duckdb_sums", _refuse)
    got = file_sums(path, DIM)
    assert got["kingdom"].to_pylist() == ["Alpha", "Zeta"]
    assert got.equals(want)
    assert _as_dict(got) == _numpy_sums(table)
