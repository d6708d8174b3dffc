"""The sample's embeddings: BioCLIP 2-like vectors whose cosines follow the taxonomy.

Each vector is a shared mean plus one offset per rank from kingdom to species plus per-image
noise, scaled to BioCLIP 2's norms (unit norm for BioCLIP 2.5), so that centroids, nearest
neighbours and norm checks behave on the sample as on the real data.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import pyarrow as pa

from tol_dagster.devtools.sample_taxonomy import Taxa
from tol_dagster.schema import emb_type

#: Configs whose vectors are unit-norm upstream (BioCLIP 2.5); others get BioCLIP 2's norms.
UNIT_NORM_CONFIGS: frozenset[str] = frozenset({"bioclip-2.5-vith14_float16"})

# Embedding variance budget (fractions of a row's squared norm before scaling): the shared
# mean, one offset per rank from kingdom to species, and per-image noise. Expected cosines:
# same species ~0.89, same genus ~0.80, same family ~0.67, random pairs ~0.59 (as BioCLIP 2).
_MEAN_SHARE = 0.57
_RANK_SHARES = (0.02, 0.015, 0.015, 0.02, 0.03, 0.13, 0.09)
_NOISE_SHARE = 0.11
_OFFSET_DIM_VALUE = -7.3  # one dimension of the real mean sits here (at norm ~49)
_NORM_MEAN, _NORM_SIGMA, _NORM_RANGE = 49.0, 0.09, (36.5, 69.5)
_BLOCK_ROWS = 2048


class Embedder:
    """Vectors = global mean + nested offsets (kingdom … species) + noise, scaled per row."""

    def __init__(self, taxa: Taxa, *, seed: int, config: str, dim: int) -> None:
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
