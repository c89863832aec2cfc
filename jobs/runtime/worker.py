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
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from jobs.domain import messages
from jobs.domain.builds import build_drift, job_build_id, job_components
from jobs.domain.config import ConfigError
from jobs.domain.errors import Failed
from jobs.domain.platforms import Platform
from jobs.domain.references import parse_reference
from jobs.domain.release import DigestRecorded, State
from jobs.domain.versions import ComponentError
from jobs.registry.client import RegistryClient, RegistryError, RegistrySettings
from jobs.registry.inspection import inspect_reference
from jobs.runtime.heartbeat import DEFAULT_TTL_SECONDS, Heartbeat, running, worker_heartbeat
from jobs.runtime.lease import LeaseKeeper
from jobs.runtime.logs import job_context
from jobs.runtime.metrics import WorkerMetrics, serve_metrics
from jobs.runtime.results import Spool, SpooledResult, pushed_before, with_redis_retries
from jobs.store.queue import Job, JobKind, Lease, Queue
from jobs.tools.build import (
    IDEMPOTENCY_LABEL,
    BuildCancelled,
    BuilderInfo,
    BuildError,
    BuildRequest,
    Progress,
    check_builder,
    metadata_dir,
    run_build,
    sweep_metadata_dirs,
)
from jobs.tools.merge import MergeError
from jobs.tools.source import SourceError, checkout
from jobs.usecases.pipeline import Pipeline

log = logging.getLogger("aibrix.worker")

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
    heartbeat_ttl_s: float = DEFAULT_TTL_SECONDS  # see jobs.runtime.heartbeat
    # Results pushed but not yet recorded (Redis away); default: `spool` in workdir.
    spool_dir: Path | None = None

    @property
    def spool_path(self) -> Path:
        return self.spool_dir if self.spool_dir is not None else self.workdir / "spool"

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
        # Run (on the event loop) when the build starts pushing: the lease check.
        self.before_push: Callable[[], Coroutine[Any, Any, None]] | None = None

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
        self.heartbeat: Heartbeat | None = None
        self.spool = Spool(settings.spool_path)

    @property
    def build_stream(self) -> str:
        return self.queue.platform_stream(self.settings.platform)

    async def check(self) -> BuilderInfo:
        """Refuse to start, with the reason, when the builder cannot build the platform."""
        # Said first: the check runs the docker CLI, the one step of a start that can hang.
        log.info(
            "worker %s checking the Buildx builder %s for %s",
            self.settings.worker_id,
            self.settings.builder or "(default)",
            self.settings.platform,
        )
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
        if self.settings.workdir.is_dir():
            swept = await asyncio.to_thread(sweep_metadata_dirs, self.settings.workdir)
            if swept:
                log.info("removed %d metadata directories of dead workers", swept)
        with contextlib.suppress(RedisError):  # else the janitor replays it soon
            await self._replay_spool()
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
            self.heartbeat = worker_heartbeat(self.queue, self.settings, self.builder)
            loops.append(self.heartbeat.run(stop))
            loops.append(self._janitor(stop))
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

    async def _janitor(self, stop: asyncio.Event) -> None:
        """Every pass: record spooled results once Redis is back, and remove from the
        groups the consumers of dead workers (idle past the threshold, nothing pending)."""
        idle_s = self.queue.settings.consumer_idle_ms / 1000
        sweep_every = min(max(1.0, idle_s / 2), 60.0)
        swept = time.monotonic()
        streams = [self.build_stream, self.queue.platform_stream(None)]
        while not stop.is_set():
            # A spooled result is looked at every second: it waits for Redis only.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            if stop.is_set():
                return
            try:
                await self._replay_spool()
                if time.monotonic() - swept >= sweep_every:
                    swept = time.monotonic()
                    for stream in streams:
                        for name in await self.queue.remove_idle_consumers(stream):
                            log.info("removed idle consumer %s from %s", name, stream)
            except RedisError as error:
                log.warning("janitor pass skipped: Redis unavailable (%s)", type(error).__name__)

    async def _replay_spool(self) -> None:
        """Record every spooled result through the same fenced path as a live one."""
        for item in self.spool.pending():
            if not isinstance(item, SpooledResult):
                log.error("spool file %s cannot be read; set aside", item.name)
                self.spool.set_aside(item)
                continue
            job = item.job
            with job_context(str(job.version), job.component, str(job.platform or "")):
                try:
                    recorded = await self.pipeline.record_build(job, item.digest, item.fence)
                    await self._after_record(item.lease(), recorded, item.digest)
                except RedisError as error:
                    log.warning(
                        "spooled result of job %s kept: Redis unavailable (%s)",
                        job.id,
                        type(error).__name__,
                    )
                    return
                log.info("spooled result of job %s replayed: %s", job.id, recorded.status)
                self.spool.done(item.path)

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
                with (
                    job_context(str(job.version), job.component, str(job.platform or "")),
                    running(self.heartbeat, job),
                ):
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
        if lease.reclaimed:
            # The worker that had it may have pushed and lost it before recording.
            staging = pipeline.config.staging_reference(job.component, job.version, job.platform)
            reused = await pushed_before(client, staging, job.idempotency_key)
            if reused is not None:
                log.info(
                    "%s already holds this job's image %s; recorded, not rebuilt", staging, reused
                )
                await self._record(lease, reused)
                return
        if not await pipeline.start_build(job):
            pushed = await pipeline.pushed_digest(job)
            if pushed is not None:
                await self._record(lease, pushed)
            else:
                await self.queue.ack(lease)
            return
        stopper = _Stopper()
        holder = LeaseKeeper(self.queue, lease, stopper.stop)
        stopper.before_push = holder.check_now
        keeper = asyncio.create_task(holder.run())
        started = time.monotonic()
        tail: tuple[str, ...] = ()
        try:
            digest, tail = await self._run_build(job, stopper)
            await self._verify_pushed(client, job, digest)
        except BuildCancelled:
            keeper.cancel()
            if holder.lost is not None:
                # Not cancelled: the job goes on under the worker that reclaims it.
                log.warning("build of job %s stopped: %s", job.id, holder.lost)
                return
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
        if holder.lost is not None:
            log.warning("build of job %s finished after %s; not recording it", job.id, holder.lost)
            return
        await self._record(lease, digest)

    async def _run_build(self, job: Job, stopper: _Stopper) -> tuple[str, tuple[str, ...]]:
        pipeline = self.pipeline
        config = pipeline.config
        assert job.platform is not None
        platform, version = job.platform, job.version
        await self._check_planned_build(job)
        work = await asyncio.to_thread(
            checkout, config.source, version, job.source_revision, self.settings.workdir
        )
        try:
            # The component's layout for this version (its Dockerfile moved in v0.5.0).
            at_version = config.at(version)
            paths = at_version.build_paths(job.component, work.root)
            component = at_version.component(job.component)
            # Removed on every way out (failure, cancel, a lost lease), not only success.
            with metadata_dir(self.settings.workdir) as meta_dir:
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
                    labels={IDEMPOTENCY_LABEL: job.idempotency_key},
                )
                loop = asyncio.get_running_loop()
                last: list[Progress] = []

                def on_progress(progress: Progress) -> None:
                    if last and last[-1] == progress:
                        return  # coalesce: the notifier needs changes, not every log line
                    last.append(progress)
                    if progress.phase == "pushing" and stopper.before_push is not None:
                        asyncio.run_coroutine_threadsafe(stopper.before_push(), loop)
                    asyncio.run_coroutine_threadsafe(
                        pipeline.progress(job, progress.phase, progress.step, progress.total), loop
                    )

                watcher = asyncio.create_task(self._watch_cancel(job, stopper))
                try:
                    result = await asyncio.to_thread(run_build, request, on_progress, stopper)
                finally:
                    watcher.cancel()
            log.info("pushed %s", result.pushed_as)
            try:
                await pipeline.progress(job, "pushed")
            except RedisError as error:  # only a progress line: the record follows
                log.warning("progress not written: Redis unavailable (%s)", type(error).__name__)
            return result.digest, result.log_tail
        finally:
            await asyncio.to_thread(work.remove)

    async def _check_planned_build(self, job: Job) -> None:
        """Refuse (BuildError: the failure path, nothing built or pushed) a build job this
        worker's config would build otherwise than the bot planned it: building it anyway
        would publish, under every sharing component's name, an image nobody planned."""
        if not job_build_id(job.payload):
            return  # a job written before the id: built as before
        release = await self.pipeline.find_run(job.version, job.run_id)
        if release is None:
            return  # the run is gone; the build's own steps say so
        try:
            at_version = self.pipeline.config.at(job.version)
            components = [
                at_version.component(c) for c in job_components(job.component, job.payload)
            ]
        except (ComponentError, ConfigError):
            return  # the build's own lookup fails with its sentence
        drift = build_drift(components, job.source_revision, release.platforms, job.payload)
        if drift is not None:
            raise BuildError(drift)

    async def _watch_cancel(self, job: Job, stopper: _Stopper) -> None:
        while not stopper():
            try:
                if await self.queue.is_cancelled(job.version, job.run_id):
                    stopper.stop("the release was cancelled")
                    return
            except RedisError:
                pass  # Redis away: the lease keeper decides whether the build goes on
            await asyncio.sleep(self.settings.cancel_poll_s)

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
        """Record a pushed digest under this lease; through a Redis outage, retry for a
        while, then keep it in the spool (replayed when Redis is back): never rebuilt."""
        job = lease.job
        try:
            recorded = await with_redis_retries(
                lambda: self.pipeline.record_build(job, digest, lease.fence),
                f"recording the digest of job {job.id}",
            )
        except RedisError:
            path = self.spool.write(lease, digest)
            log.warning(
                "Redis unavailable: %s kept in %s, recorded when Redis is back", digest, path
            )
            return
        await self._after_record(lease, recorded, digest)

    async def _after_record(self, lease: Lease, recorded: DigestRecorded, digest: str) -> None:
        job = lease.job
        if recorded.status == "stale":
            log.warning("lease of job %s was taken over; its holder records the result", job.id)
            return
        if recorded.status == "conflict":
            log.warning("a different digest %s is already recorded; keeping it", recorded.digest)
        await self.queue.ack(lease, result=recorded.digest or digest)
        await self.pipeline.after_build(job.version, job.run_id, job.component, claimer=job.id)

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
        keeper = asyncio.create_task(LeaseKeeper(self.queue, lease, stopper.stop).run())
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
        holder = LeaseKeeper(self.queue, lease, stopper.stop)
        keeper = asyncio.create_task(holder.run())
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
        if holder.lost is not None:
            return  # the worker holding the lease now carries on
        self.metrics.merge_seconds.observe(time.monotonic() - started)
        await self.queue.ack(lease, result=digest)


class VerifyError(Failed):
    pass
