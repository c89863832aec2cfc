"""Issue 10 item 3, the pure rules: which references `/aibrix inspect` may read from
Slack, where registry credentials may go, and what a registry's answer may show."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.domain.inspect_scope import (
    Location,
    LocationKind,
    admitted,
    canonical_registry,
    configured_locations,
    parse_location,
)
from jobs.domain.manifests import ManifestError, parse_manifest
from jobs.domain.references import InvalidReferenceError, Reference, parse_reference
from jobs.registry.auth import (
    AuthFlowError,
    Challenge,
    authorization_flow,
    realm_may_carry_credentials,
)
from jobs.registry.credentials import Credentials
from jobs.registry.http import CertificateError

LOCATIONS = configured_locations(
    "registry.example.com/aibrix",
    {
        "beijing": "mirror.example.cn:5000/aibrix-mirror",
        "lab": "127.0.0.1:5002/ns",
        "v6": "[fd00::5]:5000/team/images",
    },
)
HUB = configured_locations("docker.io/aibrix", {})


def refused(text: str, locations: tuple[Location, ...] = LOCATIONS) -> bool:
    return admitted(locations, parse_reference(text)) is None


@pytest.mark.parametrize(
    "text",
    [
        "registry.example.com/aibrix/runtime:v1",
        "registry.example.com/aibrix/deep/path/x@sha256:" + "a" * 64,
        "REGISTRY.example.COM/aibrix/runtime:v1",
        "mirror.example.cn:5000/aibrix-mirror/runtime:v1",
        "127.0.0.1:5002/ns/runtime:v1",
        "[fd00::5]:5000/team/images/runtime:v1",
        "[FD00::5]:5000/team/images/runtime:v1",
    ],
)
def test_item3_references_under_a_configured_location_are_admitted(text: str) -> None:
    assert not refused(text)


@pytest.mark.parametrize(
    "text",
    [
        # another namespace on a configured registry, and look-alike prefixes
        "registry.example.com/other/runtime:v1",
        "registry.example.com/aibrix-evil/runtime:v1",
        "registry.example.com/aibrixx/runtime:v1",
        "registry.example.com/runtime:v1",
        # the same host on another port, or a configured host without its port
        "registry.example.com:443/aibrix/runtime:v1",
        "registry.example.com:5000/aibrix/runtime:v1",
        "mirror.example.cn/aibrix-mirror/runtime:v1",
        "mirror.example.cn:5001/aibrix-mirror/runtime:v1",
        "127.0.0.1:5000/ns/runtime:v1",
        "127.0.0.1/ns/runtime:v1",
        # the same machine under other spellings: not what the config names
        "localhost:5002/ns/runtime:v1",
        "127.1:5002/ns/runtime:v1",
        "[::1]:5002/ns/runtime:v1",
        "[fd00:0::5]:5000/team/images/runtime:v1",
        # loopback, link-local metadata, the bot's own network, Docker Hub
        "localhost/ns/x:v1",
        "169.254.169.254/latest/meta-data:v1",
        "169.254.169.254:80/ns/x:v1",
        "[fe80::1]:5000/team/images/x:v1",
        "10.0.0.1:6379/ns/x:v1",
        "aibrix/runtime:v1",
        "ubuntu",
        "docker.io/aibrix/runtime:v1",
        # a configured host as a subdomain or parent of another
        "registry.example.com.evil.net/aibrix/runtime:v1",
        "example.com/aibrix/runtime:v1",
        "evil-registry.example.com/aibrix/runtime:v1",
    ],
)
def test_item3_references_elsewhere_are_refused(text: str) -> None:
    assert refused(text)


@pytest.mark.parametrize(
    "text",
    [
        "user:pass@registry.example.com/aibrix/runtime:v1",
        "registry.example.com@169.254.169.254/aibrix/x",
        "registry.example.com./aibrix/runtime:v1",
        "http://registry.example.com/aibrix/runtime:v1",
    ],
)
def test_item3_userinfo_schemes_and_trailing_dots_never_parse(text: str) -> None:
    with pytest.raises(InvalidReferenceError):
        parse_reference(text)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("docker.io/aibrix/runtime:v1", True),
        ("index.docker.io/aibrix/runtime:v1", True),
        ("registry-1.docker.io/aibrix/runtime:v1", True),
        ("Docker.IO/aibrix/runtime:v1", True),
        ("aibrix/runtime:v1", True),
        ("docker.io/library/ubuntu", False),
        ("ubuntu", False),
        ("docker.io/aibrixx/runtime", False),
        ("docker.io:443/aibrix/runtime", False),
        ("auth.docker.io/aibrix/runtime", False),
    ],
)
def test_item3_docker_hub_names_are_one_registry(text: str, ok: bool) -> None:
    found = admitted(HUB, parse_reference(text))
    assert (found is not None) is ok
    if found is not None:
        # reached as the config names it: Docker Hub's API host, docker.io's credentials
        assert found.registry == "docker.io" and found.api_host == "registry-1.docker.io"


def test_item3_an_admitted_reference_is_spelled_as_the_config_names_its_registry() -> None:
    found = admitted(LOCATIONS, parse_reference("REGISTRY.Example.com/aibrix/runtime:v1"))
    assert found == Reference("registry.example.com", "aibrix/runtime", "v1")
    upper = configured_locations("Registry.Example.com/aibrix", {"m": "Index.Docker.io/x"})
    found = admitted(upper, parse_reference("registry.example.com/aibrix/runtime:v1"))
    assert found == Reference("Registry.Example.com", "aibrix/runtime", "v1")
    found = admitted(upper, parse_reference("x/runtime:v1"))
    assert found == Reference("docker.io", "x/runtime", "v1")


def test_item3_a_location_without_namespace_admits_its_whole_registry_only() -> None:
    whole = configured_locations("registry.example.com", {})
    assert admitted(whole, parse_reference("registry.example.com/anything/x:v1")) is not None
    assert admitted(whole, parse_reference("registry.example.com:5000/x:v1")) is None


def test_item3_locations_carry_their_kind_and_name() -> None:
    found = configured_locations(
        "docker.io/aibrix", {"b": "b.example/x", "a": "a.example"}, ["busybox"]
    )
    assert [(loc.kind, loc.name, loc.registry, loc.namespace) for loc in found] == [
        (LocationKind.REPOSITORY, "", "docker.io", ("aibrix",)),
        (LocationKind.MIRROR, "a", "a.example", ()),
        (LocationKind.MIRROR, "b", "b.example", ("x",)),
        (LocationKind.DEPENDENCY, "busybox", "docker.io", ("library", "busybox")),
    ]
    assert admitted(found, parse_reference("busybox:1.36")) is not None
    assert admitted(found, parse_reference("alpine")) is None


@pytest.mark.parametrize(
    ("host", "canonical"),
    [
        ("Registry.Example.COM", "registry.example.com"),
        ("registry.example.com.", "registry.example.com"),
        ("registry.example.com.:5000", "registry.example.com:5000"),
        ("index.docker.io", "docker.io"),
        ("REGISTRY-1.DOCKER.IO", "docker.io"),
        ("[FD00::1]:5000", "[fd00::1]:5000"),
        ("[::1]", "[::1]"),
        ("localhost:5000", "localhost:5000"),
    ],
)
def test_item3_canonical_registry(host: str, canonical: str) -> None:
    assert canonical_registry(host) == canonical


# ---- properties -----------------------------------------------------------------------

_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_NAME = st.lists(_LABEL, min_size=1, max_size=3).map(".".join)
_IPV4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
_IPV6 = st.ip_addresses(v=6).map(lambda a: f"[{a}]")
_PORT = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))
_HOST = st.one_of(
    st.tuples(_NAME, _PORT).map("".join),
    st.tuples(_IPV4, _PORT).map("".join),
    st.tuples(_IPV6, _PORT).map("".join),
    st.sampled_from(
        ["localhost", "localhost:5000", "169.254.169.254", "docker.io", "index.docker.io"]
    ),
)
_COMPONENT = st.from_regex(r"[a-z0-9]+([._-][a-z0-9]+)?", fullmatch=True)
_PATH = st.lists(_COMPONENT, min_size=0, max_size=3)


def _case_variant(text: str, flips: list[bool]) -> str:
    padded = flips + [False] * (len(text) - len(flips))
    return "".join(ch.upper() if flip else ch for ch, flip in zip(text, padded, strict=False))


@st.composite
def _locations(draw: st.DrawFn) -> tuple[Location, ...]:
    # what the config loader accepts as a location's host: one with a '.' or a port, or
    # localhost (docker's own rule)
    registry_host = _HOST.filter(lambda h: "." in h or ":" in h or h == "localhost")
    hosts = draw(st.lists(registry_host, min_size=1, max_size=4))
    texts = ["/".join([host, *draw(_PATH)]) for host in hosts]
    return tuple(parse_location(text) for text in texts)


@given(
    locations=_locations(),
    host=_HOST,
    path=st.lists(_COMPONENT, min_size=1, max_size=4),
)
def test_item3_no_reference_on_an_unconfigured_registry_is_ever_admitted(
    locations: tuple[Location, ...], host: str, path: list[str]
) -> None:
    try:
        ref = parse_reference("/".join([host, *path]) + ":v1")
    except InvalidReferenceError:
        return
    found = admitted(locations, ref)
    configured = {location.registry for location in locations}
    if canonical_registry(ref.registry) not in configured:
        assert found is None
    else:
        assert found is None or canonical_registry(found.registry) in configured
    if found is not None:
        # what is reached is a configured registry as configured, under a configured namespace
        assert any(
            found.registry == loc.spelled
            and tuple(found.repository.split("/"))[: len(loc.namespace)] == loc.namespace
            for loc in locations
        )


@given(
    locations=_locations(),
    data=st.data(),
)
def test_item3_every_reference_under_a_configured_location_is_admitted(
    locations: tuple[Location, ...], data: st.DataObject
) -> None:
    location = data.draw(st.sampled_from(locations))
    extra = data.draw(st.lists(_COMPONENT, min_size=1, max_size=2))
    flips = data.draw(st.lists(st.booleans(), max_size=40))
    host = _case_variant(location.text.split("/", 1)[0], flips)
    try:
        ref = parse_reference("/".join([host, *location.namespace, *extra]) + ":v1")
    except InvalidReferenceError:
        return  # too long, or a Docker Hub name that needs a namespace
    found = admitted(locations, ref)
    assert found is not None
    assert canonical_registry(found.registry) == location.registry


@given(
    locations=_locations(),
    data=st.data(),
    suffix=st.from_regex(r"[a-z0-9-]{0,3}[a-z0-9]", fullmatch=True),
)
def test_item3_a_namespace_is_matched_by_components_not_by_text(
    locations: tuple[Location, ...], data: st.DataObject, suffix: str
) -> None:
    location = data.draw(st.sampled_from(locations))
    if not location.namespace:
        return
    *parents, last = location.namespace
    host = location.text.split("/", 1)[0]
    try:
        ref = parse_reference("/".join([host, *parents, last + suffix, "x"]) + ":v1")
    except InvalidReferenceError:
        return
    assert admitted((location,), ref) is None
    assert admitted((location,), ref.with_tag("v2")) is None


def _mutations(host: str) -> list[str]:
    """Near misses of a configured host: another port, no port, a port added, a label
    added before or after."""
    if host.endswith("]") or ":" not in host:
        bare, port = host, ""
    else:
        bare, port = host.rsplit(":", 1)
    found = [f"{bare}:{int(port) % 65535 + 1}" if port else f"{bare}:5000"]
    if port:
        found.append(bare)
    if not bare.startswith("["):
        found += [f"evil.{bare}" + (f":{port}" if port else ""), f"{bare}.evil.net"]
    return found


@given(locations=_locations(), data=st.data())
def test_item3_near_misses_of_a_configured_host_are_refused(
    locations: tuple[Location, ...], data: st.DataObject
) -> None:
    location = data.draw(st.sampled_from(locations))
    host = location.text.split("/", 1)[0]
    configured = {loc.registry for loc in locations}
    for near in _mutations(host):
        try:
            ref = parse_reference("/".join([near, *location.namespace, "x"]) + ":v1")
        except InvalidReferenceError:
            continue
        if canonical_registry(ref.registry) in configured:
            continue  # that spelling is configured too
        assert admitted(locations, ref) is None, near


# ---- where credentials may go: the Bearer realm ------------------------------------------


@pytest.mark.parametrize(
    ("realm", "registry", "insecure", "ok"),
    [
        # https: anywhere, as docker and containerd do (registry-1.docker.io -> auth.docker.io)
        ("https://auth.docker.io/token", "registry-1.docker.io", (), True),
        ("https://auth.example.net:8443/t", "registry.example.com", (), True),
        # plain HTTP: only to hosts spoken to in plain HTTP anyway
        ("http://auth.example.net/token", "registry.example.com", (), False),
        ("http://169.254.169.254/token", "registry.example.com", (), False),
        ("http://192.0.2.2:5050/token", "127.0.0.1:5001", (), False),
        ("http://127.0.0.1:5050/token", "registry.example.com", (), True),
        ("http://localhost:5050/token", "127.0.0.1:5001", (), True),
        ("http://[::1]:5050/token", "127.0.0.1:5001", (), True),
        ("http://auth.lab:5050/token", "reg.lab:5000", ("auth.lab:5050",), True),
        ("http://reg.lab:5050/token", "reg.lab:5000", ("reg.lab:5000",), True),
        ("http://REG.lab/token", "reg.lab:5000", ("reg.lab:5000",), True),
        ("http://reg.lab:5050/token", "reg.lab:5000", (), False),
        ("http://evil.lab/token", "reg.lab:5000", ("reg.lab:5000",), False),
        # not a URL this client would fetch
        ("ftp://auth.example.net/token", "registry.example.com", (), False),
        ("http://auth.example.net:99999/token", "127.0.0.1:5001", (), False),
        ("http:///token", "127.0.0.1:5001", (), False),
    ],
)
def test_item3_a_realm_gets_credentials_over_https_or_to_plain_http_hosts_only(
    realm: str, registry: str, insecure: tuple[str, ...], ok: bool
) -> None:
    assert realm_may_carry_credentials(realm, registry, frozenset(insecure)) is ok


def test_item3_a_refused_realm_gets_no_request_and_no_secret_in_the_reason() -> None:
    creds = Credentials("user", "s3cret-pass")
    challenge = Challenge("bearer", {"realm": "http://auth.example.net/token"})
    flow = authorization_flow(challenge, "repository:x:pull", creds, realm_allowed=lambda r: False)
    with pytest.raises(AuthFlowError) as error:
        next(flow)  # raises before yielding any token request
    assert "only over HTTPS" in str(error.value)
    assert "s3cret" not in str(error.value) and "auth.example.net" not in str(error.value)


def test_item3_anonymous_token_requests_go_to_any_realm() -> None:
    challenge = Challenge("bearer", {"realm": "http://auth.example.net/token"})
    flow = authorization_flow(challenge, "repository:x:pull", None, realm_allowed=lambda r: False)
    request = next(flow)
    assert "Authorization" not in request.headers


# ---- what a registry's answer may show ------------------------------------------------------

SECRET = "Basic dXNlcjpzM2NyZXQ="


@pytest.mark.parametrize(
    "body",
    [
        b'{"schemaVersion":2,"mediaType":"' + SECRET.encode() + b'"}',
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",'
        b'"manifests":[{"mediaType":"x","digest":"' + SECRET.encode() + b':1","size":1}]}',
    ],
)
def test_item3_manifest_errors_never_show_the_registry_text(body: bytes) -> None:
    with pytest.raises(ManifestError) as error:
        parse_manifest(body, "sha256:" + "0" * 64)
    assert "dXNlcjpzM2NyZXQ" not in str(error.value)


def test_item3_a_content_type_header_is_not_shown() -> None:
    with pytest.raises(ManifestError) as error:
        parse_manifest(b'{"schemaVersion":2}', "sha256:" + "0" * 64, SECRET)
    assert "dXNlcjpzM2NyZXQ" not in str(error.value)


def test_item3_a_certificate_reason_does_not_quote_the_server_names() -> None:
    error = CertificateError(
        "reg.example", 443, "Hostname mismatch, certificate is not valid for 'dXNlcjpzM2NyZXQ'."
    )
    assert error.reason == "Hostname mismatch"
    assert "dXNlcjpzM2NyZXQ" not in str(error)
