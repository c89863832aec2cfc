"""Edge cases of release versions and component lists (`jobs.domain.versions`): what a
refusal quotes, the length limit of a Version built directly, a major number holding
every digit (issue 15)."""

from __future__ import annotations

import pytest

from jobs.domain import messages
from jobs.domain.versions import (
    ComponentError,
    Version,
    VersionError,
    parse_component_list,
    parse_version,
    validate_component_name,
)


def test_a_number_holding_all_ten_digits_is_a_number() -> None:
    assert parse_version("v1234567890.0.0") == Version(1234567890, 0, 0)


@pytest.mark.parametrize(
    ("args", "quoted"),
    [((-1, 0, 0), "(-1, 0, 0)"), ((1, True, 0), "(1, True, 0)"), ((1, 0, 0, "a..b"), "a..b")],
)
def test_a_bad_version_built_directly_quotes_what_is_wrong(
    args: tuple[object, ...], quoted: str
) -> None:
    with pytest.raises(VersionError) as refused:
        Version(*args)  # type: ignore[arg-type]
    assert str(refused.value) == messages.version_malformed(quoted)


def test_a_version_built_directly_is_at_most_128_characters() -> None:
    longest = Version(1, 0, 0, "a" * 121)
    assert len(str(longest)) == 128
    too_long = "v1.0.0-" + "a" * 122
    with pytest.raises(VersionError) as refused:
        Version(1, 0, 0, "a" * 122)
    assert str(refused.value) == messages.version_too_long(too_long, 128)
    assert "longer than 128 characters" in str(refused.value)


def test_no_component_given_lists_the_configured_ones() -> None:
    known = ["runtime", "gateway-plugins"]
    said = "no component given; the configured components are: runtime, gateway-plugins"
    assert messages.component_empty(known) == said
    for text in ("", " , ,"):
        with pytest.raises(ComponentError) as refused:
            parse_component_list(text, known)
        assert str(refused.value) == said
    with pytest.raises(ComponentError) as empty_name:
        validate_component_name("", iter(known))
    assert str(empty_name.value) == said
