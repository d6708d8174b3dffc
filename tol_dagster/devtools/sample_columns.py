"""Per-row string columns of the sample in each source's own style: uuids, source ids, image
URLs, and GBIF's publisher, basisOfRecord and img_type.

Built from random integers kept per row (`sample_rows`), one row group at a time, with
vectorised numpy/pyarrow so that a million rows take seconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tol_dagster.devtools import sample_taxa
from tol_dagster.devtools.sample_taxonomy import Taxa, object_array
from tol_dagster.schema import SOURCE_DATASETS

#: Source names in byte order with NULL last: the sort's first key, as small integer codes.
SOURCE_ORDER: tuple[str | None, ...] = (*sorted(SOURCE_DATASETS, key=str.encode), None)
SOURCE_CODE: dict[str | None, int] = {name: code for code, name in enumerate(SOURCE_ORDER)}

_INAT_SHARE_OF_GBIF = 0.61  # iNaturalist.org is ~58% of all rows


def gbif_fields(
    rng: np.random.Generator, taxa: Taxa, leaf: np.ndarray, gbif: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """publisher, basisOfRecord and img_type indices (-1 = NULL) for GBIF rows."""
    n = len(leaf)
    table = sample_taxa.PUBLISHERS
    tail = np.arange(1, len(table) + 1) ** -1.3
    weights = np.concatenate([[_INAT_SHARE_OF_GBIF], tail / tail.sum() * (1 - _INAT_SHARE_OF_GBIF)])
    publisher = rng.choice(len(weights), size=n, p=weights)
    group = taxa.group[leaf]
    plant_like = (group == "plant") | (group == "fungi")
    kind = object_array(["citizen", *(k for _, k, _ in table)])[publisher]
    scope = object_array(["any", *(s for _, _, s in table)])[publisher]
    misfit = ((scope == "plant") & ~plant_like) | ((scope == "animal") & plant_like)
    misfit |= (kind == "camera") & (group != "mammals") & (group != "birds")
    publisher = np.where(misfit, 0, publisher)  # iNaturalist.org takes anything
    kind = np.where(misfit, "citizen", kind)

    basis = np.full(n, -1, np.int64)
    for name, weights_of_kind in sample_taxa.BASIS_WEIGHTS.items():
        mine = kind == name
        basis[mine] = rng.choice(len(weights_of_kind), size=int(mine.sum()), p=weights_of_kind)

    type_names = img_types()
    museum = np.array([type_names.index(sample_taxa.IMG_MUSEUM[g]) for g in group])
    img_type = np.select(
        [kind == "citizen", kind == "camera"],
        [type_names.index(sample_taxa.IMG_CITIZEN), type_names.index(sample_taxa.IMG_CAMERA)],
        museum,
    )
    return (
        np.where(gbif, publisher, -1),
        np.where(gbif, basis, -1),
        np.where(gbif, img_type, -1),
    )


def publishers() -> tuple[str, ...]:
    """Publisher names by index: iNaturalist.org first (it takes any taxon), then the table's."""
    return ("iNaturalist.org", *(name for name, _, _ in sample_taxa.PUBLISHERS))


def img_types() -> tuple[str, ...]:
    """img_type values by index: citizen science, camera trap, then the museum specimen kinds."""
    return (sample_taxa.IMG_CITIZEN, sample_taxa.IMG_CAMERA, *sample_taxa.IMG_MUSEUM.values())


def lookup(values: Sequence[str], index: np.ndarray) -> pa.Array:
    """`values[index]` as strings, NULL where the index is -1."""
    return pa.array(values, pa.string()).take(pa.array(index, mask=index < 0))


_HEX = np.array([list(f"{i:02x}".encode()) for i in range(256)], dtype=np.uint8)


def uuid_strings(raw: np.ndarray, hex_only: np.ndarray) -> pa.Array:
    """UUIDv4 text, or 32 hex digits without hyphens for the old block."""
    digits = _HEX[raw].reshape(len(raw), 32)
    dashed = np.full((len(raw), 36), ord("-"), np.uint8)
    for start, stop in ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32)):
        offset = start + (start > 0) + (start > 8) + (start > 12) + (start > 16)
        dashed[:, offset : offset + stop - start] = digits[:, start:stop]
    as_text = [pa.array(np.ascontiguousarray(m).view(f"S{m.shape[1]}").ravel()).cast(pa.string())
               for m in (digits, dashed)]  # fmt: skip
    return pc.if_else(pa.array(hex_only), as_text[0], as_text[1])


def source_ids(
    source: np.ndarray, id_a: np.ndarray, id_b: np.ndarray, page_id: np.ndarray
) -> pa.Array:
    """Per source style: GBIF occurrence digits, EOL content_page, BOLD process id, box uuid."""
    a = pc.cast(pa.array(id_a), pa.string())
    eol = pc.binary_join_element_wise(
        pc.cast(pa.array(id_a % 100_000_000), pa.string()),
        pc.cast(pa.array(page_id), pa.string()),
        "_",
    )
    projects = pa.array(["BIOUG", "CBGBC", "AACTA", "GMOCA", "BBCCA"]).take(pa.array(id_b % 5))
    number = pc.utf8_lpad(pc.cast(pa.array(id_a % 100_000), pa.string()), 5, "0")
    year = pc.cast(pa.array(19 + id_b // 5 % 5), pa.string())
    bioscan = pc.binary_join_element_wise(projects, number, pa.scalar("-"), year, "")
    box = uuid_strings(np.concatenate([id_a.astype(">u8").view(np.uint8).reshape(-1, 8),
                                        id_b.astype(">u8").view(np.uint8).reshape(-1, 8)], axis=1),
                        np.zeros(len(id_a), bool))  # fmt: skip
    return _by_source(source, {"gbif": a, "eol": eol, "bioscan": bioscan, "fathomnet": box})


def identifiers(
    source: np.ndarray, publisher: np.ndarray, id_a: np.ndarray, id_b: np.ndarray
) -> pa.Array:
    """Image URLs in each source's style (BIOSCAN images carry none)."""
    b = pc.cast(pa.array(id_b % 400_000_000), pa.string())
    a = pc.cast(pa.array(id_a), pa.string())
    inat = pc.binary_join_element_wise(
        "https://inaturalist-open-data.s3.amazonaws.com/photos/", b, "/original.jpg", ""
    )
    other = pc.binary_join_element_wise(
        "https://api.gbif.org/v1/image/cache/occurrence/", a, "/media/", b, ""
    )
    gbif = pc.if_else(pa.array(publisher == 0), inat, other)
    eol = pc.binary_join_element_wise("https://content.eol.org/data/media/", b, ".jpg", "")
    fathom = pc.binary_join_element_wise(
        "https://database.fathomnet.org/static/m3/framegrabs/", b, ".png", ""
    )
    return _by_source(source, {"gbif": gbif, "eol": eol, "fathomnet": fathom})


def _by_source(source: np.ndarray, values: dict[str, pa.Array]) -> pa.Array:
    out: pa.Array = pa.nulls(len(source), pa.string())
    for name, array in values.items():
        out = pc.if_else(pa.array(source == SOURCE_CODE[name]), array, out)
    return out
