"""A TreeOfLife-200M-Embeddings-shaped sample repo: sorted parquet files plus a dataset card.

Everything downstream (the local Hub, the mirror, the gate, slices, benchmarks) stands on this,
so it copies what matters about the real data (docs/DATASET.md): the exact schema and global
sort, upstream's row-group, compression and page-index settings, the source and kingdom shares,
Zipf tails, NULL holes mid-hierarchy, dirty values, awkward names, and embeddings whose norms and
cosine structure match BioCLIP 2's. Rows depend only on (rows, seed); a second config built into
the same folder holds the same uuids in the same order, as upstream configs do.

Per row only a few integers stay in memory (~70 bytes a row); strings and embeddings are made
one row group at a time (the next one in a worker thread while this one is written), so the
rest of the memory is bounded by the row-group size.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
import os
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tol_dagster.devtools import sample_taxa as taxa_data
from tol_dagster.errors import SettingsError
from tol_dagster.hub import card as card_mod
from tol_dagster.schema import (
    DEFAULT_CONFIG,
    METADATA_COLUMNS,
    RANKS,
    SORT_KEY,
    SOURCE_DATASETS,
    STRING_COLUMNS,
    arrow_schema,
    config_dim,
    emb_type,
)

#: `make demo`'s sample: builds in seconds, and every README taxon (Felidae, Puma concolor,
#: Primates, Nymphalidae, Danaus plexippus) spans several files and row groups.
DEMO_SAMPLE: dict[str, int] = {"rows": 120_000, "files": 4, "seed": 42, "row_group_size": 5_000}

#: Taxa the README uses as examples: (rank, value) pairs, checked by the tests.
README_TAXA: tuple[tuple[str, str], ...] = (
    ("family", "Felidae"),
    ("species", "Puma concolor"),
    ("order", "Primates"),
    ("family", "Nymphalidae"),
    ("species", "Danaus plexippus"),
)

#: Configs whose vectors are unit-norm upstream (BioCLIP 2.5); others get BioCLIP 2's norms.
UNIT_NORM_CONFIGS: frozenset[str] = frozenset({"bioclip-2.5-vith14_float16"})

ZSTD_LEVEL = 3

# Shares of rows: the old block of 32-hex uuids with no metadata, then sources of the rest.
_HEX_SHARE = 0.01
_SOURCE_SHARES: dict[str | None, float] = {
    "bioscan": 0.024,
    "eol": 0.025,
    "fathomnet": 0.0002,
    None: 0.001,
}
_INAT_SHARE_OF_GBIF = 0.61  # iNaturalist.org is ~58% of all rows

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

# Embedding variance budget (fractions of a row's squared norm before scaling): the shared
# mean, one offset per rank from kingdom to species, and per-image noise. Expected cosines:
# same species ~0.89, same genus ~0.80, same family ~0.67, random pairs ~0.59 (as BioCLIP 2).
_MEAN_SHARE = 0.57
_RANK_SHARES = (0.02, 0.015, 0.015, 0.02, 0.03, 0.13, 0.09)
_NOISE_SHARE = 0.11
_OFFSET_DIM_VALUE = -7.3  # one dimension of the real mean sits here (at norm ~49)
_NORM_MEAN, _NORM_SIGMA, _NORM_RANGE = 49.0, 0.09, (36.5, 69.5)
_BLOCK_ROWS = 2048


@dataclass(frozen=True)
class SampleReport:
    """What `build_sample` wrote and how fast."""

    config: str
    rows: int
    files: list[Path]
    bytes: int
    seconds: float
    rows_per_second: float


def build_sample(
    out: Path,
    *,
    rows: int,
    files: int,
    seed: int,
    config: str = DEFAULT_CONFIG,
    dim: int | None = None,
    row_group_size: int = 50_000,
) -> SampleReport:
    """Write `out/<config>/train-0000i-of-0000K.parquet` and add `config` to `out/README.md`.

    Same arguments give the same bytes. The table's content depends on `rows`, `seed`,
    `config` and `dim` only (`files` and `row_group_size` change the layout, not the rows), and
    uuids and metadata on `rows` and `seed` only, so configs in one folder align by uuid.
    """
    started = time.perf_counter()
    out = Path(out)
    dim = config_dim(config) if dim is None else dim
    _check_arguments(out, rows=rows, files=files, dim=dim, row_group_size=row_group_size)
    existing = _read_card(out)
    taxa = _Taxa.build(seed, rows)
    meta = _Rows.build(taxa, rows=rows, seed=seed)
    _check_alignment(out, existing, config, rows, meta.uuid(0))
    embedder = _Embedder(taxa, seed=seed, config=config, dim=dim)

    folder = out / config
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, rows, files + 1).round().astype(np.int64).tolist()
    per_file = [
        [(lo, min(lo + row_group_size, stop)) for lo in range(start, stop, row_group_size)]
        for start, stop in itertools.pairwise(bounds)
    ]
    paths = [folder / f"train-{index:05d}-of-{files:05d}.parquet" for index in range(files)]
    all_chunks = [chunk for chunks in per_file for chunk in chunks]
    with contextlib.closing(_row_group_tables(meta, embedder, all_chunks)) as tables:
        for path, chunks in zip(paths, per_file, strict=True):
            _write_file(path, dim, itertools.islice(tables, len(chunks)), row_group_size)
    for stale in sorted(set(folder.glob("train-*.parquet")) - set(paths)):
        stale.unlink()

    front = card_mod.with_config(existing, config, num_examples=rows)
    front.setdefault("pretty_name", "TreeOfLife-200M Embeddings (generated sample)")
    _replace_text(out / "README.md", card_mod.render_card(front, _card_body(front)))

    seconds = time.perf_counter() - started
    return SampleReport(
        config=config,
        rows=rows,
        files=paths,
        bytes=sum(p.stat().st_size for p in paths),
        seconds=seconds,
        rows_per_second=rows / seconds if seconds > 0 else float("inf"),
    )


def _check_arguments(out: Path, *, rows: int, files: int, dim: int, row_group_size: int) -> None:
    if rows < 1 or files < 1 or rows < files:
        raise SettingsError(f"sample {out}: need rows >= files >= 1, got rows={rows} files={files}")
    if dim < 1:
        raise SettingsError(f"sample {out}: --dim must be positive, got {dim}")
    if row_group_size < 1:
        raise SettingsError(
            f"sample {out}: --row-group-size must be positive, got {row_group_size}"
        )


def _read_card(out: Path) -> dict[str, Any]:
    path = out / "README.md"
    if not path.exists():
        return {}
    return card_mod.parse_card(path.read_text("utf-8"), source=str(path))


def _check_alignment(
    out: Path, card: dict[str, Any], config: str, rows: int, first_uuid: str
) -> None:
    """Configs in one folder must align 1:1 by uuid, so they must have been built alike."""
    for other in card_mod.config_names(card):
        files = sorted((out / other).glob("train-*.parquet"))
        if other == config or not files:
            continue
        other_rows = card_mod.expected_rows(card, other)
        if other_rows is not None and other_rows != rows:
            raise SettingsError(
                f"sample {out}: config {other} holds {other_rows} rows but {config} would hold "
                f"{rows}; configs in one repo align 1:1 by uuid: build with --rows {other_rows} "
                "and the same --seed, or into an empty folder"
            )
        first = pq.ParquetFile(files[0]).read_row_group(0, columns=["uuid"]).column(0)[0]
        if first.as_py() != first_uuid:
            raise SettingsError(
                f"sample {out}: config {other} was built with another --seed, so {config} would "
                "not align with it by uuid; use the same --seed, or build into an empty folder"
            )


def _card_body(front: dict[str, Any]) -> str:
    lines = [
        "",
        "# TreeOfLife-200M Embeddings (generated sample)",
        "",
        "Generated by `tol-dagster sample build` for development and tests. It has the layout,",
        "schema, sort order and parquet settings of `imageomics/TreeOfLife-200M-Embeddings`, with",
        "made-up rows and vectors: do not use it for science.",
        "",
        "| config | rows |",
        "|---|---|",
    ]
    for name in card_mod.config_names(front):
        lines.append(f"| {name} | {card_mod.expected_rows(front, name)} |")
    return "\n".join(lines) + "\n"


# --- taxa -----------------------------------------------------------------------------------


#: NULL for `np.where` over object arrays of strings.
_NONE = np.array(None, dtype=object)


def _obj(values: Sequence[Any]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


@dataclass(frozen=True)
class _Taxa:
    """Leaf taxa (mostly species) as parallel arrays; rows point at them by index."""

    lineage: tuple[np.ndarray, ...]  # kingdom .. genus, object arrays (None = NULL)
    epithet: np.ndarray
    name: np.ndarray  # scientific name without authority
    authority: np.ndarray  # None when unknown
    common: np.ndarray
    bold: np.ndarray  # BOLD BIN, e.g. BOLD:ACY0305
    group: np.ndarray  # img_type group (plant, insect, birds, ...)
    weight: np.ndarray  # share of rows
    marine: np.ndarray
    page_id: np.ndarray  # EOL page id

    @property
    def size(self) -> int:
        return len(self.weight)

    def index_of(self, genus: str, epithet: str) -> int:
        hits = np.flatnonzero((self.lineage[5] == genus) & (self.epithet == epithet))
        return int(hits[0])

    @classmethod
    def build(cls, seed: int, rows: int) -> _Taxa:
        """Real lineages plus a generated long tail, sized to the sample (~60 rows a leaf)."""
        return _TaxaBuilder(
            np.random.default_rng([seed, 1]), leaves=min(max(rows // 60, 300), 40_000)
        ).build()


class _TaxaBuilder:
    def __init__(self, rng: np.random.Generator, leaves: int) -> None:
        self.rng = rng
        self.leaves = leaves
        self.records: list[dict[str, Any]] = []
        used = [row.lineage for row in taxa_data.SPECIES]
        self.used_names = {name for lineage in used for name in lineage[4:6] if name}

    def build(self) -> _Taxa:
        orders = taxa_data.ORDERS
        scale = {
            k: pct / sum(o.percent for o in orders if o.kingdom == k)
            for k, pct in taxa_data.KINGDOM_PERCENT.items()
        }
        order_weight = np.array([o.percent * scale[o.kingdom] for o in orders]) / 100
        hand: dict[tuple[str | None, ...], list[taxa_data.SpeciesRow]] = {}
        for species in taxa_data.SPECIES:
            hand.setdefault(species.lineage[:4], []).append(species)
        proc_weight = np.array(
            [
                max(w - sum(s.percent for s in hand.get(_order_key(o), [])) / 100, 0.0)
                for o, w in zip(orders, order_weight, strict=True)
            ]
        )
        budget = proc_weight**0.8
        proc_leaves = np.maximum(np.rint(self.leaves * budget / budget.sum()), 1).astype(int)
        for order, weight, n in zip(orders, proc_weight, proc_leaves, strict=True):
            for species in hand.get(_order_key(order), []):
                self._add_hand(order, species)
            if weight > 0:
                self._add_order_tail(order, float(weight), int(n))
        self._add_incertae_sedis()
        return self._arrays()

    def _add_hand(self, order: taxa_data.OrderRow, species: taxa_data.SpeciesRow) -> None:
        self.records.append(
            {
                "lineage": species.lineage,
                "epithet": species.epithet,
                "name": f"{species.lineage[5]} {species.epithet}",
                "authority": species.authority,
                "common": species.common_name,
                "weight": species.percent / 100,
                "order": order,
            }
        )

    def _add_order_tail(self, order: taxa_data.OrderRow, weight: float, leaves: int) -> None:
        """Generated families, genera and species under a real order, Zipf-like at each rank."""
        rng = self.rng
        family_sizes = _zipf_split(rng, leaves, max(1, round(leaves**0.55)))
        family_shares = _shares(rng, family_sizes)
        animal = order.kingdom == "Animalia"
        for family_size, family_share in zip(family_sizes, family_shares, strict=True):
            family = self._unique(lambda: _stem(rng) + ("idae" if animal else "aceae"))
            genus_sizes = _zipf_split(rng, family_size, max(1, round(family_size**0.6)))
            for genus_size, genus_share in zip(genus_sizes, _shares(rng, genus_sizes), strict=True):
                genus = self._unique(lambda: _genus_name(rng, animal))
                epithets = _epithets(rng, genus_size, genus)
                species_shares = np.arange(1, genus_size + 1) ** -1.3 * rng.lognormal(
                    0, 0.3, genus_size
                )
                species_shares /= species_shares.sum()
                for epithet, species_share in zip(epithets, species_shares, strict=True):
                    self.records.append(
                        {
                            "lineage": (
                                order.kingdom,
                                order.phylum,
                                order.klass,
                                order.order,
                                family,
                                genus,
                            ),
                            "epithet": epithet,
                            "name": f"{genus} {epithet}",
                            "authority": _authority(rng, animal),
                            "common": _common_name(rng, genus, order.noun),
                            "weight": weight * family_share * genus_share * species_share,
                            "order": order,
                        }
                    )

    def _add_incertae_sedis(self) -> None:
        """Unresolved kingdom: lower ranks NULL, only a scientific name."""
        n = max(2, self.leaves // 300)
        shares = _shares(self.rng, list(range(n, 0, -1)))
        for share in shares:
            genus = self._unique(lambda: _genus_name(self.rng, animal=False))
            self.records.append(
                {
                    "lineage": (taxa_data.INCERTAE_SEDIS, None, None, None, None, None),
                    "epithet": None,
                    "name": f"{genus} {self.rng.choice(taxa_data.EPITHETS)}",
                    "authority": None,
                    "common": None,
                    "weight": taxa_data.INCERTAE_SEDIS_PERCENT / 100 * share,
                    "order": None,
                }
            )

    def _unique(self, make: Callable[[], str]) -> str:
        while (name := make()) in self.used_names:
            pass
        self.used_names.add(name)
        return name

    def _arrays(self) -> _Taxa:
        rng = self.rng
        records = self.records
        n = len(records)
        letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
        codes = letters[rng.integers(0, 26, (n, 2))]
        digits = rng.integers(0, 10_000, n)
        bold = [f"BOLD:A{a}{b}{d:04d}" for (a, b), d in zip(codes, digits, strict=True)]
        return _Taxa(
            lineage=tuple(_obj([r["lineage"][i] for r in records]) for i in range(6)),
            epithet=_obj([r["epithet"] for r in records]),
            name=_obj([r["name"] for r in records]),
            authority=_obj([r["authority"] for r in records]),
            common=_obj([r["common"] for r in records]),
            bold=_obj(bold),
            group=_obj([_img_group(r["lineage"]) for r in records]),
            weight=np.array([r["weight"] for r in records]),
            marine=np.array([bool(r["order"] and r["order"].marine) for r in records]),
            page_id=rng.integers(1_000, 60_000_000, n),
        )


def _order_key(order: taxa_data.OrderRow) -> tuple[str | None, ...]:
    return (order.kingdom, order.phylum, order.klass, order.order)


def _zipf_split(rng: np.random.Generator, total: int, parts: int) -> list[int]:
    """`total` leaves into `parts` groups of at least one, sizes falling off like Zipf."""
    parts = min(parts, total)
    weights = np.arange(1, parts + 1) ** -1.0 * rng.lognormal(0, 0.3, parts)
    return [int(x) + 1 for x in rng.multinomial(total - parts, weights / weights.sum())]


def _shares(rng: np.random.Generator, sizes: Sequence[int]) -> np.ndarray:
    """Row shares of groups: bigger groups get more rows, with lognormal scatter."""
    raw = np.asarray(sizes, dtype=float) ** 1.1 * rng.lognormal(0, 1.0, len(sizes))
    return raw / raw.sum()


def _stem(rng: np.random.Generator) -> str:
    first, middle, last = taxa_data.STEM_PARTS
    extra = str(rng.choice(middle)) if rng.random() < 0.5 else ""
    return f"{rng.choice(first)}{rng.choice(middle)}{extra}{rng.choice(last)}"


def _genus_name(rng: np.random.Generator, animal: bool) -> str:
    endings = taxa_data.GENUS_ENDINGS["Animalia" if animal else "other"]
    return _stem(rng) + str(rng.choice(endings))


def _epithets(rng: np.random.Generator, count: int, genus: str) -> list[str]:
    pool = list(rng.permutation(taxa_data.EPITHETS))
    extra = [f"{genus.lower()[:5]}{suffix}ensis" for suffix in "abcdefghijklmnopqrstuvwxyz"]
    return [str(x) for x in (pool + extra * (count // len(extra) + 1))[:count]]


def _authority(rng: np.random.Generator, animal: bool) -> str:
    if animal:
        author = rng.choice(taxa_data.ZOO_AUTHORS)
        text = f"{author}, {rng.integers(1758, 2024)}"
        return f"({text})" if rng.random() < 0.4 else text
    author = str(rng.choice(taxa_data.BOT_AUTHORS))
    return f"({rng.choice(taxa_data.BOT_AUTHORS)}) {author}" if rng.random() < 0.3 else author


def _common_name(rng: np.random.Generator, genus: str, noun: str) -> str | None:
    draw = rng.random()
    if draw < 0.15:
        return None
    if draw < 0.3:
        return f"{rng.choice(taxa_data.SURNAMES)}'s {noun}"
    return f"{rng.choice(taxa_data.ADJECTIVES)} {genus} {noun}"


def _img_group(lineage: tuple[str | None, ...]) -> str:
    """Which `Museum Specimen: …` img_type a taxon's specimens get."""
    kingdom, phylum, klass = lineage[:3]
    if kingdom == "Plantae":
        return "plant"
    if kingdom == "Fungi":
        return "fungi"
    if kingdom == taxa_data.INCERTAE_SEDIS:
        return "uncategorized"
    if kingdom != "Animalia":
        return "microbiology"
    by_class = {"Insecta": "insect", "Aves": "birds", "Mammalia": "mammals", "Amphibia": "amphibians",
                "Squamata": "others", "Testudines": "others", "Elasmobranchii": "fishes"}  # fmt: skip
    if klass in by_class:
        return by_class[klass]
    if phylum == "Chordata":
        return "fishes"
    return "invertebrate"


# --- rows -----------------------------------------------------------------------------------

#: Source names in byte order with NULL last: the sort's first key, as small integer codes.
_SOURCE_ORDER: tuple[str | None, ...] = (*sorted(SOURCE_DATASETS, key=str.encode), None)
_SOURCE_CODE: dict[str | None, int] = {name: code for code, name in enumerate(_SOURCE_ORDER)}
_NULL_SOURCE = _SOURCE_CODE[None]


@dataclass(frozen=True)
class _Rows:
    """Every row in sorted order, as integer arrays; strings are made per row group."""

    taxa: _Taxa
    display: pa.Table  # distinct (taxon, variant) strings: ranks, scientific_name, common_name
    source: np.ndarray  # code into _SOURCE_ORDER
    display_id: np.ndarray
    leaf: np.ndarray  # taxon behind the embedding (also for rows whose metadata is NULL)
    hex_uuid: np.ndarray  # the old block: 32-hex uuid, all other metadata NULL
    uuid_bytes: np.ndarray  # (rows, 16) uint8
    publisher: np.ndarray  # index into _publishers(), -1 = NULL
    basis: np.ndarray  # index into BASIS_OF_RECORD, -1 = NULL
    img_type: np.ndarray  # index into _img_types(), -1 = NULL
    id_a: np.ndarray  # random ids behind source_id and identifier
    id_b: np.ndarray

    @classmethod
    def build(cls, taxa: _Taxa, *, rows: int, seed: int) -> _Rows:
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
            source_parts.append(np.full(count, _SOURCE_CODE[name], np.int8))
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

        publisher, basis, img_type = _gbif_fields(rng, taxa, leaf, source == _SOURCE_CODE["gbif"])
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
        return str(_uuid_strings(self.uuid_bytes[window], self.hex_uuid[window])[0].as_py())

    def table(self, start: int, stop: int, emb: pa.Array) -> pa.Table:
        """Rows [start, stop) with `emb`, in the exact schema."""
        window = slice(start, stop)
        source = self.source[window]
        names = self.display.take(pa.array(self.display_id[window]))
        columns: dict[str, pa.Array] = {
            "uuid": _uuid_strings(self.uuid_bytes[window], self.hex_uuid[window]),
            "emb": emb,
            "source_dataset": pa.array(_SOURCE_ORDER, pa.string()).take(pa.array(source)),
            "source_id": _source_ids(source, self.id_a[window], self.id_b[window], self.taxa.page_id[self.leaf[window]]),
            **{c: names.column(c).combine_chunks() for c in (*RANKS, "scientific_name", "common_name")},
            "publisher": _lookup(_publishers(), self.publisher[window]),
            "basisOfRecord": _lookup(taxa_data.BASIS_OF_RECORD, self.basis[window]),
            "identifier": _identifiers(source, self.publisher[window], self.id_a[window], self.id_b[window]),
            "img_type": _lookup(_img_types(), self.img_type[window]),
        }  # fmt: skip
        schema = arrow_schema(emb.type.list_size)
        return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


def _source_affinity(taxa: _Taxa, source: str | None) -> np.ndarray:
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


def _apply_anchors(taxa: _Taxa, source: str | None, leaves: np.ndarray, bits: np.ndarray) -> None:
    at = 0
    for genus, epithet, anchor_source, count in _ANCHORS:
        if anchor_source == source:
            leaves[at : at + count] = taxa.index_of(genus, epithet)
            bits[at : at + count] &= _AUTHORITY | _BINOMIAL
            at += count


def _display_table(taxa: _Taxa, keys: np.ndarray) -> pa.Table:
    """Strings per distinct (taxon, variant); key -1 is the all-NULL display of the hex block."""
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
    qualifiers = np.array(taxa_data.INFORMAL_QUALIFIERS, dtype=object)
    informal = _join(np.where(family_only, family, genus), qualifiers[leaf % len(qualifiers)], " ")
    dirty = {"Animalia": "Metazoa", "Plantae": "Archaeplastida"}
    dirty_kingdom = _obj([dirty.get(k, k) for k in kingdom])

    columns = {
        "kingdom": np.where(has(_DIRTY_KINGDOM), dirty_kingdom, kingdom),
        "phylum": phylum,
        "class": klass,
        "order": order,
        "family": family,
        "genus": np.where(family_only, _NONE, genus),
        "species": np.where(truncated, _NONE, np.where(has(_BINOMIAL), binomial, epithet)),
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
        "common_name": np.where(truncated | has(_NO_COMMON), _NONE, taxa.common[leaf]),
    }
    return pa.table(
        {
            name: pa.array(np.where(hidden, _NONE, values), pa.string())
            for name, values in columns.items()
        }
    )


def _join(left: np.ndarray, right: np.ndarray, sep: str) -> np.ndarray:
    """Element-wise `left + sep + right`, NULL if either side is NULL."""
    out = np.full(len(left), None, dtype=object)
    ok = (left != None) & (right != None)  # noqa: E711
    out[ok] = [f"{a}{sep}{b}" for a, b in zip(left[ok], right[ok], strict=True)]
    return out


def _gbif_fields(
    rng: np.random.Generator, taxa: _Taxa, leaf: np.ndarray, gbif: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """publisher, basisOfRecord and img_type indices (-1 = NULL) for GBIF rows."""
    n = len(leaf)
    table = taxa_data.PUBLISHERS
    tail = np.arange(1, len(table) + 1) ** -1.3
    weights = np.concatenate([[_INAT_SHARE_OF_GBIF], tail / tail.sum() * (1 - _INAT_SHARE_OF_GBIF)])
    publisher = rng.choice(len(weights), size=n, p=weights)
    group = taxa.group[leaf]
    plant_like = (group == "plant") | (group == "fungi")
    kind = _obj(["citizen", *(k for _, k, _ in table)])[publisher]
    scope = _obj(["any", *(s for _, _, s in table)])[publisher]
    misfit = ((scope == "plant") & ~plant_like) | ((scope == "animal") & plant_like)
    misfit |= (kind == "camera") & (group != "mammals") & (group != "birds")
    publisher = np.where(misfit, 0, publisher)  # iNaturalist.org takes anything
    kind = np.where(misfit, "citizen", kind)

    basis = np.full(n, -1, np.int64)
    for name, weights_of_kind in taxa_data.BASIS_WEIGHTS.items():
        mine = kind == name
        basis[mine] = rng.choice(len(weights_of_kind), size=int(mine.sum()), p=weights_of_kind)

    img_types = _img_types()
    museum = np.array([img_types.index(taxa_data.IMG_MUSEUM[g]) for g in group])
    img_type = np.select(
        [kind == "citizen", kind == "camera"],
        [img_types.index(taxa_data.IMG_CITIZEN), img_types.index(taxa_data.IMG_CAMERA)],
        museum,
    )
    return (
        np.where(gbif, publisher, -1),
        np.where(gbif, basis, -1),
        np.where(gbif, img_type, -1),
    )


def _publishers() -> tuple[str, ...]:
    return ("iNaturalist.org", *(name for name, _, _ in taxa_data.PUBLISHERS))


def _img_types() -> tuple[str, ...]:
    return (taxa_data.IMG_CITIZEN, taxa_data.IMG_CAMERA, *taxa_data.IMG_MUSEUM.values())


def _lookup(values: Sequence[str], index: np.ndarray) -> pa.Array:
    return pa.array(values, pa.string()).take(pa.array(index, mask=index < 0))


_HEX = np.array([list(f"{i:02x}".encode()) for i in range(256)], dtype=np.uint8)


def _uuid_strings(raw: np.ndarray, hex_only: np.ndarray) -> pa.Array:
    """UUIDv4 text, or 32 hex digits without hyphens for the old block."""
    digits = _HEX[raw].reshape(len(raw), 32)
    dashed = np.full((len(raw), 36), ord("-"), np.uint8)
    for start, stop in ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32)):
        offset = start + (start > 0) + (start > 8) + (start > 12) + (start > 16)
        dashed[:, offset : offset + stop - start] = digits[:, start:stop]
    as_text = [pa.array(np.ascontiguousarray(m).view(f"S{m.shape[1]}").ravel()).cast(pa.string())
               for m in (digits, dashed)]  # fmt: skip
    return pc.if_else(pa.array(hex_only), as_text[0], as_text[1])


def _source_ids(
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
    box = _uuid_strings(np.concatenate([id_a.astype(">u8").view(np.uint8).reshape(-1, 8),
                                        id_b.astype(">u8").view(np.uint8).reshape(-1, 8)], axis=1),
                        np.zeros(len(id_a), bool))  # fmt: skip
    return _by_source(source, {"gbif": a, "eol": eol, "bioscan": bioscan, "fathomnet": box})


def _identifiers(
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
        out = pc.if_else(pa.array(source == _SOURCE_CODE[name]), array, out)
    return out


# --- embeddings ---------------------------------------------------------------------------


class _Embedder:
    """Vectors = global mean + nested offsets (kingdom … species) + noise, scaled per row."""

    def __init__(self, taxa: _Taxa, *, seed: int, config: str, dim: int) -> None:
        digest = int.from_bytes(hashlib.sha256(config.encode()).digest()[:8], "big")
        self.key = [seed, digest, dim]
        self.dim = dim
        self.unit_norm = config in UNIT_NORM_CONFIGS
        rng = np.random.default_rng([*self.key, 3])
        # Some dimensions vary more than others (real per-dimension std ~0.8-2.9).
        spread = np.clip(rng.lognormal(0, 0.3, dim), 0.8, 3.0)
        self.spread = (spread / np.sqrt(np.mean(spread**2))).astype(np.float32)
        # The mean holds _MEAN_SHARE of the squared norm, one dimension pinned at the real offset.
        pinned = int(rng.integers(dim))
        offset = _OFFSET_DIM_VALUE * math.sqrt(dim) / _NORM_MEAN
        mean = rng.standard_normal(dim)
        mean[pinned] = 0.0
        if dim > 1:
            mean *= math.sqrt(_MEAN_SHARE * dim - offset**2) / np.linalg.norm(mean)
        mean[pinned] = offset
        centroid = np.tile(mean.astype(np.float32), (taxa.size, 1))
        paths: list[tuple[Any, ...]] = [()] * taxa.size
        for depth, share in enumerate(_RANK_SHARES):
            if depth < len(taxa.lineage):
                paths = [(*p, name) for p, name in zip(paths, taxa.lineage[depth], strict=True)]
                nodes: dict[tuple[Any, ...], int] = {}
                node_of = np.array([nodes.setdefault(p, len(nodes)) for p in paths])
            else:  # species: every leaf is its own node
                node_of = np.arange(taxa.size)
            offsets = rng.standard_normal((int(node_of.max()) + 1, dim), dtype=np.float32)
            centroid += offsets[node_of] * (math.sqrt(share) * self.spread)
        # Rows are rescaled to their target norm last: pin the offset for that scale.
        weight = taxa.weight / taxa.weight.sum()
        squared = float(weight @ np.einsum("ij,ij->i", centroid, centroid)) + _NOISE_SHARE * dim
        desired = _OFFSET_DIM_VALUE * math.sqrt(squared) / _NORM_MEAN
        centroid[:, pinned] += desired - float(weight @ centroid[:, pinned])
        self.centroid = centroid
        # Uniform 16-bit noise scaled to _NOISE_SHARE of the variance and centred on zero.
        self.noise_scale = (math.sqrt(_NOISE_SHARE * 12) / 65536 * self.spread).astype(np.float32)
        self.noise_shift = (-32767.5 * self.noise_scale).astype(np.float32)

    def vectors(self, leaf: np.ndarray, first_row: int) -> pa.Array:
        """`emb` for consecutive rows starting at `first_row`, one per taxon in `leaf`.

        Noise comes from a generator per fixed block of rows, so a row's vector does not depend
        on how the rows are cut into files and row groups. It is uniform from raw random bytes,
        3x cheaper than normal draws; its shape is invisible next to the Gaussian offsets and
        the cosines are the same. Blocks also keep temporaries small and reused.
        """
        n = len(leaf)
        out = np.empty((n, self.dim), np.float16)
        stop = first_row + n
        for block in range(first_row // _BLOCK_ROWS, (stop - 1) // _BLOCK_ROWS + 1):
            base = block * _BLOCK_ROWS
            lo, hi = max(first_row, base), min(stop, base + _BLOCK_ROWS)
            rng = np.random.default_rng([*self.key, 4, block])
            noise = np.frombuffer(rng.bytes(_BLOCK_ROWS * self.dim * 2), "<u2")
            noise = noise.reshape(_BLOCK_ROWS, self.dim)[lo - base : hi - base]
            if self.unit_norm:
                target = np.ones(hi - lo, np.float32)
            else:
                draws = (
                    _NORM_MEAN * rng.lognormal(0, _NORM_SIGMA, _BLOCK_ROWS)[lo - base : hi - base]
                )
                target = np.clip(draws, *_NORM_RANGE)
            x = np.take(self.centroid, leaf[lo - first_row : hi - first_row], axis=0)
            x += noise * self.noise_scale
            x += self.noise_shift
            x *= (target / np.linalg.norm(x, axis=1)).astype(np.float32)[:, None]
            out[lo - first_row : hi - first_row] = x
        return pa.FixedSizeListArray.from_arrays(pa.array(out.ravel()), type=emb_type(self.dim))


# --- writing -------------------------------------------------------------------------------


def _row_group_tables(
    meta: _Rows, embedder: _Embedder, chunks: Sequence[tuple[int, int]]
) -> Generator[pa.Table]:
    """Row groups in order; the next one is built in a worker thread while this one is written
    (numpy's generators and parquet encoding release the GIL)."""

    def make(group: int) -> pa.Table:
        lo, hi = chunks[group]
        return meta.table(lo, hi, embedder.vectors(meta.leaf[lo:hi], lo))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sample") as pool:
        pending = [pool.submit(make, 0)] if chunks else []
        for group in range(len(chunks)):
            table = pending.pop().result()
            if group + 1 < len(chunks):
                pending.append(pool.submit(make, group + 1))
            yield table


def _write_file(path: Path, dim: int, tables: Iterable[pa.Table], row_group_size: int) -> None:
    """One parquet file with upstream's settings, renamed into place when complete."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with pq.ParquetWriter(
            tmp,
            arrow_schema(dim),
            compression="zstd",
            compression_level=ZSTD_LEVEL,
            write_page_index=True,
            use_dictionary=list(STRING_COLUMNS),
            write_statistics=list(METADATA_COLUMNS),
        ) as writer:
            for table in tables:
                writer.write_table(table, row_group_size=row_group_size)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _replace_text(path: Path, text: str) -> None:
    """Write a whole file or leave the old one: a Hub serving the folder never sees half."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, "utf-8")
    os.replace(tmp, path)
