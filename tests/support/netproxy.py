"""In-process network stand-ins on loopback for tests and benchmarks.

`LatencyProxy` forwards TCP and delays every chunk by a fixed time each way (the path
to a distant registry) without limiting throughput. `FaultProxy` forwards HTTP and
answers 500 or 429 to chosen requests first, then lets them through. `FreezeProxy`
forwards TCP until a chosen request passes, then holds every reply on that connection
(a client stopped at that exact point, for crash tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict


class LatencyProxy:
    def __init__(self, target_host: str, target_port: int, delay: float) -> None:
        self.target = (target_host, target_port)
        self.delay = delay
        self.port = 0
        self.connections = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> LatencyProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError):
                writer.write_eof()

        delivery = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(65536)
                await queue.put((time.monotonic() + self.delay, data))
                if not data:
                    break
            await delivery
        except (ConnectionError, asyncio.CancelledError):
            delivery.cancel()
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            # The connect itself crosses the slow path too: one round trip.
            await asyncio.sleep(2 * self.delay)
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()


FaultRule = Callable[[str, str, int], int | None]


def manifest_reads_fault_twice(method: str, path: str, seen: int) -> int | None:
    """The first two tries of every manifest read fail: 500, then 429; the third passes.
    Every inspection reads at least one manifest, so both faults are always injected
    (an earlier rule picked paths by the parity of their bytes, and a random repository
    name could leave every path unfaulted: the test then failed for no fault of the code)."""
    if "/manifests/" in path and seen < 2:
        return 500 if seen == 0 else 429
    return None


_HOP_AND_LENGTH = ("content-length", "transfer-encoding", "connection")


class FaultProxy:
    """HTTP forwarder that answers some requests with 500 or 429 before serving them."""

    def __init__(self, target: str, rule: FaultRule = manifest_reads_fault_twice) -> None:
        self.target = f"http://{target}"
        self.rule = rule
        self.seen: Counter[tuple[str, str]] = Counter()
        self.injected: Counter[int] = Counter()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> FaultProxy:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._session = aiohttp.ClientSession(auto_decompress=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None and self._session is not None
        await self._session.close()
        await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        key = (request.method, request.path_qs)
        seen = self.seen[key]
        self.seen[key] += 1
        fault = self.rule(request.method, request.path_qs, seen)
        if fault is not None:
            self.injected[fault] += 1
            answer = {"Retry-After": "1"} if fault == 429 else {}
            return web.Response(status=fault, text="injected fault", headers=answer)
        assert self._session is not None
        # A multidict: a header sent several times (Go sends one Accept line per media
        # type) must reach the registry every time, not only the last value.
        sent = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() != "host")
        body = await request.read()
        async with self._session.request(
            request.method,
            self.target + request.path_qs,
            headers=sent,
            data=body,
            allow_redirects=False,
        ) as upstream:
            data = await upstream.read()
            # A HEAD answer's Content-Length is the size of what a GET would send (a pusher
            # reads it to know a blob is there): kept as is, with no body.
            head = request.method == "HEAD"
            dropped = ("transfer-encoding", "connection") if head else _HOP_AND_LENGTH
            out_headers = CIMultiDict(
                (k, v) for k, v in upstream.headers.items() if k.lower() not in dropped
            )
            if head:
                return web.Response(status=upstream.status, headers=out_headers)
            return web.Response(status=upstream.status, body=data, headers=out_headers)


class FreezeProxy:
    """TCP forwarder that freezes the connection on which a chosen request passes: the
    request reaches the server (which runs it), its reply and every later one on that
    connection are held back, so the client waits, as if killed at that exact moment.

    `trigger` is a byte string the request carries (a Redis key name, say); `frozen` is
    set once such a request has been written to the server in full.
    """

    def __init__(self, target_host: str, target_port: int, trigger: bytes) -> None:
        if not trigger:
            raise ValueError("a trigger is needed")
        self.target = (target_host, target_port)
        self.trigger = trigger
        self.port = 0
        self.frozen = asyncio.Event()
        self.held = 0  # reply bytes held back
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> FreezeProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        frozen = asyncio.Event()  # this connection's
        up_writer: asyncio.StreamWriter | None = None

        async def upstream(up: asyncio.StreamWriter) -> None:
            tail = b""
            while data := await reader.read(65536):
                seen = tail + data
                # Frozen before the request leaves: no byte of its reply gets through.
                trip = not self.frozen.is_set() and self.trigger in seen
                if trip:
                    frozen.set()
                up.write(data)
                await up.drain()
                if trip:
                    self.frozen.set()
                tail = seen[-len(self.trigger) :]
            with contextlib.suppress(OSError):
                up.write_eof()

        async def downstream(up_reader: asyncio.StreamReader) -> None:
            while data := await up_reader.read(65536):
                if frozen.is_set():
                    self.held += len(data)
                    continue
                writer.write(data)
                await writer.drain()

        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            await asyncio.gather(upstream(up_writer), downstream(up_reader))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            for closing in (writer, up_writer):
                if closing is not None:
                    with contextlib.suppress(Exception):
                        closing.close()
