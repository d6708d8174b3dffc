"""The data contract of a TreeOfLife-200M-Embeddings config: columns, types, ranks, sort key.

One source of truth: the sample generator, the validation gate, the summaries and the slices
all import these names instead of spelling them again.
"""

from __future__ import annotations

import re
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
#: What a config's folder name may be (`TOL_CONFIGS`, `sample build --config`): no path.
CONFIG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
DEFAULT_DIM = 768

#: Embedding width of the configs we know; any other config defaults to DEFAULT_DIM.
CONFIG_DIMS: dict[str, int] = {
    "bioclip-2_float16": 768,
    "bioclip-2.5-vith14_float16": 1024,
}

EMB_VALUE_TYPE = pa.float16()

#: The model behind each config's `emb`, as the dataset card names it.
CONFIG_MODELS: dict[str, str] = {
    "bioclip-2_float16": "BioCLIP 2 (ViT-L/14)",
    "bioclip-2.5-vith14_float16": "BioCLIP 2.5 (ViT-H/14)",
}

_RANK_HOLES = "NULL where unresolved; holes mid-lineage are normal (ray-finned fishes: NULL class)"

#: What each column of the contract holds, for people (the UI's column schema). `emb` is
#: described per config (`column_description`); `resolution_status` is a column later upstream
#: revisions add, described here so that its schema shows it too.
COLUMN_DESCRIPTIONS: dict[str, str] = {
    "uuid": "Image id, the same in every config (rows align 1:1 by uuid); UUIDv4, or 32 hex "
    "digits without hyphens for an older block of rows whose other metadata is NULL.",
    "source_dataset": "Where the image comes from: gbif, eol, bioscan or fathomnet (a few NULL).",
    "source_id": "The image's id in its source: GBIF occurrence number, EOL "
    "`<contentID>_<pageID>`, BIOSCAN BOLD process id, FathomNet bounding-box uuid.",
    **{rank: f"Taxonomic {rank}; {_RANK_HOLES}." for rank in RANKS[:-1]},
    "species": "Species epithet (`plexippus`; some revisions hold the binomial); NULL for "
    "genus-only and coarser rows.",
    "scientific_name": "Full scientific name at the most specific rank resolved, sometimes "
    "with its authority (`Aquilegia vulgaris L.`).",
    "common_name": "Vernacular name (NULL for about 29% of rows).",
    "publisher": "Institution that published the occurrence on GBIF (iNaturalist.org for about "
    "58% of rows); NULL outside GBIF.",
    "basisOfRecord": "Darwin Core basisOfRecord of the GBIF occurrence (HUMAN_OBSERVATION, "
    "PRESERVED_SPECIMEN, ...); NULL outside GBIF.",
    "identifier": "URL of the original image at its source (NULL where it carries none).",
    "img_type": "Kind of image on GBIF (Citizen Science, Camera-trap, Museum Specimen: ...); "
    "NULL outside GBIF.",
    "resolution_status": "How the row's taxonomy was resolved against the reference "
    "taxonomy (added by later upstream revisions).",
}


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


def emb_description(config: str) -> str:
    """What `emb` holds in `config`: the model, the width and the norms the gate expects."""
    model = CONFIG_MODELS.get(config, "the config's model")
    bounds = emb_bounds(config)
    expected = f"; {bounds.describe()}" if bounds is not None else ""
    return (
        f"Image embedding by {model}: {config_dim(config)} float16 values per image "
        f"(fixed-size list, ~99% of the bytes){expected}."
    )


def column_description(name: str, config: str) -> str | None:
    """What column `name` of `config` holds; None for a column the contract does not know."""
    return emb_description(config) if name == "emb" else COLUMN_DESCRIPTIONS.get(name)
