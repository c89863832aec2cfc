"""Cancel stops what it can and says what it cannot (issue 16, item 5): real workers,
real Buildx, the lab registry. One component is merged (its release tag published)
before the cancel; another is inside a long `RUN` step that prints nothing. The cancel
answer names the published tag with its digest; the running build is stopped (its Buildx
process is gone) and the registry's view (its tags) is what it was when the cancel
returned: nothing was pushed after."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import aiohttp

from jobs.domain.release import Release
from tests.conftest import Lab
from tests.support.pipeline import Setup, toml_config

VERSION = "v3.0.0"


async def registry_tags(lab: Lab, repository: str) -> list[str]:
    """The registry's view: the tags of `repository` (none when it does not exist)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{lab.registry}/v2/{repository}/tags/list") as response,
    ):
        if response.status == 404:
            return []
        assert response.status == 200, await response.text()
        return sorted((await response.json()).get("tags") or [])


def project(tmp_path: Path, lab: Lab) -> Path:
    source = tmp_path / "src"
    source.mkdir()
    (source / "Dockerfile.fast").write_text(
        f"FROM {lab.base_image}\nARG NONCE\nRUN echo fast $NONCE > /fast\n"
    )
    # A long step that prints nothing: the stop flag must be polled, not read off log lines.
    (source / "Dockerfile.slow").write_text(
        f"FROM {lab.base_image}\nARG NONCE\nRUN sleep 25 && echo slow $NONCE > /slow\n"
    )
    return source


def buildx_processes(marker: str) -> list[int]:
    """Pids of running `buildx build` processes whose arguments contain `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"buildx" in argv and b"build" in argv and any(marker.encode() in a for a in argv):
            found.append(int(entry.name))
    return found


async def wait_merged(setup: Setup, component: str, timeout: float = 240) -> Release:
    records = await setup.records()
    try:
        async with asyncio.timeout(timeout):
            while True:
                release = await records.run(VERSION)
                if component in release.indexes:
                    return release
                await asyncio.sleep(0.2)
    finally:
        await records.close()


async def test_cancel_stops_a_silent_build_and_names_what_was_published(
    lab: Lab, redis_url: str, docker_available: None, tmp_path: Path, key_prefix: str
) -> None:
    source = project(tmp_path, lab)
    nonce = uuid.uuid4().hex
    namespace = f"cancel-{nonce[:8]}"
    config = tmp_path / "cancel.toml"
    config.write_text(
        toml_config(
            lab,
            namespace=namespace,
            key_prefix=key_prefix,
            source=source,
            components={"fast-a": "Dockerfile.fast", "slow-b": "Dockerfile.slow"},
            build_args={"fast-a": {"NONCE": nonce + "a"}, "slow-b": {"NONCE": nonce + "b"}},
        )
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    setup = Setup(lab, config, redis_url, logs)
    slow = f"NONCE={nonce}b"  # in the slow build's Buildx arguments
    try:
        setup.start_worker("linux/amd64")
        setup.start_worker("linux/amd64", control=False)
        code, out, err = await setup.cli(
            "release", VERSION, "--platform", "linux/amd64", "--no-follow"
        )
        assert code == 0, out + err
        merged = await wait_merged(setup, "fast-a")
        published = merged.indexes["fast-a"].digest
        async with asyncio.timeout(120):
            while not buildx_processes(slow):  # slow-b's build is running
                await asyncio.sleep(0.1)
        asked = time.monotonic()
        code, out, err = await setup.cli("cancel", VERSION)
        returned = time.monotonic()
        assert code == 0, out + err
        at_cancel = await registry_tags(lab, f"{namespace}/slow-b")
        # The positive signal: the slow build's Buildx process has exited.
        async with asyncio.timeout(120):
            while buildx_processes(slow):
                await asyncio.sleep(0.05)
        gone = time.monotonic()
        after = await registry_tags(lab, f"{namespace}/slow-b")
        print(
            f"cancel took {returned - asked:.2f} s; the slow build's Buildx was gone "
            f"{gone - returned:.2f} s after it returned; slow-b tags at the cancel: "
            f"{at_cancel}, after: {after}"
        )
    finally:
        setup.stop_all()
    assert after == at_cancel == [], (at_cancel, after)  # nothing pushed after the cancel
    assert f"fast-a {VERSION} was already published: {published}" in out, out + err
