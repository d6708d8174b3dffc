"""The sample's leaf taxa: real lineages from `sample_taxa` plus a generated long tail.

Kingdoms and orders keep upstream's shares of rows; under each real order, generated families,
genera and species fall off like Zipf at every rank, with plausible Latin names, authorities
and common names, so that slices, summaries and centroids meet the long tails they meet upstream.
Rows point at these leaves by index (`sample_rows`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tol_dagster.devtools import sample_taxa


def object_array(values: Sequence[Any]) -> np.ndarray:
    """A 1-D object array of `values` (np.array would make a 2-D one of tuples)."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


@dataclass(frozen=True)
class Taxa:
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
    def build(cls, seed: int, rows: int) -> Taxa:
        """Real lineages plus a generated long tail, sized to the sample (~60 rows a leaf)."""
        return _TaxaBuilder(
            np.random.default_rng([seed, 1]), leaves=min(max(rows // 60, 300), 40_000)
        ).build()


class _TaxaBuilder:
    """Leaf records, the hand-written species of each order first, then its generated tail."""

    def __init__(self, rng: np.random.Generator, leaves: int) -> None:
        self.rng = rng
        self.leaves = leaves
        self.records: list[dict[str, Any]] = []
        used = [row.lineage for row in sample_taxa.SPECIES]
        self.used_names = {name for lineage in used for name in lineage[4:6] if name}

    def build(self) -> Taxa:
        """Spread the leaves over the real orders by their share of rows, then make the arrays."""
        orders = sample_taxa.ORDERS
        scale = {
            k: pct / sum(o.percent for o in orders if o.kingdom == k)
            for k, pct in sample_taxa.KINGDOM_PERCENT.items()
        }
        order_weight = np.array([o.percent * scale[o.kingdom] for o in orders]) / 100
        hand: dict[tuple[str | None, ...], list[sample_taxa.SpeciesRow]] = {}
        for species in sample_taxa.SPECIES:
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

    def _add_hand(self, order: sample_taxa.OrderRow, species: sample_taxa.SpeciesRow) -> None:
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

    def _add_order_tail(self, order: sample_taxa.OrderRow, weight: float, leaves: int) -> None:
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
                    "lineage": (sample_taxa.INCERTAE_SEDIS, None, None, None, None, None),
                    "epithet": None,
                    "name": f"{genus} {self.rng.choice(sample_taxa.EPITHETS)}",
                    "authority": None,
                    "common": None,
                    "weight": sample_taxa.INCERTAE_SEDIS_PERCENT / 100 * share,
                    "order": None,
                }
            )

    def _unique(self, make: Callable[[], str]) -> str:
        while (name := make()) in self.used_names:
            pass
        self.used_names.add(name)
        return name

    def _arrays(self) -> Taxa:
        rng = self.rng
        records = self.records
        n = len(records)
        letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
        codes = letters[rng.integers(0, 26, (n, 2))]
        digits = rng.integers(0, 10_000, n)
        bold = [f"BOLD:A{a}{b}{d:04d}" for (a, b), d in zip(codes, digits, strict=True)]
        return Taxa(
            lineage=tuple(object_array([r["lineage"][i] for r in records]) for i in range(6)),
            epithet=object_array([r["epithet"] for r in records]),
            name=object_array([r["name"] for r in records]),
            authority=object_array([r["authority"] for r in records]),
            common=object_array([r["common"] for r in records]),
            bold=object_array(bold),
            group=object_array([_img_group(r["lineage"]) for r in records]),
            weight=np.array([r["weight"] for r in records]),
            marine=np.array([bool(r["order"] and r["order"].marine) for r in records]),
            page_id=rng.integers(1_000, 60_000_000, n),
        )


def _order_key(order: sample_taxa.OrderRow) -> tuple[str | None, ...]:
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
    first, middle, last = sample_taxa.STEM_PARTS
    extra = str(rng.choice(middle)) if rng.random() < 0.5 else ""
    return f"{rng.choice(first)}{rng.choice(middle)}{extra}{rng.choice(last)}"


def _genus_name(rng: np.random.Generator, animal: bool) -> str:
    endings = sample_taxa.GENUS_ENDINGS["Animalia" if animal else "other"]
    return _stem(rng) + str(rng.choice(endings))


def _epithets(rng: np.random.Generator, count: int, genus: str) -> list[str]:
    pool = list(rng.permutation(sample_taxa.EPITHETS))
    extra = [f"{genus.lower()[:5]}{suffix}ensis" for suffix in "abcdefghijklmnopqrstuvwxyz"]
    return [str(x) for x in (pool + extra * (count // len(extra) + 1))[:count]]


def _authority(rng: np.random.Generator, animal: bool) -> str:
    if animal:
        author = rng.choice(sample_taxa.ZOO_AUTHORS)
        text = f"{author}, {rng.integers(1758, 2024)}"
        return f"({text})" if rng.random() < 0.4 else text
    author = str(rng.choice(sample_taxa.BOT_AUTHORS))
    return f"({rng.choice(sample_taxa.BOT_AUTHORS)}) {author}" if rng.random() < 0.3 else author


def _common_name(rng: np.random.Generator, genus: str, noun: str) -> str | None:
    draw = rng.random()
    if draw < 0.15:
        return None
    if draw < 0.3:
        return f"{rng.choice(sample_taxa.SURNAMES)}'s {noun}"
    return f"{rng.choice(sample_taxa.ADJECTIVES)} {genus} {noun}"


def _img_group(lineage: tuple[str | None, ...]) -> str:
    """Which `Museum Specimen: …` img_type a taxon's specimens get."""
    kingdom, phylum, klass = lineage[:3]
    if kingdom == "Plantae":
        return "plant"
    if kingdom == "Fungi":
        return "fungi"
    if kingdom == sample_taxa.INCERTAE_SEDIS:
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
