"""When several configs are mirrored: each holds the first one's uuids in the same order
(upstream promises 1:1 alignment by uuid). A check on the other config's mirror."""

from collections.abc import Sequence
from dataclasses import replace

import dagster as dg

from tol_dagster.defs.failures import in_words
from tol_dagster.defs.keys import asset_key, safe_name
from tol_dagster.defs.metadata import check_result
from tol_dagster.defs.resources import StorageResource
from tol_dagster.store import generations
from tol_dagster.validation.alignment import check_configs_aligned


def build_alignment_checks(configs: Sequence[str]) -> list[dg.AssetChecksDefinition]:
    """One check per config after the first, against the first."""
    return [_alignment_check(configs[0], other) for other in configs[1:]]


def _alignment_check(reference: str, other: str) -> dg.AssetChecksDefinition:
    name = f"uuids_aligned_with_{safe_name(reference)}"

    @dg.asset_check(
        asset=asset_key(other, "mirror"),
        name=name,
        additional_deps=[asset_key(reference, "mirror")],
        description=f"Same uuids in the same order as `{reference}`.",
    )
    @in_words
    def aligned(storage: StorageResource) -> dg.AssetCheckResult:
        layout = storage.layout
        with (
            generations.pin_generation(layout, reference) as pin_a,
            generations.pin_generation(layout, other) as pin_b,
        ):
            result = check_configs_aligned(
                pin_a.paths(), pin_b.paths(), name_a=reference, name_b=other
            )
        return check_result(replace(result, check=name), asset_key(other, "mirror"))

    return aligned
