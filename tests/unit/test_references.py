"""Image reference parsing: distribution's grammar, Docker Hub defaults, safe errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.domain.references import InvalidReferenceError, Reference, parse_reference

HEX = "a" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("aibrix/runtime", Reference("docker.io", "aibrix/runtime", "latest")),
        ("ubuntu", Reference("docker.io", "library/ubuntu", "latest")),
        ("ubuntu:22.04", Reference("docker.io", "library/ubuntu", "22.04")),
        ("docker.io/ubuntu", Reference("docker.io", "library/ubuntu", "latest")),
        ("index.docker.io/aibrix/runtime:v1", Reference("docker.io", "aibrix/runtime", "v1")),
        ("127.0.0.1:5000/a/b:v0.3.0-rc.2", Reference("127.0.0.1:5000", "a/b", "v0.3.0-rc.2")),
        ("localhost/a", Reference("localhost", "a", "latest")),
        ("localhost:5000/a", Reference("localhost:5000", "a", "latest")),
        ("[::1]:5000/a:t", Reference("[::1]:5000", "a", "t")),
        (f"ghcr.io/x/y@sha256:{HEX}", Reference("ghcr.io", "x/y", None, f"sha256:{HEX}")),
        (f"ghcr.io/x/y:t@sha256:{HEX}", Reference("ghcr.io", "x/y", "t", f"sha256:{HEX}")),
        (
            "registry.example.com/a__b/c-d.e_f:T_1",
            Reference("registry.example.com", "a__b/c-d.e_f", "T_1"),
        ),
    ],
)
def test_parses(text: str, expected: Reference) -> None:
    assert parse_reference(text) == expected


def test_api_host_of_docker_hub() -> None:
    assert parse_reference("aibrix/runtime").api_host == "registry-1.docker.io"
    assert parse_reference("127.0.0.1:5000/a").api_host == "127.0.0.1:5000"


def test_str_is_canonical() -> None:
    assert str(parse_reference("aibrix/runtime:v1")) == "docker.io/aibrix/runtime:v1"
    assert str(parse_reference("ubuntu")) == "docker.io/library/ubuntu:latest"


def test_identifier_prefers_digest() -> None:
    ref = parse_reference(f"x.io/a:t@sha256:{HEX}")
    assert ref.identifier == f"sha256:{HEX}"
    assert parse_reference("x.io/a:t").identifier == "t"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "required"),
        ("Aibrix/runtime", "lowercase"),
        ("x.io/a:b:c", "more than one"),
        ("x.io/a:" + "t" * 129, "not a valid tag"),
        ("x.io/a@sha256:abc", "64"),
        ("x.io/a@md5:" + "a" * 32, "unsupported"),
        ("x.io/a b", "white space"),
        (" x.io/a", "white space"),
        ("x.io/a\n", "white space"),
        ("-x.io/a", "must not start with '-'"),
        ("--output=type=local,dest=/", "must not start with '-'"),
        ("x.io/a;rm", "not a valid repository"),
        ("x.io/a:t;rm", "not a valid tag"),
        ("x.io/$(id)", "not a valid repository"),
        ("x.io/a/", "not a valid repository"),
        ("x.io//a", "not a valid repository"),
        ("x.io/:t", "no repository"),
        ("x.io:99999/a", "port"),
        ("x.io/a:.t", "not a valid tag"),
        ("x.io/" + "a" * 260, "255"),
    ],
)
def test_rejects(text: str, fragment: str) -> None:
    with pytest.raises(InvalidReferenceError) as error:
        parse_reference(text)
    assert fragment in str(error.value)


def test_error_never_echoes_a_huge_input() -> None:
    with pytest.raises(InvalidReferenceError) as error:
        parse_reference("x.io/a:" + "!" * 5000)
    assert len(str(error.value)) < 400


component = st.from_regex(r"\A[a-z0-9]{1,6}(?:[._-][a-z0-9]{1,6}){0,2}\Z")
tag = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,40}\Z")
host = st.sampled_from(["127.0.0.1:5000", "ghcr.io", "registry.example.com:443", "localhost"])
hexes = st.text("0123456789abcdef", min_size=64, max_size=64)


@given(host, st.lists(component, min_size=1, max_size=3), st.none() | tag, st.none() | hexes)
def test_round_trip(h: str, parts: list[str], t: str | None, d: str | None) -> None:
    text = f"{h}/{'/'.join(parts)}"
    if t:
        text += f":{t}"
    if d:
        text += f"@sha256:{d}"
    ref = parse_reference(text)
    assert ref.registry == h
    assert ref.repository == "/".join(parts)
    assert parse_reference(str(ref)) == ref
    assert ref.tag == (t or (None if d else "latest"))


@given(st.text(max_size=60))
def test_any_text_parses_or_raises_the_reference_error(text: str) -> None:
    try:
        ref = parse_reference(text)
    except InvalidReferenceError:
        return
    assert not text.startswith("-")
    assert all(not ch.isspace() for ch in text)
    assert ref.repository == ref.repository.lower()


@given(st.text(alphabet=" ;|&$`()<>\n\t\"'*?", min_size=1, max_size=5), component)
def test_shell_metacharacters_never_parse(junk: str, name: str) -> None:
    with pytest.raises(InvalidReferenceError):
        parse_reference(f"x.io/{name}{junk}")
