"""Embedding integrity, unit by unit: row digests, the digest tables the gate keeps, the
comparison with the last validated generation, and the per-row bounds of the contract."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tol_dagster.devtools.sample import build_sample
from tol_dagster.errors import StoreError
from tol_dagster.schema import DEFAULT_CONFIG, EMB_BOUNDS, emb_bounds, expected_schema
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.validation import chunk_crcs
from tol_dagster.validation.checks import EMB_NORMS_WITHIN_BOUNDS, EMB_UNCHANGED_FOR_EXISTING_UUIDS
from tol_dagster.validation.emb_digests import (
    NULL_DIGEST,
    compute_table,
    digests_path,
    emb_matrix,
    ensure_table,
    row_digests,
)
from tol_dagster.validation.emb_unchanged import check_emb_unchanged
from tol_dagster.validation.file_facts import FileFacts, inspect_file
from tol_dagster.validation.uuid_index import stable_order, uuid_row_hashes

CONFIG = DEFAULT_CONFIG


def sample_file(small_sample: Path, index: int = 0) -> Path:
    return sorted((small_sample / CONFIG).glob("*.parquet"))[index]


def write(table: pa.Table, path: Path) -> Path:
    pq.write_table(table, path, row_group_size=500, compression="zstd")
    return path


def with_emb(table: pa.Table, matrix: np.ndarray) -> pa.Table:
    """`table` with `emb` replaced by the rows of `matrix` (float16), everything else kept."""
    dim = table.schema.field("emb").type.list_size
    flat = pa.array(np.ascontiguousarray(matrix, np.float16).reshape(-1), pa.float16())
    emb = pa.FixedSizeListArray.from_arrays(flat, dim)
    return table.set_column(table.schema.get_field_index("emb"), "emb", emb)


def flip_bit(table: pa.Table, row: int, element: int, bit: int) -> pa.Table:
    matrix = emb_matrix(table.column("emb")).copy()  # type: ignore[union-attr]
    matrix.view(np.uint16)[row, element] ^= np.uint16(1 << bit)
    return with_emb(table, matrix)


def inspect(path: Path, **options: object) -> FileFacts:
    return inspect_file(
        path,
        **{  # type: ignore[arg-type]
            "expected_sha256": None,
            "actual_sha256": None,
            "expected_schema": expected_schema(CONFIG),
            **options,
        },
    )


def result(facts: FileFacts, check: str) -> object:
    found = facts.result(check)
    assert found is not None, f"{check} not reported"
    return found


# --- digests ----------------------------------------------------------------------------------


def test_every_single_bit_flip_of_a_row_changes_its_digest_and_nothing_else() -> None:
    rng = np.random.default_rng(5)
    row = (rng.standard_normal(768) * 2).astype(np.float16)
    flips = np.repeat(row.view(np.uint16)[None, :], 768 * 16, axis=0)
    element, bit = np.divmod(np.arange(768 * 16), 16)
    flips[np.arange(flips.shape[0]), element] ^= (1 << bit).astype(np.uint16)

    original = row_digests(row[None, :])[0]
    flipped = row_digests(flips.view(np.float16))

    assert (flipped != original).all()
    assert np.unique(flipped).size == flipped.size
    assert row_digests(row[None, :].copy())[0] == original, "a digest depends on bytes alone"


def test_the_digest_tables_order_is_a_stable_sorts_with_or_without_equal_hashes() -> None:
    """Equal hashes (a 64-bit collision, or many, drawn from few values) keep their rows'
    order: the table's bytes are the same whichever sort numpy picks."""
    rng = np.random.default_rng(9)
    for values in (2**64 - 1, 2**64 - 1, 50, 3, 1):
        for size in (0, 1, 2, 17, 5000):
            hashes = rng.integers(0, values, size, dtype=np.uint64, endpoint=True)
            expected = np.argsort(hashes, kind="stable")
            assert np.array_equal(stable_order(hashes), expected), (values, size)


def test_emb_matrix_honours_slices_and_nulls() -> None:
    values = np.arange(12, dtype=np.float16)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(values, pa.float16()), 3)
    sliced = emb.slice(1, 2)

    matrix = emb_matrix(sliced)

    assert matrix is not None and matrix.tolist() == [[3, 4, 5], [6, 7, 8]]
    assert (row_digests(matrix) == row_digests(emb_matrix(emb))[1:3]).all()  # type: ignore[arg-type]
    assert emb_matrix(pa.array([[1.0]], pa.list_(pa.float32(), 1))) is not None
    assert emb_matrix(pa.array([["a"]], pa.list_(pa.string(), 1))) is None
    with_null = row_digests(matrix, np.array([True, False]))
    assert with_null[1] == NULL_DIGEST and with_null[0] == row_digests(matrix)[0]
    zeros = np.zeros((1, 3), np.float16)
    assert row_digests(zeros)[0] != NULL_DIGEST  # a NULL never passes for a zero vector


def test_the_gates_digest_table_equals_one_computed_apart(
    small_sample: Path, tmp_path: Path
) -> None:
    """The digests come from the gate's pass over `emb`, the uuid hashes from its metadata read:
    aligned row by row, they equal a table computed from uuid and emb read together."""
    path = sample_file(small_sample)
    kept = tmp_path / "digests.npy"

    inspect(path, emb_digests_path=kept)

    table = np.load(kept)
    assert table.shape == (3, pq.ParquetFile(path).metadata.num_rows)
    assert (table == compute_table(path)).all()
    assert (np.diff(table[0].astype(np.float64)) >= 0).all(), "sorted by uuid hash"
    assert sorted(table[2].tolist()) == list(range(table.shape[1])), "each row's place, once"
    uuids = pq.read_table(path, columns=["uuid"])["uuid"]
    assert (uuid_row_hashes(uuids)[table[2].astype(np.int64)] == table[0]).all()


@pytest.mark.parametrize("sha256_known", [False, True], ids=["hashed-by-the-gate", "known"])
def test_the_gates_chunk_crcs_are_those_of_each_row_groups_uuid_and_emb_chunks(
    small_sample: Path, tmp_path: Path, sha256_known: bool
) -> None:
    """Taken from the gate's own reads, whether it hashes the file or the download did."""
    path = sample_file(small_sample)
    kept = tmp_path / "crcs.npy"

    inspect(path, actual_sha256=sha256_file(path) if sha256_known else None, chunk_crcs_path=kept)

    table = chunk_crcs.load(kept)
    metadata = pq.read_metadata(path)
    assert table.shape == (metadata.num_row_groups, 2, 3)
    data = path.read_bytes()
    for group in range(metadata.num_row_groups):
        for column, (offset, length, crc) in zip(
            ("uuid", "emb"), table[group].tolist(), strict=True
        ):
            assert chunk_crcs.chunk_range(metadata.row_group(group), column) == (offset, length)
            assert zlib.crc32(data[offset : offset + length]) == crc
    assert (table == chunk_crcs.compute(MirrorFile(path.name, sha256_file(path), path))).all()


def test_the_crc_of_a_byte_range_is_zlibs_across_read_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`crc_of` (what a slice's copied chunk is proven by) gives zlib's crc32 of the range,
    continued across its reads, and None for a range the file ends inside."""
    monkeypatch.setattr(chunk_crcs, "BLOCK", 1000)
    data = np.random.default_rng(3).integers(0, 256, 10_000, dtype=np.uint8).tobytes()
    path = tmp_path / "bytes.bin"
    path.write_bytes(data)
    with open(path, "rb") as handle:
        for offset, length in [(0, 0), (0, 1), (7, 999), (7, 1000), (13, 5_987), (0, 10_000)]:
            crc = chunk_crcs.crc_of(handle, offset, length)
            assert crc == zlib.crc32(data[offset : offset + length]), (offset, length)
        assert chunk_crcs.crc_of(handle, 9_000, 1_001) is None


def test_chunk_crcs_computed_for_an_older_mirror_are_of_the_verified_bytes_only(
    small_sample: Path, tmp_path: Path
) -> None:
    """A mirror the gate validated before the crcs were kept: they are taken from a read that
    re-hashes the file, and refused for bytes that changed since it was verified."""
    layout = Layout(tmp_path / "home")
    source = sample_file(small_sample)
    file = MirrorFile(source.name, sha256_file(source), tmp_path / source.name)
    data = bytearray(source.read_bytes())
    data[len(data) // 2] ^= 0x01
    file.path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"no longer has the sha256.*tol-dagster sync"):
        chunk_crcs.ensure(file, layout, CONFIG)
    assert not chunk_crcs.crcs_path(layout, CONFIG, file).exists()
    file.path.write_bytes(source.read_bytes())
    assert chunk_crcs.ensure(file, layout, CONFIG)
    assert not chunk_crcs.ensure(file, layout, CONFIG)  # kept: not computed again
    assert (
        chunk_crcs.load(chunk_crcs.crcs_path(layout, CONFIG, file)) == chunk_crcs.compute(file)
    ).all()


# --- the comparison with the last validated generation ----------------------------------------


def _file(layout: Layout, path: Path) -> MirrorFile:
    file = MirrorFile(path.name, sha256_file(path), path)
    ensure_table(file, layout, CONFIG)
    return file


def test_one_mantissa_bit_of_one_existing_row_is_refused_naming_the_uuid(
    small_sample: Path, tmp_path: Path
) -> None:
    layout = Layout(tmp_path / "home")
    source = sample_file(small_sample, 1)
    table = pq.read_table(source)
    old = _file(layout, source)
    new = _file(layout, write(flip_bit(table, 123, 40, 0), tmp_path / source.name))
    uuid = table.column("uuid")[123].as_py()

    refused = check_emb_unchanged([old], [new], layout=layout, config=CONFIG, accepted=False)
    accepted = check_emb_unchanged([old], [new], layout=layout, config=CONFIG, accepted=True)

    assert refused.check == EMB_UNCHANGED_FOR_EXISTING_UUIDS
    assert not refused.passed
    assert f"uuid {uuid!r} (row 123" in refused.message and source.name in refused.message
    assert refused.message.startswith("1 rows of uuids")
    assert "--accept-emb-change" in refused.message
    assert refused.details["changed"] == [
        {"uuid": uuid, "file": source.name, "row": 123, "old_file": source.name, "old_row": 123}
    ]
    assert accepted.passed and accepted.message.startswith("accepted (--accept-emb-change)")


def test_rows_moved_dropped_or_added_with_their_bytes_pass(
    small_sample: Path, tmp_path: Path
) -> None:
    """Only a changed vector counts: rows moving between files, dropped rows and new uuids
    are other checks' business."""
    layout = Layout(tmp_path / "home")
    first, second = sample_file(small_sample, 0), sample_file(small_sample, 1)
    a, b = pq.read_table(first), pq.read_table(second)
    fresh = b.slice(0, 10).set_column(0, "uuid", pa.array([f"{i:032x}" for i in range(10)]))
    moved = pa.concat_tables([a.slice(100), b.slice(0, 50), fresh])  # 100 rows dropped
    old = [_file(layout, first), _file(layout, second)]
    new = [_file(layout, write(moved, tmp_path / first.name))]

    outcome = check_emb_unchanged(old, new, layout=layout, config=CONFIG, accepted=False)

    assert outcome.passed, outcome.message
    assert outcome.details["existing_uuids_compared"] == a.num_rows - 100 + 50


def test_hash_ranges_give_the_same_verdict_as_one_pass(small_sample: Path, tmp_path: Path) -> None:
    layout = Layout(tmp_path / "home")
    source = sample_file(small_sample, 2)
    table = pq.read_table(source)
    changed = flip_bit(flip_bit(table, 7, 0, 9), 1999, 767, 3)
    old = _file(layout, source)
    new = _file(layout, write(changed, tmp_path / source.name))

    verdicts = [
        check_emb_unchanged(
            [old], [new], layout=layout, config=CONFIG, accepted=False, max_group_rows=size
        )
        for size in (10**9, 300)
    ]

    assert [v.passed for v in verdicts] == [False, False]
    assert [v.details["digest_mismatches"] for v in verdicts] == [2, 2]
    assert [c["row"] for c in verdicts[1].details["changed"]] == [7, 1999]


def test_digests_missing_from_the_cache_are_computed(small_sample: Path, tmp_path: Path) -> None:
    """A mirror validated before digests existed: its files' tables are built on demand."""
    layout = Layout(tmp_path / "home")
    source = sample_file(small_sample, 0)
    old = MirrorFile(source.name, sha256_file(source), source)
    new = _file(layout, write(flip_bit(pq.read_table(source), 0, 0, 15), tmp_path / source.name))
    assert not digests_path(layout, CONFIG, old).exists()

    outcome = check_emb_unchanged([old], [new], layout=layout, config=CONFIG, accepted=False)

    assert not outcome.passed
    assert outcome.details["computed"] == [source.name]


# --- bounds ------------------------------------------------------------------------------------


def test_the_sample_generator_writes_rows_inside_the_bounds(
    small_sample: Path, tmp_path: Path
) -> None:
    unit = "bioclip-2.5-vith14_float16"
    build_sample(tmp_path / "unit", rows=1500, files=1, seed=3, config=unit)
    for config, folder in ((CONFIG, small_sample), (unit, tmp_path / "unit")):
        for path in sorted((folder / config).glob("*.parquet")):
            facts = inspect_file(
                path,
                expected_sha256=None,
                actual_sha256=None,
                expected_schema=expected_schema(config),
                emb_bounds=emb_bounds(config),
            )
            outcome = facts.result(EMB_NORMS_WITHIN_BOUNDS)
            assert outcome is not None and outcome.passed, outcome
            low, high = outcome.details["norm_range_seen"]
            assert EMB_BOUNDS[config].norm_min < low <= high < EMB_BOUNDS[config].norm_max


def test_rows_outside_the_bounds_are_named_by_file_row_uuid_and_value(
    small_sample: Path, tmp_path: Path
) -> None:
    table = pq.read_table(sample_file(small_sample))
    matrix = emb_matrix(table.column("emb")).astype(np.float32)  # type: ignore[union-attr]
    matrix[10] *= 4.0  # norm ~200
    matrix[20] *= 0.2  # norm ~10
    matrix[30, 5] = 60.0  # one element past max |x|
    matrix[40, 0] = np.nan  # emb_finite's, not this check's
    path = write(with_emb(table, matrix), tmp_path / "bad.parquet")

    outcome = inspect(path, emb_bounds=emb_bounds(CONFIG)).result(EMB_NORMS_WITHIN_BOUNDS)

    assert outcome is not None and not outcome.passed
    assert outcome.message.startswith("bad.parquet: 3 rows have emb outside L2 norm 18-140")
    for row in (10, 20, 30):
        assert f"row {row} (uuid {table.column('uuid')[row].as_py()!r})" in outcome.message
    assert [r["row"] for r in outcome.details["outside"]] == [10, 20, 30]
    assert outcome.details["outside"][2]["max_abs"] == pytest.approx(60.0)
    assert outcome.details["outside"][0]["norm"] > 140


def test_no_bounds_pinned_passes_with_a_note(small_sample: Path) -> None:
    outcome = inspect(sample_file(small_sample)).result(EMB_NORMS_WITHIN_BOUNDS)

    assert outcome is not None and outcome.passed
    assert "no emb bounds pinned" in outcome.message
