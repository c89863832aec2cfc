"""The fleet against the lab Redis and the real bot (issue 14 item 6): heartbeats are
listed and expire, `/aibrix workers` over the real Bolt app and `aibrix-bot workers`
list them, a waiting release's live message and `aibrix-bot status` say when its
platform has no live worker (also when the worker dies while it waits), and GET /metrics
of a real bot server carries the named series.

The worker here is its heartbeat alone (`jobs.store.fleet`, as `jobs.runtime.heartbeat`
writes it); a real worker process, killed, is in tests/lab/test_fleet_lab.py."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from jobs.domain.fleet import WAITING_STATES
from jobs.domain.platforms import parse_platform
from jobs.store.connections import RedisSettings, connect
from jobs.store.fleet import Announcement, Fleet
from jobs.store.keys import Keys
from jobs.store.notices import NoticeStore
from tests.support.bot import REQUESTER, Bot, bot
from tests.support.pipeline import BOT

__all__ = ["bot"]  # the fixture

AMD64, ARM64 = parse_platform("linux/amd64"), parse_platform("linux/arm64")


def me(worker: str, platform: str = "linux/arm64", control: bool = True) -> Announcement:
    return Announcement(worker, parse_platform(platform), "0.1.0", "lab", control, time.time())


@pytest.fixture
async def fleet(redis_url: str, key_prefix: str) -> AsyncIterator[Fleet]:
    redis = await connect(RedisSettings.from_dsn(redis_url, key_prefix=key_prefix))
    try:
        yield Fleet(redis, Keys(key_prefix))
    finally:
        keys = await redis.keys(f"{key_prefix}*")
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


async def until(predicate: object, timeout: float = 15.0) -> None:
    """Poll an async predicate until it holds (each check is a positive signal)."""
    async with asyncio.timeout(timeout):
        while not await predicate():  # type: ignore[operator]
            await asyncio.sleep(0.1)


async def test_a_heartbeat_is_listed_and_expires_and_its_platform_stays_seen(
    fleet: Fleet,
) -> None:
    worker = me("arm-1")
    await fleet.beat(worker, ("build v0.3.0 runtime",), ttl_seconds=1.0)
    view = await fleet.view()
    (listed,) = view.workers
    assert (listed.worker_id, listed.platform, listed.jobs) == (
        "arm-1",
        ARM64,
        ("build v0.3.0 runtime",),
    )
    assert abs(listed.last_seen - view.now) < 5  # Redis's clock on both sides

    async def gone() -> bool:
        return not (await fleet.view()).workers

    await until(gone)  # no beat renews it: the TTL drops it
    view = await fleet.view()
    assert ARM64 in view.last_seen
    assert view.now >= view.last_seen[ARM64]


async def test_a_clean_stop_leaves_at_once(fleet: Fleet) -> None:
    worker = me("arm-2")
    await fleet.beat(worker, (), ttl_seconds=60)
    await fleet.leave(worker)
    view = await fleet.view()
    assert view.workers == () and ARM64 in view.last_seen


async def test_a_record_this_code_did_not_write_is_skipped(
    fleet: Fleet, redis_url: str, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    await fleet.beat(me("good"), (), ttl_seconds=60)
    redis = await connect(RedisSettings.from_dsn(redis_url, key_prefix=key_prefix))
    try:
        await redis.set(keys.fleet_worker("bad@linux/arm64"), json.dumps({"worker": 7}))
        await redis.zadd(keys.fleet_workers, {"bad@linux/arm64": time.time()})
    finally:
        await redis.aclose()
    assert [b.worker_id for b in (await fleet.view()).workers] == ["good"]


async def cli(bot: Bot, config: Path, *args: str) -> tuple[int, str]:
    env = {**os.environ, "AIBRIX_CONFIG": str(config), "REDIS_URL": bot.lab.redis_url}
    process = await asyncio.create_subprocess_exec(
        BOT, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


def bot_fleet(bot: Bot) -> Fleet:
    return Fleet(bot.server.redis, Keys(bot.key_prefix))


async def test_workers_are_listed_by_slack_and_the_cli_and_scraped_as_metrics(
    bot: Bot, tmp_path: Path
) -> None:
    fleet = bot_fleet(bot)
    await fleet.beat(me("arm-builder-1"), ("build v0.3.0 runtime",), ttl_seconds=60)

    resp = await bot.slack.slash_command("workers", user_id=REQUESTER)
    assert resp.status == 200
    found = await bot.ephemeral(REQUESTER, lambda e: "live worker" in e.text)
    rendered = json.dumps(found.blocks)
    assert "arm-builder-1" in rendered and "build v0.3.0 runtime" in rendered
    assert found.text.startswith("1 live worker: no linux/amd64 worker has ever been seen")

    status, out = await cli(bot, tmp_path / "aibrix.toml", "workers")
    assert status == 0, out
    assert "arm-builder-1" in out and "linux/arm64" in out
    assert "no linux/amd64 worker has ever been seen" in out
    status, out = await cli(bot, tmp_path / "aibrix.toml", "workers", "--json")
    assert status == 0, out
    assert [w["worker"] for w in json.loads(out)["workers"]] == ["arm-builder-1"]

    refused = await bot.slack.slash_command("workers", user_id=REQUESTER, tamper=True)
    assert refused.status == 401
    async with aiohttp.ClientSession() as session, session.get(bot.url + "/metrics") as page:
        assert page.status == 200
        text = await page.text()
    lines = set(text.splitlines())
    assert 'aibrix_slack_commands_total{command="workers",outcome="ok"} 1.0' in lines
    assert 'aibrix_workers_live{platform="linux/arm64"} 1.0' in lines
    assert 'aibrix_workers_live{platform="linux/amd64"} 0.0' in lines
    assert 'aibrix_releases{state="queued"} 0.0' in lines
    assert "aibrix_notifier_lag_seconds 0.0" in lines
    assert any(
        line.startswith("aibrix_slack_requests_refused_total{") and line.endswith(" 1.0")
        for line in lines
    ), text


async def test_a_waiting_release_says_its_platform_has_no_live_worker_once_it_dies(
    bot: Bot, tmp_path: Path
) -> None:
    fleet = bot_fleet(bot)
    arm, amd = me("arm-1"), me("amd-1", "linux/amd64")
    for worker in (arm, amd):
        await fleet.beat(worker, (), ttl_seconds=120)
    resp = await bot.slack.slash_command("release v0.3.0", user_id=REQUESTER)
    assert resp.status == 200
    await bot.ephemeral(REQUESTER, lambda e: "started run" in e.text)
    release = await bot.pipeline.find_run("v0.3.0")
    assert release is not None and release.state in WAITING_STATES and release.status_ts
    # The notifier's first render of the message, with both workers alive: no fleet note.
    await bot.standin.wait_for_calls("chat.update", 1, timeout=15)
    message = bot.standin.message(release.status_channel, release.status_ts)
    assert message is not None and "worker has" not in json.dumps(message.blocks)
    # Until the message shows every event of the run (an update may still be held back by
    # the one-update-a-second rule, and the recheck leaves a run already marked alone).
    notifier = bot.server.notifier
    async with asyncio.timeout(15):
        while not notifier.up_to_date(str(release.version), release.run_id):
            await asyncio.sleep(0.05)
    # A recheck now finds nothing changed and puts the notifier's own next one 10 s away,
    # so that only the recheck below can notice the death.
    assert await notifier.recheck_fleet(force=True) == 0

    await fleet.leave(arm)  # the arm64 worker is gone; no event says so
    assert await notifier.recheck_fleet(force=True) == 1
    rendered = await bot.wait_message(release.status_ts, "no linux/arm64 worker has been seen for")
    assert "linux/amd64 worker" not in rendered

    status, out = await cli(bot, tmp_path / "aibrix.toml", "status", "v0.3.0")
    assert status == 0, out
    assert "waiting: no linux/arm64 worker has been seen for" in out
    assert "amd64 worker" not in out


async def test_the_notifier_lag_is_the_age_of_the_oldest_unshown_event(
    redis_url: str, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    redis = await connect(RedisSettings.from_dsn(redis_url, key_prefix=key_prefix))
    notices = NoticeStore(redis, keys)
    try:
        assert await notices.unshown_age() == 0.0  # no cursor yet: nothing to be behind
        seconds, _ = await redis.time()
        old = f"{(int(seconds) - 120) * 1000}-0"
        await redis.xadd(keys.events, {"type": "state"}, id=old)
        await redis.xadd(keys.events, {"type": "state"}, id="*")
        await notices.save_cursor("1-0")
        assert 119 <= await notices.unshown_age() < 200
        newest = await notices.newest_event_id()
        assert newest is not None
        await notices.save_cursor(newest)
        assert await notices.unshown_age() == 0.0
    finally:
        keys_found = await redis.keys(f"{key_prefix}*")
        if keys_found:
            await redis.delete(*keys_found)
        await redis.aclose()
