"""The dataset card's YAML front matter: parse it, read the expected row count per config, write it.

Hub cards start with `---`, a YAML mapping, `---`, then markdown. The Hub serves the mapping as
`cardData`; `configs` names each config's files and `dataset_info` its split sizes. The sample
generator writes cards in this shape and the local Hub and the mirror read them back, so all
three go through these functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from tol_dagster.errors import UpstreamError

_FENCE = "---"


def parse_card(text: str, *, source: str = "README.md") -> dict[str, Any]:
    """The front matter of a card as a dict; `{}` when the card has none (the Hub does the same)."""
    front, _ = _split(text, source)
    return front


def card_body(text: str, *, source: str = "README.md") -> str:
    """The markdown after the front matter (the whole text when there is none)."""
    _, body = _split(text, source)
    return body


def render_card(front: Mapping[str, Any], body: str) -> str:
    """A card's text from its front matter and markdown body; stable bytes for equal input."""
    yaml_text = yaml.safe_dump(
        dict(front), sort_keys=False, allow_unicode=True, default_flow_style=False, width=100
    )
    return f"{_FENCE}\n{yaml_text}{_FENCE}\n{body}"


def config_names(card: Mapping[str, Any]) -> list[str]:
    """Configs the card declares under `configs`, in the card's order."""
    configs = card.get("configs") or []
    return [str(c["config_name"]) for c in configs if isinstance(c, dict) and "config_name" in c]


def expected_rows(card: Mapping[str, Any], config: str) -> int | None:
    """Rows in `config`'s train split per `dataset_info`, or None when the card does not say.

    `dataset_info` is a list of per-config mappings, or a single mapping on one-config cards.
    """
    for info in _dataset_infos(card):
        if info.get("config_name", config) != config:
            continue
        for split in info.get("splits") or []:
            if isinstance(split, dict) and split.get("name") == "train":
                value = split.get("num_examples")
                return int(value) if value is not None else None
    return None


def with_config(
    card: Mapping[str, Any], config: str, *, num_examples: int, num_bytes: int | None = None
) -> dict[str, Any]:
    """A copy of `card` declaring `config` (its `<config>/*.parquet` files and train size).

    Other keys and other configs are kept; configs are listed in name order so that building
    configs in any order gives the same card.
    """
    front = dict(card)
    configs = {name: c for c in front.get("configs") or [] if (name := c.get("config_name"))}
    configs[config] = {
        "config_name": config,
        "data_files": [{"split": "train", "path": f"{config}/*.parquet"}],
    }
    split: dict[str, Any] = {"name": "train", "num_examples": int(num_examples)}
    if num_bytes is not None:
        split["num_bytes"] = int(num_bytes)
    infos = {name: i for i in _dataset_infos(front) if (name := i.get("config_name"))}
    infos[config] = {"config_name": config, "splits": [split]}
    front["configs"] = [configs[name] for name in sorted(configs)]
    front["dataset_info"] = [infos[name] for name in sorted(infos)]
    return front


def _dataset_infos(card: Mapping[str, Any]) -> list[dict[str, Any]]:
    infos = card.get("dataset_info") or []
    if isinstance(infos, dict):
        infos = [infos]
    return [i for i in infos if isinstance(i, dict)]


def _split(text: str, source: str) -> tuple[dict[str, Any], str]:
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip("\r\n") != _FENCE:
        return {}, text
    end = next((i for i, line in enumerate(lines) if i and line.rstrip("\r\n") == _FENCE), 0)
    if not end:
        raise UpstreamError(
            f"{source}: the card's YAML front matter opens with '---' but never closes; "
            "add a closing '---' line"
        )
    try:
        front = yaml.safe_load("".join(lines[1:end])) or {}
    except yaml.YAMLError as error:
        raise UpstreamError(
            f"{source}: the card's YAML front matter does not parse ({error}); fix the YAML"
        ) from error
    if not isinstance(front, dict):
        raise UpstreamError(
            f"{source}: the card's front matter is a {type(front).__name__}, expected a mapping"
        )
    return front, "".join(lines[end + 1 :])
