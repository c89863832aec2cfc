"""The job queue against a real Redis: leases, reclaim, retry, dead letter, dedup, cancel.

Also the pure parts it stands on: key layout, connection settings, backoff, job format.
Lease tests use leases of a few hundred milliseconds and wait for *behaviour* (the job
shows up for another worker) with a generous deadline, never for a fixed time.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from jobs.store.connections import (
    Batch,
    RedisConnectError,
    RedisSettings,
    RedisSettingsError,
    connect,
    redact_url,
)
from jobs.store.keys import Keys, segment
from jobs.store.queue import (
    DeadLetter,
    Depth,
    EnqueueResult,
    Job,
    JobFormatError,
    JobKind,
    Lease,
    Queue,
    QueueSettings,
    backoff_seconds,
    idempotency_key,
    jittered,
)

ARM = "linux/arm64"
AMD = "linux/amd64"

# Pure: keys ---------------------------------------------------------------------------


@given(st.text(min_size=1), st.text(min_size=1))
def test_segment_is_injective_and_has_no_separator(a: str, b: str) -> None:
    assert ":" not in segment(a)
    assert "/" not in segment(a)
    if a != b:
        assert segment(a) != segment(b)


def test_segment_keeps_versions_and_platforms_readable() -> None:
    assert segment("v0.3.0-rc.2") == "v0.3.0-rc.2"
    assert segment("linux/arm64") == "linux_arm64"
    assert segment("linux/arm/v7") == "linux_arm_v7"
    assert segment("x86_64") == "x86%5F64"  # `_` escaped, so it cannot fake a `/`
    assert segment("v1:builds") == "v1%3Abuilds"


def test_keys_live_under_the_prefix_and_do_not_collide() -> None:
    keys = Keys("aibrix:staging")
    every = {
        keys.releases,
        keys.active_run("v1"),
        keys.runs("v1"),
        keys.run("v1", "r1"),
        keys.builds("v1", "r1"),
        keys.indexes("v1", "r1"),
        keys.merges("v1", "r1"),
        keys.approvals("v1", "r1"),
        keys.promotions("v1", "r1"),
        keys.events,
        keys.audit,
        keys.job_stream(ARM),
        keys.job_stream(AMD),
        keys.control_stream,
        keys.dead_letters,
        keys.job_streams,
        keys.retry_schedule(keys.job_stream(ARM)),
        keys.retry_data(keys.job_stream(ARM)),
        keys.retry_schedule(keys.control_stream),
        keys.pending("abc"),
        keys.done("abc"),
        keys.cancelled("v1", "r1"),
    }
    assert len(every) == 22
    assert all(key.startswith("aibrix:staging:") for key in every)
    assert keys.job_stream(ARM) == "aibrix:staging:jobs:linux_arm64"
    assert keys.job_stream(None) == keys.control_stream
    # A version that looks like a key suffix stays inside its own segment.
    assert keys.run("v1:run:r1", "x") != keys.builds("v1", "r1")


def test_keys_refuse_what_is_not_theirs() -> None:
    with pytest.raises(ValueError, match="not a platform"):
        Keys().job_stream("control")
    with pytest.raises(ValueError, match="not a job stream"):
        Keys().retry_schedule("other:jobs:linux_arm64")
    with pytest.raises(ValueError, match="not a job stream"):
        Keys().retry_schedule(Keys().dead_letters)
    for bad in ("", "a b", "trailing:", ":lead"):
        with pytest.raises(ValueError, match="key prefix"):
            Keys(bad)


# Pure: connection settings ------------------------------------------------------------


def test_from_dsn_reads_every_part() -> None:
    settings = RedisSettings.from_dsn("rediss://bot:s3cr%40t@redis.example:6390/2")
    assert (settings.host, settings.port, settings.database) == ("redis.example", 6390, 2)
    assert (settings.username, settings.password, settings.ssl) == ("bot", "s3cr@t", True)
    defaults = RedisSettings.from_dsn("redis://localhost", key_prefix="x")
    assert (defaults.port, defaults.database, defaults.password) == (6379, 0, None)
    assert defaults.keys == Keys("x")


def test_password_never_shows() -> None:
    settings = RedisSettings.from_dsn("redis://:hunter2@h:1/0")
    for text in (repr(settings), str(settings), settings.dsn):
        assert "hunter2" not in text
    assert settings.dsn == "redis://:***@h:1/0"
    assert redact_url("redis://u:hunter2@h:1/0") == "redis://u:***@h:1/0"
    assert redact_url("redis://hunter2@h/0") == "redis://***@h/0"
    assert "hunter2" not in redact_url("hunter2")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://:hunter2@h:1/0", "must start with redis://"),
        ("redis://:hunter2@h:99999/0", "does not parse"),
        ("redis://:hunter2@h:1/zero", "database number"),
        ("redis://:hunter2@:1/0", "no host"),
        ("redis://:hunter2@h:1/0?db=3", "query parameters"),
        ("redis://:hunter2@h:notaport/0", "does not parse"),
    ],
)
def test_bad_urls_say_why_without_the_password(url: str, message: str) -> None:
    with pytest.raises(RedisSettingsError, match=message) as caught:
        RedisSettings.from_dsn(url)
    assert "hunter2" not in str(caught.value)


async def test_connect_failure_is_clear_and_redacted() -> None:
    settings = RedisSettings.from_dsn(
        "redis://:hunter2@127.0.0.1:1/0", connect_timeout_s=1, retries=0
    )
    with pytest.raises(RedisConnectError, match=r"127\.0\.0\.1:1") as caught:
        await connect(settings)
    assert "hunter2" not in str(caught.value)


# Pure: backoff and job format ---------------------------------------------------------


@given(
    st.integers(min_value=1, max_value=10_000),
    st.floats(min_value=0, max_value=1e6),
    st.floats(min_value=0, max_value=1e9),
)
def test_backoff_doubles_until_the_cap(attempt: int, base: float, cap: float) -> None:
    delay = backoff_seconds(attempt, base, cap)
    assert 0 <= delay <= cap
    assert delay <= backoff_seconds(attempt + 1, base, cap)  # never shrinks
    assert backoff_seconds(1, base, cap) == min(base, cap)
    if attempt < 60 and base * 2 ** (attempt - 1) <= cap:
        assert math.isclose(delay, base * 2 ** (attempt - 1))


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        backoff_seconds(0, 1, 10)
    with pytest.raises(ValueError):
        backoff_seconds(1, -1, 10)
    assert backoff_seconds(3, 5, 300) == 20
    assert backoff_seconds(10**9, 5, 300) == 300


@given(st.floats(min_value=0, max_value=1e6), st.floats(0, 1), st.floats(0, 1))
def test_jitter_only_shortens_and_by_at_most_the_fraction(
    delay: float, fraction: float, unit: float
) -> None:
    assert delay * (1 - fraction) - 1e-9 <= jittered(delay, fraction, unit) <= delay


_text = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_categories=("Cs", "Cc")),
    min_size=1,
    max_size=40,
)


@st.composite
def jobs(draw: st.DrawFn) -> Job:
    kind = draw(st.sampled_from(list(JobKind)))
    platform = draw(st.sampled_from([ARM, AMD, "linux/arm/v7", None]))
    if kind is JobKind.BUILD and platform is None:
        platform = ARM
    return Job(
        kind=kind,
        release=draw(_text),
        component=draw(_text),
        source_revision=draw(_text),
        platform=platform,
        run_id=draw(st.one_of(st.just(""), _text)),
        attempt=draw(st.integers(min_value=1, max_value=1000)),
        payload=draw(st.dictionaries(st.text(max_size=20), st.text(max_size=50), max_size=5)),
    )


@given(jobs())
def test_job_round_trips_through_stream_fields(job: Job) -> None:
    fields = job.to_fields()
    assert list(fields) == ["job"] and isinstance(fields["job"], str)
    assert Job.from_fields(fields) == job
    assert job.next_attempt().idempotency_key == job.idempotency_key


@given(jobs(), st.sampled_from(["kind", "release", "run_id", "component", "source_revision"]))
def test_idempotency_key_changes_with_every_identity_field(job: Job, name: str) -> None:
    parts: dict[str, Any] = {
        "kind": job.kind.value,
        "release": job.release,
        "run_id": job.run_id,
        "component": job.component,
        "platform": job.platform,
        "source_revision": job.source_revision,
    }
    assert idempotency_key(**parts) == job.idempotency_key
    parts[name] = parts[name] + "x"
    assert idempotency_key(**parts) != job.idempotency_key


def _job(**overrides: Any) -> Job:
    values: dict[str, Any] = {
        "kind": JobKind.BUILD,
        "release": "v0.3.0-rc.2",
        "run_id": "run1",
        "component": "runtime",
        "source_revision": "0123abc",
        "platform": ARM,
    }
    values.update(overrides)
    return Job(**values)


def _document(**change: Any) -> dict[str, str]:
    doc = {**_job().to_document(), **change}
    return {"job": json.dumps(doc)}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"attempt": "2"}, "attempt"),
        ({"attempt": 0}, "attempt"),
        ({"attempt": True}, "attempt"),
        ({"payload": [1]}, "payload is not an object"),
        ({"payload": {"a": 1}}, "strings to strings"),
        ({"kind": "deploy"}, "kind"),
        ({"platform": "linux/aarch64"}, "must be written linux/arm64"),
        ({"platform": "linux"}, "not a platform"),
        ({"platform": None}, "build job needs a platform"),
        ({"platform": 64}, "platform must be a string"),
        ({"release": ""}, "release is empty"),
        ({"release": 1}, "release must be a string"),
        ({"release": "v1\n"}, "control characters"),
        ({"idempotency_key": "0" * 32}, "idempotency key does not match"),
        ({"v": "2"}, "format"),
        ({"id": "no spaces please"}, "job id"),
    ],
)
def test_job_fields_are_validated(change: dict[str, Any], message: str) -> None:
    with pytest.raises(JobFormatError, match=message):
        Job.from_fields(_document(**change))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "no 'job' field"),
        ({"job": "{"}, "not JSON"),
        ({"job": "[]"}, "not a JSON object"),
    ],
)
def test_unreadable_entries_are_refused(fields: dict[str, str], message: str) -> None:
    with pytest.raises(JobFormatError, match=message):
        Job.from_fields(fields)


def test_job_fields_missing() -> None:
    doc = _job().to_document()
    del doc["source_revision"]
    with pytest.raises(JobFormatError, match="missing: source_revision"):
        Job.from_fields({"job": json.dumps(doc)})


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
    return Queue(redis, keys, QueueSettings(**values), on_dead_letter=record)


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
    assert keys.cancelled(loose.release, "") != keys.cancelled(loose.release, "-")
    assert (await queue.enqueue(loose)).added and (await queue.enqueue(in_run)).added
    assert await queue.cancel(loose.release, "") == 1
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
