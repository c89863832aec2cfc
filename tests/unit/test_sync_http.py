"""The registry's HTTP client (jobs/registry/http.py, on httpx) against real HTTP servers
(aiohttp's): body framings, keep-alive, redirects, early answers to a streamed upload, a
stale pooled connection, the proxy hook."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from jobs.registry.http import HttpClient


@dataclass
class Server:
    url: str
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, auth
    peers: set[tuple[str, int]] = field(default_factory=set)
    runner: web.AppRunner | None = None


PAYLOAD = os.urandom(300_000)


async def start_server(redirect_to: str | None = None) -> Server:
    server = Server(url="")

    async def record(request: web.Request) -> None:
        server.seen.append((request.method, request.path, request.headers.get("Authorization")))
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            server.peers.add((peer[0], peer[1]))

    async def chunked(request: web.Request) -> web.StreamResponse:
        await record(request)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(0, len(PAYLOAD), 7000):
            await response.write(PAYLOAD[i : i + 7000])
        await response.write_eof()
        return response

    async def sized(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(body=PAYLOAD)

    async def redirect(request: web.Request) -> web.Response:
        await record(request)
        assert redirect_to is not None
        return web.Response(status=307, headers={"Location": f"{redirect_to}/sized"})

    async def upload(request: web.Request) -> web.Response:
        await record(request)
        if request.query.get("refuse"):
            return web.Response(status=401, text="no")  # before reading the body
        body = await request.read()
        return web.Response(status=201, text=str(len(body)))

    async def closing(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text="bye", headers={"Connection": "close"})

    app = web.Application()
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/sized", sized)
    app.router.add_get("/redirect", redirect)
    app.router.add_put("/upload", upload)
    app.router.add_get("/closing", closing)
    server.runner = web.AppRunner(app)
    await server.runner.setup()
    site = web.TCPSite(server.runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}"
    return server


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Server, Server]]:
    other = await start_server()
    main = await start_server(redirect_to=other.url)
    yield main, other
    for server in (main, other):
        assert server.runner is not None
        await server.runner.cleanup()


async def test_chunked_and_sized_bodies_on_one_kept_connection(
    servers: tuple[Server, Server],
) -> None:
    main, _ = servers
    async with HttpClient() as http:
        for path in ("/chunked", "/sized", "/chunked"):
            async with http.request("GET", main.url + path) as response:
                assert response.status == 200
                assert await response.read() == PAYLOAD
        async with http.request("HEAD", main.url + "/sized") as response:
            assert response.content_length == len(PAYLOAD)
            assert await response.read() == b""
    assert len(main.peers) == 1, "every request reused the one keep-alive connection"


async def test_a_redirect_elsewhere_drops_the_authorization(
    servers: tuple[Server, Server],
) -> None:
    main, other = servers
    async with HttpClient() as http:
        headers = {"Authorization": "Bearer secret-token"}
        async with http.request("GET", main.url + "/redirect", headers=headers) as response:
            assert response.status == 200 and await response.read() == PAYLOAD
            assert response.url == other.url + "/sized"
    assert main.seen == [("GET", "/redirect", "Bearer secret-token")]
    assert other.seen == [("GET", "/sized", None)]


async def test_a_streamed_upload_and_an_early_answer(servers: tuple[Server, Server]) -> None:
    main, _ = servers

    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(PAYLOAD), 65536):
            yield PAYLOAD[i : i + 65536]
            await asyncio.sleep(0)

    async with HttpClient() as http:
        async with http.request("PUT", main.url + "/upload", body=body()) as response:
            assert response.status == 201 and await response.read() == str(len(PAYLOAD)).encode()
        length = {"Content-Length": str(len(PAYLOAD))}
        url = main.url + "/upload?refuse=1"
        async with http.request("PUT", url, headers=length, body=body()) as response:
            assert response.status == 401  # seen although the body was not all sent


async def test_a_failing_body_aborts_the_request_with_its_own_error(
    servers: tuple[Server, Server],
) -> None:
    main, _ = servers

    async def body() -> AsyncIterator[bytes]:
        yield PAYLOAD[:65536]
        raise ValueError("the digest is wrong")

    async with HttpClient() as http:
        headers = {"Content-Length": str(len(PAYLOAD))}
        with pytest.raises(ValueError, match="digest"):
            async with http.request("PUT", main.url + "/upload", headers=headers, body=body()):
                pass


async def test_connection_close_is_honoured(servers: tuple[Server, Server]) -> None:
    main, _ = servers
    async with HttpClient() as http:
        async with http.request("GET", main.url + "/closing") as response:
            assert await response.read() == b"bye"
        async with http.request("GET", main.url + "/sized") as response:
            assert await response.read() == PAYLOAD
    assert len(main.peers) == 2


async def test_a_pooled_connection_the_server_dropped_is_replaced_at_once() -> None:
    """A plain server that answers the first request of each connection and drops the
    connection when a second one comes (the race of a server closing an idle keep-alive
    connection as the client reuses it)."""
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
        writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    try:
        async with HttpClient() as http:
            for _ in range(3):
                async with http.request("GET", url) as response:
                    assert response.status == 200 and await response.read() == b"ok"
    finally:
        server.close()
        await server.wait_closed()
    assert connections == 3


async def test_each_request_goes_through_the_proxy_its_hook_names(
    servers: tuple[Server, Server],
) -> None:
    """`proxy_for` decides per URL: a plain HTTP proxy (a socket server that answers
    every request itself) gets the requests it is named for, in absolute form, and the
    others go direct."""
    main, _ = servers
    seen: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                seen.append(head.split(b"\r\n", 1)[0])
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nproxied")
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    proxy_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    asked: list[str] = []

    def proxy_for(url: str) -> str | None:
        asked.append(url)
        return proxy_url if "via-proxy" in url else None

    try:
        async with HttpClient(proxy_for=proxy_for) as http:
            assert await _read(http, "http://registry.invalid:5000/v2/via-proxy") == b"proxied"
            assert await _read(http, main.url + "/sized") == PAYLOAD
            assert await _read(http, "http://registry.invalid:5000/v2/via-proxy") == b"proxied"
    finally:
        server.close()
        await server.wait_closed()
    assert seen == [b"GET http://registry.invalid:5000/v2/via-proxy HTTP/1.1"] * 2
    assert main.seen == [("GET", "/sized", None)]
    assert asked == [
        "http://registry.invalid:5000/v2/via-proxy",
        main.url + "/sized",
        "http://registry.invalid:5000/v2/via-proxy",
    ]


async def _read(http: HttpClient, url: str) -> bytes:
    async with http.request("GET", url) as response:
        return await response.read()
