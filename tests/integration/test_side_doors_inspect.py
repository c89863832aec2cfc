"""Issue 10 item 3: `/aibrix inspect` reads only the registries the config names, never
echoes a registry's error text, and never lets credentials follow a redirect elsewhere.

Black-box: signed slash commands over real HTTP to the real Bolt app (the in-process
server of tests/test_bot_http.py), the lab Redis and registry, and registry stand-ins
that are real HTTP servers on this machine: they record what they receive (the
Authorization header above all) and answer as a hostile or broken registry would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import REPO, Lab, service_missing
from tests.support.bot import REQUESTER, Bot, answer, config_text, running_bot

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
USER = "bot-registry-user"
REFUSED = "is not on a registry this project uses"


# ---- registry stand-ins: real HTTP servers that record what they receive ----------------


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    authorization: str | None


Handler = Callable[["StandIn", web.Request], Awaitable[web.StreamResponse]]


@dataclass
class StandIn:
    handler: Handler
    host: str = "127.0.0.1"
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    runner: web.AppRunner | None = None

    @property
    def hostport(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(
            Seen(request.method, request.path_qs, request.headers.get("Authorization"))
        )
        return await self.handler(self, request)

    async def __aenter__(self) -> StandIn:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def image_content(repository: str, tag: str) -> dict[str, tuple[str, bytes]]:
    """path -> (content type, body) of a two-platform index, as a registry serves it."""
    served: dict[str, tuple[str, bytes]] = {}
    entries = []
    for arch in ("amd64", "arm64"):
        config = _json({"architecture": arch, "os": "linux", "rootfs": {"type": "layers"}})
        served[f"/v2/{repository}/blobs/{_digest(config)}"] = (OCI_CONFIG, config)
        manifest = _json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": _digest(config), "size": len(config)},
                "layers": [],
            }
        )
        served[f"/v2/{repository}/manifests/{_digest(manifest)}"] = (OCI_MANIFEST, manifest)
        entries.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": _digest(manifest),
                "size": len(manifest),
                "platform": {"os": "linux", "architecture": arch},
            }
        )
    index = _json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    served[f"/v2/{repository}/manifests/{tag}"] = (OCI_INDEX, index)
    return served


def serve_content(content: dict[str, tuple[str, bytes]], request: web.Request) -> web.Response:
    found = content.get(request.path)
    if found is None:
        return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, status=404)
    media_type, body = found
    return web.Response(
        body=body,
        headers={"Content-Type": media_type, "Docker-Content-Digest": _digest(body)},
    )


def basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"{USER}:{password}".encode()).decode()


def challenge_basic() -> web.Response:
    return web.json_response(
        {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
        status=401,
        headers={"WWW-Authenticate": 'Basic realm="stand-in"'},
    )


# ---- the bot, configured with a stand-in as a mirror ---------------------------------------


@dataclass
class Scoped:
    bot: Bot
    password: str
    namespace: str


@contextlib.asynccontextmanager
async def scoped_bot(
    lab: Lab,
    redis_url: str,
    tmp_path: Path,
    key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    mirrors: dict[str, str],
    credentials_for: list[str],
) -> AsyncIterator[Scoped]:
    """The real app whose config names the lab registry (release repository), the lab
    mirror and `mirrors`; the docker config holds credentials for `credentials_for`."""
    namespace = f"bot-{uuid.uuid4().hex[:8]}"
    text = config_text(lab, namespace, key_prefix)
    extra = "".join(f'{name} = "{location}"\n' for name, location in mirrors.items())
    text = text.replace("[mirrors]\n", "[mirrors]\n" + extra)
    path = tmp_path / "aibrix.toml"
    path.write_text(text)
    password = "pw-" + uuid.uuid4().hex
    auth = base64.b64encode(f"{USER}:{password}".encode()).decode()
    docker = tmp_path / "docker"
    docker.mkdir()
    auths = {host: {"auth": auth} for host in credentials_for}
    (docker / "config.json").write_text(json.dumps({"auths": auths}))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker))
    async with running_bot(lab, redis_url, path, key_prefix, namespace) as bot:
        try:
            yield Scoped(bot, password, namespace)
        finally:
            keys = await bot.server.redis.keys(f"{key_prefix}*")
            if keys:
                await bot.server.redis.delete(*keys)


async def inspect_answer(bot: Bot, reference: str, timeout: float = 30) -> str:
    """The ephemeral answer (text and blocks) to `/aibrix inspect reference`."""
    before = {id(e) for e in bot.standin.ephemerals_for(REQUESTER)}
    resp = await bot.slack.slash_command(f"inspect {reference}", user_id=REQUESTER)
    assert resp.status == 200
    assert "working on inspect" in answer(resp.body)["text"], resp.body
    found = await bot.ephemeral(REQUESTER, lambda e: id(e) not in before, timeout=timeout)
    return found.text + json.dumps(found.blocks)


def assert_nothing_secret(shown: str, password: str, *also: str) -> None:
    for secret in (password, basic(password), basic(password).split()[1], *also):
        assert secret not in shown, secret


# ---- refused before any connection ---------------------------------------------------------


@dataclass
class Listener:
    """A TCP listener that counts the connections it accepts (and says nothing)."""

    host: str
    accepted: int = 0
    port: int = 0
    server: asyncio.Server | None = None

    async def __aenter__(self) -> Listener:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            writer.close()

        self.server = await asyncio.start_server(on_connect, self.host, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


async def test_item3_inspect_of_unconfigured_host_is_refused_before_connecting(
    lab: Lab, redis_url: str, tmp_path: Path, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        v4 = await stack.enter_async_context(Listener("127.0.0.1"))
        listeners = [v4]
        names = [
            f"127.0.0.1:{v4.port}/NS/runtime:v1",  # loopback, any namespace
            f"localhost:{v4.port}/x/y:v1",
            f"127.0.0.1:{v4.port}/x@sha256:{'a' * 64}",
        ]
        if _ipv6_loopback():
            v6 = await stack.enter_async_context(Listener("::1"))
            listeners.append(v6)
            names.append(f"[::1]:{v6.port}/x/y:v1")
        scoped = await stack.enter_async_context(
            scoped_bot(
                lab,
                redis_url,
                tmp_path,
                key_prefix,
                monkeypatch,
                {},
                [f"127.0.0.1:{v4.port}", f"localhost:{v4.port}", lab.registry],
            )
        )
        bot, namespace = scoped.bot, scoped.namespace
        names[0] = names[0].replace("NS", namespace)  # the repository's own namespace
        names += [
            "169.254.169.254/latest/meta-data:v1",  # link-local metadata
            f"{lab.registry}/other-{namespace}/runtime:v1",  # configured host, other path
            f"{lab.registry}/{namespace}-evil/runtime:v1",
            f"{lab.mirror_registry}/{namespace}x/runtime:v1",
            "aibrix/runtime:v1",  # Docker Hub: not configured here
        ]
        for name in names:
            resp = await bot.slack.slash_command(f"inspect {name}", user_id=REQUESTER)
            assert resp.status == 200
            said = answer(resp.body)
            assert said["response_type"] == "ephemeral"
            if name.startswith("["):
                # Slack commands cannot even spell an IPv6 literal: refused as text
                assert "'[' (U+005B)" in said["text"], said["text"]
                continue
            assert REFUSED in said["text"], (name, said["text"])
            # it says what may be inspected
            assert f"{lab.registry}/{namespace} (the release repository)" in said["text"]
            assert f"{lab.mirror_registry}/{namespace} (mirror lab-mirror)" in said["text"]
        # A configured reference is still read: its answer arrives after all the refused
        # commands were handled, so anything they could have started has had its turn.
        shown = await inspect_answer(bot, f"{lab.registry}/{namespace}/runtime:absent")
        assert "could not be read" in shown
        assert [listener.accepted for listener in listeners] == [0] * len(listeners)
        assert await bot.keys() == []
        assert bot.standin.calls_to("chat.postMessage") == []


async def test_item3_inspect_of_configured_locations_is_admitted(
    lab: Lab, redis_url: str, tmp_path: Path, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A configured mirror is read, with its host in any letter case, and reached as the
    config spells it (its credentials found under that name)."""
    content = image_content("ns/runtime", "v1")

    async def registry(standin: StandIn, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") is None:
            return challenge_basic()
        return serve_content(content, request)

    async with StandIn(registry, host="localhost") as mirror:
        location = f"localhost:{mirror.port}"
        async with scoped_bot(
            lab,
            redis_url,
            tmp_path,
            key_prefix,
            monkeypatch,
            {"standin": f"{location}/ns"},
            [location],
        ) as scoped:
            for spelled in (location, f"LocalHost:{mirror.port}"):
                shown = await inspect_answer(scoped.bot, f"{spelled}/ns/runtime:v1")
                assert "every required platform is present" in shown, shown
                assert f"{location}/ns/runtime:v1" in shown
    assert {s.authorization for s in mirror.seen} == {None, basic(scoped.password)}
    assert all(s.path.startswith("/v2/ns/runtime/") for s in mirror.seen)


# ---- registry error text is never echoed ---------------------------------------------------


ERROR_CASES = [
    (400, "NAME_INVALID"),
    (401, "UNAUTHORIZED"),
    (403, "DENIED"),
    (404, "MANIFEST_UNKNOWN"),
    (418, "TOOMANYREQUESTS"),
    (500, "UNKNOWN"),
]


@pytest.mark.parametrize(("status", "code"), ERROR_CASES)
async def test_item3_registry_error_text_is_not_echoed(
    lab: Lab,
    redis_url: str,
    tmp_path: Path,
    key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    status: int,
    code: str,
) -> None:
    caplog.set_level(logging.DEBUG)

    async def hostile(standin: StandIn, request: web.Request) -> web.StreamResponse:
        received = request.headers.get("Authorization")
        if received is None:
            return challenge_basic()
        # what a careless or hostile registry does: echo what it was sent, everywhere
        return web.json_response(
            {
                "errors": [
                    {
                        "code": code,
                        "message": f"you sent {received}",
                        "detail": {"authorization": received, "path": request.path},
                    }
                ]
            },
            status=status,
            headers={
                "X-Echo": received,
                "WWW-Authenticate": f'Basic realm="{received}"',
                "Retry-After": "0",
            },
        )

    async with (
        StandIn(hostile) as registry,
        scoped_bot(
            lab,
            redis_url,
            tmp_path,
            key_prefix,
            monkeypatch,
            {"standin": f"{registry.hostport}/ns"},
            [registry.hostport],
        ) as scoped,
    ):
        shown = await inspect_answer(scoped.bot, f"{registry.hostport}/ns/runtime:v1")
    # the credentials did reach the registry (so it had something to echo) ...
    assert any(s.authorization == basic(scoped.password) for s in registry.seen)
    # ... and the answer shows the status and the error code, nothing of the free text
    assert f"HTTP {status}, {code}" in shown, shown
    assert "you sent" not in shown and "authorization" not in shown.lower()
    assert_nothing_secret(shown, scoped.password)
    assert_nothing_secret(caplog.text, scoped.password)


async def test_item3_an_error_code_that_is_not_an_identifier_is_not_shown(
    lab: Lab, redis_url: str, tmp_path: Path, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def hostile(standin: StandIn, request: web.Request) -> web.StreamResponse:
        received = request.headers.get("Authorization")
        if received is None:
            return challenge_basic()
        return web.json_response({"errors": [{"code": received}]}, status=400)

    async with (
        StandIn(hostile) as registry,
        scoped_bot(
            lab,
            redis_url,
            tmp_path,
            key_prefix,
            monkeypatch,
            {"standin": f"{registry.hostport}/ns"},
            [registry.hostport],
        ) as scoped,
    ):
        shown = await inspect_answer(scoped.bot, f"{registry.hostport}/ns/runtime:v1")
    assert "(HTTP 400)" in shown
    assert_nothing_secret(shown, scoped.password)


async def test_item3_cli_inspect_reads_any_reference_and_echoes_no_error_text(
    tmp_path: Path,
) -> None:
    """The operator's CLI is not limited to configured registries, and it too shows only
    the status and the code."""
    password = "pw-" + uuid.uuid4().hex

    async def hostile(standin: StandIn, request: web.Request) -> web.StreamResponse:
        received = request.headers.get("Authorization")
        if received is None:
            return challenge_basic()
        return web.json_response(
            {"errors": [{"code": "DENIED", "message": f"you sent {received}"}]}, status=400
        )

    docker = tmp_path / "docker"
    docker.mkdir()
    async with StandIn(hostile) as registry:
        auth = base64.b64encode(f"{USER}:{password}".encode()).decode()
        (docker / "config.json").write_text(
            json.dumps({"auths": {registry.hostport: {"auth": auth}}})
        )
        process = await asyncio.create_subprocess_exec(
            str(REPO / ".venv" / "bin" / "aibrix-bot"),
            "inspect",
            f"{registry.hostport}/anywhere/runtime:v1",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "DOCKER_CONFIG": str(docker), "AIBRIX_CONFIG": ""},
        )
        out, err = await process.communicate()
    shown = out.decode() + err.decode()
    assert process.returncode == 3, shown
    assert any(s.authorization == basic(password) for s in registry.seen)
    assert "HTTP 400, DENIED" in shown
    assert "you sent" not in shown
    assert_nothing_secret(shown, password)


# ---- credentials go to their own host only ------------------------------------------------


@pytest.mark.parametrize("elsewhere", ["127.0.0.1", "localhost"])
@pytest.mark.parametrize("demands", [False, True], ids=["serves", "demands-credentials"])
async def test_item3_credentials_never_follow_a_redirect_to_another_host(
    lab: Lab,
    redis_url: str,
    tmp_path: Path,
    key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    elsewhere: str,
    demands: bool,
) -> None:
    """The configured registry answers every manifest and blob read with a redirect to
    a server on another port (same address, or another host name for it), as registries
    do to their storage. That server must never see an Authorization header, not even
    when it answers 401 with a challenge of its own."""
    content = image_content("ns/runtime", "v1")

    async def storage(standin: StandIn, request: web.Request) -> web.StreamResponse:
        if demands:
            return challenge_basic()
        return serve_content(content, request)

    async with StandIn(storage, host="127.0.0.1") as store:
        target = f"http://{elsewhere}:{store.port}"

        async def registry(standin: StandIn, request: web.Request) -> web.StreamResponse:
            if request.headers.get("Authorization") is None:
                return challenge_basic()
            raise web.HTTPTemporaryRedirect(target + request.path_qs)

        async with (
            StandIn(registry) as front,
            scoped_bot(
                lab,
                redis_url,
                tmp_path,
                key_prefix,
                monkeypatch,
                {"standin": f"{front.hostport}/ns"},
                [front.hostport, f"{elsewhere}:{store.port}"],
            ) as scoped,
        ):
            shown = await inspect_answer(scoped.bot, f"{front.hostport}/ns/runtime:v1")
    assert any(s.authorization == basic(scoped.password) for s in front.seen)
    assert store.seen, "the redirect was followed"
    assert [s.authorization for s in store.seen] == [None] * len(store.seen)
    if demands:
        assert "the registry refused the credentials (HTTP 401, UNAUTHORIZED)" in shown
    else:
        assert "every required platform is present" in shown, shown
        paths = {s.path for s in store.seen}
        assert any("/blobs/" in p for p in paths) and any("/manifests/" in p for p in paths)
    assert_nothing_secret(shown, scoped.password)


def _outward_address() -> str | None:
    """This machine's address on its network (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.123", 9))  # no packet is sent for a UDP connect
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def _token_service(issued: str) -> Handler:
    async def token(standin: StandIn, request: web.Request) -> web.StreamResponse:
        return web.json_response({"token": issued, "expires_in": 300})

    return token


def _bearer_registry(realm: str, issued: str, content: dict[str, tuple[str, bytes]]) -> Handler:
    async def registry(standin: StandIn, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {issued}":
            return web.json_response(
                {"errors": [{"code": "UNAUTHORIZED"}]},
                status=401,
                headers={
                    "WWW-Authenticate": f'Bearer realm="{realm}",service="stand-in"',
                },
            )
        return serve_content(content, request)

    return registry


async def test_item3_a_bearer_realm_on_another_host_gets_the_credentials_as_docker_does(
    lab: Lab, redis_url: str, tmp_path: Path, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docker and containerd send the registry's credentials to the token service its
    challenge names, whatever its host (registry-1.docker.io -> auth.docker.io); so does
    the bot. The registry itself then gets only the token."""
    issued = "token-" + uuid.uuid4().hex
    content = image_content("ns/runtime", "v1")
    async with StandIn(_token_service(issued), host="localhost") as tokens:
        realm = f"http://localhost:{tokens.port}/token"
        async with (
            StandIn(_bearer_registry(realm, issued, content)) as registry,
            scoped_bot(
                lab,
                redis_url,
                tmp_path,
                key_prefix,
                monkeypatch,
                {"standin": f"{registry.hostport}/ns"},
                [registry.hostport],
            ) as scoped,
        ):
            shown = await inspect_answer(scoped.bot, f"{registry.hostport}/ns/runtime:v1")
    assert "every required platform is present" in shown, shown
    assert [s.authorization for s in tokens.seen] == [basic(scoped.password)] * len(tokens.seen)
    assert tokens.seen and all("scope=repository" in s.path for s in tokens.seen)
    assert {s.authorization for s in registry.seen} <= {None, f"Bearer {issued}"}


async def test_item3_credentials_never_go_in_clear_text_to_a_realm_on_another_host(
    lab: Lab, redis_url: str, tmp_path: Path, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain-HTTP token service on a host that is neither loopback nor given as an
    insecure registry (here: this machine's network address) gets no request at all."""
    outward = _outward_address()
    if outward is None:
        service_missing(
            "this machine has no non-loopback IPv4 address to serve a realm on",
            hint="the realm needs an address other than loopback",
        )
    issued = "token-" + uuid.uuid4().hex
    content = image_content("ns/runtime", "v1")
    async with StandIn(_token_service(issued), host=outward) as tokens:
        realm = f"http://{outward}:{tokens.port}/token"
        async with (
            StandIn(_bearer_registry(realm, issued, content)) as registry,
            scoped_bot(
                lab,
                redis_url,
                tmp_path,
                key_prefix,
                monkeypatch,
                {"standin": f"{registry.hostport}/ns"},
                [registry.hostport],
            ) as scoped,
        ):
            shown = await inspect_answer(scoped.bot, f"{registry.hostport}/ns/runtime:v1")
    assert tokens.seen == []
    assert "credentials are sent there only over HTTPS" in shown, shown
    assert_nothing_secret(shown, scoped.password, realm)
