"""A run and what it starts are one atomic step (issue 10, item 6), a redelivered request
gets its own run back, a Slack delivery's claim is leased, confirmed or dropped, and a
run's live message is posted once from the outbox (item 7):
on the real lab Redis, with the Slack stand-in."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from slack_sdk.web.async_client import AsyncWebClient

from bot.notifier import Notifier
from handlers.context import Deps, confirm_delivery, first_delivery, forget_delivery
from handlers.live_message import metadata, post_live_message
from jobs.domain.config_reader import load_config
from jobs.domain.platforms import parse_platform
from jobs.domain.release import BuildState, State
from jobs.registry.client import RegistrySettings
from jobs.store.connections import RedisSettings, connect
from jobs.store.notices import NoticeStore, outbox_member
from jobs.usecases.approval import Approvals
from jobs.usecases.inspector import Inspector
from jobs.usecases.pipeline import Pipeline, plan_release
from jobs.usecases.sync_job import sync_jobs
from tests.conftest import Lab
from tests.support.bot import CHANNEL, COMPONENTS, REQUESTER, TOKEN, config_text
from tests.support.records import Records
from tests.support.slack_standin import SlackStandIn

PLATFORMS = ("linux/amd64", "linux/arm64")
AMD64, ARM64 = (parse_platform(p) for p in PLATFORMS)
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
async def redis(redis_url: str, key_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = await connect(RedisSettings.from_dsn(redis_url, key_prefix=key_prefix))
    try:
        yield client
    finally:
        found = await client.keys(f"{key_prefix}*")
        if found:
            await client.delete(*found)
        await client.aclose()


@pytest.fixture
def pipeline(lab: Lab, redis: aioredis.Redis, tmp_path: Path, key_prefix: str) -> Pipeline:
    path = tmp_path / "aibrix.toml"
    text = config_text(lab, f"start-{uuid.uuid4().hex[:8]}", key_prefix)
    path.write_text(text.replace("[queue]\n", "[queue]\nclaim_seconds = 1\n"))
    return Pipeline(redis, load_config(path))


@pytest.fixture
def records(redis: aioredis.Redis, key_prefix: str) -> Records:
    """What the test reads and stages in Redis, beside the pipeline it drives."""
    return Records.on(redis, key_prefix)


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn(TOKEN, channels={CHANNEL: "releases"}) as found:
        yield found


async def jobs_of(records: Records, run_id: str) -> list[tuple[str, str, str]]:
    """(kind, component, platform) of each job of the run in the job streams, sorted."""
    found = []
    for platform in (*PLATFORMS, None):
        for _, fields in await records.jobs(platform):
            job = json.loads(fields["job"])
            if job["run_id"] == run_id:
                found.append((job["kind"], job["component"], job["platform"] or ""))
    return sorted(found)


ALL_BUILDS = sorted(("build", c, p) for c in COMPONENTS for p in PLATFORMS)


async def test_a_run_is_written_with_its_jobs_and_its_outbox_entry(
    pipeline: Pipeline, records: Records
) -> None:
    plan = plan_release(pipeline.config, "v1.0.0")
    release, created = await pipeline.request_release(plan, REQUESTER, CHANNEL)
    assert created and release.state is State.BUILDING
    assert await jobs_of(records, release.run_id) == ALL_BUILDS
    outbox = await records.status_outbox()
    assert outbox == {outbox_member("v1.0.0", release.run_id)}
    kinds = [e.type for e in await pipeline.events("0-0", count=100)]
    assert kinds == ["created", "state"]
    # A duplicate request (another delivery) writes no job and no run.
    again, created_again = await pipeline.request_release(plan, REQUESTER, CHANNEL)
    assert not created_again and again.run_id == release.run_id
    assert await jobs_of(records, release.run_id) == ALL_BUILDS
    # From the command line: no live message is wanted.
    cli, _ = await pipeline.request_release(plan_release(pipeline.config, "v1.0.1"), "cli:me")
    assert outbox_member("v1.0.1", cli.run_id) not in await records.status_outbox()


async def test_a_redelivered_request_gets_its_own_run_back(
    pipeline: Pipeline, records: Records
) -> None:
    plan = plan_release(pipeline.config, "v1.1.0")
    first, created = await pipeline.request_release(plan, REQUESTER, CHANNEL, request_id="d-1")
    again, created_again = await pipeline.request_release(
        plan, REQUESTER, CHANNEL, request_id="d-1"
    )
    other, created_other = await pipeline.request_release(
        plan, REQUESTER, CHANNEL, request_id="d-2"
    )
    assert created and created_again and not created_other
    assert first.run_id == again.run_id == other.run_id
    assert first.request_id == "d-1"
    assert await records.run_ids("v1.1.0") == [first.run_id]
    assert await jobs_of(records, first.run_id) == ALL_BUILDS


async def test_a_retry_reuses_pushed_digests_and_starts_in_the_same_step(
    pipeline: Pipeline,
    records: Records,
) -> None:
    store, version = records.store, "v1.2.0"
    plan = plan_release(pipeline.config, version)
    blocked, _ = await pipeline.request_release(plan, REQUESTER, CHANNEL)
    whole, partial = COMPONENTS  # every platform of `whole` pushed; one of `partial` failed
    for platform in PLATFORMS:
        await store.record_build_digest(version, blocked.run_id, whole, platform, DIGEST, 1)
    await store.record_build_digest(version, blocked.run_id, partial, PLATFORMS[0], DIGEST, 1)
    await store.update_build(
        version, blocked.run_id, partial, PLATFORMS[1], BuildState.FAILED, error="boom"
    )
    for source, target in (
        (State.BUILDING, State.MERGING),
        (State.MERGING, State.VERIFYING),
        (State.VERIFYING, State.BLOCKED),
    ):
        assert await store.transition(version, blocked.run_id, [source], target)

    retried, failed = await pipeline.retry(version, REQUESTER, request_id="click-1")
    assert failed == 1 and retried.run_id != blocked.run_id
    # One step wrote the reused digests, the one rebuild, and the merge of the component
    # with nothing to rebuild (so no crash can leave it unmerged).
    assert retried.state is State.MERGING
    assert retried.build(whole, AMD64).digest == DIGEST
    assert retried.build(partial, AMD64).state is BuildState.PUSHED
    assert retried.build(partial, ARM64).state is BuildState.QUEUED
    assert retried.merges_claimed == {whole}
    expected = sorted([("build", partial, PLATFORMS[1]), ("merge", whole, "")])
    assert await jobs_of(records, retried.run_id) == expected
    # The same click again (Slack's redelivery): the same run and answer, nothing more.
    again, failed_again = await pipeline.retry(version, REQUESTER, request_id="click-1")
    assert (again.run_id, failed_again) == (retried.run_id, 1)
    assert await jobs_of(records, retried.run_id) == expected
    assert await store.run_ids(version) == [blocked.run_id, retried.run_id]


async def test_two_notifiers_post_a_missing_live_message_once(
    pipeline: Pipeline,
    standin: SlackStandIn,
    records: Records,
) -> None:
    plan = plan_release(pipeline.config, "v1.3.0")
    release, _ = await pipeline.request_release(plan, REQUESTER, CHANNEL)
    client = AsyncWebClient(token=TOKEN, base_url=standin.api_url)
    replicas = [Notifier(pipeline, records.notices, client, interval=0.0) for _ in range(2)]
    posted = await asyncio.gather(*(n.drain_outbox(force=True) for n in replicas))
    assert sorted(posted) == [0, 1]
    (message,) = standin.messages(CHANNEL)
    loaded = await pipeline.find_run("v1.3.0", release.run_id)
    assert loaded is not None and loaded.status_ts == message.ts
    assert message.metadata == metadata(loaded)
    assert await records.status_outbox() == set()
    assert [await n.drain_outbox(force=True) for n in replicas] == [0, 0]
    assert len(standin.calls_to("chat.postMessage")) == 1


async def test_a_claim_left_by_a_dead_poster_expires_and_its_message_is_adopted(
    pipeline: Pipeline,
    standin: SlackStandIn,
    records: Records,
) -> None:
    version = "v1.4.0"
    release, _ = await pipeline.request_release(
        plan_release(pipeline.config, version), REQUESTER, CHANNEL
    )
    client = AsyncWebClient(token=TOKEN, base_url=standin.api_url)
    # A poster claimed, marked the post tried, and Slack took its message; then it died.
    await records.leave_post_claim(version, release.run_id, "dead-poster", ttl_s=1)
    await records.mark_post_tried(version, release.run_id)
    dead = await client.chat_postMessage(
        channel=CHANNEL, text="Release", metadata=metadata(release)
    )
    # While the claim lives nobody posts; once it has run out, the message is adopted.
    assert await post_live_message(pipeline, records.notices, client, release) is None
    async with asyncio.timeout(10):
        while await records.post_claim_held(version, release.run_id):
            await asyncio.sleep(0.05)
    assert await post_live_message(pipeline, records.notices, client, release) == dead["ts"]
    assert len(standin.calls_to("chat.postMessage")) == 1
    assert len(standin.calls_to("conversations.history")) == 1


async def test_a_tried_post_that_never_reached_slack_is_posted(
    pipeline: Pipeline,
    standin: SlackStandIn,
    records: Records,
) -> None:
    version = "v1.5.0"
    release, _ = await pipeline.request_release(
        plan_release(pipeline.config, version), REQUESTER, CHANNEL
    )
    await records.mark_post_tried(version, release.run_id)
    client = AsyncWebClient(token=TOKEN, base_url=standin.api_url)
    ts = await post_live_message(pipeline, records.notices, client, release)
    (message,) = standin.messages(CHANNEL)
    assert ts == message.ts
    assert len(standin.calls_to("conversations.history")) == 1


async def test_a_finished_run_leaves_the_outbox_without_a_post(
    pipeline: Pipeline,
    standin: SlackStandIn,
    records: Records,
) -> None:
    version = "v1.6.0"
    release, _ = await pipeline.request_release(
        plan_release(pipeline.config, version), REQUESTER, CHANNEL
    )
    await pipeline.cancel(version, REQUESTER)
    client = AsyncWebClient(token=TOKEN, base_url=standin.api_url)
    assert await Notifier(pipeline, records.notices, client).drain_outbox(force=True) == 0
    assert await records.status_outbox() == set()
    assert standin.messages(CHANNEL) == []
    assert release.run_id


async def test_a_delivery_claim_is_leased_confirmed_or_dropped(
    pipeline: Pipeline, records: Records
) -> None:
    deps = Deps(
        pipeline,
        Inspector(RegistrySettings(), pipeline.config),
        Approvals(records.store, records.queue),
        sync_jobs(records.redis, pipeline.config, records.store, records.queue),
        records.notices,
    )
    key = "command\nT\nU\ntrigger-1"
    assert await first_delivery(deps, key)
    # Being handled: a redelivery is dropped, and the claim is short.
    assert not await first_delivery(deps, "command\nT\nU\ntrigger-1")
    _, ttl = await records.delivery_claim(key)
    assert 0 < ttl <= pipeline.config.queue.claim_seconds
    # Its handler died: once the lease runs out, a redelivery is handled.
    async with asyncio.timeout(10):
        while (await records.delivery_claim(key))[0] is not None:
            await asyncio.sleep(0.05)
    assert await first_delivery(deps, "command\nT\nU\ntrigger-1")
    # Done: remembered for an hour, every redelivery dropped.
    await confirm_delivery(deps, "command\nT\nU\ntrigger-1")
    value, ttl = await records.delivery_claim(key)
    assert value == "confirmed" and ttl > 3500
    assert not await first_delivery(deps, "command\nT\nU\ntrigger-1")
    # Refused: nothing is kept.
    assert await first_delivery(deps, "command\nT\nU\ntrigger-2")
    await forget_delivery(deps, "command\nT\nU\ntrigger-2")
    assert await records.delivery_claim("command\nT\nU\ntrigger-2") == (None, -2)
    # No identity (Slack sent none): handled, nothing written.
    assert await first_delivery(deps, None)


async def test_a_claim_redis_cannot_settle_is_logged_and_left_to_its_lease(
    pipeline: Pipeline, records: Records, caplog: pytest.LogCaptureFixture
) -> None:
    # Redis gone between the work and the claim's settling: the command's answer is still
    # due (it comes after), so settling says so in the log and raises nothing.
    gone = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    deps = Deps(
        pipeline,
        Inspector(RegistrySettings(), pipeline.config),
        Approvals(records.store, records.queue),
        sync_jobs(records.redis, pipeline.config, records.store, records.queue),
        NoticeStore(gone, records.keys),
    )
    try:
        await confirm_delivery(deps, "command\nT\nU\ntrigger-3")
        await forget_delivery(deps, "command\nT\nU\ntrigger-4")
    finally:
        await gone.aclose()
    said = [r.getMessage() for r in caplog.records if r.name == "aibrix.bot"]
    assert said == [
        "delivery not confirmed, Redis failed (ConnectionError)",
        "delivery claim not dropped, Redis failed (ConnectionError)",
    ]


async def test_a_run_an_older_bot_left_without_jobs_is_started_by_the_next_request(
    pipeline: Pipeline,
    records: Records,
) -> None:
    # What an older bot killed between creating a run and enqueueing its jobs left: a
    # run, queued, and no job anywhere. A new request must not answer "already running".
    version = "v1.7.0"
    stuck, _ = await records.store.create_or_get(
        version, REQUESTER, CHANNEL, list(PLATFORMS), list(COMPONENTS), "rev-1"
    )
    assert stuck.state is State.QUEUED and await jobs_of(records, stuck.run_id) == []
    plan = plan_release(pipeline.config, version)
    resumed, created = await pipeline.request_release(plan, REQUESTER, CHANNEL)
    assert not created and resumed.run_id == stuck.run_id
    assert resumed.state is State.BUILDING
    assert await jobs_of(records, stuck.run_id) == ALL_BUILDS
    # Asked again: the run is started, nothing more is enqueued.
    await pipeline.request_release(plan, REQUESTER, CHANNEL)
    assert await jobs_of(records, stuck.run_id) == ALL_BUILDS
    assert await records.run_ids(version) == [stuck.run_id]
