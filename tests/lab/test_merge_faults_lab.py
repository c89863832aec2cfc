"""A merge rides out a flaky registry (issue 16, item 4): a seeded fault proxy in front of
the lab registry fails about one request in five during a release's merge and the release
still ends `ready`; one that fails every request leaves the release `blocked` with the
reason (not `failed`), and `retry` merges it once the registry is healthy, rebuilding
nothing. A real worker (in this process) runs the merge with `imagetools create`; the
per-platform images are pushed by the test, as a build would have pushed them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from jobs.domain.config import Config
from jobs.domain.config_reader import load_config
from jobs.domain.platforms import parse_platform
from jobs.domain.release import Release, State
from jobs.registry.client import RegistrySettings
from jobs.runtime.worker import Worker, WorkerSettings
from jobs.store.connections import RedisSettings, connect
from jobs.store.queue import Job, JobKind, Queue
from jobs.usecases.pipeline import Pipeline, job_queue, plan_release
from tests.conftest import Lab
from tests.support.netproxy import FaultProxy
from tests.support.oci_push import OciPusher
from tests.support.pipeline import SAMPLE

AMD64, ARM64 = parse_platform("linux/amd64"), parse_platform("linux/arm64")
COMPONENT = "controller-manager"


class SeededFaults:
    """A FaultProxy rule: each request fails with 503 with probability `rate` (seeded),
    or every request while `down`. Counts what it let through and what it failed."""

    def __init__(self, seed: int, rate: float) -> None:
        self.rng = random.Random(seed)
        self.rate = rate
        self.down = False
        self.failed: Counter[tuple[str, str]] = Counter()
        self.passed: Counter[tuple[str, str]] = Counter()

    def __call__(self, method: str, path: str, seen: int) -> int | None:
        key = (method, path.split("?")[0])
        if self.down or self.rng.random() < self.rate:
            self.failed[key] += 1
            return 503
        self.passed[key] += 1
        return None

    def tag_puts(self, version: str) -> tuple[int, int]:
        """(failed, passed) PUTs of the release tag's manifest."""
        hit = [k for k in self.failed | self.passed if k[0] == "PUT" and k[1].endswith(version)]
        return sum(self.failed[k] for k in hit), sum(self.passed[k] for k in hit)


def config_text(lab: Lab, registry: str, namespace: str, key_prefix: str, budget: int) -> str:
    return f"""repository = "{registry}/{namespace}"
platforms = ["linux/amd64", "linux/arm64"]
check_binaries = false
[source]
path = "{SAMPLE}"
[approval]
approvers = ["U0APPROVER1"]
[permissions]
channels = ["C0RELEASES"]
[registry]
merge_retry_seconds = {budget}
[queue]
max_attempts = 1
lease_seconds = 4
key_prefix = "{key_prefix}"
[[components]]
name = "{COMPONENT}"
dockerfile = "build/container/Dockerfile"
"""


@dataclass
class Rig:
    pipeline: Pipeline
    queue: Queue
    config: Config
    redis: aioredis.Redis


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


async def push_platform_images(lab: Lab, repo: str) -> dict[str, str]:
    """One image per platform, pushed by digest straight to the lab registry (as a build
    pushes its staging image)."""
    pusher = OciPusher(lab.registry)
    async with aiohttp.ClientSession() as session:
        amd = await pusher.image(session, repo, os="linux", arch="amd64", payload=repo.encode())
        arm = await pusher.image(session, repo, os="linux", arch="arm64", payload=repo.encode())
    return {"linux/amd64": amd.digest, "linux/arm64": arm.digest}


async def start_release(rig: Rig, version: str, digests: dict[str, str]) -> Release:
    """Request the release and record both builds as a worker does once it has pushed:
    the fan-in then enqueues the one merge."""
    plan = plan_release(rig.config, version)
    release, _ = await rig.pipeline.request_release(plan, "cli:tester")
    for platform in (AMD64, ARM64):
        job = Job(
            JobKind.BUILD,
            release.version,
            COMPONENT,
            release.source_ref,
            platform=platform,
            run_id=release.run_id,
        )
        await rig.pipeline.start_build(job)
        await rig.pipeline.record_build(job, digests[str(platform)])
    await rig.pipeline.after_build(release.version, release.run_id, COMPONENT, claimer="test")
    return release


async def settled(rig: Rig, version: str, timeout: float = 240) -> Release:
    settled_states = (State.READY, State.BLOCKED, State.FAILED, State.CANCELLED)
    async with asyncio.timeout(timeout):
        while True:
            found = await rig.pipeline.find_run(version)
            if found is not None and found.state in settled_states:
                return found
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def running_worker(rig: Rig) -> AsyncIterator[None]:
    """A real worker for linux/amd64 with its control loop (which runs merges)."""
    settings = WorkerSettings(
        platform=AMD64,
        worker_id=f"mf-{uuid.uuid4().hex[:6]}",
        metrics_port=None,
        block_ms=200,
    )
    worker = Worker(rig.pipeline, rig.queue, settings, RegistrySettings())
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


@contextlib.asynccontextmanager
async def merge_rig(
    lab: Lab, redis: aioredis.Redis, tmp_path: Path, key_prefix: str, budget: int
) -> AsyncIterator[tuple[Rig, SeededFaults, str]]:
    """A fault proxy in front of the lab registry (faults off until the test turns them
    on), and a pipeline whose repository is reached through it."""
    seed = int(os.environ.get("AIBRIX_FAULT_SEED") or 16)
    print(f"fault seed: {seed} (replay with AIBRIX_FAULT_SEED={seed})")
    faults = SeededFaults(seed, rate=0.0)
    async with FaultProxy(lab.registry, faults) as proxy:
        namespace = f"mergefaults-{uuid.uuid4().hex[:8]}"
        path = tmp_path / "aibrix.toml"
        path.write_text(config_text(lab, proxy.address, namespace, key_prefix, budget))
        config = load_config(path)
        queue = job_queue(redis, config)
        yield Rig(Pipeline(redis, config, queue), queue, config, redis), faults, namespace


async def test_a_registry_failing_one_request_in_five_delays_the_merge(
    lab: Lab, docker_available: None, redis: aioredis.Redis, tmp_path: Path, key_prefix: str
) -> None:
    async with merge_rig(lab, redis, tmp_path, key_prefix, budget=120) as (rig, faults, ns):
        digests = await push_platform_images(lab, f"{ns}/{COMPONENT}")
        release = await start_release(rig, "v1.0.0", digests)
        faults.rate = 0.2
        started = time.monotonic()
        async with running_worker(rig):
            final = await settled(rig, "v1.0.0")
        took = time.monotonic() - started
        faults.rate = 0.0
        failed_puts, puts = faults.tag_puts("v1.0.0")
        print(
            f"merge under 1-in-5 faults: {final.state.value} in {took:.1f} s; "
            f"{sum(faults.failed.values())} requests failed, {sum(faults.passed.values())} "
            f"passed; release tag PUTs: {failed_puts} failed, {puts} passed"
        )
    assert final.run_id == release.run_id
    assert final.state is State.READY, final.state_reason
    assert final.indexes[COMPONENT].verdict == "ok"
    assert sum(faults.failed.values()) > 0  # the faults really were met
    assert puts >= 1


async def test_a_registry_that_keeps_failing_blocks_and_retry_merges_later(
    lab: Lab, docker_available: None, redis: aioredis.Redis, tmp_path: Path, key_prefix: str
) -> None:
    async with merge_rig(lab, redis, tmp_path, key_prefix, budget=5) as (rig, faults, ns):
        digests = await push_platform_images(lab, f"{ns}/{COMPONENT}")
        first = await start_release(rig, "v1.0.0", digests)
        faults.down = True
        async with running_worker(rig):
            blocked = await settled(rig, "v1.0.0")
            assert blocked.state is State.BLOCKED, (blocked.state, blocked.state_reason)
            assert f"{COMPONENT} v1.0.0 was not merged: the registry kept failing" in (
                blocked.state_reason
            )
            assert "retry the release once the registry is healthy" in blocked.state_reason
            faults.down = False
            retried, _ = await rig.pipeline.retry("v1.0.0", "cli:tester")
            assert retried.run_id != first.run_id
            final = await settled(rig, "v1.0.0")
    assert final.run_id == retried.run_id
    assert final.state is State.READY, final.state_reason
    # Nothing was rebuilt: the retry merged the digests the first run recorded.
    assert {str(p): r.digest for (_, p), r in final.builds.items()} == digests
