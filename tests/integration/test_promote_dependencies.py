"""A release's dependency images go to the promotion mirrors with its promotion (issue 13
item 5): through the sync engine, gated on every platform, digests preserved; a dependency
without arm64 is not copied and the promotion fails with the reason. Real Redis, real
lab registries (the release and the dependency images pushed through the API)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
import pytest

from jobs.domain.config import Config
from jobs.domain.config_reader import parse_config
from jobs.domain.manifests import MANIFEST_ACCEPT
from jobs.domain.release import BuildState, State
from jobs.registry.client import RegistryClient, RegistrySettings
from jobs.store.connections import RedisSettings, connect
from jobs.store.releases import ReleaseStore
from jobs.usecases.pipeline import release_store
from jobs.usecases.promote import promote, promote_job
from tests.conftest import Lab
from tests.support.oci_push import OciPusher, entry
from tests.support.sync import craft_component

VERSION = "v1.4.0"
COMPONENT = "runtime"


def make_config(
    lab: Lab, namespace: str, key_prefix: str, source: Path, deps: Sequence[str]
) -> Config:
    listed = ", ".join(f'"{d}"' for d in deps)
    text = "\n".join(
        [
            f'repository = "{lab.registry}/{namespace}"',
            'platforms = ["linux/amd64", "linux/arm64"]',
            "[source]",
            f'path = "{source}"',
            "[[components]]",
            f'name = "{COMPONENT}"',
            "[mirrors]",
            f'lab-mirror = "{lab.mirror_registry}/{namespace}"',
            "[promotion]",
            'mirrors = ["lab-mirror"]',
            "[preflight]",
            f"dependencies = [{listed}]",
            "[queue]",
            f'key_prefix = "{key_prefix}"',
        ]
    )
    return parse_config(text + "\n", source / "aibrix.toml")


@pytest.fixture
async def store(lab: Lab, redis_url: str, key_prefix: str) -> AsyncIterator[ReleaseStore]:
    redis = await connect(RedisSettings.from_dsn(redis_url, key_prefix=key_prefix))
    config = parse_config(
        f'repository = "x.io/a"\n[source]\ngit = "https://x.io/a"\n[[components]]\nname = "a"\n'
        f'[queue]\nkey_prefix = "{key_prefix}"\n',
        Path("/etc/aibrix.toml"),
    )
    try:
        yield release_store(redis, config)
    finally:
        await redis.aclose()


async def approved_run(store: ReleaseStore, lab: Lab, namespace: str) -> None:
    """A run of VERSION with its index in the lab registry, verified and approved."""
    pusher = OciPusher(lab.registry)
    release, _ = await store.create_or_get(
        VERSION, "U0REQUESTER", "C0RELEASES", ["linux/amd64", "linux/arm64"], [COMPONENT], "rev"
    )
    run = release.run_id
    await store.transition(VERSION, run, [State.QUEUED], State.BUILDING)
    repo = f"{namespace}/{COMPONENT}"
    async with aiohttp.ClientSession() as session:
        amd = await pusher.image(session, repo, os="linux", arch="amd64", payload=b"amd")
        arm = await pusher.image(session, repo, os="linux", arch="arm64", payload=b"arm")
        for platform, pushed in (("linux/amd64", amd), ("linux/arm64", arm)):
            await store.update_build(
                VERSION, run, COMPONENT, platform, BuildState.BUILDING, attempt=1
            )
            await store.record_build_digest(VERSION, run, COMPONENT, platform, pushed.digest, 1)
        index = await pusher.index(
            session, repo, VERSION, [entry(amd, "linux", "amd64"), entry(arm, "linux", "arm64")]
        )
    await store.transition(VERSION, run, [State.BUILDING], State.MERGING)
    await store.transition(VERSION, run, [State.MERGING], State.VERIFYING)
    await store.record_index(VERSION, run, COMPONENT, index.digest, "ok")
    await store.transition(VERSION, run, [State.VERIFYING], State.READY)
    assert await store.transition(VERSION, run, [State.READY], State.APPROVED)


async def digest_at(host: str, repo: str, tag: str) -> str | None:
    async with aiohttp.ClientSession() as session:
        url = f"http://{host}/v2/{repo}/manifests/{tag}"
        async with session.head(url, headers={"Accept": MANIFEST_ACCEPT}) as response:
            return response.headers.get("Docker-Content-Digest") if response.status == 200 else None


async def run_promotion(store: ReleaseStore, config: Config) -> State | None:
    release = await store.load(VERSION)
    assert release is not None
    async with RegistryClient(RegistrySettings()) as client:
        return await promote(store, config, promote_job(release), client)


async def test_dependency_images_go_to_the_mirror_with_the_promotion(
    lab: Lab, store: ReleaseStore, key_prefix: str, tmp_path: Path
) -> None:
    namespace = f"deps-{uuid.uuid4().hex[:8]}"
    deps = f"{namespace}-third"
    async with aiohttp.ClientSession() as session:
        redis = await craft_component(OciPusher(lab.registry), session, f"{deps}/redis", tag="7.4")
        envoy = await craft_component(
            OciPusher(lab.registry), session, f"{deps}/envoyproxy/envoy", tag="v1.33.2"
        )
    config = make_config(
        lab,
        namespace,
        key_prefix,
        tmp_path,
        [f"{lab.registry}/{deps}/redis:7.4", f"{lab.registry}/{deps}/envoyproxy/envoy:v1.33.2"],
    )
    await approved_run(store, lab, namespace)
    assert await run_promotion(store, config) is State.PROMOTED
    mirror = lab.mirror_registry
    # Same digests on the mirror: the index with every platform, not one platform pulled.
    assert await digest_at(mirror, f"{namespace}/{deps}/redis", "7.4") == redis.digest
    assert (
        await digest_at(mirror, f"{namespace}/{deps}/envoyproxy/envoy", "v1.33.2") == envoy.digest
    )
    audit = await store.audit_entries()
    synced = [e["detail"] for e in audit if e["action"] == "dependency-synced"]
    assert len(synced) == 2
    promoted = await store.load(VERSION)
    assert promoted is not None
    assert promoted.promotions[f"{mirror}/{namespace}/{deps}/redis:7.4"].ok


async def test_a_dependency_without_arm64_is_not_copied_and_fails_the_promotion(
    lab: Lab, store: ReleaseStore, key_prefix: str, tmp_path: Path
) -> None:
    namespace = f"deps-{uuid.uuid4().hex[:8]}"
    deps = f"{namespace}-third"
    async with aiohttp.ClientSession() as session:
        await craft_component(OciPusher(lab.registry), session, f"{deps}/redis", tag="7.4")
        await craft_component(
            OciPusher(lab.registry),
            session,
            f"{deps}/kuberay-operator",
            ["linux/amd64"],
            tag="v1.2.1",
        )
    config = make_config(
        lab,
        namespace,
        key_prefix,
        tmp_path,
        [f"{lab.registry}/{deps}/redis:7.4", f"{lab.registry}/{deps}/kuberay-operator:v1.2.1"],
    )
    await approved_run(store, lab, namespace)
    assert await run_promotion(store, config) is State.FAILED
    failed = await store.load(VERSION)
    assert failed is not None
    assert "dependency images of v1.4.0 were not copied" in failed.state_reason
    assert "kuberay-operator" in failed.state_reason and "linux/arm64" in failed.state_reason
    mirror = lab.mirror_registry
    assert await digest_at(mirror, f"{namespace}/{deps}/kuberay-operator", "v1.2.1") is None
