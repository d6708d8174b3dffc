"""The slices' dynamic partitions: one partitions definition per config, one partition per
slice key (`family=Felidae`, `kingdom=Animalia/genus=Morus`).

Defined here once and used by the `slices` asset, the catalog (only live partitions are
listed), `mirror_change_sensor` (declared slices become partitions) and the command line
(`tol-dagster slice` adds one, `slices remove` deletes one).
"""

from __future__ import annotations

import functools

import dagster as dg
import sqlalchemy.exc

from tol_dagster.defs.keys import safe_name
from tol_dagster.schema import RANKS


def slices_partitions_name(config: str) -> str:
    """The name of `tol/<config>/slices`'s partitions, in the definitions and the instance."""
    return f"slices_{safe_name(config)}"


@functools.cache
def slice_partitions(config: str) -> dg.DynamicPartitionsDefinition:
    """The partitions definition of `tol/<config>/slices`."""
    return dg.DynamicPartitionsDefinition(name=slices_partitions_name(config))


def slice_partition_keys(instance: dg.DagsterInstance, config: str) -> list[str]:
    """The slice keys that are partitions of `config` in `instance` now."""
    return list(instance.get_dynamic_partitions(slices_partitions_name(config)))


def add_slice_partition(instance: dg.DagsterInstance, config: str, key: str) -> None:
    """Make `key` a partition of `config`'s slices. On SQLite, Dagster inserts a new key after
    reading that it is missing: commands adding it at the same instant (two `tol-dagster slice`
    of one key) all insert, and all but one fail on its unique index; those find it added."""
    name = slices_partitions_name(config)
    try:
        instance.add_dynamic_partitions(name, [key])
    except sqlalchemy.exc.IntegrityError:
        if not instance.has_dynamic_partition(name, key):
            raise


#: The partitions of `tol/<config>/rank_slices`: one per rank a whole rank can be published by.
RANK_PARTITIONS = dg.StaticPartitionsDefinition(list(RANKS))
