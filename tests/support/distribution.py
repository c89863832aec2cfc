"""Real distribution registries a test starts for itself (Debian's `docker-registry`, the
same program as the lab's), for settings the shared lab registries do not have: token
authentication with a token service the test runs (and counts), or manifests whose layers
name download URLs (`validation.manifests.urls.allow`).

Moved here from tests/lab/test_sync_lab.py so other tests can start one too."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@contextlib.asynccontextmanager
async def distribution(
    directory: Path, extra: str = "", host: str | None = None
) -> AsyncIterator[str]:
    """A registry on loopback storing under `directory`, with `extra` YAML appended to its
    configuration; yields its host:port once `/v2/` answers."""
    host = host or f"127.0.0.1:{free_port()}"
    config = directory / f"registry-{uuid.uuid4().hex[:8]}.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: error, accesslog: {disabled: true}}\n"
        f"storage: {{filesystem: {{rootdirectory: {directory / 'storage'}}}, "
        "delete: {enabled: true}}\n"
        f"http: {{addr: {host}}}\n" + extra
    )
    process = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://{host}/v2/") as response:
                        if response.status in (200, 401):
                            break
                if process.poll() is not None:
                    raise AssertionError("the registry exited at start")
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the registry did not start")
        yield host
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass
class TokenRegistry:
    """A real distribution registry with token authentication, and the token service it
    trusts (RS256 JWTs signed by openssl, granting exactly the scopes asked for)."""

    host: str
    scopes_asked: list[list[str]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def token_registry(directory: Path) -> AsyncIterator[TokenRegistry]:
    key, cert = directory / "token.key", directory / "token.crt"
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    subprocess.run(
        [*request, "-subj", "/CN=aibrix-test-token", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    der = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-outform", "DER"], check=True, capture_output=True
    ).stdout
    registry = TokenRegistry(host=f"127.0.0.1:{free_port()}")

    async def token(request: web.Request) -> web.Response:
        scopes = request.query.getall("scope", [])
        registry.scopes_asked.append(list(scopes))
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        claims = {
            "iss": "aibrix-test-issuer",
            "sub": "",
            "aud": "aibrix-test-registry",
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        signed = await asyncio.create_subprocess_exec(
            "openssl", "dgst", "-sha256", "-sign", str(key),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        signature, _ = await signed.communicate(signing_input.encode())
        jwt = f"{signing_input}.{_b64url(signature)}"
        return web.json_response({"token": jwt, "expires_in": 300})

    app = web.Application()
    app.router.add_get("/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    realm_port = runner.addresses[0][1]
    auth = (
        "auth:\n"
        "  token:\n"
        f"    realm: http://127.0.0.1:{realm_port}/token\n"
        "    service: aibrix-test-registry\n"
        "    issuer: aibrix-test-issuer\n"
        f"    rootcertbundle: {cert}\n"
    )
    try:
        async with distribution(directory, auth, registry.host):
            yield registry
    finally:
        await runner.cleanup()
