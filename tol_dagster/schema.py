"""The data contract of a TreeOfLife-200M-Embeddings config: columns, types, ranks, sort key.

One source of truth: the sample generator, the validation gate, the summaries and the slices
all import these names instead of spelling them again.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

#: Taxonomic ranks from the top down, as column names.
RANKS: tuple[str, ...] = ("kingdom", "phylum", "class", "order", "family", "genus", "species")

#: The string metadata columns, in the dataset card's order.
STRING_COLUMNS: tuple[str, ...] = (
    "source_dataset",
    "source_id",
    *RANKS,
    "scientific_name",
    "common_name",
    "publisher",
    "basisOfRecord",
    "identifier",
    "img_type",
)

#: Every column but `emb`: cheap to read (emb is ~99% of the bytes).
METADATA_COLUMNS: tuple[str, ...] = ("uuid", *STRING_COLUMNS)

#: Upstream's global sort: ascending, byte-wise, NULLs last.
SORT_KEY: tuple[str, ...] = ("source_dataset", *RANKS, "common_name")

#: Ranks a slice key may name (`rank=value`).
SLICE_RANKS: tuple[str, ...] = (*RANKS, "scientific_name")

#: Known source datasets (NULL is allowed too).
SOURCE_DATASETS: tuple[str, ...] = ("gbif", "eol", "bioscan", "fathomnet")

DEFAULT_CONFIG = "bioclip-2_float16"
DEFAULT_DIM = 768

#: Embedding width of the configs we know; any other config defaults to DEFAULT_DIM.
CONFIG_DIMS: dict[str, int] = {
    "bioclip-2_float16": 768,
    "bioclip-2.5-vith14_float16": 1024,
}

EMB_VALUE_TYPE = pa.float16()


@dataclass(frozen=True)
class EmbBounds:
    """What a plausible `emb` row of a config looks like: its L2 norm and its largest |x|."""

    norm_min: float
    norm_max: float
    max_abs: float

    def describe(self) -> str:
        return f"L2 norm {self.norm_min:g}-{self.norm_max:g}, max |x| <= {self.max_abs:g}"


#: Per-row bounds pinned per config (the gate's `emb_norms_within_bounds`). Chosen from the
#: figures of 1,030 real rows (the project's dataset notes, not shipped), with margin, because a
#: false refusal blocks a whole resync:
#: - bioclip-2: 1,030 real rows have norms 36.2-69.9 (median 47.4) and a largest |x| per row of
#:   median 6.9, max 16.0. 233M rows reach further into the tails than 1,030 do, so the norm
#:   bounds are about half the smallest and twice the largest seen (18-140) and max |x| three
#:   times the largest seen (48). Setting one of the two high exponent bits of a typical value
#:   (|x| ~0.5-3) multiplies it by 256 or more, far outside; smaller moves go unseen here, and
#:   for rows that existed before `emb_unchanged_for_existing_uuids` sees every change.
#: - bioclip-2.5-vith14: unit-norm; float16 rounding moves a 1024-dim norm by well under 0.5%,
#:   so norms 0.98-1.02, and no element of a unit vector exceeds 1 (1.01 with rounding).
EMB_BOUNDS: dict[str, EmbBounds] = {
    "bioclip-2_float16": EmbBounds(18.0, 140.0, 48.0),
    "bioclip-2.5-vith14_float16": EmbBounds(0.98, 1.02, 1.01),
}


def emb_bounds(config: str) -> EmbBounds | None:
    """The bounds pinned for `config`; None for a config the contract knows no figures of."""
    return EMB_BOUNDS.get(config)


def emb_type(dim: int) -> pa.DataType:
    """The exact Arrow type of `emb`: a fixed-size list of half floats."""
    return pa.list_(EMB_VALUE_TYPE, dim)


def arrow_schema(dim: int = DEFAULT_DIM) -> pa.Schema:
    """The exact schema of a config's parquet files (what the card documents)."""
    return pa.schema(
        [
            pa.field("uuid", pa.string()),
            pa.field("emb", emb_type(dim)),
            *(pa.field(name, pa.string()) for name in STRING_COLUMNS),
        ]
    )


def config_dim(config: str) -> int:
    """Embedding width expected for `config`."""
    return CONFIG_DIMS.get(config, DEFAULT_DIM)


def expected_schema(config: str) -> pa.Schema:
    """The schema pinned for `config` by the contract."""
    return arrow_schema(config_dim(config))


def quote_ident(name: str) -> str:
    """Quote a column name for DuckDB SQL (`order` and `class` are keywords)."""
    return '"' + name.replace('"', '""') + '"'
