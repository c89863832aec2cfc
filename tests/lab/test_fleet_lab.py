"""A real worker in the fleet (issue 14 item 6, "Done when"): a real `aibrix-bot worker`
process (its Buildx builder checked by Docker) announces itself in the lab Redis, is
listed by `aibrix-bot workers` and by `/aibrix workers` over the real Bolt app, is
SIGKILLed and expires; a release then queued for its platform says on its live message
and in the CLI that no worker of that platform has been seen since."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jobs.store.fleet import Fleet
from jobs.store.keys import Keys
from tests.conftest import Lab
from tests.support.bot import REQUESTER, Bot, config_text, running_bot
from tests.support.pipeline import Setup

HEARTBEAT_TTL = "3"  # seconds: the killed worker drops out this long after its last beat


@pytest.fixture
async def rig(
    lab: Lab, redis_url: str, docker_available: None, tmp_path: Path, key_prefix: str
) -> AsyncIterator[tuple[Bot, Setup]]:
    namespace = f"fleet-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "aibrix.toml"
    config.write_text(config_text(lab, namespace, key_prefix))
    logs = tmp_path / "logs"
    logs.mkdir()
    setup = Setup(lab, config, redis_url, logs)
    try:
        async with running_bot(lab, redis_url, config, key_prefix, namespace) as bot:
            yield bot, setup
            keys = await bot.server.redis.keys(f"{key_prefix}*")
            if keys:
                await bot.server.redis.delete(*keys)
    finally:
        setup.stop_all()


async def test_a_killed_worker_expires_and_a_release_for_its_platform_says_so(
    rig: tuple[Bot, Setup],
) -> None:
    bot, setup = rig
    fleet = Fleet(bot.server.redis, Keys(bot.key_prefix))
    worker = setup.start_worker(
        "linux/arm64", "arm-lab", control=False, extra=("--heartbeat-ttl", HEARTBEAT_TTL)
    )

    async with asyncio.timeout(90):  # the worker checks its builder before it beats
        while not (view := await fleet.view()).workers:
            assert worker.process is not None and worker.process.poll() is None, setup.tail_logs()
            await asyncio.sleep(0.2)
    (beat,) = view.workers
    assert (beat.worker_id, str(beat.platform), beat.control, beat.jobs) == (
        "arm-lab",
        "linux/arm64",
        False,
        (),
    )
    assert beat.version and beat.builder  # the package's version, the checked builder

    status, out, err = await setup.cli("workers", timeout=60)
    assert status == 0, err
    assert "arm-lab" in out and "linux/arm64" in out
    assert "no linux/amd64 worker has ever been seen" in out
    resp = await bot.slack.slash_command("workers", user_id=REQUESTER)
    assert resp.status == 200
    listed = await bot.ephemeral(REQUESTER, lambda e: "live worker" in e.text)
    assert "arm-lab" in json.dumps(listed.blocks)

    worker.kill()  # SIGKILL: no clean leave, only the TTL removes it
    async with asyncio.timeout(30):
        while (await fleet.view()).workers:
            await asyncio.sleep(0.2)

    resp = await bot.slack.slash_command("release v0.3.0", user_id=REQUESTER)
    assert resp.status == 200
    await bot.ephemeral(REQUESTER, lambda e: "started run" in e.text)
    release = await bot.pipeline.find_run("v0.3.0")
    assert release is not None and release.status_ts
    rendered = await bot.wait_message(release.status_ts, "no linux/arm64 worker has been seen for")
    assert "no linux/amd64 worker has ever been seen" in rendered

    status, out, err = await setup.cli("status", "v0.3.0", timeout=60)
    assert status == 0, err
    assert "waiting: no linux/arm64 worker has been seen for" in out

    # An amd64 worker comes: its heartbeat names the build it takes (through the worker's
    # own job loop), and the message stops saying no amd64 worker was ever seen.
    setup.start_worker("linux/amd64", "amd-lab", control=False)
    async with asyncio.timeout(90):
        while not any(
            job.startswith("build v0.3.0 ") for b in (await fleet.view()).workers for job in b.jobs
        ):
            await asyncio.sleep(0.2)
    await bot.server.notifier.recheck_fleet(force=True)
    async with asyncio.timeout(15):
        while "no linux/amd64 worker" in rendered:
            rendered = await bot.wait_message(release.status_ts, "no linux/arm64 worker")
            await asyncio.sleep(0.1)
    # Following a release from the CLI says it too (it times out, still waiting: exit 1).
    status, out, err = await setup.cli("release", "v0.3.1", "--timeout", "2", timeout=120)
    assert status == 1, err
    assert "waiting: no linux/arm64 worker has been seen for" in err
