"""Issue 12 item 6: one read per distinct digest within a command, and one token request
per scope in flight.

Real registries: the lab registry behind a counting forwarding proxy (the requests the
registry saw), and a distribution registry with token authentication started here, whose
token service counts what it is asked (tests/support/distribution.py)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import aiohttp

from jobs.domain.manifests import OCI_MANIFEST
from jobs.domain.platforms import parse_platform
from jobs.domain.references import parse_reference
from jobs.registry.client import RegistryClient
from jobs.registry.credentials import DockerConfig
from jobs.registry.inspection import inspect_many
from tests.conftest import REPO, Lab
from tests.support.distribution import token_registry
from tests.support.netproxy import FaultProxy
from tests.support.oci_push import OciPusher, entry
from tests.support.sync import run_bot

ENTRIES = 10_000  # the index of the issue: 10,000 entries naming 2 children


def _never(method: str, path: str, seen: int) -> int | None:
    return None  # count only: every request goes through


def _gets(proxy: FaultProxy) -> Counter[str]:
    return Counter({path: n for (method, path), n in proxy.seen.items() if method == "GET"})


async def test_issue12_item6_inspect_reads_each_child_and_config_once(
    lab: Lab, unique_repo: str
) -> None:
    pusher = OciPusher(lab.registry)
    async with aiohttp.ClientSession() as session:
        amd = await pusher.image(session, unique_repo, os="linux", arch="amd64")
        arm = await pusher.image(session, unique_repo, os="linux", arch="arm64")
        pair = [entry(amd, "linux", "amd64"), entry(arm, "linux", "arm64")]
        await pusher.index(session, unique_repo, "many", pair * (ENTRIES // 2))
        configs = {}
        for child in (amd, arm):
            async with session.get(
                f"http://{lab.registry}/v2/{unique_repo}/manifests/{child.digest}",
                headers={"Accept": OCI_MANIFEST},
            ) as response:
                configs[child.digest] = json.loads(await response.read())["config"]["digest"]
    async with FaultProxy(lab.registry, _never) as proxy:
        result = await run_bot(
            "inspect",
            "--json",
            "--require",
            "linux/amd64,linux/arm64",
            f"{proxy.address}/{unique_repo}:many",
            env={"PYTHONPATH": str(REPO), "AIBRIX_CONFIG": ""},
        )
    assert result.code in (0, 1), result.stderr
    [shown] = json.loads(result.stdout)
    assert shown["error"] is None and len(shown["platforms"]) == ENTRIES
    expected = {f"/v2/{unique_repo}/manifests/many": 1}
    for child_digest, config in configs.items():
        expected[f"/v2/{unique_repo}/manifests/{child_digest}"] = 1
        expected[f"/v2/{unique_repo}/blobs/{config}"] = 1
    assert _gets(proxy) == expected  # 5 GETs, not 20,001


async def test_issue12_item6_a_concurrent_command_on_the_same_client_reads_for_itself(
    lab: Lab, unique_repo: str
) -> None:
    # The worker's loops share one client: what one command shares stays in that command
    # (a tag another command reads must not come from the first command's reads).
    async with aiohttp.ClientSession() as session:
        image = await OciPusher(lab.registry).image(
            session, unique_repo, os="linux", arch="amd64", tag="t"
        )
    async with FaultProxy(lab.registry, _never) as proxy:
        ref = parse_reference(f"{proxy.address}/{unique_repo}:t")
        async with RegistryClient() as client:
            read_once = asyncio.Event()
            other_done = asyncio.Event()

            async def command() -> None:
                with client.shared_reads():
                    assert (await client.get_manifest(ref)).digest == image.digest
                    read_once.set()
                    await other_done.wait()
                    assert (await client.get_manifest(ref)).digest == image.digest  # shared

            async def other_command() -> None:
                await read_once.wait()
                assert (await client.get_manifest(ref)).digest == image.digest
                other_done.set()

            await asyncio.gather(command(), other_command())
    assert _gets(proxy) == {f"/v2/{unique_repo}/manifests/t": 2}


async def test_issue12_item6_one_token_request_per_scope_under_concurrency(
    lab: Lab, unique_repo: str, tmp_path: Path
) -> None:
    tags = [f"t{i}" for i in range(16)]
    async with aiohttp.ClientSession() as session:
        image = await OciPusher(lab.registry).image(session, unique_repo, os="linux", arch="amd64")
    source = parse_reference(f"{lab.registry}/{unique_repo}@{image.digest}")
    no_credentials = DockerConfig(None, {}, "", {})
    async with token_registry(tmp_path) as registry:
        target = parse_reference(f"{registry.host}/{unique_repo}:x")
        async with RegistryClient(docker_config=no_credentials) as setup:
            manifest = await setup.get_manifest(source)
            assert manifest.config is not None
            for blob in (manifest.config, *manifest.layers):
                await setup.copy_blob(source, target, blob)
            for tag in tags:
                await setup.put_manifest(
                    parse_reference(f"{registry.host}/{unique_repo}:{tag}"),
                    manifest.raw,
                    manifest.media_type,
                )
        registry.scopes_asked.clear()
        refs = [parse_reference(f"{registry.host}/{unique_repo}:{tag}") for tag in tags]
        async with RegistryClient(docker_config=no_credentials) as client:
            found = await inspect_many(client, refs, [parse_platform("linux/amd64")])
    assert [i.digest for i in found] == [manifest.digest] * len(tags)
    assert all(i.verdict.ok for i in found)
    # 16 tags read at once, each challenged: one token request, not 16.
    assert registry.scopes_asked == [[f"repository:{unique_repo}:pull"]]
