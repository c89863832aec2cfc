"""One build, every registry (issue 13 item 6): a release with two publish registries (the
lab registry and one this test starts) is built once, merged once into the first, and
copied to the second with the sync engine, so both hold the same digests; promotion
writes its tags on both; a second registry whose tag holds another digest blocks the
run with the reason. Real workers, Buildx, Redis and registries."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from jobs.domain.manifests import MANIFEST_ACCEPT
from jobs.domain.release import State
from jobs.registry.client import RegistryClient, RegistrySettings
from jobs.usecases.promote import promote, promote_job
from tests.conftest import Lab
from tests.support.distribution import distribution
from tests.support.oci_push import OciPusher
from tests.support.pipeline import Setup, toml_config
from tests.support.sync import craft_component

COMPONENT = "controller-manager"
SECOND_PORT = 6520  # this helper's range: the test's own registry


@pytest.fixture
async def setup(
    lab: Lab, redis_url: str, docker_available: None, tmp_path: Path, key_prefix: str
) -> AsyncIterator[tuple[Setup, str, str]]:
    namespace = f"publish-{uuid.uuid4().hex[:8]}"
    async with distribution(tmp_path, host=f"127.0.0.1:{SECOND_PORT}") as second:
        text = toml_config(
            lab,
            namespace=namespace,
            key_prefix=key_prefix,
            components={COMPONENT: "build/container/Dockerfile"},
        )
        primary = f"{lab.registry}/{namespace}"
        text = text.replace(
            f'repository = "{primary}"\n',
            f'publish = ["{primary}", "{second}/{namespace}"]\n',
        )
        config = tmp_path / "aibrix.toml"
        config.write_text(text + '[promotion]\ntags = ["latest"]\n')
        logs = tmp_path / "logs"
        logs.mkdir()
        found = Setup(lab, config, redis_url, logs)
        try:
            yield found, namespace, second
        finally:
            found.stop_all()


async def read(host: str, repo: str, tag: str) -> tuple[str | None, bytes]:
    async with aiohttp.ClientSession() as session:
        url = f"http://{host}/v2/{repo}/manifests/{tag}"
        async with session.get(url, headers={"Accept": MANIFEST_ACCEPT}) as response:
            if response.status == 404:
                return None, b""
            assert response.status == 200, await response.text()
            return response.headers["Docker-Content-Digest"], await response.read()


async def test_two_publish_registries_hold_the_same_digests(
    setup: tuple[Setup, str, str],
) -> None:
    found, namespace, second = setup
    lab = found.lab
    repo = f"{namespace}/{COMPONENT}"
    found.start_worker("linux/amd64")
    found.start_worker("linux/arm64")
    code, out, err = await found.cli("release", "v0.6.0", "--timeout", "300")
    assert code == 0, out + err + found.tail_logs()
    release = await found.wait_for("v0.6.0", [State.READY])
    verified = release.indexes[COMPONENT].digest
    primary_digest, primary_bytes = await read(lab.registry, repo, "v0.6.0")
    second_digest, second_bytes = await read(second, repo, "v0.6.0")
    # The same index, byte for byte, so the same children: built once, copied.
    assert primary_digest == second_digest == verified
    assert primary_bytes == second_bytes
    records = await found.records()
    try:
        audit = await records.store.audit_entries()
        published = {e["detail"] for e in audit if e["action"] == "published"}
        # Every tag written is audited: the merge's on the primary, the copy on the second.
        assert f"{lab.registry}/{repo}:v0.6.0 {verified}" in published
        assert f"{second}/{repo}:v0.6.0 {verified}" in published
        # Promotion writes its tags on every publish registry, from the same digest.
        await records.store.transition(
            release.version, release.run_id, [State.READY], State.APPROVED
        )
        settings = RegistrySettings()
        async with RegistryClient(settings) as client:
            ended = await promote(records.store, found.config, promote_job(release), client)
        assert ended is State.PROMOTED
        audit = await records.store.audit_entries()
        published = {e["detail"] for e in audit if e["action"] == "published"}
        assert f"{lab.registry}/{repo}:latest {verified}" in published
        assert f"{second}/{repo}:latest {verified}" in published
    finally:
        await records.close()
    assert (await read(lab.registry, repo, "latest"))[0] == verified
    assert (await read(second, repo, "latest"))[0] == verified


async def test_a_second_registry_holding_another_digest_blocks_the_run(
    setup: tuple[Setup, str, str],
) -> None:
    found, namespace, second = setup
    repo = f"{namespace}/{COMPONENT}"
    async with aiohttp.ClientSession() as session:
        held = await craft_component(OciPusher(second), session, repo, tag="v0.6.1")
    found.start_worker("linux/amd64")
    found.start_worker("linux/arm64")
    code, out, err = await found.cli("release", "v0.6.1", "--timeout", "300")
    release = await found.wait_for("v0.6.1", [State.BLOCKED])
    assert code != 0, out + err
    reason = release.state_reason
    assert f"publish registry {second}/{repo}:v0.6.1 does not hold the verified index" in reason
    # Left as it was: the copy never overwrites another digest.
    assert (await read(second, repo, "v0.6.1"))[0] == held.digest
