"""A small HTTP/1.1 client on asyncio streams: what the registry client needs, nothing more.

Why not aiohttp here: importing it costs about 200 ms (its connector builds two TLS
contexts at import time), more than the whole network part of a warm `aibrix-bot sync`
or `aibrix-bot inspect`, which every CI gate and release engineer pays on each run. The
registry protocol needs little of it: requests with a buffered or streamed body,
responses streamed or read whole, keep-alive, redirects of reads.

- One pool of keep-alive connections per origin (scheme, host, port); `preconnect`
  opens connections ahead of a burst of requests (each new connection costs a round
  trip, and more with TLS). A request on a reused connection that the server had
  closed while idle is sent again once on a fresh one (when its body is bytes).
- Request bodies: bytes (Content-Length) or an async iterator of bytes (Content-Length
  when the caller gives it, else chunked), written while the response is awaited, so an
  early answer (401, 5xx) is seen. An exception raised by the iterator aborts the
  connection (the server never sees the body end) and propagates as it is.
- Response bodies: Content-Length, chunked or until close, read in pieces of at most the
  size asked; a response left before its end closes its connection.
- Redirects of GET and HEAD are followed (at most 10); `Authorization` is dropped when
  a redirect leaves the origin. TLS through `ssl.create_default_context()`, built on
  first use of https. No cookies, proxies or compression (nothing asks for them).

Transport failures (refused, reset, closed early, malformed answers, timeouts) raise
`HttpError` or `TimeoutError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from jobs.domain.errors import Unavailable
from jobs.registry import preconnect

if TYPE_CHECKING:
    import ssl

MAX_HEAD_BYTES = 256 * 1024
MAX_REDIRECTS = 10
READ_LIMIT = 256 * 1024  # stream buffer: the transport pauses reading at twice this
WRITE_HIGH_WATER = 256 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NO_BODY = frozenset({204, 304})

Origin = tuple[str, str, int]  # scheme, host, port
Body = bytes | AsyncIterator[bytes] | None


class HttpError(Unavailable):
    """The connection failed or the peer broke HTTP: a transport error, worth a retry."""


class CertificateError(HttpError):
    """The server's TLS certificate failed verification: no retry can help."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        # OpenSSL's reason can quote the certificate's names, which the server chose:
        # keep the reason itself ("Hostname mismatch", "self-signed certificate").
        reason = reason.split(",", 1)[0].split("'", 1)[0].strip() or "verification failed"
        super().__init__(f"the TLS certificate of {host}:{port} is not trusted ({reason})")
        self.host = f"{host}:{port}"
        self.reason = reason


class Headers(Mapping[str, str]):
    """Response headers, looked up without regard to case; the first of repeated
    fields wins."""

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items: dict[str, str] = {}
        for name, value in (items or {}).items():
            self._items.setdefault(name.lower(), value)

    def add(self, name: str, value: str) -> None:
        self._items.setdefault(name.lower(), value)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


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


def _target(url: str) -> tuple[str, str]:
    """Host header and request target of an absolute URL, as given (already encoded)."""
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return parts.netloc.rsplit("@", 1)[-1], target


def parse_head(block: bytes) -> tuple[int, bool, Headers]:
    """Status, whether the connection may be kept, and headers of a response head
    (the bytes up to and including the blank line)."""
    try:
        text = block.decode("latin-1")
        lines = text.split("\r\n")
        version, _, rest = lines[0].partition(" ")
        status = int(rest[:3])
    except (ValueError, IndexError):
        raise HttpError("the server sent a malformed status line") from None
    if not version.startswith("HTTP/1.") or not 100 <= status <= 999:
        raise HttpError("the server does not speak HTTP/1.x")
    headers = Headers()
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError("the server sent a malformed header line")
        headers.add(name, value.strip())
    connection = headers.get("connection", "").lower()
    keep = "close" not in connection
    if version == "HTTP/1.0":
        keep = "keep-alive" in connection
    return status, keep, headers


def _without_authorization(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() != "authorization"}


class _Connection:
    def __init__(
        self, origin: Origin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.origin = origin
        self.reader = reader
        self.writer = writer
        self.reused = False

    @property
    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.transport.abort()


class Response:
    """A response whose body is read with `iter_chunks` or `read`."""

    def __init__(
        self,
        client: HttpClient,
        connection: _Connection,
        method: str,
        url: str,
        status: int,
        keep: bool,
        headers: Headers,
        read_timeout: float | None,
    ) -> None:
        self._client = client
        self._connection: _Connection | None = connection
        self.url = url
        self.status = status
        self.headers = headers
        self._keep = keep
        self._timeout = read_timeout
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self.content_length: int | None = None
        if not self._chunked and "content-length" in headers:
            try:
                self.content_length = int(headers["content-length"])
            except ValueError:
                raise HttpError("the server sent a malformed Content-Length") from None
            if self.content_length < 0:
                raise HttpError("the server sent a negative Content-Length")
        self._remaining: int | None = None  # bytes left (length mode) or in this chunk
        if method == "HEAD" or status in _NO_BODY or status < 200:
            self._remaining = 0
            self._chunked = False
            self.content_length = self.content_length if method == "HEAD" else 0
            self._done = True
        elif self._chunked:
            self._done = False
        elif self.content_length is not None:
            self._remaining = self.content_length
            self._done = self.content_length == 0
        else:
            self._keep = False  # delimited by the close
            self._done = False
        if self._done:
            self._finish()

    async def _read(self, size: int) -> bytes:
        assert self._connection is not None
        async with asyncio.timeout(self._timeout):
            return await self._connection.reader.read(size)

    async def _line(self) -> bytes:
        assert self._connection is not None
        try:
            async with asyncio.timeout(self._timeout):
                return await self._connection.reader.readuntil(b"\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            raise HttpError("the server broke off a chunked body") from None

    async def _next(self, size: int) -> bytes:
        """The next piece of the body (at most `size` bytes), b"" at its end."""
        if self._done:
            return b""
        if self._chunked:
            if not self._remaining:
                line = await self._line()
                try:
                    length = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise HttpError("the server sent a malformed chunk size") from None
                if length == 0:
                    while (await self._line()) != b"\r\n":  # trailers
                        pass
                    self._done = True
                    self._finish()
                    return b""
                self._remaining = length
            data = await self._read(min(size, self._remaining))
            if not data:
                raise HttpError("the connection closed in the middle of the body")
            self._remaining -= len(data)
            if self._remaining == 0 and (await self._line()) != b"\r\n":
                raise HttpError("the server sent a malformed chunk")
            return data
        if self._remaining is None:  # until the close
            data = await self._read(size)
            if not data:
                self._done = True
                self._finish()
            return data
        data = await self._read(min(size, self._remaining))
        if not data:
            raise HttpError("the connection closed before the body ended")
        self._remaining -= len(data)
        if self._remaining == 0:
            self._done = True
            self._finish()
        return data

    async def iter_chunks(self, size: int = 65536) -> AsyncIterator[bytes]:
        while True:
            data = await self._next(size)
            if not data:
                return
            yield data

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body; `HttpError` past `limit` bytes."""
        parts = []
        total = 0
        async for data in self.iter_chunks(READ_LIMIT):
            total += len(data)
            if limit is not None and total > limit:
                raise HttpError("the body is longer than the limit")
            parts.append(data)
        return b"".join(parts)

    def _finish(self) -> None:
        """The body has been read to its end: the connection may serve another request."""
        connection, self._connection = self._connection, None
        if connection is not None:
            self._client._release(connection, self._keep)

    def close(self) -> None:
        """Leave the response; a body not read to its end costs its connection."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


class HttpClient:
    """Keep-alive connections per origin. Use as `async with HttpClient() as http`."""

    def __init__(
        self,
        *,
        connect_timeout: float | None = 30.0,
        read_timeout: float | None = 30.0,
        default_headers: Mapping[str, str] | None = None,
        max_idle_per_origin: int = 128,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.default_headers = dict(default_headers or {})
        self.max_idle = max_idle_per_origin
        self._idle: dict[Origin, list[_Connection]] = {}
        self._opening: set[asyncio.Task[None]] = set()
        self._opening_count: dict[Origin, int] = {}
        self._ssl: ssl.SSLContext | None = None
        self._closed = False
        self.connections_opened = 0

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
        self._closed = True
        for task in list(self._opening):
            task.cancel()
        await asyncio.gather(*self._opening, return_exceptions=True)
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    # -- connections

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            import ssl

            self._ssl = ssl.create_default_context()
        return self._ssl

    async def _open(self, origin: Origin, *, early: bool = True) -> _Connection:
        """A new connection; `early`: one begun during start-up if there is one left
        (those go to requests, not to `preconnect`'s background opens)."""
        scheme, host, port = origin
        context = self._ssl_context() if scheme == "https" else None
        name = host if scheme == "https" else None
        begun = preconnect.take(host, port) if early else None
        if begun is not None:  # begun during start-up: TLS (if any) still to do
            sock, address = begun
            try:
                async with asyncio.timeout(self.connect_timeout):
                    try:
                        await asyncio.get_running_loop().sock_connect(sock, address)
                    except OSError as error:
                        if error.errno != errno.EISCONN:
                            raise
                    reader, writer = await asyncio.open_connection(
                        sock=sock, limit=READ_LIMIT, ssl=context, server_hostname=name
                    )
            except (OSError, TimeoutError):
                sock.close()
            else:
                connection = self._connection(origin, reader, writer)
                connection.reused = True  # it may have been closed meanwhile: retried once
                return connection
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, limit=READ_LIMIT, ssl=context, server_hostname=name
                )
        except OSError as error:
            if context is not None:
                import ssl  # already loaded: the context was built with it

                if isinstance(error, ssl.SSLCertVerificationError):
                    reason = error.verify_message or error.reason or "verification failed"
                    raise CertificateError(host, port, str(reason)) from None
            raise HttpError(f"cannot connect to {host}:{port} ({type(error).__name__})") from None
        return self._connection(origin, reader, writer)

    def _connection(
        self, origin: Origin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> _Connection:
        writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.connections_opened += 1
        return _Connection(origin, reader, writer)

    def _take_idle(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.usable:
                connection.reused = True
                return connection
            connection.close()
        return None

    def _release(self, connection: _Connection, keep: bool) -> None:
        idle = self._idle.setdefault(connection.origin, [])
        if keep and not self._closed and connection.usable and len(idle) < self.max_idle:
            idle.append(connection)
        else:
            connection.close()

    def idle_count(self, url: str) -> int:
        return sum(1 for c in self._idle.get(origin_of(url), []) if c.usable)

    def preconnect(self, url: str, count: int) -> None:
        """Open connections to `url`'s origin in the background until `count` are idle
        or opening (a failure here is silent: the request that needs one will say)."""
        origin = origin_of(url)
        opening = self._opening_count.get(origin, 0)
        for _ in range(count - self.idle_count(url) - opening):
            self._opening_count[origin] = self._opening_count.get(origin, 0) + 1
            task = asyncio.get_running_loop().create_task(self._preopen(origin))
            self._opening.add(task)
            task.add_done_callback(self._opening.discard)

    async def _preopen(self, origin: Origin) -> None:
        try:
            connection = await self._open(origin, early=False)
            self._release(connection, keep=True)
        except (HttpError, TimeoutError):
            pass
        finally:
            self._opening_count[origin] -= 1

    # -- requests

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
        timeout = self.read_timeout
        request_headers = {**self.default_headers, **(headers or {})}
        response: Response | None = None
        try:
            for _ in range(MAX_REDIRECTS + 1):
                response = await self._send(method, url, request_headers, body, timeout)
                location = response.headers.get("location")
                if not (
                    follow_redirects
                    and method in ("GET", "HEAD")
                    and response.status in _REDIRECTS
                    and location
                ):
                    break
                response.close()
                target = urljoin(url, location)
                if origin_of(target) != origin_of(url):
                    request_headers = _without_authorization(request_headers)
                url = target
            else:
                raise HttpError("too many redirects")
            yield response
        finally:
            if response is not None:
                response.close()

    async def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: Body,
        timeout: float | None,
    ) -> Response:
        origin = origin_of(url)
        host, target = _target(url)
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        names = {name.lower() for name in headers}
        streamed = body is not None and not isinstance(body, bytes)
        if isinstance(body, bytes) and "content-length" not in names:
            lines.append(f"Content-Length: {len(body)}")
        elif streamed and "content-length" not in names:
            lines.append("Transfer-Encoding: chunked")
        elif body is None and method in ("POST", "PUT", "PATCH") and "content-length" not in names:
            lines.append("Content-Length: 0")
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        chunked = streamed and "content-length" not in names
        while True:
            connection = self._take_idle(origin) or await self._open(origin)
            try:
                if streamed:
                    assert body is not None and not isinstance(body, bytes)
                    status, keep, response_headers = await self._exchange_streamed(
                        connection, head, body, chunked, timeout
                    )
                else:
                    data = head + body if isinstance(body, bytes) else head
                    connection.writer.write(data)
                    async with asyncio.timeout(timeout):
                        await connection.writer.drain()
                        status, keep, response_headers = await self._read_head(connection)
            except BaseException as error:
                connection.close()
                if isinstance(error, (OSError, asyncio.IncompleteReadError)):
                    if connection.reused and not streamed:
                        continue  # closed by the server while idle: once more, afresh
                    raise HttpError(f"the connection failed ({type(error).__name__})") from None
                if isinstance(error, HttpError) and connection.reused and not streamed:
                    continue
                raise
            try:
                return Response(
                    self, connection, method, url, status, keep, response_headers, timeout
                )
            except HttpError:
                connection.close()
                raise

    async def _read_head(self, connection: _Connection) -> tuple[int, bool, Headers]:
        while True:
            try:
                block = await connection.reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                raise HttpError("the server sent an oversized response head") from None
            except asyncio.IncompleteReadError as error:
                if not error.partial:
                    raise HttpError("the server closed the connection") from None
                raise HttpError("the server broke off its response") from None
            status, keep, headers = parse_head(block)
            if status >= 200 or status == 101:
                return status, keep, headers
            # 1xx informational: the real answer follows

    async def _exchange_streamed(
        self,
        connection: _Connection,
        head: bytes,
        body: AsyncIterator[bytes],
        chunked: bool,
        timeout: float | None,
    ) -> tuple[int, bool, Headers]:
        """Write a streamed body while watching for the answer; an early answer stops
        the writing (and the connection is not kept)."""
        writer = connection.writer

        async def send() -> None:
            writer.write(head)
            async for piece in body:
                if not piece:
                    continue
                if chunked:
                    writer.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
                else:
                    writer.write(piece)
                async with asyncio.timeout(timeout):
                    await writer.drain()
            if chunked:
                writer.write(b"0\r\n\r\n")
            async with asyncio.timeout(timeout):
                await writer.drain()

        sending = asyncio.create_task(send())
        answer = asyncio.create_task(self._read_head(connection))
        try:
            await asyncio.wait({sending, answer}, return_when=asyncio.FIRST_COMPLETED)
            if sending.done():
                error = sending.exception()
                if error is not None and not isinstance(error, OSError):
                    raise error  # the body's own failure (a digest mismatch, say)
                async with asyncio.timeout(timeout):
                    status, keep, headers = await answer
                return status, keep and error is None, headers
            status, _, headers = answer.result()
            return status, False, headers  # answered before the body ended
        finally:
            for task in (sending, answer):
                if not task.done():
                    task.cancel()
            await asyncio.gather(sending, answer, return_exceptions=True)
