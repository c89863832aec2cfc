"""Edge cases of image references (`jobs.domain.references`): the port range ends, the
255-character name limit, lowercase hex digests, the tag's length, where a host ends and
Docker Hub's defaults (issue 15). Expected values are written out here."""

from __future__ import annotations

import pytest

from jobs.domain.references import (
    InvalidReferenceError,
    Reference,
    parse_reference,
    validate_digest,
    validate_host,
    validate_tag,
)

HEX = "0123456789abcdef" * 4
DIGEST = "sha256:" + HEX


@pytest.mark.parametrize("port", ["1", "5000", "65535"])
def test_a_port_from_1_to_65535_is_accepted(port: str) -> None:
    assert parse_reference(f"x.io:{port}/a").registry == f"x.io:{port}"


@pytest.mark.parametrize("port", ["0", "00000", "65536", "99999"])
def test_port_0_and_above_65535_are_refused(port: str) -> None:
    with pytest.raises(InvalidReferenceError) as refused:
        parse_reference(f"x.io:{port}/a")
    assert str(refused.value) == f"'x.io:{port}' has a port out of range"


def test_a_bracketed_ipv6_host_takes_a_port_and_is_not_read_as_one() -> None:
    assert validate_host("[::1]") == "[::1]"
    assert parse_reference("[::1]:5000/a").registry == "[::1]:5000"
    with pytest.raises(InvalidReferenceError, match="has a port out of range"):
        validate_host("[::1]:0")


def test_a_bad_host_is_refused_with_the_form() -> None:
    for host in ("-x.io", "x_y.io", "x.io:", "x.io:123456", "x.io\n"):
        with pytest.raises(InvalidReferenceError) as refused:
            validate_host(host)
        assert str(refused.value) == f"{host!r} is not a registry host; expected HOST[:PORT]"


def test_a_name_of_exactly_255_characters_is_accepted_and_256_are_not() -> None:
    path = "a" * (255 - len("x.io/"))
    assert parse_reference(f"x.io/{path}").name == f"x.io/{path}"
    with pytest.raises(InvalidReferenceError) as refused:
        parse_reference(f"x.io/{path}a")
    assert str(refused.value).endswith(": the repository name is longer than 255 characters")


def test_the_hub_library_prefix_counts_in_the_255() -> None:
    path = "a" * (255 - len("docker.io/library/"))
    assert parse_reference(path).repository == f"library/{path}"
    with pytest.raises(InvalidReferenceError, match="longer than 255"):
        parse_reference(path + "a")


def test_a_digest_must_be_lowercase_hex_of_its_length() -> None:
    assert validate_digest(DIGEST) == DIGEST
    assert validate_digest("sha512:" + HEX * 2) == "sha512:" + HEX * 2
    upper = "sha256:" + HEX.upper()
    with pytest.raises(InvalidReferenceError) as refused:
        validate_digest(upper)
    assert str(refused.value) == (
        f"{upper!r} is not a valid sha256 digest; expected 64 lowercase hex digits"
    )
    with pytest.raises(InvalidReferenceError, match="expected 64 lowercase hex digits"):
        validate_digest("sha256:" + HEX[:-1] + "A")
    for wrong_length in ("sha256:" + HEX[:-1], "sha256:" + HEX + "0", "sha512:" + HEX):
        with pytest.raises(InvalidReferenceError, match="lowercase hex digits"):
            validate_digest(wrong_length)
    with pytest.raises(InvalidReferenceError) as unsupported:
        validate_digest("md5:" + HEX[:32])
    assert str(unsupported.value) == (
        f"'md5:{HEX[:32]}' uses an unsupported digest algorithm 'md5'"
    )
    with pytest.raises(InvalidReferenceError) as shape:
        validate_digest("sha256")
    assert str(shape.value) == "'sha256' is not a digest; expected sha256:<64 hex digits>"


def test_a_tag_of_128_characters_is_accepted_and_129_are_not() -> None:
    assert validate_tag("v" * 128) == "v" * 128
    assert validate_tag("_a.b-c") == "_a.b-c"
    for bad in ("v" * 129, ".v", "-v", "", "v\n", "v/1", "é"):
        with pytest.raises(InvalidReferenceError) as refused:
            validate_tag(bad)
        shown = bad if len(bad) <= 80 else bad[:80] + "..."
        assert str(refused.value) == (
            f"{shown!r} is not a valid tag; expected up to 128 characters of "
            "letters, digits, '_', '.' and '-', not starting with '.' or '-'"
        )


def test_a_long_input_is_quoted_shortened() -> None:
    with pytest.raises(InvalidReferenceError) as refused:
        validate_tag("." + "v" * 80)
    assert str(refused.value).startswith(repr("." + "v" * 79 + "..."))
    with pytest.raises(InvalidReferenceError) as exact:
        validate_tag("." + "v" * 79)
    assert str(exact.value).startswith(repr("." + "v" * 79) + " is not")


def test_where_the_host_ends() -> None:
    assert parse_reference("localhost/a") == Reference("localhost", "a", "latest")
    assert parse_reference("localhost:5000/a:v1") == Reference("localhost:5000", "a", "v1")
    assert parse_reference("x.io/a/b") == Reference("x.io", "a/b", "latest")
    # A first component without '.', ':' or localhost is a Hub namespace, not a host.
    assert parse_reference("aibrix/runtime") == Reference("docker.io", "aibrix/runtime", "latest")
    assert parse_reference("local/a") == Reference("docker.io", "local/a", "latest")


@pytest.mark.parametrize("alias", ["docker.io", "index.docker.io", "registry-1.docker.io"])
def test_docker_hub_aliases_are_docker_io(alias: str) -> None:
    ref = parse_reference(f"{alias}/ubuntu")
    assert ref == Reference("docker.io", "library/ubuntu", "latest")
    assert ref.api_host == "registry-1.docker.io"
    assert parse_reference(f"{alias}/a/b").repository == "a/b"


def test_tag_digest_and_default_tag() -> None:
    assert parse_reference("x.io/a", default_tag="v9") == Reference("x.io", "a", "v9")
    pinned = parse_reference(f"x.io/a@{DIGEST}")
    assert pinned == Reference("x.io", "a", None, DIGEST)
    assert pinned.identifier == DIGEST and str(pinned) == f"x.io/a@{DIGEST}"
    both = parse_reference(f"x.io:5000/a:v1@{DIGEST}")
    assert both == Reference("x.io:5000", "a", "v1", DIGEST)
    assert str(both) == f"x.io:5000/a:v1@{DIGEST}"
    assert Reference("x.io", "a").identifier == "latest"
    assert Reference("x.io", "a", "v2").identifier == "v2"
    assert Reference("x.io", "a").api_host == "x.io"
    assert parse_reference("x.io/a:v1").with_digest(DIGEST) == Reference("x.io", "a", None, DIGEST)
    assert pinned.with_tag("v3") == Reference("x.io", "a", "v3", None)


def test_refusals_say_why() -> None:
    cases = {
        "": "an image reference is required, such as docker.io/aibrix/runtime:v0.3.0",
        "-x": "'-x' is not an image reference: it must not start with '-'",
        " x": "' x' is not an image reference: it contains white space",
        "x\x01": "'x\\x01' is not an image reference: it contains white space",
        "x.io/a:v1:v2": "'x.io/a:v1:v2' has more than one ':tag'",
        "x.io/": "'x.io/' has no repository name",
        "x.io/Abc": "'x.io/Abc': repository names must be lowercase",
        "x.io/a--": (
            "'x.io/a--': 'a--' is not a valid repository path component; "
            "expected lowercase letters and digits separated by '.', '_', '__' or '-'"
        ),
    }
    for text, said in cases.items():
        with pytest.raises(InvalidReferenceError) as refused:
            parse_reference(text)
        assert str(refused.value) == said


def test_path_component_separators() -> None:
    for good in ("a.b", "a_b", "a__b", "a-b", "a---b", "a1"):
        assert parse_reference(f"x.io/{good}").repository == good
    for bad in ("a___b", "a..b", "_a", "a_", ".a"):
        with pytest.raises(InvalidReferenceError, match="not a valid repository path component"):
            parse_reference(f"x.io/{bad}")


def test_a_bracketed_host_without_a_colon_is_still_a_host() -> None:
    assert parse_reference("[fe80]/a").registry == "[fe80]"


def test_a_second_at_sign_is_part_of_the_digest_and_refused_as_such() -> None:
    with pytest.raises(InvalidReferenceError) as refused:
        parse_reference(f"x.io/a@b@{DIGEST}")
    assert str(refused.value) == f"'b@{DIGEST}' is not a digest; expected sha256:<64 hex digits>"


@pytest.mark.parametrize(("text", "component"), [("x.io/a:b/c", "a:b"), ("x.io/a/b:x/c", "b:x")])
def test_a_tag_is_only_after_the_last_slash(text: str, component: str) -> None:
    with pytest.raises(InvalidReferenceError) as refused:
        parse_reference(text)
    assert f"{component!r} is not a valid repository path component" in str(refused.value)
