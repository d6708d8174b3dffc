"""Page-level splicing: inside a row group a slice covers only partly, the pages wholly inside
its rows are copied as bytes and only the end pages are encoded again. The result reads like
the rows it was cut from, in pyarrow and DuckDB, through its page indexes too; anything the
splicer cannot vouch for is decoded instead; a damaged copied page never gets published."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from mirror_testing import mirror_of, sample_mirror
from spy_testing import returned_something

from tol_dagster.derived.taxon_index import build_taxon_index, read_taxon_index
from tol_dagster.errors import ValidationFailed
from tol_dagster.parquet import field_ids, list_encode
from tol_dagster.parquet.footer import Footer, SpliceError, read_footer
from tol_dagster.parquet.page_splice import PageRun, RangePlan, plan_range
from tol_dagster.parquet.pages import read_rows
from tol_dagster.parquet.splice import Splicer
from tol_dagster.parquet.thrift import read_struct, write_struct
from tol_dagster.schema import DEFAULT_CONFIG, METADATA_COLUMNS, STRING_COLUMNS, expected_schema
from tol_dagster.slices import read, splices
from tol_dagster.slices.checks import slice_checks
from tol_dagster.slices.counts import expected_count
from tol_dagster.slices.extract import SliceResult, assemble_slice, extract_segment, extract_slice
from tol_dagster.slices.keys import SliceKey, arrow_mask, parse_slice_key
from tol_dagster.slices.locate import Copy, Span, Splice, plan_scans
from tol_dagster.slices.write import _range_columns
from tol_dagster.store.layout import Layout
from tol_dagster.store.mirror_files import MirrorFile
from tol_dagster.validation import chunk_crcs
from tol_dagster.validation.emb_digests import ensure_table

SCHEMA = expected_schema(DEFAULT_CONFIG)
GROUP_ROWS = 1000
LAYOUTS = {
    "v1-zstd": {"compression": "zstd"},
    "v2-snappy": {"compression": "snappy", "data_page_version": "2.0"},
    "v1-none": {"compression": "none"},
    "v2-gzip": {"compression": "gzip", "data_page_version": "2.0"},
}


@pytest.fixture(autouse=True)
def _splice_small_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sample's taxa are small: splice whatever has a page wholly inside it."""
    monkeypatch.setattr(splices, "SPLICE_MIN_ROWS", 0)


def _write_like_upstream(table: pa.Table, path: Path, **options: object) -> Path:
    """`table` as upstream writes it (dictionary and statistics on the string columns only,
    page indexes), in small pages so that a row group holds many."""
    settings: dict[str, object] = {
        "row_group_size": GROUP_ROWS,
        "data_page_size": 64 * 1024,
        "write_page_index": True,
        "use_dictionary": list(STRING_COLUMNS),
        "write_statistics": list(METADATA_COLUMNS),
        "compression": "zstd",
        **options,
    }
    pq.write_table(table, path, **settings)  # type: ignore[arg-type]
    return path


def _table(rows: int, seed: int, null_share: float = 0.05) -> pa.Table:
    """The mirror's schema, NULL `emb` rows among random ones, families in runs of 300 rows."""
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(rows * 768).astype(np.float16)
    emb = pa.FixedSizeListArray.from_arrays(
        pa.array(values), 768, mask=pa.array(rng.random(rows) < null_share)
    )
    columns = {name: pa.array([f"{name}-{i // 300}" for i in range(rows)]) for name in SCHEMA.names}
    columns["uuid"] = pa.array([f"{seed}-{i:06d}" for i in range(rows)])
    columns["emb"] = emb
    return pa.table([columns[name] for name in SCHEMA.names], schema=SCHEMA)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> tuple[pa.Table, dict[str, Footer]]:
    folder = tmp_path_factory.mktemp("layouts")
    table = _table(2 * GROUP_ROWS + 600, 3)
    return table, {
        name: read_footer(_write_like_upstream(table, folder / f"{name}.parquet", **options))
        for name, options in LAYOUTS.items()
    }


def _page_firsts(footer: Footer, group: int) -> list[int]:
    """First rows of the `emb` pages of a row group, then its row count."""
    plan = plan_range(footer, group, 0, footer.row_groups[group].get(field_ids.RG_NUM_ROWS))
    return [p.get(field_ids.PAGE_FIRST_ROW) for p in plan.runs[1].locations] + [
        plan.runs[1].end_row
    ]


def _splice(
    footer: Footer, ranges: list[tuple[int, int, int]], out: Path, plan_of: Callable = plan_range
) -> list[RangePlan]:
    """Ranges (row group, start, stop) of `footer`'s file spliced page by page into `out`, as
    the reader and the writer of a slice do it, as `plan_of` plans them."""
    predicate = read.Predicate(parse_slice_key("family=x"))
    sink = io.BytesIO()
    splicer = Splicer(sink, footer)
    plans = []
    for group, start, stop in ranges:
        plan = plan_of(footer, group, start, stop, decoded={"family"})
        (item,) = read._spliced(footer, Splice(group, plan), predicate, SCHEMA)
        assert isinstance(item, read.SplicedRange)
        splicer.add_columns(_range_columns(item, SCHEMA, None), item.rows)
        plans.append(plan)
    splicer.close()
    out.write_bytes(sink.getvalue())
    return plans


def _reads_the_same_everywhere(out: Path, expected: pa.Table) -> None:
    """`out` holds `expected`: in pyarrow, in DuckDB (all rows, and filtered through the page
    index), and through its own offset indexes (a range read page by page)."""
    assert pq.read_table(out).equals(expected)
    floats = expected["emb"].cast(pa.list_(pa.float32())).to_pylist()
    rows = duckdb.sql(f"SELECT uuid, emb FROM '{out}'").fetchall()
    assert [r[0] for r in rows] == expected["uuid"].to_pylist()
    assert [r[1] for r in rows] == floats
    wanted = expected["uuid"][expected.num_rows // 2].as_py()
    found = duckdb.sql(f"SELECT emb FROM '{out}' WHERE uuid = $u", params={"u": wanted}).fetchall()
    assert found == [(floats[expected.num_rows // 2],)]
    footer = read_footer(out)
    counts = [int(g.get(field_ids.RG_NUM_ROWS)) for g in footer.row_groups]
    for group, (base, size) in enumerate(zip(np.cumsum([0, *counts[:-1]]), counts, strict=True)):
        low, high = size // 3, size - size // 4  # read through the offset index
        assert footer.has_offset_index(group)
        got = read_rows(footer, group, low, high).cast(SCHEMA)
        assert got.equals(expected.slice(int(base) + low, high - low))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ranges_aligned_or_not_at_either_end_of_row_groups_splice_to_the_same_rows(
    layouts: tuple[pa.Table, dict[str, Footer]], layout: str, tmp_path: Path
) -> None:
    table, footers = layouts
    footer = footers[layout]
    firsts = _page_firsts(footer, 1)
    assert len(firsts) > 8  # many pages a row group
    ranges = [
        (1, firsts[2], firsts[5]),  # page-aligned
        (1, firsts[2] + 3, firsts[6] - 2),  # unaligned at both ends
        (0, 0, firsts[4] + 7),  # the row group's start
        (1, firsts[-3] - 5, GROUP_ROWS),  # the row group's end
        (2, 0, 600),  # a whole (last) row group
        (0, 0, GROUP_ROWS),
    ]
    out = tmp_path / "spliced.parquet"
    plans = _splice(footer, ranges, out)
    assert all(1 in plan.runs for plan in plans)  # `emb` pages copied in every range
    assert plans[0].runs[1].first_row == firsts[2] and plans[0].runs[1].end_row == firsts[5]
    assert plans[1].runs[1].first_row == firsts[3] and plans[1].runs[1].end_row == firsts[5]
    assert set(plans[0].reasons) == set(SCHEMA.names) - {"emb"}  # dictionaries, statistics
    expected = pa.concat_tables([table.slice(g * GROUP_ROWS + a, b - a) for g, a, b in ranges])
    _reads_the_same_everywhere(out, expected)
    source, written = footer.path.read_bytes(), out.read_bytes()
    for plan in plans:
        run = plan.runs[1]
        assert source[run.offset : run.offset + run.length] in written  # copied as bytes


@pytest.mark.parametrize("layout", ["v1-zstd", "v1-none"])
def test_emb_end_pages_are_written_by_list_encode_and_splice_to_the_same_rows(
    layout: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = _table(2 * GROUP_ROWS, 4, null_share=0.0)
    footer = read_footer(_write_like_upstream(table, tmp_path / "m.parquet", **LAYOUTS[layout]))
    written = returned_something(monkeypatch, list_encode, "encode_list_pages")
    firsts = _page_firsts(footer, 1)
    ranges = [(1, firsts[2] + 3, firsts[6] - 2), (0, 5, GROUP_ROWS - 7)]
    out = tmp_path / "spliced.parquet"
    _splice(footer, ranges, out)
    assert written == [True] * 4  # `emb`'s pages at both ends of both ranges
    expected = pa.concat_tables([table.slice(g * GROUP_ROWS + a, b - a) for g, a, b in ranges])
    _reads_the_same_everywhere(out, expected)


def test_a_range_inside_one_page_has_no_page_to_copy(
    layouts: tuple[pa.Table, dict[str, Footer]],
) -> None:
    _, footers = layouts
    firsts = _page_firsts(footers["v1-zstd"], 0)
    plan = plan_range(footers["v1-zstd"], 0, firsts[3] + 1, firsts[4] - 1)
    assert plan.runs == {} and plan.reasons["emb"] == "no page lies wholly inside the rows"


def test_columns_with_dictionaries_statistics_or_unknown_codecs_are_decoded(
    tmp_path: Path,
) -> None:
    table = _table(GROUP_ROWS, 5)
    dictionary = read_footer(
        _write_like_upstream(table, tmp_path / "d.parquet", use_dictionary=True)
    )
    stats = read_footer(_write_like_upstream(table, tmp_path / "s.parquet", write_statistics=True))
    plain = read_footer(_write_like_upstream(table, tmp_path / "p.parquet"))
    lzo = Footer(plain.path, plain.meta.copy())
    lzo.row_groups[0].get(field_ids.RG_COLUMNS)[1][1].get(field_ids.CC_META).set(
        field_ids.CM_CODEC, 3
    )
    reasons = {
        name: plan_range(footer, 0, 10, 900).reasons.get("emb")
        for name, footer in {
            "dictionary": dictionary,
            "stats": stats,
            "lzo": lzo,
            "plain": plain,
        }.items()
    }
    assert reasons["dictionary"] == "a dictionary page"
    assert "statistics" in (reasons["stats"] or "")
    assert "codec" in (reasons["lzo"] or "")
    assert reasons["plain"] is None


def test_a_column_mixing_page_versions_is_decoded_not_copied(
    layouts: tuple[pa.Table, dict[str, Footer]], tmp_path: Path
) -> None:
    table, footers = layouts
    footer = footers["v1-zstd"]
    firsts = _page_firsts(footer, 0)

    def v2_ends(*args: object, **kwargs: object) -> RangePlan:  # end pages written as v2
        plan = plan_range(*args, **kwargs)  # type: ignore[arg-type]
        runs = {
            c: PageRun(**{**r.__dict__, "version": field_ids.DATA_PAGE_V2})
            for c, r in plan.runs.items()
        }
        return RangePlan(plan.footer, plan.row_group, plan.start, plan.stop, runs, plan.reasons)

    mixed = tmp_path / "mixed.parquet"
    _splice(footer, [(0, firsts[1] + 2, firsts[6] + 2)], mixed, v2_ends)
    assert pq.read_table(mixed).equals(table.slice(firsts[1] + 2, firsts[6] - firsts[1]))
    rows = firsts[6] - firsts[1]
    assert (
        plan_range(read_footer(mixed), 0, 0, rows).reasons["emb"] == "data pages of both versions"
    )
    assert 1 in plan_range(read_footer(mixed), 0, 1, rows - 1).runs  # the v1 pages alone


# --- slices of a mirror in small pages --------------------------------------------------------


class PagedMirror:
    """The sample mirror rewritten in small pages, its taxon index and `emb` digests."""

    def __init__(self, files: list[MirrorFile], layout: Layout) -> None:
        self.files, self.layout = files, layout
        build_taxon_index(files, layout, DEFAULT_CONFIG)
        self.index = read_taxon_index(layout, DEFAULT_CONFIG)
        for file in files:  # as the gate keeps them
            ensure_table(file, layout, DEFAULT_CONFIG)
            chunk_crcs.ensure(file, layout, DEFAULT_CONFIG)
        self.table = pa.concat_tables(pq.read_table(f.path) for f in files)

    def extract(self, key: SliceKey, out: Path) -> SliceResult:
        expected = expected_count(key, self.index, self.files)

        def verify(path: Path) -> list:
            return slice_checks(
                path, key, expected, SCHEMA, self.files, self.index,
                layout=self.layout, config=DEFAULT_CONFIG,
            )  # fmt: skip

        return extract_slice(key, self.files, self.index, out, schema=SCHEMA, verify=verify)

    def expected(self, key: SliceKey) -> pa.Table:
        return self.table.filter(arrow_mask(key, self.table))


def _paged(small_sample: Path, folder: Path, **options: object) -> list[MirrorFile]:
    folder.mkdir(parents=True)
    for file in sample_mirror(small_sample):
        _write_like_upstream(
            pq.read_table(file.path), folder / file.name, row_group_size=500,
            data_page_size=8192, **options,
        )  # fmt: skip
    return mirror_of(folder)


@pytest.fixture(scope="module")
def paged(small_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> PagedMirror:
    root = tmp_path_factory.mktemp("paged")
    return PagedMirror(_paged(small_sample, root / "mirror"), Layout(root / "home"))


@pytest.mark.parametrize(
    "text", ["family=Felidae", "order=Primates", "kingdom=Animalia", "species=Danaus plexippus"]
)
def test_a_slice_spliced_page_by_page_equals_the_mirrors_rows_and_passes_its_checks(
    paged: PagedMirror, tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = parse_slice_key(text)
    result = paged.extract(key, tmp_path / key.file_name)
    assert result.row_groups_spliced > 0 and all(c.passed for c in result.checks)
    expected = paged.expected(key)
    _reads_the_same_everywhere(result.path, expected)
    family = expected["family"][expected.num_rows // 3].as_py()
    found = duckdb.sql(f"SELECT uuid FROM '{result.path}' WHERE family = $f", params={"f": family})
    wanted = expected.filter(pc.equal(expected["family"], family))["uuid"].to_pylist()
    assert [row[0] for row in found.fetchall()] == wanted
    monkeypatch.setattr(splices, "PAGE_SPLICES", False)
    unspliced = paged.extract(key, tmp_path / "unspliced.parquet")
    assert unspliced.row_groups_spliced == 0
    assert pq.read_table(unspliced.path).equals(pq.read_table(result.path))
    assert pq.read_schema(unspliced.path).equals(pq.read_schema(result.path), check_metadata=True)


def _copied_page(paged: PagedMirror, key: SliceKey) -> tuple[MirrorFile, int]:
    """A mirror file and the offset of an `emb` page the slice of `key` copies from it."""
    scans = splices.plan_page_splices(key, plan_scans(key, paged.files, paged.index))
    for scan in scans:
        for piece in scan.pieces:
            if isinstance(piece, Splice) and len(piece.plan.runs[1].locations) > 1:
                return scan.file, piece.plan.runs[1].locations[1].get(field_ids.PAGE_OFFSET)
    raise AssertionError(f"{key.name} copies no page")


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_a_damaged_copied_page_fails_the_checks_and_nothing_is_published(
    small_sample: Path, tmp_path: Path, codec: str
) -> None:
    files = _paged(small_sample, tmp_path / "mirror", compression={"emb": codec})
    paged = PagedMirror(files, Layout(tmp_path / "home"))  # digests of the good bytes
    key = parse_slice_key("family=Felidae")
    out = tmp_path / "out" / key.file_name
    good = paged.extract(key, out)
    assert good.row_groups_spliced > 0
    before = out.read_bytes()
    file, offset = _copied_page(paged, key)
    data = bytearray(file.path.read_bytes())
    data[offset + 200] ^= 0x40  # in the page's values, past its header: rot the gate missed
    file.path.write_bytes(bytes(data))
    with pytest.raises(
        ValidationFailed, match=r"emb of .*(differs from the mirror|does not decode)"
    ):
        paged.extract(key, out)
    assert out.read_bytes() == before
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def _whole_copied_emb(paged: PagedMirror, key: SliceKey) -> tuple[MirrorFile, int, int]:
    """A mirror file and the offset and length of the `emb` chunk of a row group that the
    slice of `key` copies whole."""
    for scan in plan_scans(key, paged.files, paged.index):
        for piece in scan.pieces:
            if isinstance(piece, Copy):
                group = pq.read_metadata(scan.file.path).row_group(piece.row_group)
                emb = chunk_crcs.chunk_range(group, "emb")
                assert emb is not None
                return scan.file, *emb
    raise AssertionError(f"{key.name} copies no row group whole")


def test_a_row_group_copied_whole_that_rotted_in_the_mirror_fails_the_checks(
    small_sample: Path, tmp_path: Path
) -> None:
    """The gate's chunk crcs, not the mirror's bytes now, prove a row group copied whole: a
    chunk whose crc differs is decoded and its rows' digests compared with the gate's."""
    files = _paged(small_sample, tmp_path / "mirror")
    paged = PagedMirror(files, Layout(tmp_path / "home"))  # crcs of the good bytes
    key = parse_slice_key("kingdom=Animalia")
    out = tmp_path / "out" / key.file_name
    good = paged.extract(key, out)
    assert good.row_groups_copied > 0 and all(c.passed for c in good.checks)
    before = out.read_bytes()
    file, offset, length = _whole_copied_emb(paged, key)
    data = bytearray(file.path.read_bytes())
    data[offset + length // 2] ^= 0x01  # in a page's values: rot after the gate
    file.path.write_bytes(bytes(data))
    with pytest.raises(ValidationFailed, match=r"emb of .*differs from the mirror"):
        paged.extract(key, out)
    assert out.read_bytes() == before
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def test_end_pages_that_cannot_be_encoded_fall_back_to_decoding_the_range(
    paged: PagedMirror,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def refuse(*args: object) -> object:
        raise SpliceError("pyarrow encodes column emb otherwise")

    monkeypatch.setattr(read, "encode_pages", refuse)
    key = parse_slice_key("family=Felidae")
    with caplog.at_level(logging.WARNING):
        result = paged.extract(key, tmp_path / key.file_name)
    assert result.row_groups_spliced > 0  # planned, then decoded instead
    assert "instead of splicing" in caplog.text
    assert pq.read_table(result.path).equals(paged.expected(key))
    assert all(c.passed for c in result.checks)


def test_a_range_whose_rows_do_not_all_satisfy_the_key_is_read_not_spliced(
    paged: PagedMirror, tmp_path: Path
) -> None:
    key = parse_slice_key("species=plexippus")  # a one-word species: the index cannot count it
    scans = splices.plan_page_splices(key, plan_scans(key, paged.files, paged.index))
    result = paged.extract(key, tmp_path / key.file_name)
    assert pq.read_table(result.path).equals(paged.expected(key))
    assert result.row_groups_spliced == sum(isinstance(p, Splice) for s in scans for p in s.pieces)


def test_an_offset_index_that_does_not_fit_its_pages_is_decoded_not_copied(
    paged: PagedMirror, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = parse_slice_key("family=Felidae")
    scans = splices.plan_page_splices(key, plan_scans(key, paged.files, paged.index))
    file, piece = next(
        (s.file, p) for s in scans for p in s.pieces if isinstance(p, Splice) and 1 in p.plan.runs
    )
    chunk = read_footer(file.path).row_groups[piece.row_group].get(field_ids.RG_COLUMNS)[1][1]
    at, length = chunk.get(field_ids.CC_OFFSET_INDEX), chunk.get(field_ids.CC_OFFSET_INDEX_LENGTH)
    data = bytearray(file.path.read_bytes())
    index = read_struct(memoryview(bytes(data[at : at + length])), 0)[0]
    page = index.get(field_ids.PAGE_LOCATIONS)[1][1]
    page.set(field_ids.PAGE_SIZE, page.get(field_ids.PAGE_SIZE) + 1)  # overlaps the next page
    lying = bytearray()
    write_struct(lying, index)
    assert len(lying) == length
    data[at : at + length] = lying
    damaged = tmp_path / file.name
    damaged.write_bytes(bytes(data))
    files = [MirrorFile(f.name, f.sha256, damaged if f is file else f.path) for f in paged.files]
    with caplog.at_level(logging.WARNING):
        result = extract_slice(key, files, paged.index, tmp_path / "out.parquet", schema=SCHEMA)
    assert "does not fit its column chunk" in caplog.text and "instead" in caplog.text
    assert pq.read_table(result.path).equals(paged.expected(key))


def test_spans_too_short_to_gain_are_read_without_planning(
    paged: PagedMirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = parse_slice_key("family=Felidae")
    scans = plan_scans(key, paged.files, paged.index)
    longest = max(p.stop - p.start for s in scans for p in s.pieces if isinstance(p, Span))
    monkeypatch.setattr(splices, "SPLICE_MIN_ROWS", longest + 1)
    assert splices.plan_page_splices(key, scans) == scans
    result = paged.extract(key, tmp_path / key.file_name)
    assert result.row_groups_spliced == 0
    assert pq.read_table(result.path).equals(paged.expected(key))


# --- a slice cut into segments (the steps of a slice run) ---------------------------------------


@pytest.mark.parametrize(
    "text", ["family=Felidae", "kingdom=Animalia", "species=Danaus plexippus", "genus=Nowhere"]
)
def test_a_slice_assembled_from_segments_is_the_same_bytes_however_the_files_are_cut(
    paged: PagedMirror, tmp_path: Path, text: str
) -> None:
    key = parse_slice_key(text)
    files = paged.files

    def assembled(cuts: list[list[MirrorFile]], name: str) -> SliceResult:
        segments = [
            extract_segment(key, batch, paged.index, tmp_path / f"{name}-{i}.seg", schema=SCHEMA)
            for i, batch in enumerate(cuts)
        ]
        return assemble_slice(key, segments, tmp_path / f"{name}.parquet", schema=SCHEMA)

    whole = assembled([list(files)], "whole")
    by_file = assembled([[f] for f in files], "by-file")
    uneven = assembled([list(files[:1]), list(files[1:])], "uneven")

    assert len(files) >= 3
    assert by_file.sha256 == whole.sha256 == uneven.sha256
    assert (tmp_path / "by-file.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
    assert by_file.rows == paged.expected(key).num_rows
    assert pq.read_table(by_file.path).equals(paged.expected(key))
    assert pq.read_schema(by_file.path).equals(SCHEMA, check_metadata=False)
    single = paged.extract(key, tmp_path / "single.parquet")
    assert pq.read_table(single.path).equals(pq.read_table(by_file.path)), "the rows of one pass"
