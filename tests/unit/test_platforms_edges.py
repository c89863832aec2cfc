"""Edge cases of platforms (`jobs.domain.platforms`): an empty list's sentence and a
descriptor's fields of the wrong type (issue 15)."""

from __future__ import annotations

import pytest

from jobs.domain.platforms import PlatformError, parse_platform_list, platform_from_json


@pytest.mark.parametrize("text", ["", " , ,"])
def test_an_empty_platform_list_says_what_is_expected(text: str) -> None:
    with pytest.raises(PlatformError) as refused:
        parse_platform_list(text)
    assert str(refused.value) == "no platform given; expected os/arch[,os/arch...]"


@pytest.mark.parametrize(
    "data",
    [
        {"os": 1, "architecture": "amd64"},
        {"os": "linux", "architecture": 1},
        {"os": "linux", "architecture": "arm", "variant": 7},
        {"os": 1, "architecture": "amd64", "variant": "v1"},
    ],
)
def test_a_descriptor_field_of_the_wrong_type_is_no_platform(data: dict[str, object]) -> None:
    assert platform_from_json(data) is None
