"""The release record in real Redis: runs, transitions, digests, approvals, events.

The pure state table is tested in tests/unit/test_state.py."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from jobs.domain.platforms import Platform, parse_platform
from jobs.domain.release import (
    BuildState,
    Event,
    InvalidTransition,
    Release,
    State,
    VersionImmutable,
)
from jobs.domain.versions import parse_version
from jobs.store.connections import RedisSettings, connect
from jobs.store.keys import Keys
from jobs.store.releases import RecordFormatError, ReleaseStore
from tests.support.corrupt import add_build_field, overwrite_run_field

S = State
B = BuildState

# Against Redis ------------------------------------------------------------------------

V = "v0.3.0-rc.2"
ARM, AMD = parse_platform("linux/arm64"), parse_platform("linux/amd64")
PLATFORMS = (AMD, ARM)
COMPONENTS = ("runtime", "gateway-plugins")


def digest(char: str) -> str:
    return "sha256:" + char * 64


@pytest.fixture
async def redis(redis_url: str, key_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = await connect(RedisSettings.from_dsn(redis_url, key_prefix=key_prefix))
    yield client
    stale = [key async for key in client.scan_iter(match=f"{key_prefix}:*", count=1000)]
    if stale:
        await client.delete(*stale)
    await client.aclose()


@pytest.fixture
def store(redis: aioredis.Redis, key_prefix: str) -> ReleaseStore:
    return ReleaseStore(redis, Keys(key_prefix), log_lines=3)


async def create(store: ReleaseStore, version: str = V, user: str = "U1") -> tuple[Release, bool]:
    return await store.create_or_get(version, user, "C1", PLATFORMS, COMPONENTS, "refs/tags/" + V)


async def push_all(store: ReleaseStore, run: Release, component: str) -> None:
    for n, platform in enumerate(run.platforms):
        result = await store.record_build_digest(
            V, run.run_id, component, platform, digest("ab"[n]), attempt=1
        )
        assert result.status == "recorded"


async def advance(store: ReleaseStore, run: Release, *path: State) -> None:
    current = run.state
    for target in path:
        assert await store.transition(V, run.run_id, [current], target)
        current = target


async def test_create_records_the_run(store: ReleaseStore) -> None:
    run, created = await create(store)
    assert created and run.active and run.state is S.QUEUED
    assert (str(run.version), run.requested_by, run.channel) == (V, "U1", "C1")
    assert run.platforms == PLATFORMS and run.components == COMPONENTS
    assert run.source_ref == "refs/tags/" + V and run.previous_run_id == ""
    assert set(run.builds) == set(itertools.product(COMPONENTS, PLATFORMS))
    assert {b.state for b in run.builds.values()} == {B.QUEUED}
    assert run.created_at > 0
    assert await store.load(V) == run


async def test_duplicate_request_returns_the_same_run(store: ReleaseStore) -> None:
    results = await asyncio.gather(*(create(store, user=f"U{n}") for n in range(20)))
    assert len({run.run_id for run, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    audit = await store.audit_entries()
    assert [e["action"] for e in audit].count("requested") == 1
    assert [e["action"] for e in audit].count("requested-again") == 19


@pytest.mark.parametrize("settled", [S.FAILED, S.CANCELLED, S.BLOCKED, S.PROMOTED])
async def test_a_new_run_starts_only_after_the_old_one_settled(
    store: ReleaseStore, settled: State
) -> None:
    first, _ = await create(store)
    path = {
        S.FAILED: [S.FAILED],
        S.CANCELLED: [S.CANCELLED],
        S.BLOCKED: [S.BUILDING, S.MERGING, S.VERIFYING, S.BLOCKED],
        S.PROMOTED: [
            S.BUILDING,
            S.MERGING,
            S.VERIFYING,
            S.READY,
            S.APPROVED,
            S.PROMOTING,
            S.PROMOTED,
        ],
    }[settled]
    await advance(store, first, *path)
    if settled is S.PROMOTED:
        # A promoted version is immutable: only an approver's supersede starts a run.
        with pytest.raises(VersionImmutable):
            await create(store)
        second, created = await store.create_or_get(
            V, "U1", "C1", PLATFORMS, COMPONENTS, "refs/tags/" + V, supersede=True
        )
        assert second.supersede
    else:
        second, created = await create(store)
    assert created and second.run_id != first.run_id
    assert second.previous_run_id == first.run_id and second.state is S.QUEUED
    # The old run is kept, no longer active; its buttons are refused.
    old = await store.load(V, first.run_id)
    assert old is not None and old.state is settled and not old.active
    assert not await store.set_status_message(V, first.run_id, "C1", "1.2")
    refused = await store.record_build_digest(V, first.run_id, "runtime", ARM, digest("c"), 9)
    assert refused.status == "refused"
    if settled is S.BLOCKED:
        assert not await store.transition(V, first.run_id, [S.BLOCKED], S.CANCELLED)
    assert await store.run_ids(V) == [first.run_id, second.run_id]


@pytest.mark.parametrize("live", [S.QUEUED, S.BUILDING, S.VERIFYING, S.READY, S.APPROVED])
async def test_a_live_run_is_not_replaced(store: ReleaseStore, live: State) -> None:
    first, _ = await create(store)
    order = [S.BUILDING, S.MERGING, S.VERIFYING, S.READY, S.APPROVED]
    await advance(store, first, *order[: order.index(live) + 1] if live is not S.QUEUED else [])
    again, created = await create(store)
    assert not created and again.run_id == first.run_id and again.state is live


async def test_transition_is_compare_and_set(store: ReleaseStore) -> None:
    run, _ = await create(store)
    assert not await store.transition(V, run.run_id, [S.BUILDING], S.MERGING)  # it is queued
    assert await store.transition(V, run.run_id, [S.QUEUED], S.BUILDING)
    results = await asyncio.gather(
        *(store.transition(V, run.run_id, [S.BUILDING], S.MERGING) for _ in range(30))
    )
    assert results.count(True) == 1
    with pytest.raises(InvalidTransition):
        await store.transition(V, run.run_id, [S.MERGING], S.PROMOTED)
    assert not await store.transition(V, "0" * 16, [S.MERGING], S.VERIFYING)  # unknown run
    loaded = await store.load(V)
    assert loaded is not None and loaded.state is S.MERGING


async def test_apply_moves_by_event_and_audits_the_actor(store: ReleaseStore) -> None:
    run, _ = await create(store)
    assert await store.apply(V, run.run_id, Event.CANCEL, actor="U9", reason="wrong tag")
    assert not await store.apply(V, run.run_id, Event.START)
    loaded = await store.load(V)
    assert loaded is not None and loaded.state is S.CANCELLED
    assert loaded.state_reason == "wrong tag"
    [latest, *_] = await store.audit_entries()
    assert (latest["actor"], latest["action"], latest["detail"]) == ("U9", "cancelled", "wrong tag")


async def test_build_digest_is_recorded_once(store: ReleaseStore) -> None:
    run, _ = await create(store)
    first = await store.record_build_digest(V, run.run_id, "runtime", ARM, digest("a"), 1)
    again = await store.record_build_digest(V, run.run_id, "runtime", ARM, digest("a"), 2)
    other = await store.record_build_digest(V, run.run_id, "runtime", ARM, digest("b"), 2)
    assert (first.status, again.status, other.status) == ("recorded", "already", "conflict")
    assert other.digest == digest("a")
    loaded = await store.load(V)
    assert loaded is not None
    record = loaded.build("runtime", ARM)
    assert (record.state, record.digest, record.attempt) == (B.PUSHED, digest("a"), 1)
    # A pushed build cannot be moved back by a late worker.
    assert not await store.update_build(V, run.run_id, "runtime", ARM, B.BUILDING, attempt=3)
    with pytest.raises(ValueError, match="not a digest"):
        await store.record_build_digest(V, run.run_id, "runtime", ARM, "sha256:short", 1)


async def test_build_progress_keeps_the_last_log_lines(store: ReleaseStore) -> None:
    run, _ = await create(store)
    assert await store.update_build(
        V, run.run_id, "runtime", AMD, B.BUILDING, attempt=1, log_lines=["#1", "#2"]
    )
    assert await store.update_build(
        V,
        run.run_id,
        "runtime",
        AMD,
        B.FAILED,
        error="exit code 1",
        log_lines=["#3", "#4 ERROR: failed to solve"],
    )
    loaded = await store.load(V)
    assert loaded is not None
    record = loaded.build("runtime", AMD)
    assert (record.state, record.attempt, record.error) == (B.FAILED, 1, "exit code 1")
    assert record.log_tail == ("#2", "#3", "#4 ERROR: failed to solve")  # log_lines=3
    assert await store.update_build(V, run.run_id, "runtime", AMD, B.BUILDING, attempt=2)
    assert await store.update_build(V, run.run_id, "runtime", AMD, B.CANCELLED)
    assert not await store.update_build(V, run.run_id, "runtime", AMD, B.BUILDING, attempt=3)
    assert not await store.update_build(V, run.run_id, "nope", AMD, B.BUILDING)


async def test_a_settled_run_takes_no_more_builds(store: ReleaseStore) -> None:
    run, _ = await create(store)
    await advance(store, run, S.CANCELLED)
    refused = await store.record_build_digest(V, run.run_id, "runtime", ARM, digest("a"), 1)
    assert refused.status == "refused"
    assert not await store.update_build(V, run.run_id, "runtime", ARM, B.BUILDING)
    assert not await store.try_claim_merge(V, run.run_id, "runtime")


async def test_exactly_one_of_fifty_racing_workers_claims_the_merge(store: ReleaseStore) -> None:
    run, _ = await create(store)
    await store.record_build_digest(V, run.run_id, "runtime", AMD, digest("a"), 1)
    assert not await store.all_platforms_built(V, run.run_id, "runtime")
    assert not await store.try_claim_merge(V, run.run_id, "runtime", claimer="early")
    await store.record_build_digest(V, run.run_id, "runtime", ARM, digest("b"), 1)
    assert await store.all_platforms_built(V, run.run_id, "runtime")
    assert not await store.all_platforms_built(V, run.run_id, "gateway-plugins")

    results = await asyncio.gather(
        *(store.try_claim_merge(V, run.run_id, "runtime", claimer=f"job{n}") for n in range(50))
    )
    assert results.count(True) == 1
    winner = f"job{results.index(True)}"
    # The winner's redelivered job still holds the claim; nobody else ever gets it.
    assert await store.try_claim_merge(V, run.run_id, "runtime", claimer=winner)
    assert not await store.try_claim_merge(V, run.run_id, "runtime", claimer="job-late")
    assert not await store.try_claim_merge(V, run.run_id, "runtime")
    claims = [e for e in await store.events() if e.type == "merge_claimed"]
    assert [(e.fields["component"], e.fields["claimer"]) for e in claims] == [("runtime", winner)]
    loaded = await store.load(V)
    assert loaded is not None and loaded.merges_claimed == {"runtime"}
    assert loaded.built_digests("runtime") == {AMD: digest("a"), ARM: digest("b")}


async def test_anonymous_claims_succeed_once(store: ReleaseStore) -> None:
    run, _ = await create(store)
    await push_all(store, run, "gateway-plugins")
    results = await asyncio.gather(
        *(store.try_claim_merge(V, run.run_id, "gateway-plugins") for _ in range(50))
    )
    assert results.count(True) == 1


async def test_approval_is_bound_to_the_verified_digests(store: ReleaseStore) -> None:
    run, _ = await create(store)
    verified = {"runtime": digest("1"), "gateway-plugins": digest("2")}
    refused = await store.add_approval(V, run.run_id, "U2", verified)
    assert not refused.accepted and "queued, not ready" in refused.reason
    await advance(store, run, S.BUILDING, S.MERGING, S.VERIFYING)
    for component, index in verified.items():
        assert await store.record_index(V, run.run_id, component, index, "ok", "2/2 platforms")
    await store.transition(V, run.run_id, [S.VERIFYING], S.READY)

    moved = {**verified, "runtime": digest("9")}
    result = await store.add_approval(V, run.run_id, "U2", moved)
    assert not result.accepted and "runtime is not the verified one" in result.reason
    partial = await store.add_approval(V, run.run_id, "U2", {"runtime": digest("1")})
    assert not partial.accepted and "every component" in partial.reason

    assert await store.add_approval(V, run.run_id, "U2", verified) == (
        await store.add_approval(V, run.run_id, "U2", verified)  # clicking twice counts once
    )
    second = await store.add_approval(V, run.run_id, "U3", verified)
    assert second.accepted and second.approvals == 2
    loaded = await store.load(V)
    assert loaded is not None
    assert set(loaded.approvals) == {"U2", "U3"}
    assert loaded.approvals["U2"].digests == verified and loaded.approvals["U2"].at > 0
    assert loaded.indexes["runtime"].digest == digest("1")
    assert loaded.indexes["runtime"].verdict == "ok"
    actions = [(e["actor"], e["action"]) for e in await store.audit_entries()]
    assert actions.count(("U2", "approved")) == 2 and ("U3", "approved") in actions


async def test_promotion_results_and_status_message(store: ReleaseStore) -> None:
    run, _ = await create(store)
    assert await store.set_status_message(V, run.run_id, "C1", "1700000000.000100")
    assert not await store.record_promotion(
        V, run.run_id, "aibrix/runtime:v0.3.0", ok=True, digest=digest("1")
    )  # not promoting yet
    await advance(store, run, S.BUILDING, S.MERGING, S.VERIFYING, S.READY, S.APPROVED, S.PROMOTING)
    assert await store.record_promotion(
        V, run.run_id, "aibrix/runtime:v0.3.0", ok=True, digest=digest("1")
    )
    assert await store.record_promotion(
        V, run.run_id, "mirror/runtime:v0.3.0", ok=False, digest=digest("1"), detail="401"
    )
    loaded = await store.load(V)
    assert loaded is not None
    assert (loaded.status_channel, loaded.status_ts) == ("C1", "1700000000.000100")
    assert loaded.promotions["aibrix/runtime:v0.3.0"].ok
    assert loaded.promotions["mirror/runtime:v0.3.0"].detail == "401"


async def test_every_change_is_an_event_in_order(store: ReleaseStore) -> None:
    run, _ = await create(store)
    await store.transition(V, run.run_id, [S.QUEUED], S.BUILDING)
    await store.update_build(V, run.run_id, "runtime", ARM, B.BUILDING, attempt=1)
    await store.record_build_digest(V, run.run_id, "runtime", ARM, digest("a"), 1)
    await store.record_build_digest(V, run.run_id, "runtime", ARM, digest("a"), 1)  # no change
    events = await store.events()
    assert [e.type for e in events] == ["created", "state", "build", "build"]
    assert {(e.version, e.run_id) for e in events} == {(V, run.run_id)}
    assert events[1].fields["from"] == "queued" and events[1].fields["state"] == "building"
    assert events[3].fields["digest"] == digest("a")
    assert await store.events(after=events[-1].id) == []


async def test_nothing_lives_only_in_process_memory(
    store: ReleaseStore, redis_url: str, key_prefix: str
) -> None:
    run, _ = await create(store)
    await store.transition(V, run.run_id, [S.QUEUED], S.BUILDING)
    await push_all(store, run, "runtime")
    assert await store.try_claim_merge(V, run.run_id, "runtime", claimer="j1")
    before = await store.load(V)

    client = await connect(RedisSettings.from_dsn(redis_url, key_prefix=key_prefix))
    try:
        fresh = ReleaseStore(client, Keys(key_prefix))
        assert await fresh.load(V) == before
        assert not await fresh.try_claim_merge(V, run.run_id, "runtime", claimer="j2")
        again, created = await fresh.create_or_get(V, "U5", "C1", PLATFORMS, COMPONENTS, "x")
        assert not created and again.run_id == run.run_id
    finally:
        await client.aclose()


async def test_list_releases_newest_first(store: ReleaseStore) -> None:
    assert await store.list_releases() == []
    await create(store, "v1.0.0")
    await create(store, "v1.1.0")
    assert [str(r.version) for r in await store.list_releases()] == ["v1.1.0", "v1.0.0"]
    assert await store.load("v9.9.9") is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("bad version", "U1", "C1", PLATFORMS, COMPONENTS, "r"), "release version"),
        ((V, "U1", "C1", ("linux/aarch64",), COMPONENTS, "r"), "must be written linux/arm64"),
        ((V, "U1", "C1", (ARM, ARM), COMPONENTS, "r"), "without repeats"),
        ((V, "U1", "C1", PLATFORMS, (), "r"), "non-empty"),
        ((V, "U1", "C1", PLATFORMS, ("Runtime@x",), "r"), "component name"),
        ((V, "", "C1", PLATFORMS, COMPONENTS, "r"), "requested_by"),
        ((V, "U1", "C1", PLATFORMS, COMPONENTS, " "), "source_ref"),
    ],
)
async def test_create_validates_its_input(
    store: ReleaseStore,
    args: tuple[str, str, str, tuple[str, ...], tuple[str, ...], str],
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        await store.create_or_get(*args)


# A record read back is typed; text this code never writes is refused, not passed on.


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("version", "v1.0", "record's version is not one"),
        ("platforms", '["linux/aarch64"]', "must be written linux/arm64"),
        ("platforms", '["linux"]', "is not a platform"),
        ("platforms", '"linux/amd64"', "not a list"),
    ],
)
async def test_a_malformed_run_record_is_refused_on_load(
    store: ReleaseStore, redis: aioredis.Redis, key_prefix: str, name: str, value: str, message: str
) -> None:
    run, _ = await create(store)
    await overwrite_run_field(redis, Keys(key_prefix), V, run.run_id, name, value)
    with pytest.raises(RecordFormatError, match=message):
        await store.load(V)


async def test_a_build_record_under_a_misspelt_platform_is_refused_on_load(
    store: ReleaseStore, redis: aioredis.Redis, key_prefix: str
) -> None:
    run, _ = await create(store)
    record = '{"state": "queued", "attempt": 0, "error": ""}'
    await add_build_field(redis, Keys(key_prefix), V, run.run_id, "runtime@linux/x86_64", record)
    with pytest.raises(RecordFormatError, match="must be written linux/amd64"):
        await store.load(V)


async def test_a_loaded_run_carries_typed_values(store: ReleaseStore) -> None:
    await create(store)
    loaded = await store.load(V)
    assert loaded is not None
    assert loaded.version == parse_version(V)
    assert loaded.platforms == (AMD, ARM)
    assert all(isinstance(p, Platform) for (_, p) in loaded.builds)
