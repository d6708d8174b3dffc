"""The dataset card's front matter: what the sample writes, the local Hub serves and the mirror reads."""

from __future__ import annotations

import pytest

from tol_dagster.errors import UpstreamError
from tol_dagster.hub.card import (
    card_body,
    config_names,
    expected_rows,
    parse_card,
    render_card,
    with_config,
)


def test_a_rendered_card_parses_back_to_the_same_front_matter_and_body() -> None:
    front = with_config({"license": "cc0-1.0"}, "bioclip-2_float16", num_examples=1200)
    text = render_card(front, "\n# Title with ümlaut\n")
    assert parse_card(text) == front
    assert card_body(text) == "\n# Title with ümlaut\n"
    assert text.startswith("---\n")


def test_with_config_keeps_other_configs_and_keys_and_lists_configs_by_name() -> None:
    first = with_config({"license": "cc0-1.0"}, "bioclip-2_float16", num_examples=10)
    both = with_config(first, "bioclip-2.5-vith14_float16", num_examples=10)
    assert both["license"] == "cc0-1.0"
    assert config_names(both) == ["bioclip-2.5-vith14_float16", "bioclip-2_float16"]
    assert both["configs"][1]["data_files"] == [
        {"split": "train", "path": "bioclip-2_float16/*.parquet"}
    ]
    again = with_config(both, "bioclip-2_float16", num_examples=99)
    assert expected_rows(again, "bioclip-2_float16") == 99
    assert expected_rows(again, "bioclip-2.5-vith14_float16") == 10
    assert len(again["dataset_info"]) == 2


def test_expected_rows_reads_list_and_single_mapping_forms_and_says_none_when_absent() -> None:
    listed = parse_card(
        "---\ndataset_info:\n- config_name: a\n  splits:\n  - name: train\n    num_examples: 7\n---\n"
    )
    single = parse_card(
        "---\ndataset_info:\n  splits:\n  - name: train\n    num_examples: 5\n---\n"
    )
    assert expected_rows(listed, "a") == 7
    assert expected_rows(listed, "b") is None
    assert expected_rows(single, "anything") == 5
    assert expected_rows({}, "a") is None


def test_a_card_without_front_matter_has_an_empty_one() -> None:
    assert parse_card("# Just markdown\n") == {}
    assert card_body("# Just markdown\n") == "# Just markdown\n"


@pytest.mark.parametrize(
    "text",
    ["---\nconfigs: [\n---\n", "---\nconfigs: []\n", "---\n- a list\n---\n"],
    ids=["bad-yaml", "unclosed", "not-a-mapping"],
)
def test_a_broken_front_matter_is_an_upstream_error_naming_the_card(text: str) -> None:
    with pytest.raises(UpstreamError, match=r"card\.md"):
        parse_card(text, source="card.md")
