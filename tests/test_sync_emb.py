"""Embedding integrity and the re-hashed sha256, end to end: `tol-dagster sync` through Dagster,
the real `huggingface_hub` client, the local Hub."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from resync_testing import (
    CONFIG,
    User,
    dagster_home,
    edit_upstream,
    file_names,
    mirror_view,
    replace_upstream,
    set_card_rows,
    synced,
    synced_home,
    upstream_files,
    upstream_rows,
    user,
    write_upstream,
)

from tol_dagster.hub.client import HubClient
from tol_dagster.resync.facts import file_facts
from tol_dagster.store.hashing import sha256_file
from tol_dagster.store.layout import Layout
from tol_dagster.validation.emb_digests import emb_matrix

__all__ = ["dagster_home", "synced", "synced_home", "user"]  # fixtures, imported to be found

FLIPS = 20
FLIP_SEED = 20261203


def with_emb(table: pa.Table, matrix: np.ndarray) -> pa.Table:
    dim = table.schema.field("emb").type.list_size
    flat = pa.array(np.ascontiguousarray(matrix, np.float16).reshape(-1), pa.float16())
    emb = pa.FixedSizeListArray.from_arrays(flat, dim)
    return table.set_column(table.schema.get_field_index("emb"), "emb", emb)


def flip_mantissa_bit(row: int, element: int) -> object:
    def edit(table: pa.Table) -> pa.Table:
        matrix = emb_matrix(table.column("emb")).copy()  # type: ignore[union-attr]
        matrix.view(np.uint16)[row, element] ^= np.uint16(1)
        return with_emb(table, matrix)

    return edit


def emb_page_ranges(path: Path) -> list[tuple[int, int]]:
    """Byte ranges [start, end) of the `emb` column chunks' data pages (headers included),
    from the footer's column metadata."""
    metadata = pq.ParquetFile(path).metadata
    [column] = [
        i
        for i in range(metadata.num_columns)
        if metadata.schema.column(i).path.split(".")[0] == "emb"
    ]
    ranges = []
    for group in range(metadata.num_row_groups):
        chunk = metadata.row_group(group).column(column)
        first = chunk.dictionary_page_offset if chunk.has_dictionary_page else None
        start = first if first is not None else chunk.data_page_offset
        ranges.append((chunk.data_page_offset, start + chunk.total_compressed_size))
    return ranges


def random_offsets(ranges: list[tuple[int, int]], count: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    spans = np.array([end - start for start, end in ranges])
    chosen = rng.choice(int(spans.sum()), size=count, replace=False)
    starts = np.cumsum([0, *spans[:-1].tolist()])
    offsets = []
    for position in sorted(chosen.tolist()):
        index = int(np.searchsorted(starts, position, side="right")) - 1
        offsets.append(ranges[index][0] + position - int(starts[index]))
    return offsets


@pytest.mark.e2e  # 20 resyncs through Dagster: over a minute on a shared machine
def test_bytes_flipped_inside_emb_pages_are_refused_or_proven_value_preserving(
    synced: User,
) -> None:
    """The attack that passed before: one byte flipped inside `emb` pages of an upstream file,
    a new commit each time. Each sync refuses it (exit 1, the mirror untouched) or publishes a
    file whose decoded rows equal the original's: nothing changed is ever published."""
    name = file_names(synced.root)[1]
    path = synced.folder / name
    original = path.read_bytes()
    original_table = pq.read_table(path)
    offsets = random_offsets(emb_page_ranges(path), FLIPS, FLIP_SEED)
    masks = np.random.default_rng(FLIP_SEED + 1).integers(1, 256, FLIPS).tolist()
    verdicts: dict[str, int] = {}
    for offset, mask in zip(offsets, masks, strict=True):
        flipped = bytearray(original)
        flipped[offset] ^= mask
        replace_upstream(path, lambda temp, data=bytes(flipped): temp.write_bytes(data))
        before = mirror_view(synced.layout)

        outcome = synced.sync()

        if outcome.code == 0:
            published = pq.read_table(synced.layout.mirror_dir(CONFIG) / name)
            assert published.equals(original_table), f"offset {offset}: changed rows published"
            verdicts["value-preserving"] = verdicts.get("value-preserving", 0) + 1
        else:
            assert outcome.code == 1, f"offset {offset}: {outcome.text}"
            assert "the gate refused" in outcome.err, outcome.err
            assert mirror_view(synced.layout) == before, f"offset {offset}: mirror changed"
            verdicts["refused"] = verdicts.get("refused", 0) + 1
    assert sum(verdicts.values()) == FLIPS
    assert verdicts.get("refused", 0) > 0, verdicts


def test_one_mantissa_bit_of_an_existing_row_is_refused_until_accepted(synced: User) -> None:
    before = mirror_view(synced.layout)
    name = file_names(synced.root)[1]
    uuid = pq.read_table(synced.folder / name, columns=["uuid"]).column("uuid")[123].as_py()
    edit_upstream(synced.folder / name, flip_mantissa_bit(123, 40))  # type: ignore[arg-type]

    refused = synced.sync()

    assert refused.code == 1, refused.text
    [said] = [
        line
        for line in refused.err.splitlines()
        if "check emb_unchanged_for_existing_uuids failed" in line
    ]
    assert f"{name}: uuid {uuid!r} (row 123" in said and "1 rows" in said, said
    assert "--accept-emb-change" in said
    assert mirror_view(synced.layout) == before

    synced.reset_counts()
    accepted = synced.sync("--accept-emb-change")

    assert accepted.code == 0, accepted.text
    assert synced.requests()["lfs_get"] == 0, "the file that passed every other check stays staged"
    assert mirror_view(synced.layout).sha256s == upstream_files(synced.root)


def test_a_new_row_with_an_implausible_norm_is_refused(synced: User) -> None:
    before = mirror_view(synced.layout)
    last = pq.read_table(synced.folder / file_names(synced.root)[-1])
    tail = last.slice(last.num_rows - 5)  # the same keys as the end of the last file: still sorted
    tail = tail.set_column(0, "uuid", pa.array([f"{i:032x}" for i in range(tail.num_rows)]))
    matrix = emb_matrix(tail.column("emb")).astype(np.float32)  # type: ignore[union-attr]
    matrix[2] *= 4.0
    new = "train-00003-of-00003.parquet"
    write_upstream(synced.folder / new, with_emb(tail, matrix))
    set_card_rows(synced.root, upstream_rows(synced.root))

    refused = synced.sync()

    assert refused.code == 1, refused.text
    [said] = [
        line for line in refused.err.splitlines() if "check emb_norms_within_bounds failed" in line
    ]
    assert f"{new}: 1 rows have emb outside" in said and "row 2 (uuid '0000" in said, said
    assert mirror_view(synced.layout) == before


def test_staged_bytes_changed_after_the_download_fail_the_sha256_check(
    synced: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The download verified the bytes as they streamed by; the gate hashes what is on disk."""
    before = mirror_view(synced.layout)
    name = file_names(synced.root)[0]
    edit_upstream(synced.folder / name, lambda t: t.slice(0, t.num_rows - 3))
    set_card_rows(synced.root, upstream_rows(synced.root))
    announced = upstream_files(synced.root)[name]
    download = HubClient.download

    def download_then_rot(self: HubClient, *args: object, **kwargs: object) -> Path:
        dest: Path = download(self, *args, **kwargs)  # type: ignore[arg-type]
        with dest.open("r+b") as handle:
            handle.seek(dest.stat().st_size // 2)
            byte = handle.read(1)
            handle.seek(-1, 1)
            handle.write(bytes([byte[0] ^ 0x01]))
        return dest

    monkeypatch.setattr(HubClient, "download", download_then_rot)

    refused = synced.sync()

    assert refused.code == 1, refused.text
    [said] = [
        line for line in refused.err.splitlines() if "check sha256_matches_upstream failed" in line
    ]
    assert name in said and announced[:12] in said, said
    assert mirror_view(synced.layout) == before


def test_file_facts_caches_nothing_for_bytes_that_are_not_the_announced_ones(
    synced: User,
) -> None:
    layout = Layout(synced.home)
    path = synced.layout.mirror_dir(CONFIG) / file_names(synced.root)[0]
    copy = synced.home / "copy.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    copy.write_bytes(bytes(data))
    claimed = "0" * 64

    facts = file_facts(layout, CONFIG, copy, claimed)

    sha = facts.result("sha256_matches_upstream")
    assert sha is not None and not sha.passed
    assert sha.details == {"expected": claimed, "actual": sha256_file(copy)}
    assert not layout.derived_dir(CONFIG, claimed).exists()
    real = file_facts(layout, CONFIG, path, sha256_file(path))
    assert real.passed
