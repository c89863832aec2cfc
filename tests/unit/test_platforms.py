"""Platform parsing and matching, the way containerd normalises them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.domain.platforms import (
    Platform,
    PlatformError,
    agrees,
    canonical_platform,
    normalize,
    parse_platform,
    parse_platform_list,
    platform_from_json,
    satisfies,
    unique,
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
        "linux\n/amd64",
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


# ---- containerd's normalisation rules (issue 12, item 7) ------------------------------
# (os, arch, variant) as an index entry, a config or a user may write them, and the
# normal form containerd's Normalize gives; our own table, from its rules.
CONTAINERD_TABLE = [
    # arm64: 8, v8, v8.0 are the base; 9, 9.0, v9.0 are v9; finer variants are kept
    (("linux", "arm64", "v8.0"), ("linux", "arm64", "")),
    (("linux", "arm64", "8"), ("linux", "arm64", "")),
    (("linux", "aarch64", "v8"), ("linux", "arm64", "")),
    (("linux", "arm64", "9"), ("linux", "arm64", "v9")),
    (("linux", "arm64", "9.0"), ("linux", "arm64", "v9")),
    (("linux", "arm64", "v9.0"), ("linux", "arm64", "v9")),
    (("linux", "AArch64", "V9.0"), ("linux", "arm64", "v9")),
    (("linux", "arm64", "v9"), ("linux", "arm64", "v9")),
    (("linux", "arm64", "v8.2"), ("linux", "arm64", "v8.2")),
    (("linux", "arm64", "v9.1"), ("linux", "arm64", "v9.1")),
    # Debian's arm names force their variant, whatever was given
    (("linux", "armhf", ""), ("linux", "arm", "v7")),
    (("linux", "armhf", "v6"), ("linux", "arm", "v7")),
    (("linux", "armel", "v7"), ("linux", "arm", "v6")),
    (("linux", "armel", ""), ("linux", "arm", "v6")),
    # 32-bit arm: no variant is v7; bare digits gain a v; others are kept
    (("linux", "arm", ""), ("linux", "arm", "v7")),
    (("linux", "arm", "5"), ("linux", "arm", "v5")),
    (("linux", "arm", "8"), ("linux", "arm", "v8")),
    (("linux", "arm", "v5"), ("linux", "arm", "v5")),
    (("linux", "arm", "9"), ("linux", "arm", "9")),
    # i386 is 386 and loses its variant; 386 itself keeps one, as in containerd
    (("linux", "i386", "v1"), ("linux", "386", "")),
    (("linux", "i386", ""), ("linux", "386", "")),
    (("linux", "386", "sse2"), ("linux", "386", "sse2")),
    (("linux", "i686", ""), ("linux", "i686", "")),
    # amd64: aliases, v1 is the base, higher levels are kept
    (("linux", "x86-64", "v1"), ("linux", "amd64", "")),
    (("linux", "X86_64", "V3"), ("linux", "amd64", "v3")),
    # os: lower case, macos is darwin
    (("MacOS", "arm64", ""), ("darwin", "arm64", "")),
    (("Windows", "AMD64", ""), ("windows", "amd64", "")),
    (("linux", "riscv64", ""), ("linux", "riscv64", "")),
]


@pytest.mark.parametrize(("given", "expected"), CONTAINERD_TABLE, ids=lambda v: "/".join(v))
def test_normalised_as_containerd(
    given: tuple[str, str, str], expected: tuple[str, str, str]
) -> None:
    assert normalize(*given) == Platform(*expected)
    # The type itself normalises, whoever builds it: index entries, configs, users.
    assert Platform(*given) == Platform(*expected)
    found = platform_from_json({"os": given[0], "architecture": given[1], "variant": given[2]})
    assert found == Platform(*expected)
    shown = Platform(*expected)
    assert (shown.os, shown.architecture, shown.variant) == expected


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("linux/arm64/v8", "linux/arm64"),
        ("linux/arm64/v8.0", "linux/arm64"),
        ("linux/arm64/9.0", "linux/arm64/v9"),
        ("linux/armhf/v5", "linux/arm/v7"),
        ("linux/i386/v2", "linux/386"),
        ("linux/arm", "linux/arm/v7"),
    ],
)
def test_user_input_reads_back_in_the_normal_form(text: str, shown: str) -> None:
    assert str(parse_platform(text)) == shown
    assert canonical_platform(shown) == shown
    with pytest.raises(PlatformError) as error:
        canonical_platform(text)
    assert str(error.value) == f"platform {text!r} must be written {shown}"


def test_bad_input_says_what_is_accepted() -> None:
    with pytest.raises(PlatformError) as error:
        parse_platform("windows(10.0.17763)/amd64")
    assert str(error.value) == (
        "'windows(10.0.17763)/amd64' is not a platform; expected os/arch[/variant] such as "
        "linux/amd64, linux/arm64 or linux/arm/v7 (letters, digits, '.', '_' or '-' in each part)"
    )


# Spellings that meet in one normal form: every member of a class is equal, members of
# different classes are not.
EQUIVALENCE_CLASSES = [
    ["linux/arm64", "linux/arm64/v8", "linux/arm64/8", "linux/arm64/v8.0", "linux/aarch64/v8"],
    ["linux/arm64/v9", "linux/arm64/9", "linux/arm64/9.0", "linux/arm64/v9.0"],
    ["linux/arm", "linux/arm/v7", "linux/arm/7", "linux/armhf", "linux/armhf/v6"],
    ["linux/arm/v6", "linux/arm/6", "linux/armel", "linux/armel/v7"],
    ["linux/386", "linux/i386", "linux/i386/v9"],
    ["linux/amd64", "linux/x86_64", "linux/x86-64/v1", "linux/amd64/v1"],
    ["linux/amd64/v2", "linux/x86_64/v2"],
    ["darwin/arm64", "macos/aarch64"],
]


def test_equivalence_classes() -> None:
    normal = [{parse_platform(text) for text in group} for group in EQUIVALENCE_CLASSES]
    assert all(len(forms) == 1 for forms in normal), normal
    flat = [next(iter(forms)) for forms in normal]
    assert len(set(flat)) == len(flat)


spelling = st.sampled_from([text for group in EQUIVALENCE_CLASSES for text in group])


@given(spelling, spelling)
def test_equal_exactly_within_a_class(a: str, b: str) -> None:
    same_class = any(a in group and b in group for group in EQUIVALENCE_CLASSES)
    assert (parse_platform(a) == parse_platform(b)) == same_class


arch = (
    st.sampled_from(
        ["amd64", "x86_64", "x86-64", "arm64", "aarch64", "arm", "armhf", "armel", "i386", "386"]
    )
    | part
)
variant = (
    st.sampled_from(["", "v1", "v2", "5", "6", "7", "8", "9", "v8", "v8.0", "9.0", "v9.0"]) | part
)
feature = st.from_regex(r"\A[a-z0-9][a-z0-9.]{0,6}\Z")


@given(
    st.sampled_from(["linux", "windows", "macos", "Linux"]) | part,
    arch,
    variant,
    st.sampled_from(["", "10.0.17763.1234"]),
    st.lists(feature, max_size=3),
)
def test_normalising_twice_is_normalising_once(
    os: str, arch: str, variant: str, os_version: str, features: list[str]
) -> None:
    once = normalize(os, arch, variant, os_version, features)
    again = normalize(once.os, once.architecture, once.variant, once.os_version, once.os_features)
    assert again == once
    assert list(once.os_features) == sorted(set(features))
    # what is shown as os/arch[/variant] parses back to the same platform
    assert parse_platform(once.base) == Platform(once.os, once.architecture, once.variant)


# ---- Windows: os.version and os.features (issue 12, item 8) -----------------------------

WIN_2019 = {"os": "windows", "architecture": "amd64", "os.version": "10.0.17763.1234"}
WIN_2022 = {"os": "windows", "architecture": "amd64", "os.version": "10.0.20348.2227"}


def test_os_version_is_part_of_the_identity_and_shown() -> None:
    a, b = platform_from_json(WIN_2019), platform_from_json(WIN_2022)
    assert a is not None and b is not None
    assert a != b
    assert unique([a, b, a]) == (a, b)
    assert str(a) == "windows/amd64 10.0.17763.1234"
    assert str(b) == "windows/amd64 10.0.20348.2227"
    assert a.base == b.base == "windows/amd64"


def test_os_features_are_sorted_and_shown() -> None:
    found = platform_from_json({**WIN_2019, "os.features": ["win32k", "b", "win32k"]})
    assert found == Platform("windows", "amd64", "", "10.0.17763.1234", ("b", "win32k"))
    assert str(found) == "windows/amd64 10.0.17763.1234 +b+win32k"
    assert found != platform_from_json(WIN_2019)


@pytest.mark.parametrize(
    "bad",
    [
        {**WIN_2019, "os.version": "10.0 17763"},
        {**WIN_2019, "os.version": "x" * 65},
        {**WIN_2019, "os.version": 10},
        {**WIN_2019, "os.features": "win32k"},
        {**WIN_2019, "os.features": ["win32k\n"]},
    ],
)
def test_malformed_os_options_are_no_platform(bad: dict[str, object]) -> None:
    assert platform_from_json(bad) is None


def test_a_required_platform_is_satisfied_by_any_os_version() -> None:
    required = parse_platform("windows/amd64")
    for data in (WIN_2019, WIN_2022, {"os": "windows", "architecture": "amd64"}):
        entry = platform_from_json(data)
        assert entry is not None and satisfies(entry, required)
    assert not satisfies(parse_platform("linux/amd64"), required)
    pinned = Platform("windows", "amd64", os_version="10.0.17763.1234")
    assert satisfies(Platform("windows", "amd64", os_version="10.0.17763.1234"), pinned)
    assert not satisfies(Platform("windows", "amd64", os_version="10.0.20348.2227"), pinned)
    assert not satisfies(Platform("windows", "amd64"), pinned)


def test_os_features_match_as_containerd() -> None:
    # win32k is ignored on Windows; any other feature the requirement lacks is not it
    assert satisfies(
        Platform("windows", "amd64", os_features=("win32k",)), parse_platform("windows/amd64")
    )
    assert not satisfies(
        Platform("windows", "amd64", os_features=("x",)), parse_platform("windows/amd64")
    )
    assert not satisfies(
        Platform("linux", "amd64", os_features=("win32k",)), parse_platform("linux/amd64")
    )
    assert satisfies(
        Platform("linux", "amd64", os_features=("x",)),
        Platform("linux", "amd64", os_features=("x", "y")),
    )


def test_arm64_variants_satisfy_each_other_only_within_a_class() -> None:
    required = parse_platform("linux/arm64/v8")
    assert satisfies(Platform("linux", "arm64", "v8.0"), required)
    assert satisfies(Platform("linux", "arm64"), required)
    assert not satisfies(Platform("linux", "arm64", "v9.0"), required)
    assert not satisfies(Platform("linux", "arm", "v8"), required)


def test_a_config_agrees_with_what_its_entry_declares() -> None:
    win = platform_from_json(WIN_2019)
    assert win is not None
    assert agrees(parse_platform("windows/amd64"), win)  # the entry claims no version
    assert agrees(win, win)
    other = platform_from_json(WIN_2022)
    assert other is not None and not agrees(win, other)
    assert agrees(Platform("linux", "arm64", "v8.0"), Platform("linux", "arm64"))
    assert not agrees(Platform("linux", "arm", "v7"), Platform("linux", "arm64"))


def test_declared_features_must_be_in_the_config_but_win32k() -> None:
    win = Platform("windows", "amd64", os_version="10.0.17763.1234")
    assert agrees(Platform("windows", "amd64", "", "10.0.17763.1234", ("win32k",)), win)
    assert not agrees(Platform("windows", "amd64", "", "10.0.17763.1234", ("x",)), win)
    assert agrees(
        Platform("linux", "amd64", os_features=("x",)),
        Platform("linux", "amd64", os_features=("x", "y")),
    )
    assert not agrees(Platform("linux", "amd64", os_features=("x",)), Platform("linux", "amd64"))
