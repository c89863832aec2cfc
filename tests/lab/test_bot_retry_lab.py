"""/aibrix cancel, /aibrix retry and the "Retry failed builds" button, end to end over
signed HTTP against the stand-in, with real Redis and, for a blocked release, the real
pipeline and two real workers building the sample with runtime broken on arm64."""

from __future__ import annotations

import asyncio
import json
import tomllib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from jobs.domain.platforms import parse_platform
from jobs.domain.release import BuildState, State
from tests.conftest import Lab
from tests.support.bot import (
    REQUESTER,
    STRANGER,
    Bot,
    answer,
    bot,
    running_bot,
)
from tests.support.pipeline import SAMPLE, Setup, toml_config

__all__ = ["bot"]  # the fixture

AMD64, ARM64 = parse_platform("linux/amd64"), parse_platform("linux/arm64")
BROKEN = SAMPLE / "aibrix-sample-broken-arm64.toml"
COMPONENTS = {
    "controller-manager": "build/container/Dockerfile",
    "runtime": "build/container/Dockerfile.python",
}


async def snapshot(bot: Bot, version: str) -> dict[str, Any]:
    """Everything a refused request must leave as it was."""
    redis = bot.server.redis
    keys = bot.key_names
    release = await bot.records.load(version)
    streams = sorted(str(s) for s in await redis.smembers(keys.job_streams))
    return {
        "runs": await bot.records.run_ids(version),
        "state": release.state if release else None,
        "builds": {k: r.state for k, r in release.builds.items()} if release else {},
        "jobs": {s: await redis.xlen(s) for s in streams},
        "audit": await redis.xlen(keys.audit),
        # Top-level posts only: the notifier's thread reply under a failed run may come a
        # moment after the message update the test waits for, whatever a request does.
        "posted": len(
            [c for c in bot.standin.calls_to("chat.postMessage") if not c.params.get("thread_ts")]
        ),
    }


async def settled(bot: Bot, version: str, timeout: float = 120) -> None:
    """Wait until no build of the run is still queued or building and every job stream is
    empty: a release is blocked at its first failed build, while others may still run."""
    redis, keys = bot.server.redis, bot.key_names
    busy = (BuildState.QUEUED, BuildState.BUILDING)
    async with asyncio.timeout(timeout):
        while True:
            release = await bot.records.load(version)
            streams = [str(s) for s in await redis.smembers(keys.job_streams)]
            lengths = [await redis.xlen(s) for s in streams]
            if (
                release is not None
                and not any(lengths)
                and all(r.state not in busy for r in release.builds.values())
            ):
                return
            await asyncio.sleep(0.2)


async def said(bot: Bot, user: str, before: int) -> str:
    async with asyncio.timeout(30):
        while len(bot.standin.ephemerals_for(user)) <= before:
            await asyncio.sleep(0.05)
    return bot.standin.ephemerals_for(user)[-1].text


async def command(bot: Bot, text: str, user: str) -> str:
    before = len(bot.standin.ephemerals_for(user))
    resp = await bot.slack.slash_command(text, user_id=user)
    assert resp.status == 200
    acked = str(answer(resp.body)["text"])
    if "working on" not in acked:
        return acked  # refused by the permission table, in the ack itself
    return await said(bot, user, before)


async def test_cancel_and_retry_commands_over_http(bot: Bot) -> None:
    started = await command(bot, "release v0.8.0", REQUESTER)
    assert "started run" in started
    release = await bot.records.run("v0.8.0")
    assert release.state is State.BUILDING  # queued builds, no worker takes them
    before = await snapshot(bot, "v0.8.0")

    assert "may not cancel" in await command(bot, "cancel v0.8.0", STRANGER)
    assert "retry restarts failed builds" in await command(bot, "retry v0.8.0", REQUESTER)
    assert "there is no release v0.9.9" in await command(bot, "cancel v0.9.9", REQUESTER)
    assert "there is no release v0.9.9" in await command(bot, "retry v0.9.9", REQUESTER)
    assert await snapshot(bot, "v0.8.0") == before
    assert await bot.records.load("v0.9.9") is None

    done = await command(bot, "cancel v0.8.0", REQUESTER)
    assert f"v0.8.0 was cancelled by <@{REQUESTER}>" in done
    cancelled = await bot.records.run("v0.8.0")
    assert cancelled.state is State.CANCELLED and cancelled.run_id == release.run_id
    assert {r.state for r in cancelled.builds.values()} == {BuildState.CANCELLED}
    await bot.wait_message(release.status_ts, "cancelled")
    after = await snapshot(bot, "v0.8.0")
    assert "is cancelled and cannot be cancelled" in await command(bot, "cancel v0.8.0", REQUESTER)
    assert "retry restarts failed builds" in await command(bot, "retry v0.8.0", REQUESTER)
    assert await snapshot(bot, "v0.8.0") == after


# ---- a blocked release, built for real ------------------------------------------------


@pytest.fixture
async def lab_bot(
    lab: Lab, redis_url: str, docker_available: None, tmp_path: Path, key_prefix: str
) -> AsyncIterator[tuple[Bot, Setup]]:
    # The breakage of the sample's broken-arm64 config, in a namespace of this test's own.
    broken = tomllib.loads(BROKEN.read_text())
    runtime = next(c for c in broken["components"] if c["name"] == "runtime")
    fail_on = {"FAIL_ON_ARCH": runtime["build_args"]["FAIL_ON_ARCH"]}
    namespace = f"botretry-{uuid.uuid4().hex[:8]}"
    text = toml_config(
        lab,
        namespace=namespace,
        key_prefix=key_prefix,
        components=COMPONENTS,
        build_args={"runtime": fail_on},
        max_attempts=1,
    )
    text = text.replace('approvers = ["U0APPROVER1", "U0APPROVER2"]', 'approvers = ["U0APPROVER1"]')
    # The requester is no approver: the table grants them release and retry.
    text = text.replace(
        'channels = ["C0RELEASES"]',
        f'channels = ["C0RELEASES"]\nrelease = ["{REQUESTER}"]\n'
        f'retry = ["U0APPROVER1", "{REQUESTER}"]',
    )
    path = tmp_path / "aibrix.toml"
    path.write_text(text)
    logs = tmp_path / "logs"
    logs.mkdir()
    setup = Setup(lab, path, redis_url, logs)
    try:
        async with running_bot(lab, redis_url, path, key_prefix, namespace) as found:
            setup.start_worker("linux/amd64")
            setup.start_worker("linux/arm64")
            yield found, setup
            keys = await found.server.redis.keys(f"{key_prefix}*")
            if keys:
                await found.server.redis.delete(*keys)
    finally:
        setup.stop_all()


async def click(bot: Bot, action: str, user: str, ts: str, **options: Any) -> str:
    before = len(bot.standin.ephemerals_for(user))
    resp = await bot.slack.block_action(action, user_id=user, message_ts=ts, **options)
    assert resp.status == 200
    bot.last_click = resp
    return await said(bot, user, before)


async def test_retry_button_of_a_blocked_release(lab_bot: tuple[Bot, Setup]) -> None:
    bot, setup = lab_bot
    assert "started run" in await command(bot, "release v0.7.0", REQUESTER)
    blocked = await setup.wait_for("v0.7.0", [State.READY, State.BLOCKED, State.FAILED])
    assert blocked.state is State.BLOCKED, blocked.state_reason + setup.tail_logs()
    assert blocked.build("runtime", ARM64).state is BuildState.FAILED
    ts = blocked.status_ts
    shown = await bot.wait_message(ts, "retry_release", timeout=30)
    assert "approve_release" not in shown
    assert "runtime v0.7.0 failed to build for linux/arm64" in shown
    await settled(bot, "v0.7.0")
    settled_run = await bot.records.run("v0.7.0", blocked.run_id)
    assert settled_run is not None
    blocked = settled_run  # its other builds done: what a retry must reuse
    before = await snapshot(bot, "v0.7.0")

    # Refused, each with its reason, and nothing changes.
    assert "does not carry a release" in await click(
        bot, "retry_release", REQUESTER, ts, value="not json"
    )
    forged = json.dumps({"version": "v0.7.0", "run_id": "0123456789abcdef"})
    assert "(no such run)" in await click(bot, "retry_release", REQUESTER, ts, value=forged)
    other = json.dumps({"version": "v0.7.1", "run_id": blocked.run_id})
    assert "(no such run)" in await click(bot, "retry_release", REQUESTER, ts, value=other)
    assert "is not one this bot made" in await click(bot, "delete_release", REQUESTER, ts)
    assert "may not retry" in await click(bot, "retry_release", STRANGER, ts)
    assert "may not retry" in await click(bot, "retry_release", STRANGER, ts)
    before["audit"] += 1  # the stranger's refusal, audited once however often they click
    tampered = await bot.slack.block_action(
        "retry_release", user_id=REQUESTER, message_ts=ts, tamper=True
    )
    assert tampered.status == 401
    await asyncio.sleep(0.3)
    assert await snapshot(bot, "v0.7.0") == before

    # The requester's click: a new run that rebuilds only the failed build.
    answer_ = await click(bot, "retry_release", REQUESTER, ts)
    assert "rebuilding 1 failed build in run" in answer_
    valid_click = bot.last_click
    assert valid_click is not None
    redelivered = await bot.slack.resend(valid_click, retry_num=1)
    assert redelivered.status == 200 and redelivered.body == ""
    retried = await setup.wait_for("v0.7.0", [State.READY, State.BLOCKED, State.FAILED])
    runs = await bot.records.run_ids("v0.7.0")
    assert len(runs) == 2 and retried.run_id == runs[1] != blocked.run_id
    assert retried.state is State.BLOCKED  # runtime still cannot build for arm64
    for key in (("controller-manager", AMD64), ("controller-manager", ARM64)):
        assert retried.builds[key].digest == blocked.builds[key].digest  # reused, not rebuilt
        assert retried.builds[key].attempt == 0
    assert retried.build("runtime", AMD64).digest == blocked.build("runtime", AMD64).digest
    assert retried.build("runtime", ARM64).state is BuildState.FAILED
    assert retried.status_ts and retried.status_ts != ts  # its own live message
    await bot.wait_message(retried.status_ts, "retry_release", timeout=30)
    await settled(bot, "v0.7.0")

    # The first run's button is superseded now.
    before = await snapshot(bot, "v0.7.0")
    assert "belong to an earlier run" in await click(bot, "retry_release", REQUESTER, ts)
    assert await snapshot(bot, "v0.7.0") == before

    # /aibrix retry over HTTP does the same for the second run.
    assert "may not retry" in await command(bot, "retry v0.7.0", STRANGER)
    assert await snapshot(bot, "v0.7.0") == before
    assert "rebuilding 1 failed build in" in await command(bot, "retry v0.7.0", REQUESTER)
    third = await setup.wait_for("v0.7.0", [State.READY, State.BLOCKED, State.FAILED])
    assert len(await bot.records.run_ids("v0.7.0")) == 3
    assert third.state is State.BLOCKED
