"""What each column of the tables we build means, for the UI's column schemas.

The contract's columns (the mirror's, the slices') are described next to the contract, in
`tol_dagster.schema`; these are our own tables' columns: the summaries, the taxon index, the
centroids and the catalog. `value` and `rank` mean something else in each table, so each table
names its own.
"""

from __future__ import annotations

from tol_dagster.derived.summaries import VALUE_COLUMNS

_IMAGES = "Images (mirror rows) in this bucket."
_FILE = "Mirror file name (`train-*.parquet`) in the config's folder."

SUMMARY_COLUMNS: dict[str, dict[str, str]] = {
    "lineage": {"images": _IMAGES + " One row per distinct source and lineage, NULLs kept."},
    "rank_counts": {
        "rank": "The rank this row counts at: the lineage down to it is set, the ranks below "
        "it are NULL.",
        "images": _IMAGES,
    },
    **{
        table: {
            "value": f"The `{column}` value counted (NULL is a bucket of its own).",
            "images": _IMAGES,
        }
        for table, column in VALUE_COLUMNS.items()
    },
    "files": {
        "file": _FILE,
        "sha256": "sha256 of the file's bytes, as upstream's listing names it.",
        "rows": "Rows in the file (its parquet footer).",
        "bytes": "Size of the file in bytes.",
        "row_groups": "Parquet row groups in the file.",
        "first_key": "Sort key of the file's first row (source_dataset, kingdom ... species, "
        "common_name).",
        "last_key": "Sort key of the file's last row: files follow each other in this order.",
    },
}

TAXON_INDEX_COLUMNS: dict[str, str] = {
    "rank": "Rank of the taxon (kingdom ... species, scientific_name).",
    "value": "The taxon's name at that rank (species: the binomial, `Danaus plexippus`).",
    "file": _FILE,
    "row_group": "Row group of the file holding the taxon's rows.",
    "row_start": "First matching row in the row group, counted from the file's start.",
    "row_end": "One past the last matching row, counted from the file's start.",
    "rows": "Rows of the taxon between row_start and row_end (another taxon may sit between).",
}

CENTROID_COLUMNS: dict[str, str] = {
    "level": "`species` (lineage down to a known species) or `genus` (down to a known genus, "
    "species or not).",
    "images": "Images averaged into the centroid.",
    "centroid": "Mean `emb` of those images, as float32 (not unit-normalized).",
}

CATALOG_COLUMNS: dict[str, str] = {
    "config": "The dataset config the slice was cut from.",
    "name": "The slice key (`family=Felidae`, `kingdom=Animalia/genus=Morus`).",
    "rank": "Rank the key selects on (the last of a compound key).",
    "value": "Value the rank must equal.",
    "path": "The slice's parquet file (the mirror's exact schema and sort order).",
    "rows": "Rows in the slice.",
    "bytes": "Size of the slice's file in bytes.",
    "sha256": "sha256 of the slice's file.",
    "upstream_commit": "Upstream commit of the mirror generation the slice was cut from.",
    "built_at": "When the slice was written (UTC).",
}
