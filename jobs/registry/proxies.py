"""Which HTTP proxy, if any, a registry request goes through. Pure: values in, values out.

The environment is read once, at the edge (the command line, the bot, the worker's
start-up: `ProxySettings.from_environ(os.environ)`), and the settings travel inside
`RegistrySettings`; the transport asks `proxy_for(url, settings)` per request.

What is read, and in what order (the first non-empty value wins; an empty variable counts
as unset, as in Go):

- https URLs: `https_proxy`, then `HTTPS_PROXY`.
- http URLs: `http_proxy`, then `HTTP_PROXY`. curl reads only the lower-case form (a CGI
  guard, "httpoxy"); Go reads both. This is no CGI program, so both are read, lower-case
  first as curl orders every pair.
- `no_proxy`, then `NO_PROXY`.
- `ALL_PROXY` is not read: Go (docker, containerd, skopeo, the tools beside this bot)
  ignores it, and it is often a SOCKS proxy, which this client does not speak.

A proxy value is `[http|https]://[user:password@]host[:port][/]`; without a scheme,
`http://` is assumed (curl and Go both do). Without a port, the scheme's (80, 443), as Go
and httpx do; curl assumes 1080. Anything else (a SOCKS or other scheme, no host, a bad
port, a path) is a `ProxyConfigError` naming the variable and never quoting its value,
which may hold a password.

`NO_PROXY`: entries separated by commas and/or white space, matched case-insensitively:

- `*` (as any entry): nothing goes through a proxy.
- a domain, with or without a leading `.` or `*.`: matches that name and every name under
  it (`example.com` and `.example.com` both match `example.com` and `a.example.com`, not
  `badexample.com`). curl ignores the leading dot the same way; Go's `.example.com`
  matches subdomains only.
- an IP address (IPv6 bare or in brackets) or a CIDR range (`10.0.0.0/8`, `fd00::/8`):
  matches a request to that address literally; names are never resolved to check (neither
  curl nor Go does).
- any of these with `:PORT` (IPv6 in brackets then: `[::1]:5000`): only that port (Go's
  rule; curl ignores ports). The port of a URL without one is its scheme's.
- an entry that is none of these (`10.0.0.0/33`, `host:port:x`) never matches; tools
  differ on such entries, and refusing a `NO_PROXY` that curl and Go accept would break a
  build node that works for them.

Loopback always goes direct: `localhost`, `127.0.0.0/8` and `::1`, whatever the
variables say. Go's httpproxy does the same, so docker, containerd and skopeo never send
a loopback registry to a proxy either; a proxy elsewhere could not reach this host's
loopback, and one on this host would reach the same server directly. ("Named" loopback,
in the issue's words, is thus never proxied; there is no switch to proxy it.)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from jobs.domain import messages
from jobs.domain.errors import InvalidInput

HTTPS_VARIABLES = ("https_proxy", "HTTPS_PROXY")
HTTP_VARIABLES = ("http_proxy", "HTTP_PROXY")
NO_PROXY_VARIABLES = ("no_proxy", "NO_PROXY")
PROXY_SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ProxyConfigError(InvalidInput):
    """A proxy variable holds a value this client cannot use; the sentence names the
    variable, never its value."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(messages.proxy_variable_invalid(variable, problem))
        self.variable = variable


@dataclass(frozen=True)
class Proxy:
    """One proxy, validated: `url` (credentials included, for the transport only) and
    `shown` (scheme, host and port: safe for a sentence or a log)."""

    url: str = field(repr=False)
    shown: str
    variable: str  # where it came from: `HTTPS_PROXY`, `http_proxy`, ...


@dataclass(frozen=True)
class NoProxyEntry:
    """One `NO_PROXY` entry: a domain suffix or an IP network, optionally one port."""

    domain: str | None = None  # lower case, without a leading dot
    network: IpNetwork | None = None
    port: int | None = None

    def matches(self, host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
                port: int) -> bool:  # fmt: skip
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            return address is not None and address in self.network
        assert self.domain is not None
        return host == self.domain or host.endswith("." + self.domain)


@dataclass(frozen=True)
class ProxySettings:
    """The proxies in force: none by default (every request goes direct)."""

    https: Proxy | None = None
    http: Proxy | None = None
    no_proxy: tuple[NoProxyEntry, ...] = ()
    no_proxy_all: bool = False  # `*` in NO_PROXY

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ProxySettings:
        """Read and validate the variables (see the module docstring); raises
        `ProxyConfigError` for a proxy value that cannot be used."""
        entries, everything = parse_no_proxy(_first(environ, NO_PROXY_VARIABLES)[1])
        return cls(
            https=_proxy_from(environ, HTTPS_VARIABLES),
            http=_proxy_from(environ, HTTP_VARIABLES),
            no_proxy=entries,
            no_proxy_all=everything,
        )

    @property
    def any(self) -> bool:
        return self.https is not None or self.http is not None


def _first(environ: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str]:
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return names[-1], ""


def _proxy_from(environ: Mapping[str, str], names: tuple[str, ...]) -> Proxy | None:
    variable, value = _first(environ, names)
    return parse_proxy_url(variable, value) if value else None


def parse_proxy_url(variable: str, value: str) -> Proxy:
    """Validate one proxy value; the error names `variable` and never quotes `value`."""
    text = value.strip()
    if "://" not in text:
        text = "http://" + text
    scheme = text.split("://", 1)[0].lower()
    if scheme not in PROXY_SCHEMES:
        # The scheme alone is safe to show only when it is a plain word.
        shown = scheme if scheme.isascii() and scheme.isalnum() and len(scheme) <= 10 else None
        raise ProxyConfigError(variable, messages.proxy_scheme_unsupported(shown))
    if any(c.isspace() or ord(c) < 0x21 or ord(c) == 0x7F for c in text):
        raise ProxyConfigError(variable, messages.proxy_url_malformed())
    try:
        parts = urlsplit(text)
    except ValueError:  # an unbalanced `[` or `]`
        raise ProxyConfigError(variable, messages.proxy_url_malformed()) from None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ProxyConfigError(variable, messages.proxy_url_has_path())
    host = parts.hostname
    if not host:
        raise ProxyConfigError(variable, messages.proxy_url_no_host())
    try:
        port = parts.port
    except ValueError:
        raise ProxyConfigError(variable, messages.proxy_url_bad_port()) from None
    if port == 0:
        raise ProxyConfigError(variable, messages.proxy_url_bad_port())
    if not _valid_host(host):
        raise ProxyConfigError(variable, messages.proxy_url_malformed())
    port = port or DEFAULT_PORTS[scheme]
    netloc_host = f"[{host}]" if ":" in host else host
    address = f"{netloc_host}:{port}"
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    url = f"{scheme}://{userinfo + '@' if userinfo else ''}{address}"
    return Proxy(url=url, shown=f"{scheme}://{address}", variable=variable)


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    return all(
        0 < len(label) <= 63 and all(c.isascii() and (c.isalnum() or c in "-_") for c in label)
        for label in labels
    )


def parse_no_proxy(value: str) -> tuple[tuple[NoProxyEntry, ...], bool]:
    """The entries of a `NO_PROXY` value and whether it holds `*`; entries that are no
    domain, address or range are left out (they could never match)."""
    entries: list[NoProxyEntry] = []
    for raw in value.replace(",", " ").split():
        item = raw.strip().lower()
        if item == "*":
            return (), True
        entry = _no_proxy_entry(item)
        if entry is not None:
            entries.append(entry)
    return tuple(entries), False


def _no_proxy_entry(item: str) -> NoProxyEntry | None:
    host, port = _split_port(item)
    if host is None:
        return None
    try:
        network = ipaddress.ip_network(host, strict=False)
    except ValueError:
        network = None
    if network is not None:
        return NoProxyEntry(network=network, port=port)
    if "/" in host or ":" in host:
        return None  # a bad range or address: never matches
    domain = host.removeprefix("*.").lstrip(".").rstrip(".")
    if not domain or not _valid_host(domain):
        return None
    return NoProxyEntry(domain=domain, port=port)


def _split_port(item: str) -> tuple[str | None, int | None]:
    """`host`, `host:port`, `[v6]`, `[v6]:port`, a bare IPv6 address, a CIDR range."""
    if item.startswith("["):
        inside, closed, rest = item[1:].partition("]")
        if not closed:
            return None, None
        if not rest:
            return inside, None
        if not rest.startswith(":"):
            return None, None
        port = _port(rest[1:])
        return (inside, port) if port is not None else (None, None)
    if item.count(":") == 1:
        host, _, text = item.partition(":")
        port = _port(text)
        return (host, port) if port is not None else (None, None)
    return item, None  # a name, IPv4, or a bare IPv6 address or range


def _port(text: str) -> int | None:
    if not text.isascii() or not text.isdigit() or len(text) > 5:
        return None
    port = int(text)
    return port if 0 < port < 65536 else None


def _is_loopback(host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
    return host == "localhost" or (address is not None and address.is_loopback)


def route(url: str, settings: ProxySettings) -> Proxy | None:
    """The proxy a request to `url` goes through, or None to go direct."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    proxy = settings.https if scheme == "https" else settings.http if scheme == "http" else None
    if proxy is None:
        return None
    host = (parts.hostname or "").rstrip(".")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        return None  # not a URL this client would request; nothing to route
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(
            host.split("%", 1)[0]
        )
    except ValueError:
        address = None
    if _is_loopback(host, address) or settings.no_proxy_all:
        return None
    if any(entry.matches(host, address, port) for entry in settings.no_proxy):
        return None
    return proxy


def proxy_for(url: str, settings: ProxySettings) -> str | None:
    """The proxy URL (credentials included, for the transport) for a request to `url`,
    or None for a direct connection."""
    proxy = route(url, settings)
    return proxy.url if proxy is not None else None
