"""The mirror sync against the real lab: three distribution registries (plain source,
plain mirror, htpasswd mirror), real Buildx images for the platforms docker pulls, and
images crafted through the registry API where a case needs them. Nothing is faked:
proxies here only count, delay, cut or answer 500/429 in front of a real registry."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import subprocess
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from jobs.domain.config_reader import load_config
from jobs.domain.manifests import DOCKER_MANIFEST, MANIFEST_ACCEPT, OCI_MANIFEST
from jobs.domain.sync_report import ComponentStatus, ProgressEvent, ProgressKind, SyncReport
from jobs.domain.versions import parse_version
from jobs.registry.client import RegistryClient
from jobs.registry.credentials import DockerConfig
from jobs.usecases.sync import resolve_mirrors, sync_release
from tests.conftest import REPO, Lab
from tests.support.oci_push import OciPusher, Pushed, entry
from tests.support.sync import (
    VERSION,
    Result,
    attestation,
    craft_component,
    run_bot,
    sha,
    write_docker_config,
)

COMPONENTS = ("runtime", "gateway-plugins")


# ---- helpers ----------------------------------------------------------------------------


class Http:
    """Direct registry reads and deletes for the checks, independent of the code tested."""

    def __init__(self, session: aiohttp.ClientSession, lab: Lab) -> None:
        self.session = session
        self.lab = lab

    def _headers(self, registry: str) -> dict[str, str]:
        headers = {"Accept": MANIFEST_ACCEPT}
        if registry == self.lab.auth_registry:
            token = base64.b64encode(f"{self.lab.auth_user}:{self.lab.auth_password}".encode())
            headers["Authorization"] = "Basic " + token.decode()
        return headers

    async def tag(self, registry: str, repo: str, ref: str) -> str | None:
        url = f"http://{registry}/v2/{repo}/manifests/{ref}"
        async with self.session.head(url, headers=self._headers(registry)) as r:
            if r.status == 404:
                return None
            assert r.status == 200, r.status
            return r.headers["Docker-Content-Digest"]

    async def manifest(self, registry: str, repo: str, ref: str) -> tuple[bytes, str]:
        url = f"http://{registry}/v2/{repo}/manifests/{ref}"
        async with self.session.get(url, headers=self._headers(registry)) as r:
            assert r.status == 200, r.status
            return await r.read(), r.headers["Content-Type"]

    async def has_blob(self, registry: str, repo: str, digest: str) -> bool:
        url = f"http://{registry}/v2/{repo}/blobs/{digest}"
        async with self.session.head(url, headers=self._headers(registry)) as r:
            assert r.status in (200, 404), r.status
            return r.status == 200

    async def delete_blob(self, registry: str, repo: str, digest: str) -> None:
        url = f"http://{registry}/v2/{repo}/blobs/{digest}"
        async with self.session.delete(url, headers=self._headers(registry)) as r:
            assert r.status == 202, await r.text()

    async def delete_manifest(self, registry: str, repo: str, digest: str) -> None:
        url = f"http://{registry}/v2/{repo}/manifests/{digest}"
        async with self.session.delete(url, headers=self._headers(registry)) as r:
            assert r.status == 202, await r.text()

    async def tree(self, registry: str, repo: str, ref: str) -> Tree:
        """Every manifest and blob digest reachable from a tag, read back."""
        raw, _ = await self.manifest(registry, repo, ref)
        top = json.loads(raw)
        tree = Tree(sha(raw))
        for child in top.get("manifests", []):
            tree.children.append(child["digest"])
            child_raw, _ = await self.manifest(registry, repo, child["digest"])
            body = json.loads(child_raw)
            for item in [body["config"], *body["layers"]]:
                tree.blobs[item["digest"]] = item["size"]
        return tree


@dataclass
class Tree:
    digest: str
    children: list[str] = field(default_factory=list)
    blobs: dict[str, int] = field(default_factory=dict)


@pytest.fixture
async def http(lab: Lab) -> AsyncIterator[Http]:
    async with aiohttp.ClientSession() as session:
        yield Http(session, lab)


def write_config(
    directory: Path,
    source: str,
    mirrors: dict[str, str],
    components: Sequence[str] = COMPONENTS,
) -> Path:
    path = directory / f"aibrix-{uuid.uuid4().hex[:6]}.toml"
    lines = [f'repository = "{source}"', "[source]", f'path = "{directory}"', "[mirrors]"]
    lines += [f'{name} = "{location}"' for name, location in mirrors.items()]
    for name in components:
        lines += ["[[components]]", f'name = "{name}"']
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def docker_config(lab: Lab, tmp_path: Path) -> Path:
    """Credentials for the htpasswd registry, as `docker login` would write them."""
    return write_docker_config(
        tmp_path / "docker", {lab.auth_registry: (lab.auth_user, lab.auth_password)}
    )


def mirror_ns() -> str:
    return f"mirror-{uuid.uuid4().hex[:10]}"


async def sync_in_process(
    config_path: Path,
    mirrors: Sequence[str],
    docker_config: Path,
    *,
    progress: Callable[[ProgressEvent], None] | None = None,
    deep: bool = False,
) -> tuple[SyncReport, RegistryClient]:
    config = load_config(config_path)
    targets = resolve_mirrors(config, mirrors)
    client = RegistryClient(docker_config=DockerConfig.load({"DOCKER_CONFIG": str(docker_config)}))
    async with client:
        report = await sync_release(
            client, config, parse_version(VERSION), targets, progress=progress, deep=deep
        )
    return report, client


# ---- proxies in front of the real mirror ---------------------------------------------------

FaultRule = Callable[[str, str, int], int | None]


class HttpProxy:
    """Forwards HTTP to a registry, keeping the Host header (so the upload Locations the
    registry writes point back here), counting requests by method, and answering some
    with the status `rule(method, path, nth request of that method)` gives."""

    def __init__(self, target: str, rule: FaultRule | None = None) -> None:
        self.target = f"http://{target}"
        self.rule = rule
        self.methods: Counter[str] = Counter()
        self.injected: Counter[int] = Counter()
        self.bytes_in = 0
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reset(self) -> None:
        self.methods.clear()
        self.injected.clear()
        self.bytes_in = 0

    async def __aenter__(self) -> HttpProxy:
        app = web.Application(client_max_size=1024**3)
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
        nth = self.methods[request.method]
        self.methods[request.method] += 1
        body = await request.read()
        self.bytes_in += len(body)
        fault = self.rule(request.method, request.path_qs, nth) if self.rule else None
        if fault is not None:
            self.injected[fault] += 1
            headers = {"Retry-After": "1"} if fault == 429 else {}
            return web.Response(status=fault, text="injected fault", headers=headers)
        assert self._session is not None
        hop = {"transfer-encoding", "connection", "content-length"}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in hop}
        async with self._session.request(
            request.method,
            self.target + request.path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as upstream:
            data = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in hop}
            return web.Response(status=upstream.status, body=data, headers=out)


class CuttingProxy:
    """A TCP proxy that drops the first `cuts` connections that forward more than
    `cut_after` bytes towards the registry: a blob upload cut in the middle."""

    def __init__(self, target_port: int, cut_after: int, cuts: int = 1) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.cuts_left = cuts
        self.cut = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def upstream() -> None:
            forwarded = 0
            while data := await reader.read(65536):
                forwarded += len(data)
                if self.cuts_left and forwarded > self.cut_after:
                    self.cuts_left -= 1
                    self.cut += 1
                    writer.transport.abort()
                    up_writer.transport.abort()
                    return
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        with contextlib.suppress(Exception):
            await asyncio.gather(upstream(), downstream())
        for w in (writer, up_writer):
            w.transport.abort()


# ---- a release built by real Buildx ----------------------------------------------------------


@dataclass
class BuiltRelease:
    namespace: str  # under the lab's plain registry
    token: str  # what /id holds in the runtime images
    digests: dict[str, str]  # component -> index digest


@pytest.fixture(scope="session")
async def built_release(
    lab: Lab, docker_available: None, tmp_path_factory: pytest.TempPathFactory
) -> BuiltRelease:
    """runtime: linux/amd64 and linux/arm64 images built by Buildx (real tar layers; the
    arm64 RUN under QEMU), an index crafted around them with an attestation manifest per
    image. gateway-plugins: crafted through the API, with attestations too."""
    from python_on_whales import docker

    namespace = f"sync-src-{uuid.uuid4().hex[:8]}"
    token = uuid.uuid4().hex
    context = tmp_path_factory.mktemp("sync-ctx")
    (context / "Dockerfile").write_text(
        f"FROM {lab.base_image}\nRUN uname -m > /arch && echo {token} > /id\n"
    )
    image = f"{lab.registry}/{namespace}/runtime"
    built: dict[str, str] = {}
    for arch in ("amd64", "arm64"):
        meta = context / f"meta-{arch}.json"
        docker.buildx.build(
            context,
            platforms=[f"linux/{arch}"],
            tags=[f"{image}:{VERSION}-{arch}"],
            push=True,
            metadata_file=meta,
        )
        built[arch] = json.loads(meta.read_text())["containerimage.digest"]
    # Remove the local images, so a pull from the mirror has to fetch their layers.
    docker.image.remove([f"{image}:{VERSION}-amd64", f"{image}:{VERSION}-arm64"], force=True)

    pusher = OciPusher(lab.registry)
    async with aiohttp.ClientSession() as session:
        http = Http(session, lab)
        entries: list[dict[str, object]] = []
        attestations = []
        for arch, digest in built.items():
            raw, media_type = await http.manifest(lab.registry, f"{namespace}/runtime", digest)
            assert media_type in (DOCKER_MANIFEST, OCI_MANIFEST)
            entries.append(entry(Pushed(digest, len(raw), media_type), "linux", arch))
            attestations.append(await attestation(pusher, session, f"{namespace}/runtime", digest))
        runtime = await pusher.index(
            session, f"{namespace}/runtime", VERSION, entries + attestations
        )
        gateway = await craft_component(pusher, session, f"{namespace}/gateway-plugins")
    return BuiltRelease(
        namespace, token, {"runtime": runtime.digest, "gateway-plugins": gateway.digest}
    )


def docker_out(*args: str) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# ---- cold sync, two mirrors, one with htpasswd auth ---------------------------------------


async def test_cold_sync_preserves_digests_and_docker_pulls_every_platform(
    lab: Lab, built_release: BuiltRelease, http: Http, docker_config: Path, tmp_path: Path
) -> None:
    ns = mirror_ns()
    plain, auth = f"{lab.mirror_registry}/{ns}", f"{lab.auth_registry}/{ns}"
    config = write_config(
        tmp_path, f"{lab.registry}/{built_release.namespace}", {"plain": plain, "auth": auth}
    )
    result = await run_bot(
        "sync",
        VERSION,
        "--to",
        "plain",
        "--to",
        "auth",
        "--config",
        str(config),
        "--json",
        env={"DOCKER_CONFIG": str(docker_config)},
    )
    assert result.code == 0, result.stdout + result.stderr
    data = result.json
    assert data["status"] == "synced"
    for mirror in data["mirrors"]:
        for item in mirror["components"]:
            assert item["status"] == "copied", item
            assert item["final_digest"] == built_release.digests[item["component"]]
            assert item["blobs"]["copied"] + item["blobs"]["mounted"] > 0

    for registry in (lab.mirror_registry, lab.auth_registry):
        for component in COMPONENTS:
            source = await http.tree(
                lab.registry, f"{built_release.namespace}/{component}", VERSION
            )
            copied = await http.tree(registry, f"{ns}/{component}", VERSION)
            assert copied.digest == source.digest == built_release.digests[component]
            assert copied.children == source.children and len(copied.children) == 4
            assert copied.blobs == source.blobs
            for digest in source.blobs:
                assert await http.has_blob(registry, f"{ns}/{component}", digest)

    # The mirror serves every platform to docker, real layers and all.
    ref = f"{plain}/runtime:{VERSION}"
    try:
        for platform, machine in (("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")):
            docker_out("pull", "--platform", platform, ref)
            assert (
                docker_out("image", "inspect", "--format", "{{.Os}}/{{.Architecture}}", ref)
                == platform
            )
            shown = docker_out("run", "--rm", "--platform", platform, ref, "cat", "/arch", "/id")
            assert shown.split() == [machine, built_release.token]
    finally:
        subprocess.run(["docker", "image", "rm", "-f", ref], capture_output=True)


# ---- warm sync: one HEAD per component, nothing written ------------------------------------


async def test_warm_sync_sends_only_heads(
    lab: Lab, built_release: BuiltRelease, docker_config: Path, tmp_path: Path
) -> None:
    async with HttpProxy(lab.mirror_registry) as proxy:
        ns = mirror_ns()
        config = write_config(
            tmp_path, f"{lab.registry}/{built_release.namespace}", {"m": f"{proxy.address}/{ns}"}
        )
        env = {"DOCKER_CONFIG": str(docker_config)}
        cold = await run_bot("sync", VERSION, "--to", "m", "--config", str(config), env=env)
        assert cold.code == 0, cold.stdout + cold.stderr
        assert proxy.methods["PUT"] > 0 and proxy.bytes_in > 0
        proxy.reset()
        warm = await run_bot(
            "sync", VERSION, "--to", "m", "--config", str(config), "--json", env=env
        )
    assert warm.code == 0, warm.stdout + warm.stderr
    assert dict(proxy.methods) == {"HEAD": len(COMPONENTS)}
    assert proxy.bytes_in == 0
    [mirror] = warm.json["mirrors"]
    assert [c["status"] for c in mirror["components"]] == ["up-to-date"] * len(COMPONENTS)
    assert [c["final_digest"] for c in mirror["components"]] == [
        built_release.digests[c] for c in COMPONENTS
    ]


# ---- a mirror that lost one platform's layer ------------------------------------------------


async def test_only_the_missing_layer_is_copied(
    lab: Lab, built_release: BuiltRelease, http: Http, docker_config: Path, tmp_path: Path
) -> None:
    ns = mirror_ns()
    config = write_config(
        tmp_path, f"{lab.registry}/{built_release.namespace}", {"m": f"{lab.mirror_registry}/{ns}"}
    )
    report, _ = await sync_in_process(config, ["m"], docker_config)
    assert report.ok
    repo = f"{ns}/runtime"
    raw, _ = await http.manifest(lab.mirror_registry, repo, VERSION)
    arm = next(m for m in json.loads(raw)["manifests"] if m["platform"]["architecture"] == "arm64")
    arm_raw, _ = await http.manifest(lab.mirror_registry, repo, arm["digest"])
    layer = json.loads(arm_raw)["layers"][-1]  # the RUN layer, only in the arm64 image
    tree = await http.tree(lab.mirror_registry, repo, VERSION)

    # The layer is gone, and so is the tag (an interrupted earlier copy, say).
    await http.delete_blob(lab.mirror_registry, repo, layer["digest"])
    await http.delete_manifest(lab.mirror_registry, repo, tree.digest)
    assert await http.tag(lab.mirror_registry, repo, VERSION) is None
    report, client = await sync_in_process(config, ["m"], docker_config)
    assert report.ok, report
    runtime, gateway = report.mirrors[0].components
    assert runtime.status is ComponentStatus.COPIED
    assert (runtime.blobs.copied, runtime.blobs.copied_bytes) == (1, layer["size"])
    assert runtime.blobs.mounted == 0
    assert runtime.blobs.skipped == len(tree.blobs) - 1
    assert (runtime.manifests_put, runtime.manifests_skipped) == (1, 4)  # the index alone
    assert client.bytes_uploaded == layer["size"]
    assert client.requests_by_method["PUT"] == 2  # the layer and the index
    assert gateway.status is ComponentStatus.UP_TO_DATE
    assert await http.tag(lab.mirror_registry, repo, VERSION) == built_release.digests["runtime"]
    assert await http.has_blob(lab.mirror_registry, repo, layer["digest"])

    # With the tag intact the loss is invisible to the one-HEAD check; --deep finds it.
    await http.delete_blob(lab.mirror_registry, repo, layer["digest"])
    report, client = await sync_in_process(config, ["m"], docker_config)
    assert report.mirrors[0].components[0].status is ComponentStatus.UP_TO_DATE
    assert client.bytes_uploaded == 0
    report, client = await sync_in_process(config, ["m"], docker_config, deep=True)
    runtime = report.mirrors[0].components[0]
    assert runtime.status is ComponentStatus.COPIED and report.ok
    assert (runtime.blobs.copied, runtime.manifests_put) == (1, 0)
    assert client.bytes_uploaded == layer["size"]
    assert await http.has_blob(lab.mirror_registry, repo, layer["digest"])


# ---- the gate ---------------------------------------------------------------------------------


async def test_a_source_missing_amd64_copies_nothing(
    lab: Lab, http: Http, docker_config: Path, tmp_path: Path
) -> None:
    source_ns = f"sync-gate-{uuid.uuid4().hex[:8]}"
    pusher = OciPusher(lab.registry)
    async with aiohttp.ClientSession() as session:
        healthy = await craft_component(pusher, session, f"{source_ns}/runtime")
        await craft_component(pusher, session, f"{source_ns}/gateway-plugins", ["linux/arm64"])
    ns = mirror_ns()
    config = write_config(
        tmp_path, f"{lab.registry}/{source_ns}", {"m": f"{lab.mirror_registry}/{ns}"}
    )
    result = await run_bot(
        "sync",
        VERSION,
        "--to",
        "m",
        "--config",
        str(config),
        env={"DOCKER_CONFIG": str(docker_config)},
    )
    assert result.code == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"nothing was copied for {VERSION}: the release does not pass the platform check "
        "at the source",
        f"  - gateway-plugins {VERSION} is missing linux/amd64; the index has linux/arm64 only",
    ]
    # Not even the healthy component was copied.
    tree = await http.tree(lab.registry, f"{source_ns}/runtime", VERSION)
    assert tree.digest == healthy.digest
    assert await http.tag(lab.mirror_registry, f"{ns}/runtime", VERSION) is None
    for digest in tree.blobs:
        assert not await http.has_blob(lab.mirror_registry, f"{ns}/runtime", digest)
    for child in tree.children:
        assert await http.tag(lab.mirror_registry, f"{ns}/runtime", child) is None


async def test_a_missing_source_tag_exits_3(lab: Lab, docker_config: Path, tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        f"{lab.registry}/sync-none-{uuid.uuid4().hex[:8]}",
        {"m": f"{lab.mirror_registry}/{mirror_ns()}"},
    )
    result = await run_bot(
        "sync",
        VERSION,
        "--to",
        "m",
        "--config",
        str(config),
        env={"DOCKER_CONFIG": str(docker_config)},
    )
    assert result.code == 3
    assert f"runtime {VERSION} cannot be read: not found in the registry" in result.stdout


# ---- interruptions ------------------------------------------------------------------------------


@pytest.fixture
async def big_release(lab: Lab, tmp_path: Path) -> str:
    """A release whose runtime images carry 24 MB random layers and gateway-plugins 12 MB
    ones: neither component can be copied whole before 8 MB are sent, whichever the
    copies' interleaving (with a small gateway-plugins, whether its tag was in before
    the cancel depended on timing)."""
    source_ns = f"sync-big-{uuid.uuid4().hex[:8]}"
    pusher = OciPusher(lab.registry)
    async with aiohttp.ClientSession() as session:
        await craft_component(pusher, session, f"{source_ns}/runtime", layer_bytes=24 * 1024**2)
        await craft_component(
            pusher, session, f"{source_ns}/gateway-plugins", layer_bytes=12 * 1024**2
        )
    return f"{lab.registry}/{source_ns}"


async def test_a_copy_cancelled_mid_layer_writes_no_tag_and_the_next_run_completes(
    lab: Lab, big_release: str, http: Http, docker_config: Path, tmp_path: Path
) -> None:
    ns = mirror_ns()
    config = write_config(tmp_path, big_release, {"m": f"{lab.mirror_registry}/{ns}"})
    sent = 0
    task: asyncio.Task[tuple[SyncReport, RegistryClient]] | None = None

    def cancel_mid_layer(event: ProgressEvent) -> None:
        nonlocal sent
        if event.kind is ProgressKind.BYTES:
            sent += event.delta
            if sent > 8 * 1024**2 and task is not None:
                task.cancel()

    task = asyncio.create_task(
        sync_in_process(config, ["m"], docker_config, progress=cancel_mid_layer)
    )
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sent > 8 * 1024**2
    source_ns = big_release.split("/", 1)[1]
    for component in COMPONENTS:
        assert await http.tag(lab.mirror_registry, f"{ns}/{component}", VERSION) is None
    source = await http.tree(lab.registry, f"{source_ns}/runtime", VERSION)
    big = [d for d, size in source.blobs.items() if size > 20 * 1024**2]
    assert len(big) == 2
    assert not all([await http.has_blob(lab.mirror_registry, f"{ns}/runtime", d) for d in big])

    report, _ = await sync_in_process(config, ["m"], docker_config)
    assert report.ok, report
    for component in COMPONENTS:
        source_digest = await http.tag(lab.registry, f"{source_ns}/{component}", VERSION)
        assert await http.tag(lab.mirror_registry, f"{ns}/{component}", VERSION) == source_digest
    assert all([await http.has_blob(lab.mirror_registry, f"{ns}/runtime", d) for d in big])


async def test_a_connection_cut_in_the_middle_of_a_layer_is_retried(
    lab: Lab, big_release: str, http: Http, docker_config: Path, tmp_path: Path
) -> None:
    port = int(lab.mirror_registry.rsplit(":", 1)[1])
    async with CuttingProxy(port, cut_after=4 * 1024**2) as proxy:
        ns = mirror_ns()
        config = write_config(tmp_path, big_release, {"m": f"{proxy.address}/{ns}"})
        result = await run_bot(
            "sync",
            VERSION,
            "--to",
            "m",
            "--config",
            str(config),
            "--json",
            env={"DOCKER_CONFIG": str(docker_config)},
        )
    assert proxy.cut == 1
    assert result.code == 0, result.stdout + result.stderr
    assert result.json["status"] == "synced"
    source_ns = big_release.split("/", 1)[1]
    source = await http.tree(lab.registry, f"{source_ns}/runtime", VERSION)
    copied = await http.tree(lab.mirror_registry, f"{ns}/runtime", VERSION)
    assert copied.digest == source.digest and copied.blobs == source.blobs


# ---- a mirror answering 500 and 429 --------------------------------------------------------------


def first_tries_fail(method: str, path: str, nth: int) -> int | None:
    """The first request of each method gets 500, the second 429 (Retry-After: 1)."""
    return {0: 500, 1: 429}.get(nth)


async def test_sync_completes_through_500_and_429(
    lab: Lab, built_release: BuiltRelease, http: Http, docker_config: Path, tmp_path: Path
) -> None:
    async with HttpProxy(lab.mirror_registry, first_tries_fail) as proxy:
        ns = mirror_ns()
        config = write_config(
            tmp_path, f"{lab.registry}/{built_release.namespace}", {"m": f"{proxy.address}/{ns}"}
        )
        result = await run_bot(
            "sync",
            VERSION,
            "--to",
            "m",
            "--config",
            str(config),
            "--json",
            env={"DOCKER_CONFIG": str(docker_config)},
        )
    assert result.code == 0, result.stdout + result.stderr
    assert result.json["status"] == "synced"
    assert set(proxy.methods) >= {"HEAD", "POST", "PUT", "GET"}
    assert proxy.injected[500] == proxy.injected[429] == len(proxy.methods)
    for component in COMPONENTS:
        assert (
            await http.tag(lab.mirror_registry, f"{ns}/{component}", VERSION)
            == built_release.digests[component]
        )


# ---- credentials ---------------------------------------------------------------------------------


async def test_wrong_or_missing_mirror_credentials(
    lab: Lab, built_release: BuiltRelease, tmp_path: Path
) -> None:
    ns = mirror_ns()
    config = write_config(
        tmp_path, f"{lab.registry}/{built_release.namespace}", {"auth": f"{lab.auth_registry}/{ns}"}
    )
    wrong = "wrong-" + uuid.uuid4().hex
    bad_config = write_docker_config(tmp_path / "bad", {lab.auth_registry: (lab.auth_user, wrong)})
    refused = await run_bot(
        "sync",
        VERSION,
        "--to",
        "auth",
        "--config",
        str(config),
        env={"DOCKER_CONFIG": str(bad_config)},
    )
    assert refused.code == 3, refused.stdout + refused.stderr
    assert (
        f"{lab.auth_registry}/{ns}/runtime:{VERSION}: the registry refused the credentials"
        in refused.stdout
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    anonymous = await run_bot(
        "sync", VERSION, "--to", "auth", "--config", str(config), env={"DOCKER_CONFIG": str(empty)}
    )
    assert anonymous.code == 3
    assert "asks for a user name and password and none is configured" in anonymous.stdout
    for output in (refused, anonymous):
        text = output.stdout + output.stderr
        for secret in (
            wrong,
            lab.auth_password,
            base64.b64encode(f"{lab.auth_user}:{wrong}".encode()).decode(),
        ):
            assert secret not in text


# ---- overwrite protection and the drift view ----------------------------------------------


async def test_a_mirror_tag_with_another_digest_is_not_overwritten_unless_allowed(
    lab: Lab, built_release: BuiltRelease, http: Http, docker_config: Path, tmp_path: Path
) -> None:
    ns = mirror_ns()
    pusher = OciPusher(lab.mirror_registry)
    async with aiohttp.ClientSession() as session:
        other = await craft_component(pusher, session, f"{ns}/runtime")
    config = write_config(
        tmp_path, f"{lab.registry}/{built_release.namespace}", {"m": f"{lab.mirror_registry}/{ns}"}
    )
    env = {"DOCKER_CONFIG": str(docker_config)}
    refused = await run_bot(
        "sync", VERSION, "--to", "m", "--config", str(config), "--json", env=env
    )
    assert refused.code == 1, refused.stdout + refused.stderr
    runtime, gateway = refused.json["mirrors"][0]["components"]
    assert runtime["status"] == "refused" and runtime["final_digest"] == other.digest
    assert "already holds" in runtime["reason"] and "was not overwritten" in runtime["reason"]
    assert gateway["status"] == "copied"
    assert await http.tag(lab.mirror_registry, f"{ns}/runtime", VERSION) == other.digest
    source = await http.tree(lab.registry, f"{built_release.namespace}/runtime", VERSION)
    held = await http.tree(lab.mirror_registry, f"{ns}/runtime", VERSION)
    new_blobs = set(source.blobs) - set(held.blobs)
    assert len(new_blobs) >= 4  # both images' configs and layers at least
    for digest in new_blobs:
        assert not await http.has_blob(lab.mirror_registry, f"{ns}/runtime", digest)
    for child in set(source.children) - set(held.children):
        assert await http.tag(lab.mirror_registry, f"{ns}/runtime", child) is None
    text = await run_bot("sync", VERSION, "--to", "m", "--config", str(config), env=env)
    assert "REFUSED" in text.stdout and "an approver must confirm an overwrite" in text.stdout

    drift = await run_bot(
        "inspect", "--across", VERSION, "--config", str(config), "--json", env=env
    )
    assert drift.code == 1
    rows = {r["component"]: r for r in drift.json["rows"]}
    assert rows["runtime"]["mirrors"][0]["status"] == "different"
    assert rows["gateway-plugins"]["mirrors"][0]["status"] == "same"

    allowed = await run_bot(
        "sync", VERSION, "--to", "m", "--allow-overwrite", "--config", str(config), env=env
    )
    assert allowed.code == 0, allowed.stdout + allowed.stderr
    assert (
        await http.tag(lab.mirror_registry, f"{ns}/runtime", VERSION)
        == built_release.digests["runtime"]
    )
    same = await run_bot("inspect", "--across", VERSION, "--config", str(config), env=env)
    assert same.code == 0, same.stdout
    assert "every mirror equals the source" in same.stdout


async def test_drift_view_flags_missing_and_unreadable_mirrors(
    lab: Lab, built_release: BuiltRelease, docker_config: Path, tmp_path: Path
) -> None:
    synced, empty_ns = mirror_ns(), mirror_ns()
    config = write_config(
        tmp_path,
        f"{lab.registry}/{built_release.namespace}",
        {"synced": f"{lab.mirror_registry}/{synced}", "empty": f"{lab.mirror_registry}/{empty_ns}"},
    )
    env = {"DOCKER_CONFIG": str(docker_config)}
    assert (
        await run_bot("sync", VERSION, "--to", "synced", "--config", str(config), env=env)
    ).code == 0
    drift = await run_bot(
        "inspect", "--across", VERSION, "--config", str(config), "--json", env=env
    )
    assert drift.code == 1
    data = drift.json
    assert data["mirrors"] == ["empty", "synced"]
    for row in data["rows"]:
        assert row["source_digest"] == built_release.digests[row["component"]]
        assert [c["status"] for c in row["mirrors"]] == ["missing", "same"]
    text = await run_bot("inspect", "--across", VERSION, "--config", str(config), env=env)
    assert "MISSING" in text.stdout
    unreadable = await run_bot(
        "inspect",
        "--across",
        VERSION,
        "--to",
        "synced",
        "--to",
        f"{lab.auth_registry}/{synced}",
        "--config",
        str(config),
        env={"DOCKER_CONFIG": str(tmp_path)},
    )
    assert unreadable.code == 3
    assert "UNREADABLE" in unreadable.stdout


# ---- mounts within one registry -----------------------------------------------------------


async def test_a_mirror_on_the_source_registry_mounts_every_blob(
    lab: Lab, built_release: BuiltRelease, http: Http, docker_config: Path, tmp_path: Path
) -> None:
    ns = mirror_ns()
    config = write_config(
        tmp_path, f"{lab.registry}/{built_release.namespace}", {"same": f"{lab.registry}/{ns}"}
    )
    report, client = await sync_in_process(config, ["same"], docker_config)
    assert report.ok, report
    assert client.bytes_uploaded == 0
    for item in report.mirrors[0].components:
        assert item.blobs.copied == 0 and item.blobs.mounted > 0
        assert await http.tag(lab.registry, f"{ns}/{item.component}", VERSION) == item.source_digest


async def test_a_declined_mount_falls_back_to_upload(lab: Lab, http: Http) -> None:
    from jobs.domain.manifests import Descriptor
    from jobs.domain.references import parse_reference

    ns = mirror_ns()
    data = os.urandom(100_000)
    pusher = OciPusher(lab.registry)
    async with aiohttp.ClientSession() as session:
        digest = await pusher.blob(session, f"{ns}/src", data)
    blob = Descriptor("application/octet-stream", digest, len(data))
    async with RegistryClient() as client:
        transfer = await client.copy_blob(
            parse_reference(f"{lab.registry}/{ns}/src:x"),
            parse_reference(f"{lab.mirror_registry}/{ns}/dst:x"),
            blob,
            mount_from=f"{ns}/not-there",
        )
    assert not transfer.mounted and transfer.bytes_sent == len(data)
    assert await http.has_blob(lab.mirror_registry, f"{ns}/dst", digest)


# ---- memory: a 200 MB layer through a process that stays under 150 MB ---------------------


# The CLI's entry point, run so that the process reports its own peak resident memory as
# it exits. VmHWM in /proc/self/status belongs to the address space exec created; the
# rusage maxrss of wait4 or RUSAGE_CHILDREN does not do here: Linux folds the high-water
# mark of the forked parent (this test process, holding the 200 MB payload) into it.
MEASURED_CLI = """
import sys
from bot.cli import main
code = main(sys.argv[1:])
with open("/proc/self/status") as status:
    peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
print(f"VmHWM-KiB={peak}", file=sys.stderr)
sys.exit(code)
"""


async def run_measured(*args: str, env: dict[str, str]) -> tuple[Result, int]:
    python = str(REPO / ".venv" / "bin" / "python")
    process = await asyncio.create_subprocess_exec(
        python,
        "-c",
        MEASURED_CLI,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    stderr = err.decode()
    peaks = [line for line in stderr.splitlines() if line.startswith("VmHWM-KiB=")]
    assert peaks, stderr
    return Result(process.returncode, out.decode(), stderr), int(peaks[-1].split("=")[1])


async def test_a_200_mb_layer_is_streamed_in_bounded_memory(
    lab: Lab, http: Http, docker_config: Path, tmp_path: Path
) -> None:
    source_ns = f"sync-200mb-{uuid.uuid4().hex[:8]}"
    pusher = OciPusher(lab.registry)
    async with aiohttp.ClientSession() as session:
        big = await pusher.image(
            session,
            f"{source_ns}/runtime",
            os="linux",
            arch="amd64",
            payload=os.urandom(200 * 1024**2),
        )
        small = await pusher.image(session, f"{source_ns}/runtime", os="linux", arch="arm64")
        index = await pusher.index(
            session,
            f"{source_ns}/runtime",
            VERSION,
            [entry(big, "linux", "amd64"), entry(small, "linux", "arm64")],
        )
    tree = await http.tree(lab.registry, f"{source_ns}/runtime", VERSION)
    [big_layer] = [digest for digest, size in tree.blobs.items() if size > 200 * 1024**2]
    ns = mirror_ns()
    config = write_config(
        tmp_path, f"{lab.registry}/{source_ns}", {"m": f"{lab.mirror_registry}/{ns}"}, ["runtime"]
    )
    result, peak_kib = await run_measured(
        "sync",
        VERSION,
        "--to",
        "m",
        "--config",
        str(config),
        "--json",
        env={"DOCKER_CONFIG": str(docker_config)},
    )
    assert result.code == 0, result.stdout + result.stderr
    [item] = json.loads(result.stdout)["mirrors"][0]["components"]
    assert item["status"] == "copied"
    assert item["blobs"]["copied_bytes"] > 200 * 1024**2
    assert await http.tag(lab.mirror_registry, f"{ns}/runtime", VERSION) == index.digest
    assert await http.has_blob(lab.mirror_registry, f"{ns}/runtime", big_layer)
    assert peak_kib < 150 * 1024, f"peak resident memory {peak_kib / 1024:.0f} MiB"


# ---- a token-auth registry: a cross-repository mount needs pull on the source repository ----


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenRegistry:
    """A real distribution registry with token authentication, and the token service it
    trusts (RS256 JWTs signed by openssl, granting exactly the scopes asked for)."""

    host: str
    scopes_asked: list[list[str]] = field(default_factory=list)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def token_registry(lab: Lab, tmp_path: Path) -> AsyncIterator[TokenRegistry]:
    import time

    key, cert = tmp_path / "token.key", tmp_path / "token.crt"
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    subprocess.run(
        [*request, "-subj", "/CN=aibrix-test-token", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    der = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-outform", "DER"], check=True, capture_output=True
    ).stdout
    registry = TokenRegistry(host=f"127.0.0.1:{_free_port()}")

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
    realm_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: error, accesslog: {disabled: true}}\n"
        f"storage: {{filesystem: {{rootdirectory: {tmp_path / 'storage'}}}}}\n"
        f"http: {{addr: {registry.host}}}\n"
        "auth:\n"
        "  token:\n"
        f"    realm: http://127.0.0.1:{realm_port}/token\n"
        "    service: aibrix-test-registry\n"
        "    issuer: aibrix-test-issuer\n"
        f"    rootcertbundle: {cert}\n"
    )
    process = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://{registry.host}/v2/") as response:
                        if response.status == 401:
                            break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the token registry did not start")
        yield registry
    finally:
        process.terminate()
        process.wait(timeout=10)
        await runner.cleanup()


async def test_a_mount_on_a_token_registry_asks_pull_on_the_source_repository(
    lab: Lab, token_registry: TokenRegistry
) -> None:
    from jobs.domain.manifests import Descriptor
    from jobs.domain.references import parse_reference

    ns = mirror_ns()
    data = os.urandom(100_000)
    async with aiohttp.ClientSession() as session:
        digest = await OciPusher(lab.registry).blob(session, f"{ns}/src", data)
    blob = Descriptor("application/octet-stream", digest, len(data))
    source = parse_reference(f"{lab.registry}/{ns}/src:x")
    first = parse_reference(f"{token_registry.host}/{ns}/first:x")
    second = parse_reference(f"{token_registry.host}/{ns}/second:x")
    async with RegistryClient(docker_config=DockerConfig(None, {}, "", {})) as client:
        uploaded = await client.copy_blob(source, first, blob)
        mounted = await client.copy_blob(source, second, blob, mount_from=f"{ns}/first")
        assert await client.blob_exists(second, digest)
    assert not uploaded.mounted and uploaded.bytes_sent == len(data)
    assert mounted.mounted and mounted.bytes_sent == 0
    assert [f"repository:{ns}/second:pull,push", f"repository:{ns}/first:pull"] in (
        token_registry.scopes_asked
    )
