"""Identical builds run once (issue 13, item 2), on the real lab Redis: a run whose
metadata-service and runtime have the same build inputs (the sample's Dockerfile.python)
enqueues one build per platform for both; a worker's steps on that one job (start,
record, fail, cancel) move both components' records in one atomic step, and the fan-in
claims both merges from the same digests; a retry rebuilds the shared build once."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from jobs.domain.builds import BUILD, job_build_id
from jobs.domain.config_reader import load_config
from jobs.domain.platforms import parse_platform
from jobs.domain.release import BuildState, Release, State
from jobs.store.connections import RedisSettings, connect
from jobs.store.queue import Job, JobKind
from jobs.usecases.pipeline import Pipeline, plan_release
from tests.conftest import Lab
from tests.support.bot import CHANNEL, REQUESTER, config_text
from tests.support.records import Records
from tests.support.sample_history import (
    NEW_TAG,
    OLD_TAG,
    lab_addresses,
    make_sample_history,
    sample_config,
)

PLATFORMS = ("linux/amd64", "linux/arm64")
AMD64, ARM64 = (parse_platform(p) for p in PLATFORMS)
DIGESTS = {AMD64: "sha256:" + "a1" * 32, ARM64: "sha256:" + "b2" * 32}
LEAD, FOLLOWER, ALONE = "metadata-service", "runtime", "controller-manager"


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
    """controller-manager, then metadata-service and runtime from one Dockerfile.python."""
    text = config_text(lab, f"shared-{uuid.uuid4().hex[:8]}", key_prefix)
    text = text.replace(
        '[[components]]\nname = "runtime"',
        '[[components]]\nname = "metadata-service"\n'
        'dockerfile = "build/container/Dockerfile.python"\n'
        '[[components]]\nname = "runtime"',
    )
    path = tmp_path / "aibrix.toml"
    path.write_text(text)
    config = load_config(path)
    assert config.component_names == (ALONE, LEAD, FOLLOWER)
    return Pipeline(redis, config)


@pytest.fixture
def records(redis: aioredis.Redis, key_prefix: str) -> Records:
    return Records.on(redis, key_prefix)


async def build_jobs(records: Records, run_id: str) -> list[Job]:
    """The build jobs of the run in the platform streams, as a worker reads them."""
    found = []
    for platform in PLATFORMS:
        for _, fields in await records.jobs(platform):
            job = Job.from_fields(fields)
            if job.run_id == run_id:
                found.append(job)
    return found


async def merge_jobs(records: Records, run_id: str) -> list[str]:
    found = []
    for _, fields in await records.jobs(None):
        doc = json.loads(fields["job"])
        if doc["run_id"] == run_id and doc["kind"] == "merge":
            found.append(doc["component"])
    return sorted(found)


async def start(pipeline: Pipeline, version: str) -> Release:
    release, created = await pipeline.request_release(
        plan_release(pipeline.config, version), REQUESTER, CHANNEL
    )
    assert created
    return release


def without_id(payload: Mapping[str, str]) -> dict[str, str]:
    """A build job's payload but the plan's build id."""
    return {k: v for k, v in payload.items() if k != BUILD}


def shared_job(jobs: list[Job], platform: object) -> Job:
    (job,) = [j for j in jobs if j.component == LEAD and j.platform == platform]
    return job


async def test_the_run_enqueues_one_build_per_build_and_platform(
    pipeline: Pipeline, records: Records
) -> None:
    release = await start(pipeline, "v2.0.0")
    jobs = await build_jobs(records, release.run_id)
    assert sorted((j.component, str(j.platform)) for j in jobs) == sorted(
        (c, p) for c in (ALONE, LEAD) for p in PLATFORMS
    )  # 4 builds for 3 components x 2 platforms, not 6
    for job in jobs:
        assert job.kind is JobKind.BUILD
        # Each job carries the plan's build id (a worker checks its config against it).
        assert job_build_id(job.payload).startswith("build-")
        assert without_id(job.payload) == ({"with": FOLLOWER} if job.component == LEAD else {})
    # Every component keeps its record per platform; runtime's names the build it shares.
    assert set(release.builds) == {(c, p) for c in (ALONE, LEAD, FOLLOWER) for p in (AMD64, ARM64)}
    assert {k: r.built_with for k, r in release.builds.items() if r.built_with} == {
        (FOLLOWER, AMD64): LEAD,
        (FOLLOWER, ARM64): LEAD,
    }


async def test_recording_the_shared_build_records_both_and_claims_both_merges(
    pipeline: Pipeline, records: Records
) -> None:
    release = await start(pipeline, "v2.1.0")
    jobs = await build_jobs(records, release.run_id)
    for platform in (AMD64, ARM64):
        job = shared_job(jobs, platform)
        assert await pipeline.start_build(job)
        running = await records.run("v2.1.0")
        assert running.build(LEAD, platform).state is BuildState.BUILDING
        assert running.build(FOLLOWER, platform).state is BuildState.BUILDING
        recorded = await pipeline.record_build(job, DIGESTS[platform])
        assert (recorded.status, recorded.digest) == ("recorded", DIGESTS[platform])
        # A redelivery of the same job: the same digest is already there for both.
        assert (await pipeline.record_build(job, DIGESTS[platform])).status == "already"
        await pipeline.after_build(job.version, job.run_id, job.component, claimer=job.id)
    built = await records.run("v2.1.0")
    for platform in (AMD64, ARM64):
        for component in (LEAD, FOLLOWER):
            record = built.build(component, platform)
            assert (record.state, record.digest) == (BuildState.PUSHED, DIGESTS[platform])
    assert built.built_digests(LEAD) == built.built_digests(FOLLOWER) == DIGESTS
    assert built.merges_claimed == {LEAD, FOLLOWER}
    assert built.state is State.MERGING
    assert await merge_jobs(records, release.run_id) == [LEAD, FOLLOWER]
    # One pushed event per component and platform, from the one step of each build.
    pushed = [
        (e.fields["component"], e.fields["platform"])
        for e in await records.events()
        if e.type == "build" and e.fields.get("build_state") == "pushed"
    ]
    assert sorted(pushed) == sorted((c, p) for c in (LEAD, FOLLOWER) for p in PLATFORMS)


async def test_a_digest_that_conflicts_for_one_component_records_none(
    pipeline: Pipeline, records: Records
) -> None:
    release = await start(pipeline, "v2.2.0")
    job = shared_job(await build_jobs(records, release.run_id), AMD64)
    other = "sha256:" + "ee" * 32
    # runtime alone already holds another digest (as a stray write would leave it).
    await records.store.record_build_digest("v2.2.0", release.run_id, FOLLOWER, AMD64, other, 1)
    recorded = await pipeline.record_build(job, DIGESTS[AMD64])
    assert (recorded.status, recorded.digest) == ("conflict", other)
    after = await records.run("v2.2.0")
    assert after.build(LEAD, AMD64).state is BuildState.QUEUED
    assert after.build(FOLLOWER, AMD64).digest == other


async def test_a_failed_shared_build_fails_both_with_the_reason_and_a_retry_builds_it_once(
    pipeline: Pipeline, records: Records
) -> None:
    version = "v2.3.0"
    release = await start(pipeline, version)
    jobs = await build_jobs(records, release.run_id)
    for job in jobs:  # every build but the shared one on arm64 pushes
        if job.component == LEAD and job.platform == ARM64:
            continue
        await pipeline.start_build(job)
        assert job.platform is not None
        await pipeline.record_build(job, DIGESTS[job.platform])
        await pipeline.after_build(job.version, job.run_id, job.component, claimer=job.id)
    failing = shared_job(jobs, ARM64)
    assert await pipeline.start_build(failing)
    await pipeline.attempt_failed(failing, "step 3/5 failed: boom", ["#7 ERROR boom"])
    tried = await records.run(version)
    for component in (LEAD, FOLLOWER):
        assert tried.build(component, ARM64).error == "step 3/5 failed: boom"
        assert tried.build(component, ARM64).log_tail == ("#7 ERROR boom",)
    # controller-manager's merge (claimed above) ran: its index is in.
    index = "sha256:" + "c3" * 32
    assert await records.store.record_index(version, release.run_id, ALONE, index, "ok")
    # Out of attempts (what the queue's dead letter calls): both fail, with the reason.
    await pipeline.build_failed(failing, "attempt 3 of 3: step 3/5 failed: boom")
    blocked = await records.run(version)
    assert blocked.state is State.BLOCKED
    for component in (LEAD, FOLLOWER):
        record = blocked.build(component, ARM64)
        assert record.state is BuildState.FAILED
        assert "boom" in record.error
        assert f"{component} {version} failed to build for linux/arm64" in blocked.state_reason
    # The retry rebuilds the shared build once, for both; the pushed amd64 build is reused.
    retried, failed = await pipeline.retry(version, REQUESTER)
    assert failed == 1  # what the retry says it rebuilds: one build, the two records share it
    again = await build_jobs(records, retried.run_id)
    assert [(j.component, str(j.platform), without_id(j.payload)) for j in again] == [
        (LEAD, "linux/arm64", {"with": FOLLOWER})
    ]
    assert retried.build(FOLLOWER, AMD64).digest == DIGESTS[AMD64]
    assert retried.build(FOLLOWER, AMD64).built_with == LEAD
    assert retried.build(FOLLOWER, ARM64).built_with == LEAD


async def test_a_cancelled_shared_build_cancels_both_and_an_older_job_moves_its_own(
    pipeline: Pipeline, records: Records
) -> None:
    """Cancel moves both records. A build job written before sharing existed has no
    payload: it still decodes, and it moves only its own component's record."""
    release = await start(pipeline, "v2.4.0")
    jobs = await build_jobs(records, release.run_id)
    job = shared_job(jobs, AMD64)
    assert await pipeline.start_build(job)
    await pipeline.build_cancelled(job)
    after = await records.run("v2.4.0")
    assert after.build(LEAD, AMD64).state is BuildState.CANCELLED
    assert after.build(FOLLOWER, AMD64).state is BuildState.CANCELLED
    document = shared_job(jobs, ARM64).to_document()
    document["payload"] = {}
    old = Job.from_document(document)
    assert await pipeline.start_build(old)
    assert (await pipeline.record_build(old, DIGESTS[ARM64])).status == "recorded"
    after = await records.run("v2.4.0")
    assert after.build(LEAD, ARM64).state is BuildState.PUSHED
    assert after.build(FOLLOWER, ARM64).state is BuildState.QUEUED


async def test_a_release_of_the_sample_history_enqueues_builds_times_platforms(
    lab: Lab,
    redis: aioredis.Redis,
    records: Records,
    tmp_path: Path,
    key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sample's own config on its generated git history: v0.7.0 (six components,
    metadata-service and runtime one build) is 5 builds x 2 platforms, not 12; v0.4.1 (the
    old layout, five components with Dockerfiles of their own) stays 5 x 2."""
    monkeypatch.setenv("AIBRIX_SOURCE_CACHE", str(tmp_path / "cache"))
    repo = tmp_path / "sample"
    make_sample_history(repo, lab=lab_addresses(lab))
    config = load_config(sample_config(lab, tmp_path, f'git = "{repo}"', key_prefix))
    pipeline = Pipeline(redis, config)
    for tag, components, shared in (
        (NEW_TAG, 6, {"metadata-service": "runtime"}),
        (OLD_TAG, 5, {}),
    ):
        release, _ = await pipeline.request_release(plan_release(config, tag), "cli:tester")
        jobs = await build_jobs(records, release.run_id)
        print(f"\n{tag}: {len(release.components)} components, {len(jobs)} build jobs")
        assert len(release.components) == components
        assert len(jobs) == 10
        assert {j.component: j.payload["with"] for j in jobs if "with" in j.payload} == shared
