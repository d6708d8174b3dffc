"""Every row of the sample, in upstream's sort order, as small integer arrays.

Which taxon a row shows, in which source, and how its names differ from the taxon's canonical
ones (binomial species, authorities, dirty kingdoms, rows identified to genus or family only,
BOLD BINs): the holes and dirt of the real data. Strings are made per row group (`table`), so
memory per row stays ~70 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tol_dagster.devtools import sample_taxa
from tol_dagster.devtools.sample_columns import (
    SOURCE_CODE,
    SOURCE_ORDER,
    gbif_fields,
    identifiers,
    img_types,
    lookup,
    publishers,
    source_ids,
    uuid_strings,
)
from tol_dagster.devtools.sample_taxonomy import Taxa, object_array
from tol_dagster.schema import RANKS, SORT_KEY, arrow_schema

# Shares of rows: the old block of 32-hex uuids with no metadata, then sources of the rest.
_HEX_SHARE = 0.01
_SOURCE_SHARES: dict[str | None, float] = {
    "bioscan": 0.024,
    "eol": 0.025,
    "fathomnet": 0.0002,
    None: 0.001,
}

# Variant bits: how a row's strings differ from its taxon's canonical ones.
_BINOMIAL = 1  # `species` holds "Genus epithet"
_AUTHORITY = 2  # `scientific_name` carries the authority
_DIRTY_KINGDOM = 4  # Metazoa / Archaeplastida instead of Animalia / Plantae
_GENUS_ONLY = 8  # identified to genus: species NULL
_FAMILY_ONLY = 16  # identified to family: genus and species NULL
_NO_COMMON = 32
_BOLD = 64  # truncated rows named by their BOLD BIN (BIOSCAN)
_INFORMAL = 128  # truncated rows named informally ('Genus "sp. 1"')
_VARIANTS = 256

# Per source: probability of each variant bit.
_VARIANT_RATES: dict[str | None, dict[int, float]] = {
    "gbif": {_BINOMIAL: 0.005, _AUTHORITY: 0.35, _GENUS_ONLY: 0.03, _FAMILY_ONLY: 0.005,
             _NO_COMMON: 0.06},
    "eol": {_BINOMIAL: 0.4, _AUTHORITY: 0.2, _DIRTY_KINGDOM: 0.03, _GENUS_ONLY: 0.02,
            _FAMILY_ONLY: 0.005, _NO_COMMON: 0.2},
    "bioscan": {_GENUS_ONLY: 0.45, _FAMILY_ONLY: 0.25, _NO_COMMON: 1.0, _BOLD: 0.7,
                _INFORMAL: 0.2},
    "fathomnet": {_GENUS_ONLY: 0.3, _FAMILY_ONLY: 0.1, _NO_COMMON: 0.3},
    None: {_AUTHORITY: 0.3, _NO_COMMON: 0.3},
}  # fmt: skip

# README taxa get a few rows in these sources whatever the size, so that each one sits in
# separate blocks of the sort (source_dataset is the first key): (genus, epithet, source, rows).
_ANCHORS: tuple[tuple[str, str, str | None, int], ...] = tuple(
    (genus, epithet, source, count)
    for genus, epithet in (
        ("Puma", "concolor"),
        ("Danaus", "plexippus"),
        ("Macaca", "mulatta"),
        ("Felis", "catus"),
        ("Vanessa", "cardui"),
    )
    for source, count in (("gbif", 3), ("eol", 2), (None, 2))
)

#: NULL for `np.where` over object arrays of strings.
_NULL = np.array(None, dtype=object)

_NULL_SOURCE = SOURCE_CODE[None]


@dataclass(frozen=True)
class SampleRows:
    """Every row in sorted order, as integer arrays; strings are made per row group."""

    taxa: Taxa
    display: pa.Table  # distinct (taxon, variant) strings: ranks, scientific_name, common_name
    source: np.ndarray  # code into SOURCE_ORDER
    display_id: np.ndarray
    leaf: np.ndarray  # taxon behind the embedding (also for rows whose metadata is NULL)
    hex_uuid: np.ndarray  # the old block: 32-hex uuid, all other metadata NULL
    uuid_bytes: np.ndarray  # (rows, 16) uint8
    publisher: np.ndarray  # index into publishers(), -1 = NULL
    basis: np.ndarray  # index into BASIS_OF_RECORD, -1 = NULL
    img_type: np.ndarray  # index into img_types(), -1 = NULL
    id_a: np.ndarray  # random ids behind source_id and identifier
    id_b: np.ndarray

    @classmethod
    def build(cls, taxa: Taxa, *, rows: int, seed: int) -> SampleRows:
        """Every row's source, taxon and name variant drawn from `seed`, sorted as upstream."""
        rng = np.random.default_rng([seed, 2])
        n_hex = round(rows * _HEX_SHARE)
        anchored = rows >= 50 * sum(c for *_, c in _ANCHORS)
        counts = {s: round((rows - n_hex) * share) for s, share in _SOURCE_SHARES.items()}
        if anchored:  # room for the anchors; GBIF takes what is left
            for _, _, name, count in _ANCHORS:
                if name in counts:
                    counts[name] = max(counts[name], 8 * count)
        counts["gbif"] = rows - n_hex - sum(counts.values())
        source_parts, leaf_parts, bit_parts = [], [], []
        for name, count in counts.items():
            probability = taxa.weight * _source_affinity(taxa, name)
            leaves = rng.choice(taxa.size, size=count, p=probability / probability.sum())
            bits = _variant_bits(rng, name, count)
            if anchored:
                _apply_anchors(taxa, name, leaves, bits)
            source_parts.append(np.full(count, SOURCE_CODE[name], np.int8))
            leaf_parts.append(leaves)
            bit_parts.append(bits)
        source_parts.append(np.full(n_hex, _NULL_SOURCE, np.int8))
        leaf_parts.append(rng.choice(taxa.size, size=n_hex, p=taxa.weight / taxa.weight.sum()))
        bit_parts.append(np.full(n_hex, -1, np.int64))
        source = np.concatenate(source_parts)
        leaf = np.concatenate(leaf_parts).astype(np.int32)
        bits = np.concatenate(bit_parts)
        hex_uuid = bits < 0

        keys = np.where(hex_uuid, -1, leaf.astype(np.int64) * _VARIANTS + bits)
        unique_keys, display_id = np.unique(keys, return_inverse=True)
        display = _display_table(taxa, unique_keys)
        rank = np.empty(len(unique_keys), np.int64)
        sort_keys = [(c, "ascending", "at_end") for c in SORT_KEY[1:]]
        order = pc.sort_indices(display, sort_keys=sort_keys)
        rank[order.to_numpy()] = np.arange(len(unique_keys))

        publisher, basis, img_type = gbif_fields(rng, taxa, leaf, source == SOURCE_CODE["gbif"])
        uuid_bytes = rng.integers(0, 256, (rows, 16), dtype=np.uint8)
        uuid_bytes[:, 6] = (uuid_bytes[:, 6] & 0x0F) | 0x40
        uuid_bytes[:, 8] = (uuid_bytes[:, 8] & 0x3F) | 0x80
        id_a = rng.integers(1_000_000_000, 5_000_000_000, rows)
        id_b = rng.integers(0, 2**62, rows)

        # lexsort is stable and its last key is the primary one.
        perm = np.lexsort((rank[display_id], source))
        return cls(
            taxa=taxa,
            display=display,
            source=source[perm],
            display_id=display_id[perm],
            leaf=leaf[perm],
            hex_uuid=hex_uuid[perm],
            uuid_bytes=uuid_bytes[perm],
            publisher=publisher[perm],
            basis=basis[perm],
            img_type=img_type[perm],
            id_a=id_a[perm],
            id_b=id_b[perm],
        )

    def uuid(self, row: int) -> str:
        """The uuid of one row (in sorted order)."""
        window = slice(row, row + 1)
        return str(uuid_strings(self.uuid_bytes[window], self.hex_uuid[window])[0].as_py())

    def table(self, start: int, stop: int, emb: pa.Array) -> pa.Table:
        """Rows [start, stop) with `emb`, in the exact schema."""
        window = slice(start, stop)
        source = self.source[window]
        names = self.display.take(pa.array(self.display_id[window]))
        columns: dict[str, pa.Array] = {
            "uuid": uuid_strings(self.uuid_bytes[window], self.hex_uuid[window]),
            "emb": emb,
            "source_dataset": pa.array(SOURCE_ORDER, pa.string()).take(pa.array(source)),
            "source_id": source_ids(source, self.id_a[window], self.id_b[window], self.taxa.page_id[self.leaf[window]]),
            **{c: names.column(c).combine_chunks() for c in (*RANKS, "scientific_name", "common_name")},
            "publisher": lookup(publishers(), self.publisher[window]),
            "basisOfRecord": lookup(sample_taxa.BASIS_OF_RECORD, self.basis[window]),
            "identifier": identifiers(source, self.publisher[window], self.id_a[window], self.id_b[window]),
            "img_type": lookup(img_types(), self.img_type[window]),
        }  # fmt: skip
        schema = arrow_schema(emb.type.list_size)
        return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


def _source_affinity(taxa: Taxa, source: str | None) -> np.ndarray:
    """How much each taxon is over- or under-represented in a source."""
    if source == "bioscan":  # insects from malaise traps, mostly flies and wasps
        boost = {
            "Diptera": 25.0,
            "Hymenoptera": 8.0,
            "Hemiptera": 4.0,
            "Coleoptera": 3.0,
            "Lepidoptera": 0.3,
        }
        insect = taxa.lineage[2] == "Insecta"
        return np.where(insect, [boost.get(o, 1.0) for o in taxa.lineage[3]], 0.0)
    if source == "fathomnet":
        return taxa.marine.astype(float)
    if source == "eol":  # one image per page: flatter than GBIF
        return taxa.weight**-0.2
    return np.ones(taxa.size)


def _variant_bits(rng: np.random.Generator, source: str | None, count: int) -> np.ndarray:
    bits = np.zeros(count, np.int64)
    for bit, rate in _VARIANT_RATES[source].items():
        bits |= np.where(rng.random(count) < rate, bit, 0)
    truncated = (bits & (_GENUS_ONLY | _FAMILY_ONLY)) != 0
    bits &= ~np.where(truncated, 0, _BOLD | _INFORMAL)  # only truncated rows get a BIN name
    return np.where((bits & _BOLD) != 0, bits & ~_INFORMAL, bits)


def _apply_anchors(taxa: Taxa, source: str | None, leaves: np.ndarray, bits: np.ndarray) -> None:
    at = 0
    for genus, epithet, anchor_source, count in _ANCHORS:
        if anchor_source == source:
            leaves[at : at + count] = taxa.index_of(genus, epithet)
            bits[at : at + count] &= _AUTHORITY | _BINOMIAL
            at += count


def _display_table(taxa: Taxa, keys: np.ndarray) -> pa.Table:
    """Strings per distinct (taxon, variant); key -1 is the all-_NULL display of the hex block."""
    hidden = keys < 0
    leaf = np.where(hidden, 0, keys // _VARIANTS)
    bits = np.where(hidden, 0, keys % _VARIANTS)

    def has(bit: int) -> np.ndarray:
        return (bits & bit) != 0

    kingdom, phylum, klass, order, family, genus = (col[leaf] for col in taxa.lineage)
    epithet = taxa.epithet[leaf]
    family_only = has(_FAMILY_ONLY)
    truncated = has(_GENUS_ONLY) | family_only
    binomial = _join(genus, epithet, " ")
    plain = taxa.name[leaf]
    authored = _join(plain, taxa.authority[leaf], " ")
    with_authority = np.where(authored == None, plain, authored)  # noqa: E711
    qualifiers = np.array(sample_taxa.INFORMAL_QUALIFIERS, dtype=object)
    informal = _join(np.where(family_only, family, genus), qualifiers[leaf % len(qualifiers)], " ")
    dirty = {"Animalia": "Metazoa", "Plantae": "Archaeplastida"}
    dirty_kingdom = object_array([dirty.get(k, k) for k in kingdom])

    columns = {
        "kingdom": np.where(has(_DIRTY_KINGDOM), dirty_kingdom, kingdom),
        "phylum": phylum,
        "class": klass,
        "order": order,
        "family": family,
        "genus": np.where(family_only, _NULL, genus),
        "species": np.where(truncated, _NULL, np.where(has(_BINOMIAL), binomial, epithet)),
        "scientific_name": np.select(
            [
                truncated & has(_BOLD),
                truncated & has(_INFORMAL),
                family_only,
                truncated,
                has(_AUTHORITY),
            ],
            [taxa.bold[leaf], informal, family, genus, with_authority],
            plain,
        ),
        "common_name": np.where(truncated | has(_NO_COMMON), _NULL, taxa.common[leaf]),
    }
    return pa.table(
        {
            name: pa.array(np.where(hidden, _NULL, values), pa.string())
            for name, values in columns.items()
        }
    )


def _join(left: np.ndarray, right: np.ndarray, sep: str) -> np.ndarray:
    """Element-wise `left + sep + right`, _NULL if either side is _NULL."""
    out = np.full(len(left), None, dtype=object)
    ok = (left != None) & (right != None)  # noqa: E711
    out[ok] = [f"{a}{sep}{b}" for a, b in zip(left[ok], right[ok], strict=True)]
    return out
