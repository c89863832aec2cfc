"""Platform parsing and matching, the way containerd normalises them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.domain.platforms import (
    Platform,
    PlatformError,
    normalize,
    parse_platform,
    parse_platform_list,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/amd64", Platform("linux", "amd64")),
        ("linux/x86_64", Platform("linux", "amd64")),
        ("linux/amd64/v1", Platform("linux", "amd64")),
        ("linux/amd64/v3", Platform("linux", "amd64", "v3")),
        ("linux/arm64", Platform("linux", "arm64")),
        ("linux/arm64/v8", Platform("linux", "arm64")),
        ("linux/aarch64", Platform("linux", "arm64")),
        ("linux/arm", Platform("linux", "arm", "v7")),
        ("linux/arm/7", Platform("linux", "arm", "v7")),
        ("linux/arm/v6", Platform("linux", "arm", "v6")),
        ("linux/armhf", Platform("linux", "arm", "v7")),
        ("linux/armel", Platform("linux", "arm", "v6")),
        ("linux/i386", Platform("linux", "386")),
        ("Linux/AMD64", Platform("linux", "amd64")),
        ("windows/amd64", Platform("windows", "amd64")),
        ("linux/s390x", Platform("linux", "s390x")),
    ],
)
def test_parse_normalizes(text: str, expected: Platform) -> None:
    assert parse_platform(text) == expected


def test_matching_rules() -> None:
    assert parse_platform("linux/arm64") == parse_platform("linux/arm64/v8")
    assert parse_platform("linux/arm/v7") != parse_platform("linux/arm64")
    assert parse_platform("windows/amd64") != parse_platform("linux/amd64")
    assert parse_platform("linux/arm/v6") != parse_platform("linux/arm/v7")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "linux",
        "linux/",
        "/amd64",
        "linux/amd64/v1/x",
        "linux/am d64",
        "linux/$(id)",
        "-linux/amd64",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(PlatformError) as error:
        parse_platform(text)
    assert "os/arch" in str(error.value)


def test_list_dedupes_in_order() -> None:
    assert parse_platform_list("linux/arm64/v8, linux/amd64,linux/arm64") == (
        Platform("linux", "arm64"),
        Platform("linux", "amd64"),
    )
    with pytest.raises(PlatformError):
        parse_platform_list(" , ")


part = st.from_regex(r"\A[a-z0-9][a-z0-9_.-]{0,8}\Z")


@given(part, part, st.none() | part)
def test_normalize_is_idempotent(os: str, arch: str, variant: str | None) -> None:
    once = normalize(os, arch, variant or "")
    assert normalize(once.os, once.architecture, once.variant) == once
    assert parse_platform(str(once)) == once


@given(part, part, st.none() | part)
def test_str_parse_round_trip(os: str, arch: str, variant: str | None) -> None:
    text = f"{os}/{arch}" + (f"/{variant}" if variant else "")
    assert parse_platform(str(parse_platform(text))) == parse_platform(text)
