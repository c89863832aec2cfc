"""The registry transport against servers that misbehave: each fault is one sentence that
names the host and the cause, waits are bounded, framing is strict.

The servers are raw asyncio socket servers started here, answering as a broken or hostile
registry would (a malformed status line, a negative or doubled Content-Length, a body
cut short, bare-LF line endings, a gzip-encoded manifest, a hang after accept, a head
trickled a byte at a time). What is checked is the text `aibrix-bot inspect` prints
(`bot.report.inspection_tables` over `inspect_many`, the command's own path), and that
the client gave up (the connections the server saw). Integration tier: the gzip blob
copy writes to the lab registry."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from bot.report import inspection_tables
from jobs.domain.manifests import Descriptor
from jobs.domain.platforms import parse_platform
from jobs.domain.references import parse_reference
from jobs.registry.client import RegistryClient, RegistrySettings
from jobs.registry.inspection import inspect_many
from tests.conftest import Lab
from tests.integration.test_registry_tls_lab import non_loopback_address
from tests.support.sync import run_bot

Answer = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
AMD64 = [parse_platform("linux/amd64")]

# Quick to give up: these servers answer the same way every time.
FAST = RegistrySettings(
    max_attempts=4,
    timeout_attempts=2,
    backoff_base=0.01,
    backoff_cap=0.02,
    connect_timeout=2.0,
    head_timeout=0.3,
    idle_timeout=0.3,
    budget=20.0,
)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


CONFIG = json.dumps({"os": "linux", "architecture": "amd64", "rootfs": {}}).encode()
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha(CONFIG),
            "size": len(CONFIG),
        },
        "layers": [],
    }
).encode()
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class RawServer:
    """Counts connections and request heads; `answer` writes whatever it likes."""

    answer: Answer
    host: str = "127.0.0.1"
    greeting: bytes = b""  # written as soon as a connection is accepted
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    address: str = ""
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"{self.host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._handlers:  # the ones still hanging or trickling
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        if self.greeting:
            writer.write(self.greeting)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                await self.answer(head, reader, writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


def once(data: bytes, *, close: bool = True) -> Answer:
    async def answer(
        head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(data)
        await writer.drain()
        if close:
            writer.close()

    return answer


async def hang(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(3600)


async def trickle(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A response head that never ends, a byte at a time."""
    writer.write(b"HTTP/1.1 200 OK\r\n")
    while True:
        writer.write(b"X")
        await writer.drain()
        await asyncio.sleep(0.05)


def registry(encode_manifest: bool = False, line_end: bytes = b"\r\n") -> Answer:
    """A tiny registry serving one image (manifest `v1` and its config)."""

    async def answer(
        head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        path = head.split(b" ", 2)[1].decode()
        headers = [b"HTTP/1.1 200 OK"]
        if "/manifests/" in path:
            body = MANIFEST
            headers += [
                b"Content-Type: " + MANIFEST_TYPE.encode(),
                b"Docker-Content-Digest: " + sha(MANIFEST).encode(),
            ]
            if encode_manifest:
                body = gzip.compress(MANIFEST)
                headers.append(b"Content-Encoding: gzip")
        elif path.endswith(sha(CONFIG)):
            body = CONFIG
        else:
            body = b"{}"
            headers[0] = b"HTTP/1.1 404 Not Found"
        headers.append(b"Content-Length: %d" % len(body))
        writer.write(line_end.join(headers) + line_end + line_end + body)
        await writer.drain()

    return answer


async def shown(server: RawServer, settings: RegistrySettings = FAST) -> str:
    """What `aibrix-bot inspect` prints for `server`'s image `v1`."""
    ref = parse_reference(f"{server.address}/ns/runtime:v1")
    async with RegistryClient(settings) as client:
        return inspection_tables(await inspect_many(client, [ref], AMD64))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# ---- item 3: errors that name the cause ----------------------------------------------------


async def test_a_refused_connection() -> None:
    port = closed_port()
    ref = parse_reference(f"127.0.0.1:{port}/ns/runtime:v1")
    async with RegistryClient(FAST) as client:
        said = inspection_tables(await inspect_many(client, [ref], AMD64))
    assert (
        f"cannot be read: cannot reach 127.0.0.1:{port}: the connection was refused (4 attempts)"
    ) in said


async def test_a_name_that_does_not_resolve() -> None:
    ref = parse_reference("registry.invalid:5000/ns/runtime:v1")
    async with RegistryClient(FAST) as client:
        said = inspection_tables(await inspect_many(client, [ref], AMD64))
    assert "cannot be read: cannot reach registry.invalid:5000: the name does not resolve (" in said


async def test_a_tls_handshake_that_fails() -> None:
    """A server on a non-loopback address (so the client speaks TLS) that answers the
    handshake in plain HTTP."""
    address = non_loopback_address()
    plain = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
    async with RawServer(hang, host=address, greeting=plain) as server:
        said = await shown(server)
    assert (
        f"cannot be read: cannot reach {server.address}: the TLS handshake failed "
        "([SSL: WRONG_VERSION_NUMBER] wrong version number)"
    ) in said, said


@pytest.mark.parametrize(
    ("reply", "what"),
    [
        (b"HTTP/1.1 2x0 S3CRET-IN-REASON\r\nContent-Length: 0\r\n\r\n", "illegal status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", "bad Content-Length"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
            "conflicting Content-Length headers",
        ),
    ],
    ids=["status-line", "negative-length", "two-lengths"],
)
async def test_a_malformed_answer_is_named_and_refused_at_once(reply: bytes, what: str) -> None:
    async with RawServer(once(reply, close=False)) as server:
        said = await shown(server)
    assert f"cannot be read: {server.address} sent a malformed HTTP response ({what})\n" in (
        said + "\n"
    ), said
    assert "S3CRET" not in said  # the server's own bytes are not repeated
    assert server.connections == 1, "a malformed answer is not asked again"


async def test_a_body_cut_short() -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10
    async with RawServer(once(reply)) as server:
        said = await shown(server)
    assert (
        f"cannot be read: {server.address} closed the connection before the response body "
        "ended (peer closed connection without sending complete message body (received 10 "
        "bytes, expected 100)) (4 attempts)"
    ) in said, said
    assert server.connections == 4


# ---- item 4: bounded waits ---------------------------------------------------------------


async def test_a_server_that_never_answers_is_given_up_on_after_two_attempts() -> None:
    async with RawServer(hang) as server:
        said = await shown(server)
    assert (
        f"cannot be read: {server.address} accepted the connection but sent no complete "
        "response head within 0.3 s (2 attempts)"
    ) in said, said
    assert server.connections == 2


async def test_a_head_trickled_a_byte_at_a_time_is_given_up_on() -> None:
    async with RawServer(trickle) as server:
        said = await shown(server)
    assert (
        f"{server.address} accepted the connection but sent no complete response head "
        "within 0.3 s (2 attempts)"
    ) in said, said
    assert server.connections == 2


async def test_a_body_that_stalls_is_given_up_on() -> None:
    async def stall(
        head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"{" * 10)
        await writer.drain()
        await asyncio.sleep(3600)

    async with RawServer(stall) as server:
        said = await shown(server)
    assert (
        f"{server.address} stopped sending in the middle of a response for 0.3 s (2 attempts)"
    ) in said, said
    assert server.connections == 2


async def test_a_timed_out_request_is_tried_fewer_times_than_a_503() -> None:
    reply = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
    async with RawServer(once(reply, close=False)) as busy, RawServer(hang) as hung:
        busy_said = await shown(busy)
        hung_said = await shown(hung)
    assert "the registry kept answering HTTP 503 after 4 attempts" in busy_said, busy_said
    assert "sent no complete response head within 0.3 s (2 attempts)" in hung_said, hung_said
    assert (hung.connections, len(busy.requests)) == (2, 4)


async def test_the_budget_for_one_reference_ends_the_wait() -> None:
    """With a response-head timeout longer than the budget, the budget decides."""
    settings = RegistrySettings(
        max_attempts=4, timeout_attempts=2, head_timeout=30.0, idle_timeout=30.0, budget=0.5
    )
    async with RawServer(hang) as server:
        said = await shown(server, settings)
    assert (
        f"cannot be read: gave up on {server.address} after 0.5 s, the time allowed for one "
        "reference (registry.budget_seconds in the configuration)"
    ) in said, said
    assert server.connections == 1


async def test_the_budget_is_read_from_the_configuration(tmp_path: Path) -> None:
    config = tmp_path / "aibrix.toml"
    config.write_text(
        f'repository = "127.0.0.1:5000/ns"\n[source]\npath = "{tmp_path}"\n'
        '[[components]]\nname = "runtime"\n[registry]\nbudget_seconds = 1\n'
    )
    async with RawServer(hang) as server:
        result = await run_bot(
            "inspect", "--config", str(config), f"{server.address}/ns/runtime:v1"
        )
    assert result.code == 3, result.stdout + result.stderr
    assert (
        f"{server.address}/ns/runtime:v1 cannot be read: gave up on {server.address} after "
        "1 s, the time allowed for one reference (registry.budget_seconds in the configuration)"
    ) in result.stdout, result.stdout
    assert server.connections == 1


# ---- item 5: framing and content coding ------------------------------------------------------


async def test_bare_lf_line_endings_are_read() -> None:
    async with RawServer(registry(line_end=b"\n")) as server:
        said = await shown(server)
    assert "verdict: ok" in said, said
    assert sha(MANIFEST) in said


async def test_a_gzip_encoded_manifest_is_decoded_and_its_digest_checked_on_the_decoded_bytes() -> (
    None
):
    async with RawServer(registry(encode_manifest=True)) as server:
        said = await shown(server)
        ref = parse_reference(f"{server.address}/ns/runtime@{sha(MANIFEST)}")
        async with RegistryClient(FAST) as client:
            manifest = await client.get_manifest(ref)
    assert "verdict: ok" in said, said
    assert manifest.digest == sha(MANIFEST)
    assert all(b"accept-encoding" not in r.lower() for r in server.requests)


async def test_a_blob_is_copied_as_sent_whatever_its_content_encoding(
    lab: Lab, unique_repo: str
) -> None:
    """A source that labels a gzip layer `Content-Encoding: gzip`: the copy stores the
    bytes it was sent (their digest is the descriptor's), not their decoding."""
    layer = gzip.compress(uuid.uuid4().bytes * 1000)

    async def source(
        head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(layer)
            + layer
        )
        await writer.drain()

    blob = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", sha(layer), len(layer))
    async with RawServer(source) as server, RegistryClient(FAST) as client:
        transfer = await client.copy_blob(
            parse_reference(f"{server.address}/ns/runtime:v1"),
            parse_reference(f"{lab.registry}/{unique_repo}:v1"),
            blob,
        )
    assert not transfer.mounted and transfer.bytes_sent == len(layer)
    assert all(b"accept-encoding" not in r.lower() for r in server.requests)
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        url = f"http://{lab.registry}/v2/{unique_repo}/blobs/{sha(layer)}"
        async with session.get(url) as stored:
            assert stored.status == 200 and await stored.read() == layer


async def test_a_blob_upload_is_not_cut_short_by_the_budget() -> None:
    """The budget bounds waits for answers, not a blob's bytes: an upload the destination
    takes longer than the budget to read (and answer) completes."""
    layer = uuid.uuid4().bytes * 65536  # 1 MiB

    async def source(
        head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(layer) + layer)
        await writer.drain()

    received = bytearray()

    async def destination(
        head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if head.startswith(b"POST "):
            writer.write(
                b"HTTP/1.1 202 Accepted\r\nLocation: /v2/ns/mirror/blobs/uploads/1\r\n"
                b"Content-Length: 0\r\n\r\n"
            )
        else:  # the PUT: read slowly, answer late
            while len(received) < len(layer):
                received.extend(
                    await reader.readexactly(min(128 * 1024, len(layer) - len(received)))
                )
                await asyncio.sleep(0.1)
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    settings = RegistrySettings(head_timeout=5.0, idle_timeout=5.0, budget=0.5)
    blob = Descriptor("application/vnd.oci.image.layer.v1.tar", sha(layer), len(layer))
    async with (
        RawServer(source) as src,
        RawServer(destination) as dst,
        RegistryClient(settings) as client,
    ):
        transfer = await client.copy_blob(
            parse_reference(f"{src.address}/ns/runtime:v1"),
            parse_reference(f"{dst.address}/ns/mirror:v1"),
            blob,
        )
    assert transfer.bytes_sent == len(layer) and transfer.attempts == 1
    assert bytes(received) == layer
