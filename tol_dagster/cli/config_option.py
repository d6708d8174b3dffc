"""`--config`: which of the configured configs (TOL_CONFIGS) a command works on.

A name outside TOL_CONFIGS is refused (exit 2) before anything runs, naming where to add it.
"""

from __future__ import annotations

from tol_dagster.errors import SettingsError
from tol_dagster.settings import Settings


def select_configs(settings: Settings, config: str | None) -> tuple[str, ...]:
    """`--config` alone, or every config in TOL_CONFIGS when it is not given."""
    if config is None:
        return settings.configs
    if config not in settings.configs:
        raise SettingsError(
            f"--config {config!r} is not configured; TOL_CONFIGS={','.join(settings.configs)} "
            f"(add it there to mirror it)"
        )
    return (config,)


def one_config(settings: Settings, config: str | None) -> str:
    """`--config`, or the first of TOL_CONFIGS (commands that work on one config)."""
    return select_configs(settings, config)[0]
