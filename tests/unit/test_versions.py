"""Release versions and component names: what is accepted, what is refused and why."""

from __future__ import annotations

import itertools
import re
from functools import cmp_to_key

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from jobs.domain.versions import (
    MAX_VERSION_LENGTH,
    ComponentError,
    Version,
    VersionError,
    is_component_name,
    parse_component_list,
    parse_version,
    validate_component_name,
)

EXPECTED = "expected vMAJOR.MINOR.PATCH[-PRERELEASE] such as v0.3.0 or v0.3.0-rc.2"

# ---- strategies ---------------------------------------------------------------------

numbers = st.integers(min_value=0, max_value=10**6)
numeric_identifiers = numbers.map(str)
alphanumeric_identifiers = st.from_regex(r"\A[0-9A-Za-z-]*[A-Za-z-][0-9A-Za-z-]*\Z").filter(
    lambda s: 0 < len(s) <= 12
)
identifiers = st.one_of(numeric_identifiers, alphanumeric_identifiers)
prereleases = st.lists(identifiers, min_size=0, max_size=4).map(".".join)


@st.composite
def version_texts(draw: st.DrawFn) -> str:
    core = f"v{draw(numbers)}.{draw(numbers)}.{draw(numbers)}"
    pre = draw(prereleases)
    text = f"{core}-{pre}" if pre else core
    if len(text) > MAX_VERSION_LENGTH:
        text = core
    return text


# ---- accepted -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("v0.3.0", (0, 3, 0, "")),
        ("v0.3.0-rc.2", (0, 3, 0, "rc.2")),
        ("v1.22.333", (1, 22, 333, "")),
        ("v1.0.0-alpha", (1, 0, 0, "alpha")),
        ("v1.0.0-0.3.7", (1, 0, 0, "0.3.7")),
        ("v1.0.0-x.7.z.92", (1, 0, 0, "x.7.z.92")),
        ("v1.0.0-x-y-z.--", (1, 0, 0, "x-y-z.--")),
        ("v1.0.0-0A.is.legal", (1, 0, 0, "0A.is.legal")),
        ("v10.20.30-RC1", (10, 20, 30, "RC1")),
    ],
)
def test_valid_versions_parse_into_their_parts(
    text: str, fields: tuple[int, int, int, str]
) -> None:
    version = parse_version(text)
    assert (version.major, version.minor, version.patch, version.prerelease) == fields
    assert str(version) == text
    assert version.is_prerelease == bool(fields[3])


def test_the_longest_version_is_accepted_and_one_more_character_is_not() -> None:
    longest = "v1.0.0-" + "a" * (MAX_VERSION_LENGTH - len("v1.0.0-"))
    assert len(longest) == MAX_VERSION_LENGTH
    assert str(parse_version(longest)) == longest
    with pytest.raises(VersionError, match="longer than 128"):
        parse_version(longest + "a")


@given(version_texts())
def test_every_valid_version_round_trips(text: str) -> None:
    version = parse_version(text)
    assert str(version) == text
    assert parse_version(str(version)) == version
    rebuilt = Version(version.major, version.minor, version.patch, version.prerelease)
    assert rebuilt == version


@given(version_texts())
def test_an_accepted_version_is_a_safe_word_and_a_docker_tag(text: str) -> None:
    shown = str(parse_version(text))
    assert re.fullmatch(r"v[0-9A-Za-z.-]+", shown)
    assert re.fullmatch(r"[\w][\w.-]{0,127}", shown, re.ASCII)  # docker's tag grammar
    assert not shown.startswith("-")


# ---- ordering -----------------------------------------------------------------------

SEMVER_SPEC_ORDER = [
    "v1.0.0-alpha",
    "v1.0.0-alpha.1",
    "v1.0.0-alpha.beta",
    "v1.0.0-beta",
    "v1.0.0-beta.2",
    "v1.0.0-beta.11",
    "v1.0.0-rc.1",
    "v1.0.0",
    "v1.0.1-0",
    "v1.0.1",
    "v1.1.0",
    "v1.10.0",
    "v2.0.0",
    "v10.0.0",
]


def test_versions_sort_by_semver_precedence_as_the_spec_lists_them() -> None:
    versions = [parse_version(t) for t in SEMVER_SPEC_ORDER]
    assert sorted(reversed(versions)) == versions
    assert sorted(versions, reverse=True) == list(reversed(versions))
    for smaller, larger in itertools.pairwise(versions):
        assert smaller < larger
        assert larger > smaller
        assert smaller <= larger
        assert not larger <= smaller
        assert smaller != larger


def _reference_compare(a: str, b: str) -> int:
    """semver.org section 11, written out independently of jobs.domain.versions."""

    def split(text: str) -> tuple[list[int], list[str] | None]:
        core, _, pre = text[1:].partition("-")
        return [int(n) for n in core.split(".")], (pre.split(".") if pre else None)

    (core_a, pre_a), (core_b, pre_b) = split(a), split(b)
    if core_a != core_b:
        return -1 if core_a < core_b else 1
    if pre_a is None or pre_b is None:
        if pre_a is None and pre_b is None:
            return 0
        return 1 if pre_a is None else -1
    for x, y in zip(pre_a, pre_b, strict=False):
        if x == y:
            continue
        if x.isdigit() and y.isdigit():
            return -1 if int(x) < int(y) else 1
        if x.isdigit() != y.isdigit():
            return -1 if x.isdigit() else 1
        return -1 if x < y else 1
    return (len(pre_a) > len(pre_b)) - (len(pre_a) < len(pre_b))


small_versions = st.builds(
    lambda m, n, p, pre: f"v{m}.{n}.{p}" + (f"-{pre}" if pre else ""),
    st.integers(0, 2),
    st.integers(0, 2),
    st.integers(0, 2),
    st.lists(
        st.sampled_from(["0", "1", "2", "10", "a", "b", "rc", "alpha", "a-1"]), max_size=3
    ).map(".".join),
)


@given(small_versions, small_versions)
def test_ordering_agrees_with_the_semver_rules(a: str, b: str) -> None:
    expected = _reference_compare(a, b)
    va, vb = parse_version(a), parse_version(b)
    assert (va < vb) == (expected < 0)
    assert (va > vb) == (expected > 0)
    assert (va == vb) == (expected == 0)


@given(st.lists(small_versions, max_size=8))
def test_sorting_matches_the_reference_order(texts: list[str]) -> None:
    ours = [str(v) for v in sorted(parse_version(t) for t in texts)]
    reference = sorted(texts, key=cmp_to_key(_reference_compare))
    assert [parse_version(t) for t in ours] == [parse_version(t) for t in reference]


@given(version_texts().filter(lambda t: "-" in t))
def test_a_release_sorts_after_each_of_its_prereleases(text: str) -> None:
    pre = parse_version(text)
    release = Version(pre.major, pre.minor, pre.patch)
    assert pre < release


def test_comparing_with_something_else_is_not_supported() -> None:
    with pytest.raises(TypeError):
        assert parse_version("v1.0.0") < "v2.0.0"


# ---- refused ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("v1;rm -rf /", "contains ';'"),
        ("--output=type=local,dest=/", "contains '='"),
        ("-v1.0.0", "must start with a lowercase 'v'"),
        ("$(id)", "contains '$'"),
        ("v1.0.0$(id)", "contains '$'"),
        ("`id`", "contains '`'"),
        ("v1.0.0`id`", "contains '`'"),
        ("v1.0.0\nv2.0.0", "contains '\\n'"),
        ("v1.0.0\r", "contains '\\r'"),
        ("v1.0.0\x00", "contains '\\x00'"),
        ("v1.0.0 ", "contains ' '"),
        (" v1.0.0", "contains ' '"),
        ("v1.0.0\t", "contains '\\t'"),
        ("v1.0.0/../x", "contains '/'"),
        ("v1.0.0-rc_1", "contains '_'"),
        ("x" * 300, "longer than 128"),
        ("\u0475" + "1.0.0", "contains '\\u0475' (U+0475)"),  # Cyrillic izhitsa, looks like v
        ("v1.0.0-\u0430lpha", "U+0430"),  # Cyrillic a
        ("v\uff11.0.0", "U+FF11"),  # fullwidth digit one
        ("v1.0.0-\u0661", "U+0661"),  # Arabic-Indic digit one, a digit to str.isdigit
        ("v1.0.0\u200b", "U+200B"),  # zero width space
        ("", "no release version given"),
        ("1.0.0", "must start with a lowercase 'v'"),
        ("V1.0.0", "must start with a lowercase 'v'"),
        ("v1.0", EXPECTED),
        ("v1", EXPECTED),
        ("v1.0.0.0", EXPECTED),
        ("v1..0", EXPECTED),
        ("va.b.c", EXPECTED),
        ("v", EXPECTED),
        ("v01.0.0", "the number '01' has a leading zero"),
        ("v1.00.0", "the number '00' has a leading zero"),
        ("v1.0.0-rc.01", "the number '01' has a leading zero"),
        ("v1.0.0+build.5", "build metadata"),
        ("v1.0.0-rc.1+sha.abc", "build metadata"),
        ("v1.0.0-", "a prerelease identifier is empty"),
        ("v1.0.0-rc..1", "a prerelease identifier is empty"),
        ("v1.0.0-rc.", "a prerelease identifier is empty"),
    ],
)
def test_malformed_or_malicious_versions_are_refused_with_the_reason(
    text: str, reason: str
) -> None:
    with pytest.raises(VersionError) as caught:
        parse_version(text)
    message = str(caught.value)
    assert reason in message
    assert message.endswith(EXPECTED)
    assert message.isascii() and message.isprintable()


def test_the_message_quotes_the_input_safely() -> None:
    with pytest.raises(VersionError) as caught:
        parse_version("v1;rm -rf /")
    assert str(caught.value) == (
        "'v1;rm -rf /' is not a release version: it contains ';' (U+003B), and only ASCII "
        f"letters, digits, '.' and '-' are allowed; {EXPECTED}"
    )


def test_a_long_input_is_cut_to_80_characters_in_the_message() -> None:
    text = "v1.0.0-" + "a" * 73 + "Z" * 220  # the 81st character onwards is Z
    with pytest.raises(VersionError) as caught:
        parse_version(text)
    message = str(caught.value)
    assert "'v1.0.0-" + "a" * 73 + "'..." in message
    assert "Z" not in message
    assert "(300 characters)" in message


@given(st.text(max_size=300))
@example("v1.0.0\n")
@example("v1.0.0\u2028")
def test_arbitrary_text_is_either_a_version_or_refused_in_one_safe_line(text: str) -> None:
    try:
        version = parse_version(text)
    except VersionError as error:
        message = str(error)
        assert message.isascii() and message.isprintable()  # no newline, no lookalike
        assert len(message) < 400
        assert EXPECTED in message
    else:
        assert str(version) == text
        assert re.fullmatch(r"v[0-9A-Za-z.-]{5,127}", text)


@given(st.text(min_size=1, max_size=40))
def test_text_with_a_character_outside_the_grammar_is_refused(text: str) -> None:
    allowed = set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-")
    candidate = "v1.0.0-a" + text
    if set(text) <= allowed:
        return
    with pytest.raises(VersionError, match=r"contains|build metadata"):
        parse_version(candidate)


@pytest.mark.parametrize(
    "fields",
    [(-1, 0, 0, ""), (1, 0, 0, "01"), (1, 0, 0, "a..b"), (1, 0, 0, "rc;id"), (True, 0, 0, "")],
)
def test_a_version_cannot_be_built_with_invalid_fields(
    fields: tuple[int, int, int, str],
) -> None:
    with pytest.raises(VersionError):
        Version(*fields)


# ---- component names ----------------------------------------------------------------

KNOWN = ("controller-manager", "gateway-plugins", "metadata-service", "kvcache-watcher", "runtime")


def test_a_configured_component_name_is_accepted() -> None:
    assert validate_component_name("runtime", KNOWN) == "runtime"


@pytest.mark.parametrize(
    "name",
    ["Runtime", "runtime ", "run-time", "--rm", "runtime;id", "$(id)", "runtime\n", "x" * 300],
)
def test_an_unknown_component_name_is_refused_listing_the_configured_ones(name: str) -> None:
    with pytest.raises(ComponentError) as caught:
        validate_component_name(name, KNOWN)
    message = str(caught.value)
    assert message.endswith(
        "the configured components are: controller-manager, gateway-plugins, "
        "metadata-service, kvcache-watcher, runtime"
    )
    assert "is not a component of this project" in message
    assert message.isascii() and message.isprintable()
    assert len(message) < 300


def test_an_empty_component_name_is_refused() -> None:
    with pytest.raises(ComponentError, match="no component given; the configured components"):
        validate_component_name("", KNOWN)


def test_a_component_list_is_parsed_in_order_without_duplicates() -> None:
    assert parse_component_list(" runtime, gateway-plugins,runtime ,", KNOWN) == (
        "runtime",
        "gateway-plugins",
    )


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "no component"),
        (" , ", "no component"),
        ("runtime,bogus", "'bogus' is not a component"),
    ],
)
def test_a_bad_component_list_is_refused(text: str, match: str) -> None:
    with pytest.raises(ComponentError, match=match):
        parse_component_list(text, KNOWN)


@pytest.mark.parametrize(
    "name", ["runtime", "gateway-plugins", "a", "a.b_c-d", "v2", "0", "a" * 64]
)
def test_valid_component_names(name: str) -> None:
    assert is_component_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Runtime",
        "-runtime",
        "runtime-",
        ".x",
        "a..b",
        "a--b",
        "a__b",
        "a/b",
        "a b",
        "a" * 65,
        "runtim\u0435",
        "run\ntime",
    ],
)
def test_invalid_component_names(name: str) -> None:
    assert not is_component_name(name)


@given(st.text(max_size=70))
def test_component_names_follow_the_docker_path_component_grammar(text: str) -> None:
    expected = len(text) <= 64 and re.fullmatch(r"[a-z0-9]+([._-][a-z0-9]+)*", text, re.ASCII)
    assert is_component_name(text) == bool(expected)
