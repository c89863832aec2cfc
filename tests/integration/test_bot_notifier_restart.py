"""The notifier resumes where it stopped: what happens to a release while the bot is
down reaches the release's live message once the bot is back."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from slack_sdk.web.async_client import AsyncWebClient

from bot.notifier import Notifier, safe_cursor, stream_id_key, valid_stream_id
from handlers.context import post_status_message
from jobs.domain.config_reader import load_config
from jobs.domain.release import BuildState, State
from jobs.store.connections import RedisSettings, connect
from jobs.usecases.pipeline import Pipeline
from tests.conftest import Lab
from tests.support.bot import (
    CHANNEL,
    COMPONENTS,
    GROUPIE,
    REQUESTER,
    TOKEN,
    USERS,
    Bot,
    config_text,
    running_bot,
)
from tests.support.records import Records
from tests.support.slack_standin import SlackStandIn


def test_the_cursor_stops_before_the_first_event_a_run_has_not_shown() -> None:
    assert stream_id_key("1700000000000-12") == (1700000000000, 12)
    assert stream_id_key("9-0") < stream_id_key("10-0")  # numbers, not text
    assert safe_cursor("20-1", []) == "20-1"
    assert safe_cursor("20-1", ["10-5", "9-7", "15-0"]) == "9-7"
    assert valid_stream_id("5-1") == "5-1"
    for bad in ("$", "", "5", "a-1", None, 5, "5-1 "):
        assert valid_stream_id(bad) is None


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn(
        TOKEN, channels={CHANNEL: "releases"}, users=USERS, usergroups={"S0APPROVERS": [GROUPIE]}
    ) as found:
        yield found


@pytest.fixture
def setting(lab: Lab, tmp_path: Path, key_prefix: str) -> tuple[Path, str]:
    namespace = f"restart-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "aibrix.toml"
    path.write_text(config_text(lab, namespace, key_prefix))
    return path, namespace


async def _started(bot: Bot, version: str) -> tuple[str, str]:
    """A release whose live message is posted and shows it building: (run id, ts)."""
    store = bot.records.store
    release, created = await store.create_or_get(
        version, REQUESTER, CHANNEL, ["linux/amd64", "linux/arm64"], list(COMPONENTS), "test"
    )
    assert created
    await store.transition(version, release.run_id, [State.QUEUED], State.BUILDING)
    loaded = await store.load(version, release.run_id)
    assert loaded is not None
    client = AsyncWebClient(token=TOKEN, base_url=bot.standin.api_url)
    ts = await post_status_message(bot.server.deps, client, loaded)
    assert ts is not None
    await bot.wait_message(ts, "building")
    return release.run_id, ts


@pytest.fixture
async def redis(redis_url: str, key_prefix: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the test's own; every key of the test is deleted at the end."""
    client = await connect(RedisSettings.from_dsn(redis_url, key_prefix=key_prefix))
    try:
        yield client
    finally:
        found = await client.keys(f"{key_prefix}*")
        if found:
            await client.delete(*found)
        await client.aclose()


@pytest.fixture
def pipeline(redis: aioredis.Redis, setting: tuple[Path, str]) -> Pipeline:
    """The pipeline on its own, as a worker or the CLI uses it while the bot is down."""
    return Pipeline(redis, load_config(setting[0]))


@pytest.fixture
def records(redis: aioredis.Redis, key_prefix: str) -> Records:
    """What the test reads and stages in Redis (see `tests.support.records`)."""
    return Records.on(redis, key_prefix)


async def test_events_while_the_bot_was_down_reach_the_message_after_restart(
    lab: Lab,
    redis_url: str,
    key_prefix: str,
    setting: tuple[Path, str],
    standin: SlackStandIn,
    pipeline: Pipeline,
    records: Records,
) -> None:
    path, namespace = setting
    async with running_bot(lab, redis_url, path, key_prefix, namespace, standin=standin) as bot:
        run_id, ts = await _started(bot, "v4.0.0")
    # The bot is down. The release is cancelled meanwhile: its events are written.
    saved = await records.notifier_cursor()
    cancelled = await pipeline.cancel("v4.0.0", REQUESTER)
    assert cancelled.state is State.CANCELLED
    newest = await records.newest_event()
    assert saved is not None and stream_id_key(saved) < stream_id_key(newest[0][0])
    message = standin.message(CHANNEL, ts)
    assert message is not None and "cancelled" not in json.dumps(message.blocks)
    # Back up: the new notifier reads on from its cursor and shows the cancellation.
    async with running_bot(lab, redis_url, path, key_prefix, namespace, standin=standin) as bot:
        await bot.wait_message(ts, "cancelled", timeout=20)
        async with asyncio.timeout(20):
            while await records.notifier_cursor() != newest[0][0]:
                await asyncio.sleep(0.05)
    final = await pipeline.find_run("v4.0.0", run_id)
    assert final is not None and final.state is State.CANCELLED


async def test_a_first_start_begins_at_the_newest_event(
    lab: Lab,
    redis_url: str,
    key_prefix: str,
    setting: tuple[Path, str],
    standin: SlackStandIn,
    pipeline: Pipeline,
    records: Records,
) -> None:
    path, namespace = setting
    async with running_bot(lab, redis_url, path, key_prefix, namespace, standin=standin) as bot:
        _, ts = await _started(bot, "v4.1.0")
    await records.forget_notifier_cursor()  # as if never run before
    await pipeline.cancel("v4.1.0", REQUESTER)
    newest = await records.newest_event()
    async with running_bot(lab, redis_url, path, key_prefix, namespace, standin=standin) as bot:
        assert bot.server.notifier.after == newest[0][0]
    message = standin.message(CHANNEL, ts)
    assert message is not None and "cancelled" not in json.dumps(message.blocks)


async def test_a_release_without_a_message_is_not_reloaded_on_every_flush(
    standin: SlackStandIn,
    pipeline: Pipeline,
    records: Records,
) -> None:
    # A release from the command line: no Slack message, so nothing for the notifier to
    # update; its run must go quiet after one look, and be forgotten once finished.
    release, _ = await records.store.create_or_get(
        "v4.2.0", "cli:alex", "cli", ["linux/amd64", "linux/arm64"], list(COMPONENTS), "cli"
    )
    client = AsyncWebClient(token=TOKEN, base_url=standin.api_url)
    notifier = Notifier(pipeline, records.notices, client, interval=0.0)
    for event in await pipeline.events("0-0", count=1000):
        notifier.observe(event)
    key = ("v4.2.0", release.run_id)
    assert notifier.runs[key].dirty
    await notifier.flush(force=True)
    assert not notifier.runs[key].dirty
    await pipeline.cancel("v4.2.0", "cli:alex")
    for event in await pipeline.events("0-0", count=1000):
        notifier.observe(event)
    await notifier.flush(force=True)
    assert key not in notifier.runs
    assert notifier.updates == 0 and not [c for c in standin.calls if c.method == "chat.update"]


async def test_two_notifiers_reply_to_a_failure_once(
    standin: SlackStandIn,
    pipeline: Pipeline,
    records: Records,
) -> None:
    # The chart runs two bot replicas: both read the events stream, one thread reply.
    store = records.store
    release, _ = await store.create_or_get(
        "v4.3.0", REQUESTER, CHANNEL, ["linux/amd64", "linux/arm64"], list(COMPONENTS), "test"
    )
    await store.transition("v4.3.0", release.run_id, [State.QUEUED], State.BUILDING)
    client = AsyncWebClient(token=TOKEN, base_url=standin.api_url)
    posted = await client.chat_postMessage(channel=CHANNEL, text="Release v4.3.0")
    await store.set_status_message("v4.3.0", release.run_id, CHANNEL, str(posted["ts"]))
    component = next(iter(COMPONENTS))
    await store.update_build(
        "v4.3.0", release.run_id, component, "linux/arm64", BuildState.BUILDING
    )
    await store.update_build(
        "v4.3.0",
        release.run_id,
        component,
        "linux/arm64",
        BuildState.FAILED,
        error="step 7/9 failed: unsupported on aarch64",
        log_lines=["#7 ERROR: unsupported on aarch64"],
    )
    replicas = [Notifier(pipeline, records.notices, client, interval=0.0) for _ in range(2)]
    events = await store.events("0-0", count=1000)
    for notifier in replicas:
        for event in events:
            notifier.observe(event)
    await asyncio.gather(*(n.flush(force=True) for n in replicas))
    for notifier in replicas:  # and again, as after a restart that replays the events
        for event in events:
            notifier.observe(event)
        await notifier.flush(force=True)
    replies = [c for c in standin.calls_to("chat.postMessage") if c.params.get("thread_ts")]
    assert len(replies) == 1, replies
    assert "unsupported on aarch64" in json.dumps(replies[0].params)


async def test_of_two_replicas_one_sends_and_the_other_takes_over_when_it_stops(
    standin: SlackStandIn,
    pipeline: Pipeline,
    records: Records,
) -> None:
    store = records.store
    release, _ = await store.create_or_get(
        "v4.4.0", REQUESTER, CHANNEL, ["linux/amd64", "linux/arm64"], list(COMPONENTS), "test"
    )
    client = AsyncWebClient(token=TOKEN, base_url=standin.api_url)
    posted = await client.chat_postMessage(channel=CHANNEL, text="Release v4.4.0")
    ts = str(posted["ts"])
    await store.set_status_message("v4.4.0", release.run_id, CHANNEL, ts)
    first, second = (
        Notifier(pipeline, records.notices, client, interval=0.0, block_ms=100) for _ in range(2)
    )
    await first.start()
    await second.start()
    try:
        async with asyncio.timeout(10):
            while not (first.leading or second.leading):
                await asyncio.sleep(0.05)
        leader, other = (first, second) if first.leading else (second, first)
        await store.transition("v4.4.0", release.run_id, [State.QUEUED], State.BUILDING)
        async with asyncio.timeout(10):
            while leader.updates == 0:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # time enough for the other to send, were it sending
        assert other.updates == 0 and not other.leading
        assert len(standin.calls_to("chat.update")) == leader.updates

        await leader.stop()  # hands the lease back
        sent_by_leader = len(standin.calls_to("chat.update"))
        await pipeline.cancel("v4.4.0", REQUESTER)

        def shown() -> str:
            message = standin.message(CHANNEL, ts)
            return json.dumps(message.blocks) if message is not None else ""

        # The other may take the lease before the cancel is written and send the run as
        # it was first; what counts is that it, not the stopped leader, sends the cancel.
        async with asyncio.timeout(10):
            while "cancelled" not in shown():
                await asyncio.sleep(0.05)
        assert other.leading and other.updates > 0
        assert len(standin.calls_to("chat.update")) == sent_by_leader + other.updates
    finally:
        await first.stop()
        await second.stop()
