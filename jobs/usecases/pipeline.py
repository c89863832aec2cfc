"""The release pipeline: what a request, a build, a merge, a cancel and a retry do.

One code path for the CLI, the Slack bot and the workers. Input is validated by
`plan_release` (pure) before anything touches Redis; the queue and the release store
make every effect atomic and once-only; the fan-in enqueues exactly one merge per
component; `settle` decides ready or blocked once every component is done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from jobs.domain import messages
from jobs.domain.builds import (
    BuildGroup,
    builds_to_run,
    digest_holders,
    followers,
    group_builds,
    job_components,
    shared_payload,
)
from jobs.domain.config import Config, ConfigError
from jobs.domain.errors import InvalidInput, NotFound
from jobs.domain.immutability import TagAction, TagDecision, decide_tag_write, release_refusal
from jobs.domain.nightly import NIGHTLY_ACTOR, is_nightly, promotes_unapproved, release_tag
from jobs.domain.platforms import Platform, PlatformError, parse_platform, unique
from jobs.domain.references import parse_reference
from jobs.domain.release import (
    BuildState,
    DigestRecorded,
    Event,
    Fence,
    Release,
    ReleaseEvent,
    State,
    VersionImmutable,
)
from jobs.domain.verdict import Outcome
from jobs.domain.versions import ComponentError, Version, VersionError, parse_version
from jobs.registry.client import NotFoundError, RegistryClient
from jobs.registry.inspection import verify_published
from jobs.store.inflight import held_jobs
from jobs.store.keys import Keys
from jobs.store.notices import NoticeStore
from jobs.store.queue import DeadLetter, Job, JobKind, Queue, QueueTuning
from jobs.store.releases import ReleaseStore, RunStart
from jobs.tools.merge import MergeError, TransientMergeError, merge_sources, write_index
from jobs.tools.source import SourceError, resolve_revision
from jobs.usecases.binaries import check_index
from jobs.usecases.merge_retry import GaveUp, ride_out
from jobs.usecases.plan import check_request
from jobs.usecases.promote import promote, promote_job
from jobs.usecases.publish import audit_tag_write, copy_to_publish
from jobs.usecases.sync_job import (
    SyncRecord,
    SyncState,
    fail_sync,
    load_sync,
    run_sync,
    sync_jobs,
)

log = logging.getLogger("aibrix.pipeline")

EVENTS_MAXLEN = 10_000
CANCEL_WAIT_S = 15.0
# The channel of a run asked for from the command line: it has no Slack message.
CLI_CHANNEL = "cli"


def _shared(job: Job) -> list[str]:
    """The other components `job`'s build is for (identical builds run once)."""
    return list(job_components(job.component, job.payload)[1:])


class ReleaseInputError(InvalidInput, ValueError):
    """Invalid release input; the message says what was wrong and what is accepted."""


class ReleaseNotFound(NotFound):
    pass


@dataclass(frozen=True)
class ReleasePlan:
    version: Version
    components: tuple[str, ...]
    platforms: tuple[Platform, ...]


def plan_release(
    config: Config,
    version_text: str,
    components: Sequence[str] = (),
    platforms: Sequence[str] = (),
) -> ReleasePlan:
    """Validate a release request. Raises ReleaseInputError; touches nothing."""
    try:
        version = parse_version(version_text)
        if is_nightly(version):
            raise ReleaseInputError(messages.nightly_reserved(str(version)))
        config.check_version(version)
        chosen = tuple(dict.fromkeys(config.component(name).name for name in components))
    except (VersionError, ComponentError, ConfigError) as error:
        raise ReleaseInputError(str(error)) from None
    present = config.at(version)  # the components released in this version, resolved
    for name in chosen:
        if name not in present.component_names:
            raise ReleaseInputError(
                messages.component_not_in_version(
                    name,
                    str(version),
                    str(config.component(name).versions),
                    present.component_names,
                )
            )
    if not present.components:
        raise ReleaseInputError(messages.no_components_in_version(str(version)))
    try:
        wanted = unique(parse_platform(text) for text in platforms)
    except PlatformError as error:
        raise ReleaseInputError(str(error)) from None
    for platform in wanted:
        if platform not in config.platforms:
            raise ReleaseInputError(
                messages.platform_not_configured(str(platform), config.platforms)
            )
    return ReleasePlan(version, chosen or present.component_names, wanted or config.platforms)


def parse_release_version(version_text: Version | str) -> str:
    """The version asked for, as the store keys it: text from a user is parsed here (the
    edge); a `Version` from a run is already one."""
    if isinstance(version_text, Version):
        return str(version_text)
    try:
        return str(parse_version(version_text))
    except VersionError as error:
        raise ReleaseInputError(str(error)) from None


IN_FLIGHT = frozenset({BuildState.QUEUED, BuildState.BUILDING})
# The verdict kept for a component whose merge ran out of its retry budget (no digest).
UNMERGED = "unmerged"


def component_outcome(release: Release, component: str) -> str:
    """pending, merged, or failed: where one component of a release stands."""
    if component in release.indexes:
        return "merged"
    records = [release.builds.get((component, p)) for p in release.platforms]
    if any(r is None or r.state in IN_FLIGHT for r in records):
        # Still pending while any of its builds may run: a release settled now would
        # miss the reason of a build that fails later (issue 16, item 6).
        return "pending"
    if any(r is not None and r.state in (BuildState.FAILED, BuildState.CANCELLED) for r in records):
        # A component with a failed platform is never merged: its tag stays as it was.
        return "failed"
    return "pending"


def block_reasons(release: Release) -> list[str]:
    """One sentence per reason a settled release cannot be promoted."""
    reasons = []
    for component in release.components:
        for platform in release.platforms:
            record = release.builds.get((component, platform))
            if record is not None and record.state is BuildState.FAILED:
                reasons.append(
                    messages.build_failed(
                        component, str(release.version), str(platform), record.error
                    )
                )
        index = release.indexes.get(component)
        if index is not None and index.verdict != Outcome.OK.value:
            reasons.append(
                index.detail
                or messages.verdict_not_ok(component, str(release.version), index.verdict)
            )
    return reasons


def unmerged(release: Release) -> list[str]:
    """The components whose every platform pushed but whose merge did not complete (the
    registry kept failing; or, in runs of older workers, a dead merge failed the run)."""
    return [
        c
        for c in release.components
        if release.built_digests(c) is not None
        and (c not in release.indexes or release.indexes[c].verdict == UNMERGED)
    ]


def cancel_notes(release: Release) -> list[str]:
    """What a cancel cannot undo: one sentence per release tag this run already wrote."""
    return [
        messages.already_published(component, str(release.version), index.digest)
        for component, index in release.indexes.items()
        if index.digest
    ]


def failed_builds(release: Release) -> int:
    """How many builds of `release` failed, each counted once: components whose build inputs
    are identical share one build (`BuildRecord.built_with`) and fail together."""
    return len(
        {
            (record.built_with or component, platform)
            for (component, platform), record in release.builds.items()
            if record.state is BuildState.FAILED
        }
    )


def retry_refusal(release: Release) -> str | None:
    """Why `release` cannot be retried (None: it can): only a blocked or failed run with
    failed builds or merges. Decided before anything is written (a refused click claims
    nothing)."""
    version, state = str(release.version), release.state.value
    if release.state not in (State.BLOCKED, State.FAILED):
        return messages.nothing_to_retry(version, state)
    failed = [k for k, r in release.builds.items() if r.state is BuildState.FAILED]
    if not failed and not unmerged(release):
        return messages.nothing_failed_to_retry(version, state)
    return None


def job_queue(redis: aioredis.Redis, config: Config) -> Queue:
    """The configured job queue: what a worker claims from and a pipeline enqueues on. The
    entry point builds it and hands it to both (see `Pipeline`)."""
    tuning = QueueTuning.from_settings(config.queue)
    return Queue(redis, Keys(config.queue.key_prefix), tuning)


def notice_store(redis: aioredis.Redis, config: Config) -> NoticeStore:
    """The Slack side's bookkeeping in Redis (the notifier's lease and cursor, the
    live-message outbox and claims, delivery claims), for the bot to hand to its handlers
    and its notifier."""
    return NoticeStore(redis, Keys(config.queue.key_prefix))


def release_store(redis: aioredis.Redis, config: Config) -> ReleaseStore:
    """The configured release store, for an entry point that hands it to more than the
    pipeline (the Slack side's `Approvals`)."""
    return ReleaseStore(
        redis,
        Keys(config.queue.key_prefix),
        retention_seconds=config.queue.retention_seconds,
        events_maxlen=EVENTS_MAXLEN,
    )


class Pipeline:
    """The release operations, on the store and the queue it is given.

    `queue` and `store`: the job queue and release store, when the entry point also hands
    them to a worker or to `Approvals` (`job_queue`, `release_store`); by default its own.
    Either way the queue's dead letters come back here: a build that ran out of attempts
    is marked failed, a merge that did fails the run."""

    def __init__(
        self,
        redis: aioredis.Redis,
        config: Config,
        queue: Queue | None = None,
        store: ReleaseStore | None = None,
    ) -> None:
        self.config = config
        # How long a cancel waits for workers to stop the run's builds (see `cancel`).
        self.cancel_wait_s = CANCEL_WAIT_S
        self._queue = queue if queue is not None else job_queue(redis, config)
        self._queue.on_dead_letter = self._dead_lettered
        self._store = store if store is not None else release_store(redis, config)
        # The worker's and the notifier's side of sync jobs (the handlers get their own).
        self._syncs = sync_jobs(redis, config, self._store, self._queue)

    # -- requests (CLI and Slack)

    async def request_release(
        self,
        plan: ReleasePlan,
        requested_by: str,
        channel: str = CLI_CHANNEL,
        *,
        supersede: bool = False,
        request_id: str = "",
    ) -> tuple[Release, bool]:
        """Start a run of `plan`, or return the version's active run (a duplicate request).

        True when the run is this request's: created now, or by an earlier delivery of the
        same `request_id` (a Slack redelivery after a crash gets its run back). The run
        and every job it starts are written in one atomic step. A promoted version is
        immutable: refused (ReleaseInputError saying who promoted it, when, and the
        digests) unless `supersede`, which the caller has authorized.
        """
        version = plan.version
        existing = await self._store.load(version)
        if existing is not None and existing.state is State.QUEUED:
            existing = await self.resume_unstarted(existing)
        if existing is not None and not existing.settled:
            return existing, bool(request_id) and existing.request_id == request_id
        record = await self._store.version_record(version)
        refusal = release_refusal(
            str(version), record.promoted if record else None, supersede=supersede
        )
        if refusal is not None:
            raise ReleaseInputError(refusal)
        try:
            revision = await asyncio.to_thread(resolve_revision, self.config.source, plan.version)
        except SourceError as error:
            raise ReleaseInputError(str(error)) from None
        # Every Dockerfile and context at that revision, and the manifests: refused here,
        # before anything is queued, rather than by a worker's checkout.
        await check_request(self.config, plan.version, plan.components, plan.platforms, revision)
        components = list(plan.components)
        platforms = list(plan.platforms)

        async def start(run_id: str, current: str) -> RunStart:
            previous = await self._store.load(version, current) if current else None
            return self.run_start(run_id, version, revision, components, platforms, previous)

        try:
            return await self._store.create_or_get(
                version,
                requested_by,
                channel,
                platforms,
                components,
                revision,
                supersede=supersede,
                request_id=request_id,
                announce=channel != CLI_CHANNEL,
                start=start,
            )
        except VersionImmutable as error:  # promoted between our read and the script
            raise ReleaseInputError(
                release_refusal(str(version), error.promoted, supersede=False) or str(error)
            ) from None

    async def resume_unstarted(self, release: Release) -> Release:
        """Start a run left queued with no jobs: written by an older bot killed between
        creating a run and starting it (runs are created started now, in one step). Such
        a run never had a job enqueued (the older bot marked it building first). Each step
        is idempotent (job idempotency keys, digests recorded once, merge claims) and the
        run leaves `queued` only after its builds are enqueued, so a crash here is
        repaired by the next request."""
        version, run_id = release.version, release.run_id
        previous = None
        if release.previous_run_id:
            previous = await self._store.load(version, release.previous_run_id)
        start = self.run_start(
            run_id, version, release.source_ref, release.components, release.platforms, previous
        )
        log.warning("run %s of %s was left without jobs; starting it", run_id, version)
        # A record that names another's build is built by that one's job.
        await self._queue.enqueue_many(
            self.build_job(
                release,
                component,
                platform,
                [
                    c
                    for (c, p), r in release.builds.items()
                    if p == platform and r.built_with == component and (c, p) not in start.reused
                ],
            )
            for (component, platform), record in release.builds.items()
            if (component, platform) not in start.reused and not record.built_with
        )
        for (component, platform), digest in start.reused.items():
            await self._store.record_build_digest(version, run_id, component, platform, digest, 0)
        await self._store.transition(version, run_id, [State.QUEUED], State.BUILDING)
        for component in start.merges:
            await self.after_build(version, run_id, component, claimer="request")
        return await self.load_run(version, run_id)

    async def retry(
        self,
        version_text: Version | str,
        actor: str,
        where: str = CLI_CHANNEL,
        *,
        request_id: str = "",
    ) -> tuple[Release, int]:
        """A new run of a blocked or failed release that rebuilds only the failed builds;
        returns it and how many builds it runs again (`failed_builds`). `where`: the Slack
        channel the actor asked from, or `cli` (for the audit)."""
        version = parse_release_version(version_text)
        release = await self._store.load(version)
        if release is None:
            raise ReleaseNotFound(messages.release_not_found(version))
        if request_id and release.request_id == request_id and release.previous_run_id:
            # A redelivery of the retry that started this run: the same answer again.
            previous = await self.load_run(version, release.previous_run_id)
            return release, failed_builds(previous)
        refusal = retry_refusal(release)
        if refusal is not None:
            raise ReleaseInputError(refusal)
        failed = failed_builds(release)
        plan = ReleasePlan(release.version, release.components, release.platforms)
        new, created = await self.request_release(
            plan, actor, release.channel, request_id=request_id
        )
        if created:
            await self._store.audit(
                new.version, new.run_id, actor, "retried", f"{failed} failed builds", where
            )
        return new, failed

    async def cancel(self, version_text: Version | str, actor: str, where: str = "cli") -> Release:
        version = parse_release_version(version_text)
        release = await self._store.load(version)
        if release is None:
            raise ReleaseNotFound(messages.release_not_found(version))
        if release.state in (State.PROMOTING, State.PROMOTED, State.FAILED, State.CANCELLED):
            raise ReleaseInputError(messages.cannot_cancel(version, release.state.value))
        await self._queue.cancel(version, release.run_id)
        # Builds first: once the run is cancelled (terminal) its records are frozen.
        for (component, platform), record in release.builds.items():
            if record.state in (BuildState.QUEUED, BuildState.BUILDING, BuildState.FAILED):
                await self._store.update_build(
                    version, release.run_id, component, platform, BuildState.CANCELLED
                )
        await self._store.apply(
            version,
            release.run_id,
            Event.CANCEL,
            actor=actor or "cli",
            reason="cancelled",
            where=where,
        )
        await self._await_released(version, release.run_id)
        return await self.load_run(version, release.run_id)

    async def _await_released(self, version: str, run_id: str) -> None:
        """Wait (at most `cancel_wait_s`) until no worker holds a job of the cancelled run:
        a worker lets a build's job go only once its Buildx process is gone, so after this
        nothing of the run pushes. Workers see the flag within a second and interrupt
        Buildx, which may take a few seconds to let go."""
        deadline = asyncio.get_running_loop().time() + self.cancel_wait_s
        while held := await held_jobs(self._queue, version, run_id):
            if asyncio.get_running_loop().time() >= deadline:
                log.warning(
                    "cancel of %s: %d jobs still held by workers after %.0f s: %s",
                    version,
                    len(held),
                    self.cancel_wait_s,
                    ", ".join(f"{j.kind.value} {j.component} {j.platform or ''}" for j in held),
                )
                return
            await asyncio.sleep(0.1)

    async def status(self, version_text: str | None) -> list[Release]:
        if version_text is None:
            return await self._store.list_releases()
        version = parse_release_version(version_text)
        release = await self._store.load(version)
        if release is None:
            raise ReleaseNotFound(messages.release_not_found(version))
        return [release]

    # -- the run

    async def find_run(self, version: Version | str, run_id: str | None = None) -> Release | None:
        """The version's active run (or the given run), or None."""
        return await self._store.load(version, run_id)

    async def events(
        self, after: str = "0-0", count: int = 100, block_ms: int | None = None
    ) -> list[ReleaseEvent]:
        """What happened after stream id `after`, oldest first (what live views show)."""
        return await self._store.events(after, count=count, block_ms=block_ms)

    async def record_status_message(
        self, version: Version | str, run_id: str, channel: str, ts: str
    ) -> bool:
        """Where the run's live message is (so it can be updated)."""
        return await self._store.set_status_message(version, run_id, channel, ts)

    async def load_run(self, version: Version | str, run_id: str) -> Release:
        """The run, or ReleaseNotFound (with the sentence that says so)."""
        release = await self._store.load(version, run_id)
        if release is None:
            raise ReleaseNotFound(messages.release_not_found(str(version)))
        return release

    def build_job(
        self, release: Release, component: str, platform: Platform, shared: Sequence[str] = ()
    ) -> Job:
        """The build of `component` on `platform`, for `shared` too (identical builds)."""
        return Job(
            JobKind.BUILD,
            release.version,
            component,
            release.source_ref,
            platform=platform,
            run_id=release.run_id,
            payload=shared_payload([component, *shared]),
        )

    def merge_job(self, release: Release, component: str) -> Job:
        return Job(
            JobKind.MERGE, release.version, component, release.source_ref, run_id=release.run_id
        )

    def run_start(
        self,
        run_id: str,
        version: Version,
        revision: str,
        components: Sequence[str],
        platforms: Sequence[Platform],
        previous: Release | None,
    ) -> RunStart:
        """What a new run starts with: its build jobs, one per platform for the components
        whose build inputs are identical (`jobs.domain.builds`), reusing digests a previous
        run of the same revision already pushed (so a retry rebuilds only what failed), and
        the merge of every component all of whose platforms are reused."""
        reused: dict[tuple[str, Platform], str] = {}
        built_with: dict[tuple[str, Platform], str] = {}
        if previous is not None and previous.source_ref == revision:
            for key, record in previous.builds.items():
                if record.state is BuildState.PUSHED and record.digest:
                    reused[key] = record.digest
                    if record.built_with:  # the digest stays where that build pushed it
                        built_with[key] = record.built_with
        reused = {(c, p): d for (c, p), d in reused.items() if c in components and p in platforms}
        built_with = {k: w for k, w in built_with.items() if k in reused}
        planned = builds_to_run(
            self._build_groups(version, revision, components, platforms), platforms, reused
        )
        jobs: list[Job] = [
            Job(
                JobKind.BUILD,
                version,
                build.components[0],
                revision,
                platform=build.platform,
                run_id=run_id,
                payload=shared_payload(build.components, build.build),
            )
            for build in planned
        ]
        for build in planned:
            for component in build.components[1:]:
                built_with[(component, build.platform)] = build.components[0]
        merges = tuple(c for c in components if all((c, p) in reused for p in platforms))
        jobs += [Job(JobKind.MERGE, version, c, revision, run_id=run_id) for c in merges]
        return RunStart(
            state=State.MERGING if merges else State.BUILDING,
            reused=reused,
            merges=merges,
            jobs=[self._queue.enqueue_call(job) for job in jobs],
            built_with=built_with,
        )

    def _build_groups(
        self,
        version: Version,
        revision: str,
        components: Sequence[str],
        platforms: Sequence[Platform],
    ) -> tuple[BuildGroup, ...]:
        """The run's components grouped by identical build inputs."""
        try:
            at_version = self.config.at(version)
            builds = [at_version.component(c) for c in components]
        except (ComponentError, ConfigError):
            # A run asked for before the config lost a component (resumed or retried):
            # each of its builds is its own, as it was when the run was asked for.
            # No build id then: the workers build these as before, unchecked.
            return tuple(BuildGroup("", (c,)) for c in components)
        return group_builds(builds, revision, platforms)

    async def promote(self, job: Job, client: RegistryClient) -> State | None:
        """Promote the run a promote job names (see `jobs.usecases.promote`); where it
        ended, or None when there was nothing to do."""
        return await promote(self._store, self.config, job, client)

    # -- sync jobs (the worker runs them, the notifier shows them)

    async def find_sync(self, sync_id: str) -> SyncRecord | None:
        """The record of sync job `sync_id`, or None when it is gone."""
        return await load_sync(self._syncs, sync_id)

    async def run_sync(
        self, job: Job, client: RegistryClient, *, deliveries: int, reclaimed: bool, worker: str
    ) -> SyncState | None:
        """Run a sync job to its end (see `jobs.usecases.sync_job.run_sync`)."""
        return await run_sync(
            self._syncs, job, client, deliveries=deliveries, reclaimed=reclaimed, worker=worker
        )

    async def fail_sync(self, job: Job, error: str) -> None:
        """Record a sync job that stopped on an unexpected error."""
        await fail_sync(self._syncs, job, error)

    # -- what a worker records about the job it runs

    async def start_build(self, job: Job) -> bool:
        """Mark `job`'s build as building (this attempt); False when it may not start (already
        pushed, cancelled, or the run settled or superseded)."""
        assert job.platform is not None
        return await self._store.update_build(
            job.version,
            job.run_id,
            job.component,
            job.platform,
            BuildState.BUILDING,
            attempt=job.attempt,
            shared=_shared(job),
        )

    async def pushed_digest(self, job: Job) -> str | None:
        """The digest `job`'s build already pushed in its run, if it did."""
        assert job.platform is not None
        record = (await self.load_run(job.version, job.run_id)).builds.get(
            (job.component, job.platform)
        )
        if record is not None and record.state is BuildState.PUSHED and record.digest:
            return record.digest
        return None

    async def build_cancelled(self, job: Job) -> None:
        """`job`'s build was stopped because its run was cancelled."""
        assert job.platform is not None
        await self._store.update_build(
            job.version,
            job.run_id,
            job.component,
            job.platform,
            BuildState.CANCELLED,
            shared=_shared(job),
        )

    async def attempt_failed(self, job: Job, reason: str, log_tail: Sequence[str]) -> None:
        """Keep an attempt's failure and log tail with its build (it may be retried), so
        the failure report can show them."""
        if job.platform is None or job.kind is not JobKind.BUILD:
            return
        await self._store.update_build(
            job.version,
            job.run_id,
            job.component,
            job.platform,
            BuildState.BUILDING,
            error=reason,
            log_lines=list(log_tail),
            shared=_shared(job),
        )

    async def record_build(
        self, job: Job, digest: str, fence: Fence | None = None
    ) -> DigestRecorded:
        """The digest `job`'s build pushed, recorded once: a repeat is harmless, another
        digest is refused (see `ReleaseStore.record_build_digest`); under `fence`, only
        while that lease is still current ("stale" otherwise)."""
        assert job.platform is not None
        return await self._store.record_build_digest(
            job.version,
            job.run_id,
            job.component,
            job.platform,
            digest,
            job.attempt,
            fence,
            shared=_shared(job),
        )

    async def after_build(
        self, version: Version, run_id: str, component: str, claimer: str
    ) -> None:
        """Fan-in: once every platform of `component` is pushed, enqueue its one merge;
        the same for each component that shares its build (their digests were recorded in
        the same step). With no merge to start (a platform failed, or one still runs), this
        may have been the last build in flight, which the run waited for before settling."""
        release = await self._store.load(version, run_id)
        if release is None:
            return
        claimed = False
        for name in (component, *followers(release, component)):
            if await self._store.try_claim_merge(version, run_id, name, claimer=claimer):
                await self._queue.enqueue(self.merge_job(release, name))
                await self._store.transition(version, run_id, [State.BUILDING], State.MERGING)
                claimed = True
        if not claimed:
            await self.settle(version, run_id)

    async def build_failed(self, job: Job, reason: str) -> None:
        """A build ran out of attempts: mark it failed; the component will not be merged."""
        if job.platform is None:
            return
        await self._store.update_build(
            job.version,
            job.run_id,
            job.component,
            job.platform,
            BuildState.FAILED,
            error=reason,
            shared=_shared(job),
        )
        await self.settle(job.version, job.run_id)

    async def _dead_lettered(self, dead: DeadLetter) -> None:
        job = dead.job
        if job is None:
            return
        if job.kind is JobKind.BUILD:
            await self.build_failed(job, dead.reason)
        elif job.kind is JobKind.MERGE:
            # Blocked with the reason, not failed: `retry` merges again from the digests.
            await self.merge_failed(job, dead.reason, 0.0)

    async def merge_patiently(
        self, job: Job, client: RegistryClient, *, stopped: Callable[[], bool] = lambda: False
    ) -> str | None:
        """`merge`, retried through registry faults that may pass for
        `registry.merge_retry_seconds` (see `jobs.usecases.merge_retry`). None: the budget
        ran out (or `stopped`), and the component is recorded unmerged with the reason."""
        budget = self.config.registry.merge_retry_seconds
        what = f"merge of {job.component} {job.version}"
        outcome = await ride_out(
            lambda: self.merge(job, client), budget, stopped=stopped, what=what
        )
        if isinstance(outcome, GaveUp):
            await self.merge_failed(job, outcome.reason, outcome.seconds)
            return None
        return outcome.value

    async def merge_failed(self, job: Job, reason: str, seconds: float) -> None:
        """`job`'s component could not be merged: kept with the sentence, and the run
        settles (`blocked`, once nothing else is in flight)."""
        detail = messages.merge_gave_up(job.component, str(job.version), reason, seconds)
        await self._store.record_merge_failed(
            job.version, job.run_id, job.component, UNMERGED, detail
        )
        await self.settle(job.version, job.run_id)

    async def merge(self, job: Job, client: RegistryClient) -> str:
        """Write the component's release tag from its pinned digests and verify it, unless
        the tag already holds this version's verified digest (kept) or something this
        version never wrote (left alone; the run blocks): see `jobs.domain.immutability`."""
        release = await self.load_run(job.version, job.run_id)
        digests = release.built_digests(job.component)
        if digests is None:
            raise MergeError(f"{job.component} has no pushed digest for every platform")
        builds = dict(digests)
        required = list(release.platforms)
        image = self.config.image(job.component)
        subject = f"{job.component} {release.version}"
        # A shared build's digests are in the repository of the component that pushed
        # them; the index written here copies them into this one's.
        holders = digest_holders(release, job.component)
        sources = merge_sources(
            image, builds, required, {p: self.config.image(c) for p, c in holders.items()}
        )
        held, decision = await self._tag_decision(release, job.component, image, builds, client)
        if decision.action is TagAction.REFUSE:
            await self._refuse_tag(release, job.component, held, decision.reason)
            return held or ""
        if decision.action is TagAction.WRITE:
            await asyncio.to_thread(write_index, image, release_tag(release.version), sources)
        else:
            log.info("%s: %s", subject, decision.reason or "already holds this run's builds")
        await self._store.transition(job.version, job.run_id, [State.MERGING], State.VERIFYING)
        published = await verify_published(
            client, image, release_tag(release.version), builds, required
        )
        inspection = published.inspection
        # A kept tag holds an earlier run's builds by design: only its platforms are judged.
        mismatch = () if decision.action is TagAction.KEEP else published.problems
        problems = [*mismatch, *messages.verdict_problems(subject, inspection.verdict)]
        outcome = inspection.verdict.outcome.value if not mismatch else Outcome.MISMATCH.value
        digest = inspection.digest or ""
        if not digest:
            # Written but not readable: a registry fault, retried (`merge_patiently`).
            raise TransientMergeError(
                f"{image}:{release_tag(release.version)} could not be read back: "
                f"{inspection.verdict.error}"
            )
        if outcome == Outcome.OK.value and self.config.check_binaries:
            # The labels agree; now the bytes: the ELF headers of every platform's binaries.
            paths = self.config.component(job.component).binaries
            wrong = messages.binary_problems(
                subject, await check_index(client, image, digest, paths)
            )
            problems += wrong
            outcome = Outcome.MISMATCH.value if wrong else outcome
        if outcome == Outcome.OK.value:
            # Verified on the primary: the same bytes to every other publish registry.
            copies = await copy_to_publish(
                self._store, client, self.config, release, job.component, digest
            )
            problems += copies
            outcome = Outcome.MISMATCH.value if copies else outcome
        if decision.action is not TagAction.KEEP:
            await self._store.record_tag(
                release.version,
                release.run_id,
                job.component,
                digest,
                verified=outcome == Outcome.OK.value,
            )
            await audit_tag_write(
                self._store, release, f"{image}:{release_tag(release.version)}", digest
            )
        await self._store.record_index(
            job.version, job.run_id, job.component, digest, outcome, "; ".join(problems)
        )
        await self.settle(job.version, job.run_id)
        return digest

    async def _tag_decision(
        self,
        release: Release,
        component: str,
        image: str,
        builds: Mapping[Platform, str],
        client: RegistryClient,
    ) -> tuple[str | None, TagDecision]:
        """Read the release tag (the compare of the compare-and-set) and decide. A registry
        that cannot be read raises: the job is retried, nothing is written meanwhile."""
        reference = parse_reference(f"{image}:{release_tag(release.version)}")
        try:
            held: str | None = (await client.get_manifest(reference)).digest
        except NotFoundError:
            held = None
        record = await self._store.version_record(release.version)
        wrote = record.tags.get(component) if record else None
        holds_this_run = False
        if held is not None and (wrote is None or wrote.digest != held):
            found = await verify_published(
                client, image, release_tag(release.version), builds, list(builds)
            )
            children = {
                e.platform: e.digest for e in found.inspection.verdict.entries if e.platform
            }
            holds_this_run = found.inspection.digest == held and children == dict(builds)
        subject = f"{component} {release.version}"
        decision = decide_tag_write(
            subject, held, wrote, holds_this_run=holds_this_run, supersede=release.supersede
        )
        return held, decision

    async def _refuse_tag(
        self, release: Release, component: str, held: str | None, reason: str
    ) -> None:
        """The tag holds what this version did not write: leave it, block the run."""
        version, run_id = release.version, release.run_id
        log.warning("%s", reason)
        if held is not None:
            await self._store.record_index(
                version, run_id, component, held, Outcome.MISMATCH.value, reason
            )
            await self.settle(version, run_id)
            return
        # No digest to record as the component's index: block the run with the sentence.
        await self._store.transition(version, run_id, [State.BUILDING], State.MERGING)
        await self._store.transition(version, run_id, [State.MERGING], State.VERIFYING)
        await self._store.transition(
            version, run_id, [State.VERIFYING], State.BLOCKED, reason=reason
        )

    async def settle(self, version: Version, run_id: str) -> State | None:
        """When every component is merged or failed, decide: ready, or blocked with reasons."""
        release = await self._store.load(version, run_id)
        if release is None or release.state not in (State.BUILDING, State.MERGING, State.VERIFYING):
            return None
        outcomes = {c: component_outcome(release, c) for c in release.components}
        if "pending" in outcomes.values():
            return None
        # Walk the table's path; each step is a compare-and-set, so racing callers agree.
        await self._store.transition(version, run_id, [State.BUILDING], State.MERGING)
        await self._store.transition(version, run_id, [State.MERGING], State.VERIFYING)
        settled = await self.load_run(version, run_id)
        reasons = block_reasons(settled)
        if reasons:
            await self._store.transition(
                version, run_id, [State.VERIFYING], State.BLOCKED, reason="; ".join(reasons)
            )
            return State.BLOCKED
        await self._store.transition(version, run_id, [State.VERIFYING], State.READY)
        if promotes_unapproved(self.config.nightly.approval, version):
            await self._promote_unapproved(version, run_id)
        return State.READY

    async def _promote_unapproved(self, version: Version, run_id: str) -> None:
        """A nightly that passed the gate needs no approval (unless configured): approved
        by the policy (audited as such) and its one promotion queued, which moves
        `nightly`. Compare-and-set: racing settles queue it once."""
        if await self._store.transition(
            version, run_id, [State.READY], State.APPROVED, actor=NIGHTLY_ACTOR, where="worker"
        ):
            await self._queue.enqueue(promote_job(await self.load_run(version, run_id)))

    # -- progress events (what the live message shows between state changes)

    async def progress(self, job: Job, phase: str, step: int = 0, total: int = 0) -> None:
        await self._store.record_progress(
            job.version, job.run_id, job.component, job.platform, phase, step, total
        )

    def digests_of(self, release: Release) -> Mapping[str, str]:
        return {c: i.digest for c, i in release.indexes.items()}
