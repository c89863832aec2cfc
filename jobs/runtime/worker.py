"""`aibrix-bot worker --platform P`: builds for one platform, and merges.

A worker refuses to start unless its Buildx builder can build its platform. It claims
build jobs from its platform's stream (and merge jobs from the control stream), keeps
each lease alive while a long build runs, stops a build whose release was cancelled,
checks through the registry that what it pushed really is its platform, records the
digest once, and lets the pipeline's fan-in enqueue the merge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from redis.exceptions import RedisError

from jobs.domain import messages
from jobs.domain.config import ConfigError
from jobs.domain.errors import Failed
from jobs.domain.platforms import Platform
from jobs.domain.references import parse_reference
from jobs.domain.release import State
from jobs.registry.client import RegistryClient, RegistryError, RegistrySettings
from jobs.registry.inspection import inspect_reference
from jobs.runtime.logs import job_context
from jobs.runtime.metrics import WorkerMetrics, serve_metrics
from jobs.store.queue import Job, JobKind, Lease, Queue
from jobs.tools.build import (
    BuildCancelled,
    BuilderInfo,
    BuildError,
    BuildRequest,
    Progress,
    check_builder,
    run_build,
)
from jobs.tools.merge import MergeError
from jobs.tools.source import SourceError, checkout
from jobs.usecases.pipeline import Pipeline

log = logging.getLogger("aibrix.worker")

# The reason `_keep_lease` stops a job with (a cancel stops it with another).
LEASE_LOST = "the lease was lost"
SETTLED_STATES = (State.CANCELLED, State.FAILED, State.PROMOTED, State.BLOCKED)


@dataclass(frozen=True)
class WorkerSettings:
    platform: Platform
    worker_id: str = field(default_factory=socket.gethostname)
    builder: str | None = None
    concurrency: int = 1
    control: bool = True
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = 9464
    workdir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "aibrix-worker")
    block_ms: int = 1000
    # How often a running build asks whether its release was cancelled (issue 16, item 5).
    cancel_poll_s: float = 0.25

    def consumer(self, slot: int) -> str:
        return f"{self.worker_id}:{self.platform}:{slot}"

    @property
    def control_consumer(self) -> str:
        return f"{self.worker_id}:control@{self.platform}"


class _Stopper:
    """Thread-safe flag a running build polls (release cancelled, or lease lost)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def stop(self, reason: str) -> None:
        self.reason = reason
        self._event.set()

    def __call__(self) -> bool:
        return self._event.is_set()


class Worker:
    """Runs jobs: claims them from `queue` and leaves each effect to a named operation of
    `pipeline` (record a build, claim the merge, merge, promote, sync). The entry point
    hands it the same queue the pipeline enqueues on (`jobs.usecases.pipeline.job_queue`)."""

    def __init__(
        self,
        pipeline: Pipeline,
        queue: Queue,
        settings: WorkerSettings,
        registry: RegistrySettings,
    ) -> None:
        self.pipeline = pipeline
        self.queue = queue
        self.settings = settings
        self.registry_settings = registry
        self.metrics = WorkerMetrics()
        self.builder: BuilderInfo | None = None

    @property
    def build_stream(self) -> str:
        return self.queue.platform_stream(self.settings.platform)

    async def check(self) -> BuilderInfo:
        """Refuse to start, with the reason, when the builder cannot build the platform."""
        self.builder = await asyncio.to_thread(
            check_builder, self.settings.builder, self.settings.platform
        )
        return self.builder

    async def run(self, stop: asyncio.Event) -> None:
        await self.check()
        await self._ensure_groups(stop)
        runner = None
        if self.settings.metrics_port is not None:
            runner = await serve_metrics(
                self.metrics, self.settings.metrics_host, self.settings.metrics_port
            )
        log.info("worker %s started for %s", self.settings.worker_id, self.settings.platform)
        async with RegistryClient(self.registry_settings) as client:
            loops = [
                self._loop(self.build_stream, self.settings.consumer(slot), stop, client)
                for slot in range(self.settings.concurrency)
            ]
            if self.settings.control:
                loops.append(
                    self._loop(
                        self.queue.platform_stream(None),
                        self.settings.control_consumer,
                        stop,
                        client,
                    )
                )
            loops.append(self._watch_depth(stop))
            try:
                await asyncio.gather(*loops)
            finally:
                if runner is not None:
                    await runner.cleanup()

    async def _ensure_groups(self, stop: asyncio.Event) -> None:
        """Create the consumer groups, waiting out a Redis that is restarting."""
        while not stop.is_set():
            try:
                await self.queue.ensure_group(self.build_stream)
                await self.queue.ensure_group(self.queue.platform_stream(None))
                return
            except RedisError as error:
                log.warning("Redis unavailable at start (%s); retrying", type(error).__name__)
                await asyncio.sleep(1)

    async def _watch_depth(self, stop: asyncio.Event) -> None:
        streams = {"build": self.build_stream, "control": self.queue.platform_stream(None)}
        while not stop.is_set():
            with contextlib.suppress(RedisError):
                for kind, stream in streams.items():
                    depth = await self.queue.depth(stream)
                    self.metrics.queue_depth.labels(stream=stream, kind=kind).set(depth.total)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=5)

    async def _loop(
        self, stream: str, consumer: str, stop: asyncio.Event, client: RegistryClient
    ) -> None:
        while not stop.is_set():
            try:
                leases = await self.queue.claim(stream, consumer, 1, self.settings.block_ms)
            except RedisError as error:
                # Redis restarting: what was claimed stays in its pending list and is
                # reclaimed after the lease, so waiting and claiming again loses nothing.
                log.warning("Redis unavailable (%s); retrying", type(error).__name__)
                await asyncio.sleep(1)
                continue
            for lease in leases:
                if lease.reclaimed:
                    self.metrics.reclaimed.labels(stream=stream).inc()
                job = lease.job
                with job_context(str(job.version), job.component, str(job.platform or "")):
                    try:
                        await self.handle(lease, client)
                    except RedisError as error:
                        log.warning(
                            "Redis failed during job %s (%s); it will be reclaimed",
                            job.id,
                            type(error).__name__,
                        )
                        await asyncio.sleep(1)
                    except Exception as error:  # one bad job must not stop the worker
                        log.exception("job %s failed unexpectedly", job.id)
                        await self._fail(lease, f"{type(error).__name__}: {error}", ())

    async def handle(self, lease: Lease, client: RegistryClient) -> None:
        job = lease.job
        if job.kind is JobKind.SYNC:
            # A sync copies a settled (promoted) run: not dropped like its other jobs.
            await self._sync(lease, client)
            return
        release = await self.pipeline.find_run(job.version, job.run_id)
        if release is None or not release.active or release.state in SETTLED_STATES:
            log.info("job %s belongs to a superseded or settled run; dropped", job.id)
            await self.queue.ack(lease)
            return
        if job.kind is JobKind.BUILD:
            await self._build(lease, client)
        elif job.kind is JobKind.MERGE:
            await self._merge(lease, client)
        elif job.kind is JobKind.PROMOTE:
            await self.pipeline.promote(job, client)
            await self.queue.ack(lease)
        else:
            await self._fail(lease, f"this worker does not run {job.kind.value} jobs yet", ())

    # -- builds

    async def _build(self, lease: Lease, client: RegistryClient) -> None:
        job = lease.job
        pipeline = self.pipeline
        assert job.platform is not None
        done = await self.queue.done_result(job.idempotency_key)
        if done:
            # A redelivery of a build whose effect is recorded: do not build or push again.
            log.info("build already done (%s); not building again", done)
            await self._record(lease, done)
            return
        if not await pipeline.start_build(job):
            pushed = await pipeline.pushed_digest(job)
            if pushed is not None:
                await self._record(lease, pushed)
            else:
                await self.queue.ack(lease)
            return
        stopper = _Stopper()
        keeper = asyncio.create_task(self._keep_lease(lease, stopper))
        started = time.monotonic()
        tail: tuple[str, ...] = ()
        try:
            digest, tail = await self._run_build(job, stopper)
            await self._verify_pushed(client, job, digest)
        except BuildCancelled:
            keeper.cancel()
            await pipeline.build_cancelled(job)
            await self.queue.ack(lease)
            self.metrics.builds.labels(platform=str(job.platform), outcome="cancelled").inc()
            return
        except (BuildError, SourceError, ConfigError, RegistryError, VerifyError) as error:
            keeper.cancel()
            tail = getattr(error, "log_tail", tail)
            self.metrics.builds.labels(platform=str(job.platform), outcome="failed").inc()
            await self._fail(lease, str(error), tail)
            return
        finally:
            keeper.cancel()
        label = str(job.platform)
        self.metrics.build_seconds.labels(platform=label).observe(time.monotonic() - started)
        self.metrics.builds.labels(platform=label, outcome="pushed").inc()
        await self._record(lease, digest)

    async def _run_build(self, job: Job, stopper: _Stopper) -> tuple[str, tuple[str, ...]]:
        pipeline = self.pipeline
        config = pipeline.config
        assert job.platform is not None
        platform, version = job.platform, job.version
        work = await asyncio.to_thread(
            checkout, config.source, version, job.source_revision, self.settings.workdir
        )
        try:
            # The component's layout for this version (its Dockerfile moved in v0.5.0).
            at_version = config.at(version)
            paths = at_version.build_paths(job.component, work.root)
            component = at_version.component(job.component)
            self.settings.workdir.mkdir(parents=True, exist_ok=True)
            meta_dir = Path(tempfile.mkdtemp(prefix="aibrix-meta-", dir=self.settings.workdir))
            request = BuildRequest(
                context=paths.context,
                dockerfile=paths.dockerfile,
                platform=platform,
                image=config.image(job.component),
                staging_tag=config.staging_tag_for(version, platform),
                metadata_file=meta_dir / "metadata.json",
                build_args=dict(component.build_args),
                target=component.target,
                builder=self.settings.builder,
                push_by_digest=bool(self.builder and self.builder.can_push_by_digest),
                base_images=config.base_images,
            )
            loop = asyncio.get_running_loop()
            last: list[Progress] = []

            def on_progress(progress: Progress) -> None:
                if last and last[-1] == progress:
                    return  # coalesce: the notifier needs changes, not every log line
                last.append(progress)
                asyncio.run_coroutine_threadsafe(
                    pipeline.progress(job, progress.phase, progress.step, progress.total), loop
                )

            watcher = asyncio.create_task(self._watch_cancel(job, stopper))
            try:
                result = await asyncio.to_thread(run_build, request, on_progress, stopper)
            finally:
                watcher.cancel()
            shutil.rmtree(meta_dir, ignore_errors=True)
            log.info("pushed %s", result.pushed_as)
            await pipeline.progress(job, "pushed")
            return result.digest, result.log_tail
        finally:
            await asyncio.to_thread(work.remove)

    async def _watch_cancel(self, job: Job, stopper: _Stopper) -> None:
        while not stopper():
            if await self.queue.is_cancelled(job.version, job.run_id):
                stopper.stop("the release was cancelled")
                return
            await asyncio.sleep(self.settings.cancel_poll_s)

    async def _keep_lease(self, lease: Lease, stopper: _Stopper) -> None:
        """Renew the lease while a build runs; stop the build if the lease is lost."""
        interval = max(0.1, self.queue.settings.lease_ms / 3000)
        while True:
            await asyncio.sleep(interval)
            if not await self.queue.renew(lease):
                log.warning("lease lost to another worker; stopping this build")
                stopper.stop("the lease was lost")
                return

    async def _verify_pushed(self, client: RegistryClient, job: Job, digest: str) -> None:
        """The pushed image's config must really be this worker's platform."""
        assert job.platform is not None
        platform = job.platform
        image = self.pipeline.config.image(job.component)
        inspection = await inspect_reference(
            client, parse_reference(f"{image}@{digest}"), [platform]
        )
        verdict = inspection.verdict
        if inspection.verdict.is_index or not verdict.ok:
            detail = (
                "; ".join(messages.verdict_problems(f"{image}@{digest}", verdict)) or "an index"
            )
            raise VerifyError(messages.pushed_platform_wrong(image, str(platform), detail))

    async def _record(self, lease: Lease, digest: str) -> None:
        job = lease.job
        pipeline = self.pipeline
        recorded = await pipeline.record_build(job, digest)
        if recorded.status == "conflict":
            log.warning("a different digest %s is already recorded; keeping it", recorded.digest)
        await self.queue.ack(lease, result=recorded.digest or digest)
        await pipeline.after_build(job.version, job.run_id, job.component, claimer=job.id)

    async def _fail(self, lease: Lease, reason: str, tail: tuple[str, ...]) -> str:
        """Fail the attempt (retried with backoff, or dead-lettered); the queue's outcome."""
        job = lease.job
        pipeline = self.pipeline
        await pipeline.attempt_failed(job, reason, tail)
        outcome = await self.queue.fail(lease, reason)
        log.warning("attempt %d failed (%s): %s", job.attempt, outcome.status, reason)
        if outcome.status == "dead":
            self.metrics.dead_lettered.labels(stream=lease.stream).inc()
        return outcome.status

    # -- syncs to mirrors

    async def _sync(self, lease: Lease, client: RegistryClient) -> None:
        """Run a sync job while keeping its lease; if the lease is lost (this worker
        stalled), stop: the worker that reclaimed it carries on from what is there."""
        stopper = _Stopper()
        work = asyncio.create_task(
            self.pipeline.run_sync(
                lease.job,
                client,
                deliveries=lease.deliveries,
                reclaimed=lease.reclaimed,
                worker=self.settings.control_consumer,
            )
        )
        keeper = asyncio.create_task(self._keep_lease(lease, stopper))
        keeper.add_done_callback(lambda _: work.cancel() if stopper() else None)
        try:
            await work
        except asyncio.CancelledError:
            if work.cancelled() and stopper():
                log.warning("sync %s: lease lost; the worker holding it now goes on", lease.job.id)
                return
            raise
        except Exception as error:  # retried by the queue; once dead, the sync says so
            log.exception("sync %s failed unexpectedly", lease.job.id)
            reason = f"{type(error).__name__}: {error}"
            if await self._fail(lease, reason, ()) == "dead":
                await self.pipeline.fail_sync(lease.job, reason)
            return
        finally:
            keeper.cancel()
        await self.queue.ack(lease)  # no done record: a later request may sync again

    # -- merges

    async def _merge(self, lease: Lease, client: RegistryClient) -> None:
        """Merge, riding out registry faults for the configured budget while the lease is
        kept (a merge may now take minutes); a merge that ran out of it was recorded
        unmerged with the reason (the run blocks), so the job is done either way."""
        started = time.monotonic()
        stopper = _Stopper()
        keeper = asyncio.create_task(self._keep_lease(lease, stopper))
        # A cancel ends the retries (not a write under way): the cancel waits for this job.
        watcher = asyncio.create_task(self._watch_cancel(lease.job, stopper))
        try:
            digest = await self.pipeline.merge_patiently(lease.job, client, stopped=stopper)
        except (MergeError, RegistryError) as error:
            await self._fail(lease, str(error), ())
            return
        finally:
            keeper.cancel()
            watcher.cancel()
        if stopper() and stopper.reason == LEASE_LOST:
            return  # the worker holding the lease now carries on
        self.metrics.merge_seconds.observe(time.monotonic() - started)
        await self.queue.ack(lease, result=digest)


class VerifyError(Failed):
    pass
