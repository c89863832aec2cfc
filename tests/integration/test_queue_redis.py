"""The job queue against a real Redis: leases, reclaim, retry, dead letter, dedup, cancel.

Lease tests use leases of a few hundred milliseconds and wait for *behaviour* (the job
shows up for another worker) with a generous deadline, never for a fixed time. The pure
parts it stands on (key layout, connection settings, backoff, job format) are tested in
tests/unit/test_queue.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from jobs.store.connections import (
    Batch,
    RedisSettings,
    connect,
)
from jobs.store.keys import Keys
from jobs.store.queue import (
    DeadLetter,
    Depth,
    EnqueueResult,
    JobKind,
    Lease,
    Queue,
    QueueTuning,
)
from tests.support.queue import build_job as _job

ARM = "linux/arm64"
AMD = "linux/amd64"

# Against Redis ------------------------------------------------------------------------


@pytest.fixture
async def redis(redis_url: str, key_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = await connect(RedisSettings.from_dsn(redis_url, key_prefix=key_prefix))
    yield client
    stale = [key async for key in client.scan_iter(match=f"{key_prefix}:*", count=1000)]
    if stale:
        await client.delete(*stale)
    await client.aclose()


@pytest.fixture
def keys(key_prefix: str) -> Keys:
    return Keys(key_prefix)


def make_queue(
    redis: aioredis.Redis, keys: Keys, dead: list[DeadLetter] | None = None, **settings: Any
) -> Queue:
    async def record(letter: DeadLetter) -> None:
        if dead is not None:
            dead.append(letter)

    values: dict[str, Any] = {"jitter": 0.0}
    values.update(settings)
    return Queue(redis, keys, QueueTuning(**values), on_dead_letter=record)


async def eventually(
    probe: Callable[[], Awaitable[list[Lease]]], deadline_s: float = 10.0
) -> list[Lease]:
    """Call `probe` until it returns something; fail after a generous deadline."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while loop.time() < end:
        found = await probe()
        if found:
            return found
        await asyncio.sleep(0.02)
    pytest.fail(f"nothing arrived within {deadline_s}s")


async def test_enqueue_claim_ack(redis: aioredis.Redis, keys: Keys) -> None:
    queue = make_queue(redis, keys)
    job = _job(payload={"dockerfile": "Dockerfile"})
    added = await queue.enqueue(job)
    assert (added.added, added.status, added.job_id) == (True, "added", job.id)
    stream = keys.job_stream(ARM)
    assert await queue.depth(stream) == Depth(pending=0, lag=1, delayed=0)

    [lease] = await queue.claim(stream, "host:linux/arm64:0", count=10)
    assert lease.job == job and not lease.reclaimed and lease.deliveries == 1
    depth = await queue.depth(stream)
    assert (depth.pending, depth.lag) == (1, 0)

    assert await queue.ack(lease)
    assert await queue.claim(stream, "host:linux/arm64:0", count=10) == []
    assert (await queue.depth(stream)).total == 0
    assert await redis.xlen(stream) == 0  # finished entries do not pile up
    # Acked without a result: the same job may be enqueued again later.
    assert (await queue.enqueue(job)).added


async def test_jobs_go_to_their_platform_or_the_control_stream(
    redis: aioredis.Redis, keys: Keys
) -> None:
    queue = make_queue(redis, keys)
    build_arm, build_amd = _job(), _job(platform=AMD)
    merge = _job(kind=JobKind.MERGE, platform=None)
    await queue.enqueue_many([build_arm, build_amd, merge])
    claimed = {}
    for platform in (ARM, AMD, None):
        leases = await queue.claim(keys.job_stream(platform), "w", count=10)
        claimed[platform] = [lease.job for lease in leases]
    assert claimed == {ARM: [build_arm], AMD: [build_amd], None: [merge]}


async def test_jobs_enqueued_before_any_worker_are_not_lost(
    redis: aioredis.Redis, keys: Keys
) -> None:
    queue = make_queue(redis, keys)
    await queue.enqueue(_job())  # no group exists yet
    await queue.ensure_group(keys.job_stream(ARM))
    await queue.ensure_group(keys.job_stream(ARM))  # idempotent
    assert len(await queue.claim(keys.job_stream(ARM), "w")) == 1


async def test_claim_blocks_until_a_job_arrives(redis: aioredis.Redis, keys: Keys) -> None:
    queue = make_queue(redis, keys)
    stream = keys.job_stream(ARM)
    await queue.ensure_group(stream)
    waiting = asyncio.create_task(queue.claim(stream, "w", block_ms=5000))
    await asyncio.sleep(0.05)
    await queue.enqueue(_job())
    [lease] = await waiting
    assert lease.job.component == "runtime"


async def test_same_idempotency_key_is_queued_once(redis: aioredis.Redis, keys: Keys) -> None:
    queue = make_queue(redis, keys)
    first = _job()
    results = await asyncio.gather(*(queue.enqueue(_job()) for _ in range(20)))
    results += await queue.enqueue_many([first, _job()])
    assert sum(r.added for r in results) == 1
    holder = next(r.job_id for r in results if r.added)
    assert {r.job_id for r in results if not r.added} == {holder}
    assert {r.status for r in results if not r.added} == {"pending"}
    assert await redis.xlen(keys.job_stream(ARM)) == 1
    # A different source revision is a different job.
    assert (await queue.enqueue(_job(source_revision="fedcba9"))).added


async def test_done_result_skips_the_job_and_its_redelivery(
    redis: aioredis.Redis, keys: Keys
) -> None:
    queue = make_queue(redis, keys, lease_ms=200)
    stream = keys.job_stream(ARM)
    job = _job()
    await queue.enqueue(job)
    [lease] = await queue.claim(stream, "a")
    # Worker A applied the effect and recorded it, then died before acking.
    await queue.mark_done(job.idempotency_key, '{"digest": "sha256:aa"}')
    assert await queue.done_result(job.idempotency_key) == '{"digest": "sha256:aa"}'

    other = make_queue(redis, keys, lease_ms=200)
    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    while other.stats.skipped_done == 0 and loop.time() < end:
        assert await other.claim(stream, "b") == []  # never handed out again
        await asyncio.sleep(0.02)
    assert other.stats.skipped_done == 1
    assert await redis.xlen(stream) == 0
    assert not await queue.ack(lease)  # A's lease is gone
    assert (await queue.enqueue(job)).status == "done"


async def test_ack_with_result_records_done_atomically(redis: aioredis.Redis, keys: Keys) -> None:
    queue = make_queue(redis, keys)
    job = _job()
    await queue.enqueue(job)
    [lease] = await queue.claim(keys.job_stream(ARM), "a")
    assert await queue.ack(lease, result="sha256:bb")
    assert await queue.done_result(job.idempotency_key) == "sha256:bb"
    assert await queue.enqueue(job) == EnqueueResult(False, "done", job.id)


async def test_unacked_job_is_reclaimed_after_its_lease(redis: aioredis.Redis, keys: Keys) -> None:
    stream = keys.job_stream(ARM)
    worker_a = make_queue(redis, keys, lease_ms=200)
    await worker_a.enqueue(_job())
    [held] = await worker_a.claim(stream, "a")

    # Within the lease nobody else gets it (a long-lease view of the same queue).
    patient = make_queue(redis, keys, lease_ms=60_000)
    assert await patient.claim(stream, "b", count=10) == []

    worker_b = make_queue(redis, keys, lease_ms=200)
    [taken] = await eventually(lambda: worker_b.claim(stream, "b", count=10))
    assert taken.reclaimed and taken.entry_id == held.entry_id and taken.deliveries == 2
    assert taken.job == held.job
    assert worker_b.stats.reclaimed == 1

    # A stalled past its lease: it can neither renew, ack nor retry B's job.
    assert not await worker_a.renew(held)
    assert not await worker_a.ack(held)
    assert (await worker_a.fail(held, "late")).status == "lost"
    assert (await worker_b.depth(stream)).delayed == 0
    assert await worker_b.ack(taken)


async def test_renew_keeps_a_long_job_from_being_reclaimed(
    redis: aioredis.Redis, keys: Keys
) -> None:
    stream = keys.job_stream(ARM)
    runner = make_queue(redis, keys, lease_ms=300)
    thief = make_queue(redis, keys, lease_ms=300)
    await runner.enqueue(_job())
    [lease] = await runner.claim(stream, "a")
    for _ in range(4):
        await asyncio.sleep(0.4)  # past the lease each time...
        assert await runner.renew(lease)  # ...but renewed before anyone looked
        assert await thief.claim(stream, "b") == []
    # Renewal does not count as a delivery, so A's lease is still valid.
    assert lease.deliveries == 1
    # Once renewals stop, the job is reclaimed.
    [taken] = await eventually(lambda: thief.claim(stream, "b"))
    assert taken.deliveries == 2
    assert not await runner.renew(lease)


async def test_failures_retry_with_backoff_then_dead_letter(
    redis: aioredis.Redis, keys: Keys
) -> None:
    dead: list[DeadLetter] = []
    queue = make_queue(redis, keys, dead, max_attempts=3, backoff_base_s=0.05, backoff_cap_s=0.08)
    stream = keys.job_stream(ARM)
    job = _job()
    await queue.enqueue(job)
    outcomes = []
    for attempt in (1, 2, 3):
        [lease] = await eventually(lambda: queue.claim(stream, "w"))
        assert lease.job.attempt == attempt and lease.job.id == job.id
        outcomes.append(await queue.fail(lease, f"buildx exited 1 on try {attempt}"))
        if attempt < 3:
            # While it waits for its retry, the job still counts as pending: no duplicate.
            assert (await queue.enqueue(job)).status == "pending"
    assert [o.status for o in outcomes] == ["retry", "retry", "dead"]
    assert [o.retry_in_s for o in outcomes] == [0.05, 0.08, None]
    assert queue.stats.retried == 2 and queue.stats.dead_lettered == 1

    [letter] = dead
    assert outcomes[2].dead_letter == letter
    assert letter.job is not None and letter.job.id == job.id and letter.job.attempt == 3
    assert letter.reason == "attempt 3 of 3 failed: buildx exited 1 on try 3"
    assert letter.stream == stream
    assert [d.entry_id for d in await queue.dead_letters()] == [letter.entry_id]
    assert (await queue.depth(stream)).total == 0
    # Dead-lettered jobs hold no dedup marker: a fresh request can run it again.
    assert (await queue.enqueue(job)).added


async def test_a_retry_waits_for_its_time(redis: aioredis.Redis, keys: Keys) -> None:
    queue = make_queue(redis, keys, backoff_base_s=3600, backoff_cap_s=3600)
    stream = keys.job_stream(ARM)
    await queue.enqueue(_job())
    [lease] = await queue.claim(stream, "w")
    outcome = await queue.fail(lease, "registry 503")
    assert outcome.status == "retry" and outcome.retry_in_s == 3600
    assert await queue.claim(stream, "w") == []
    assert await queue.promote_due_retries(stream) == 0
    assert await queue.depth(stream) == Depth(pending=0, lag=0, delayed=1)


async def test_a_job_that_keeps_killing_its_worker_is_dead_lettered(
    redis: aioredis.Redis, keys: Keys
) -> None:
    dead: list[DeadLetter] = []
    queue = make_queue(redis, keys, dead, lease_ms=100, max_deliveries=2)
    stream = keys.job_stream(ARM)
    await queue.enqueue(_job())
    await queue.claim(stream, "a")  # dies
    await eventually(lambda: queue.claim(stream, "b"))  # dies too (delivery 2)
    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    while not dead and loop.time() < end:
        assert await queue.claim(stream, "c") == []  # delivery 3 is never handed out
        await asyncio.sleep(0.02)
    [letter] = dead
    assert "lease expired 2 times" in letter.reason
    assert (await queue.depth(stream)).total == 0


async def test_unreadable_entries_are_dead_lettered_not_crashing_the_worker(
    redis: aioredis.Redis, keys: Keys
) -> None:
    dead: list[DeadLetter] = []
    queue = make_queue(redis, keys, dead)
    stream = keys.job_stream(ARM)
    await queue.ensure_group(stream)
    await redis.xadd(stream, {"kind": "build", "release": "v1"})
    await queue.enqueue(_job())
    leases = await queue.claim(stream, "w", count=10)
    assert [lease.job.component for lease in leases] == ["runtime"]
    [letter] = dead
    assert letter.job is None and "unreadable job entry" in letter.reason
    assert letter.fields["release"] == "v1"


async def test_cancel_removes_queued_jobs_and_flags_running_ones(
    redis: aioredis.Redis, keys: Keys
) -> None:
    queue = make_queue(redis, keys, backoff_base_s=3600, backoff_cap_s=3600)
    arm, amd = keys.job_stream(ARM), keys.job_stream(AMD)
    running = _job(component="gateway-plugins")
    await queue.enqueue(running)
    [running_lease] = await queue.claim(arm, "w")
    delayed = _job(component="metadata-service")
    await queue.enqueue(delayed)
    [to_fail] = await queue.claim(arm, "w")
    assert (await queue.fail(to_fail, "flaky")).status == "retry"
    queued = [_job(), _job(platform=AMD), _job(kind=JobKind.SYNC, platform=None)]
    other_run = _job(run_id="run2")
    await queue.enqueue_many([*queued, other_run])

    assert await queue.cancel("v0.3.0-rc.2", "run1") == 4  # 3 queued + 1 delayed retry

    assert await queue.is_cancelled("v0.3.0-rc.2", "run1")
    assert not await queue.is_cancelled("v0.3.0-rc.2", "run2")
    assert [lease.job for lease in await queue.claim(arm, "w", count=10)] == [other_run]
    assert await queue.claim(amd, "w", count=10) == []
    assert await queue.claim(keys.control_stream, "w", count=10) == []
    assert (await queue.depth(arm)).delayed == 0
    # The running job is still leased; its worker sees the flag and stops.
    assert await queue.ack(running_lease)
    # Nothing new is accepted for the cancelled run.
    assert (await queue.enqueue(_job(component="kvcache-watcher"))).status == "cancelled"


async def test_a_cancelled_runs_stalled_job_is_dropped_on_reclaim(
    redis: aioredis.Redis, keys: Keys
) -> None:
    queue = make_queue(redis, keys, lease_ms=100)
    stream = keys.job_stream(ARM)
    await queue.enqueue(_job())
    await queue.claim(stream, "a")  # delivered, then its worker dies
    assert await queue.cancel("v0.3.0-rc.2", "run1") == 0  # nothing undelivered
    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    while queue.stats.skipped_cancelled == 0 and loop.time() < end:
        assert await queue.claim(stream, "b") == []
        await asyncio.sleep(0.02)
    assert queue.stats.skipped_cancelled == 1
    assert (await queue.depth(stream)).total == 0


async def test_jobs_outside_a_run_queue_and_cancel_on_their_own(
    redis: aioredis.Redis, keys: Keys
) -> None:
    queue = make_queue(redis, keys)
    loose = _job(kind=JobKind.SYNC, platform=None, run_id="")
    in_run = _job(kind=JobKind.SYNC, platform=None)
    assert keys.cancelled(loose.version, "") != keys.cancelled(loose.version, "-")
    assert (await queue.enqueue(loose)).added and (await queue.enqueue(in_run)).added
    assert await queue.cancel(loose.version, "") == 1
    assert [lease.job for lease in await queue.claim(keys.control_stream, "w", 10)] == [in_run]


async def test_scripts_survive_redis_forgetting_them(redis: aioredis.Redis, keys: Keys) -> None:
    """After a restart Redis has no scripts cached; calls and batches load them again."""
    queue = make_queue(redis, keys)
    await redis.script_flush()
    assert (await queue.enqueue(_job())).added
    await redis.script_flush()
    results = await queue.enqueue_many([_job(component="a"), _job(component="b")])
    assert [r.added for r in results] == [True, True]
    await redis.script_flush()
    leases = await queue.claim(keys.job_stream(ARM), "w", count=10)  # promote runs in a batch
    assert len(leases) == 3


async def test_batch_raises_command_errors(redis: aioredis.Redis, keys: Keys) -> None:
    await redis.set(keys.pending("x"), "not a list")
    batch = Batch(redis)
    batch.pipe.lpush(keys.pending("x"), "1")
    with pytest.raises(Exception, match="WRONGTYPE"):
        await batch.execute()


async def test_claim_validates_its_arguments(redis: aioredis.Redis, keys: Keys) -> None:
    queue = make_queue(redis, keys)
    stream = keys.job_stream(ARM)
    with pytest.raises(ValueError, match="consumer"):
        await queue.claim(stream, "has space")
    with pytest.raises(ValueError, match="block forever"):
        await queue.claim(stream, "w", block_ms=0)
    with pytest.raises(ValueError, match="not a job stream"):
        await queue.claim(keys.dead_letters, "w")
