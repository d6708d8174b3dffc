"""A downstream consumer: a nearest-centroid species classifier on one published slice.

    python examples/nearest_centroid.py "family=Felidae"

Reads the slice through the catalog API (no path spelled out), holds out every fifth image
of each species (by uuid, so the split is stable), classifies the held-out images by the
nearest species centroid in cosine space, and prints the accuracy next to chance, and what
share of the mirror the slice is (counted over `mirror_files()`: one generation, even if a
resync publishes meanwhile).
"""

from __future__ import annotations

import argparse
import hashlib
import sys

import numpy as np
import pyarrow.parquet as pq

from tol_dagster.catalog import mirror_files, read_arrow


def embeddings(table) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The `emb` column as a float32 matrix (fixed-size lists flatten without copies)."""
    column = table.column("emb").combine_chunks()
    width = column.type.list_size
    return column.values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, width)


def held_out(uuid: str) -> bool:
    return hashlib.sha256(uuid.encode()).digest()[0] % 5 == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("key", nargs="?", default="family=Felidae")
    parser.add_argument("--config", default=None)
    parser.add_argument("--min-images", type=int, default=5, help="skip species with fewer images")
    args = parser.parse_args(argv)

    table = read_arrow(args.key, config=args.config)
    species = [
        None if g is None or s is None else (s if " " in s else f"{g} {s}")
        for g, s in zip(
            table.column("genus").to_pylist(), table.column("species").to_pylist(), strict=True
        )
    ]
    vectors = embeddings(table)
    # Centre on the slice's mean: BioCLIP 2 vectors share a large offset (see DATASET.md).
    vectors = vectors - vectors.mean(axis=0)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
    test = np.array([held_out(u) for u in table.column("uuid").to_pylist()])
    labels = np.array([s or "" for s in species])
    counts = {name: int(((labels == name) & ~test).sum()) for name in set(labels) if name}
    classes = sorted(name for name, n in counts.items() if n >= args.min_images)
    if len(classes) < 2:
        print(
            f"{args.key}: fewer than two species with {args.min_images}+ training images",
            file=sys.stderr,
        )
        return 2
    centroids = np.stack([vectors[(labels == name) & ~test].mean(axis=0) for name in classes])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    evaluated = test & np.isin(labels, classes)
    predicted = np.array(classes)[np.argmax(vectors[evaluated] @ centroids.T, axis=1)]
    accuracy = float((predicted == labels[evaluated]).mean())
    print(
        f"{args.key}: {len(classes)} species, {int((~test).sum())} training / {int(evaluated.sum())} "
        f"held-out images; nearest-centroid accuracy {accuracy:.3f} (chance {1 / len(classes):.3f})"
    )
    mirrored = sum(pq.read_metadata(path).num_rows for path in mirror_files(config=args.config))
    print(f"{args.key}: {table.num_rows} of the mirror's {mirrored} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
