"""The registry client's HTTP transport: httpx under a small facade.

Why httpx. HTTP framing, keep-alive pooling, redirects, timeouts, content decoding,
proxies (CONNECT for https) and TLS are a well-kept library's job, not this project's:
the hand-written HTTP/1.1 client this replaces accepted two different Content-Length
headers and hung on bare-LF line endings. httpx (on httpcore and h11) refuses the
first at once, reads the second, decodes gzip bodies and tunnels through proxies.
Import cost, which every `aibrix-bot inspect` in CI pays (`python -X importtime`, the
fastest of 7 runs on a shared 2-CPU machine): `import httpx` 87-91 ms, of which about
45 ms is httpx's own command line (click, rich), not imported here (see below); with
httpcore, anyio and h11, which follow on the first request, about 93 ms in all.
aiohttp (the other candidate; its connector builds TLS contexts at import): 143-173 ms.
h11 under asyncio streams would be cheaper still but leaves pooling, redirects, proxies
and decoding to us again.

Connections are no longer begun during start-up (the former `preconnect` module): httpx's
pool opens connections on demand and takes no socket begun elsewhere without reaching
into httpcore's private parts (`httpx.AsyncHTTPTransport` takes no `network_backend`).
Measured with `benchmarks/inspect_bench.py` (15 references, 50 ms round trip, same
loaded machine): 0.68 s before, 0.82 s after: the imports above, and one round trip no
longer hidden behind them. What a burst of reads can still be spared is a connection
set-up each: `RegistryClient.open_connections` begins them through this client (cheap
`GET /v2/` requests) alongside the burst's first reads, and the pool keeps them for the
next ones (the sync's gate: tags, then children, then configs).

What stays here, and why:
- The facade the registry client uses: `HttpClient.request(method, url, headers=,
  body=)` as an async context manager giving a `Response` (status, headers,
  `iter_chunks` (decoded), `iter_raw` (as sent), `read`).
- Proxy selection by a hook, `proxy_for(url) -> proxy URL | None`, per request (and per
  redirect hop): one httpx transport per distinct proxy, made on first use, plus one
  direct. `trust_env=False`: the environment is read by the hook's author, not by
  httpx behind our back.
- Timeouts with a meaning the user can be told: connect; the response head (from the
  request sent, or from the end of a streamed body, to the blank line that ends the
  head: a server that accepts and never answers, or trickles its head a byte at a
  time, is given up on); idle (any single read or write of a body).
- Failures as `HttpError` with a `kind` (refused, dns, tls, connect-timeout,
  head-timeout, idle-timeout, malformed, cut-short, closed, network) and the library's
  own text, without the bytes a server sent (a status line or header can quote
  anything, the credentials it was sent included; the sentence goes to Slack).
- TLS through `ssl.create_default_context()`, as before (the system CA bundle, or
  `SSL_CERT_FILE`/`SSL_CERT_DIR` through OpenSSL's own lookup), not certifi's bundle;
  a certificate that fails verification is `CertificateError` (no retry helps).
- No `Accept-Encoding` is sent: a registry answers with the stored bytes. A server that
  encodes anyway (RFC 9110 allows it) is decoded by `iter_chunks`/`read`; blob copies
  use `iter_raw`, so blobs are stored as sent.
- Redirects of GET and HEAD are followed by httpx (at most 10); it drops
  `Authorization` when a redirect leaves the origin, except for an upgrade of
  http://host:80 to https://host:443.
- One immediate second try of a request without a streamed body whose connection the
  server closed before answering: the race of a keep-alive connection closed by the
  server as it is reused (httpx does not retry it).
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit

# httpx's own command line (`httpx._main`: click, rich, pygments) is half its import
# time (45 of 90 ms here) and nothing here uses it; httpx falls back to a stub when it
# cannot be imported, which a None entry in sys.modules makes so.
if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
    sys.modules["httpx._main"] = None  # type: ignore[assignment]

import httpx

from jobs.domain.errors import Unavailable

# httpx logs each request at INFO and httpcore each response's headers at DEBUG: a
# server can echo the credentials it was sent in a header, and secrets stay out of logs.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)

MAX_REDIRECTS = 10
READ_LIMIT = 256 * 1024

Origin = tuple[str, str, int]  # scheme, host, port
Body = bytes | AsyncIterator[bytes] | None
ProxyFor = Callable[[str], str | None]
FaultKind = Literal[
    "refused",
    "dns",
    "tls",
    "connect-timeout",
    "head-timeout",
    "idle-timeout",
    "malformed",
    "cut-short",
    "closed",
    "network",
    "proxy-refused",  # the proxy answered CONNECT with an error status (in `detail`)
    "budget",  # the caller's: its time for a request or a reference ran out
]


class HttpError(Unavailable):
    """The connection failed or the peer broke HTTP: a transport error. `kind` says
    which, `detail` is the library's own words (never bytes the server sent), `host` is
    `host:port`, `seconds` the limit that ran out (timeouts)."""

    def __init__(
        self,
        message: str,
        *,
        kind: FaultKind = "network",
        host: str = "",
        detail: str = "",
        seconds: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind: FaultKind = kind
        self.host = host
        self.detail = detail
        self.seconds = seconds


class CertificateError(HttpError):
    """The server's TLS certificate failed verification: no retry can help."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        # OpenSSL's reason can quote the certificate's names, which the server chose:
        # keep the reason itself ("Hostname mismatch", "self-signed certificate").
        reason = reason.split(",", 1)[0].split("'", 1)[0].strip() or "verification failed"
        super().__init__(
            f"the TLS certificate of {host}:{port} is not trusted ({reason})",
            kind="tls",
            host=f"{host}:{port}",
            detail=reason,
        )
        self.reason = reason


def origin_of(url: str) -> Origin:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        # The URL is not shown: it can be a server's Location header.
        raise HttpError("not an http(s) URL")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise HttpError("bad port in a URL") from None
    return scheme, parts.hostname, port


def _host_of(url: httpx.URL | str) -> tuple[str, int]:
    parsed = httpx.URL(url) if isinstance(url, str) else url
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    host = parsed.host
    return (f"[{host}]" if ":" in host else host), port


# The library quotes what the server sent (`illegal status line: bytearray(b'...')`,
# `Illegal header value b'...'`): cut it off, keep the library's own words.
_QUOTED = re.compile(r"""\s*:?\s*(?:bytearray\(|b'|b"|'|").*$""", re.DOTALL)


def library_words(error: BaseException) -> str:
    """The text of `error` without any bytes of the server's it quotes."""
    text = _QUOTED.sub("", str(error)).strip()
    return text[:200]


def _chain(error: BaseException) -> list[BaseException]:
    """`error` and its causes, into the first of a group (anyio raises one when every
    address of a host failed)."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        if isinstance(current, BaseExceptionGroup) and current.exceptions:
            current = current.exceptions[0]
        else:
            current = current.__cause__ or current.__context__
    return seen


def classify(error: BaseException, url: httpx.URL | str, *, in_body: bool) -> HttpError:
    """An httpx (or socket) failure as an `HttpError` that says what happened."""
    host, port = _host_of(url)
    where = f"{host}:{port}"
    chain = _chain(error)
    for cause in chain:
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or cause.reason or "verification failed"
            return CertificateError(host, port, str(reason))
    for cause in chain:
        if isinstance(cause, socket.gaierror):
            return HttpError(
                f"{where}: {cause.strerror}", kind="dns", host=where, detail=str(cause.strerror)
            )
        if isinstance(cause, ConnectionRefusedError):
            return HttpError(
                f"{where}: connection refused",
                kind="refused",
                host=where,
                detail=str(cause.strerror or "connection refused"),
            )
        if isinstance(cause, ssl.SSLError):
            # "[SSL: WRONG_VERSION_NUMBER] wrong version number", without "(_ssl.c:1006)"
            detail = re.sub(r"\s*\(_ssl\.c:\d+\)", "", str(cause)).strip()[:200]
            return HttpError(f"{where}: TLS: {detail}", kind="tls", host=where, detail=detail)
    if isinstance(error, httpx.ConnectTimeout):
        return HttpError(f"{where}: connect timeout", kind="connect-timeout", host=where)
    if isinstance(error, (httpx.ReadTimeout, httpx.WriteTimeout)):
        return HttpError(f"{where}: idle timeout", kind="idle-timeout", host=where)
    detail = library_words(error)
    if isinstance(error, httpx.ProxyError):
        # httpcore says a refused CONNECT as "STATUS REASON": only the number is kept (the
        # reason phrase is the proxy's own text).
        refused = re.fullmatch(r"([1-5][0-9][0-9]) [^\n]*", detail)
        if refused:
            return HttpError(
                f"{where}: the proxy refused the tunnel (HTTP {refused[1]})",
                kind="proxy-refused",
                host=where,
                detail=refused[1],
            )
    if not detail:  # httpx gives some of its errors no text
        if isinstance(error, httpx.ReadError):
            detail = "the connection broke while reading"
        elif isinstance(error, httpx.WriteError):
            detail = "the connection broke while writing"
        else:
            detail = "the connection failed"
    if isinstance(error, httpx.RemoteProtocolError):
        if detail.startswith("Server disconnected without sending a response"):
            return HttpError(f"{where}: {detail}", kind="closed", host=where, detail=detail)
        if detail.startswith("peer closed connection without sending complete message body"):
            return HttpError(f"{where}: {detail}", kind="cut-short", host=where, detail=detail)
        return HttpError(f"{where}: {detail}", kind="malformed", host=where, detail=detail)
    if isinstance(error, httpx.DecodingError):
        return HttpError(f"{where}: {detail}", kind="malformed", host=where, detail=detail)
    if isinstance(error, httpx.ReadError) and in_body:
        return HttpError(f"{where}: {detail}", kind="cut-short", host=where, detail=detail)
    return HttpError(f"{where}: {detail}", kind="network", host=where, detail=detail)


class _Dispatch(httpx.AsyncBaseTransport):
    """Sends each request through the transport for the proxy `proxy_for` names for its
    URL (one per distinct proxy, made on first use), or the direct one. Plain-HTTP and
    HTTPS URLs get their own: loading the CA bundle (about 40 ms) is paid on the first
    https request, not by a run that speaks to plain-HTTP registries only."""

    def __init__(
        self,
        proxy_for: ProxyFor | None,
        make: Callable[[str | None, bool], httpx.AsyncHTTPTransport],
    ) -> None:
        self._proxy_for = proxy_for
        self._make = make
        self._transports: dict[tuple[str | None, bool], httpx.AsyncHTTPTransport] = {}

    def transport_for(self, url: httpx.URL) -> httpx.AsyncHTTPTransport:
        proxy = self._proxy_for(str(url)) if self._proxy_for is not None else None
        key = (proxy, url.scheme == "https")
        transport = self._transports.get(key)
        if transport is None:
            transport = self._transports[key] = self._make(*key)
        return transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.transport_for(request.url).handle_async_request(request)

    async def aclose(self) -> None:
        transports, self._transports = list(self._transports.values()), {}
        for transport in transports:
            await transport.aclose()


class Response:
    """A response whose body is read with `iter_chunks` (decoded), `iter_raw` (as sent)
    or `read`. Failures while reading are `HttpError`s."""

    def __init__(self, response: httpx.Response, idle_timeout: float | None) -> None:
        self._response = response
        self._idle = idle_timeout
        self.url = str(response.url)
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers
        self.content_length: int | None = None
        length = response.headers.get("content-length")
        if length is not None and length.isdigit():  # the library has validated it
            self.content_length = int(length)

    async def _pieces(self, pieces: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
        """What has arrived, in pieces of at most `size` bytes: not held back until
        `size` bytes are in (a blob copy forwards each piece as it comes)."""
        try:
            async for piece in pieces:
                for start in range(0, len(piece), size):
                    yield piece[start : start + size]
        except httpx.HTTPError as error:
            raised = classify(error, self._response.url, in_body=True)
            if raised.kind == "idle-timeout":
                raised.seconds = self._idle
            raise raised from None

    def iter_chunks(self, size: int = 65536) -> AsyncIterator[bytes]:
        """The body as the server meant it: decoded when it sent a Content-Encoding."""
        return self._pieces(self._response.aiter_bytes(), size)

    def iter_raw(self, size: int = 65536) -> AsyncIterator[bytes]:
        """The body's bytes as sent (for blobs, which are stored as they are)."""
        return self._pieces(self._response.aiter_raw(), size)

    async def read(self, limit: int | None = None) -> bytes:
        """The whole (decoded) body; `HttpError` past `limit` bytes."""
        parts = []
        total = 0
        async for data in self.iter_chunks(READ_LIMIT):
            total += len(data)
            if limit is not None and total > limit:
                raise HttpError("the body is longer than the limit")
            parts.append(data)
        return b"".join(parts)


class _BodyWatch:
    """Wraps a streamed request body: the response-head timer starts when it ends."""

    def __init__(self, body: AsyncIterator[bytes], on_end: Callable[[], None]) -> None:
        self._body = body
        self._on_end = on_end

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for piece in self._body:
            if piece:
                yield piece
        self._on_end()


class HttpClient:
    """Keep-alive connections (httpx's pool). Use as `async with HttpClient() as http`."""

    def __init__(
        self,
        *,
        connect_timeout: float | None = 30.0,
        head_timeout: float | None = 30.0,
        idle_timeout: float | None = 30.0,
        default_headers: Mapping[str, str] | None = None,
        max_idle_per_origin: int = 128,
        proxy_for: ProxyFor | None = None,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.head_timeout = head_timeout
        self.idle_timeout = idle_timeout
        self._ssl: ssl.SSLContext | None = None
        limits = httpx.Limits(
            max_connections=None,
            max_keepalive_connections=max_idle_per_origin * 4,
            keepalive_expiry=30.0,
        )

        def make(proxy: str | None, https: bool) -> httpx.AsyncHTTPTransport:
            # A plain-HTTP URL never uses the context (a proxy given as https:// gets
            # httpx's own); an empty one costs nothing to make.
            context = self._ssl_context() if https else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            return httpx.AsyncHTTPTransport(
                verify=context, trust_env=False, limits=limits, proxy=proxy
            )

        self._dispatch = _Dispatch(proxy_for, make)
        self._client = httpx.AsyncClient(
            transport=self._dispatch,
            trust_env=False,
            timeout=httpx.Timeout(
                connect=connect_timeout, read=idle_timeout, write=idle_timeout, pool=None
            ),
            max_redirects=MAX_REDIRECTS,
            headers=default_headers,
        )
        # Not asked for: a registry's bytes arrive as stored (see the module docstring).
        del self._client.headers["Accept-Encoding"]

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._client.aclose()

    @asynccontextmanager
    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        follow_redirects: bool = True,
    ) -> AsyncIterator[Response]:
        """Send one request (following redirects of GET and HEAD); the response's body
        is read inside the block."""
        origin_of(url)  # refuses what is not an http(s) URL before anything is sent
        response = await self._send(method, url, headers, body, follow_redirects)
        if response is None:  # closed unanswered: a kept connection's race, once more
            response = await self._send(method, url, headers, body, follow_redirects, again=False)
            assert response is not None
        try:
            yield Response(response, self.idle_timeout)
        finally:
            await response.aclose()

    async def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        body: Body,
        follow_redirects: bool,
        *,
        again: bool = True,
    ) -> httpx.Response | None:
        """The response, its head read; None when the server closed the connection
        before answering a request that may be sent again (`again`)."""
        streamed = body is not None and not isinstance(body, bytes)
        loop = asyncio.get_running_loop()
        limit = self.head_timeout
        timer = asyncio.timeout(None)

        def start_head_timer() -> None:
            if limit is not None:
                timer.reschedule(loop.time() + limit)

        content: bytes | _BodyWatch | None
        if streamed:
            assert body is not None and not isinstance(body, bytes)
            content = _BodyWatch(body, start_head_timer)
        else:
            content = body if isinstance(body, bytes) else None
        request = self._client.build_request(method, url, headers=headers, content=content)
        try:
            async with timer:
                if not streamed:
                    start_head_timer()
                return await self._client.send(
                    request,
                    stream=True,
                    follow_redirects=follow_redirects and method in ("GET", "HEAD"),
                )
        except TimeoutError:
            if not timer.expired():
                raise
            host, port = _host_of(url)
            raise HttpError(
                f"{host}:{port}: no response head",
                kind="head-timeout",
                host=f"{host}:{port}",
                seconds=limit,
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            raised = classify(error, request.url, in_body=False)
            if raised.kind == "connect-timeout":
                raised.seconds = self.connect_timeout
            elif raised.kind == "idle-timeout":
                raised.seconds = self.idle_timeout
            if raised.kind == "closed" and not streamed and again:
                return None
            raise raised from None
