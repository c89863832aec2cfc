"""Proxy choice from HTTPS_PROXY / HTTP_PROXY / NO_PROXY (issue 12, item 2): a table of our
own, each row noting where curl (CURLOPT_NOPROXY, curl's proxy variables) or Go
(golang.org/x/net/http/httpproxy, under docker, containerd and skopeo) would differ."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.domain import messages
from jobs.domain.errors import InvalidInput
from jobs.registry.proxies import (
    ProxyConfigError,
    ProxySettings,
    parse_no_proxy,
    parse_proxy_url,
    proxy_for,
    route,
)

P = "http://proxy.corp:3128"  # the proxy of most rows
Q = "http://other.corp:8080"


def settings(no_proxy: str = "", **env: str) -> ProxySettings:
    return ProxySettings.from_environ(
        {"HTTPS_PROXY": P, "HTTP_PROXY": P, "NO_PROXY": no_proxy, **env}
    )


# url, NO_PROXY, expected proxy (None: direct). Comments: where curl or Go differ.
NO_PROXY_TABLE = [
    # Nothing excluded: https and http both go through the proxy.
    ("https://registry.example.com/v2/", "", P),
    ("http://registry.example.com:5000/v2/", "", P),
    # Loopback is direct whatever NO_PROXY says (Go: same; curl would proxy it).
    ("http://localhost:5000/v2/", "", None),
    ("http://127.0.0.1:5000/v2/", "", None),
    ("http://127.8.9.10/v2/", "", None),
    ("http://[::1]:5000/v2/", "", None),
    ("https://localhost/v2/", "example.com", None),
    # ... but only loopback: a name that merely starts with "localhost" is not (Go: same).
    ("https://localhost.example.com/v2/", "", P),
    ("https://127.0.0.1.nip.io/v2/", "", P),
    # `*` as any entry: everything direct (curl: only `*` alone; Go: any entry).
    ("https://registry.example.com/v2/", "*", None),
    ("https://registry.example.com/v2/", "a.test,*", None),
    # A domain matches itself and names under it, never a longer name (both).
    ("https://example.com/v2/", "example.com", None),
    ("https://registry.example.com/v2/", "example.com", None),
    ("https://a.b.example.com/v2/", "example.com", None),
    ("https://badexample.com/v2/", "example.com", P),
    ("https://example.com.evil.test/v2/", "example.com", P),
    # A leading dot is ignored (curl); Go's `.example.com` leaves example.com itself proxied.
    ("https://example.com/v2/", ".example.com", None),
    ("https://registry.example.com/v2/", ".example.com", None),
    ("https://badexample.com/v2/", ".example.com", P),
    # `*.` prefix as a leading dot (Go strips `*` the same way; curl would not match).
    ("https://registry.example.com/v2/", "*.example.com", None),
    # Case and a trailing dot on the request's host do not matter (both).
    ("https://Registry.EXAMPLE.com/v2/", "example.COM", None),
    ("https://registry.example.com./v2/", "example.com", None),
    # Commas, spaces and both (curl >= 7.86 splits on spaces too; Go only on commas).
    ("https://b.test/v2/", "a.test, b.test", None),
    ("https://b.test/v2/", "a.test b.test", None),
    ("https://b.test/v2/", " a.test ,, b.test ", None),
    ("https://c.test/v2/", "a.test b.test", P),
    # A port in an entry restricts it to that port (Go); default ports count (https 443).
    ("https://registry.example.com/v2/", "registry.example.com:443", None),
    ("https://registry.example.com:5000/v2/", "registry.example.com:443", P),
    ("https://registry.example.com:5000/v2/", "registry.example.com:5000", None),
    ("http://registry.example.com/v2/", "registry.example.com:80", None),
    ("https://registry.example.com:5000/v2/", "registry.example.com", None),
    # IP literals and CIDR ranges match addresses only, never resolve names (both).
    ("https://10.1.2.3/v2/", "10.1.2.3", None),
    ("https://10.1.2.4/v2/", "10.1.2.3", P),
    ("https://10.1.2.3:5000/v2/", "10.0.0.0/8", None),
    ("https://11.1.2.3/v2/", "10.0.0.0/8", P),
    ("https://10.1.2.3:5000/v2/", "10.1.2.3:5000", None),
    ("https://10.1.2.3:5001/v2/", "10.1.2.3:5000", P),
    ("https://10.1.2.3/v2/", "10.1.2.0/24:443", None),
    ("https://registry.example.com/v2/", "10.0.0.0/8", P),
    # IPv6: bare or bracketed, ranges, ports only in brackets.
    ("https://[fd00::5]/v2/", "fd00::5", None),
    ("https://[fd00::5]/v2/", "[fd00::5]", None),
    ("https://[fd00::5]:5000/v2/", "fd00::/8", None),
    ("https://[fd00::5]:5000/v2/", "[fd00::5]:5000", None),
    ("https://[fd00::5]:5001/v2/", "[fd00::5]:5000", P),
    ("https://[fe80::5]/v2/", "fd00::/8", P),
    # An IPv4 entry does not match a name that looks like it, nor the other way round.
    ("https://10.1.2.3.example.com/v2/", "10.1.2.3", P),
    # Entries that are none of these never match and do not spoil the others.
    ("https://registry.example.com/v2/", "10.0.0.0/33,registry.example.com", None),
    ("https://registry.example.com/v2/", "host:port:x, registry.example.com:99999", P),
    ("https://registry.example.com/v2/", "[fd00::5, ., *.", P),
]


@pytest.mark.parametrize(("url", "no_proxy", "expected"), NO_PROXY_TABLE)
def test_no_proxy_table(url: str, no_proxy: str, expected: str | None) -> None:
    assert proxy_for(url, settings(no_proxy)) == expected


# environment, url, expected: which variable wins.
PRECEDENCE_TABLE = [
    # Lower-case first for every pair, as curl reads them (Go: upper-case first).
    ({"https_proxy": P, "HTTPS_PROXY": Q}, "https://r.test/", P),
    ({"HTTPS_PROXY": Q}, "https://r.test/", Q),
    ({"http_proxy": P, "HTTP_PROXY": Q}, "http://r.test/", P),
    # HTTP_PROXY is read (Go reads it; curl does not, as a CGI guard this bot does not need).
    ({"HTTP_PROXY": Q}, "http://r.test/", Q),
    # Each scheme has its own variables: an https request never uses HTTP_PROXY (both).
    ({"HTTP_PROXY": P}, "https://r.test/", None),
    ({"HTTPS_PROXY": P}, "http://r.test/", None),
    # An empty variable counts as unset, so the other form is used (Go: same).
    ({"https_proxy": "", "HTTPS_PROXY": Q}, "https://r.test/", Q),
    ({"https_proxy": "  ", "HTTPS_PROXY": Q}, "https://r.test/", Q),
    # ALL_PROXY is not read (Go: same; curl would use it).
    ({"ALL_PROXY": P, "all_proxy": P}, "https://r.test/", None),
    # no_proxy before NO_PROXY.
    ({"HTTPS_PROXY": P, "no_proxy": "r.test", "NO_PROXY": "x.test"}, "https://r.test/", None),
    ({"HTTPS_PROXY": P, "no_proxy": "x.test", "NO_PROXY": "r.test"}, "https://r.test/", P),
    ({"HTTPS_PROXY": P, "no_proxy": "", "NO_PROXY": "r.test"}, "https://r.test/", None),
    # Nothing set: direct.
    ({}, "https://r.test/", None),
]


@pytest.mark.parametrize(("env", "url", "expected"), PRECEDENCE_TABLE)
def test_which_variable_wins(env: dict[str, str], url: str, expected: str | None) -> None:
    assert proxy_for(url, ProxySettings.from_environ(env)) == expected


def test_the_route_says_which_variable_and_shows_no_credentials() -> None:
    chosen = route(
        "https://r.test/v2/",
        ProxySettings.from_environ({"https_proxy": "http://bob:s3cret@proxy.corp:3128"}),
    )
    assert chosen is not None
    assert chosen.variable == "https_proxy"
    assert chosen.shown == "http://proxy.corp:3128"
    assert chosen.url == "http://bob:s3cret@proxy.corp:3128"  # the transport needs them
    assert "s3cret" not in repr(chosen)


# value, normalised URL given to the transport.
PROXY_URLS = [
    ("http://proxy.corp:3128", "http://proxy.corp:3128"),
    ("http://proxy.corp:3128/", "http://proxy.corp:3128"),
    ("HTTP://Proxy.Corp:3128", "http://proxy.corp:3128"),
    # No scheme: http (curl and Go).
    ("proxy.corp:3128", "http://proxy.corp:3128"),
    # No port: the scheme's (Go, httpx; curl would use 1080).
    ("http://proxy.corp", "http://proxy.corp:80"),
    ("https://proxy.corp", "https://proxy.corp:443"),
    ("http://bob:s%40cret@proxy.corp:3128", "http://bob:s%40cret@proxy.corp:3128"),
    ("http://bob@proxy.corp:3128", "http://bob@proxy.corp:3128"),
    ("http://10.0.0.1:3128", "http://10.0.0.1:3128"),
    ("http://[fd00::1]:3128", "http://[fd00::1]:3128"),
    ("  http://proxy.corp:3128  ", "http://proxy.corp:3128"),
]


@pytest.mark.parametrize(("value", "url"), PROXY_URLS)
def test_proxy_urls_accepted(value: str, url: str) -> None:
    assert parse_proxy_url("HTTPS_PROXY", value).url == url


# value, the sentence's problem part.
BAD_PROXY_URLS = [
    ("socks5://bob:s3cret@proxy.corp:1080", "its scheme socks5:// is not supported"),
    ("socks5h://proxy.corp:1080", "its scheme socks5h:// is not supported"),
    ("ftp://proxy.corp", "its scheme ftp:// is not supported"),
    ("s3cret-w%rd://proxy.corp", "its scheme is not supported"),
    ("http://", "it names no host"),
    ("http://bob:s3cret@", "it names no host"),
    ("http://bob:s3cret@:3128", "it names no host"),
    ("http://proxy.corp:s3cret", "its port is not a number from 1 to 65535"),
    ("http://proxy.corp:70000", "its port is not a number from 1 to 65535"),
    ("http://proxy.corp:0", "its port is not a number from 1 to 65535"),
    ("http://proxy.corp:3128/s3cret", "it has a path, query or fragment after the host"),
    ("http://proxy.corp:3128?x=s3cret", "it has a path, query or fragment after the host"),
    ("http://bob:s3cret@pro xy:3128", "it is not a well-formed URL"),
    ("http://bob:s3cret@proxy..corp:3128", "it is not a well-formed URL"),
    ("http://bob:s3cret@pro$xy:3128", "it is not a well-formed URL"),
]


@pytest.mark.parametrize(("value", "problem"), BAD_PROXY_URLS)
def test_bad_proxy_values_name_the_variable_never_the_value(value: str, problem: str) -> None:
    with pytest.raises(ProxyConfigError) as raised:
        ProxySettings.from_environ({"HTTPS_PROXY": value})
    said = str(raised.value)
    assert said.startswith(f"HTTPS_PROXY is not a proxy this bot can use: {problem}"), said
    assert "s3cret" not in said and "bob" not in said
    assert isinstance(raised.value, InvalidInput)  # the CLI's exit 2, nothing touched


def test_a_bad_value_shadowed_by_the_other_form_is_not_read() -> None:
    # https_proxy wins, so HTTPS_PROXY is never used, and never judged.
    chosen = ProxySettings.from_environ({"https_proxy": P, "HTTPS_PROXY": "socks5://x"})
    assert proxy_for("https://r.test/", chosen) == P


def test_the_variable_named_is_the_one_read() -> None:
    with pytest.raises(ProxyConfigError, match=r"^http_proxy is not"):
        ProxySettings.from_environ({"http_proxy": "socks5://x", "HTTPS_PROXY": P})


def test_no_proxy_star_and_default_settings() -> None:
    assert parse_no_proxy("a.test, *") == ((), True)
    assert proxy_for("https://r.test/", ProxySettings()) is None
    assert not ProxySettings().any and settings().any


# -- properties ------------------------------------------------------------------------

LABEL = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12).filter(
    lambda s: not s.startswith("-") and not s.endswith("-")
)
DOMAIN = st.lists(LABEL, min_size=1, max_size=4).map(".".join)
PORT = st.integers(1, 65535)


@given(st.text(max_size=60))
def test_any_no_proxy_text_parses_without_error(text: str) -> None:
    entries, _ = parse_no_proxy(text)
    for entry in entries:
        entry.matches("r.test", None, 443)


@given(
    st.one_of(
        st.just("localhost"),
        st.integers(0, 2**24 - 1).map(lambda n: str(ipaddress.IPv4Address((127 << 24) + n))),
        st.just("[::1]"),
    ),
    st.one_of(st.none(), PORT),
    st.sampled_from(["http", "https"]),
    st.text(max_size=40),
)
def test_loopback_is_always_direct(host: str, port: int | None, scheme: str, no_proxy: str) -> None:
    url = f"{scheme}://{host}{f':{port}' if port else ''}/v2/"
    assert proxy_for(url, settings(no_proxy)) is None


@given(DOMAIN, st.lists(LABEL, max_size=3), st.sampled_from(["", ".", "*."]), PORT)
def test_a_domain_entry_covers_itself_and_names_under_it(
    domain: str, prefix: list[str], lead: str, port: int
) -> None:
    host = ".".join([*prefix, domain])
    assert proxy_for(f"https://{host}:{port}/v2/", settings(lead + domain)) is None
    # A name that only ends with the same letters is not under it.
    assert proxy_for(f"https://x{domain}:{port}/v2/", settings(lead + domain)) == P


@given(st.ip_addresses(v=4).filter(lambda a: not a.is_loopback), st.integers(8, 32))
def test_an_ipv4_range_covers_exactly_its_addresses(
    address: ipaddress.IPv4Address, bits: int
) -> None:
    network = ipaddress.ip_network(f"{address}/{bits}", strict=False)
    inside = proxy_for(f"https://{address}/v2/", settings(str(network)))
    assert inside is None
    outside = (
        network.broadcast_address + 1 if network.broadcast_address.packed != b"\xff" * 4 else None
    )
    if outside is not None and not outside.is_loopback:
        assert proxy_for(f"https://{outside}/v2/", settings(str(network))) == P


FIXED_PROBLEMS = {
    messages.proxy_scheme_unsupported("socks5"),
    messages.proxy_url_malformed(),
    messages.proxy_url_has_path(),
    messages.proxy_url_no_host(),
    messages.proxy_url_bad_port(),
}


@given(st.text(max_size=20).filter(lambda s: "@" not in s and "/" not in s))
def test_the_sentence_is_one_of_a_fixed_few_whatever_the_password(password: str) -> None:
    # Whatever the password, the sentence is one of a few fixed ones: it can carry no part
    # of it.
    for template in (
        "socks5://bob:{}@proxy.corp:1080",
        "http://bob:{}@pro$xy:3128",
        "http://bob:{}@proxy.corp:3128/path",
    ):
        with pytest.raises(ProxyConfigError) as raised:
            ProxySettings.from_environ({"HTTPS_PROXY": template.format(password)})
        assert str(raised.value) in {
            messages.proxy_variable_invalid("HTTPS_PROXY", problem) for problem in FIXED_PROBLEMS
        }


# -- the edge and the client -----------------------------------------------------------


def test_the_edge_reads_proxies_and_insecure_hosts_from_the_environment_it_is_given() -> None:
    from bot.registry_env import registry_settings

    built = registry_settings(
        {"HTTPS_PROXY": P, "NO_PROXY": "mirror.corp", "AIBRIX_INSECURE_REGISTRIES": "lan:5000"},
        frozenset({"flag.lan"}),
    )
    assert built.insecure_registries == {"lan:5000", "flag.lan"}
    assert proxy_for("https://r.test/v2/", built.proxies) == P
    assert proxy_for("https://mirror.corp/v2/", built.proxies) is None
    with pytest.raises(ProxyConfigError, match=r"^https_proxy is not"):
        registry_settings({"https_proxy": "socks5://x"})


def test_the_registry_client_routes_by_its_settings() -> None:
    from jobs.registry.client import RegistryClient, RegistrySettings

    proxied = RegistryClient(RegistrySettings(proxies=settings("mirror.corp")))
    assert proxied._proxy_for is not None
    assert proxied._proxy_for("https://r.test/v2/") == P
    assert proxied._proxy_for("https://mirror.corp/v2/") is None
    assert proxied._proxy_for("http://127.0.0.1:5000/v2/") is None
    # No proxy configured: no hook at all, every request direct.
    assert RegistryClient(RegistrySettings())._proxy_for is None


# kind, detail, the sentence through the proxy (direct: the transport's own sentence).
PROXIED_FAULTS = [
    ("dns", "Name or service not known",
     "cannot reach the proxy http://proxy.corp:3128 (from HTTPS_PROXY): the name does not "
     "resolve (Name or service not known)"),
    ("refused", "Connection refused",
     "cannot reach the proxy http://proxy.corp:3128 (from HTTPS_PROXY): the connection was "
     "refused (6 attempts)"),
    ("proxy-refused", "403",
     "the proxy http://proxy.corp:3128 (from HTTPS_PROXY) did not open a tunnel to "
     "r.test:5000 (HTTP 403 to CONNECT) (6 attempts)"),
    ("network", "Connection reset by peer",
     "cannot reach r.test:5000 (Connection reset by peer) (6 attempts); sent through the "
     "proxy http://proxy.corp:3128 (from HTTPS_PROXY)"),
    ("cut-short", "peer closed connection without sending complete message body",
     "r.test:5000 closed the connection before the response body ended (peer closed "
     "connection without sending complete message body) (6 attempts); sent through the "
     "proxy http://proxy.corp:3128 (from HTTPS_PROXY)"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "detail", "sentence"), PROXIED_FAULTS)
def test_a_fault_through_a_proxy_names_the_proxy_and_no_credentials(
    kind: str, detail: str, sentence: str
) -> None:
    from jobs.domain.references import parse_reference
    from jobs.registry.client import RegistryClient, RegistrySettings
    from jobs.registry.http import HttpError

    proxies = ProxySettings.from_environ({"HTTPS_PROXY": "http://bob:s3cret@proxy.corp:3128"})
    client = RegistryClient(RegistrySettings(proxies=proxies))
    ref = parse_reference("r.test:5000/a/b:v1")
    error = HttpError("x", kind=kind, host="r.test:5000", detail=detail)  # type: ignore[arg-type]
    assert str(client._unreachable(ref, error, 6)).endswith(sentence)
    assert "s3cret" not in str(client._unreachable(ref, error, 6))
    # Direct, no proxy is named.
    direct = RegistryClient(RegistrySettings())._unreachable(ref, error, 6)
    assert "proxy" not in str(direct)


def test_the_transport_reads_a_refused_connect_as_its_status_only() -> None:
    import httpx

    from jobs.registry.http import classify

    url = "https://r.test:5000/v2/"
    refused = classify(httpx.ProxyError("403 Access violation"), url, in_body=False)
    assert (refused.kind, refused.detail) == ("proxy-refused", "403")
    other = classify(httpx.ProxyError("tunnel closed"), url, in_body=False)
    assert (other.kind, other.detail) == ("network", "tunnel closed")
