"""A release settles `blocked` only once no build of it is still in flight, so its reasons
and its live message list every failure (issue 16, item 6): on the real lab Redis, driving
the pipeline's named operations the worker calls, two builds failing at different times."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from handlers.blocks import release_message
from jobs.domain.config_reader import load_config
from jobs.domain.platforms import Platform, parse_platform
from jobs.domain.release import Release, State
from jobs.store.connections import RedisSettings, connect
from jobs.store.queue import Job, JobKind
from jobs.usecases.pipeline import Pipeline, plan_release
from tests.conftest import Lab
from tests.support.bot import config_text

AMD64, ARM64 = parse_platform("linux/amd64"), parse_platform("linux/arm64")
DIGEST = "sha256:" + "cd" * 32


@pytest.fixture
async def pipeline(
    lab: Lab, redis_url: str, key_prefix: str, tmp_path: Path
) -> AsyncIterator[Pipeline]:
    client: aioredis.Redis = await connect(RedisSettings.from_dsn(redis_url, key_prefix=key_prefix))
    path = tmp_path / "aibrix.toml"
    path.write_text(config_text(lab, f"settle-{uuid.uuid4().hex[:8]}", key_prefix))
    try:
        yield Pipeline(client, load_config(path))
    finally:
        found = await client.keys(f"{key_prefix}*")
        if found:
            await client.delete(*found)
        await client.aclose()


def build_job(release: Release, platform: Platform) -> Job:
    """The build job the run enqueued for controller-manager on `platform`."""
    return Job(
        JobKind.BUILD,
        release.version,
        "controller-manager",
        release.source_ref,
        platform=platform,
        run_id=release.run_id,
    )


def message_text(release: Release) -> str:
    return str(release_message(release).blocks)


async def test_two_builds_failing_at_different_times_both_reasons(pipeline: Pipeline) -> None:
    plan = plan_release(pipeline.config, "v1.0.0", ["controller-manager"])
    release, _ = await pipeline.request_release(plan, "cli:tester")
    amd = build_job(release, AMD64)
    arm = build_job(release, ARM64)
    assert await pipeline.start_build(amd)
    assert await pipeline.start_build(arm)

    await pipeline.build_failed(amd, "step 3/9 failed: first")
    early = await pipeline.load_run(plan.version, release.run_id)
    # arm64 still builds: the run must not settle on the first failure alone.
    assert early.state is State.BUILDING, early.state_reason

    await pipeline.build_failed(arm, "step 5/9 failed: second")
    final = await pipeline.load_run(plan.version, release.run_id)
    assert final.state is State.BLOCKED
    assert "first" in final.state_reason and "second" in final.state_reason
    shown = message_text(final)
    assert "step 3/9 failed: first" in shown and "step 5/9 failed: second" in shown


async def test_a_failed_component_settles_once_its_last_build_pushes(pipeline: Pipeline) -> None:
    plan = plan_release(pipeline.config, "v1.0.1", ["controller-manager"])
    release, _ = await pipeline.request_release(plan, "cli:tester")
    amd = build_job(release, AMD64)
    arm = build_job(release, ARM64)
    assert await pipeline.start_build(amd)
    assert await pipeline.start_build(arm)
    await pipeline.build_failed(amd, "step 3/9 failed: only")
    assert (await pipeline.load_run(plan.version, release.run_id)).state is State.BUILDING
    # The other platform pushes: nothing to merge, and nothing left in flight.
    await pipeline.record_build(arm, DIGEST)
    await pipeline.after_build(plan.version, release.run_id, "controller-manager", claimer="t")
    final = await pipeline.load_run(plan.version, release.run_id)
    assert final.state is State.BLOCKED
    assert "step 3/9 failed: only" in final.state_reason
