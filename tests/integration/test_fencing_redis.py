"""Fencing and the consumer janitor in real Redis (issue 16 items 1 and 7): a worker
whose lease was reclaimed cannot record its digest; a dead worker's consumer leaves
its group once idle with nothing pending, a live one with a job does not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from jobs.domain.platforms import parse_platform
from jobs.domain.versions import parse_version
from jobs.store.connections import RedisSettings, connect
from jobs.store.keys import CONSUMER_GROUP, Keys
from jobs.store.queue import Job, JobKind, Queue, QueueTuning
from jobs.store.releases import ReleaseStore

V = "v0.9.0"
AMD = parse_platform("linux/amd64")
DIGEST = "sha256:" + "d" * 64


@pytest.fixture
async def redis(redis_url: str, key_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = await connect(RedisSettings.from_dsn(redis_url, key_prefix=key_prefix))
    yield client
    stale = [key async for key in client.scan_iter(match=f"{key_prefix}:*", count=1000)]
    if stale:
        await client.delete(*stale)
    await client.aclose()


async def test_a_reclaimed_lease_cannot_record_and_the_new_holder_can(
    redis: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    store = ReleaseStore(redis, keys)
    queue = Queue(redis, keys, QueueTuning(lease_ms=50))
    run, _ = await store.create_or_get(V, "U1", "C1", (AMD,), ("runtime",), "refs/tags/" + V)
    job = Job(
        kind=JobKind.BUILD,
        version=parse_version(V),
        component="runtime",
        source_revision="abc",
        platform=AMD,
        run_id=run.run_id,
    )
    await queue.enqueue(job)
    stream = queue.platform_stream(AMD)
    [old] = await queue.claim(stream, "w1:linux/amd64:0")
    await asyncio.sleep(0.1)  # past the 50 ms lease
    [new] = await queue.claim(stream, "w2:linux/amd64:0")
    assert new.reclaimed and new.deliveries == old.deliveries + 1  # a new lease token
    stale = await store.record_build_digest(V, run.run_id, "runtime", AMD, DIGEST, 1, old.fence)
    assert stale.status == "stale"
    loaded = await store.load(V, run.run_id)
    assert loaded is not None and not loaded.build("runtime", AMD).digest
    fresh = await store.record_build_digest(V, run.run_id, "runtime", AMD, DIGEST, 1, new.fence)
    assert fresh.status == "recorded" and fresh.digest == DIGEST


async def test_idle_consumers_with_nothing_pending_leave_the_group(
    redis: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    queue = Queue(redis, keys, QueueTuning(consumer_idle_ms=1))
    stream = keys.job_stream("linux/amd64")
    await queue.ensure_group(stream)
    for component in ("runtime", "gateway-plugins"):
        job = Job(
            kind=JobKind.BUILD,
            version=parse_version(V),
            component=component,
            source_revision="abc",
            platform=AMD,
            run_id="r1",
        )
        await queue.enqueue(job)
    assert await queue.claim(stream, "busy:linux/amd64:0")  # holds a job
    [done] = await queue.claim(stream, "dead:linux/amd64:0")
    assert await queue.ack(done)  # it finished its job, then its worker died
    await asyncio.sleep(0.01)
    removed = await queue.remove_idle_consumers(stream)
    names = {str(c["name"]) for c in await redis.xinfo_consumers(stream, CONSUMER_GROUP)}
    assert removed == ["dead:linux/amd64:0"]
    assert names == {"busy:linux/amd64:0"}
