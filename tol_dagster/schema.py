"""The data contract of a TreeOfLife-200M-Embeddings config: columns, types, ranks, sort key.

One source of truth: the sample generator, the validation gate, the summaries and the slices
all import these names instead of spelling them again.
"""

from __future__ import annotations

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
